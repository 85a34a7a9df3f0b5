"""The one content-addressed cache: rows round-trip, every write is committed (visible to another connection at
once, as after a crash), threads and a second process share one file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from selectune.core.cache import Cache, cache_key

COLUMNS = ("probs BLOB", "truncated INTEGER", "n_tokens INTEGER")


def test_rows_round_trip_and_missing_keys_are_absent(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite", "ratings", COLUMNS)
    probs = np.array([0.1, 0.2, 0.7])
    cache.put_many([("a", probs.tobytes(), 1, 12), ("b", np.zeros(3).tobytes(), 0, 3)])
    got = cache.get_many(["b", "a", "zzz"])
    assert set(got) == {"a", "b"} and len(cache) == 2
    blob, truncated, n_tokens = got["a"]
    assert np.array_equal(np.frombuffer(blob, dtype=np.float64), probs) and truncated == 1 and n_tokens == 12
    cache.put_many([("a", probs.tobytes(), 0, 5)])  # replace
    assert cache.get_many(["a"])["a"][1:] == (0, 5) and len(cache) == 2


def test_writes_are_committed_at_once(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite", "t", ("v TEXT",))
    cache.put_many([("k", "value")])
    # another connection (a resumed process) sees the row without the writer closing or committing again
    assert sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT v FROM t WHERE key='k'").fetchone() == ("value",)


def test_many_keys_are_read_in_chunks(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite", "t", ("v INTEGER",))
    cache.put_many((str(i), i) for i in range(1234))
    got = cache.get_many(str(i) for i in range(0, 2000, 3))
    assert len(got) == len(range(0, 1234, 3)) and got["999"] == (999,)


def test_threads_and_a_second_process_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = Cache(path, "t", ("v INTEGER",))

    def write(base: int) -> None:
        for i in range(50):
            cache.put_many([(f"{base}-{i}", i)])
            cache.get_many([f"{base}-{i}"])

    threads = [threading.Thread(target=write, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    code = ("from selectune.core.cache import Cache\n"
            f"c = Cache({str(path)!r}, 't', ('v INTEGER',))\n"
            "c.put_many((f'p-{i}', i) for i in range(100))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    for t in threads:
        t.join()
    assert len(cache) == 4 * 50 + 100


def test_table_name_must_be_an_identifier(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        Cache(tmp_path / "c.sqlite", "t; DROP TABLE x", ("v TEXT",))


def test_key_is_unambiguous() -> None:
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key(1, 2.5, None) == cache_key("1", "2.5", "None") and len(cache_key("x")) == 64


def test_a_column_added_later_is_added_to_an_existing_file(tmp_path: Path) -> None:
    old = Cache(tmp_path / "c.sqlite", "t", ["text TEXT"])
    old.put_many([("k", "kept")])
    old.close()
    new = Cache(tmp_path / "c.sqlite", "t", ["text TEXT", "reason TEXT", "n INTEGER"])
    assert new.get_many(["k"]) == {"k": ("kept", "", 0)}
    new.put_many([("j", "x", "stop", 3)])
    assert new.get_many(["j"]) == {"j": ("x", "stop", 3)}


def test_a_cache_used_as_a_context_manager_is_closed_after_it(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite", "t", ["v TEXT"]) as cache:
        cache.put_many([("k", "x")])
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        cache.get_many(["k"])
    with Cache(tmp_path / "c.sqlite", "t", ["v TEXT"]) as again:
        assert again.get_many(["k"]) == {"k": ("x",)}
