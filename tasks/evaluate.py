"""Prefect tasks: carve the fixed evaluation set (right after load) and evaluate the compared models (after tuning)."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.evaluation.config import EvalConfig
from selectune.evaluation.stage import EvalOutputs, EvalSetOutputs, evalset_stage, evaluate_stage
from selectune.stage import StageResult
from tasks.secrets import secret_key


@task(name="evalset", task_run_name="evalset", tags={"selectune"}, cache_policy=NO_CACHE)
def evalset_task(cfg: EvalConfig, records: str | Path, run_dir: str | Path,
                 parent_run_id: str | None = None) -> StageResult[EvalSetOutputs]:
    return evalset_stage(cfg, records, run_dir, parent_run_id)


# An API judge fails transiently: retry with backoff (answers and finished judge calls are cached on disk).
@task(name="evaluate", task_run_name="evaluate", tags={"selectune", "selectune-model"}, retries=1,
      retry_delay_seconds=60, cache_policy=NO_CACHE)
def evaluate_task(cfg: EvalConfig, eval_set: str | Path, models: dict[str, str], run_dir: str | Path,
                  parent_run_id: str | None = None) -> StageResult[EvalOutputs]:
    api_key = secret_key(cfg.judge_api_key_env, cfg.judge_api_key_secret) if (cfg.judge or "").startswith(
        "openai:") else None
    return evaluate_stage(cfg, eval_set, models, run_dir, parent_run_id, api_key)
