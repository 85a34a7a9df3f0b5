"""Tests for selectune.core.metrics and selectune.core.plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from selectune.core.metrics import auroc, label_auroc
from selectune.core.plots import score_histogram, score_vs_length

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# --- auroc -----------------------------------------------------------------------------------


def test_auroc_with_ties_by_hand() -> None:
    # positives: 2, 3; negatives: 1, 2. Pairs (pos, neg):
    # (2,1)=1  (2,2)=1/2  (3,1)=1  (3,2)=1  -> 3.5 / 4 = 0.875
    assert auroc([1, 2, 2, 3], [False, True, False, True]) == 0.875


def test_auroc_small_case_by_hand() -> None:
    # positives: 0.8, 0.4; negatives: 0.5, 0.1, 0.4. Pairs:
    # 0.8 beats all 3 -> 3; 0.4 vs 0.5 -> 0, vs 0.1 -> 1, vs 0.4 -> 1/2  -> 4.5 / 6 = 0.75
    assert auroc([0.8, 0.5, 0.1, 0.4, 0.4], [1, 0, 0, 1, 0]) == pytest.approx(0.75)


def test_auroc_all_tied_is_half() -> None:
    assert auroc([2.0] * 5, [True, False, True, False, False]) == 0.5


def test_auroc_perfect_and_reversed() -> None:
    labels = [False, False, True, True, True]
    assert auroc([1, 2, 3, 4, 5], labels) == 1.0
    assert auroc([5, 4, 3, 2, 1], labels) == 0.0


def test_auroc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(1)
    s = rng.integers(0, 6, size=60).astype(float)  # plenty of ties
    y = rng.random(60) < 0.4
    diff = s[y][:, None] - s[~y][None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert auroc(s, y) == pytest.approx(expected)


def test_auroc_one_class_raises() -> None:
    with pytest.raises(ValueError, match=r"both classes, got 3 positive\(s\) and 0 negative\(s\)"):
        auroc([1, 2, 3], [True, True, True])
    with pytest.raises(ValueError, match="both classes"):
        auroc([], [])


def test_auroc_nan_raises_with_count() -> None:
    with pytest.raises(ValueError, match=r"2 NaN score\(s\)"):
        auroc([1.0, math.nan, 2.0, math.nan], [True, False, True, False])


def test_auroc_bad_labels_and_lengths() -> None:
    with pytest.raises(ValueError, match="boolean or 0/1"):
        auroc([1, 2], ["good", "poor"])
    with pytest.raises(ValueError, match="equal length"):
        auroc([1, 2, 3], [True, False])


# --- label_auroc -----------------------------------------------------------------------------


def test_label_auroc_tiny_frame() -> None:
    df = pd.DataFrame(
        {
            "s": [4.0, 3.0, 1.0, 3.0, 2.0, math.nan],
            "label": ["good", "good", "poor", "poor", None, "poor"],
        }
    )
    # kept rows (label and score present): good 4, 3; poor 1, 3.
    # (4,1)=1 (4,3)=1 (3,1)=1 (3,3)=1/2 -> 3.5 / 4
    assert label_auroc(df, "s") == 0.875
    # "poor" as positive: the complement
    assert label_auroc(df, "s", positive="poor") == 0.125


def test_label_auroc_none_cases() -> None:
    assert label_auroc(pd.DataFrame({"s": [1.0, 2.0]}), "s") is None
    assert label_auroc(pd.DataFrame({"s": [1.0, 2.0], "label": ["good", "good"]}), "s") is None
    assert label_auroc(pd.DataFrame({"s": [1.0, 2.0], "label": ["poor", "poor"]}), "s") is None


def test_label_auroc_missing_score_column() -> None:
    with pytest.raises(ValueError, match="'nope' not found"):
        label_auroc(pd.DataFrame({"s": [1.0], "label": ["good"]}), "nope")


# --- plots -----------------------------------------------------------------------------------


def _vline_x(ax: Axes) -> list[float]:
    """x positions of the vertical lines on ``ax``."""
    out = []
    for line in ax.lines:
        xs = np.asarray(line.get_xdata(), dtype=float)
        if xs.size == 2 and xs[0] == xs[1]:
            out.append(float(xs[0]))
    return out


def test_score_histogram_cut_line_and_png(tmp_path: Path) -> None:
    scores = np.linspace(0.0, 1.0, 101)
    fig = score_histogram(scores, 0.8123, "SelectIT scores")
    (ax,) = fig.axes
    assert _vline_x(ax) == [pytest.approx(0.8123)]
    assert ax.lines[0].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all records", "selection cut = 0.812"]
    assert ax.get_title() == "SelectIT scores"
    assert ax.get_xlabel() == "score" and ax.get_ylabel() == "records"
    assert len(ax.patches) == 30  # 30 bins
    assert sum(p.get_height() for p in ax.patches) == 101
    out = tmp_path / "hist.png"
    fig.savefig(out)
    assert out.stat().st_size > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_histogram_without_cut_and_with_nan() -> None:
    fig = score_histogram([1.0, 2.0, math.nan], None, "t")
    (ax,) = fig.axes
    assert len(ax.lines) == 0
    assert ax.get_xlabel() == "score (1 missing not shown)"


def test_score_histogram_with_labels(tmp_path: Path) -> None:
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    labels = ["poor", "poor", "good", "good", "good"]
    fig = score_histogram(scores, 3.0, "t", labels=labels)
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["good", "poor", "selection cut = 3.000"]
    assert _vline_x(ax) == [3.0]
    fig.savefig(tmp_path / "labels.png")
    assert (tmp_path / "labels.png").stat().st_size > 0
    with pytest.raises(ValueError, match="labels must match scores"):
        score_histogram(scores, 3.0, "t", labels=labels[:2])


def test_score_vs_length(tmp_path: Path) -> None:
    scores = [0.1, 0.9, 0.5, 0.7]
    lengths = [100, 250, 40, 800]
    mask = [False, True, False, True]
    fig = score_vs_length(scores, lengths, mask, "score vs length", length_unit="tokens")
    (ax,) = fig.axes
    unselected, selected = ax.collections
    assert unselected.get_offsets().tolist() == [[100.0, 0.1], [40.0, 0.5]]
    assert selected.get_offsets().tolist() == [[250.0, 0.9], [800.0, 0.7]]
    assert not np.allclose(unselected.get_facecolor()[0][:3], selected.get_facecolor()[0][:3])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["not selected (2)", "selected (2)"]
    assert ax.get_xlabel() == "response length (tokens)" and ax.get_ylabel() == "score"
    out = tmp_path / "scatter.png"
    fig.savefig(out)
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="equal length"):
        score_vs_length(scores, lengths[:3], mask, "t")


def test_figures_are_not_held_by_pyplot() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = score_histogram([1.0, 2.0], 1.5, "t")
    assert plt.get_fignums() == before
    plt.close(fig)  # harmless for callers that close out of habit
