"""Tests for selectune.data: readers, validation errors, skip mode, dedupe, ids and writers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from selectune.data.readers import DataValidationError
from selectune.data.records import (
    LoadResult,
    Rejection,
    export_alpaca,
    load_records,
    record_id,
    write_parquet,
    write_rejections,
)
from tests.fixtures import SHARED_DATA

CHERRY = SHARED_DATA / "cherry_alpaca_3k.json"

ROWS = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat, sleep, move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(rows: list[object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def load_error(path: Path, **kwargs: object) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_records(path, **kwargs)
    return info.value


def assert_error(
    err: DataValidationError, path: Path, row: int | None, line: int | None, field: str | None, reason: str
) -> None:
    assert (err.file, err.row, err.line, err.field) == (str(path), row, line, field)
    assert reason in err.reason
    message = str(err)
    assert message.startswith(f"{path}: ")
    assert reason in message
    if row is not None:
        assert f"row {row}" in message
    if line is not None:
        assert f"line {line}" in message
    if field is not None:
        assert f"field '{field}'" in message


# --------------------------------------------------------------------------- record_id


def test_record_id_is_short_stable_hex() -> None:
    rid = record_id("Say hi", "", "Hi")
    assert rid == record_id("Say hi", "", "Hi")
    assert len(rid) == 16 and int(rid, 16) >= 0


def test_record_id_ignores_surrounding_and_repeated_whitespace_and_unicode_form() -> None:
    base = record_id("Say  hi to Zoë", "", "Hi there")
    assert record_id("  Say hi\n\tto Zoë ", " ", "Hi   there\n") == base
    assert record_id("Say hi to Zoe\u0308", "", "Hi there") == base  # decomposed -> NFC


def test_record_id_is_content_and_field_sensitive() -> None:
    base = record_id("Say hi", "", "Hi")
    assert record_id("Say hi", "", "Hello") != base
    assert record_id("say hi", "", "Hi") != base
    assert record_id("Say", "hi", "Hi") != base  # moving text across fields changes the id
    assert record_id("Sayhi", "", "Hi") != base
    assert record_id("ab", "", "c") != record_id("a", "b", "c") != record_id("a", "", "bc")


# --------------------------------------------------------------------------- readers


def test_alpaca_json_loads_with_optional_input_extras_and_id_first(tmp_path: Path) -> None:
    rows = [
        {"instruction": "A?", "output": "a", "label": 1, "category": "qa"},
        {"instruction": "B?", "input": None, "output": "b", "defect": "truncated"},
        {**ROWS[1], "category": "mt"},
    ]
    path = write(tmp_path, "data.json", json.dumps(rows, indent=2))
    res = load_records(path)
    assert isinstance(res, LoadResult)
    assert res.fmt == "alpaca-json" and res.source == str(path)
    expected = ["id", "instruction", "input", "output", "label", "category", "defect"]
    assert list(res.records.columns) == expected
    assert list(res.records.index) == [0, 1, 2]
    assert list(res.records["input"]) == ["", "", "Good morning"]
    assert res.records.loc[0, "label"] == 1 and res.records.loc[2, "category"] == "mt"
    assert res.records.loc[1, "defect"] == "truncated"
    assert res.records.loc[0, "id"] == record_id("A?", "", "a")
    assert res.summary() == {
        "source": str(path),
        "fmt": "alpaca-json",
        "rows_read": 3,
        "valid": 3,
        "rejected": 0,
        "duplicates": 0,
    }


def test_jsonl_loads_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "data.jsonl", jsonl(ROWS[:2]) + "\n  \n" + jsonl(ROWS[2:]))
    res = load_records(path)
    assert res.fmt == "jsonl" and res.rows_read == 3
    assert list(res.records["output"]) == ["Eat, sleep, move.", "Bonjour", "5"]


def test_json_extension_holding_jsonl_is_read_as_lines(tmp_path: Path) -> None:
    res = load_records(write(tmp_path, "data.json", jsonl(ROWS)))
    assert res.fmt == "jsonl" and len(res.records) == 3


def test_fmt_overrides_extension(tmp_path: Path) -> None:
    res = load_records(write(tmp_path, "data.txt", jsonl(ROWS)), fmt="jsonl")
    assert res.fmt == "jsonl" and len(res.records) == 3


def test_csv_loads_multiline_fields_and_extras(tmp_path: Path) -> None:
    text = 'instruction,input,output,label\n"Write a poem","","Roses\nare red",good\nSay hi,,Hi,bad\n'
    res = load_records(write(tmp_path, "data.csv", text))
    assert res.fmt == "csv" and res.rows_read == 2
    assert res.records.loc[0, "output"] == "Roses\nare red"
    assert list(res.records["label"]) == ["good", "bad"]
    assert list(res.records["input"]) == ["", ""]


def test_sharegpt_system_first_pair_and_history(tmp_path: Path) -> None:
    conv = [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "What is 2+2?"},
        {"from": "gpt", "value": "4"},
        {"from": "human", "value": "And 3+3?"},
        {"from": "gpt", "value": "6"},
    ]
    rows = [
        {"id": "conv-1", "conversations": conv, "source": "math"},
        {"conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello!"}]},
    ]
    res = load_records(write(tmp_path, "chat.json", json.dumps(rows, indent=2)))
    assert res.fmt == "sharegpt"
    first, second = res.records.iloc[0], res.records.iloc[1]
    assert (first["instruction"], first["input"], first["output"]) == ("What is 2+2?", "", "4")
    assert first["system"] == "Be brief." and first["source"] == "math"
    assert json.loads(first["history"]) == conv[3:]
    assert first["source_id"] == "conv-1" and first["id"] == record_id("What is 2+2?", "", "4")
    assert "conversations" not in res.records.columns
    assert (second["instruction"], second["output"], second["system"]) == ("Hi", "Hello!", "")
    assert json.loads(second["history"]) == []


def test_sharegpt_in_jsonl(tmp_path: Path) -> None:
    row = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    res = load_records(write(tmp_path, "chat.jsonl", jsonl([row])))
    assert res.fmt == "sharegpt" and res.records.loc[0, "output"] == "A"


def test_mixed_alpaca_and_sharegpt_rows(tmp_path: Path) -> None:
    chat = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    res = load_records(write(tmp_path, "mixed.jsonl", jsonl([chat, ROWS[0]])))
    assert res.fmt == "jsonl"
    assert list(res.records["system"]) == ["", ""] and list(res.records["history"]) == ["[]", "[]"]


def test_ids_stable_across_formats(tmp_path: Path) -> None:
    triple = {"instruction": "Name a  colour.", "input": "", "output": "Blue\n"}
    expected = record_id("Name a colour.", "", "Blue")
    sources = [
        write(tmp_path, "a.json", json.dumps([triple])),
        write(tmp_path, "a.jsonl", jsonl([triple])),
        write(tmp_path, "a.csv", 'instruction,input,output\n"  Name a colour.",,"Blue\n"\n'),
        write(
            tmp_path,
            "chat.json",
            json.dumps(
                [
                    {
                        "conversations": [
                            {"from": "human", "value": triple["instruction"]},
                            {"from": "gpt", "value": triple["output"]},
                        ]
                    }
                ]
            ),
        ),
    ]
    pq = tmp_path / "a.parquet"
    pd.DataFrame([triple]).to_parquet(pq)
    sources.append(pq)
    ids = [load_records(s).records.loc[0, "id"] for s in sources]
    assert ids == [expected] * 5


def test_parquet_round_trip_preserves_records_and_extras(tmp_path: Path) -> None:
    rows = [{**r, "label": i} for i, r in enumerate(ROWS)]
    original = load_records(write(tmp_path, "data.json", json.dumps(rows))).records
    out = write_parquet(original, tmp_path / "sub" / "records.parquet")
    assert out == tmp_path / "sub" / "records.parquet" and out.exists()
    again = load_records(out)
    assert again.fmt == "parquet"
    pd.testing.assert_frame_equal(again.records, original, check_dtype=False)


def test_parquet_existing_id_is_recomputed(tmp_path: Path) -> None:
    pq = tmp_path / "ids.parquet"
    pd.DataFrame([{"id": "bogus", **ROWS[0]}]).to_parquet(pq)
    res = load_records(pq)
    assert res.records.loc[0, "id"] == record_id(ROWS[0]["instruction"], "", ROWS[0]["output"])
    assert list(res.records.columns[:4]) == ["id", "instruction", "input", "output"]
    assert res.records.loc[0, "source_id"] == "bogus"


def test_hf_disk_round_trip(tmp_path: Path) -> None:
    import datasets

    rows = [{**r, "category": "x"} for r in ROWS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    res = load_records(tmp_path / "ds")
    assert res.fmt == "hf-disk" and res.rows_read == 3
    assert list(res.records["instruction"]) == [r["instruction"] for r in ROWS]
    assert list(res.records["category"]) == ["x"] * 3

    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_records(tmp_path / "dd", split="test").records) == 1
    err = load_error(tmp_path / "dd")
    assert "split 'train' not found" in str(err) and "test" in str(err)


def test_hub_ids_route_to_load_dataset_with_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[str, str]] = []

    def fake_load_dataset(hub_id: str, split: str) -> object:
        calls.append((hub_id, split))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for source in ("hf://owner/name", "owner/name"):
        with pytest.raises(DataValidationError, match="Hub failed: ConnectionError: offline") as info:
            load_records(source, split="validation")
        assert info.value.file == source
    assert calls == [("owner/name", "validation"), ("owner/name", "validation")]


def test_hub_dataset_rows_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, split: datasets.Dataset.from_list(ROWS))
    res = load_records("hf://owner/name")
    assert res.fmt == "hf-hub" and res.source == "hf://owner/name" and len(res.records) == 3


def test_missing_local_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    assert_error(load_error(path), path, None, None, None, "no such file or directory")


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicates_dropped_first_kept_and_reported(tmp_path: Path) -> None:
    rows = [
        {**ROWS[0], "label": "first"},
        ROWS[1],
        {
            **ROWS[0],
            "instruction": "  " + ROWS[0]["instruction"],
            "output": ROWS[0]["output"] + " ",
            "label": "2",
        },
        {**ROWS[0], "label": "third", "row": 99},  # an input column named like ours must not clobber it
    ]
    res = load_records(write(tmp_path, "dups.jsonl", jsonl(rows)))
    assert len(res.records) == 2 and res.rows_read == 4 and list(res.records.index) == [0, 1]
    kept = res.records[res.records["id"] == record_id(ROWS[0]["instruction"], "", ROWS[0]["output"])]
    assert list(kept["label"]) == ["first"]
    assert list(res.duplicates.columns[:3]) == ["id", "duplicate_of", "row"]
    assert list(res.duplicates["row"]) == [3, 4]
    assert (res.duplicates["duplicate_of"] == kept["id"].iloc[0]).all()
    assert res.summary()["duplicates"] == 2 and res.summary()["valid"] == 2


def test_no_duplicates_gives_empty_frame_with_columns(tmp_path: Path) -> None:
    res = load_records(write(tmp_path, "d.json", json.dumps(ROWS)))
    assert res.duplicates.empty and {"id", "duplicate_of", "row"} <= set(res.duplicates.columns)


# --------------------------------------------------------------------------- bad input (error mode)


def test_json_array_third_element_on_line_12_empty_output(tmp_path: Path) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["output"] = "   \n "
    path = write(tmp_path, "data.json", json.dumps(rows, indent=2))
    assert path.read_text().splitlines()[11].strip() == "{"  # element 3 starts on line 12
    err = load_error(path)
    assert_error(err, path, 3, 12, "output", "empty or whitespace-only response")
    assert str(err) == f"{path}: row 3 (line 12), field 'output': empty or whitespace-only response"


def test_invalid_json_in_array_reports_parser_line(tmp_path: Path) -> None:
    text = '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c",\n   "output": "d" oops}\n]\n'
    path = write(tmp_path, "bad.json", text)
    err = load_error(path)
    assert_error(err, path, 2, 4, None, "invalid JSON: Expecting ',' delimiter")


def test_invalid_json_whole_array_raises_even_in_skip_mode(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '[\n{"instruction": "a", "output": "b"},\n')
    err = load_error(path, on_invalid="skip")
    assert "invalid JSON" in err.reason and err.line is not None


def test_invalid_json_line_in_jsonl(tmp_path: Path) -> None:
    text = jsonl(ROWS[:2]) + '{"instruction": "x", "output": \n' + jsonl(ROWS[2:])
    path = write(tmp_path, "bad.jsonl", text)
    assert_error(load_error(path), path, 3, 3, None, "invalid JSON")


@pytest.mark.parametrize(
    "text, row, line, reason",
    [
        (
            '[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c", "output": "d"}\n]',
            1,
            3,
            "expected ','",
        ),
        ('[\n  {"instruction": "a", "output": "b"},\n]\n', 2, 3, "Expecting value"),
        (
            '[{"instruction": "a", "output": "b"}]\n\n{"x": 1}\n',
            None,
            3,
            "extra data after the top-level array",
        ),
    ],
)
def test_malformed_json_array(tmp_path: Path, text: str, row: int | None, line: int, reason: str) -> None:
    path = write(tmp_path, "bad.json", text)
    assert_error(load_error(path, on_invalid="skip"), path, row, line, None, reason)


@pytest.mark.parametrize("value, kind", [([1, 2], "list"), ("text", "string"), (7, "number")])
def test_row_not_an_object(tmp_path: Path, value: object, kind: str) -> None:
    path = write(tmp_path, "rows.json", json.dumps([ROWS[0], value], indent=2))
    assert_error(load_error(path), path, 2, 7, None, f"row is not a JSON object (got {kind})")


@pytest.mark.parametrize("missing", ["instruction", "output"])
def test_missing_required_field(tmp_path: Path, missing: str) -> None:
    row = {k: v for k, v in ROWS[0].items() if k != missing}
    path = write(tmp_path, "m.jsonl", jsonl([ROWS[1], row]))
    assert_error(load_error(path), path, 2, 2, missing, "missing required field")


@pytest.mark.parametrize(
    "conversations, field",
    [
        ([], "conversations"),
        ([{"from": "system", "value": "s"}, {"from": "human", "value": "q"}], "conversations"),
        ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], "conversations"),
    ],
)
def test_sharegpt_without_human_assistant_pair(tmp_path: Path, conversations: list, field: str) -> None:
    path = write(tmp_path, "c.jsonl", jsonl([{"conversations": conversations}]))
    assert_error(load_error(path), path, 1, 1, field, "no human turn followed by an assistant turn")


def test_sharegpt_bad_turns(tmp_path: Path) -> None:
    bad_role = {"conversations": [{"from": "bot", "value": "q"}, {"from": "gpt", "value": "a"}]}
    path = write(tmp_path, "c.jsonl", jsonl([bad_role]))
    assert_error(load_error(path), path, 1, 1, "conversations[0].from", "unknown speaker 'bot'")
    empty_reply = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]}
    path = write(tmp_path, "d.jsonl", jsonl([empty_reply]))
    assert_error(load_error(path), path, 1, 1, "conversations[1].value", "empty or whitespace-only response")
    path = write(tmp_path, "e.jsonl", jsonl([{"conversations": "q"}]))
    assert_error(load_error(path), path, 1, 1, "conversations", "wrong type: expected a list")


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("output", 42, "number"),
        ("output", ["a", "b"], "list"),
        ("instruction", {"a": 1}, "object"),
        ("input", 3, "number"),
        ("input", ["x"], "list"),
        ("output", None, "null"),
    ],
)
def test_wrong_type(tmp_path: Path, field: str, value: object, kind: str) -> None:
    path = write(tmp_path, "t.json", json.dumps([ROWS[0], {**ROWS[1], field: value}], indent=2))
    assert_error(load_error(path), path, 2, 7, field, f"wrong type: expected a string, got {kind}")


def test_empty_instruction(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", jsonl([ROWS[0], {**ROWS[1], "instruction": " \t "}]))
    assert_error(load_error(path), path, 2, 2, "instruction", "empty or whitespace-only instruction")


def test_empty_output_in_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", jsonl([ROWS[0], ROWS[1], {**ROWS[2], "output": ""}]))
    assert_error(load_error(path), path, 3, 3, "output", "empty or whitespace-only response")


def test_non_utf8_json_array_reports_line(tmp_path: Path) -> None:
    data = json.dumps(ROWS, indent=2).encode().replace(b"Bonjour", b"Bonj\xffur")
    path = write(tmp_path, "latin.json", data)
    expected_line = data[: data.index(b"\xff")].count(b"\n") + 1
    err = load_error(path, on_invalid="skip")  # file-level for JSON arrays
    assert_error(err, path, None, expected_line, None, "invalid UTF-8 byte 0xff")


def test_non_utf8_jsonl_error_mode_and_skip_mode(tmp_path: Path) -> None:
    data = (jsonl(ROWS[:1]) + '{"instruction": "caf\u00e9", "output": "ok"}\n' + jsonl(ROWS[1:])).encode()
    data = data.replace("caf\u00e9".encode(), b"caf\xe9")
    path = write(tmp_path, "latin.jsonl", data)
    assert_error(load_error(path), path, 2, 2, None, "invalid UTF-8 byte 0xe9")
    res = load_records(path, on_invalid="skip")
    assert len(res.records) == 3 and res.rows_read == 4
    [rej] = res.rejected
    assert (rej.row, rej.line, rej.field) == (2, 2, None) and "UTF-8" in rej.reason and "caf" in rej.raw


@pytest.mark.parametrize("name, content", [("e.json", b""), ("e.jsonl", b"  \n\n\t"), ("e.csv", b"")])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = write(tmp_path, name, content)
    assert_error(load_error(path, on_invalid="skip"), path, None, None, None, "empty file")


@pytest.mark.parametrize("name, content", [("e.json", "[ \n ]\n"), ("e.csv", "instruction,input,output\n")])
def test_empty_records(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    assert_error(load_error(path), path, None, None, None, "empty file")


def test_top_level_object_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "obj.json", json.dumps({"data": ROWS}, indent=2))
    reason = "expected a JSON array of records, got a top-level object"
    assert_error(load_error(path), path, None, None, None, reason)


@pytest.mark.parametrize("name", ["data.txt", "data.xlsx", "noext"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, jsonl(ROWS))
    err = load_error(path)
    assert_error(err, path, None, None, None, "unsupported file extension")
    assert f"'{path.suffix}'" in err.reason


def test_unsupported_fmt_override(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", json.dumps(ROWS))
    assert "unsupported format 'xml'" in str(load_error(path, fmt="xml"))


def test_csv_errors_name_data_row_and_file_line(tmp_path: Path) -> None:
    text = 'instruction,input,output\n"Multi\nline",,ok\nSay hi,,"   "\n'
    path = write(tmp_path, "c.csv", text)
    assert_error(load_error(path), path, 2, 4, "output", "empty or whitespace-only response")
    path = write(tmp_path, "m.csv", 'instruction,input,output\n"Multi\n\nline",,"  \n  "\n')
    assert_error(load_error(path), path, 1, 2, "output", "empty or whitespace-only response")
    path = write(tmp_path, "d.csv", "instruction,input,output\na,b,c\na,b,c,d\n")
    assert_error(load_error(path), path, 2, 3, None, "row has 4 fields but the header has 3")
    path = write(tmp_path, "e.csv", "instruction,input\na,b\n")
    assert_error(load_error(path), path, 1, 2, "output", "missing required field")


def test_parquet_row_errors_use_row_index(tmp_path: Path) -> None:
    pq = tmp_path / "p.parquet"
    pd.DataFrame([ROWS[0], ROWS[1], {**ROWS[2], "instruction": ""}]).to_parquet(pq)
    assert_error(load_error(pq), pq, 3, None, "instruction", "empty or whitespace-only instruction")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.parquet", b"not parquet at all")
    assert_error(load_error(path), path, None, None, None, "cannot read Parquet file")


def test_error_is_value_error_and_pickles() -> None:
    err = DataValidationError("d.json", "bad", row=2, line=5, field="output")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.file, again.reason, again.row, again.line, again.field) == ("d.json", "bad", 2, 5, "output")
    assert str(again) == "d.json: row 2 (line 5), field 'output': bad"
    assert str(DataValidationError("d.json", "empty file")) == "d.json: empty file"
    assert str(DataValidationError("d.json", "x", line=3)) == "d.json: line 3: x"


# --------------------------------------------------------------------------- skip mode and writers


def test_skip_mode_collects_rejections_and_writes_side_file(tmp_path: Path) -> None:
    rows = [
        ROWS[0],
        {"instruction": "A", "output": ""},
        [1, 2],
        {"instruction": "B", "output": 3},
        ROWS[1],
        {"output": "no instruction"},
        ROWS[0],
    ]
    path = write(tmp_path, "mixed.json", json.dumps(rows, indent=2))
    res = load_records(path, on_invalid="skip")
    assert list(res.records["instruction"]) == [ROWS[0]["instruction"], ROWS[1]["instruction"]]
    expected = [(2, "output"), (3, None), (4, "output"), (6, "instruction")]
    assert [(r.row, r.field) for r in res.rejected] == expected
    assert all(isinstance(r, Rejection) and r.file == str(path) and r.line for r in res.rejected)
    assert res.summary() == {
        "source": str(path),
        "fmt": "alpaca-json",
        "rows_read": 7,
        "valid": 2,
        "rejected": 4,
        "duplicates": 1,
    }

    side = write_rejections(res.rejected, tmp_path / "out" / "rejected.jsonl")
    lines = side.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    entries = [json.loads(line) for line in lines]
    assert [e["reason"] for e in entries] == [
        "empty or whitespace-only response",
        "row is not a JSON object (got list)",
        "wrong type: expected a string, got number",
        "missing required field",
    ]
    assert {"file", "row", "line", "field", "reason", "raw"} <= set(entries[0])
    assert json.loads(entries[0]["raw"]) == rows[1]


def test_skip_mode_jsonl_invalid_line_is_row_level_and_raw_truncated(tmp_path: Path) -> None:
    long_bad = '{"instruction": "' + "x" * 5000
    path = write(tmp_path, "s.jsonl", jsonl(ROWS[:1]) + long_bad + "\n" + jsonl(ROWS[1:]))
    res = load_records(path, on_invalid="skip")
    assert len(res.records) == 3
    [rej] = res.rejected
    assert (rej.row, rej.line) == (2, 2) and rej.reason.startswith("invalid JSON")
    assert 1000 <= len(rej.raw) <= 2000


def test_invalid_on_invalid_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_invalid"):
        load_records(write(tmp_path, "d.json", json.dumps(ROWS)), on_invalid="ignore")  # type: ignore[arg-type]


def test_export_alpaca_content(tmp_path: Path) -> None:
    rows = [{**ROWS[0], "label": 1}, {"instruction": "Café?", "output": "Oui ✓"}]
    records = load_records(write(tmp_path, "d.json", json.dumps(rows))).records
    out = export_alpaca(records, tmp_path / "x" / "alpaca.json")
    text = out.read_text(encoding="utf-8")
    assert "Café?" in text and "✓" in text and '\n  {\n    "instruction"' in text
    assert json.loads(text) == [
        {"instruction": ROWS[0]["instruction"], "input": "", "output": ROWS[0]["output"]},
        {"instruction": "Café?", "input": "", "output": "Oui ✓"},
    ]
    assert load_records(out).records["id"].tolist() == records["id"].tolist()


# --------------------------------------------------------------------------- shared data set


def test_cherry_alpaca_3k_loads() -> None:
    if not CHERRY.exists():
        pytest.skip(f"{CHERRY} not present")
    res = load_records(CHERRY, on_invalid="skip")
    assert res.rows_read == 3111 and res.fmt == "alpaca-json"
    assert 3000 <= len(res.records) <= 3111
    assert len(res.records) + len(res.rejected) + len(res.duplicates) == 3111
    assert res.records["id"].is_unique


def test_streaming_scan_keeps_nothing_and_numbers_rows_across_parquet_batches(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.data import readers
    from selectune.data.records import scan_records

    rows = [{**ROWS[i % 2], "label": str(i)} for i in range(5)] + [{"instruction": "", "output": "x"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    original = readers._iter_parquet
    monkeypatch.setattr(readers, "_iter_parquet", lambda path, file: original(path, file, batch_rows=2))
    seen: list[str] = []
    scan = scan_records(tmp_path / "d.parquet", lambda r: seen.append(r["label"]), on_invalid="skip")
    assert seen == ["0", "1"] and scan.valid == 2 and scan.rows_read == 6  # rows 3-5 repeat rows 1-2
    assert [d["row"] for d in scan.duplicates] == [3, 4, 5] and scan.rejected[0].row == 6
    assert scan.summary() == {"source": str(tmp_path / "d.parquet"), "fmt": "parquet", "rows_read": 6, "valid": 2,
                              "rejected": 1, "duplicates": 3}
    bad = write(tmp_path, "bad.jsonl", jsonl(ROWS[:2]) + "\n{oops\n")
    with pytest.raises(DataValidationError, match="invalid JSON") as err:
        scan_records(bad, lambda r: None)
    assert err.value.line == 4 and err.value.row == 4  # a blank line between: numbered as in the file
