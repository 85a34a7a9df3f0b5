"""How every stage runs: it writes ``<run_dir>/<stage>/``, its manifest last, and logs an MLflow child run. A stage
whose manifest matches its config and inputs is skipped (datatrove-style completion markers), handing back the
outputs the manifest recorded. Each stage declares its outputs as a small frozen dataclass of paths and values
(``LoadOutputs(records=...)``); :class:`StageResult` carries them typed, so a flow reads attributes, not keys."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from selectune.tracking import runs

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)
Outputs = TypeVar("Outputs")  # a stage's outputs dataclass


@dataclass(frozen=True)
class StageResult(Generic[Outputs]):
    """What a stage hands to the next: its outputs (typed), its metrics, and whether it was skipped."""

    stage: str
    dir: Path
    outputs: Outputs
    metrics: dict[str, float]
    skipped: bool
    mlflow_run_id: str | None = None

    def outputs_json(self) -> dict[str, Any]:
        """The outputs as JSON values (paths as strings), as the manifest records them."""
        return TypeAdapter(type(self.outputs)).dump_python(self.outputs, mode="json")


def stage_key(config: BaseModel, inputs: dict[str, str]) -> str:
    """What a stage's outputs depend on: its config (less the fields declared ``runtime``) and its inputs' digests
    (files, model fingerprints, prompt files)."""
    from selectune.core.config import output_fields

    blob = json.dumps({"config": output_fields(config), "inputs": inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def write_manifest(stage_dir: Path, data: dict[str, Any]) -> None:
    """Atomic: written to a temporary name, then renamed, so a partial manifest never exists."""
    tmp = stage_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(stage_dir / MANIFEST)


def missing_outputs(outputs: Any) -> list[str]:
    """The output files or folders a stage's outputs name that do not exist."""
    import dataclasses

    return [f"{f.name} {value}" for f in dataclasses.fields(outputs)
            if isinstance(value := getattr(outputs, f.name), Path) and not value.exists()]


def run_stage(name: str, run_dir: str | Path, config: BaseModel, inputs: dict[str, str],
              body: Callable[[Path], tuple[Outputs, dict[str, float]]], outputs_type: type[Outputs],
              parent_run_id: str | None = None, extra_params: dict[str, Any] | None = None) -> StageResult[Outputs]:
    """Run ``body(stage_dir) -> (outputs, metrics)`` unless a matching manifest says it already ran.

    With ``parent_run_id`` the stage is an MLflow child run (FAILED with the error if body raises).
    """
    adapter = TypeAdapter(outputs_type)
    stage_dir = Path(run_dir) / name
    key = stage_key(config, inputs)
    manifest = read_manifest(stage_dir)
    skipped = manifest is not None and manifest.get("key") == key
    if skipped and (gone := missing_outputs(adapter.validate_python(manifest["outputs"]))):  # type: ignore[index]
        log.warning("%s: outputs recorded in the manifest are gone (%s); running the stage again", stage_dir,
                    ", ".join(gone))
        skipped = False
    ctx: Any = nullcontext(None)
    if parent_run_id is not None:
        import mlflow

        ctx = mlflow.start_run(run_name=name, parent_run_id=parent_run_id, nested=True,
                               tags={"selectune.stage": name, "selectune.skipped": str(skipped).lower()})
    with ctx as run:
        if run is not None:
            import mlflow

            params = {f"{name}.{k}": v for k, v in runs.flatten(config.model_dump(mode="json")).items()}
            params.update({f"{name}.input.{k}": v for k, v in inputs.items()})
            mlflow.log_params(runs.clean_params({**params, **(extra_params or {})}))
        if skipped:
            outputs, metrics = adapter.validate_python(manifest["outputs"]), manifest["metrics"]  # type: ignore[index]
        else:
            stage_dir.mkdir(parents=True, exist_ok=True)
            (stage_dir / MANIFEST).unlink(missing_ok=True)
            start = time.perf_counter()
            try:
                outputs, metrics = body(stage_dir)
            except Exception as err:
                if run is not None:  # the run ends FAILED; keep the reason where people look
                    import mlflow

                    mlflow.set_tag("selectune.error", f"{type(err).__name__}: {err}"[:5000])
                raise
            metrics["seconds"] = round(time.perf_counter() - start, 3)
            write_manifest(stage_dir, {"stage": name, "key": key, "config": config.model_dump(mode="json"),
                                       "inputs": inputs, "outputs": adapter.dump_python(outputs, mode="json"),
                                       "metrics": metrics,
                                       "finished_at": datetime.now(UTC).isoformat()})
        if run is not None:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
    return StageResult(name, stage_dir, outputs, metrics, skipped, run.info.run_id if run else None)
