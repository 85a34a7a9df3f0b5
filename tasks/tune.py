"""Prefect task: LoRA instruction tuning (stage 4)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.stage import StageResult
from selectune.tuning.config import TuneConfig
from selectune.tuning.stage import TuneOutputs, tune_stage


@task(name="tune", task_run_name="tune-{cfg.base}", tags={"selectune", "selectune-model"}, cache_policy=NO_CACHE)
def tune_task(cfg: TuneConfig, selected: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
              dataset_digest: str | None = None) -> StageResult[TuneOutputs]:
    return tune_stage(cfg, selected, run_dir, parent_run_id, dataset_digest)
