"""Prefect task: Self-J judge training and evaluation (stage 5)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.judge.config import JudgeConfig
from selectune.judge.stage import JudgeOutputs
from selectune.stage import StageResult


# Local model work: no retries; the stage manifest and training checkpoints make a re-run resume.
@task(name="judge", cache_policy=NO_CACHE)
def judge_task(cfg: JudgeConfig, records: str, run_dir: str, parent_run_id: str | None = None,
               model_under_eval: str | None = None) -> StageResult[JudgeOutputs]:
    from selectune.judge.stage import judge_stage

    return judge_stage(cfg, records, run_dir, parent_run_id, model_under_eval)
