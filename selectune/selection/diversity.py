"""Record embeddings for the diversity pass: a sentence embedder, an on-disk cache keyed by record id (one file per
embedder fingerprint and text version, so re-runs embed only new records), and the blockwise nearest-accepted
search."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.core.cache import Cache
from selectune.core.models import DEFAULT_EMBEDDER
from selectune.core.prompts import join_instruction
from selectune.core.settings import home

log = logging.getLogger(__name__)
TEXT_VERSION = "t2"  # part of the cache key: bump when embedding_text changes
VECTORS = ("vectors", ("vector BLOB",))  # cache table: one unit-length float32 vector per record id


def embedding_text(instruction: str, input: str, output: str) -> str:
    """What is embedded for a record: the joined instruction and input, a blank line, the response."""
    return "\n\n".join(part for part in (join_instruction(instruction, input), output) if part)


@dataclass
class Embeddings:
    """Vectors aligned with the input rows, how many were computed now (not cached), and how long it took."""

    vectors: np.ndarray
    n_new: int
    seconds: float
    cache_path: str | None
    model: Any = field(default=None, repr=False)  # the embedder used, when one was loaded or passed


def cache_path(embedder: str) -> Path:
    """``<home>/cache/embeddings/<model>-<fingerprint>-<text version>.sqlite``."""
    from selectune.core import models

    name = re.sub(r"[^\w.-]+", "_", models.model_key(embedder))
    return home() / "cache" / "embeddings" / f"{name}-{models.fingerprint(embedder)}-{TEXT_VERSION}.sqlite"


def embed_records(df: pd.DataFrame, embedder: str = DEFAULT_EMBEDDER, *, batch_size: int = 64,
                  use_cache: bool = True, model: Any = None) -> Embeddings:
    """Embed each record (unit-length rows, in ``df`` order), reusing and extending the cache.

    ``model``: an already loaded SentenceTransformer for ``embedder`` (loaded on demand otherwise).
    """
    missing = [c for c in ("id", "instruction", "output") if c not in df.columns]
    if missing:
        raise ValueError(f"embedding needs columns {missing}; available columns: {[str(c) for c in df.columns]}")
    start = time.perf_counter()
    ids = df["id"].astype(str).tolist()
    cache = Cache(cache_path(embedder), *VECTORS) if use_cache else None
    found = cache.get_many(dict.fromkeys(ids)) if cache is not None else {}
    todo = [i for i, rid in enumerate(ids) if rid not in found]
    vectors: dict[str, np.ndarray] = {rid: np.frombuffer(v[0], dtype=np.float32) for rid, v in found.items()}
    if todo:
        if model is None:
            from selectune.core.models import load_embedder
            from selectune.core.settings import device

            model = load_embedder(embedder, device())
        sub = df.iloc[todo]
        texts = [embedding_text(*(("" if pd.isna(v) else str(v)) for v in row))
                 for row in sub.reindex(columns=["instruction", "input", "output"]).itertuples(index=False)]
        new = np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                      show_progress_bar=len(texts) >= 1000), dtype=np.float32)
        fresh = {ids[i]: row for i, row in zip(todo, new, strict=True)}
        if cache is not None:
            cache.put_many((rid, v.tobytes()) for rid, v in fresh.items())
        vectors.update(fresh)
    if cache is not None:
        cache.close()
    out = np.stack([vectors[rid] for rid in ids]) if ids else np.empty((0, 0), dtype=np.float32)
    seconds = time.perf_counter() - start
    log.info("embedded %d new of %d records in %.1fs", len(todo), len(ids), seconds)
    return Embeddings(out, len(todo), seconds, str(cache.path) if cache is not None else None, model)


def embed_file(path: str | Path, embedder: str, dst: str | Path, rows: int = 8192) -> Embeddings:
    """Embed a Parquet file's records ``rows`` at a time (through the cache, the embedder loaded once and only if a
    record is new) into a float32 ``.npy`` matrix at ``dst``, memory-mapped: one row per record, file order."""
    import pyarrow.parquet as pq

    from selectune.data.stream import iter_frames

    start, names = time.perf_counter(), pq.read_schema(path).names
    n, model, n_new, pos = pq.ParquetFile(path).metadata.num_rows, None, 0, 0
    vectors: np.ndarray = np.empty((0, 0), dtype=np.float32)
    cols = [c for c in ("id", "instruction", "input", "output") if c in names]
    for chunk in iter_frames(path, rows, cols):
        emb = embed_records(chunk, embedder, model=model)
        if pos == 0:
            vectors = np.lib.format.open_memmap(dst, "w+", np.float32, (n, emb.vectors.shape[1]))
        vectors[pos:pos + len(chunk)] = emb.vectors
        pos, n_new, model = pos + len(chunk), n_new + emb.n_new, emb.model
    return Embeddings(vectors, n_new, time.perf_counter() - start, str(cache_path(embedder)), model)


def check_rows(embeddings: np.ndarray, ids: np.ndarray, block: int = 65_536) -> None:
    """Clear errors for embeddings of the wrong shape or with zero / non-finite rows (read ``block`` rows at a time,
    so a memory-mapped matrix is not loaded whole)."""
    shape = getattr(embeddings, "shape", None) or np.shape(embeddings)
    if len(shape) != 2 or shape[0] != len(ids):
        raise ValueError(f"embeddings must be 2-D with one row per record ({len(ids)}), got shape {tuple(shape)}")
    bad = np.concatenate([~np.isfinite(norms) | (norms == 0) for norms in (
        np.linalg.norm(np.asarray(embeddings[i:i + block], dtype=np.float32), axis=1)
        for i in range(0, shape[0], block))] or [np.zeros(0, dtype=bool)])
    if bad.any():
        raise ValueError(f"{int(bad.sum())} embedding row(s) are zero or not finite, e.g. ids {ids[bad][:5].tolist()}")


class Rows:
    """The rows of ``emb`` in the order ``order`` gives, read on demand: a view that copies nothing up front
    (``emb`` may be memory-mapped)."""

    def __init__(self, emb: Any, order: np.ndarray) -> None:
        self.emb, self.order = emb, np.asarray(order)
        self.shape, self.dtype = (len(self.order), emb.shape[1]), np.dtype(np.float32)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.emb[self.order[idx]], dtype=np.float32)


class RankedUnitRows(Rows):
    """:class:`Rows` scaled to unit length as they are read: the view :class:`NearestAccepted` searches."""

    def __getitem__(self, idx: Any) -> np.ndarray:
        rows = super().__getitem__(idx)
        return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


class NearestAccepted:
    """Most similar accepted record for each candidate of a walk, computed blockwise.

    ``emb`` holds unit rows; ``walk`` the rows in the order they are considered. For the block of ``block``
    candidates around the current one, one matrix product gives their cosines to everything accepted before the
    block, and the block's own Gram matrix covers records accepted inside it: exact, with BLAS doing the work.
    Accepted vectors go into a matrix that doubles as it fills (memory grows with the accepted set, not the walk).
    """

    initial_rows = 4096

    def __init__(self, emb: Any, walk: np.ndarray, block: int = 256) -> None:
        self.emb, self.walk, self.block = emb, np.asarray(walk), block
        self.acc = np.empty((min(len(self.walk), self.initial_rows), emb.shape[1]), dtype=emb.dtype)
        self.acc_rows = np.empty(len(self.acc), dtype=np.int64)
        self.m, self.start = 0, -block - 1
        self.in_block: list[int] = []

    def nearest(self, pos: int) -> tuple[float, int]:
        """(max cosine of candidate ``walk[pos]`` to the accepted ones, that record's row; -inf and -1 if none)."""
        if not self.start <= pos < self.start + self.block:
            self._load(pos)
        off = pos - self.start
        best, row = float(self.pre_max[off]), int(self.pre_row[off])
        if self.in_block:
            cos = self.gram[off, self.in_block]
            k = int(cos.argmax())
            if cos[k] > best:
                best, row = float(cos[k]), int(self.walk[self.start + self.in_block[k]])
        return best, row

    def accept(self, pos: int) -> None:
        """Add candidate ``walk[pos]`` (the current one) to the accepted set."""
        if self.m == len(self.acc):
            grow = min(len(self.walk), 2 * len(self.acc)) - len(self.acc)
            self.acc = np.concatenate([self.acc, np.empty((grow, self.acc.shape[1]), self.acc.dtype)])
            self.acc_rows = np.concatenate([self.acc_rows, np.empty(grow, np.int64)])
        self.acc[self.m] = self.emb[self.walk[pos]]
        self.acc_rows[self.m] = self.walk[pos]
        self.m += 1
        self.in_block.append(pos - self.start)

    def _load(self, pos: int) -> None:
        self.start, self.in_block = pos, []
        rows = self.emb[self.walk[pos:pos + self.block]]
        self.gram = rows @ rows.T
        if self.m:
            cos = rows @ self.acc[:self.m].T
            arg = cos.argmax(axis=1)
            self.pre_max, self.pre_row = cos[np.arange(len(rows)), arg], self.acc_rows[arg]
        else:
            self.pre_max, self.pre_row = np.full(len(rows), -np.inf), np.full(len(rows), -1)
