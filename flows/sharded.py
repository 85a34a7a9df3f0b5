"""Sharded SelectIT scoring: a Prefect subflow maps one task per shard over the task runner that ScaleConfig picks.

* local: ThreadPoolTaskRunner with one worker (shards run one after another in this process).
* dask: a LocalCluster of ``n_workers`` processes on 127.0.0.1 (or the scheduler at ``address``); with
  ``gpus_per_shard`` each local worker advertises ``GPU=1`` and each shard task asks for ``gpus_per_shard`` of it
  (``dask.annotate(resources=...)``). For several GPUs on one host start ``dask cuda worker --resources GPU=1``
  processes (dask-cuda pins one device per worker) and pass their scheduler as ``address``.
* ray: RayTaskRunner on a local Ray instance bound to 127.0.0.1 (no dashboard, no usage stats), or ``address``;
  each shard asks for ``num_gpus=gpus_per_shard`` through ``remote_options``.

Dask and Ray workers run Prefect tasks in their own processes, and each one reports its task runs to the Prefect
API: with no ``PREFECT_API_URL`` every worker would start its own temporary server. So the distributed runners
use ``PREFECT_API_URL``; when it is unset and the cluster is local, they share this process's temporary server
(logged), and with a remote ``address`` they stop with an error that says how to set one.

Shard outputs, markers and the merge are in ``selectune.selectit.shards``. The run dir, the records file and
``SELECTUNE_HOME`` must be reachable at the same paths from every worker (a shared filesystem for multi-host).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from selectune.config import ScaleConfig
from selectune.core.settings import TELEMETRY_OFF, disable_telemetry, home
from selectune.selectit import shards
from selectune.selectit.config import SelectITConfig
from selectune.selectit.stage import ScoreOutputs, Scorer, score_stage
from selectune.stage import StageResult

log = logging.getLogger(__name__)

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


@task(name="selectit-shard", task_run_name="selectit-shard-{index}", cache_policy=NO_CACHE)
def shard_task(cfg: SelectITConfig, records: str, positions: list[int], shard_dir: str, index: int,
               key: str) -> dict[str, Any]:
    return shards.score_shard(cfg, records, positions, shard_dir, index, key)


def _placement(runner: str, gpus: float) -> AbstractContextManager[Any]:
    """Resource request of every shard task submitted inside it."""
    if gpus and runner == "dask":
        import dask

        return dask.annotate(resources={"GPU": gpus})
    if runner == "ray":
        from prefect_ray.context import remote_options

        return remote_options(num_cpus=1, num_gpus=gpus)
    return nullcontext()


@flow(name="selectit-sharded", log_prints=True)
def sharded_flow(cfg: SelectITConfig, records: str, n_shards: int, shard_dir: str, key: str,
                 runner: str = "local", gpus_per_shard: float = 0.0) -> list[dict[str, Any]]:
    """Plan the shards, skip the finished ones, score the rest on this flow's task runner."""
    weights = shards.file_weights(records)
    plan = shards.plan_shards(weights, n_shards)
    keys = [shards.shard_key(key, p) for p in plan]
    done = {i: m for i in range(len(plan)) if (m := shards.finished(shard_dir, i, keys[i])) is not None}
    todo = [i for i in range(len(plan)) if i not in done]
    print(f"SelectIT: {len(weights)} records in {len(plan)} shards ({len(done)} already finished) on {runner}")
    results = [{**m, "skipped": True} for m in done.values()]
    if todo:
        with _placement(runner, gpus_per_shard):
            futures = shard_task.map(unmapped(cfg), unmapped(records), [plan[i] for i in todo], unmapped(shard_dir),
                                     todo, [keys[i] for i in todo])
        results += [f.result() for f in futures]
    return sorted(results, key=lambda r: r["index"])


def prefect_api(scale: ScaleConfig) -> str:
    """The Prefect API the workers report to (see the module docstring)."""
    from prefect.settings import PREFECT_API_URL

    if api := PREFECT_API_URL.value():
        return api
    if scale.address:
        raise RuntimeError(
            f"scale.runner={scale.runner!r} with a remote cluster ({scale.address}) needs a Prefect server that its "
            "workers can reach: start one (`prefect server start --host 0.0.0.0`) and set "
            "PREFECT_API_URL=http://<host>:4200/api here and on the workers")
    from prefect.server.api.server import SubprocessASGIServer

    disable_telemetry()  # the temporary server inherits this environment
    server = SubprocessASGIServer()  # the temporary server of this process (started on first use)
    server.start()
    log.warning("PREFECT_API_URL is not set: the local %s workers share this process's temporary Prefect server "
                "at %s. Set PREFECT_API_URL to a running `prefect server start` to keep the task runs.",
                scale.runner, server.api_url)
    return server.api_url


