"""Paired bootstrap confidence intervals: the items are resampled with replacement and the statistic recomputed,
so an interval reflects which items the evaluation set happens to hold. Two models are compared only on the same
items: each resample draws item indices once and applies them to both.

The statistic is a weighted mean (weights: response tokens for a token-weighted loss, 1 for a rate): for a paired
difference, ``sum(w * (a - b)) / sum(w)`` over the drawn items. Intervals are percentile intervals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic on all items
    low: float
    high: float
    n: int  # items used (finite values)

    def metrics(self, name: str) -> dict[str, float]:
        """``{name: estimate, name.ci_low: low, name.ci_high: high}``."""
        return {name: self.estimate, f"{name}.ci_low": self.low, f"{name}.ci_high": self.high}


def _clean(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    if v.shape != w.shape:
        raise ValueError(f"values {v.shape} and weights {w.shape} differ in shape")
    ok = np.isfinite(v) & np.isfinite(w) & (w > 0)
    return v[ok], w[ok]


def bootstrap_mean(values: np.ndarray, weights: np.ndarray | None = None, resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> Interval:
    """Weighted mean of per-item values with a bootstrap interval; NaN values (failed items) are left out."""
    v, w = _clean(values, weights)
    if not len(v):
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    estimate = float(np.sum(w * v) / np.sum(w))
    draws = np.random.default_rng(seed).integers(0, len(v), size=(resamples, len(v)))
    stats = np.sum(w[draws] * v[draws], axis=1) / np.sum(w[draws], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(v))


def paired_difference(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None, resamples: int = 1000,
                      seed: int = 0, confidence: float = 0.95) -> Interval:
    """Mean of ``a - b`` over the same items (weighted), with a paired bootstrap interval; an item missing in
    either is left out of both."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same items: {a.shape} vs {b.shape}")
    return bootstrap_mean(a - b, weights, resamples, seed, confidence)


def grid_bootstrap(values: np.ndarray, weights: np.ndarray | None = None, resamples: int = 1000, seed: int = 0,
                   confidence: float = 0.95) -> Interval:
    """Mean over seeds of each seed's weighted mean over items, for values ``[seeds, items]`` (the same items in
    every seed), with an interval that resamples both the seeds and the items (the same drawn items in every drawn
    seed). NaN values carry no weight."""
    v = np.asarray(values, dtype=float)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=float)
    if v.ndim != 2 or v.shape != w.shape:
        raise ValueError(f"grid values must be [seeds, items] with matching weights, got {v.shape} and {w.shape}")
    w = np.where(np.isfinite(v) & np.isfinite(w), w, 0.0)
    v = np.where(w > 0, v, 0.0)

    def stat(vs: np.ndarray, ws: np.ndarray) -> np.ndarray:  # [..., seeds, items] -> [...]; NaN: nothing drawn
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a draw whose items all failed: NaN, dropped below
            return np.nanmean(np.sum(ws * vs, axis=-1) / np.sum(ws, axis=-1), axis=-1)

    estimate = float(stat(v, w))
    if not np.isfinite(estimate):
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, v.shape[0], size=(resamples, v.shape[0]))
    i_idx = rng.integers(0, v.shape[1], size=(resamples, v.shape[1]))
    draws = stat(v[s_idx[:, :, None], i_idx[:, None, :]], w[s_idx[:, :, None], i_idx[:, None, :]])
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), int((w.sum(axis=0) > 0).sum()))
