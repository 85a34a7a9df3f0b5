"""The selection stage: files, MLflow metrics and figures, baselines, a real embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.selection.config import SelectionConfig
from tests.fixtures import DEMO
from tests.unit.selection.helpers import picked


def scored_demo(tmp_path: Path) -> Path:
    """Demo records with a score that separates the labels perfectly (AUROC 1)."""
    from selectune.data.records import load_records, write_parquet

    df = load_records(DEMO).records
    jitter = np.array([int(i[:6], 16) for i in df["id"]]) / 16**6 * 0.5
    df["selectit_score"] = (df["label"] == "good").astype(float) + jitter
    return write_parquet(df, tmp_path / "scored.parquet")


def test_stage_writes_files_and_logs_metrics_and_figures(tiny_embedder: str, mlflow_store: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune.selection.stage import DECISIONS, select_stage
    from selectune.tracking import runs

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    scored = str(scored_demo(tmp_path))
    cfg = SelectionConfig(top_k=20, min_chars=20, quotas={"math": 3}, diversity_threshold=0.995, embedder=tiny_embedder)
    runs.setup("select-test")
    with mlflow.start_run() as parent:
        res = select_stage(cfg, scored, tmp_path / "run", parent.info.run_id)
    out = Path(res.dir)
    table = pd.read_parquet(out / "selection.parquet")
    selected = pd.read_parquet(out / "selected.parquet")
    assert len(table) == 150 and table["decision_reason"].str.len().gt(0).all()
    assert len(selected) == 20 == len(json.loads((out / "selected_alpaca.json").read_text()))
    assert (selected["category"] == "math").sum() == 3 and selected["output"].str.len().min() >= 20
    m = res.metrics
    assert m["records_in"] == 150 and m["records_out"] == 20 and m["embedded_new"] == 150
    assert sum(m[f"decision.{k}"] for k in DECISIONS) == 150 and m["decision.quota_full"] > 0
    assert m["decision.too_short"] == int((table["output"].str.len() < 20).sum()) > 0
    assert m["decision.too_similar"] == int((table["decision"] == "too_similar").sum())
    assert m["auroc.selectit_score"] == 1.0 and m["selected_poor_fraction"] == 0.0 and m["input_poor_fraction"] == 0.2
    child = MlflowClient().get_run(res.mlflow_run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["records_out"] == 20 and child.data.metrics["decision.selected"] == 20
    arts = {a.path for a in MlflowClient().list_artifacts(res.mlflow_run_id)}
    assert {"selection_cut.png", "score_vs_length.png", "score_before_after.selectit_score.png",
            "length_before_after.png", "category_mix.png", "selection.json"} <= arts
    # another run dir: the embeddings come from the cache; the same run dir: the stage is skipped
    again = select_stage(cfg, scored, tmp_path / "run2")
    assert again.metrics["embedded_new"] == 0 and not again.skipped
    assert pd.read_parquet(Path(again.dir) / "selected.parquet")["id"].tolist() == selected["id"].tolist()
    assert select_stage(cfg, scored, tmp_path / "run").skipped


def test_stage_baselines_without_tracking(tmp_path: Path) -> None:
    from selectune.selection.stage import select_stage

    scored = str(scored_demo(tmp_path))
    full = select_stage(SelectionConfig(strategy="full"), scored, tmp_path / "full")
    assert full.metrics["records_out"] == 150 and "embedded_new" not in full.metrics
    rnd = select_stage(SelectionConfig(strategy="random", fraction=0.1, seed=1), scored, tmp_path / "random")
    assert rnd.metrics["records_out"] == 15 and rnd.metrics["decision.below_cut"] == 135
    assert "auroc.random_key" not in rnd.metrics


def test_category_mix_and_before_after_plots() -> None:
    from selectune.core.plots import before_after_histogram, category_mix

    fig = category_mix(["a", "a", "b", None], ["a"], "mix")
    bars = fig.axes[0].patches
    assert [round(b.get_width(), 3) for b in bars] == [0.25, 0.5, 0.25, 0.0, 1.0, 0.0]  # (none), a, b
    fig = before_after_histogram([1.0, 2.0, 3.0, np.nan], [3.0], "scores")
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "all (3)"


@pytest.mark.slow
def test_minilm_diversity_drops_a_paraphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.selection.diversity import embed_records

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path))
    rows = [("What is the capital of France?", "", "The capital of France is Paris."),
            ("Which city is the capital of France?", "", "Paris is the capital city of France."),
            ("Write a python function that adds two numbers.", "", "def add(a, b):\n    return a + b")]
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", ["a", "b", "c"])
    df["selectit_score"] = [3.0, 2.0, 1.0]
    emb = embed_records(df, "minilm-l6")
    cos = emb.vectors @ emb.vectors.T
    assert emb.vectors.shape == (3, 384) and cos[0, 1] > 0.85 > 0.3 > cos[0, 2]
    assert picked(df, emb.vectors, strategy="full", diversity_threshold=0.85) == ["a", "c"]
    assert embed_records(df, "minilm-l6").n_new == 0
