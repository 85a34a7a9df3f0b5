"""Real servers on 127.0.0.1 for integration tests: a Prefect API server, a Prefect worker, an MLflow server.

Each is a subprocess started and stopped by the test that uses it, with its state in a temporary folder.
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
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
         "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sigints: int = 2) -> None:
    """SIGINT (twice for a Prefect worker), then SIGKILL if it lingers; the whole process group."""
    for _ in range(sigints):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    fh = log.open("w")
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free port with a temporary PREFECT_HOME (SQLite); yields client env vars."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}"}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    proc = spawn([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, log)
        yield {**QUIET, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    finally:
        stop(proc, sigints=1)


@contextmanager
def prefect_worker(pool: str, env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    """A process worker polling every second; stopped with two SIGINTs."""
    env = {**os.environ, **env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
    proc = spawn([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"], env, log, cwd)
    try:
        yield proc
    finally:
        stop(proc, sigints=2)


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` on a free port (SQLite backend, local artifacts, one worker); yields its URI."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, **QUIET, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "mlflow-server.log"
    proc = spawn([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--artifacts-destination", str(root / "artifacts")], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, sigints=1)


RETRYABLE = {429, 502, 503}  # Prefect's server answers 503 for retryable errors (e.g. SQLite busy)


def api_call(method: str, url: str, attempts: int = 8, **kwargs: object) -> httpx.Response:
    """One REST call to the Prefect API, retried with exponential backoff on 429 / 502 / 503 as Prefect's own
    client does (a dashboard or script triggering runs must do the same); raises on any other error."""
    for attempt in range(attempts - 1):
        res = httpx.request(method, url, timeout=10, **kwargs)
        if res.status_code not in RETRYABLE:
            return res.raise_for_status()
        time.sleep(min(0.25 * 2**attempt, 8.0))
    return httpx.request(method, url, timeout=10, **kwargs).raise_for_status()


def wait_flow_run(api: str, flow_run_id: str, timeout: float = 300) -> dict:
    """Poll the REST API until the flow run reaches a final state; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api_call("GET", f"{api}/flow_runs/{flow_run_id}").json()
        state = (run.get("state") or {}).get("type")
        if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")
