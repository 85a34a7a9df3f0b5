"""Subset selection: rank scored records and keep the best ones under a budget, with baselines, constraints and a
diversity pass (:func:`select_records`).

Budget, exactly one per call: a ``fraction`` keeps the top ``floor(n * fraction)`` of the ``n`` records *with* a
score, at least one when ``n > 0`` (the SelectIT paper's 20% by default); ``top_k`` keeps the top k; a
``threshold`` keeps every score ``>= threshold``. Ranking is by score descending, ties broken by ``id`` ascending,
so the result does not depend on the input's row order. Records whose score is NaN are ranked last and never
selected.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from selectune.selection.config import SelectionConfig

log = logging.getLogger(__name__)
DEFAULT_FRACTION = 0.2
ID_COL = "id"
ADDED_COLS = ("selection_score", "rank", "selected", "decision", "decision_reason")
SIM_BLOCK = 256  # diversity pass: candidates compared to the accepted set per matrix product
# floor(n * fraction) must not lose a record to float error, e.g. 100 * 0.29 == 28.999999999999996.
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :func:`select_records`.

    ``table`` holds every input row in rank order (index reset) plus ``selection_score`` (the score ranked by),
    ``rank`` (1 = best, 1..n without gaps), ``selected`` (bool), ``decision`` (selected, below_cut,
    score_missing, score_too_high, too_short, too_long, quota_full, too_similar) and ``decision_reason`` (str).
    ``selected`` is the selected rows only, in rank order. ``cut_value`` is the threshold in threshold mode, else
    the score of the last selected row (None when nothing was selected, and for the random and full baselines).
    ``budget`` is the number of slots in k / fraction mode (None otherwise).
    """

    table: pd.DataFrame
    selected: pd.DataFrame
    cut_value: float | None
    budget: int | None = None


def select_records(df: pd.DataFrame, cfg: SelectionConfig, embeddings: Any = None) -> SelectionResult:
    """Select a subset of ``df`` as ``cfg`` says; ``embeddings`` (one row per ``df`` row: an array, or a
    :class:`selection.diversity.Rows` view of a memory-mapped one) for the diversity pass.

    Scores (column ``selection_score``): ``top`` uses ``cfg.by``; ``combined`` is the weighted mean of each
    weighted column's rank normalized to [0, 1] (average ranks over the non-NaN values, 1 = best; a negative
    weight flips the column so lower is better; weights are divided by the sum of their absolute values), NaN
    when any weighted column is NaN; ``random`` draws a uniform key from sha256(seed, id), so the subset
    depends on the seed and the ids only; ``full`` ranks by ``cfg.by`` when present and keeps everything.
    Records are walked in rank order. Missing scores and response lengths outside [min_chars, max_chars]
    are rejected outright (threshold mode: scores below the threshold too); then a record is skipped when its
    category's quota is full or it is too similar to an accepted one, and the next record takes the slot until
    the budget (k, or floor(fraction * scored records), at least 1) is filled. Quota fractions are of that
    budget (threshold and full mode: of the records passing the outright checks), rounded down.
    """
    crit = cfg.criteria()
    mode, value = ("full", 0.0) if cfg.strategy == "full" else _resolve_mode(
        crit.get("fraction"), crit.get("k"), crit.get("threshold"))
    return _select(df, cfg, mode, value, embeddings)


