"""`selectune models ...` and `selectune data validate`: the embedded models, the registry's champion alias by hand,
and the input checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from selectune.cli.common import OnInvalid, fail

models_app = typer.Typer(help="Embedded default models; registered versions' champion alias.", no_args_is_help=True)
data_app = typer.Typer(help="Instruction data checks.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """Aliases, sources, sizes, parameter counts and whether each is cached."""
    from selectune.core.models import list_models

    rows = list_models()
    typer.echo(f"{'alias':24} {'kind':16} {'source':32} {'cached':7} {'size MB':>8} {'params':>12}")
    for r in rows:
        params = f"{r['parameters']:,}" if r["parameters"] else "-"
        typer.echo(f"{r['alias']:24} {r['kind']:16} {r['source']:32} {'yes' if r['cached'] else 'no':7} "
                   f"{r['size_mb']:>8} {params:>12}")


@models_app.command("pull")
def models_pull(alias: str) -> None:
    """Prepare an alias: convert its GGUF once to safetensors under $SELECTUNE_HOME/models/."""
    from selectune.core.models import ALIASES, prepare

    if alias not in ALIASES:
        fail(f"unknown alias {alias!r}; known: {', '.join(ALIASES)}")
    typer.echo(f"{alias}: {prepare(alias)}")


@models_app.command("promote")
def models_promote(name: Annotated[str, typer.Argument(help="Registered model name")],
                   version: Annotated[int, typer.Argument(help="Version to make champion")]) -> None:
    """Make VERSION the champion by hand (the alias moves; the previous champion stays in the history)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from selectune.tracking import registry

    before = _champion(name)
    try:
        registry.set_champion(name, version)
        MlflowClient().set_model_version_tag(name, str(version), "selectune.promotion", "promoted: by hand")
    except MlflowException as err:
        fail(f"models:/{name}/{version}: {err.message}")
    typer.echo(f"{name}: champion {before} -> {version}")


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Argument(help="Registered model name")]) -> None:
    """Give the champion alias back to the version that held it before the current one."""
    from mlflow.exceptions import MlflowException

    from selectune.tracking import registry

    before = _champion(name)
    try:
        after = registry.rollback(name)
    except MlflowException as err:
        fail(f"model {name!r}: {err.message}")
    except ValueError as err:
        fail(str(err))
    typer.echo(f"{name}: champion {before} -> {after}")


def _champion(name: str) -> str:
    from selectune.tracking import registry

    return str(registry.alias_version(name, registry.CHAMPION) or "none")


@data_app.command("validate")
def data_validate(input: Annotated[str, typer.Option("--input", "-i", help="Dataset file or folder")],
                  on_invalid: Annotated[OnInvalid, typer.Option(help="error: stop at the first bad row; skip: "
                                                                "write rejected rows to a side file")] = "error",
                  format: Annotated[str | None, typer.Option(help="Override the detected format")] = None) -> None:
    """Run the dataset checks and print a summary (exit 2 on errors in the default mode). Rows are checked one
    at a time and not kept: memory stays flat for JSON Lines and Parquet inputs of any size."""
    from selectune.data.readers import DataValidationError
    from selectune.data.records import scan_records, write_rejections

    try:
        scan = scan_records(input, lambda record: None, fmt=format, on_invalid=on_invalid)
    except DataValidationError as err:
        fail(str(err))
    summary = scan.summary()
    if scan.rejected:
        summary["rejected_file"] = str(write_rejections(scan.rejected, side_file(input)))
    typer.echo(json.dumps(summary, indent=2))


def side_file(input: str) -> Path:
    """Where the rejected rows of ``input`` go: beside it (a hub id's: in the working directory)."""
    local = Path(input)
    folder = local.parent if local.exists() else Path.cwd()
    return folder / (local.name.replace(":", "_") + ".rejected.jsonl")


@data_app.command("get")
def data_get(digest: Annotated[str | None, typer.Argument(help="Dataset version digest (MLflow dataset digest)")]
             = None,
             output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it (.parquet)")] = Path(
                 "dataset.parquet"),
             model: Annotated[str | None, typer.Option(help="Instead of DIGEST: the dataset of this registered model "
                                                       "version (models:/NAME/VERSION or models:/NAME@ALIAS)")] = None,
             role: Annotated[str, typer.Option(help="With --model: training or evaluation")] = "training") -> None:
    """Restore a stored dataset version, byte-identical, from the MLflow artifact store."""
    from mlflow.exceptions import MlflowException

    from selectune.tracking import datasets

    if (digest is None) == (model is None):
        fail("give a DIGEST or --model, not both")
    try:
        digest = digest or datasets.model_dataset(model, role)  # type: ignore[arg-type]
        path = datasets.get(digest, output)
    except (ValueError, MlflowException) as err:
        fail(str(getattr(err, "message", err)))
    typer.echo(f"{digest}: {path}")


@data_app.command("add")
def data_add(input: Annotated[str, typer.Option("--input", "-i", help="New records (any supported format)")],
             into: Annotated[Path, typer.Option(help="Dataset folder to append to (created if missing)")],
             on_invalid: Annotated[OnInvalid, typer.Option(help="error: add nothing when a row is bad; skip: add "
                                                           "the valid rows, bad ones to a side file")] = "error",
             format: Annotated[str | None, typer.Option(help="Override the detected format")] = None,
             event: Annotated[bool, typer.Option(help="Emit selectune.dataset.updated to the Prefect API "
                                                 "(when one is configured)")] = True) -> None:
    """Validate and deduplicate new records and append them to a dataset folder as one new part file."""
    from selectune.data.parts import add_part
    from selectune.data.readers import DataValidationError
    from selectune.data.records import load_records, write_rejections

    try:
        res = load_records(input, fmt=format, on_invalid=on_invalid)
    except DataValidationError as err:
        fail(str(err))
    added = add_part(res.records, into)
    summary: dict[str, object] = {**added.payload(), "rows_read": res.rows_read, "rejected": len(res.rejected),
                                  "duplicates_in_input": len(res.duplicates)}
    if res.rejected:  # beside the input, as `data validate` writes it
        summary["rejected_file"] = str(write_rejections(res.rejected, side_file(input)))
    summary["event"] = emit_updated(added) if event and added.added else None
    typer.echo(json.dumps(summary, indent=2))


def emit_updated(added: object) -> str | None:
    """Send the dataset's update event to the configured Prefect API; its id, or None without an API."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    from selectune.data.parts import EVENT, event_resource

    if not PREFECT_API_URL.value():
        return None
    sent = emit_event(EVENT, resource=event_resource(added.folder), payload=added.payload())  # type: ignore[attr-defined]
    EventsWorker.drain_all(timeout=30)  # a short-lived command: deliver before exiting
    return str(sent.id) if sent else None
