"""The pipeline flow, its table of contents: load -> carve the evaluation set -> [recycle] -> SelectIT ->
[recycle the top part] -> [IFD] -> select -> tune (when the subset changed) -> evaluate -> promote -> [judge].
Each stage
is a task (tasks/), each decision between stages a named library function (selectune/decisions.py,
selectune/tracking/registry.py).

Every stage config is a typed pydantic parameter, so the Prefect UI renders a form for a dashboard run. One
MLflow parent run per flow run, one child run per stage; outputs under ``<run_dir>/<stage>/``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from selectune.config import (
    DataConfig,
    EvalConfig,
    IFDScoringConfig,
    JudgeConfig,
    PipelineConfig,
    PromoteConfig,
    ReflectionConfig,
    ScaleConfig,
    SelectionConfig,
    SelectITConfig,
    TuneConfig,
)
from tasks.evaluate import evalset_task, evaluate_task
from tasks.ifd import ifd_task
from tasks.judge import judge_task
from tasks.load import load_task
from tasks.promote import promote_task
from tasks.recycle import recycle_task
from tasks.score import score_task
from tasks.select import select_task
from tasks.tune import tune_task


@flow(name="selectune-curate", log_prints=True)
def curate(
    data: DataConfig = DataConfig(),  # noqa: B008 -- Prefect renders pydantic defaults as a form
    selectit: SelectITConfig = SelectITConfig(),  # noqa: B008
    ifd: IFDScoringConfig = IFDScoringConfig(),  # noqa: B008
    reflection: ReflectionConfig = ReflectionConfig(),  # noqa: B008
    selection: SelectionConfig = SelectionConfig(),  # noqa: B008
    tune: TuneConfig = TuneConfig(),  # noqa: B008
    judge: JudgeConfig = JudgeConfig(),  # noqa: B008
    eval: EvalConfig = EvalConfig(),  # noqa: B008
    promote: PromoteConfig = PromoteConfig(),  # noqa: B008
    scale: ScaleConfig = ScaleConfig(),  # noqa: B008
    run_dir: str | None = None,
    experiment: str = "selectune",
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Curate an instruction dataset and train on the selected subset, tracked in MLflow."""
    from selectune import decisions
    from selectune.core.rundir import locked
    from selectune.core.settings import disable_telemetry
    from selectune.data.records import subset_digest
    from selectune.tracking.registry import CHAMPION, alias_version, retrain_needed
    from selectune.tracking.runs import parent_run

    disable_telemetry()
    cfg = PipelineConfig(data=data, selectit=selectit, ifd=ifd, reflection=reflection, selection=selection, tune=tune,
                         judge=judge, eval=eval, promote=promote, scale=scale, run_dir=run_dir,
                         experiment=experiment)
    out = Path(run_dir or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{flow_run.name or 'local'}").resolve()
    start, rd, tuned = time.perf_counter(), str(out), None
    tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or ""),
            "prefect.deployment_id": str(deployment.id or ""), "selectune.run_dir": rd}
    name = f"curate-{flow_run.name or out.name}"
    with locked(out), parent_run(experiment, name, tags, cfg.model_dump(mode="json"), parent_run_id) as run:
        pid = run["mlflow_run_id"]
        cfg, pinned = decisions.pin_model_refs(cfg)  # models:/…@alias and /latest: one version for the whole run
        selection, judge, eval = cfg.selection, cfg.judge, cfg.eval
        champion = alias_version(tune.register_as, CHAMPION) if tune.enabled and tune.register_as else None
        log_pins(pinned, tune.register_as, champion)
        stages = [loaded := load_task(data, rd, pid)]
        records = loaded.outputs.records
        if eval.enabled:  # the fixed evaluation set leaves the data before anything else sees it
            stages.append(carved := evalset_task(eval, records, rd, pid))
            records = carved.outputs.pool
        if reflection.enabled and reflection.order == "before_scoring":
            stages.append(recycled := recycle_task(reflection, records, rd, pid))
            records = recycled.outputs.kept
        stages.append(scored := score(selectit, scale, records, rd, pid))
        if reflection.enabled and reflection.order == "after_scoring":
            top = decisions.recycle_input(scored.outputs.scored, reflection.top_fraction, out / "recycle-input.parquet")
            stages.append(recycled := recycle_task(reflection, top, rd, pid))
            stages.append(scored := score(selectit, scale, recycled.outputs.kept, rd, pid, "selectit-recycled"))
        if ifd.enabled:
            stages.append(scored := ifd_task(ifd, scored.outputs.scored, rd, pid))
        stages.append(chosen := select_task(selection, scored.outputs.scored, rd, pid))
        digest = subset_digest(chosen.outputs.selected)
        retrain = tune.enabled and retrain_needed(tune.register_as, digest) is not None
        if retrain:
            tune_cfg = decisions.tune_settings(tune, eval)
            stages.append(tuned := tune_task(tune_cfg, chosen.outputs.selected, rd, pid, digest))
        if eval.enabled and tune.enabled:
            models = decisions.models_to_compare(tune, tuned, champion)
            stages.append(evaluated := evaluate_task(eval, carved.outputs.eval_set, models, rd, pid))
        if promote.enabled and (challenger := decisions.challenger(tune, tuned)):
            metrics = evaluated.metrics if eval.enabled else {}
            stages.append(promote_task(promote, challenger, champion, metrics, rd, pid,
                                       carved.outputs.digest if eval.enabled else None))
        if judge.enabled:
            under_eval = decisions.model_under_evaluation(judge, tune, tuned)
            stages.append(judge_task(judge, tune.heldout or chosen.outputs.selected, rd, pid, under_eval))
        result = decisions.report(stages, digest, tune_skipped=tune.enabled and not retrain)
        result.metrics["seconds"] = round(time.perf_counter() - start, 3)
        log_report(result)
    summary = {**run, "run_dir": rd, **result.summary}
    create_markdown_artifact(decisions.markdown(summary), key="selectune-curate", description=f"MLflow run {pid}")
    return summary


def score(selectit: SelectITConfig, scale: ScaleConfig, records: str | Path, run_dir: str, parent_run_id: str,
          stage: str = "selectit") -> Any:
    """SelectIT in this process (a task), or in shards on Dask / Ray (a subflow with one task per shard)."""
    if scale.runner == "local":
        return score_task(selectit, str(records), run_dir, parent_run_id, stage=stage)
    from flows.sharded import score_stage_sharded

    return score_stage_sharded(selectit, scale, records, run_dir, parent_run_id, stage=stage)


def log_pins(pinned: dict[str, str], model_name: str | None, champion: int | None) -> None:
    """Which versions this run's moving references meant, on the parent MLflow run."""
    import mlflow

    tags = {f"selectune.pinned.{k}": v for k, v in pinned.items()}
    if model_name:
        tags["selectune.champion_at_start"] = f"models:/{model_name}/{champion}" if champion else "none"
    if tags:
        mlflow.set_tags(tags)
    for key, value in pinned.items():
        print(f"{key}: {value}")


def log_report(result: Any) -> None:
    """The run's totals and tags into the parent MLflow run; a skipped tuning stage is said out loud."""
    import mlflow

    mlflow.set_tags(result.tags)
    mlflow.log_metrics(result.metrics)
    if "tune" in result.summary:
        print(result.summary["tune"])


def run_pipeline(cfg: PipelineConfig, parent_run_id: str | None = None) -> dict[str, Any]:
    """Run the flow from a PipelineConfig (a YAML recipe), as its own flow run or a subflow of a running flow."""
    return curate(**dict(cfg), parent_run_id=parent_run_id)
