"""records.parquet streamed in chunks equals the table load_records builds in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selectune.data.readers import DataValidationError
from selectune.data.records import load_records
from selectune.data.stream import iter_frames, write_records


def _rows() -> list[dict]:
    rows = [{"instruction": f"q{i}", "input": "ctx" if i % 2 else "", "output": f"a{i}",
             **({"score": i} if i >= 5 else {}), **({"tag": "late"} if i == 9 else {})} for i in range(10)]
    rows.append({"instruction": "q1", "input": "ctx", "output": "a1"})  # a duplicate of row 2
    rows.append({"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
                                   {"from": "gpt", "value": "yo"}]})
    return rows


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_chunks_equal_the_in_memory_table(tmp_path: Path) -> None:
    src = _write(tmp_path / "mixed.jsonl", _rows())
    scan = write_records(src, tmp_path / "out" / "records.parquet", chunk_rows=3)  # fields first seen in chunk 2-4
    streamed = pd.read_parquet(tmp_path / "out" / "records.parquet")
    pd.testing.assert_frame_equal(streamed, load_records(src).records)
    assert list(streamed.columns) == ["id", "instruction", "input", "output", "score", "tag", "system", "history"]
    assert streamed["system"].tolist()[-2:] == ["", "be brief"] and streamed["history"].iloc[0] == "[]"
    assert streamed["score"].isna().sum() == 6 and streamed["tag"].notna().sum() == 1
    assert (scan.rows_read, scan.valid, len(scan.duplicates)) == (12, 11, 1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["records.parquet"], "no part files left behind"
    frames = list(iter_frames(tmp_path / "out" / "records.parquet", 4, ["id"]))
    assert [len(f) for f in frames] == [4, 4, 3] and pd.concat(frames)["id"].tolist() == streamed["id"].tolist()


def test_limit_keeps_the_first_records_and_counts_the_whole_file(tmp_path: Path) -> None:
    src = _write(tmp_path / "d.jsonl", _rows())
    scan = write_records(src, tmp_path / "r.parquet", limit=4, chunk_rows=3)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"),
                                  load_records(src).records.head(4)[["id", "instruction", "input", "output"]])
    assert scan.rows_read == 12 and scan.valid == 11


def test_a_field_typed_differently_in_two_chunks_is_named(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": "a", "meta": i if i < 3 else f"text {i}"} for i in range(6)]
    with pytest.raises(DataValidationError, match=r"\['meta'\].*int64.*string") as err:
        write_records(_write(tmp_path / "d.jsonl", rows), tmp_path / "r.parquet", chunk_rows=3)
    assert err.value.field == "meta" and not (tmp_path / "r.parquet").exists()
    assert not list(tmp_path.glob(".r.parquet*")), "the part files are removed"


def test_map_chunks_of_an_empty_file_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    from selectune.data.stream import map_chunks

    src = tmp_path / "empty.parquet"
    pd.DataFrame({"id": pd.Series([], dtype=str)}).to_parquet(src)
    with pytest.raises(ValueError, match="empty.parquet holds no records"):
        map_chunks(src, tmp_path / "out.parquet", lambda i, chunk: chunk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet"]  # no output, no temporary file
