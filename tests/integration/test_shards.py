"""Sharded SelectIT scoring: balanced deterministic plans, Dask/Ray runs equal to score_stage, shard resume
after a re-run and after a SIGKILL. The distributed tests report to a real `prefect server` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.config import ScaleConfig, SelectITConfig
from selectune.data.records import record_id, write_parquet
from selectune.selectit import shards

R = 5  # built-in rating prompts


@pytest.fixture(scope="module")
def prefect_api(prefect_api_env: dict[str, str]):
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api_env["PREFECT_API_URL"]}):
        yield prefect_api_env
        APILogWorker.drain_all()  # send pending logs and events while the server is still up
        EventsWorker.drain_all()


def _records(path: Path, n: int) -> str:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [(f"Explain {words[i % 10]} number {i}.", "" if i % 3 else f"context {i}",
             " ".join(words[(i + j) % 10] for j in range(3 + (i * 7) % 23))) for i in range(n)]
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*r) for r in rows])
    df["label"] = ["good" if i % 4 else "poor" for i in range(n)]
    return str(write_parquet(df, path))


def _assert_same_scores(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-6) -> None:
    """Equal columns and values; floats within ``tol`` absolute + ``tol`` relative (float32 rounding: other
    batch compositions; per-prompt token scores divide by the sum of small rating probabilities)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if col.startswith(("selectit_probs.", "selectit_token.")):
            np.testing.assert_allclose(np.stack([np.stack(v) for v in x]), np.stack([np.stack(v) for v in y]),
                                       atol=tol, rtol=tol, err_msg=col)
        elif x.dtype.kind == "f":
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), atol=tol, rtol=tol, err_msg=col)
        else:
            assert [list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for v in x] == \
                   [list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v for v in y], col


def _scored(result) -> pd.DataFrame:
    return pd.read_parquet(result.outputs.scored)


def test_plan_is_greedy_balanced_and_deterministic() -> None:
    # longest first into the lightest shard, ties to the lower shard index:
    # 10->s0, 9->s1, 8->s2, 7->s2 (8), 6->s1 (9), 5->s0 (10), 1->s0 (tie 15/15/15)
    assert shards.plan_shards([10, 9, 8, 7, 6, 5, 1], 3) == [[0, 5, 6], [1, 4], [2, 3]]
    assert shards.plan_shards([1, 1, 1, 1], 2) == [[0, 2], [1, 3]]
    assert shards.plan_shards([3, 2], 5) == [[0], [1]]  # never an empty shard
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shards.plan_shards([1], 0)
    rng = np.random.default_rng(0)
    weights = rng.integers(1, 2000, 500).tolist()
    plan = shards.plan_shards(weights, 7)
    assert plan == shards.plan_shards(list(weights), 7)
    assert sorted(i for s in plan for i in s) == list(range(500))
    loads = [sum(weights[i] for i in s) for s in plan]
    assert max(loads) - min(loads) <= max(weights)  # greedy LPT bound
    df = pd.DataFrame({"instruction": ["ab", "c"], "input": ["xyz", None], "output": ["", "12345"]})
    assert shards.record_weights(df) == [5, 6]
    with pytest.raises(ValueError, match="no column"):
        shards.record_weights(df.drop(columns="output"))


def test_dask_two_workers_equal_score_stage(tmp_path, tiny_model, tiny_model_2, prefect_api) -> None:
    from flows.sharded import score_stage_sharded
    from selectune.selectit.stage import score_stage

    records = _records(tmp_path / "records.parquet", 14)
    cfg = SelectITConfig(models=[tiny_model, tiny_model_2], dtype="float32", use_cache=False)
    ref = score_stage(cfg, records, tmp_path / "local")
    omp = os.environ.get("OMP_NUM_THREADS")
    res = score_stage_sharded(cfg, ScaleConfig(runner="dask", n_workers=2, shards=3), records, tmp_path / "dask")
    assert os.environ.get("OMP_NUM_THREADS") == omp  # the Dask nannies' variables did not leak into this process
    _assert_same_scores(_scored(ref), _scored(res))
    m = res.metrics
    assert (m["shards_total"], m["shards_skipped"]) == (3, 0)
    assert m["ratings_computed"] == ref.metrics["ratings_computed"] == 14 * R * 2
    assert m["records_in"] == 14 and m["auroc.selectit_score"] == ref.metrics["auroc.selectit_score"]
    for key in ("weight.tiny-llama", "weight.tiny-llama-b"):
        assert m[key] == ref.metrics[key]
    markers = [json.loads(p.read_text()) for p in sorted(Path(res.outputs.shards).glob("*.done.json"))]
    assert sorted(mk["rows"] for mk in markers) == sorted(len(s) for s in shards.plan_shards(
        shards.record_weights(pd.read_parquet(records)), 3))
    pids = {mk["pid"] for mk in markers}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes did the scoring


