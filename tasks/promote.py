"""Prefect task: the promotion gate (after evaluation). Registry calls can fail on a remote tracking server, so it
retries; moving an alias and tagging a version are idempotent."""

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.promotion.config import PromoteConfig
from selectune.promotion.stage import PromoteOutputs, promote_stage
from selectune.stage import StageResult


@task(name="promote", task_run_name="promote", tags={"selectune"}, retries=2, retry_delay_seconds=10,
      cache_policy=NO_CACHE)
def promote_task(cfg: PromoteConfig, challenger: str, champion: int | None, metrics: dict[str, float],
                 run_dir: str | Path, parent_run_id: str | None = None,
                 eval_set_digest: str | None = None) -> StageResult[PromoteOutputs]:
    return promote_stage(cfg, challenger, champion, metrics, run_dir, parent_run_id, eval_set_digest)
