"""How good a judge is: correlations with the labels, and the coverage-vs-quality curve of selective answering."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def correlations(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) of two equal-length series; NaN when either is constant."""
    a, b = pd.Series(np.asarray(x, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    if len(a) != len(b):
        raise ValueError(f"correlation of series with {len(a)} and {len(b)} values")
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2:
        return float("nan"), float("nan")
    return float(a.corr(b)), float(a.rank().corr(b.rank()))


def coverage_curve(scores: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Answer the k best-scored items (k = 1..N): (coverage k/N, mean quality of those k, area under the
    curve = mean over k of that mean quality, in quality units). Ties keep input order."""
    s, q = np.asarray(scores, dtype=float), np.asarray(quality, dtype=float)
    if s.shape != q.shape or s.ndim != 1 or not len(s):
        raise ValueError(f"coverage curve needs two equal, non-empty 1-D arrays, got {s.shape} and {q.shape}")
    order = np.argsort(-s, kind="stable")
    k = np.arange(1, len(s) + 1)
    mean_quality = np.cumsum(q[order]) / k
    return k / len(s), mean_quality, float(mean_quality.mean())


def coverage_figure(scores: np.ndarray, quality: np.ndarray, threshold: float | None = None,
                    title: str = "Selective instruction following") -> Figure:
    """Coverage vs mean quality for the judge, the oracle (sorted by quality) and random order (the mean)."""
    from matplotlib.figure import Figure

    cov, judged, auc = coverage_curve(scores, quality)
    _, oracle, oracle_auc = coverage_curve(quality, quality)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(cov, judged, label=f"judge (area {auc:.2f})", color="tab:blue")
    ax.plot(cov, oracle, label=f"oracle (area {oracle_auc:.2f})", color="0.4", linestyle=":")
    ax.axhline(float(np.mean(quality)), color="0.65", linestyle="--", label="random order")
    if threshold is not None:
        answered = float((np.asarray(scores) >= threshold).mean())
        ax.axvline(answered, color="tab:red", linestyle="--", label=f"threshold {threshold:g}: {answered:.0%} answered")
    ax.set_xlabel("coverage (fraction of instructions answered)")
    ax.set_ylabel("mean quality label of answered (0-9)")
    ax.set_title(title)
    ax.legend()
    return fig
