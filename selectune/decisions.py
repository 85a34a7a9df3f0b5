"""The decisions the pipeline flow makes between stages, as plain functions: which registry references a run pins,
what to recycle after scoring, which models are evaluated and which version the promotion gate decides on, which
model the judge evaluates, what the parent MLflow run and the flow's summary record. (Whether to retrain is
:func:`selectune.tracking.registry.retrain_needed`: it asks the Model Registry.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.config import PipelineConfig
from selectune.data.records import write_parquet
from selectune.evaluation.config import EvalConfig
from selectune.judge.config import JudgeConfig
from selectune.stage import StageResult
from selectune.tuning.config import TuneConfig

NO_CHANGE = "no change: the selected subset equals the latest registered model's"
TEACHER_TOTALS = ("calls", "cost", "tokens")
JUDGE_SUMMARY = ("judge.pearson", "judge.spearman", "judge.mean_score", "judge.coverage_auc")


def recycle_input(scored: str | Path, fraction: float, path: Path) -> Path:
    """The best-scored fraction of records (SelectIT order, ties by id), without their scores: what the teacher
    reflects on when recycling comes after scoring."""
    df = pd.read_parquet(scored).sort_values(["selectit_score", "id"], ascending=[False, True])
    n = max(1, int(len(df) * fraction + 1e-9))
    keep = [c for c in df.columns if not c.startswith("selectit")]
    return write_parquet(df.head(n)[keep].reset_index(drop=True), path)


def tune_settings(tune: TuneConfig, evaluation: EvalConfig) -> TuneConfig:
    """The tune stage's config in the pipeline: with the evaluate stage on, every selected record trains and the
    evaluate stage measures the model on the fixed evaluation set (no second split of the selected subset)."""
    if not evaluation.enabled or tune.heldout:
        return tune
    return tune.model_copy(update={"eval_fraction": 0.0, "eval_prompts": 0})


def models_to_compare(tune: TuneConfig, tuned: StageResult | None, champion: int | None = None) -> dict[str, str]:
    """What the evaluate stage compares, the candidate first: the model tuned now (or, when tuning was skipped
    because the subset did not change, the latest registered version) against its base and, when there is one and
    it is another version, the champion."""
    candidate = str(tuned.outputs.adapter) if tuned is not None else f"models:/{tune.register_as}/latest"
    models = {"tuned": candidate, "base": tune.base}
    held = f"models:/{tune.register_as}/{champion}"
    if champion is not None and tune.register_as and challenger(tune, tuned) != held:
        models["champion"] = held
    return models


def challenger(tune: TuneConfig, tuned: StageResult | None) -> str | None:
    """The registered version the promotion gate decides on: the one registered now, else (tuning skipped) the
    latest, pinned to its number; None when nothing is registered."""
    from selectune.tracking.registry import resolve_ref

    if tuned is not None:
        return tuned.outputs.model_uri
    return resolve_ref(f"models:/{tune.register_as}/latest") if tune.enabled and tune.register_as else None


def pin_model_refs(cfg: PipelineConfig) -> tuple[PipelineConfig, dict[str, str]]:
    """The config with every registry reference that can move (``models:/NAME/latest``, ``models:/NAME@ALIAS``)
    pinned to its version, so one run uses one version throughout; and what was pinned (to log)."""
    from selectune.tracking.registry import resolve_ref

    pinned: dict[str, str] = {}
    updates: dict[str, object] = {}
    for section, name in (("selection", "judge"), ("judge", "model"), ("eval", "judge")):
        stage_cfg = getattr(cfg, section)
        ref = getattr(stage_cfg, name)
        if ref and ref.startswith("models:/") and (fixed := resolve_ref(ref)) != ref:
            pinned[f"{section}.{name}"] = f"{ref} -> {fixed}"
            updates[section] = stage_cfg.model_copy(update={name: fixed})
    return cfg.model_copy(update=updates), pinned


def model_under_evaluation(judge: JudgeConfig, tune: TuneConfig, tuned: StageResult | None) -> str | None:
    """The judge's model: the configured one, else the adapter tuned now, else (tuning skipped because the subset
    did not change) the latest registered version."""
    if judge.model:
        return judge.model
    if tuned is not None:
        return str(tuned.outputs.adapter)
    return f"models:/{tune.register_as}/latest" if tune.enabled and tune.register_as else None


@dataclass
class RunReport:
    """What the flow returns and shows (summary), and what the parent MLflow run records (metrics, tags)."""

    summary: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def report(stages: list[StageResult], digest: str, tune_skipped: bool) -> RunReport:
    """The run's summary from its stage results: record counts, the selected subset, the teacher's totals over
    every recycling stage, the evaluation (with its set's digest), the judge's quality, the skipped stages."""
    found = {s.stage: s for s in stages}
    loaded, chosen = found["load"], found["select"]
    scored = [s for s in stages if s.stage.startswith("selectit")][-1]  # the SelectIT stage run last
    summary: dict[str, Any] = {
        "records_in": loaded.metrics["records_out"], "rejected": loaded.metrics["rejected"],
        "duplicates": loaded.metrics["duplicates"], "selected": chosen.metrics["records_out"],
        "selected_digest": digest, "selected_alpaca": str(chosen.outputs.alpaca),
        "auroc.selectit_score": scored.metrics.get("auroc.selectit_score")}
    out = RunReport(summary, {"records_in": summary["records_in"], "records_selected": summary["selected"]},
                    {"selectune.selected_digest": digest})
    if summary["auroc.selectit_score"] is not None:
        out.metrics["auroc.selectit_score"] = summary["auroc.selectit_score"]
    for key in TEACHER_TOTALS:
        values = [s.metrics[f"teacher.{key}"] for s in stages if f"teacher.{key}" in s.metrics]
        if values:
            out.metrics[f"teacher.{key}"] = sum(values)
    if carved := found.get("evalset"):
        summary["eval_set_digest"] = out.tags["selectune.eval_set_digest"] = carved.outputs.digest
        summary["eval_records"] = carved.metrics["eval_records"]
    if tune_skipped:
        summary["tune"], out.tags["selectune.tune"] = NO_CHANGE, "no change"
    if tuned := found.get("tune"):
        evals = {k: v for k, v in tuned.metrics.items() if k.startswith("eval.")}
        summary.update(evals)
        out.metrics.update(evals)
        if tuned.outputs.model_uri:
            summary["model_uri"] = out.tags["selectune.model_uri"] = tuned.outputs.model_uri
    if evaluated := found.get("evaluate"):
        summary.update({k: v for k, v in evaluated.metrics.items() if k.startswith("eval.") and "ci_" not in k})
        out.metrics.update({k: v for k, v in evaluated.metrics.items() if k.startswith("eval.")})
        if evaluated.mlflow_run_id:
            out.tags["selectune.evaluate_run_id"] = evaluated.mlflow_run_id
    if promoted := found.get("promote"):
        o = promoted.outputs
        summary["promotion"] = out.tags["selectune.promotion"] = o.tag[:5000]
        summary["promotion_reason"], summary["champion"] = o.reason, o.champion
        out.tags["selectune.champion"] = o.champion
        out.metrics.update({k: v for k, v in promoted.metrics.items() if k.startswith("promote")})
    if judged := found.get("judge"):
        for key in JUDGE_SUMMARY:
            if key in judged.metrics:
                out.metrics[key] = summary[key] = judged.metrics[key]
        if judged.outputs.model_uri:
            summary["judge_uri"] = judged.outputs.model_uri
    summary["skipped_stages"] = ",".join(s.stage for s in stages if s.skipped)
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the markdown table of the flow run's Prefect artifact."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    return f"# selectune pipeline run\n\n| key | value |\n|---|---|\n{rows}\n"
