"""Ranking-quality metrics for record scores (pure numpy, no sklearn)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def auroc(scores: Sequence[float] | np.ndarray, labels_positive: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative).

    Computed from the Mann-Whitney U statistic on average ranks, so a tied positive/negative
    pair counts 1/2. ``labels_positive`` is boolean (or 0/1). Raises ValueError on NaN scores,
    mismatched lengths or when only one class is present.
    """
    s = np.asarray(scores, dtype=float)
    pos = _as_bool(labels_positive)
    if s.ndim != 1 or s.shape != pos.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {pos.shape}")
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise ValueError(f"{n_nan} NaN score(s); drop or impute them before computing AUROC")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positive(s) and {n_neg} negative(s)")
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def label_auroc(
    df: pd.DataFrame, score_col: str, label_col: str = "label", positive: str = "good"
) -> float | None:
    """AUROC of ``score_col`` for telling ``label == positive`` rows from the other labelled rows.

    Rows with a missing label or a missing score are left out. Returns None when ``label_col``
    is absent or fewer than two classes remain, e.g. data without the demo's "good"/"poor" labels.
    """
    if label_col not in df.columns:
        return None
    if score_col not in df.columns:
        raise ValueError(f"score column {score_col!r} not found; available columns: {list(df.columns)}")
    rows = df[[score_col, label_col]].dropna()
    pos = (rows[label_col] == positive).to_numpy(dtype=bool)
    if pos.all() or not pos.any():
        return None
    return auroc(rows[score_col].to_numpy(dtype=float), pos)


def _as_bool(labels: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Labels as a bool array; only bools or 0/1 values are accepted."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if arr.size and (arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all()):
        sample = arr.ravel()[:5].tolist()
        raise ValueError(f"labels_positive must be boolean or 0/1, got values like {sample}")
    return arr.astype(bool)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2  # mean of (ends - counts + 1) .. ends
    return mean_rank[inverse]
