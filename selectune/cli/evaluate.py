"""`selectune evaluate`: the evaluate stage on its own, as its own MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selectune.cli.common import fail, option, run_tracked
from selectune.evaluation.config import EvalConfig


def evaluate_cmd(
    eval_set: Annotated[str, typer.Option("--eval-set", help="Evaluation records with reference answers (any data "
                                          "format), e.g. <run_dir>/evalset/eval.parquet")],
    model: Annotated[list[str], typer.Option(help="NAME=REF, repeat; the first is the candidate compared with each "
                                             "other one (REF: alias, folder, adapter folder or models:/ URI)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the stage writes OUTPUT/evaluate/")],
    config: Annotated[Path | None, typer.Option(help="YAML: a pipeline recipe (its eval: section) or EvalConfig "
                                                "fields")] = None,
    judge: Annotated[str | None, option(EvalConfig, "judge")] = None,
    judge_base_url: Annotated[str | None, option(EvalConfig, "judge_base_url")] = None,
    lm_eval_task: Annotated[list[str] | None, typer.Option(help="lm-evaluation-harness task; repeat")] = None,
    lm_eval_include_path: Annotated[str | None, option(EvalConfig, "lm_eval_include_path")] = None,
    lm_eval_limit: Annotated[int | None, option(EvalConfig, "lm_eval_limit")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "selectune",
) -> None:
    """Measure models on the same evaluation items: reference loss, lm-eval tasks, a judge's win-rate, with paired
    bootstrap intervals."""
    import yaml
    from pydantic import ValidationError

    from selectune.core.config import load_stage_config
    from selectune.core.settings import disable_telemetry

    disable_telemetry()
    try:
        models = dict(item.split("=", 1) for item in model)
    except ValueError:
        fail(f"--model expects NAME=REF, got {model}")
    try:
        cfg = load_stage_config(EvalConfig, "eval", config, judge=judge, judge_base_url=judge_base_url,
                                lm_eval_tasks=lm_eval_task or None, lm_eval_include_path=lm_eval_include_path,
                                lm_eval_limit=lm_eval_limit)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    from selectune.evaluation.stage import evaluate_stage

    run_tracked("evaluate", eval_set, output, experiment,
                lambda out, run_id: evaluate_stage(cfg, eval_set, models, out, run_id))
