"""Selection over a file in chunks: the same outputs as selecting the whole table in memory, for every strategy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.selection.config import SelectionConfig
from tests.unit.selection.test_stage import scored_demo

CASES = [
    {"fraction": 0.3, "min_chars": 20, "max_chars": 600},
    {"top_k": 20, "quotas": {"math": 3, "code": 0.25}},
    {"threshold": 1.2, "score_below": 1.4},
    {"strategy": "combined", "weights": {"selectit_score": 1.0, "other": -0.5}, "top_k": 40},
    {"strategy": "random", "fraction": 0.1, "seed": 3},
    {"strategy": "full", "max_chars": 300},
    {"by": "response_chars", "fraction": 0.2},  # the longest-responses baseline: a length derived while reading
]


def in_memory(df: pd.DataFrame, cfg: SelectionConfig, out: Path, embeddings: np.ndarray | None = None) -> None:
    """The reference: the whole table read, selected and written at once."""
    from selectune.data.records import export_alpaca
    from selectune.selection.select import select_records

    res = select_records(df.assign(response_chars=df["output"].fillna("").str.len()), cfg, embeddings)
    out.mkdir(parents=True)
    res.table.to_parquet(out / "selection.parquet", index=False)
    res.selected.to_parquet(out / "selected.parquet", index=False)
    export_alpaca(res.selected, out / "selected_alpaca.json")


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in ("selection.parquet", "selected.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    assert (a / "selected_alpaca.json").read_bytes() == (b / "selected_alpaca.json").read_bytes()
    assert sorted(p.name for p in a.iterdir()) == ["selected.parquet", "selected_alpaca.json", "selection.parquet"]


def scored_file(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The demo records with a score, a second score with gaps, and a list column (as the scoring stages write)."""
    path = scored_demo(tmp_path)
    df = pd.read_parquet(path)
    rng = np.random.default_rng(0)
    df["other"] = np.where(rng.random(len(df)) < 0.1, np.nan, rng.random(len(df)))
    df["probs"] = [list(rng.random(3)) for _ in range(len(df))]
    df.to_parquet(path, index=False)
    return path, df


@pytest.mark.parametrize("case", CASES)
def test_chunked_selection_equals_whole_table(case: dict, tmp_path: Path) -> None:
    from selectune.selection.stage import select_file

    path, df = scored_file(tmp_path)
    cfg = SelectionConfig(**case)
    in_memory(df, cfg, tmp_path / "whole")
    res, outputs, m = select_file(cfg, path, tmp_path / "chunked", rows=7)  # 22 chunks, 22 buckets
    assert_same_outputs(tmp_path / "whole", tmp_path / "chunked")
    assert "output" not in res.table.columns and len(res.table) == m["records_in"] == 150
    assert outputs.selected == tmp_path / "chunked" / "selected.parquet"


def test_reselecting_a_selection_replaces_its_decision_columns(tmp_path: Path) -> None:
    from selectune.selection.stage import select_file

    path, df = scored_file(tmp_path)
    select_file(SelectionConfig(top_k=30), path, tmp_path / "first", rows=16)
    again = tmp_path / "first" / "selection.parquet"
    cfg = SelectionConfig(by="other", fraction=0.5)
    in_memory(pd.read_parquet(again), cfg, tmp_path / "whole")
    select_file(cfg, again, tmp_path / "chunked", rows=16)
    assert_same_outputs(tmp_path / "whole", tmp_path / "chunked")


def test_diversity_from_memory_mapped_embeddings(tiny_embedder: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.selection.diversity import NearestAccepted, embed_records
    from selectune.selection.stage import select_file

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(NearestAccepted, "initial_rows", 4)  # the accepted matrix grows several times
    path, df = scored_file(tmp_path)
    cfg = SelectionConfig(strategy="full", diversity_threshold=0.99, embedder=tiny_embedder)
    in_memory(df, cfg, tmp_path / "whole", embed_records(df, tiny_embedder, use_cache=False).vectors)
    res, _, m = select_file(cfg, path, tmp_path / "chunked", rows=16)
    assert_same_outputs(tmp_path / "whole", tmp_path / "chunked")
    assert m["embedded_new"] == 150 and (res.table["decision"] == "too_similar").sum() > 0


def test_empty_file_writes_empty_outputs(tmp_path: Path) -> None:
    import json

    from selectune.selection.stage import select_file

    path, df = scored_file(tmp_path)
    df.iloc[:0].to_parquet(path, index=False)
    res, outputs, _ = select_file(SelectionConfig(), path, tmp_path / "out")
    assert len(pd.read_parquet(outputs.selection)) == 0 == len(res.selected)
    assert json.loads(outputs.alpaca.read_text()) == []
    assert "rank" in pd.read_parquet(outputs.selection).columns


def test_missing_columns_name_the_files_columns(tmp_path: Path) -> None:
    from selectune.selection.stage import select_file

    path, _ = scored_file(tmp_path)
    with pytest.raises(ValueError, match=r"score column 'nope' not found; available columns: \['id', 'instruction'"):
        select_file(SelectionConfig(by="nope"), path, tmp_path / "a")
    with pytest.raises(ValueError, match="quotas need the category column 'topic'; available columns: "):
        select_file(SelectionConfig(quotas={"x": 1}, category_column="topic"), path, tmp_path / "b")