def _select(df: pd.DataFrame, cfg: SelectionConfig, mode: str, value: float, embeddings: Any) -> SelectionResult:
    """select_records with the budget already resolved: mode "fraction", "k", "threshold" or "full"."""
    id_rank = _id_ranks(df)
    score, missing = _strategy_score(df, cfg)
    order = _rank_order(score, id_rank)
    table = df.drop(columns=[c for c in ADDED_COLS if c in df.columns])
    table = (table if np.array_equal(order, np.arange(len(order))) else table.iloc[order]).reset_index(drop=True)
    score, missing = score[order], missing[order]
    n = len(table)
    table["selection_score"] = score
    table["rank"] = np.arange(1, n + 1)
    reasons, kinds = np.full(n, "", dtype=object), np.full(n, "", dtype=object)

    def reject(mask: np.ndarray, kind: str, text: Callable[[int], str]) -> None:  # first reason wins
        rows = np.flatnonzero(mask & (kinds == ""))
        kinds[rows], reasons[rows] = kind, [text(i) for i in rows]

    scored = np.array([m is None for m in missing], dtype=bool)
    reject(~scored, "score_missing", lambda i: f"score missing{missing[i]}")
    if cfg.score_below is not None:
        high = np.where(np.isnan(score), -np.inf, score) >= cfg.score_below
        reject(high, "score_too_high", lambda i: f"score {score[i]:.6g} >= score_below {cfg.score_below:g}")
    if cfg.min_chars is not None or cfg.max_chars is not None:
        length = response_chars(table)
        lo, hi = cfg.min_chars or 0, cfg.max_chars or np.inf
        reject(length < lo, "too_short", lambda i: f"too short ({length[i]} < {lo} chars)")
        reject(length > hi, "too_long", lambda i: f"too long ({length[i]} > {hi} chars)")
    if mode == "threshold":
        below = np.where(np.isnan(score), np.inf, score) < value
        reject(below, "below_cut", lambda i: _threshold_reason(score[i], value))
    walk = np.flatnonzero(kinds == "")
    budget = _cut_rank(mode, value, int(scored.sum())) if mode in ("fraction", "k") else None
    caps, cats = _quotas(table, cfg, len(walk) if budget is None else budget)
    sims = None
    if cfg.diversity_threshold is not None:
        from selectune.selection.diversity import NearestAccepted, RankedUnitRows, check_rows

        if embeddings is None:
            raise ValueError("diversity_threshold is set: pass embeddings, one row per record (selection.diversity)")
        check_rows(embeddings, df[ID_COL].astype(str).to_numpy())
        sims = NearestAccepted(RankedUnitRows(embeddings, order), walk, SIM_BLOCK)
    accepted = _walk(walk, budget, caps, cats, sims, cfg.diversity_threshold, reasons, kinds, table[ID_COL])
    cut_rank = accepted[-1] + 1 if accepted else 0
    if cfg.strategy == "full":
        reasons[accepted] = "full baseline"
    elif mode == "threshold":
        reasons[accepted] = [_threshold_reason(score[i], value) for i in accepted]
    kinds[accepted] = "selected"
    rest = kinds == ""
    kinds[rest] = "below_cut"
    word = "not drawn" if cfg.strategy == "random" else "below cut"
    ranked = [(rest, f"{word} (rank ", f" > {cut_rank})")]
    if cfg.strategy != "full" and mode != "threshold":
        label = f"random baseline (seed {cfg.seed}, " if cfg.strategy == "random" else (
            f"top {value * 100:g}% (" if mode == "fraction" else f"top {int(value)} (")
        ranked.append((kinds == "selected", f"{label}rank ", f" <= {cut_rank})"))
    table["selected"] = kinds == "selected"
    table["decision"], table["decision_reason"] = kinds, _with_ranks(reasons, ranked)
    chosen = table[table["selected"]].reset_index(drop=True)
    cut = value if mode == "threshold" else _last_score(chosen, "selection_score") if cfg.strategy in (
        "top", "combined") else None
    return SelectionResult(table=table, selected=chosen, cut_value=cut, budget=budget)


def _with_ranks(reasons: np.ndarray, ranked: list[tuple[np.ndarray, str, str]], block: int = 65_536) -> pd.Series:
    """``reasons``, with ``prefix + rank + suffix`` where each mask is true: built in Arrow, ``block`` rows at a time,
    so that a million records need no Python string each (they would cost more than the rest of the selection)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chunks, rank = [], np.arange(1, len(reasons) + 1)
    for lo in range(0, len(reasons), block):
        part = slice(lo, lo + block)
        column = pa.array(reasons[part], pa.string())
        for mask, prefix, suffix in ranked:
            if mask[part].any():
                texts = pc.binary_join_element_wise(prefix, pc.cast(pa.array(rank[part][mask[part]]), pa.string()),
                                                    suffix, "")
                column = pc.replace_with_mask(column, pa.array(mask[part]), texts)
        chunks.append(column)
    return pd.Series(pa.chunked_array(chunks, pa.string()).to_pandas(), dtype="str")


def response_chars(table: pd.DataFrame) -> np.ndarray:
    """Each response's length in characters: the ``response_chars`` column when the table has one (a file read
    without its texts), else the ``output`` column's lengths."""
    if "response_chars" in table.columns:
        return table["response_chars"].to_numpy()
    if "output" not in table.columns:
        raise ValueError("min_chars/max_chars need an 'output' column")
    return table["output"].fillna("").astype(str).str.len().to_numpy()


