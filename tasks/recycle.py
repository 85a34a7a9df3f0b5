"""Prefect task: Selective Reflection-Tuning recycling (stage 2)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.reflection.config import ReflectionConfig
from selectune.reflection.stage import RecycleOutputs, recycle_stage
from selectune.stage import StageResult
from tasks.secrets import secret_key


def teacher_key(cfg: ReflectionConfig) -> str | None:
    """The openai teacher's key from its Secret block (see :func:`secret_key`)."""
    teacher = cfg.teacher
    return secret_key(teacher.api_key_env, teacher.api_key_secret) if teacher.backend == "openai" else None


# A remote teacher fails transiently (rate limits, restarts): retry the task with backoff. Finished teacher
# calls are in the on-disk teacher cache, so a retry only repeats what did not finish.
@task(name="recycle", task_run_name="recycle-{cfg.teacher.backend}", tags={"selectune", "selectune-model",
      "selectune-teacher"}, retries=2, retry_delay_seconds=[30, 120], retry_jitter_factor=0.5, cache_policy=NO_CACHE)
def recycle_task(cfg: ReflectionConfig, records: str | Path, run_dir: str | Path,
                 parent_run_id: str | None = None) -> StageResult[RecycleOutputs]:
    return recycle_stage(cfg, records, run_dir, parent_run_id, api_key=teacher_key(cfg))
