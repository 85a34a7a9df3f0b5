"""MLflow runs: a local SQLite store by default (artifacts beside it), parameters, datasets with our own content
digests, figures."""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.core.digests import table_digest
from selectune.core.settings import disable_telemetry


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else ./mlflow.db (SQLite) in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """For a SQLite store, artifacts live in a sibling ``mlartifacts/`` folder (never ./mlruns)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize first use of a SQLite store: concurrent runs would otherwise race on its schema migration
    and on creating the same experiment."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def experiment_id(experiment: str) -> str:
    """The id of an MLflow experiment in the store (created, with an explicit artifact location, on first use);
    the active experiment is left as it is."""
    disable_telemetry()
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is not None:
            return exp.experiment_id
        root = artifact_root(uri)
        location = (root / experiment).resolve().as_uri() if root else None
        return mlflow.create_experiment(experiment, artifact_location=location)


def setup(experiment: str) -> str:
    """Point MLflow at the store and make ``experiment`` (created on first use) the active one; returns its id."""
    import mlflow

    exp_id = experiment_id(experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def scalar_columns(df: pd.DataFrame) -> list[str]:
    """Columns whose cells are scalars (list-valued score details are left out of dataset logs)."""
    return [c for c in df.columns if not len(df) or not isinstance(df[c].iloc[0], list | tuple | dict)
            and getattr(df[c].iloc[0], "ndim", 0) == 0]


def log_dataset(df: pd.DataFrame, source: str, name: str, context: str, digest_columns: list[str] | None = None,
                digest: str | None = None) -> str:
    """mlflow.log_input of a table with our own content digest, the table itself stored once as a dataset version
    (:mod:`selectune.tracking.datasets`): the input's tag ``stored`` and, where MLflow can name that store as a
    dataset source (not behind an ``mlflow-artifacts:`` proxy), its ``source`` point there; ``source`` is kept as
    the tag ``origin``. ``digest`` overrides the content digest (a stage's own identity of the table). Returns the
    digest."""
    from selectune.tracking import datasets

    d = digest or table_digest(df, digest_columns)
    stored = datasets.store(df, d)
    _log_input(df, len(df), stored, source, name, context, d)
    return d


def log_dataset_file(path: str | Path, source: str, name: str, context: str,
                     digest_columns: list[str] | None = None) -> str:
    """:func:`log_dataset` of a Parquet file without reading it whole: the digest is computed chunk by chunk, the
    file is stored as it is, and MLflow's schema comes from its first rows (its profile counts every row). Returns
    the digest, the same as :func:`log_dataset` gives for the file's table."""
    import pyarrow.parquet as pq

    from selectune.core.digests import file_table_digest
    from selectune.tracking import datasets

    d = file_table_digest(path, digest_columns)
    stored = datasets.store_file(path, d)
    pf = pq.ParquetFile(path)
    head = next(pf.iter_batches(batch_size=1000), None)
    head = pd.read_parquet(path) if head is None else head.to_pandas()
    _log_input(head, pf.metadata.num_rows, stored, source, name, context, d)
    return d


def _log_input(sample: pd.DataFrame, rows: int, stored: str, source: str, name: str, context: str,
               digest: str) -> None:
    """mlflow.log_input of a table of ``rows`` rows whose schema ``sample`` shows, with the dataset tags."""
    import json

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():  # MLflow's notes on ambiguous local sources and integer columns
        warnings.simplefilter("ignore", UserWarning)
        try:
            resolve_dataset_source(stored)
        except MlflowException:  # a proxied store (mlflow-artifacts:/) is no dataset source MLflow knows
            stored_source = str(source)
        else:
            stored_source = stored
        cols = scalar_columns(sample)
        entity = mlflow.data.from_pandas(sample[cols], source=stored_source, name=name, digest=digest)\
            ._to_mlflow_entity()
    profile = json.dumps({"num_rows": rows, "num_elements": rows * len(cols)})
    entity = Dataset(entity.name, entity.digest, entity.source_type, entity.source, entity.schema, profile)
    tags = {"rows": str(rows), "origin": str(source)[:5000], "stored": stored, MLFLOW_DATASET_CONTEXT: context}
    run = mlflow.active_run() or mlflow.start_run()
    MlflowClient().log_inputs(run.info.run_id, [DatasetInput(entity, [InputTag(k, v) for k, v in tags.items()])])


def log_figure(fig: Any, artifact_file: str) -> None:
    """Log a Figure built by selectune.core.plots (not pyplot-managed, so nothing to close)."""
    import mlflow

    mlflow.log_figure(fig, artifact_file)


def clean_params(params: dict[str, Any]) -> dict[str, str]:
    """MLflow params are strings of at most 6000 characters; None becomes an empty string."""
    return {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {"a.b": v} for MLflow parameters."""
    out: dict[str, object] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@contextmanager
def parent_run(experiment: str, name: str, tags: dict[str, str], params: dict[str, Any],
               parent_run_id: str | None = None) -> Iterator[dict[str, str]]:
    """The MLflow run of a whole pipeline run (nested under ``parent_run_id``, an experiment's run, when given), its
    flattened config as parameters; yields its id, the tracking URI and a link to it (stage runs nest under it)."""
    import mlflow

    exp_id = setup(experiment)
    nesting = {"parent_run_id": parent_run_id, "nested": True} if parent_run_id else {}
    with mlflow.start_run(run_name=name, tags=tags, **nesting) as run:
        mlflow.log_params(clean_params(flatten(params)))
        uri = mlflow.get_tracking_uri()
        base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
        yield {"mlflow_run_id": run.info.run_id, "mlflow_tracking_uri": uri,
               "mlflow_run_url": f"{base.rstrip('/')}/#/experiments/{exp_id}/runs/{run.info.run_id}"}
