"""`selectune run` (the pipeline flow under Prefect) and `selectune compare` (runs side by side from MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from selectune.cli.common import VLLMUrl, engine, fail
from selectune.core.settings import disable_telemetry


def run_cmd(config: Annotated[Path | None, typer.Option(help="YAML recipe (PipelineConfig)")] = None,
            limit: Annotated[int | None, typer.Option(help="Only the first N records")] = None,
            run_dir: Annotated[str | None, typer.Option(help="Output folder for this run")] = None,
            backend: Annotated[Literal["hf", "vllm"] | None, typer.Option(
                help="Engine of every local model (raters, IFD students, a local teacher, the judge's sampling, "
                     "the evaluation's greedy answers); "
                     "vllm needs a CUDA GPU and pip install 'selectune[vllm]', or --vllm-url")] = None,
            vllm_url: VLLMUrl = None) -> None:
    """Run the curation flow (Prefect; no server needed) and print where outputs and MLflow runs are."""
    disable_telemetry()
    import yaml
    from pydantic import ValidationError

    from selectune.config import load_config

    try:
        cfg = load_config(config, **engine(backend, vllm_url))
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    if limit is not None:
        cfg.data.limit = limit
    if run_dir is not None:
        cfg.run_dir = run_dir
    from selectune.cli.preflight import check
    from selectune.core.rundir import RunDirLocked, holder

    if cfg.run_dir and (pid := holder(cfg.run_dir)):  # before any server or model starts
        fail(f"run dir {cfg.run_dir} is in use by another run ({pid}); wait for it to finish or choose another "
             "--run-dir")
    if problems := check(cfg):
        fail("\n  ".join(["not started: a service the run needs does not answer", *problems]))
    from flows.curate import run_pipeline
    from selectune.cli.server import prefect_api

    try:
        with prefect_api():  # a temporary Prefect server dies with this command, even on SIGKILL
            summary = run_pipeline(cfg)
    except RunDirLocked as err:  # taken between the check above and the flow's own lock
        fail(str(err))
    typer.echo(json.dumps(summary, indent=2, default=str))
    if "promotion" in summary:
        typer.echo(f"\npromotion of {summary.get('model_uri', 'the latest version')}: {summary['promotion_reason']} "
                   f"({summary['promotion'].split(':')[0]}); champion now {summary['champion']}")
    uri = summary["mlflow_tracking_uri"]
    typer.echo(f"\noutputs: {summary['run_dir']}\nMLflow run {summary['mlflow_run_id']} in {uri}\n"
               f"browse: mlflow ui --backend-store-uri {uri}")


def compare_cmd(run_ids: Annotated[list[str] | None, typer.Argument(help="MLflow pipeline run ids")] = None,
                experiment: Annotated[str | None, typer.Option(help="Every pipeline run of this experiment")] = None,
                baseline: Annotated[str | None, typer.Option(help="Run id: every other run's loss and win-rate "
                                                             "minus this run's, on the same items, with 95% "
                                                             "paired bootstrap intervals")] = None,
                html: Annotated[Path, typer.Option(help="HTML report with plots")] = Path("compare.html")) -> None:
    """Pipeline runs side by side: strategy, subset, evaluation with intervals, judge, time, teacher cost.
    Evaluation numbers compare only within one evaluation set (row 'eval set')."""
    disable_telemetry()
    from selectune.tracking.compare import against_baseline, collect, eval_sets, html_report, text_table

    try:
        df = collect(run_ids, experiment)
        if df.empty:
            fail("no pipeline runs found")
        if baseline:
            df = against_baseline(df, baseline)
    except typer.Exit:
        raise
    except Exception as err:  # unknown run id / experiment, unreachable server
        fail(str(err))
    typer.echo(text_table(df))
    sets = eval_sets(df)
    if len(sets) > 1:
        groups = "; ".join(f"{d or 'no evaluation'}: {len(r)} run(s)" for d, r in sets.items())
        typer.secho(f"\nnote: these runs were evaluated on {len(sets)} different evaluation sets ({groups}); "
                    "evaluation numbers are comparable only within one set", fg="yellow")
    typer.echo(f"\nreport: {html_report(df, html, experiment or 'selectune runs')}")


def experiment_cmd(config: Annotated[Path, typer.Option(help="Experiment recipe: a pipeline recipe with arms: and "
                                                        "seeds:")],
                   run_dir: Annotated[str | None, typer.Option(help="Output folder (one sub-folder per run)")] = None,
                   name: Annotated[str | None, typer.Option(help="Experiment name (default: the recipe's file "
                                                            "name)")] = None) -> None:
    """Run every arm x seed of an experiment recipe and compare the arms on the same evaluation items."""
    disable_telemetry()
    import yaml
    from pydantic import ValidationError

    from selectune.experiment import expand, load_experiment

    try:
        base, grid = load_experiment(config)
        expand(base, grid, run_dir or "runs")  # refuse a grid whose runs would not be comparable, before any work
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    from flows.experiment import experiment
    from selectune.cli.preflight import check
    from selectune.cli.server import prefect_api

    if problems := check(base):
        fail("\n  ".join(["not started: a service the experiment needs does not answer", *problems]))
    with prefect_api():
        res = experiment(base, grid, name or config.stem, run_dir)
    typer.echo(f"\noutputs: {res['run_dir']}\nMLflow run {res['mlflow_run_id']} in {res['mlflow_tracking_uri']}")
