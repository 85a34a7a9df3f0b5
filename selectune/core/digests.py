"""Content digests: what a stage's inputs were (files, folders, tables), so a re-run knows whether they changed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder; a non-path (hub id) hashes its name."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.is_file() else []
    if not files:
        h.update(str(path).encode())
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def table_digest(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """Content digest of a table's ``columns`` (default ``id``; row order matters): sha256 over pandas' row hashes,
    16 hex characters."""
    import pandas as pd

    cols = [c for c in (columns or ["id"]) if c in df.columns]
    rows = pd.util.hash_pandas_object(df[cols].astype(str), index=False).to_numpy()
    return hashlib.sha256(rows.tobytes()).hexdigest()[:16]


def file_table_digest(path: str | Path, columns: list[str] | None = None, rows: int = 65_536) -> str:
    """:func:`table_digest` of a Parquet file, read ``rows`` at a time: the same digest, without the whole table."""
    import pandas as pd
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    cols = [c for c in (columns or ["id"]) if c in pf.schema_arrow.names]
    if not cols:
        return table_digest(pd.read_parquet(path, columns=[]), columns)
    h = hashlib.sha256()
    for batch in pf.iter_batches(batch_size=rows, columns=cols):
        h.update(pd.util.hash_pandas_object(batch.to_pandas()[cols].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
