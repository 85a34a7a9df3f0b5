"""Prefect task: IFD / reversed IFD of every scored record (optional, after SelectIT)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.reflection.config import IFDScoringConfig
from selectune.reflection.stage import IFDOutputs, ifd_stage
from selectune.stage import StageResult


@task(name="ifd", task_run_name="ifd-{cfg.model}", tags={"selectune", "selectune-model"}, cache_policy=NO_CACHE)
def ifd_task(cfg: IFDScoringConfig, scored: str | Path, run_dir: str | Path,
             parent_run_id: str | None = None) -> StageResult[IFDOutputs]:
    return ifd_stage(cfg, scored, run_dir, parent_run_id)
