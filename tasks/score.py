"""Prefect task: SelectIT scoring (stage 1). Sharded scoring on Dask / Ray is the subflow in flows/sharded.py."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.selectit.config import SelectITConfig
from selectune.selectit.stage import ScoreOutputs, score_stage
from selectune.stage import StageResult


@task(name="selectit", task_run_name="{stage}", tags={"selectune", "selectune-model"}, cache_policy=NO_CACHE)
def score_task(cfg: SelectITConfig, records: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
               stage: str = "selectit") -> StageResult[ScoreOutputs]:
    return score_stage(cfg, records, run_dir, parent_run_id, stage)
