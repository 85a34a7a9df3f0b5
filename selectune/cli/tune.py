"""`selectune tune`: train, evaluate, track and register (the tune stage as its own MLflow run). The bare training
entry for several GPUs is ``python -m selectune.tuning``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selectune.cli.common import fail, option, run_tracked
from selectune.core.config import load_stage_config
from selectune.tuning.config import TuneConfig


def tune_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="Selected records (Parquet or any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the stage writes OUTPUT/tune/")],
    base: Annotated[str | None, option(TuneConfig, "base")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML: a pipeline recipe (its tune: section) or "
                                                "TuneConfig fields")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps")] = None,
    register_as: Annotated[str | None, typer.Option(help="Model Registry name (default: the config's; '' "
                                                    "skips registration)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "selectune",
) -> None:
    """Train a LoRA adapter, evaluate base vs tuned, log to MLflow and register the model.

    Re-running with the same --output resumes from the last checkpoint."""
    import yaml
    from pydantic import ValidationError

    from selectune.core.settings import disable_telemetry

    disable_telemetry()
    try:
        cfg = load_stage_config(TuneConfig, "tune", config, base=base, max_steps=max_steps, register_as=register_as)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    from selectune.tuning.stage import tune_stage

    run_tracked("tune", data, output, experiment, lambda out, run_id: tune_stage(cfg, data, out, run_id))
