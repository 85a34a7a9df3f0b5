"""Prefect task: load and validate the instruction dataset (stage 0)."""

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.data.config import DataConfig
from selectune.data.readers import DataValidationError
from selectune.data.stage import LoadOutputs, load_stage
from selectune.stage import StageResult


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry hub/network reads, not bad data: a validation error is the same on every try."""
    return not isinstance(state.result(raise_on_failure=False), DataValidationError)


@task(name="load", task_run_name="load", tags={"selectune"}, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=_transient, cache_policy=NO_CACHE)
def load_task(cfg: DataConfig, run_dir: str | Path, parent_run_id: str | None = None) -> StageResult[LoadOutputs]:
    return load_stage(cfg, run_dir, parent_run_id)
