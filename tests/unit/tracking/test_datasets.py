"""Dataset versions in a real SQLite MLflow store: stored once by digest, restored byte-identical (also after the
run directory is gone), found through a model version, and the logged dataset's source points at the version."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selectune.core.digests import table_digest
from selectune.tracking import datasets, registry, runs


def stored_versions() -> int:
    from mlflow.tracking import MlflowClient

    return len(MlflowClient().search_runs([runs.experiment_id(datasets.EXPERIMENT)]))


def test_store_once_and_get_back(mlflow_store: str, records: pd.DataFrame, tmp_path: Path) -> None:
    import mlflow

    runs.setup("t")
    with mlflow.start_run() as run:
        digest = runs.log_dataset(records, "somewhere/records.json", "records", "input")
        runs.log_dataset(records, "elsewhere.json", "records_again", "input")  # same content: nothing new stored
    assert digest == table_digest(records) and stored_versions() == 1
    ds = {i.dataset.name: i for i in mlflow.get_run(run.info.run_id).inputs.dataset_inputs}["records"]
    assert json.loads(ds.dataset.source)["uri"] == datasets.find(digest)
    tags = {t.key: t.value for t in ds.tags}
    assert tags["origin"] == "somewhere/records.json" and tags["stored"] == datasets.find(digest)

    out = datasets.get(digest, tmp_path / "back" / "records.parquet")
    stored = Path(mlflow.artifacts.download_artifacts(datasets.find(digest), dst_path=str(tmp_path / "raw")))
    assert out.read_bytes() == stored.read_bytes()
    assert table_digest(pd.read_parquet(out)) == digest
    pd.testing.assert_frame_equal(pd.read_parquet(out), records.reset_index(drop=True))
    with pytest.raises(ValueError, match="no stored dataset version 0000"):
        datasets.get("0000", tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="must be a .parquet file"):
        datasets.get(digest, tmp_path / "x.json")


def test_dataset_of_a_model_version_and_the_command(mlflow_store: str, records: pd.DataFrame,
                                                    tmp_path: Path) -> None:
    import mlflow
    from typer.testing import CliRunner

    from selectune.cli.main import app
    from selectune.core.lora import META

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / META).write_text("{}")
    runs.setup("t")
    with mlflow.start_run():
        digest = runs.log_dataset(records.head(4), "train.parquet", "tune_train", "training")
        registry.log_and_register(folder, "d", {"selectune.dataset.training": digest})
        registry.log_and_register(folder, "d", {})
    registry.set_champion("d", 1)
    assert datasets.model_dataset("models:/d@champion") == digest
    with pytest.raises(ValueError, match="records no training dataset"):
        datasets.model_dataset("models:/d/2")
    with pytest.raises(ValueError, match="unknown dataset role"):
        datasets.model_dataset("models:/d/1", "nope")

    run = CliRunner().invoke
    r = run(app, ["data", "get", "--model", "models:/d@champion", "-o", str(tmp_path / "t.parquet")])
    assert r.exit_code == 0, r.output
    assert table_digest(pd.read_parquet(tmp_path / "t.parquet")) == digest and digest in r.output
    r = run(app, ["data", "get", digest, "-o", str(tmp_path / "u.parquet")])
    assert r.exit_code == 0 and (tmp_path / "u.parquet").read_bytes() == (tmp_path / "t.parquet").read_bytes()
    r = run(app, ["data", "get", "--model", "models:/d/2", "-o", str(tmp_path / "v.parquet")])
    assert r.exit_code == 2 and "records no training dataset" in r.output
    r = run(app, ["data", "get", "-o", str(tmp_path / "w.parquet")])
    assert r.exit_code == 2 and "DIGEST or --model" in r.output


def test_a_file_is_logged_as_its_table_is_without_reading_it_whole(mlflow_store: str, records: pd.DataFrame,
                                                                   tmp_path: Path) -> None:
    import mlflow

    from selectune.core.digests import file_table_digest

    table = records.assign(score=range(len(records)), probs=[[0.1, 0.9]] * len(records))
    path = tmp_path / "scored.parquet"
    table.to_parquet(path, index=False)
    for rows in (1, 7, 1000):
        assert file_table_digest(path, ["id", "score"], rows) == table_digest(table, ["id", "score"])
    assert file_table_digest(path, rows=3) == table_digest(table)
    runs.setup("t")
    with mlflow.start_run() as run:
        whole = runs.log_dataset(table, str(path), "whole", "scored", ["id", "score"])
    with mlflow.start_run() as run2:
        streamed = runs.log_dataset_file(path, str(path), "whole", "scored", ["id", "score"])
    assert streamed == whole and stored_versions() == 1  # the same version: the file is not stored twice
    a, b = (mlflow.get_run(r.info.run_id).inputs.dataset_inputs[0] for r in (run, run2))
    assert (a.dataset.digest, a.dataset.schema, a.dataset.profile, a.dataset.source) == \
           (b.dataset.digest, b.dataset.schema, b.dataset.profile, b.dataset.source)
    assert json.loads(b.dataset.profile) == {"num_rows": len(table), "num_elements": len(table) * 6}  # no list column
    assert {t.key: t.value for t in a.tags} == {t.key: t.value for t in b.tags}
    assert {t.key: t.value for t in b.tags}["mlflow.data.context"] == "scored"
    with mlflow.start_run():  # a new version: the file itself is stored, and restored as it was
        digest = runs.log_dataset_file(path, str(path), "scores", "scored", ["score"])
    pd.testing.assert_frame_equal(pd.read_parquet(datasets.get(digest, tmp_path / "back.parquet")), table)
