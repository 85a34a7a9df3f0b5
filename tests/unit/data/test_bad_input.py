"""More kinds of bad input (with tests/unit/data/test_records.py: every kind the loader meets), each error naming
the file, the row or line and the field; and inputs that look odd but are fine (a BOM, CRLF line endings)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from selectune.data.records import load_records
from tests.unit.data.test_records import ROWS, assert_error, jsonl, load_error, write


def test_csv_with_non_utf8_bytes_names_the_line(tmp_path: Path) -> None:
    data = "instruction,input,output\nSay hi,,Hello\nCaf\u00e9 order,,One coffee\n".encode().replace(
        "Caf\u00e9".encode(), b"Caf\xe9")
    path = write(tmp_path, "latin.csv", data)
    err = load_error(path)
    assert err.file == str(path) and err.line == 3 and "UTF-8" in err.reason


def test_csv_without_a_required_column(tmp_path: Path) -> None:
    path = write(tmp_path, "no-output.csv", "instruction,input\nSay hi,\n")
    err = load_error(path)
    assert err.file == str(path) and err.field == "output" and "output" in str(err)


def test_parquet_with_a_non_string_instruction(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pd.DataFrame({"instruction": [5, 7], "input": ["", ""], "output": ["Five", "Seven"]}).to_parquet(path)
    assert_error(load_error(path), path, 1, None, "instruction", "wrong type: expected a string, got number")


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_parquet_with_a_null_output(tmp_path: Path, missing: object) -> None:
    path = tmp_path / "nulls.parquet"
    pd.DataFrame({"instruction": ["Say hi", "Say bye"], "input": ["", ""], "output": ["Hello", missing]}).to_parquet(
        path)
    err = load_error(path)
    assert (err.file, err.row, err.field) == (str(path), 2, "output")


@pytest.mark.parametrize("text, kind", [("42", "number"), ('"records"', "string"), ("null", "null")])
def test_json_top_level_neither_list_nor_object(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, "scalar.json", text)  # read as one JSON line: its one row is not a record
    assert_error(load_error(path), path, 1, 1, None, f"row is not a JSON object (got {kind})")


def test_sharegpt_with_an_unknown_role(tmp_path: Path) -> None:
    row = {"conversations": [{"from": "robot", "value": "beep"}, {"from": "gpt", "value": "boop"}]}
    path = write(tmp_path, "s.jsonl", jsonl([ROWS[0], row]))
    err = load_error(path)
    assert (err.file, err.row) == (str(path), 2) and "robot" in err.reason


@pytest.mark.parametrize("name", ["bom.json", "bom.jsonl", "bom.csv"])
def test_a_bom_and_crlf_line_endings_are_accepted(tmp_path: Path, name: str) -> None:
    if name.endswith(".csv"):
        buf = io.StringIO()
        csv.DictWriter(buf, ["instruction", "input", "output"], lineterminator="\r\n").writerows(
            [{"instruction": "instruction", "input": "input", "output": "output"}, *ROWS])
        text = buf.getvalue()
    elif name.endswith(".jsonl"):
        text = jsonl(ROWS).replace("\n", "\r\n")
    else:
        text = json.dumps(ROWS, indent=2).replace("\n", "\r\n")
    path = write(tmp_path, name, b"\xef\xbb\xbf" + text.encode())
    res = load_records(path)
    assert res.records["instruction"].iloc[0] == ROWS[0]["instruction"]  # no BOM glued to the first value
    assert not res.records["output"].str.endswith("\r").any()


def test_rows_with_the_same_given_id_but_different_content_are_both_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "ids.jsonl", jsonl([{**ROWS[0], "id": "x1"}, {**ROWS[1], "id": "x1"}]))
    res = load_records(path)
    assert len(res.records) == 2 and res.records["id"].nunique() == 2  # ids are content hashes, recomputed


def test_no_valid_row_after_skipping_is_an_error_not_an_empty_run(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.jsonl", jsonl([{**ROWS[0], "output": ""}, {**ROWS[1], "instruction": " "}]))
    err = load_error(path, on_invalid="skip")
    assert err.file == str(path) and "no valid records" in str(err) and "2 rejected" in str(err)


def test_a_folder_without_readable_files(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "notes.txt").write_text("not data", encoding="utf-8")
    err = load_error(folder)
    assert err.file == str(folder) and "no" in err.reason.lower()
