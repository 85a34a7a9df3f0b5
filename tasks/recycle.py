"""Prefect task: Selective Reflection-Tuning recycling (stage 2)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.config import ReflectionConfig
from selectune.stages import StageResult


# A remote teacher fails transiently (rate limits, restarts): retry the task with backoff. Finished teacher
# calls are in the on-disk teacher cache, so a retry only repeats what did not finish.
@task(name="recycle", retries=2, retry_delay_seconds=[30, 120], retry_jitter_factor=0.5, cache_policy=NO_CACHE)
def recycle_task(cfg: ReflectionConfig, records: str, run_dir: str, parent_run_id: str | None = None) -> StageResult:
    from selectune.recycle import recycle_stage

    return recycle_stage(cfg, records, run_dir, parent_run_id)
