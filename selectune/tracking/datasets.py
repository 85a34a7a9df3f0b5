"""Dataset versions you can get back: every table the pipeline logs (validated input, scored table, selected
subset, evaluation set, training split, judge labels) is stored once, content-addressed by its digest, in the
MLflow artifact store, so it follows the tracking server (local folder, S3, MinIO) and outlives run directories.

Each version is one run of the experiment ``selectune-datasets`` (tag ``selectune.dataset_digest``) holding
``data/<digest>.parquet``; storing a digest that exists stores nothing. Model versions name their training data's
digest (tag ``selectune.dataset.training``), so ``selectune data get --model models:/NAME@champion`` restores it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

EXPERIMENT = "selectune-datasets"
TAG = "selectune.dataset_digest"
ROLES = {"training": "selectune.dataset.training",  # role -> the model version tag naming its digest
         "evaluation": "selectune.eval_set_digest"}


def _client():  # noqa: ANN202 -- MlflowClient on the configured store
    from mlflow.tracking import MlflowClient

    from selectune.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri())


def find(digest: str, experiment: str | None = None) -> str | None:
    """The artifact URI of the stored version ``digest``, or None."""
    from selectune.tracking.runs import experiment_id

    exp = experiment or experiment_id(EXPERIMENT)
    found = _client().search_runs([exp], f"tags.`{TAG}` = '{digest}'", max_results=1)
    return f"{found[0].info.artifact_uri.rstrip('/')}/data/{digest}.parquet" if found else None


def store(df: pd.DataFrame, digest: str) -> str:
    """Store ``df`` as version ``digest`` unless it exists; returns its artifact URI."""
    return _store(digest, len(df), lambda path: df.to_parquet(path, index=False))  # as the stages write tables


def store_file(path: str | Path, digest: str) -> str:
    """Store the Parquet file ``path`` as version ``digest`` unless it exists (copied, never read into memory)."""
    import pyarrow.parquet as pq

    return _store(digest, pq.ParquetFile(path).metadata.num_rows, lambda dst: shutil.copyfile(path, dst))


def _store(digest: str, rows: int, write: Any) -> str:
    from selectune.tracking.runs import _store_lock, experiment_id, tracking_uri

    exp = experiment_id(EXPERIMENT)
    with _store_lock(tracking_uri()):  # one writer per digest on a local store
        if uri := find(digest, exp):
            return uri
        client = _client()
        run = client.create_run(exp, tags={TAG: digest, "rows": str(rows)}, run_name=f"dataset-{digest}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{digest}.parquet"
            write(path)
            client.log_artifact(run.info.run_id, str(path), "data")
        client.set_terminated(run.info.run_id)
    return f"{run.info.artifact_uri.rstrip('/')}/data/{digest}.parquet"


def model_dataset(model_ref: str, role: str = "training") -> str:
    """The digest of a registered model version's dataset in ``role`` (training: what it was trained on)."""
    from selectune.tracking.registry import resolve_ref, split_ref

    if role not in ROLES:
        raise ValueError(f"unknown dataset role {role!r}; known: {', '.join(ROLES)}")
    parts = split_ref(resolve_ref(model_ref))
    if parts is None:
        raise ValueError(f"{model_ref}: not a registry reference (models:/NAME/VERSION or models:/NAME@ALIAS)")
    tags = _client().get_model_version(*parts).tags
    if ROLES[role] not in tags:
        raise ValueError(f"{model_ref}: the version records no {role} dataset (tag {ROLES[role]})")
    return tags[ROLES[role]]


def get(digest: str, output: str | Path) -> Path:
    """Restore version ``digest`` to ``output`` (a .parquet file, byte-identical to the stored one)."""
    import mlflow

    uri = find(digest)
    if uri is None:
        raise ValueError(f"no stored dataset version {digest} in {_client().tracking_uri}")
    out = Path(output)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the output must be a .parquet file (versions are stored as parquet)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                    tracking_uri=_client().tracking_uri)
        shutil.copyfile(local, out)
    return out
