"""Prefect task: subset selection (stage 3)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.selection.config import SelectionConfig
from selectune.selection.stage import SelectOutputs, select_stage
from selectune.stage import StageResult


@task(name="select", task_run_name="select-{cfg.strategy}", tags={"selectune"}, cache_policy=NO_CACHE)
def select_task(cfg: SelectionConfig, scored: str | Path, run_dir: str | Path,
                parent_run_id: str | None = None) -> StageResult[SelectOutputs]:
    return select_stage(cfg, scored, run_dir, parent_run_id)
