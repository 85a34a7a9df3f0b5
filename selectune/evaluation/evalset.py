"""The fixed evaluation set: held out by record id before anything else, so every run over the same input is
evaluated on the same items and no evaluation item is ever scored, recycled, selected or trained on.

Membership is a hash band: a record belongs when ``int(sha256(id)) % 1000 < round(1000 * fraction)``. It depends
on the record alone, so a grown dataset keeps every old member (ids derive from content). ``max_records`` caps the
evaluated items at the members with the smallest hashes; the rest of the band is reserved (not trained on either),
so a record never moves from training into evaluation. When the cap binds and the data grows, new members with
smaller hashes can enter the evaluated set: its digest then changes and comparisons say so.
"""

from __future__ import annotations

import hashlib

import pandas as pd

BAND = 1000


def id_hash(record_id: str) -> int:
    """The full sha256 of a record id as an integer."""
    return int(hashlib.sha256(str(record_id).encode("utf-8")).hexdigest(), 16)


def in_band(ids: pd.Series, fraction: float) -> pd.Series:
    """True for the ids in the evaluation hash band."""
    cut = round(BAND * fraction)
    return ids.astype(str).map(lambda i: id_hash(i) % BAND < cut).astype(bool)


def carve(df: pd.DataFrame, fraction: float, max_records: int | None = None,
          ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(training pool, evaluation set, reserved count): the band members (at most ``max_records`` of them, by
    hash) are evaluated, all band members leave the pool."""
    band = in_band(df["id"], fraction)
    members = df[band.to_numpy()]
    order = members["id"].astype(str).map(id_hash).sort_values(kind="stable").index
    evaluated = members.loc[order].head(max_records) if max_records else members.loc[order]
    return (df[~band.to_numpy()].reset_index(drop=True), evaluated.reset_index(drop=True),
            len(members) - len(evaluated))


def apart(df: pd.DataFrame, heldout: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The training pool without any record of an explicit evaluation set (same id), and how many were removed."""
    overlap = df["id"].isin(set(heldout["id"]))
    return df[~overlap.to_numpy()].reset_index(drop=True), int(overlap.sum())


def eval_set_digest(df: pd.DataFrame) -> str:
    """Identity of an evaluation set: its sorted record ids (and references), 16 hex characters."""
    from selectune.core.digests import table_digest

    cols = [c for c in ("id", "output") if c in df.columns]
    return table_digest(df[cols].sort_values("id", ignore_index=True), cols)
