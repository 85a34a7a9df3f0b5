"""The Prefect API of a command-line run: the configured server (``PREFECT_API_URL``), else a temporary local one
that dies with the command, even when the command is SIGKILLed.

Prefect's own temporary server is a child process that outlives a killed parent (an orphaned uvicorn holding a
port and ~200 MB). This one is started the same way (uvicorn on ``prefect.server.api.server:create_app``, the
ephemeral-server settings, this machine's Prefect database) with the Linux parent-death signal set, so the kernel
stops it when its parent dies; it is stopped on a normal exit too. Elsewhere Prefect's own server is used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 90.0


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (and at once if it already has)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    """A Prefect API server on a free 127.0.0.1 port that stops when this process dies: (process, API URL)."""
    import httpx
    import prefect
    from prefect.settings import get_current_settings

    port, parent = _free_port(), os.getpid()
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
         "--lifespan", "on"], env=env, stdin=subprocess.DEVNULL, preexec_fn=lambda: _die_with_parent(parent))
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {proc.returncode} while starting")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"the temporary Prefect server did not answer on {url} within {STARTUP_TIMEOUT_S:g} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def prefect_api() -> Iterator[str | None]:
    """Run the body against the configured Prefect API, else a temporary server bound to this process (Linux);
    yields the temporary server's URL, or None."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        yield None
        return
    proc, url = start_server()
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                drain_workers()
    finally:
        stop_server(proc)


def drain_workers(timeout: float = 30.0) -> None:
    """Send the logs and events Prefect still queues while the server is up: left for interpreter exit, they would
    be retried against a stopped server (a minute or more of waiting before the command returns)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout, at_exit=False)
        except Exception:  # noqa: BLE001 - draining is best effort; the run's results are already written
            pass
