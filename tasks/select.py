"""Prefect task: subset selection (stage 3)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.selection.config import SelectionConfig
from selectune.selection.stage import SelectOutputs, select_stage
from selectune.stage import StageResult


@task(name="select", cache_policy=NO_CACHE)
def select_task(cfg: SelectionConfig, scored: str, run_dir: str,
                parent_run_id: str | None = None) -> StageResult[SelectOutputs]:
    return select_stage(cfg, scored, run_dir, parent_run_id)
