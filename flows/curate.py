"""The pipeline flow: load -> [recycle] -> SelectIT -> [recycle the top part] -> select -> tune.

Every stage config is a typed pydantic parameter, so the Prefect UI renders a form for a dashboard run.
One MLflow parent run per flow run, one child run per stage; outputs under ``<run_dir>/<stage>/``.
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
    JudgeConfig,
    PipelineConfig,
    ReflectionConfig,
    ScaleConfig,
    SelectionConfig,
    SelectITConfig,
    TuneConfig,
)
from selectune.core.rundir import locked
from selectune.core.settings import disable_telemetry
from selectune.stage import StageResult
from selectune.tracking import runs
from tasks.judge import judge_task
from tasks.load import load_task
from tasks.recycle import recycle_task
from tasks.score import score_task
from tasks.select import select_task
from tasks.tune import tune_task


def _summary_markdown(summary: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    return f"# selectune pipeline run\n\n| key | value |\n|---|---|\n{rows}\n"


def _run_link(uri: str, experiment_id: str, run_id: str) -> str:
    base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@flow(name="selectune-curate", log_prints=True)
def curate(
    data: DataConfig = DataConfig(),  # noqa: B008 -- Prefect renders pydantic defaults as a form
    selectit: SelectITConfig = SelectITConfig(),  # noqa: B008
    reflection: ReflectionConfig = ReflectionConfig(),  # noqa: B008
    selection: SelectionConfig = SelectionConfig(),  # noqa: B008
    tune: TuneConfig = TuneConfig(),  # noqa: B008
    judge: JudgeConfig = JudgeConfig(),  # noqa: B008
    scale: ScaleConfig = ScaleConfig(),  # noqa: B008
    run_dir: str | None = None,
    experiment: str = "selectune",
) -> dict[str, Any]:
    """Curate an instruction dataset and train on the selected subset, tracked in MLflow."""
    disable_telemetry()
    import mlflow

    from selectune.data.records import subset_digest
    from selectune.pipeline import top_part
    from selectune.tracking.registry import retrain_needed

    cfg = PipelineConfig(data=data, selectit=selectit, reflection=reflection, selection=selection, tune=tune,
                         judge=judge, scale=scale, run_dir=run_dir, experiment=experiment)

    def score(records: str | Path, stage: str = "selectit") -> StageResult:
        if scale.runner == "local":
            return score_task(selectit, records, rd, pid, stage=stage)
        from flows.sharded import score_stage_sharded  # Dask / Ray: one Prefect task per shard

        return score_stage_sharded(selectit, scale, records, rd, pid, stage=stage)

    out = Path(run_dir or f"runs/{datetime.now():%Y%m%d-%H%M%S}-{flow_run.name or 'local'}").resolve()
    start = time.perf_counter()
    with locked(out):
        exp_id = runs.setup(experiment)
        tags = {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.flow_run_name": str(flow_run.name or ""),
                "prefect.deployment_id": str(deployment.id or ""), "selectune.run_dir": str(out)}
        with mlflow.start_run(run_name=f"curate-{flow_run.name or out.name}", tags=tags) as parent:
            pid, rd = parent.info.run_id, str(out)
            mlflow.log_params(runs.clean_params(runs.flatten(cfg.model_dump(mode="json"))))
            stages = [loaded := load_task(data, rd, pid)]
            records = loaded.outputs.records
            if reflection.enabled and reflection.order == "before_scoring":
                stages.append(recycled := recycle_task(reflection, records, rd, pid))
                records = recycled.outputs.kept
            stages.append(scored := score(records))
            if reflection.enabled and reflection.order == "after_scoring":
                part = top_part(scored.outputs.scored, reflection.top_fraction, out / "recycle-input.parquet")
                stages.append(recycled := recycle_task(reflection, part, rd, pid))
                stages.append(scored := score(recycled.outputs.kept, stage="selectit-recycled"))
            stages.append(chosen := select_task(selection, scored.outputs.scored, rd, pid))
            digest = subset_digest(chosen.outputs.selected)
            mlflow.set_tag("selectune.selected_digest", digest)
            summary: dict[str, Any] = {
                "mlflow_run_id": pid, "mlflow_tracking_uri": mlflow.get_tracking_uri(),
                "mlflow_run_url": _run_link(mlflow.get_tracking_uri(), exp_id, pid), "run_dir": rd,
                "records_in": loaded.metrics["records_out"], "rejected": loaded.metrics["rejected"],
                "duplicates": loaded.metrics["duplicates"], "selected": chosen.metrics["records_out"],
                "selected_digest": digest, "selected_alpaca": str(chosen.outputs.alpaca),
                "auroc.selectit_score": scored.metrics.get("auroc.selectit_score"),
            }
            metrics = {"records_in": summary["records_in"], "records_selected": summary["selected"]}
            if summary["auroc.selectit_score"] is not None:
                metrics["auroc.selectit_score"] = summary["auroc.selectit_score"]
            for stage in stages:
                for key in ("calls", "cost", "tokens"):
                    if f"teacher.{key}" in stage.metrics:
                        metrics[f"teacher.{key}"] = metrics.get(f"teacher.{key}", 0) + stage.metrics[f"teacher.{key}"]
            under_eval = judge.model
            if tune.enabled:
                reason = retrain_needed(tune.register_as, digest)
                if reason is None:
                    summary["tune"] = "no change: the selected subset equals the latest registered model's"
                    mlflow.set_tag("selectune.tune", "no change")
                    under_eval = under_eval or f"models:/{tune.register_as}/latest"
                    print(summary["tune"])
                else:
                    stages.append(tuned := tune_task(tune, chosen.outputs.selected, rd, pid, digest))
                    summary.update({k: v for k, v in tuned.metrics.items() if k.startswith("eval.")})
                    metrics.update({k: v for k, v in tuned.metrics.items() if k.startswith("eval.")})
                    under_eval = under_eval or str(tuned.outputs.adapter)
                    if uri := tuned.outputs.model_uri:
                        summary["model_uri"] = uri
                        mlflow.set_tag("selectune.model_uri", uri)
            if judge.enabled:
                stages.append(judged := judge_task(judge, tune.heldout or chosen.outputs.selected, rd, pid,
                                                   under_eval))
                for key in ("judge.pearson", "judge.spearman", "judge.mean_score", "judge.coverage_auc"):
                    if key in judged.metrics:
                        metrics[key] = summary[key] = judged.metrics[key]
                if uri := judged.outputs.model_uri:
                    summary["judge_uri"] = uri
            summary["skipped_stages"] = ",".join(s.stage for s in stages if s.skipped)
            metrics["seconds"] = round(time.perf_counter() - start, 3)
            mlflow.log_metrics(metrics)
    create_markdown_artifact(_summary_markdown(summary), key="selectune-curate",
                             description=f"MLflow run {pid}")
    return summary


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the flow from a PipelineConfig (a YAML recipe)."""
    return curate(data=cfg.data, selectit=cfg.selectit, reflection=cfg.reflection, selection=cfg.selection,
                  tune=cfg.tune, judge=cfg.judge, scale=cfg.scale, run_dir=cfg.run_dir, experiment=cfg.experiment)
