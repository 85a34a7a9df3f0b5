"""SIGKILL inside `selectune run`, once while the teacher is being called (recycling) and once while the judge
trains, then a re-run: no teacher reply is asked for twice (counted by the teacher server), the judge resumes from
its last checkpoint, and every output equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tests.fixtures.openai_server import FakeOpenAI

SELECTUNE = str(Path(sys.executable).parent / "selectune")
HELD = 5  # teacher replies answered before the first kill


def _dataset(path: Path, n: int) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"instruction": f"Explain {words[i % 10]} number {i}.", "input": "",
             "output": " ".join(words[(i + j) % 10] for j in range(8 + i % 5)) + "."} for i in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _recipe(tmp: Path, name: str, data: Path, model: str, embedder: str, url: str) -> Path:
    tiny = {"dtype": "float32"}
    recipe = {"experiment": "kill-resume", "run_dir": str(tmp / name), "data": {"input": str(data)},
              "reflection": {"enabled": True, "student": {"model": model, **tiny},
                             "teacher": {"backend": "openai", "model": "m", "base_url": url, "concurrency": 2,
                                         "max_retries": 0}},
              "selectit": {"models": [model], **tiny}, "selection": {"fraction": 0.5},
              "tune": {"enabled": False}, "eval": {"enabled": False},
              "judge": {"enabled": True, "model": model, "base": model, "embedder": embedder, "n_samples": 2,
                        "max_new_tokens": 8, "max_steps": 20, "save_steps": 1, "batch_size": 2, "grad_accum": 1,
                        "max_tokens": 96, "lora_dropout": 0.0, "register_as": None, **tiny}}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(recipe))
    return path


def _cached_replies(home: Path) -> int:
    try:
        with sqlite3.connect(home / "cache" / "teacher.sqlite", timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _run_until(cmd: list[str], env: dict[str, str], cwd: Path, ready, what: str, timeout: float = 300) -> None:
    """Start ``cmd``, SIGKILL its process group once ``ready()`` holds; fail if it ends first."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def test_kills_in_recycling_and_judge_training_resume_to_the_same_outputs(tmp_path, tiny_model, tiny_embedder,
                                                                          mlflow_store, prefect_api_env) -> None:
    data = _dataset(tmp_path / "data.json", 10)
    base_env = {**os.environ, **prefect_api_env, "MLFLOW_TRACKING_URI": mlflow_store, "OPENAI_API_KEY": "sk-test"}

    with FakeOpenAI({"reflector": True}) as straight_srv:  # the uninterrupted run, its own caches
        env = {**base_env, "SELECTUNE_HOME": str(tmp_path / "home-straight")}
        _run([SELECTUNE, "run", "--config", str(_recipe(tmp_path, "straight", data, tiny_model, tiny_embedder,
                                                        straight_srv.url))], env, tmp_path)
        straight_calls = straight_srv.stats()["served"]

    home = tmp_path / "home-killed"
    env = {**base_env, "SELECTUNE_HOME": str(home)}
    with FakeOpenAI({"reflector": True, "hold_after": HELD}) as srv:
        cmd = [SELECTUNE, "run", "--config", str(_recipe(tmp_path, "killed", data, tiny_model, tiny_embedder,
                                                         srv.url))]
        run_dir = tmp_path / "killed"
        # 1. killed while recycling: the teacher has answered HELD requests (all of them cached) and holds the rest
        _run_until(cmd, env, tmp_path, lambda: _cached_replies(home) >= HELD, "the teacher answered")
        assert not (run_dir / "recycle" / "manifest.json").exists()
        assert sum(srv.stats()["served"].values()) == HELD
        srv.release()
        # 2. killed while the judge trains, after its second checkpoint
        ckpt = run_dir / "judge" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
        _run_until(cmd, env, tmp_path, ckpt.is_file, "judge training checkpointed")
        assert (run_dir / "recycle" / "manifest.json").is_file()
        assert not (run_dir / "judge" / "manifest.json").exists()
        # 3. to the end
        _run(cmd, env, tmp_path)
        served = srv.stats()["served"]

    assert served == straight_calls, "every teacher reply asked for exactly once, as in the uninterrupted run"
    assert set(served.values()) == {1}
    judge = _manifest(run_dir, "judge")["metrics"]
    assert judge["judge.resumed_from_step"] >= 2 and judge["judge.steps"] == 20
    assert _manifest(tmp_path / "straight", "judge")["metrics"]["judge.resumed_from_step"] == 0
    for stage, name in (("recycle", "kept.parquet"), ("recycle", "recycled.parquet"), ("selectit", "scored.parquet"),
                        ("select", "selected.parquet"), ("judge", "labels.parquet"), ("judge", "eval.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / stage / name),
                                      pd.read_parquet(tmp_path / "straight" / stage / name), rtol=1e-5, atol=1e-6)
    from safetensors.numpy import load_file

    a, b = (load_file(str(d / "judge" / "adapter" / "adapter_model.safetensors")) for d in (run_dir,
                                                                                          tmp_path / "straight"))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
