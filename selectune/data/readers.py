"""Readers for instruction data: JSON arrays and JSON Lines, CSV, Parquet, folders of part files, datasets folders
and hub ids.

Each reader yields :class:`Row` s (1-based row, line where known, the parsed value or a :class:`RowError`) and
raises :class:`DataValidationError` for problems with the file as a whole. Validation of the rows themselves
lives in :mod:`selectune.data`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAW_LIMIT = 2000
PART_PREFIX = "part-"  # a folder of part-* files is one dataset (selectune data add appends a part)
HF_DISK_MARKERS = ("state.json", "dataset_dict.json", "dataset_info.json")  # datasets.save_to_disk folders
EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FMT_ALIASES = {
    **dict.fromkeys(("json", "alpaca-json", "alpaca", "sharegpt"), "json"),
    **{name: name for name in ("jsonl", "csv", "parquet", "hf-disk", "hf-hub", "hf")},
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_JSON_WS = re.compile(r"[ \t\n\r]*")


class DataValidationError(ValueError):
    """Bad input data: names the file and, where known, the 1-based row, line and field."""

    def __init__(
        self,
        file: str,
        reason: str,
        row: int | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.reason, self.row, self.line, self.field = file, reason, row, line, field
        where = []
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{file}: {', '.join(where)}: {reason}" if where else f"{file}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.file, self.reason, self.row, self.line, self.field))


class RowError(Exception):
    """A problem with one row (``field`` None: the row as a whole); skippable with ``on_invalid="skip"``."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = field, reason


@dataclass
class Row:
    """One input row: 1-based row number, line where the format has lines, and its value or its error."""

    row: int
    line: int | None
    value: Any = None
    raw: str | None = None
    error: RowError | None = None
    file: str | None = None  # the part file, when the source is a folder of parts


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "list", tuple: "list", dict: "object"}.get(type(value), type(value).__name__)


def _read_bytes(path: Path, file: str) -> bytes:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DataValidationError(file, "empty file (no records)")
    return data


