"""A dataset streamed into ``records.parquet``: rows are validated and deduped one at a time
(:func:`records.scan_records`) and written a chunk at a time, so memory holds one chunk whatever the input's size.

The file has the columns :func:`records.load_records` gives: ``id``, instruction, input, output, then the extra fields
in the order they first appear, missing values as nulls (ShareGPT's ``system`` and ``history`` as "" and "[]").
Chunks go to part files first, because a field may first appear in the last row; the parts are then joined under
the schema of all of them. A field whose values have different types in different chunks is an error naming it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from selectune.data.readers import DataValidationError
from selectune.data.records import FIELDS, Scan, scan_records

CHUNK_ROWS = 8192
SHAREGPT_FILL = {"system": "", "history": "[]"}


def _table(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns = ["id", *FIELDS]
    seen = set(columns)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                columns.append(k)
    return pa.table({c: [row.get(c) for row in rows] for c in columns})


def _schema(parts: list[Path], source: str) -> Any:
    """The schema of every part together; a field typed differently in two parts is the input's error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types: dict[str, set[str]] = {}
        for s in schemas:
            for f in s:
                if not pa.types.is_null(f.type):
                    types.setdefault(f.name, set()).add(str(f.type))
        bad = sorted(k for k, v in types.items() if len(v) > 1)
        raise DataValidationError(source, f"field(s) {bad} hold values of different types in different rows "
                                  f"({'; '.join(f'{k}: {sorted(types[k])}' for k in bad)}); make each field one "
                                  "type", field=bad[0] if bad else None) from None


def _join(parts: list[Path], out: Path, source: str, sharegpt: bool) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = _schema(parts, source)
    if sharegpt:  # filled, so the columns are never null
        schema = pa.schema([f.with_type(pa.string()) if f.name in SHAREGPT_FILL and pa.types.is_null(f.type) else f
                            for f in schema])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with pq.ParquetWriter(tmp, schema) as writer:
        for part in parts:
            table = pq.read_table(part)
            for f in schema:
                if f.name not in table.column_names:
                    table = table.append_column(f.name, pa.nulls(len(table), f.type))
            table = table.select(schema.names).cast(schema)
            if sharegpt:
                for name, fill in SHAREGPT_FILL.items():
                    if name in table.column_names:
                        i = table.column_names.index(name)
                        table = table.set_column(i, name, pc.fill_null(table[name], fill))
            writer.write_table(table)
    tmp.replace(out)


def write_records(path: str | Path, out: str | Path, *, fmt: str | None = None,
                  on_invalid: Literal["error", "skip"] = "error", split: str = "train", limit: int | None = None,
                  chunk_rows: int = CHUNK_ROWS) -> Scan:
    """Validate and dedupe ``path`` into the Parquet file ``out`` (the first ``limit`` kept records); returns the
    scan's counts, rejections and duplicates. Written atomically: ``out`` appears complete or not at all."""
    import pyarrow.parquet as pq

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.parts-") as tmp:
        parts: list[Path] = []
        chunk: list[dict[str, Any]] = []
        kept = 0

        def flush() -> None:
            if chunk:
                parts.append(Path(tmp) / f"{len(parts):06d}.parquet")
                pq.write_table(_table(chunk), parts[-1])
                chunk.clear()

        def keep(record: dict[str, Any]) -> None:
            nonlocal kept
            if limit is None or kept < limit:
                chunk.append(record)
                kept += 1
                if len(chunk) >= chunk_rows:
                    flush()

        scan = scan_records(path, keep, fmt=fmt, on_invalid=on_invalid, split=split)
        flush()
        _join(parts, out, str(path), scan.n_sharegpt > 0)
    return scan


def iter_frames(path: str | Path, rows: int, columns: list[str] | None = None) -> Iterator[Any]:
    """A Parquet file as DataFrames of at most ``rows`` rows (no read-ahead: memory holds one of them)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    for batch in pf.iter_batches(batch_size=rows, columns=columns):
        yield batch.to_pandas()


def read_columns(path: str | Path, columns: list[str]) -> Any:
    """The DataFrame of those ``columns`` the Parquet file has (absent ones are left out), nothing else read."""
    import pandas as pd
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in columns if c in names])


class ParquetOut:
    """A Parquet file written a table at a time, in place only when the ``with`` block ends cleanly (atomic). The
    schema is ``schema``, else the first table's (``first_schema`` may derive it from that table); later tables are
    cast to it. ``rows``: how many were written. With no ``schema`` and no table written, the block raises
    ``ValueError(empty)``."""

    def __init__(self, dst: str | Path, schema: Any = None, first_schema: Callable[[Any], Any] | None = None,
                 empty: str | None = None) -> None:
        self.dst, self.schema, self.first_schema = Path(dst), schema, first_schema
        self.empty = empty or f"nothing to write to {self.dst}"
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dst.with_name(f".{self.dst.name}.tmp-{os.getpid()}")
        self.writer: Any = None
        self.rows = 0

    def write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            schema = self.schema or (self.first_schema(table) if self.first_schema else table.schema)
            self.writer = pq.ParquetWriter(self.tmp, schema)
        self.writer.write_table(table.cast(self.writer.schema))
        self.rows += len(table)

    def __enter__(self) -> ParquetOut:
        if self.schema is not None:
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self.writer is not None:
            self.writer.close()
        if exc_type is not None or self.writer is None:
            self.tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise ValueError(self.empty)
            return
        self.tmp.replace(self.dst)


def map_chunks(src: str | Path, dst: str | Path, fn: Callable[[int, Any], Any], rows: int = CHUNK_ROWS) -> int:
    """Write ``fn(i, chunk)`` for every chunk of the Parquet file ``src`` (DataFrames of at most ``rows`` rows) to
    ``dst``, atomically. Columns of ``src`` keep its types (a chunk where a field is all null does not retype it);
    new columns take the types of the first chunk. Returns the number of rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = pq.read_schema(src).remove_metadata()

    def schema(table: Any) -> Any:
        return pa.schema([base.field(c) if c in base.names else table.schema.field(c) for c in table.column_names])

    with ParquetOut(dst, first_schema=schema, empty=f"{src} holds no records") as out:
        for i, chunk in enumerate(iter_frames(src, rows)):
            out.write(pa.Table.from_pandas(fn(i, chunk), preserve_index=False).replace_schema_metadata(None))
    return out.rows


def take_rows(src: str | Path, positions: Any, dst: str | Path, rows: int = CHUNK_ROWS) -> int:
    """Write the rows of the Parquet file ``src`` at ``positions`` (any order; written in file order) to ``dst``,
    reading ``rows`` at a time; returns the number written. A position past the end is an error naming the file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src, pre_buffer=False, buffer_size=1 << 20)
    n, pos = pf.metadata.num_rows, np.asarray(positions, dtype=np.int64)
    if len(pos) and (pos.max() >= n or pos.min() < 0):
        raise ValueError(f"row {int(pos.max() if pos.max() >= n else pos.min())} is outside {src} ({n} rows)")
    keep = np.zeros(n, dtype=bool)
    keep[pos] = True
    start = 0
    with ParquetOut(dst, pf.schema_arrow) as out:
        for batch in pf.iter_batches(batch_size=rows):
            mask = keep[start:start + batch.num_rows]
            start += batch.num_rows
            if mask.any():
                out.write(pa.Table.from_batches([batch]).filter(pa.array(mask)))
    return out.rows
