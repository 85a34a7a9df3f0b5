"""Selection over a scored Parquet file in bounded memory.

The decision needs few columns: ids, scores, the category, the label and each response's length. They are read a
chunk at a time (:func:`read_decision_frame`); the texts are not. The outputs, every record with its decision in rank
order, are then written by an on-disk bucket sort (:func:`write_ranked`): one pass spreads each chunk of the source,
decision columns attached, over bucket files by rank range; a second pass sorts one bucket at a time and appends it.
Memory holds one chunk or one bucket, not the file.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from selectune.data.stream import CHUNK_ROWS, ParquetOut
from selectune.selection.select import ADDED_COLS, ID_COL

if TYPE_CHECKING:
    from selectune.selection.config import SelectionConfig

BUCKETS_MAX = 256  # bucket files open at once in the first pass
ADDED_TYPES = {"selection_score": "float64", "rank": "int64", "selected": "bool", "decision": "string",
               "decision_reason": "string"}


@dataclass(frozen=True)
class SelectOutputs:
    selection: Path  # every record with rank, score, decision and reason
    selected: Path  # the selected subset
    alpaca: Path  # the selected subset as Alpaca JSON


def decision_columns(cfg: SelectionConfig, names: list[str]) -> list[str]:
    """The columns of a file with ``names`` that ``cfg``'s decision reads (``output`` only for its lengths). A score
    column the strategy needs and the file lacks is an error naming the file's columns."""
    available = [*names, *(["response_chars"] if "output" in names and "response_chars" not in names else [])]
    scores = [cfg.by] if cfg.strategy == "top" else [c for c, w in (cfg.weights or {}).items() if w] if (
        cfg.strategy == "combined") else []
    for col in scores:
        if col not in available:
            raise ValueError(f"score column {col!r} not found; available columns: {available}")
    if cfg.quotas and cfg.category_column not in names:
        raise ValueError(f"quotas need the category column {cfg.category_column!r}; available columns: {available}")
    wanted = [ID_COL, cfg.by, *(cfg.weights or {}), cfg.category_column, "label", "response_chars", "output"]
    return [c for c in dict.fromkeys(wanted) if c in names]


def read_decision_frame(path: str | Path, cfg: SelectionConfig, rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """The decision columns of a scored Parquet file, ``output`` replaced by ``response_chars`` (its length in
    characters), read ``rows`` at a time; the texts never become Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    cols = decision_columns(cfg, names)
    labels = [c for c in (cfg.category_column, "label") if c in cols]  # few distinct values: read as categories
    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20, read_dictionary=labels)
    parts = []
    for batch in pf.iter_batches(batch_size=rows, columns=cols):
        part = pa.Table.from_batches([batch])
        if "output" in cols:
            out = part["output"]
            lengths = pc.utf8_length(out) if pa.types.is_string(out.type) or pa.types.is_large_string(out.type) \
                else pa.array(out.to_pandas().fillna("").astype(str).str.len())
            part = part.drop_columns([c for c in ("output", "response_chars") if c in part.column_names])
            part = part.append_column("response_chars", pc.fill_null(lengths, 0).cast(pa.int64()))
        parts.append(part)
    table = pa.concat_tables(parts) if parts else pq.read_schema(path).empty_table().select(cols)
    if not parts and "output" in cols:
        table = table.drop_columns(["output"]).append_column("response_chars", pa.array([], pa.int64()))
    df = table.to_pandas()
    del table, parts
    pa.default_memory_pool().release_unused()  # the texts' buffers, which the allocator would keep
    return df


def _schema(source: Any) -> Any:
    """The outputs' schema: the source's columns less the added ones (``response_chars`` an integer, appended when
    it is new and derived from ``output``), then the added ones."""
    import pyarrow as pa

    derived = "output" in source.names
    fields = [pa.field(c, pa.int64()) if c == "response_chars" and derived else source.field(c)
              for c in source.names if c not in ADDED_COLS]
    if derived and "response_chars" not in source.names:
        fields.append(pa.field("response_chars", pa.int64()))
    fields += [pa.field(c, pa.string() if t == "string" else pa.from_numpy_dtype(np.dtype(t)))
               for c, t in ADDED_TYPES.items()]
    return pa.schema(fields)


def _arrow(column: pd.Series, type: Any) -> Any:
    """A column as one Arrow array (Arrow-backed columns are not copied until their chunks are joined)."""
    import pyarrow as pa

    arr = pa.array(column, type)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def write_ranked(src: str | Path, table: pd.DataFrame, rows_of: np.ndarray, out: Path,
                 rows: int = CHUNK_ROWS) -> SelectOutputs:
    """Write selection.parquet (every source row with ``table``'s decision columns, in rank order), selected.parquet
    and selected_alpaca.json into ``out``. ``table`` is the decision in rank order; ``rows_of[r]`` is the source row
    of its row ``r``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selectune.data.records import FIELDS, AlpacaWriter

    n = len(table)
    rank_of = np.empty(n, dtype=np.int64)
    rank_of[rows_of] = np.arange(n)
    per_bucket = max(rows, math.ceil(n / BUCKETS_MAX))
    pf = pq.ParquetFile(src, pre_buffer=False, buffer_size=1 << 20)
    schema = _schema(pf.schema_arrow)
    extra = [*(["response_chars"] if "output" in schema.names else []), *ADDED_COLS]
    decided = {c: _arrow(table[c], schema.field(c).type) for c in extra}
    with tempfile.TemporaryDirectory(dir=out, prefix=".buckets-") as tmp:
        writers: dict[int, Any] = {}
        start = 0
        for batch in pf.iter_batches(batch_size=rows):
            ranks = rank_of[start:start + batch.num_rows]
            start += batch.num_rows
            part = pa.Table.from_batches([batch]).drop_columns([c for c in extra if c in batch.schema.names])
            for c in extra:
                part = part.append_column(c, decided[c].take(ranks))
            by_bucket = np.argsort(ranks // per_bucket, kind="stable")
            part = part.select(schema.names).cast(schema).take(by_bucket)  # one copy, then a slice per bucket
            buckets, starts = np.unique(ranks[by_bucket] // per_bucket, return_index=True)
            for b, lo, hi in zip(buckets, starts, [*starts[1:], len(ranks)], strict=True):
                if b not in writers:
                    writers[b] = pa.ipc.new_stream(Path(tmp) / f"{b:06d}.arrow", schema)
                writers[b].write_table(part.slice(lo, hi - lo))
        for w in writers.values():
            w.close()
        paths = SelectOutputs(out / "selection.parquet", out / "selected.parquet", out / "selected_alpaca.json")
        with ParquetOut(paths.selection, schema) as all_rows, ParquetOut(paths.selected, schema) as chosen, \
                AlpacaWriter(paths.alpaca) as alpaca:
            for b in sorted(writers):
                with pa.OSFile(str(Path(tmp) / f"{b:06d}.arrow")) as source:
                    part = pa.ipc.open_stream(source).read_all().sort_by("rank")
                all_rows.write(part)
                picked = part.filter(part["selected"])
                if len(picked):
                    chosen.write(picked)
                    alpaca.write(picked.select([c for c in FIELDS if c in schema.names]).to_pandas())
    return paths
