"""What every command shares: the error exit, options whose help and defaults come from the stage configs (so
the command line cannot drift from the recipes), and running one stage as its own MLflow run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel

Dtype = Literal["auto", "float32", "bfloat16"]
OnInvalid = Literal["error", "skip"]
VLLMUrl = Annotated[str | None, typer.Option("--vllm-url", help="A running vLLM server (vllm serve MODEL), e.g. "
                                             "http://127.0.0.1:8000/v1: the vLLM backend's requests go there "
                                             "(implies --backend vllm; this machine then needs neither vLLM nor a "
                                             "GPU)", show_default=False)]


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def engine(backend: str | None, vllm_url: str | None) -> dict[str, Any]:
    """The config fields ``--backend`` and ``--vllm-url`` give (a server URL implies the vLLM backend)."""
    if vllm_url is None:
        return {"backend": backend}
    if backend == "hf":
        fail("--vllm-url needs the vLLM backend, not --backend hf")
    return {"backend": "vllm", "vllm": {"base_url": vllm_url}}


def field_help(cls: type[BaseModel], name: str, default: bool = True) -> str:
    """A config field's description, and its default, as command-line help."""
    field = cls.model_fields[name]
    text = field.description or name
    return f"{text} (config default: {field.default})" if default else text


def option(cls: type[BaseModel], name: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option documented by config field ``cls.name``. Declare the parameter ``T | None = None``: a value
    not given stays None and the config's own default applies (see :func:`build`)."""
    return typer.Option(*flags, help=field_help(cls, name), show_default=False, **kwargs)


def build(cls: type[BaseModel], **given: Any) -> Any:
    """The config from the options that were given (None: not given, the config's default applies); a bad value
    exits with the validation message."""
    from pydantic import ValidationError

    try:
        return cls.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        fail(f"bad option: {err}")


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


def load_records(input: str, on_invalid: str = "error", limit: int | None = None) -> Any:
    """Records from any supported data file, or exit with the validation error (file, row, field)."""
    from selectune.data.readers import DataValidationError
    from selectune.data.records import load_records as load

    try:
        df = load(input, on_invalid=on_invalid).records  # type: ignore[arg-type]
    except DataValidationError as err:
        fail(str(err))
    return df.head(limit) if limit is not None else df
