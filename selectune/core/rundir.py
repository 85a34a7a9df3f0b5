"""One writer per run directory: an advisory lock held for the whole flow run.

Two runs with different run dirs never share files (caches are content-addressed and SQLite-safe); two
runs pointed at the same run dir would interleave stage outputs, so the second one stops with a clear error.
The lock is an ``fcntl`` lock, released by the kernel when the holder dies (SIGKILL included), so a killed
run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = ".selectune.lock"


class RunDirLocked(RuntimeError):
    """Another live process is writing to this run directory."""


def holder(run_dir: str | Path) -> str | None:
    """Who holds the run dir's lock now (the holder's pid and start time), or None when it is free."""
    lock = Path(run_dir) / LOCK_FILE
    if not lock.is_file():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return lock.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


@contextmanager
def locked(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run dir's lock (created if missing) for the duration of the block."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
            raise RunDirLocked(f"run dir {path} is in use by another run ({holder}); wait for it to finish or "
                               "choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": datetime.now(UTC).isoformat()}).encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
