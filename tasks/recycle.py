"""Prefect task: Selective Reflection-Tuning recycling (stage 2)."""

import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.reflection.config import ReflectionConfig
from selectune.reflection.stage import RecycleOutputs, recycle_stage
from selectune.stage import StageResult


def teacher_key(cfg: ReflectionConfig) -> str | None:
    """The openai teacher's key from its Prefect Secret block, when the environment variable is unset. The value
    goes to the library as an argument: never a task parameter, result, log line or artifact."""
    teacher = cfg.teacher
    if teacher.backend != "openai" or os.environ.get(teacher.api_key_env) or not teacher.api_key_secret:
        return None
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(teacher.api_key_secret).get()) or None
    except Exception as err:  # noqa: BLE001 - report which block, never a value
        raise ValueError(f"could not load Prefect Secret block {teacher.api_key_secret!r}: "
                         f"{type(err).__name__}") from None


# A remote teacher fails transiently (rate limits, restarts): retry the task with backoff. Finished teacher
# calls are in the on-disk teacher cache, so a retry only repeats what did not finish.
@task(name="recycle", task_run_name="recycle-{cfg.teacher.backend}", tags={"selectune", "selectune-model",
      "selectune-teacher"}, retries=2, retry_delay_seconds=[30, 120], retry_jitter_factor=0.5, cache_policy=NO_CACHE)
def recycle_task(cfg: ReflectionConfig, records: str | Path, run_dir: str | Path,
                 parent_run_id: str | None = None) -> StageResult[RecycleOutputs]:
    return recycle_stage(cfg, records, run_dir, parent_run_id, api_key=teacher_key(cfg))
