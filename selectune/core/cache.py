"""The one content-addressed cache: a SQLite table from a key (a hash of everything the value depends on) to one
row of values. Every write is committed at once, so a killed run keeps all it finished and a grown dataset
computes only its new rows. Safe across threads (one lock) and processes (WAL journal, busy timeout).

Users name their table and its value columns, e.g. SelectIT ratings ``("probs BLOB", "truncated INTEGER",
"n_tokens INTEGER")``, teacher replies, record embeddings.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CHUNK = 500  # keys per SELECT (SQLite's bound-parameter limit is 999 on old builds)


def cache_key(*parts: object) -> str:
    """sha256 of the parts joined by an unambiguous separator."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


class Cache:
    """``key -> (value, ...)`` in table ``table`` of the SQLite file ``path`` (created on first use)."""

    def __init__(self, path: str | Path, table: str, columns: Sequence[str]) -> None:
        if not table.isidentifier():
            raise ValueError(f"cache table name {table!r} is not an identifier")
        self.path, self.table = Path(path), table
        self.names = [c.split()[0] for c in columns]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{c} NOT NULL" for c in columns)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, {cols})")
        have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        for c in columns:  # a column added in a later release: older rows get its empty value
            if c.split()[0] not in have:
                empty = "''" if "TEXT" in c.upper() else "X''" if "BLOB" in c.upper() else "0"
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {c} NOT NULL DEFAULT {empty}")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        """The stored rows of the keys that are present."""
        keys = list(keys)
        found: dict[str, tuple[Any, ...]] = {}
        query = f"SELECT key, {', '.join(self.names)} FROM {self.table} WHERE key IN "
        with self._lock:
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start:start + CHUNK]
                for key, *values in self._db.execute(query + f"({','.join('?' * len(chunk))})", chunk):
                    found[key] = tuple(values)
        return found

    def put_many(self, rows: Iterable[Sequence[Any]]) -> None:
        """Insert or replace ``(key, value, ...)`` rows and commit."""
        marks = ", ".join("?" * (len(self.names) + 1))
        with self._lock:
            self._db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES ({marks})", [tuple(r) for r in rows])
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
