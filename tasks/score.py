"""Prefect task: SelectIT scoring (stage 1)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.selectit.config import SelectITConfig
from selectune.selectit.stage import ScoreOutputs, score_stage
from selectune.stage import StageResult


# Local model work: failures are deterministic, so no retries. The rating cache and the stage
# manifest make a re-run resume instead of recomputing.
@task(name="selectit-score", cache_policy=NO_CACHE)
def score_task(cfg: SelectITConfig, records: str, run_dir: str, parent_run_id: str | None = None,
               stage: str = "selectit") -> StageResult[ScoreOutputs]:
    return score_stage(cfg, records, run_dir, parent_run_id, stage)
