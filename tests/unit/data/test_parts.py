"""A dataset folder of parts: appended atomically, never rewritten, read as one dataset, errors naming the part."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selectune.data.parts import add_part
from selectune.data.readers import DataValidationError
from selectune.data.records import load_records


def test_add_parts_and_read_the_folder_as_one_dataset(records: pd.DataFrame, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    first = add_part(records.head(4).assign(source="a"), folder)
    assert first.added == 4 and first.already_present == 0 and first.part.name.startswith("part-")
    before = first.part.read_bytes()
    second = add_part(records.iloc[2:].assign(source="b"), folder)  # two already there, two new
    assert second.added == 2 and second.already_present == 2 and second.part.name > first.part.name
    assert first.part.read_bytes() == before  # existing parts are never rewritten
    assert add_part(records, folder).part is None  # nothing new: no empty part
    (folder / ".part-x.jsonl.tmp").write_text("not json")  # an unfinished write is not part of the dataset
    res = load_records(folder)
    assert res.fmt == "parts" and list(res.records["id"]) == list(records["id"])
    assert list(res.records["source"]) == ["a"] * 4 + ["b"] * 2  # extra fields survive the round trip
    assert second.payload() == {"folder": str(folder.resolve()), "part": str(second.part), "added": 2,
                                "already_present": 2, "digest": second.digest, "parts": 2}


def test_bad_row_names_the_part_file(records: pd.DataFrame, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    add_part(records.head(2), folder)
    bad = folder / "part-99999999-bad.jsonl"
    bad.write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n" + json.dumps({"instruction": "z"}) + "\n")
    with pytest.raises(DataValidationError) as err:
        load_records(folder)
    assert err.value.file == str(bad) and err.value.row == 2 and err.value.field == "output"
    skipped = load_records(folder, on_invalid="skip")
    assert len(skipped.records) == 3 and skipped.rejected[0].file == str(bad)