def rank_order(df: pd.DataFrame, cfg: SelectionConfig) -> np.ndarray:
    """The row positions of ``df`` in the order :func:`select_records` ranks them (a frame already in this order is
    selected without a copy of its columns)."""
    return _rank_order(_strategy_score(df, cfg)[0], _id_ranks(df))


def _strategy_score(df: pd.DataFrame, cfg: SelectionConfig) -> tuple[np.ndarray, np.ndarray]:
    """(score per row, why the score is missing per row: None when it is usable, else a note for the reason)."""
    n = len(df)
    if cfg.strategy == "random":
        keys = [int.from_bytes(hashlib.sha256(f"{cfg.seed}\x1f{i}".encode()).digest()[:8], "big") for i in df[ID_COL]]
        return np.asarray(keys, dtype=float) / 2.0**64, np.full(n, None)
    if cfg.strategy == "full" and cfg.by not in df.columns:
        return np.full(n, np.nan), np.full(n, None)
    if cfg.strategy in ("top", "full"):
        _check_score_column(df, cfg.by)
        score = _as_float(df[cfg.by])
        return score, np.where(np.isnan(score) & (cfg.strategy == "top"), "", None)
    weights = {c: w for c, w in (cfg.weights or {}).items() if w}
    total, score, nan = sum(abs(w) for w in weights.values()), np.zeros(n), []
    for col, w in weights.items():
        _check_score_column(df, col)
        x = pd.Series(_as_float(df[col]))
        m = int(x.notna().sum())
        norm = ((x.rank(method="average") - 1) / (m - 1) if m > 1 else x * 0 + 0.5).to_numpy()
        score += abs(w) * (norm if w > 0 else 1 - norm) / total
        nan.append(np.isnan(norm))
    notes = np.full(n, None)
    for i in np.flatnonzero(np.isnan(score)):
        notes[i] = f" ({', '.join(c for c, m in zip(weights, nan, strict=True) if m[i])})"
    return score, notes


def _quotas(table: pd.DataFrame, cfg: SelectionConfig, base: int) -> tuple[dict[str, int], Categories | None]:
    """Quota caps per category (fractions of ``base``, rounded down) and each row's category."""
    if not cfg.quotas:
        return {}, None
    col = cfg.category_column
    if col not in table.columns:
        raise ValueError(f"quotas need the category column {col!r}; available columns: "
                         f"{[str(c) for c in table.columns]}")
    codes, uniques = pd.factorize(table[col])
    cats = Categories(codes, np.array([*(str(u) for u in uniques), None], dtype=object))
    unknown = sorted(set(cfg.quotas) - set(cats.names[:-1]))
    if unknown:
        log.warning("quota categories not in column %r: %s", col, unknown)
    caps = {c: int(q) if q >= 1 else math.floor(q * base + _FLOOR_EPS) for c, q in cfg.quotas.items()}
    return caps, cats


@dataclass(frozen=True)
class Categories:
    """Each row's category as a code into ``names`` (-1, the last name, is None: no category)."""

    codes: np.ndarray
    names: np.ndarray

    def __getitem__(self, row: int) -> str | None:
        return self.names[self.codes[row]]


