"""Prefect task: Self-J judge training and evaluation (stage 5)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.judge.config import JudgeConfig
from selectune.judge.stage import JudgeOutputs, judge_stage
from selectune.stage import StageResult


@task(name="judge", task_run_name="judge-{cfg.base}", tags={"selectune", "selectune-model"}, cache_policy=NO_CACHE)
def judge_task(cfg: JudgeConfig, records: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
               model_under_eval: str | None = None) -> StageResult[JudgeOutputs]:
    return judge_stage(cfg, records, run_dir, parent_run_id, model_under_eval)
