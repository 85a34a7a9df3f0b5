"""Prefect task: LoRA instruction tuning (stage 4)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from selectune.stage import StageResult
from selectune.tuning.config import TuneConfig
from selectune.tuning.stage import TuneOutputs


# Local training: no retries (a failure is deterministic); a re-run resumes from the last checkpoint.
@task(name="tune", cache_policy=NO_CACHE)
def tune_task(cfg: TuneConfig, selected: str, run_dir: str, parent_run_id: str | None = None,
              dataset_digest: str | None = None) -> StageResult[TuneOutputs]:
    from selectune.tuning.stage import tune_stage

    return tune_stage(cfg, selected, run_dir, parent_run_id, dataset_digest)