def _walk(walk: np.ndarray, budget: int | None, caps: dict[str, int], cats: Categories | None,
          sims: object, threshold: float | None, reasons: np.ndarray, kinds: np.ndarray, ids: pd.Series,
          ) -> list[int]:
    """Accept candidates in rank order until the budget is filled; label the ones skipped on the way."""
    from tqdm.auto import tqdm

    used = dict.fromkeys(caps, 0)
    accepted: list[int] = []
    for pos, i in enumerate(tqdm(walk, desc="selection", unit="record", disable=sims is None or len(walk) < 5000)):
        if budget is not None and len(accepted) >= budget:
            break
        cat = cats[i] if cats is not None else None
        if cat in caps and used[cat] >= caps[cat]:
            kinds[i], reasons[i] = "quota_full", f"quota full for category {cat!r} ({caps[cat]})"
            continue
        if sims is not None:
            cos, j = sims.nearest(pos)
            if cos >= threshold:
                kinds[i], reasons[i] = "too_similar", f"too similar (cos {cos:.2f} to {ids.iat[j]})"
                continue
            sims.accept(pos)
        accepted.append(int(i))
        if cat in caps:
            used[cat] += 1
    return accepted


def _check_score_column(df: pd.DataFrame, by: str) -> None:
    """``by`` must exist and be numeric (not bool)."""
    if by not in df.columns:
        raise ValueError(f"score column {by!r} not found; available columns: {[str(c) for c in df.columns]}")
    dtype = df[by].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise ValueError(f"score column {by!r} must be numeric, got dtype {dtype}")


def _id_ranks(df: pd.DataFrame) -> np.ndarray:
    """Each row's position among the sorted ids; ``id`` must be a complete, unique column (duplicates are found
    next to each other once sorted, which costs far less memory than hashing a million strings)."""
    if ID_COL not in df.columns:
        cols = [str(c) for c in df.columns]
        raise ValueError(f"records need an {ID_COL!r} column to break ties; available columns: {cols}")
    ids = df[ID_COL]
    if ids.isna().any():
        raise ValueError(f"{int(ids.isna().sum())} record(s) have a missing {ID_COL!r}")
    by_id = ids.argsort().to_numpy()
    ordered = ids.iloc[by_id].array
    same = np.asarray(ordered[1:] == ordered[:-1], dtype=bool)
    if same.any():
        dupes = pd.unique(ordered[1:][same]).tolist()
        raise ValueError(f"{len(dupes)} duplicate id(s) in {ID_COL!r}, e.g. {dupes[:5]}")
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[by_id] = np.arange(len(ids))
    return ranks


def _resolve_mode(fraction: float | None, k: int | None, threshold: float | None) -> tuple[str, float]:
    """Validate the options; return the mode ("fraction", "k" or "threshold") and its value."""
    options = {"fraction": fraction, "k": k, "threshold": threshold}
    given = [name for name, v in options.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of fraction / k / threshold, got {' and '.join(given)}")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, Integral):
            raise ValueError(f"k must be an integer, got {k!r}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return "k", int(k)
    if threshold is not None:
        if not _is_real(threshold) or math.isnan(threshold):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        return "threshold", float(threshold)
    f = DEFAULT_FRACTION if fraction is None else fraction
    if not _is_real(f) or not 0 < f <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {f!r}")
    return "fraction", float(f)


def _is_real(x: object) -> bool:
    """True for real numbers (int, float, numpy scalars), False for bools and everything else."""
    return isinstance(x, Real) and not isinstance(x, bool | np.bool_)


def _as_float(col: pd.Series) -> np.ndarray:
    """Score column as a float array, missing values (NaN, pd.NA) as NaN."""
    return col.to_numpy(dtype=float, na_value=np.nan)


def _rank_order(scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """Row positions sorted by (score missing, score desc, id asc): ids are unique, so the order is total."""
    missing = np.isnan(scores)
    return np.lexsort((id_rank, np.where(missing, 0.0, -scores), missing))


def _cut_rank(mode: str, value: float, n_scored: int) -> int:
    """Number of scored records to keep in fraction / k mode."""
    if mode == "k":
        return min(int(value), n_scored)
    if n_scored == 0:
        return 0
    return max(1, math.floor(n_scored * value + _FLOOR_EPS))


def _threshold_reason(score: float, threshold: float) -> str:
    """Decision reason in threshold mode (NaN scores are relabelled by the caller)."""
    op = ">=" if score >= threshold else "<"
    return f"score {score:.6g} {op} threshold {threshold:g}"


def _last_score(chosen: pd.DataFrame, by: str) -> float | None:
    """Score of the last selected row, or None when nothing was selected."""
    return None if chosen.empty else float(_as_float(chosen[by])[-1])
