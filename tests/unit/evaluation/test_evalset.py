"""The fixed evaluation set: a hash band by record id, stable when the data grows, never in the training pool."""

from __future__ import annotations

import hashlib

import pandas as pd

from selectune.data.records import record_id
from selectune.evaluation.evalset import apart, carve, eval_set_digest, in_band


def records(n: int, start: int = 0) -> pd.DataFrame:
    rows = [(f"Question {i}?", "", f"Answer {i}.") for i in range(start, start + n)]
    return pd.DataFrame({"id": [record_id(*r) for r in rows], "instruction": [r[0] for r in rows],
                         "input": "", "output": [r[2] for r in rows]})


def test_membership_is_the_documented_hash_band() -> None:
    df = records(400)
    band = in_band(df["id"], 0.1)
    by_hand = [int(hashlib.sha256(i.encode()).hexdigest(), 16) % 1000 < 100 for i in df["id"]]
    assert band.tolist() == by_hand and 20 < band.sum() < 60  # about 10% of 400


def test_carve_is_deterministic_disjoint_and_stable_under_growth() -> None:
    df = records(500)
    pool, evaluated, reserved = carve(df, 0.1)
    assert reserved == 0 and len(pool) + len(evaluated) == len(df)
    assert not set(pool["id"]) & set(evaluated["id"])
    shuffled = carve(df.sample(frac=1, random_state=3), 0.1)[1]
    assert sorted(shuffled["id"]) == sorted(evaluated["id"]) and eval_set_digest(shuffled) == eval_set_digest(evaluated)
    grown_pool, grown_eval, _ = carve(pd.concat([df, records(300, start=500)]), 0.1)
    assert set(evaluated["id"]) <= set(grown_eval["id"])  # old members stay; no old pool record becomes one
    assert set(grown_eval["id"]) - set(evaluated["id"]) <= set(records(300, start=500)["id"])


def test_cap_keeps_the_smallest_hashes_and_reserves_the_rest() -> None:
    df = records(500)
    _, full, _ = carve(df, 0.2)
    pool, capped, reserved = carve(df, 0.2, max_records=10)
    assert len(capped) == 10 and reserved == len(full) - 10
    assert set(capped["id"]) <= set(full["id"]) and not set(full["id"]) & set(pool["id"])  # reserved: not trained
    hashes = [int(hashlib.sha256(i.encode()).hexdigest(), 16) for i in full["id"]]
    assert sorted(capped["id"]) == sorted(full["id"].iloc[sorted(range(len(full)), key=hashes.__getitem__)[:10]])


def test_an_explicit_heldout_set_leaves_the_pool() -> None:
    df = records(50)
    pool, removed = apart(df, df.iloc[[3, 7]])
    assert removed == 2 and len(pool) == 48 and not set(df["id"].iloc[[3, 7]]) & set(pool["id"])
