"""Stage commands for the `selectune` CLI (registered in selectune.cli), one module per stage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

C = TypeVar("C", bound="BaseModel")


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def stage_config(cls: type[C], section: str, path: str | Path | None, **options: Any) -> C:
    """A stage config from a YAML file, either a pipeline recipe (its ``section``) or the stage's fields alone,
    with the command-line options that were given (None: not given) on top; ``register_as=""`` means do not
    register. Raises OSError, yaml.YAMLError or pydantic.ValidationError."""
    import yaml

    from selectune.config import PipelineConfig

    raw = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}
    base = getattr(PipelineConfig.model_validate(raw), section) if section in raw else cls.model_validate(raw)
    cfg = cls.model_validate({**base.model_dump(), **{k: v for k, v in options.items() if v is not None}})
    if getattr(cfg, "register_as", None) == "":
        cfg.register_as = None  # type: ignore[attr-defined]
    return cfg


def run_tracked(kind: str, data: str, output: Path, experiment: str, stage: Callable[[Path, str], Any]) -> None:
    """Run one stage outside the pipeline flow, as its own MLflow run, and print its outputs and metrics."""
    if not Path(data).exists():
        fail(f"--data {data}: no such file or folder")
    import mlflow

    from selectune import tracking

    tracking.setup(experiment)
    output.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(run_name=f"{kind}-{output.resolve().name}", tags={"selectune.run_dir": str(output)}) as run:
        try:
            res = stage(output, run.info.run_id)
        except (ValueError, OSError) as err:
            fail(str(err))
    typer.echo(json.dumps({"mlflow_run_id": run.info.run_id, **res.outputs_json(), **res.metrics}, indent=2))