def test_rerun_skips_finished_shards(tmp_path, tiny_model, prefect_api) -> None:
    from flows.sharded import score_stage_sharded

    records = _records(tmp_path / "records.parquet", 12)
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", use_cache=False)
    scale = ScaleConfig(runner="local", shards=3)
    first = score_stage_sharded(cfg, scale, records, tmp_path / "run")
    shard_dir = Path(first.outputs.shards)
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.done.json")}
    assert len(mtimes) == 3 and first.metrics["ratings_computed"] == 12 * R
    (Path(first.dir) / "manifest.json").unlink()  # as if the run died before its manifest
    (shard_dir / "1.done.json").unlink()  # ... and before shard 1 finished
    second = score_stage_sharded(cfg, scale, records, tmp_path / "run")
    rows_1 = json.loads((shard_dir / "1.done.json").read_text())["rows"]
    assert second.metrics["shards_skipped"] == 2
    assert second.metrics["ratings_computed"] == rows_1 * R  # only shard 1's ratings were computed again
    assert {n: shard_dir.joinpath(n).stat().st_mtime_ns for n in ("0.done.json", "2.done.json")} == \
           {n: mtimes[n] for n in ("0.done.json", "2.done.json")}
    _assert_same_scores(_scored(first), _scored(second), tol=0)
    third = score_stage_sharded(cfg, scale, records, tmp_path / "run")
    assert third.skipped and third.metrics == second.metrics


def test_sigkill_mid_run_resumes_without_recomputing_finished_shards(tmp_path, tiny_model, prefect_api) -> None:
    from flows.sharded import score_stage_sharded

    records = _records(tmp_path / "records.parquet", 80)
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", use_cache=False, batch_size=1)
    scale = ScaleConfig(runner="local", shards=4)
    run_dir = tmp_path / "run"
    code = ("import sys\nfrom flows.sharded import score_stage_sharded\nfrom selectune.config import *\n"
            f"score_stage_sharded(SelectITConfig.model_validate_json({cfg.model_dump_json()!r}), "
            f"ScaleConfig.model_validate_json({scale.model_dump_json()!r}), {records!r}, {str(run_dir)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **prefect_api}, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = run_dir / "selectit" / "shards"
    deadline = time.monotonic() + 180
    while not list(shard_dir.glob("*.done.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.done.json")}
    assert 1 <= len(done) < 4, f"the kill missed the scoring ({len(done)} of 4 shards finished)"
    assert not (run_dir / "selectit" / "manifest.json").exists()
    res = score_stage_sharded(cfg, scale, records, run_dir)
    rows_done = sum(json.loads(shard_dir.joinpath(n).read_text())["rows"] for n in done)
    assert res.metrics["shards_skipped"] == len(done)
    assert res.metrics["ratings_computed"] == (80 - rows_done) * R
    assert {n: shard_dir.joinpath(n).stat().st_mtime_ns for n in done} == done
    table = _scored(res)
    assert table["id"].tolist() == pd.read_parquet(records)["id"].tolist()
    assert table["selectit_score"].notna().all()


@pytest.mark.ray
def test_ray_equals_score_stage(tmp_path, tiny_model, prefect_api) -> None:
    pytest.importorskip("prefect_ray", reason="prefect-ray is not installed")
    probe = subprocess.run(
        [sys.executable, "-c", "import ray\nray.init(address='local', num_cpus=1, include_dashboard=False, "
         "_node_ip_address='127.0.0.1', object_store_memory=128 * 2**20)\nray.shutdown()"],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}, capture_output=True,
        text=True, timeout=120)
    if probe.returncode:
        pytest.skip(f"a local Ray instance does not start here: {probe.stderr.strip()[-300:]}")
    from flows.sharded import score_stage_sharded
    from selectune.selectit.stage import score_stage

    records = _records(tmp_path / "records.parquet", 8)
    cfg = SelectITConfig(models=[tiny_model], dtype="float32", use_cache=False)
    ref = score_stage(cfg, records, tmp_path / "local")
    res = score_stage_sharded(cfg, ScaleConfig(runner="ray", n_workers=2, shards=2), records, tmp_path / "ray")
    _assert_same_scores(_scored(ref), _scored(res))
    assert (res.metrics["shards_total"], res.metrics["ratings_computed"]) == (2, 8 * R)
