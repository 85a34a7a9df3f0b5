"""`selectune tune` (registered in selectune.cli as ``app.command("tune")(tune_cmd)``): train, evaluate, track
and register; and :func:`main`, the bare training entry behind ``python -m selectune.sft`` (torchrun-safe).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from selectune.commands import fail, run_tracked, stage_config
from selectune.config import TuneConfig


def main(argv: list[str] | None = None) -> None:
    """``python -m selectune.sft``: train and save the adapter (no MLflow); under torchrun / accelerate launch
    every process runs this and rank 0 writes and prints."""
    from selectune.sft import train

    ap = argparse.ArgumentParser(prog="python -m selectune.sft", description="LoRA instruction tuning")
    ap.add_argument("--data", required=True, help="Selected records (Parquet or any supported data format)")
    ap.add_argument("--output", required=True, help="Output folder: adapter/, checkpoints/ [, merged/]")
    ap.add_argument("--base", default=None, help="Base model alias/folder/hub id (default: the config's)")
    ap.add_argument("--config", default=None, help="YAML: a pipeline recipe (its tune: section) or TuneConfig")
    ap.add_argument("--max-steps", type=int, default=None, help="Stop after N optimizer steps")
    a = ap.parse_args(argv)
    cfg = stage_config(TuneConfig, "tune", a.config, base=a.base, max_steps=a.max_steps)
    res = train(cfg, a.data, a.output)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"adapter": str(res.adapter_dir), **res.metrics}, indent=2))


def tune_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="Selected records (Parquet or any supported format)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder; the stage writes OUTPUT/tune/")],
    base: Annotated[str | None, typer.Option(help="Base model alias/folder/hub id (default: the config's, "
                                             "gemma-3-270m)")] = None,
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
        cfg = stage_config(TuneConfig, "tune", config, base=base, max_steps=max_steps, register_as=register_as)
    except (ValidationError, OSError, yaml.YAMLError) as err:
        fail(f"{config}: {err}")
    from selectune.tune_stage import tune_stage

    run_tracked("tune", data, output, experiment, lambda out, run_id: tune_stage(cfg, data, out, run_id))
