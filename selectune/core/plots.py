"""Diagnostic figures for score distributions and selections.

Each function returns a :class:`matplotlib.figure.Figure` for the caller to log, e.g. with
``mlflow.log_figure(fig, "score_histogram.png")``. Figures are built with the object-oriented
API (``Figure()``, never ``pyplot``): nothing is drawn to a screen, no GUI backend is needed, the
global backend is left alone and pyplot does not keep the figure alive, so it is freed once the
caller drops it. Calling ``plt.close(fig)`` after logging is harmless and fine to keep as a habit.
matplotlib is imported inside the functions so ``import selectune`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (7.0, 4.5)
HIST_BINS = 30
CUT_COLOR = "tab:red"
SELECTED_COLOR = "tab:blue"
UNSELECTED_COLOR = "0.65"


def score_histogram(
    scores: Sequence[float] | np.ndarray,
    cut: float | None,
    title: str,
    labels: Sequence[object] | np.ndarray | None = None,
    *,
    xlabel: str = "score",
) -> Figure:
    """Histogram of ``scores`` (30 shared bins) with a dashed vertical line at the selection ``cut``.

    With ``labels`` (one per score, e.g. the demo's "good"/"poor"), one translucent histogram is
    overlaid per label value. NaN scores are left out and counted in the x label.
    """
    values = np.asarray(scores, dtype=float)
    groups = _label_groups(values, labels)
    finite = ~np.isnan(values)
    edges = np.histogram_bin_edges(values[finite], bins=HIST_BINS)
    fig, ax = _new_axes(title)
    if groups is None:
        ax.hist(values[finite], bins=edges, color=SELECTED_COLOR, alpha=0.8, label="all records")
    else:
        for name, mask in groups:
            ax.hist(values[finite & mask], bins=edges, alpha=0.5, histtype="stepfilled", label=name)
    if cut is not None:
        ax.axvline(cut, color=CUT_COLOR, linestyle="--", linewidth=1.5, label=f"selection cut = {cut:.3f}")
    n_missing = int((~finite).sum())
    ax.set_xlabel(xlabel if not n_missing else f"{xlabel} ({n_missing} missing not shown)")
    ax.set_ylabel("records")
    ax.legend()
    return fig


def score_vs_length(
    scores: Sequence[float] | np.ndarray,
    lengths: Sequence[float] | np.ndarray,
    selected_mask: Sequence[bool] | np.ndarray,
    title: str,
    *,
    length_unit: str = "characters",
) -> Figure:
    """Scatter of score against response length, selected and unselected records in two colours.

    ``lengths`` may be characters or tokens; say which with ``length_unit`` (x-axis label).
    """
    y = np.asarray(scores, dtype=float)
    x = np.asarray(lengths, dtype=float)
    sel = np.asarray(selected_mask, dtype=bool)
    if not y.shape == x.shape == sel.shape or y.ndim != 1:
        raise ValueError(
            f"scores, lengths and selected_mask must be 1-D of equal length, got {y.shape}, "
            f"{x.shape} and {sel.shape}"
        )
    fig, ax = _new_axes(title)
    ax.scatter(
        x[~sel], y[~sel], s=12, color=UNSELECTED_COLOR, alpha=0.7, label=f"not selected ({(~sel).sum()})"
    )
    ax.scatter(x[sel], y[sel], s=14, color=SELECTED_COLOR, alpha=0.9, label=f"selected ({sel.sum()})")
    ax.set_xlabel(f"response length ({length_unit})")
    ax.set_ylabel("score")
    ax.legend()
    return fig


def _new_axes(title: str) -> tuple[Figure, Axes]:
    """A fresh figure (not registered with pyplot) with one titled axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _label_groups(
    values: np.ndarray, labels: Sequence[object] | np.ndarray | None
) -> list[tuple[str, np.ndarray]] | None:
    """(label name, row mask) per distinct label, sorted by name; None when no labels are given."""
    if labels is None:
        return None
    names = np.array(["(none)" if _is_missing(v) else str(v) for v in labels], dtype=object)
    if names.shape != values.shape:
        raise ValueError(f"labels must match scores in length, got {names.shape} and {values.shape}")
    return [(str(name), names == name) for name in sorted(set(names))]


def _is_missing(value: object) -> bool:
    """True for None and float NaN (including pd.NA-like values that are not equal to themselves)."""
    try:
        return value is None or bool(value != value)
    except TypeError:
        return True


def before_after_histogram(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    title: str,
    *,
    xlabel: str = "score",
) -> Figure:
    """Density histograms (30 shared bins) of a value over all records and over the selected ones.

    Densities, not counts, so a selected 20% is comparable in shape with the whole set; NaNs are left out.
    """
    all_v = np.asarray(before, dtype=float)
    sel_v = np.asarray(after, dtype=float)
    all_v, sel_v = all_v[~np.isnan(all_v)], sel_v[~np.isnan(sel_v)]
    fig, ax = _new_axes(title)
    if all_v.size:
        edges = np.histogram_bin_edges(all_v, bins=HIST_BINS)
        ax.hist(all_v, bins=edges, density=True, color=UNSELECTED_COLOR, alpha=0.7, label=f"all ({all_v.size})")
        if sel_v.size:
            ax.hist(sel_v, bins=edges, density=True, histtype="step", linewidth=2, color=SELECTED_COLOR,
                    label=f"selected ({sel_v.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend()
    return fig


def category_mix(
    before: Sequence[object] | np.ndarray,
    after: Sequence[object] | np.ndarray,
    title: str,
) -> Figure:
    """Share of each category among all records and among the selected ones, as paired horizontal bars."""
    names_all = np.array(["(none)" if _is_missing(v) else str(v) for v in before], dtype=object)
    names_sel = np.array(["(none)" if _is_missing(v) else str(v) for v in after], dtype=object)
    cats = sorted(set(names_all) | set(names_sel))
    share_all = np.array([(names_all == c).mean() if names_all.size else 0.0 for c in cats])
    share_sel = np.array([(names_sel == c).mean() if names_sel.size else 0.0 for c in cats])
    fig, ax = _new_axes(title)
    y = np.arange(len(cats))
    ax.barh(y - 0.2, share_all, height=0.4, color=UNSELECTED_COLOR, label=f"all ({names_all.size})")
    ax.barh(y + 0.2, share_sel, height=0.4, color=SELECTED_COLOR, label=f"selected ({names_sel.size})")
    ax.set_yticks(y, cats)
    ax.invert_yaxis()
    ax.set_xlabel("share of records")
    ax.legend()
    return fig
