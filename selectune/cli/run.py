"""`selectune run` (the pipeline flow under Prefect) and `selectune compare` (runs side by side from MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from selectune.cli.common import fail
from selectune.core.settings import disable_telemetry


def run_cmd(config: Annotated[Path | None, typer.Option(help="YAML recipe (PipelineConfig)")] = None,
            limit: Annotated[int | None, typer.Option(help="Only the first N records")] = None,
            run_dir: Annotated[str | None, typer.Option(help="Output folder for this run")] = None) -> None:
    """Run the curation flow (Prefect; no server needed) and print where outputs and MLflow runs are."""
    disable_telemetry()
    import yaml
    from pydantic import ValidationError

    from selectune.config import load_config

    try:
        cfg = load_config(config)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    if limit is not None:
        cfg.data.limit = limit
    if run_dir is not None:
        cfg.run_dir = run_dir
    from flows.curate import run_pipeline

    summary = run_pipeline(cfg)
    typer.echo(json.dumps(summary, indent=2, default=str))
    uri = summary["mlflow_tracking_uri"]
    typer.echo(f"\noutputs: {summary['run_dir']}\nMLflow run {summary['mlflow_run_id']} in {uri}\n"
               f"browse: mlflow ui --backend-store-uri {uri}")


def compare_cmd(run_ids: Annotated[list[str] | None, typer.Argument(help="MLflow parent run ids")] = None,
                experiment: Annotated[str | None, typer.Option(help="Every pipeline run of this experiment")] = None,
                html: Annotated[Path, typer.Option(help="HTML report with plots")] = Path("compare.html")) -> None:
    """Pipeline runs side by side (strategy, subset, scorers, held-out loss, judge, time, teacher cost)."""
    disable_telemetry()
    from selectune.tracking.compare import collect, html_report, text_table

    try:
        df = collect(run_ids, experiment)
    except Exception as err:  # unknown run id / experiment, unreachable server
        fail(str(err))
    if df.empty:
        fail("no pipeline runs found")
    typer.echo(text_table(df))
    typer.echo(f"\nreport: {html_report(df, html, experiment or 'selectune runs')}")