def worker_env(scale: ScaleConfig, api: str) -> dict[str, str]:
    """Environment of the worker processes: telemetry off, the Prefect API, and for a local cluster the
    artifact home and torch threads (the cores split between the workers)."""
    env = {**TELEMETRY_OFF, "PREFECT_API_URL": api, "TOKENIZERS_PARALLELISM": "false"}
    if not scale.address:
        threads = max(1, (os.cpu_count() or 1) // (scale.n_workers * scale.threads_per_worker))
        env.update(SELECTUNE_HOME=str(home()), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.update({k: os.environ[k] for k in ("HF_HUB_OFFLINE", "PREFECT_HOME") if k in os.environ})
    return env


@contextmanager
def task_runner(scale: ScaleConfig) -> Iterator[Any]:
    """The task runner for ``scale`` (a local Dask cluster lives as long as the context)."""
    if scale.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        yield ThreadPoolTaskRunner(max_workers=1)
        return
    env = worker_env(scale, prefect_api(scale))
    if scale.runner == "ray":
        from prefect_ray import RayTaskRunner

        os.environ.update(RAY_ENV)
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                "runtime_env": {"env_vars": env}}
        if not scale.address:
            init.update(address="local", num_cpus=scale.n_workers, _node_ip_address="127.0.0.1",
                        object_store_memory=256 * 2**20)
        yield RayTaskRunner(address=scale.address, init_kwargs=init)
        return
    from prefect_dask import DaskTaskRunner

    if scale.address:
        yield DaskTaskRunner(address=scale.address)
        return
    from distributed import LocalCluster

    if scale.gpus_per_shard > 1:
        raise ValueError(f"scale.gpus_per_shard={scale.gpus_per_shard}: a local Dask worker owns one GPU; use "
                         "runner 'ray' or a cluster whose workers advertise more (scale.address)")
    saved = dict(os.environ)
    cluster = LocalCluster(n_workers=scale.n_workers, threads_per_worker=scale.threads_per_worker, processes=True,
                           host="127.0.0.1", dashboard_address=None, env=env,
                           resources={"GPU": 1} if scale.gpus_per_shard else None)
    # the nannies write their pre-spawn variables (OMP_NUM_THREADS=1, ...) into this process: undo that
    for k in set(os.environ) - set(saved):
        del os.environ[k]
    os.environ.update(saved)
    try:
        yield DaskTaskRunner(address=cluster.scheduler_address)
    finally:
        cluster.close()


def sharded_scorer(cfg: SelectITConfig, scale: ScaleConfig) -> Scorer:
    """A ``score_stage`` scorer that plans shards, scores the unfinished ones on ``scale``'s runner (one Prefect
    task each) and merges them; finished shards of an interrupted run are not scored again."""

    def score(records: Path, out: Path, key: str) -> tuple[Path, dict[str, float], Path]:
        import pyarrow.parquet as pq

        n_records = pq.ParquetFile(records).metadata.num_rows
        shard_dir = out / "shards"
        start = time.perf_counter()
        with task_runner(scale) as runner:
            results = sharded_flow.with_options(task_runner=runner)(
                cfg, str(records), scale.shards or 2 * scale.n_workers, str(shard_dir), key, scale.runner,
                scale.gpus_per_shard)
        wall = time.perf_counter() - start
        m = shards.merge_shards(shard_dir, results, n_records, cfg, out / "scored.parquet")
        rated = sum(r["rows"] for r in results if not r["skipped"])
        m["records_per_s"] = round(rated / wall, 3) if rated else 0.0
        return out / "scored.parquet", m, shard_dir

    return score


def score_stage_sharded(cfg: SelectITConfig, scale: ScaleConfig, records: str | Path, run_dir: str | Path,
                        parent_run_id: str | None = None, stage: str = "selectit") -> StageResult[ScoreOutputs]:
    """``score_stage`` in shards: the same scored.parquet and stage key, plus shards_total / shards_skipped."""
    scale_params = {f"{stage}.scale.{k}": v for k, v in scale.model_dump(mode="json").items()}
    return score_stage(cfg, records, run_dir, parent_run_id, stage, sharded_scorer(cfg, scale), scale_params)
