"""Sharded scoring's file work without a model: a shard's rows copied out of the records file, the plan's weights read
in chunks, and the k-way merge of shard tables by input row (model-level scores recomputed with global weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.config import SelectITConfig
from selectune.selectit import shards


def records(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i:03d}" for i in range(n)],
                         "instruction": [f"do {i}" * (1 + i % 4) for i in range(n)],
                         "input": ["" if i % 3 else f"ctx {i}" for i in range(n)],
                         "output": [f"out {i}" for i in range(n)], "probs": [[float(i), 0.5] for i in range(n)]})


def write_shards(tmp_path: Path, df: pd.DataFrame, plan: list[list[int]]) -> list[dict]:
    """Shard tables as score_shard writes them (rows in input order plus _row) and their markers."""
    rng = np.random.default_rng(1)
    results = []
    for index, positions in enumerate(plan):
        part = df.iloc[positions].assign(**{"selectit_sentence.a": rng.random(len(positions)),
                                            "selectit_sentence.b": rng.random(len(positions)),
                                            "selectit_score": -1.0, shards.ROW: positions})
        part.to_parquet(shards.paths(tmp_path, index)[0], index=False)
        raters = [{"key": k, "n_params": p, "cache_hits": 0, "computed": len(positions) * 5, "tokens": 1,
                   "seconds": 1.0, "truncated": 0} for k, p in (("a", 1), ("b", 3))]
        results.append({"index": index, "rows": len(positions), "raters": raters, "skipped": index == 1})
    return results


def test_take_rows_and_file_weights(tmp_path: Path) -> None:
    from selectune.data.stream import take_rows

    df = records(23)
    df.to_parquet(tmp_path / "r.parquet", index=False)
    assert take_rows(tmp_path / "r.parquet", [20, 3, 4, 11], tmp_path / "s.parquet", rows=5) == 4
    taken = pd.read_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(taken, df.iloc[[3, 4, 11, 20]].reset_index(drop=True))
    with pytest.raises(ValueError, match=r"row 23 is outside .*r.parquet \(23 rows\)"):
        take_rows(tmp_path / "r.parquet", [1, 23], tmp_path / "t.parquet")
    assert shards.file_weights(tmp_path / "r.parquet") == shards.record_weights(df)


@pytest.mark.parametrize("rows", [4, 7, 100])
def test_merge_streams_shards_into_input_order(tmp_path: Path, rows: int) -> None:
    df = records(25)
    plan = shards.plan_shards(shards.record_weights(df), 3)
    assert all(len(p) > 1 and p != list(range(p[0], p[0] + len(p))) for p in plan)  # scattered positions
    results = write_shards(tmp_path, df, plan)
    m = shards.merge_shards(tmp_path, results, len(df), SelectITConfig(), tmp_path / "scored.parquet", rows=rows)
    out = pd.read_parquet(tmp_path / "scored.parquet")
    parts = pd.concat([pd.read_parquet(shards.paths(tmp_path, i)[0]) for i in range(3)])
    expect = parts.sort_values(shards.ROW).drop(columns=shards.ROW).reset_index(drop=True)
    expect["selectit_score"] = (1 * expect["selectit_sentence.a"] + 3 * expect["selectit_sentence.b"]) / 4
    pd.testing.assert_frame_equal(out, expect)
    assert out["id"].tolist() == df["id"].tolist()
    assert m["shards_total"] == 3 and m["shards_skipped"] == 1 and m["weight.b"] == 3.0
    assert m["ratings_computed"] == 5 * 2 * (25 - len(plan[1]))  # the skipped shard computed nothing now


def test_merge_rejects_a_plan_that_does_not_cover_the_input(tmp_path: Path) -> None:
    df = records(12)
    results = write_shards(tmp_path, df, [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9]])  # row 11 missing
    with pytest.raises(RuntimeError, match="do not cover rows 8..12 of 12 exactly once"):
        shards.merge_shards(tmp_path, results, 12, SelectITConfig(), tmp_path / "o.parquet", rows=4)
    results = write_shards(tmp_path, df, [[0, 2, 4, 6, 8, 10], [1, 3, 4, 5, 7, 9, 11]])  # row 4 twice
    with pytest.raises(RuntimeError, match="do not cover rows 4..8"):
        shards.merge_shards(tmp_path, results, 12, SelectITConfig(), tmp_path / "o.parquet", rows=4)
    assert not (tmp_path / "o.parquet").exists()
