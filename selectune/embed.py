"""Record embeddings for the diversity pass: a sentence embedder, an on-disk cache keyed by record id and
embedder fingerprint (re-runs embed only new records), and the blockwise nearest-accepted search."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.settings import home

log = logging.getLogger(__name__)
TEXT_VERSION = "t1"  # part of the cache key: bump when embedding_text changes


def embedding_text(instruction: str, input: str, output: str) -> str:
    """What is embedded for a record: instruction, input (when present) and response, blank-line separated."""
    return "\n\n".join(part for part in (instruction, input, output) if part)


class EmbeddingCache:
    """Unit-length float32 vectors by record id in one ``.npz`` file (ids + matrix), replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.ids: np.ndarray = np.empty(0, dtype=str)
        self.vectors: np.ndarray | None = None
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as f:
                self.ids, self.vectors = f["ids"], f["vectors"]
        self.index = {str(i): n for n, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row in the cache per id, -1 when absent; mask of ids found)."""
        rows = np.array([self.index.get(i, -1) for i in ids], dtype=np.int64)
        return rows, rows >= 0

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Append new ids and write the file (temporary name, then rename)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.vectors is not None and self.vectors.shape[1] != vectors.shape[1]:
            raise ValueError(f"{self.path}: cached vectors have {self.vectors.shape[1]} dims, new ones "
                             f"{vectors.shape[1]}")
        self.vectors = vectors if self.vectors is None else np.concatenate([self.vectors, vectors])
        self.ids = np.concatenate([self.ids.astype(str), np.asarray(ids, dtype=str)])
        self.index = {str(i): n for n, i in enumerate(self.ids)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, ids=self.ids, vectors=self.vectors)
        tmp.replace(self.path)


@dataclass
class Embeddings:
    """Vectors aligned with the input rows, how many were computed now (not cached), and how long it took."""

    vectors: np.ndarray
    n_new: int
    seconds: float
    cache_path: str | None


def cache_path(embedder: str) -> Path:
    """``<home>/cache/embeddings/<model>-<fingerprint>-<text version>.npz``."""
    from selectune import models

    name = re.sub(r"[^\w.-]+", "_", models.model_key(embedder))
    return home() / "cache" / "embeddings" / f"{name}-{models.fingerprint(embedder)}-{TEXT_VERSION}.npz"


def embed_records(df: pd.DataFrame, embedder: str = "minilm-l6", *, batch_size: int = 64, use_cache: bool = True,
                  model: Any = None) -> Embeddings:
    """Embed each record (unit-length rows, in ``df`` order), reusing and extending the cache.

    ``model``: an already loaded SentenceTransformer for ``embedder`` (loaded on demand otherwise).
    """
    missing = [c for c in ("id", "instruction", "output") if c not in df.columns]
    if missing:
        raise ValueError(f"embedding needs columns {missing}; available columns: {[str(c) for c in df.columns]}")
    start = time.perf_counter()
    ids = df["id"].astype(str).tolist()
    cache = EmbeddingCache(cache_path(embedder)) if use_cache else None
    rows, found = cache.lookup(ids) if cache is not None else (np.full(len(ids), -1), np.zeros(len(ids), bool))
    todo = np.flatnonzero(~found)
    new = np.empty((0, 0), dtype=np.float32)
    if len(todo):
        if model is None:
            from selectune.models import load_embedder
            from selectune.settings import device

            model = load_embedder(embedder, device())
        sub = df.iloc[todo]
        texts = [embedding_text(*(("" if pd.isna(v) else str(v)) for v in row))
                 for row in sub.reindex(columns=["instruction", "input", "output"]).itertuples(index=False)]
        new = np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                      show_progress_bar=len(texts) >= 1000), dtype=np.float32)
        if cache is not None:
            firsts = pd.Index([ids[i] for i in todo]).duplicated(keep="first")
            cache.add([ids[i] for i in todo[~firsts]], new[~firsts])
    dim = new.shape[1] if len(todo) else cache.vectors.shape[1] if cache is not None and len(cache) else 0
    out = np.empty((len(ids), dim), dtype=np.float32)
    if len(todo):
        out[todo] = new
    if found.any():
        out[found] = cache.vectors[rows[found]]  # type: ignore[union-attr]
    seconds = time.perf_counter() - start
    log.info("embedded %d new of %d records in %.1fs", len(todo), len(ids), seconds)
    return Embeddings(out, len(todo), seconds, str(cache.path) if cache is not None else None)


def unit_rows(embeddings: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Embeddings as float32 rows of unit length; clear errors for a wrong shape or zero / non-finite rows."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim != 2 or e.shape[0] != len(ids):
        raise ValueError(f"embeddings must be 2-D with one row per record ({len(ids)}), got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} embedding row(s) are zero or not finite, e.g. ids {ids[bad][:5].tolist()}")
    return e / norms[:, None]


class NearestAccepted:
    """Most similar accepted record for each candidate of a walk, computed blockwise.

    ``emb`` holds unit rows; ``walk`` the rows in the order they are considered. For the block of ``block``
    candidates around the current one, one matrix product gives their cosines to everything accepted before the
    block, and the block's own Gram matrix covers records accepted inside it: exact, with BLAS doing the work.
    Accepted vectors go into a preallocated matrix.
    """

    def __init__(self, emb: np.ndarray, walk: np.ndarray, block: int = 256) -> None:
        self.emb, self.walk, self.block = emb, np.asarray(walk), block
        self.acc = np.empty((len(self.walk), emb.shape[1]), dtype=emb.dtype)
        self.acc_rows = np.empty(len(self.walk), dtype=np.int64)
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