def _decode(data: bytes, file: str, line_offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_offset + data.count(b"\n", 0, e.start) + 1
        reason = f"invalid UTF-8 byte 0x{data[e.start]:02x}: not UTF-8 text"
        raise DataValidationError(file, reason, line=line) from None


def _iter_jsonl(data: bytes, file: str, first_line: int = 0) -> Iterator[Row]:
    for i, chunk in enumerate(data.split(b"\n"), first_line):
        if not chunk.strip():
            continue
        row = Row(row=i + 1, line=i + 1, raw=chunk.decode("utf-8", errors="replace").rstrip("\r"))
        try:
            row.value = json.loads(_decode(chunk, file, line_offset=i))
        except DataValidationError as e:
            row.error = RowError(None, e.reason)
        except json.JSONDecodeError as e:
            row.error = RowError(None, f"invalid JSON: {e.msg} (column {e.colno})")
        yield row


def _iter_jsonl_file(path: Path, file: str) -> Iterator[Row]:
    """:func:`_iter_jsonl` reading one line at a time: memory stays flat whatever the file's size."""
    empty = True
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            if i == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\n")
            if not line.strip():
                continue
            empty = False
            yield from _iter_jsonl(line, file, first_line=i)
    if empty:
        raise DataValidationError(file, "empty file (no records)")


class _Text:
    """A UTF-8 file decoded ``block`` bytes at a time into a window of text. The consumed part of the window is
    dropped, with the lines and the columns of the current line it held counted, so that positions stay exact and
    memory holds about one block."""

    def __init__(self, fh: Any, file: str, block: int) -> None:
        import codecs

        self.fh, self.file, self.block = fh, file, block
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.lines_before, self.cols_before, self.eof = "", 0, 0, False
        self.mark, self.mark_line = 0, 1  # a position in the window and its line
        if fh.read(3) != b"\xef\xbb\xbf":  # a byte order mark is not text
            fh.seek(0)

    def more(self) -> bool:
        """Append the next block to the window; False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(self.block)
        try:
            self.text += self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:  # e.object: the bytes held back from the last block, then these
            line = self.lines_before + self.text.count("\n") + e.object.count(b"\n", 0, e.start) + 1
            reason = f"invalid UTF-8 byte 0x{e.object[e.start]:02x}: not UTF-8 text"
            raise DataValidationError(self.file, reason, line=line) from None
        self.eof = not data
        return bool(data)

    def skip_ws(self, pos: int) -> int:
        """The position of the next non-whitespace character (len(text) at the end of the file)."""
        pos = _JSON_WS.match(self.text, pos).end()
        while pos >= len(self.text) and self.more():
            pos = _JSON_WS.match(self.text, pos).end()
        return pos

    def line(self, pos: int) -> int:
        """The line of ``pos``, counted on from the last position asked about (the window is never rescanned)."""
        if pos < self.mark:
            self.mark, self.mark_line = 0, self.lines_before + 1
        self.mark_line += self.text.count("\n", self.mark, pos)
        self.mark = pos
        return self.mark_line

    def column(self, lineno: int, colno: int) -> int:
        """The column in the file of a column ``colno`` on line ``lineno`` of the window."""
        return colno + (self.cols_before if lineno == 1 else 0)

    def drop(self, pos: int) -> int:
        """Forget the text before ``pos`` once it is longer than a block; returns ``pos`` in the window."""
        if pos <= self.block:
            return pos
        last = self.text.rfind("\n", 0, pos)
        self.cols_before = pos - last - 1 if last >= 0 else self.cols_before + pos
        line = self.line(pos)
        self.text, self.lines_before, self.mark = self.text[pos:], line - 1, 0
        return 0


def _iter_json_array(path: Path, file: str, block: int = 1 << 20) -> Iterator[Row]:
    """The elements of a top-level JSON array, parsed one at a time from a window of the file: memory holds about
    one block (and the largest element), whatever the file's size."""
    decoder = json.JSONDecoder()
    with open(path, "rb") as fh:
        t = _Text(fh, file, block)
        pos, index = t.skip_ws(0) + 1, 0  # past the "["
        while True:
            pos = t.skip_ws(pos)
            if pos >= len(t.text):
                raise DataValidationError(file, "invalid JSON: unterminated array (missing ']')", line=t.line(pos))
            if t.text[pos] == "]" and index == 0:
                break
            index += 1
            while True:
                try:
                    value, end = decoder.raw_decode(t.text, pos)
                except json.JSONDecodeError as e:
                    # perhaps the element goes on in the next block: only when the error is at the window's end (or
                    # a string is open), else a bad element early in a big file would read all of it first
                    if (len(t.text) - e.pos < 16 or e.msg.startswith("Unterminated string")) and t.more():
                        continue
                    reason = f"invalid JSON: {e.msg} (column {t.column(e.lineno, e.colno)})"
                    raise DataValidationError(file, reason, row=index, line=t.lines_before + e.lineno) from None
                if end < len(t.text) or not t.more():  # a number at the window's end may go on
                    break
            yield Row(row=index, line=t.line(pos), value=value, raw=t.text[pos:min(end, pos + RAW_LIMIT)])
            end = t.drop(end)
            pos = t.skip_ws(end)
            if pos < len(t.text) and t.text[pos] == "]":
                break
            if pos >= len(t.text) or t.text[pos] != ",":
                reason = "invalid JSON: expected ',' or ']' after an array element"
                raise DataValidationError(file, reason, row=index, line=t.line(pos))
            pos += 1
        pos = t.skip_ws(pos + 1)
        if pos < len(t.text):
            raise DataValidationError(file, "invalid JSON: extra data after the top-level array", line=t.line(pos))
    if index == 0:
        raise DataValidationError(file, "empty file: the JSON array contains no records")


def _starts_array(path: Path, file: str) -> bool:
    """Whether the file's first character after a byte order mark and whitespace is ``[``."""
    with open(path, "rb") as fh:
        t = _Text(fh, file, 1 << 16)
        pos = t.skip_ws(0)
        return t.text[pos:pos + 1] == "["


def _check_json_lines(data: bytes, file: str) -> None:
    """A .json file that is not an array is read as JSON Lines; one value over several lines is an error."""
    stripped = _decode(data, file).strip(" \t\r\n")
    if "\n" in stripped:
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return
        raise DataValidationError(file, f"expected a JSON array of records, got a top-level {type_name(value)}")


def _iter_csv(path: Path, file: str) -> Iterator[Row]:
    """CSV rows read one line at a time (a quoted field may span lines): memory stays flat whatever the file's
    size. Each row keeps its raw text and the line it starts on."""
    buffer: list[str] = []

    def lines(fh: Any) -> Iterator[str]:
        for i, raw in enumerate(fh):
            if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            buffer.append(_decode(raw, file, line_offset=i))
            yield buffer[-1]

    header: list[str] | None = None
    index, last = 0, 0
    with open(path, "rb") as fh:
        reader = csv.reader(lines(fh))
        try:
            for cells in reader:
                start, last, raw = last + 1, reader.line_num, "".join(buffer).rstrip("\r\n")
                buffer.clear()
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if header is None:
                    header = cells
                    continue
                index += 1
                row = Row(row=index, line=start, raw=raw)
                if len(cells) != len(header):
                    row.error = RowError(None, f"row has {len(cells)} fields but the header has {len(header)}")
                else:
                    row.value = dict(zip(header, cells, strict=True))
                yield row
        except csv.Error as e:
            raise DataValidationError(file, f"malformed CSV: {e}", line=reader.line_num) from None
    if header is None:
        raise DataValidationError(file, "empty file (no records)")
    if index == 0:
        raise DataValidationError(file, "empty file: no data rows after the CSV header")


def _iter_values(values: list[Any], file: str) -> Iterator[Row]:
    if not values:
        raise DataValidationError(file, "empty file: the dataset has no rows")
    for i, value in enumerate(values):
        yield Row(row=i + 1, line=None, value=value)


def _iter_parquet(path: Path, file: str, batch_rows: int = 8192) -> Iterator[Row]:
    """Rows of a Parquet file, one record batch at a time: memory stays flat whatever the file's size."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)  # no whole-column reads ahead: flat
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataValidationError(file, f"cannot read Parquet file: {e}") from None
    if pf.metadata.num_rows == 0:
        raise DataValidationError(file, "empty file: the dataset has no rows")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for value in batch.to_pylist():
                row += 1
                yield Row(row=row, line=None, value=value)
    except DataValidationError:
        raise
    except Exception as e:
        raise DataValidationError(file, f"cannot read Parquet file: {e}", row=row + 1) from None


def _read_hf_disk(path: Path, file: str, split: str) -> list[Any]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataValidationError(file, f"not a dataset saved with datasets.save_to_disk: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataValidationError(file, f"split '{split}' not found (available: {', '.join(ds)})")
        ds = ds[split]
    return ds.to_list()


def _read_hf_hub(hub_id: str, file: str, split: str) -> list[Any]:
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split).to_list()
    except Exception as e:  # offline, missing repo, bad split, ...
        raise DataValidationError(
            file,
            f"not a local file or directory, and loading '{hub_id}' (split '{split}') from the "
            f"Hugging Face Hub failed: {type(e).__name__}: {e}",
        ) from None


def resolve(source: str, fmt: str | None) -> tuple[str, str]:
    """-> (reader kind, path or hub id)."""
    kind = None
    if fmt is not None:
        kind = FMT_ALIASES.get(fmt.lower())
        if kind is None:
            reason = f"unsupported format {fmt!r} (expected one of {', '.join(FMT_ALIASES)})"
            raise DataValidationError(source, reason)
    if source.startswith("hf://"):
        return "hf-hub", source[len("hf://") :]
    path = Path(source)
    if kind == "hf-hub":
        return kind, source
    if kind == "hf":
        kind = "hf-disk" if path.is_dir() else "hf-hub"
    if path.is_dir():
        if kind is None and not any((path / m).exists() for m in HF_DISK_MARKERS) and part_files(path):
            return "parts", source
        if kind not in (None, "hf-disk"):
            raise DataValidationError(source, f"is a directory, cannot read it as {fmt}")
        return "hf-disk", source
    if path.exists():
        if kind is None:
            kind = EXTENSIONS.get(path.suffix.lower())
        if kind is None:
            raise DataValidationError(
                source,
                f"unsupported file extension '{path.suffix}' (expected .json, .jsonl, .csv, .parquet, "
                "or a directory saved with datasets.save_to_disk)",
            )
        return kind, source
    if kind is None and _HUB_ID.match(source) and path.suffix.lower() not in EXTENSIONS:
        return "hf-hub", source
    raise DataValidationError(source, "no such file or directory")


def part_files(folder: Path) -> list[Path]:
    """The part files of a dataset folder (``part-*`` in a supported format; written by ``selectune data add``),
    in name order, which is the order they were added."""
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith(PART_PREFIX) and p.suffix.lower() in EXTENSIONS and p.is_file())


def _iter_parts(folder: Path, split: str) -> Iterator[Row]:
    for part in part_files(folder):
        _, rows = iter_rows(EXTENSIONS[part.suffix.lower()], str(part), str(part), split)
        for row in rows:
            row.file = str(part)
            yield row


def iter_rows(kind: str, target: str, file: str, split: str) -> tuple[str, Iterator[Row]]:
    """-> (detected format, rows)."""
    path = Path(target)
    if kind == "parts":
        return kind, _iter_parts(path, split)
    if kind == "jsonl":
        return "jsonl", _iter_jsonl_file(path, file)
    if kind == "json":
        if _starts_array(path, file):
            return "alpaca-json", _iter_json_array(path, file)
        data = _read_bytes(path, file)
        _check_json_lines(data, file)
        return "jsonl", _iter_jsonl(data, file)
    if kind == "csv":
        return kind, _iter_csv(path, file)
    if kind == "parquet":
        return kind, _iter_parquet(path, file)
    if kind == "hf-disk":
        return kind, _iter_values(_read_hf_disk(path, file, split), file)
    return kind, _iter_values(_read_hf_hub(target, file, split), file)
