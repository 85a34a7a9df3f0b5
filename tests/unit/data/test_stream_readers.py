"""JSON arrays and CSV read through a small window of the file: the same rows, lines, raw texts and errors whatever
the window's size (1 byte up to the whole file), multi-byte characters split between blocks included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selectune.data.readers import DataValidationError, _iter_csv, _iter_json_array, iter_rows

RECORDS = [{"instruction": "Say hi in French", "input": "", "output": "Salut, ça va ? 🙂"},
           {"instruction": "漢字を読む", "input": "x" * 40, "output": "yes\nno"},
           {"instruction": "Add", "input": "1, 2", "output": "3"}]
BLOCKS = [1, 2, 3, 7, 64, 1 << 30]


def rows(path: Path, block: int) -> list[tuple]:
    return [(r.row, r.line, r.value, r.raw) for r in _iter_json_array(path, str(path), block)]


def error(path: Path, block: int) -> tuple:
    with pytest.raises(DataValidationError) as e:
        rows(path, block)
    return e.value.reason, e.value.row, e.value.line


@pytest.mark.parametrize("text", [
    json.dumps(RECORDS, indent=2, ensure_ascii=False),
    json.dumps(RECORDS, ensure_ascii=False),  # minified: one line
    "\ufeff" + json.dumps(RECORDS, indent=1).replace("\n", "\r\n"),  # BOM, CRLF, escaped non-ASCII
    '[1, 23, [4, 5], "s", null, {"a": 1.5e3}]',  # elements that are not records still parse (and get rejected)
])
def test_windowed_json_array_equals_whole_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    whole = rows(path, 1 << 30)
    assert [v for _, _, v, _ in whole] == json.loads(text.lstrip("\ufeff"))
    for block in BLOCKS[:-1]:
        assert rows(path, block) == whole, block
    body, at = text.lstrip("\ufeff"), 0
    for _, line, value, raw in whole:  # each row's line is where its element starts; raw is the element's text
        at = body.index(raw, at)
        assert line == body.count("\n", 0, at) + 1 and json.loads(raw) == value


@pytest.mark.parametrize(("text", "expect"), [
    ('[{"a": 1},\n ', ("invalid JSON: unterminated array (missing ']')", None, 2)),
    ('[{"a": 1}, {"a": 2}', ("invalid JSON: expected ',' or ']' after an array element", 2, 1)),
    ('[\n{"a": 1},\n{"a": 2 "b": 3}\n]', ("invalid JSON: Expecting ',' delimiter (column 9)", 2, 3)),
    ('[{"a": 1}, {"a": 2}, {"a": 3, "b": tru}]', ("invalid JSON: Expecting value (column 36)", 3, 1)),
    ('[{"a": 1}\n {"a": 2}]', ("invalid JSON: expected ',' or ']' after an array element", 1, 2)),
    ('[{"a": 1}]\n\n x', ("invalid JSON: extra data after the top-level array", None, 3)),
    ("[ \n ]", ("empty file: the JSON array contains no records", None, None)),
])
def test_windowed_json_array_errors_are_exact(tmp_path: Path, text: str, expect: tuple) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    for block in BLOCKS:
        assert error(path, block) == expect, block


def test_a_bad_element_early_in_a_big_array_is_reported_without_reading_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.data import readers

    path = tmp_path / "big.json"
    path.write_text('[{"a": 1 "b": 2},\n' + ",\n".join(['{"a": 1}'] * 20_000) + "]", encoding="utf-8")
    blocks = []
    real = readers._Text.more
    monkeypatch.setattr(readers._Text, "more", lambda self: blocks.append(1) or real(self))
    assert error(path, 64) == ("invalid JSON: Expecting ',' delimiter (column 10)", 1, 1)
    assert len(blocks) < 5  # not the file's ~3,000 blocks


def test_invalid_utf8_in_an_array_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.json"
    path.write_bytes(b'[\n{"instruction": "ok", "output": "fine"},\n{"instruction": "caf\xe9", "output": "x"}\n]')
    for block in BLOCKS:
        reason, _, line = error(path, block)
        assert (reason, line) == ("invalid UTF-8 byte 0xe9: not UTF-8 text", 3), block


def test_json_files_that_are_not_arrays(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    fmt, it = iter_rows("json", str(path), str(path), "train")
    assert fmt == "jsonl" and [r.value["instruction"] for r in it] == ["a", "c"]
    path.write_text('{\n"instruction": "a", "output": "b"\n}')
    with pytest.raises(DataValidationError, match="expected a JSON array of records, got a top-level object"):
        iter_rows("json", str(path), str(path), "train")
    path.write_text("  \n ")
    with pytest.raises(DataValidationError, match="empty file"):
        iter_rows("json", str(path), str(path), "train")


def test_csv_streams_rows_with_their_lines_and_raw_text(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    text = '\ufeffinstruction,input,output\r\n\r\nSay hi,,"Hello,\r\nworld"\r\nAdd,"1, 2",3\r\nbad,row\r\n'
    path.write_bytes(text.encode())
    got = [(r.row, r.line, r.value, r.raw, r.error and r.error.reason) for r in _iter_csv(path, str(path))]
    assert got == [
        (1, 3, {"instruction": "Say hi", "input": "", "output": "Hello,\r\nworld"}, 'Say hi,,"Hello,\r\nworld"', None),
        (2, 5, {"instruction": "Add", "input": "1, 2", "output": "3"}, 'Add,"1, 2",3', None),
        (3, 6, None, "bad,row", "row has 2 fields but the header has 3")]
    path.write_bytes(b"instruction,output\na,b\nc,\xff\n")
    with pytest.raises(DataValidationError) as e:
        list(_iter_csv(path, str(path)))
    assert (e.value.line, e.value.reason) == (3, "invalid UTF-8 byte 0xff: not UTF-8 text")
    for text, reason in (("\n \n", "empty file (no records)"), ("instruction,output\n", "no data rows")):
        path.write_text(text)
        with pytest.raises(DataValidationError, match=reason.replace("(", r"\(").replace(")", r"\)")):
            list(_iter_csv(path, str(path)))
