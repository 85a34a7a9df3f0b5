"""Instruction-data I/O: read Alpaca/ShareGPT JSON(L), CSV, Parquet and HF datasets; validate; dedupe.

Every record gets a content-derived id (:func:`record_id`). Bad rows raise :class:`DataValidationError`
naming file, row, line and field, or (``on_invalid="skip"``) are collected as :class:`Rejection` s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from selectune.data.readers import RAW_LIMIT, DataValidationError, RowError, iter_rows, resolve, type_name

log = logging.getLogger(__name__)

REQUIRED = ("instruction", "output")
FIELDS = ("instruction", "input", "output")
_DUP_COLUMNS = ["id", "duplicate_of", "row", "line", "instruction", "input", "output"]
_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


@dataclass
class Rejection:
    """One row rejected in ``on_invalid="skip"`` mode."""

    file: str
    row: int | None
    line: int | None
    field: str | None
    reason: str
    raw: str


@dataclass
class LoadResult:
    """Valid records plus everything that was not kept (rejections and dropped duplicates)."""

    records: pd.DataFrame
    rejected: list[Rejection]
    duplicates: pd.DataFrame
    source: str
    fmt: str
    rows_read: int

    def summary(self) -> dict[str, int | str]:
        return {
            "source": self.source,
            "fmt": self.fmt,
            "rows_read": self.rows_read,
            "valid": len(self.records),
            "rejected": len(self.rejected),
            "duplicates": len(self.duplicates),
        }


def _normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def record_id(instruction: str, input: str, output: str) -> str:
    """Stable 16-hex id of the whitespace/NFC-normalized (instruction, input, output) triple."""
    joined = "\x1f".join(_normalize(part) for part in (instruction, input, output))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- row validation


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowError(name, f"wrong type: expected a string, got {type_name(value)}")
    return value


def _check_nonempty(instruction: str, output: str, instr_field: str, out_field: str) -> None:
    if not instruction.strip():
        raise RowError(instr_field, "empty or whitespace-only instruction")
    if not output.strip():
        raise RowError(out_field, "empty or whitespace-only response")


def _parse_alpaca(obj: dict[str, Any]) -> dict[str, Any]:
    for name in REQUIRED:
        if name not in obj:
            raise RowError(name, "missing required field")
    instruction = _string(obj["instruction"], "instruction")
    output = _string(obj["output"], "output")
    inp = "" if obj.get("input") is None else _string(obj["input"], "input")
    _check_nonempty(instruction, output, "instruction", "output")
    return {"instruction": instruction, "input": inp, "output": output}


def _parse_sharegpt(obj: dict[str, Any]) -> dict[str, Any]:
    turns = obj["conversations"]
    if not isinstance(turns, list | tuple):
        raise RowError("conversations", f"wrong type: expected a list of turns, got {type_name(turns)}")
    parsed: list[tuple[str, str]] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"conversations[{i}]", f"wrong type: expected an object, got {type_name(turn)}")
        role = turn.get("from", turn.get("role"))
        if not isinstance(role, str) or role.lower() not in _ROLES:
            reason = f"unknown speaker {role!r} (expected human, user, gpt, assistant or system)"
            raise RowError(f"conversations[{i}].from", reason)
        text = turn.get("value", turn.get("content"))
        if text is None and "value" not in turn and "content" not in turn:
            raise RowError(f"conversations[{i}].value", "missing required field")
        parsed.append((_ROLES[role.lower()], _string(text, f"conversations[{i}].value")))
    start = 1 if parsed and parsed[0][0] == "system" else 0
    if len(parsed) < start + 2 or parsed[start][0] != "human" or parsed[start + 1][0] != "gpt":
        reason = "missing required field: no human turn followed by an assistant turn"
        raise RowError("conversations", reason)
    instruction, output = parsed[start][1], parsed[start + 1][1]
    _check_nonempty(instruction, output, f"conversations[{start}].value", f"conversations[{start + 1}].value")
    record = {"instruction": instruction, "input": "", "output": output}
    record["system"] = parsed[0][1] if start else obj.get("system", "")
    record["history"] = _dump(list(turns[start + 2 :]))
    return record


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _parse_record(obj: Any) -> tuple[dict[str, Any], bool]:
    """Validate one input row -> (record with extras, is_sharegpt)."""
    if not isinstance(obj, dict):
        raise RowError(None, f"row is not a JSON object (got {type_name(obj)})")
    sharegpt = "conversations" in obj
    record = _parse_sharegpt(obj) if sharegpt else _parse_alpaca(obj)
    skip = {*FIELDS, "id", "conversations"} if sharegpt else {*FIELDS, "id"}
    record.update((k, v) for k, v in obj.items() if k not in skip and k not in record)
    record["id"] = record_id(record["instruction"], record["input"], record["output"])
    if obj.get("id") is not None and obj["id"] != record["id"] and "source_id" not in obj:
        record["source_id"] = obj["id"]  # keep a foreign id; ours is content-derived
    return record, sharegpt


def _records_frame(records: list[dict[str, Any]], any_sharegpt: bool) -> pd.DataFrame:
    columns = ["id", *FIELDS]
    for rec in records:
        columns.extend(k for k in rec if k not in columns)
    df = pd.DataFrame(records, columns=columns)
    if any_sharegpt:
        df["system"] = df["system"].fillna("")
        df["history"] = df["history"].fillna("[]")
    return df.reset_index(drop=True)


@dataclass
class Scan:
    """What one pass over an input found: counts, rejections, duplicates (the kept records go to a callback)."""

    source: str
    fmt: str
    rows_read: int = 0
    valid: int = 0
    n_sharegpt: int = 0
    n_alpaca: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, int | str]:
        return {"source": self.source, "fmt": self.fmt, "rows_read": self.rows_read, "valid": self.valid,
                "rejected": len(self.rejected), "duplicates": len(self.duplicates)}


def scan_records(path: str | Path, keep: Callable[[dict[str, Any]], None], *, fmt: str | None = None,
                 on_invalid: Literal["error", "skip"] = "error", split: str = "train") -> Scan:
    """Read, validate and dedupe ``path`` row by row, passing each kept record to ``keep``: memory holds one row
    and the set of ids seen (8 bytes of each 16-hex id), so it stays flat for streaming formats (JSON Lines,
    Parquet, part folders of them)."""
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    source = str(path)
    fmt_name, rows = iter_rows(*resolve(source, fmt), source, split)
    scan = Scan(source, fmt_name)
    seen: set[int] = set()
    for item in rows:
        scan.rows_read += 1
        try:
            if item.error is not None:
                raise item.error
            record, is_sharegpt = _parse_record(item.value)
        except RowError as e:
            file = item.file or source
            if on_invalid == "error":
                raise DataValidationError(file, e.reason, item.row, item.line, e.field) from None
            raw = item.raw if item.raw is not None else _dump(item.value)
            scan.rejected.append(Rejection(file, item.row, item.line, e.field, e.reason, raw[:RAW_LIMIT]))
            continue
        scan.n_sharegpt, scan.n_alpaca = scan.n_sharegpt + is_sharegpt, scan.n_alpaca + (not is_sharegpt)
        key = int(record["id"], 16)
        if key in seen:
            scan.duplicates.append({**{c: record[c] for c in _DUP_COLUMNS if c in record},
                                    "duplicate_of": record["id"], "row": item.row, "line": item.line})
        else:
            seen.add(key)
            scan.valid += 1
            keep(record)
    if scan.fmt in ("alpaca-json", "jsonl") and scan.n_sharegpt and not scan.n_alpaca:
        scan.fmt = "sharegpt"
    if scan.rejected and not scan.valid:  # skip mode, nothing left: an error, not an empty run
        first = scan.rejected[0]
        where = f"row {first.row}" + (f", field '{first.field}'" if first.field else "")
        raise DataValidationError(source, f"no valid records: {len(scan.rejected)} rejected of {scan.rows_read} "
                                  f"rows (first: {where}: {first.reason})")
    if scan.rejected:
        log.warning("%s: rejected %d of %d rows", source, len(scan.rejected), scan.rows_read)
    if scan.duplicates:
        log.info("%s: dropped %d exact duplicates", source, len(scan.duplicates))
    return scan


def load_records(
    path: str | Path,
    *,
    fmt: str | None = None,
    on_invalid: Literal["error", "skip"] = "error",
    split: str = "train",
) -> LoadResult:
    """Load, validate and dedupe instruction records from a file, a datasets directory or a hub id."""
    kept: list[dict[str, Any]] = []
    scan = scan_records(path, kept.append, fmt=fmt, on_invalid=on_invalid, split=split)
    return LoadResult(
        records=_records_frame(kept, scan.n_sharegpt > 0),
        rejected=scan.rejected,
        duplicates=duplicates_frame(scan.duplicates),
        source=scan.source,
        fmt=scan.fmt,
        rows_read=scan.rows_read,
    )


# --------------------------------------------------------------------------- writers


def _prepare(path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_rejections(rejections: list[Rejection], path: str | Path) -> Path:
    """Write one JSON object per rejected row (file, row, line, field, reason, raw) to a JSONL side file."""
    out = _prepare(path)
    with out.open("w", encoding="utf-8") as fh:
        for rej in rejections:
            fh.write(json.dumps(asdict(rej), ensure_ascii=False) + "\n")
    return out


def duplicates_frame(duplicates: list[dict[str, Any]]) -> pd.DataFrame:
    """The exact duplicates a scan dropped, one row each (texts, ``duplicate_of``, row, line)."""
    return pd.DataFrame([{c: d.get(c) for c in _DUP_COLUMNS} for d in duplicates], columns=_DUP_COLUMNS)


def write_duplicates(duplicates: list[dict[str, Any]], path: str | Path) -> Path:
    """The dropped duplicates as JSON Lines (the load stage's duplicates.jsonl)."""
    out = _prepare(path)
    duplicates_frame(duplicates).to_json(out, orient="records", lines=True, force_ascii=False)
    return out


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write records to Parquet (no index)."""
    out = _prepare(path)
    df.to_parquet(out, index=False)
    return out


def export_alpaca(df: pd.DataFrame, path: str | Path) -> Path:
    """Write an Alpaca JSON array of {instruction, input, output} (indent=2, UTF-8)."""
    with AlpacaWriter(path) as writer:
        writer.write(df)
    return writer.path


class AlpacaWriter:
    """An Alpaca JSON array of {instruction, input, output} (indent=2, UTF-8) written a DataFrame at a time, the
    same bytes as ``json.dumps(rows, indent=2)``; the file appears, complete, when the writer closes cleanly."""

    def __init__(self, path: str | Path) -> None:
        import os

        self.path = _prepare(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._fh = self._tmp.open("w", encoding="utf-8")
        self._fh.write("[")
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        import textwrap

        for values in df.reindex(columns=list(FIELDS)).itertuples(index=False, name=None):
            row = {name: "" if pd.isna(value) else str(value) for name, value in zip(FIELDS, values, strict=True)}
            self._fh.write(("\n" if self.rows == 0 else ",\n")
                           + textwrap.indent(json.dumps(row, indent=2, ensure_ascii=False), "  "))
            self.rows += 1

    def __enter__(self) -> AlpacaWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._fh.write("\n]\n" if self.rows else "]\n")
        self._fh.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


TEXT_COLUMNS = ["id", "instruction", "input", "output", "label"]


def text_digest(path: str | Path) -> str:
    """Digest of a data file's records as a model trains or is judged on them (ids, texts and labels, in row
    order): the score columns the scoring stages add do not change it. Parquet files written by the stages are read
    by those columns alone (as :func:`subset_digest` reads ids)."""
    import pyarrow.parquet as pq

    from selectune.core.digests import table_digest

    p = Path(path)
    if p.suffix == ".parquet" and {"id", "instruction", "output"} <= set(names := pq.read_schema(p).names):
        return table_digest(pd.read_parquet(p, columns=[c for c in TEXT_COLUMNS if c in names]), TEXT_COLUMNS)
    return table_digest(load_records(path).records, TEXT_COLUMNS)


def subset_digest(path: str | Path) -> str:
    """Digest of a data file's record ids in sorted order, independent of row order: "did the subset change?".
    Parquet files written by the stages are read by their id column alone; other files are loaded (ids derive
    from content)."""
    import pyarrow.parquet as pq

    from selectune.core.digests import table_digest

    p = Path(path)
    if p.suffix == ".parquet" and "id" in pq.read_schema(p).names:
        ids = pd.read_parquet(p, columns=["id"])
    else:
        ids = load_records(path).records[["id"]]
    return table_digest(ids.sort_values("id", ignore_index=True))


def split(df: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded (train, held-out) split; at least one record on each side when eval_fraction > 0."""
    n_eval = 0 if eval_fraction == 0 or len(df) < 2 else min(len(df) - 1, max(1, round(len(df) * eval_fraction)))
    order = np.random.default_rng(seed).permutation(len(df))
    return df.iloc[order[n_eval:]].reset_index(drop=True), df.iloc[order[:n_eval]].reset_index(drop=True)
