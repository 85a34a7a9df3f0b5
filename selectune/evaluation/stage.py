"""The evaluation stages: ``evalset`` carves the fixed evaluation set off the loaded records before anything else
(``<run_dir>/evalset/``: pool.parquet for the rest of the pipeline, eval.parquet), and ``evaluate`` measures the
compared models on it after tuning (``<run_dir>/evaluate/``: items.parquet, one row per item x model x metric,
and summary.json, the aggregates with their paired bootstrap intervals)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.core.digests import file_digest
from selectune.data.records import load_records, write_parquet
from selectune.evaluation.config import EvalConfig
from selectune.evaluation.evalset import apart, carve, eval_set_digest
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs


@dataclass(frozen=True)
class EvalSetOutputs:
    pool: Path  # the records the pipeline may score, select and train on
    eval_set: Path  # the evaluation items (with references)
    digest: str  # the evaluation set's identity (tag selectune.eval_set_digest)


@dataclass(frozen=True)
class EvalOutputs:
    items: Path  # one row per item x model x metric, with the answers
    summary: Path  # aggregates and paired intervals (the MLflow metrics)


def evalset_stage(cfg: EvalConfig, records: str | Path, run_dir: str | Path,
                  parent_run_id: str | None = None) -> StageResult[EvalSetOutputs]:
    """Split the evaluation set off ``records``: the id hash band, or ``cfg.heldout`` (then its ids leave the pool)."""
    inputs = {"records": file_digest(records)}
    if cfg.heldout:
        inputs["heldout"] = file_digest(cfg.heldout)

    def body(out: Path) -> tuple[EvalSetOutputs, dict[str, float]]:
        df = pd.read_parquet(records)
        if cfg.heldout:
            evaluated = load_records(cfg.heldout).records
            pool, removed = apart(df, evaluated)
            m = {"overlap_removed": removed}
        else:
            pool, evaluated, reserved = carve(df, cfg.fraction, cfg.max_records)
            m = {"reserved": reserved}
        if evaluated.empty:
            raise ValueError(f"the evaluation set is empty ({len(df)} records, eval.fraction {cfg.fraction}); "
                             "raise eval.fraction or give eval.heldout")
        digest = eval_set_digest(evaluated)
        outputs = EvalSetOutputs(write_parquet(pool, out / "pool.parquet"),
                                 write_parquet(evaluated, out / "eval.parquet"), digest)
        if parent_run_id:
            runs.log_dataset(evaluated, cfg.heldout or str(records), "eval_set", "evaluation", digest=digest)
            import mlflow

            mlflow.set_tag("selectune.eval_set_digest", digest)
        return outputs, {"records_in": len(df), "pool_records": len(pool), "eval_records": len(evaluated), **m}

    return run_stage("evalset", run_dir, cfg.carving(), inputs, body, EvalSetOutputs, parent_run_id)


def load_judge(cfg: EvalConfig, api_key: str | None = None) -> Any:
    """The configured win-rate judge (see :mod:`selectune.evaluation.winrate`), or None without one."""
    from selectune.evaluation.winrate import APIJudge, LMJudge, SelfJJudge

    if not cfg.judge:
        return None
    if cfg.judge.startswith("openai:"):
        from selectune.core.settings import home
        from selectune.reflection.config import TeacherConfig
        from selectune.reflection.teachers.base import make_teacher

        teacher = TeacherConfig(backend="openai", model=cfg.judge.removeprefix("openai:"), base_url=cfg.judge_base_url,
                                api_key_env=cfg.judge_api_key_env, temperature=0.0, max_new_tokens=16)
        return APIJudge(make_teacher(teacher, home() / "cache" / "teacher.sqlite", api_key))
    from selectune.core.lora import read_meta
    from selectune.tracking.registry import adapter_folder, load_model

    folder = adapter_folder(cfg.judge)
    kind = cfg.judge_kind if cfg.judge_kind != "auto" else (
        "self-j" if folder is not None and read_meta(folder).get("kind") == "self-j-judge" else "pairwise")
    if kind == "self-j":
        from selectune.judge.infer import load_judge as load_selfj

        return SelfJJudge(load_selfj(cfg.judge), cfg.batch_size)
    lm = load_model(cfg.judge)
    return LMJudge(lm.model, lm.tokenizer, lm.template, cfg.batch_size)


def evaluate_stage(cfg: EvalConfig, eval_set: str | Path, models: dict[str, str], run_dir: str | Path,
                   parent_run_id: str | None = None, api_key: str | None = None) -> StageResult[EvalOutputs]:
    """Measure ``models`` ({name: reference}, the candidate first, e.g. tuned, base, champion) on ``eval_set``."""
    from selectune.tracking.registry import model_digest

    if len(models) < 1:
        raise ValueError("evaluate: no model to evaluate")
    inputs = {"eval_set": file_digest(eval_set), **{f"model.{k}": model_digest(v) for k, v in models.items()}}
    if cfg.judge and not cfg.judge.startswith("openai:"):
        inputs["judge"] = model_digest(cfg.judge)

    def body(out: Path) -> tuple[EvalOutputs, dict[str, float]]:
        from selectune.evaluation.measure import measure
        from selectune.evaluation.report import deltas_figure, summarize

        items = load_records(eval_set).records
        judge = load_judge(cfg, api_key)
        res = measure(cfg, items, models, judge)
        metrics = summarize(res.items, list(models), cfg, res.parse_failures)
        items_path = write_parquet(res.items, out / "items.parquet")
        summary = out / "summary.json"
        summary.write_text(json.dumps({"models": models, "metrics": metrics, "lm_eval": res.lm_eval}, indent=2))
        if parent_run_id:
            import mlflow

            mlflow.log_table(res.items, "evaluate/items.json")
            mlflow.log_artifact(str(items_path), "evaluate")
            if (fig := deltas_figure(metrics)) is not None:
                runs.log_figure(fig, "evaluate/deltas.png")
        return EvalOutputs(items_path, summary), metrics

    params = {f"evaluate.model.{k}": v for k, v in models.items()}
    return run_stage("evaluate", run_dir, cfg, inputs, body, EvalOutputs, parent_run_id, params)
