"""Resume and idempotency: a SIGKILLed flow run resumes without recomputing, run dirs are locked against a
second writer, and concurrent runs with different run dirs do not interfere."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from selectune.core.rundir import RunDirLocked, locked

SELECTUNE = str(Path(sys.executable).parent / "selectune")


def _dataset(path: Path, n: int) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"instruction": f"Explain {words[i % 10]} number {i} in detail.", "input": "",
             "output": " ".join(words[(i + j) % 10] for j in range(20 + i % 7))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _recipe(tmp: Path, data: Path, model: str, run_dir: Path, batch_size: int = 64) -> Path:
    recipe = tmp / f"{run_dir.name}.json"
    recipe.write_text(json.dumps({"experiment": "resume", "run_dir": str(run_dir), "data": {"input": str(data)},
                                  "selectit": {"models": [model], "dtype": "float32", "batch_size": batch_size},
                                  "selection": {"fraction": 0.25}, "tune": {"enabled": False},
                                  "eval": {"enabled": False}}))
    return recipe


def _cache_rows(home: Path) -> int:
    db = home / "cache" / "selectit.sqlite"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom selectune.core.rundir import locked\n"
                               f"with locked({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirLocked, match=f"in use by another run .*{holder.pid}"):
        with locked(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with locked(tmp_path):  # the kernel released the killed holder's lock: no stale lock file problem
        pass


def test_sigkill_mid_scoring_resumes_without_recomputing(tmp_path, tiny_model, mlflow_store) -> None:
    home = Path(os.environ["SELECTUNE_HOME"]) / f"resume-{tmp_path.name}"
    env = {**os.environ, "SELECTUNE_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_store}
    (home).mkdir(parents=True)
    data = _dataset(tmp_path / "d.jsonl", 48)
    recipe = _recipe(tmp_path, data, tiny_model, tmp_path / "run", batch_size=1)
    total = 48 * 5
    proc = subprocess.Popen([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while _cache_rows(home) < total // 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and the temporary Prefect server it started, as a crash would
    proc.wait()
    done = _cache_rows(home)
    assert 0 < done < total, f"kill missed the scoring stage ({done} of {total} ratings persisted)"
    assert (tmp_path / "run" / "load" / "manifest.json").is_file()
    assert not (tmp_path / "run" / "selectit" / "manifest.json").exists()

    res = subprocess.run([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    scoring = json.loads((tmp_path / "run" / "selectit" / "manifest.json").read_text())["metrics"]
    assert scoring["cache_hits"] == done and scoring["ratings_computed"] == total - done
    assert json.loads((tmp_path / "run" / "load" / "manifest.json").read_text())["metrics"]["records_out"] == 48
    assert _cache_rows(home) == total
    assert "skipped_stages\": \"load" in res.stdout


def test_concurrent_runs_with_different_run_dirs(tmp_path, tiny_model, mlflow_store) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    data = _dataset(tmp_path / "d.jsonl", 12)
    procs = [subprocess.Popen([SELECTUNE, "run", "--config", str(_recipe(tmp_path, data, tiny_model,
                                                                         tmp_path / f"run{i}"))],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    a, b = (pd.read_parquet(tmp_path / f"run{i}" / "select" / "selection.parquet") for i in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert a["selected"].sum() == 3


def _children(pid: int, needle: str) -> list[int]:
    """Live child processes of ``pid`` whose command line contains ``needle`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and needle in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_run_leaves_no_prefect_server_behind(tmp_path, tiny_model, mlflow_store, prefect_home) -> None:
    """SIGKILL to `selectune run` alone (not its process group): the temporary Prefect server it started dies too."""
    home = Path(os.environ["SELECTUNE_HOME"]) / f"orphan-{tmp_path.name}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(SELECTUNE_HOME=str(home), MLFLOW_TRACKING_URI=mlflow_store, PREFECT_HOME=str(prefect_home))
    recipe = _recipe(tmp_path, _dataset(tmp_path / "d.jsonl", 8), tiny_model, tmp_path / "run")
    proc = subprocess.Popen([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (servers := _children(proc.pid, "prefect.server.api.server")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers, "the run started no temporary Prefect server"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(s) for s in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(s) for s in servers), f"orphaned Prefect server(s) {servers}"


def test_a_second_run_on_the_same_dir_exits_at_once_naming_the_holder(tmp_path, tiny_model, mlflow_store,
                                                                      prefect_home) -> None:
    home = Path(os.environ["SELECTUNE_HOME"]) / f"lock-{tmp_path.name}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(SELECTUNE_HOME=str(home), MLFLOW_TRACKING_URI=mlflow_store, PREFECT_HOME=str(prefect_home))
    recipe = _recipe(tmp_path, _dataset(tmp_path / "d.jsonl", 60), tiny_model, tmp_path / "run", batch_size=1)
    first = subprocess.Popen([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "run" / ".selectune.lock"
    deadline = time.monotonic() + 180
    while not (lock.is_file() and lock.read_text().strip()) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    holder = json.loads(lock.read_text())
    second = subprocess.run([SELECTUNE, "run", "--config", str(recipe)], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert first.poll() is None, "the first run ended before the second was refused: make its data larger"
    assert second.returncode == 2 and "is in use by another run" in second.stderr
    assert f"\"pid\": {holder['pid']}" in second.stderr and holder["pid"] == first.pid
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    assert (tmp_path / "run" / "select" / "manifest.json").is_file()
