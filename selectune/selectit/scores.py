"""SelectIT's formulas (arXiv 2402.16705), pure and numpy-only.

Token level: the rater's probabilities for the rating tokens "1".."K" give a base rating (argmax + 1)
scaled by how far the winning probability stands above the others. Sentence level: several rating
prompts, mean / (1 + alpha * std). Model level: a weighted sum over raters, weights summing to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Normalization = Literal["paper", "official"]

def token_scores(probs: np.ndarray, normalization: Normalization = "paper") -> np.ndarray:
    """Token-level SelectIT score from rating-token probabilities ``[..., K]`` -> ``[...]``.

    ``probs`` are raw softmax probabilities over the full vocabulary at the rating position.
    "paper": P' = p / sum(p). "official": additionally P'' = exp(P') / sum(exp(P')).
    Score = (argmax + 1) * (1 / (K - 1)) * sum_i (P'_max - P'_i).
    """
    p = np.asarray(probs, dtype=np.float64)
    k = p.shape[-1]
    if k < 2:
        raise ValueError(f"need at least 2 rating tokens, got K={k}")
    if np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("rating probabilities must be finite and non-negative")
    total = p.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("rating probabilities sum to zero for some rows")
    norm = p / total
    if normalization == "official":
        e = np.exp(norm)
        norm = e / e.sum(axis=-1, keepdims=True)
    elif normalization != "paper":
        raise ValueError(f"unknown normalization {normalization!r}; expected 'paper' or 'official'")
    base = norm.argmax(axis=-1) + 1
    top = norm.max(axis=-1, keepdims=True)
    spread = (top - norm).sum(axis=-1) / (k - 1)
    return base * spread


def base_ratings(probs: np.ndarray) -> np.ndarray:
    """The rating the model prefers (argmax + 1), shape ``[...]``."""
    return np.asarray(probs).argmax(axis=-1) + 1


def sentence_scores(token_scores: np.ndarray, alpha: float = 0.2) -> np.ndarray:
    """Sentence level over R rating prompts: ``[N, R]`` -> mean / (1 + alpha * std) ``[N]``.

    std is the population standard deviation (ddof=0), as in the official scripts.
    """
    t = np.asarray(token_scores, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"token_scores must be [N, R], got shape {t.shape}")
    return t.mean(axis=1) / (1.0 + alpha * t.std(axis=1))


def model_scores(sentence_scores_per_model: Sequence[np.ndarray] | np.ndarray,
                 weights: Sequence[float]) -> np.ndarray:
    """Model level: weighted sum of per-model sentence scores ``[M, N]`` -> ``[N]``.

    Weights are normalized to sum to one (the paper weights raters by parameter count).
    """
    s = np.asarray(sentence_scores_per_model, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if s.ndim != 2 or w.shape != (s.shape[0],):
        raise ValueError(f"need [M, N] scores and M weights, got {s.shape} and {w.shape}")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(w)}")
    return (w / w.sum()) @ s
