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


def _iter_json_array(text: str, file: str) -> Iterator[Row]:
    decoder = json.JSONDecoder()
    pos, line, counted, index = text.index("[") + 1, 1, 0, 0
    while True:
        pos = _JSON_WS.match(text, pos).end()
        if pos >= len(text):
            reason = "invalid JSON: unterminated array (missing ']')"
            raise DataValidationError(file, reason, line=text.count("\n") + 1)
        if text[pos] == "]" and index == 0:
            break
        line += text.count("\n", counted, pos)
        counted, index = pos, index + 1
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            reason = f"invalid JSON: {e.msg} (column {e.colno})"
            raise DataValidationError(file, reason, row=index, line=e.lineno) from None
        yield Row(row=index, line=line, value=value, raw=text[pos : min(end, pos + RAW_LIMIT)])
        pos = _JSON_WS.match(text, end).end()
        if pos < len(text) and text[pos] == "]":
            break
        if pos >= len(text) or text[pos] != ",":
            reason = "invalid JSON: expected ',' or ']' after an array element"
            raise DataValidationError(file, reason, row=index, line=text.count("\n", 0, pos) + 1)
        pos += 1
    tail = text[pos + 1 :]
    if tail.strip():
        extra_line = text.count("\n", 0, pos + 1 + len(tail) - len(tail.lstrip())) + 1
        raise DataValidationError(file, "invalid JSON: extra data after the top-level array", line=extra_line)
    if index == 0:
        raise DataValidationError(file, "empty file: the JSON array contains no records")


def _json_array_text(data: bytes, file: str) -> str | None:
    """Decoded text when a .json file holds a top-level array; None when it is really JSON Lines."""
    text = _decode(data, file)
    stripped = text.strip(" \t\r\n")
    if stripped.startswith("["):
        return text
    if "\n" in stripped:  # multi-line but not an array: JSONL, unless it is one big value
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        reason = f"expected a JSON array of records, got a top-level {type_name(value)}"
        raise DataValidationError(file, reason)
    return None


def _iter_csv(data: bytes, file: str) -> Iterator[Row]:
    parts = _decode(data, file).split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    reader = csv.reader(iter(lines))
    header: list[str] | None = None
    index, last = 0, 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if header is None:
                header = cells
                continue
            index += 1
            row = Row(row=index, line=start, raw="".join(lines[start - 1 : last]).rstrip("\r\n"))
            if len(cells) != len(header):
                row.error = RowError(None, f"row has {len(cells)} fields but the header has {len(header)}")
            else:
                row.value = dict(zip(header, cells, strict=True))
            yield row
    except csv.Error as e:
        raise DataValidationError(file, f"malformed CSV: {e}", line=reader.line_num) from None
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
        data = _read_bytes(path, file)
        text = _json_array_text(data, file)
        if text is None:
            return "jsonl", _iter_jsonl(data, file)
        return "alpaca-json", _iter_json_array(text, file)
    if kind == "csv":
        return kind, _iter_csv(_read_bytes(path, file), file)
    if kind == "parquet":
        return kind, _iter_parquet(path, file)
    if kind == "hf-disk":
        return kind, _iter_values(_read_hf_disk(path, file, split), file)
    return kind, _iter_values(_read_hf_hub(target, file, split), file)
