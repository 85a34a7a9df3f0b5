"""Stage commands for the `selectune` CLI (registered in selectune.cli), one module per stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def run_tracked(kind: str, data: str, output: Path, experiment: str, stage: Callable[[Path, str], Any]) -> None:
    """Run one stage outside the pipeline flow, as its own MLflow run, and print its outputs and metrics."""
    if not Path(data).exists():
        fail(f"--data {data}: no such file or folder")
    import mlflow

    from selectune.tracking import runs

    runs.setup(experiment)
    output.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name=f"{kind}-{output.resolve().name}", tags={"selectune.run_dir": str(output)}) as run:
        try:
            res = stage(output, run.info.run_id)
        except (ValueError, OSError) as err:
            fail(str(err))
    typer.echo(json.dumps({"mlflow_run_id": run.info.run_id, **res.outputs_json(), **res.metrics}, indent=2))
