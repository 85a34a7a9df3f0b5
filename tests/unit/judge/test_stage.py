"""The judge stage end to end (tiny models): outputs, metrics, registry round trip, CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.judge.config import JudgeConfig
from tests.fixtures import DEMO


def _cfg(tiny_model: str, embedder: str, **kw: object) -> JudgeConfig:
    base = dict(base=tiny_model, n_samples=2, max_new_tokens=6, embedder=embedder, max_steps=4, batch_size=4,
                grad_accum=1, save_steps=1000, dtype="float32", eval_fraction=0.34, threshold=4.5)
    return JudgeConfig(**{**base, **kw})


def test_stage_outputs_metrics_and_registered_judge(tiny_model: str, tiny_embedder: str, records: pd.DataFrame,
                                                    mlflow_store: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune.data.records import write_parquet
    from selectune.judge.infer import load_judge, score_pairs
    from selectune.judge.metrics import coverage_curve
    from selectune.judge.stage import judge_stage
    from selectune.tracking import runs

    path = str(write_parquet(records, tmp_path / "records.parquet"))
    cfg = _cfg(tiny_model, tiny_embedder)
    runs.setup("judge-test")
    with mlflow.start_run() as parent:
        res = judge_stage(cfg, path, tmp_path / "run", parent.info.run_id, model_under_eval=tiny_model)
    out = Path(res.dir)
    for key in ("labels", "adapter", "eval", "coverage_plot"):
        assert Path(getattr(res.outputs, key)).exists(), key
    labels = pd.read_parquet(res.outputs.labels)
    assert len(labels) == 2 * len(records) and set(labels["split"]) == {"train", "heldout"}
    assert np.allclose(labels["label"], 0.5 * labels["self_eval"] + 4.5 * labels["cosine"].clip(lower=0))
    table = pd.read_parquet(res.outputs.eval)
    assert len(table) == (labels["split"] == "heldout").sum() == 2 * res.metrics["judge.heldout_records"]
    assert table["judge_score"].between(0, 9).all() and table["base_self_eval"].between(0, 9).all()
    m = res.metrics
    y = table["label"].to_numpy()
    assert m["judge.coverage_auc"] == pytest.approx(coverage_curve(table["judge_score"], y)[2], abs=1e-4)
    assert m["judge.mean_score"] == pytest.approx(table["judge_score"].mean(), abs=1e-4)
    if "judge.pearson" in m:
        assert m["judge.pearson"] == pytest.approx(np.corrcoef(table["judge_score"], y)[0, 1], abs=1e-4)
    assert m["judge.baseline.length.pearson"] == pytest.approx(np.corrcoef(table["length"], y)[0, 1], abs=1e-4)
    assert {"judge.baseline.cosine.spearman", "judge.steps", "judge.answered_at_threshold"} <= set(m)
    t50 = m["judge.threshold_at_coverage_0.5"]
    kth = np.sort(table["judge_score"].to_numpy())[::-1][int(np.ceil(0.5 * len(table))) - 1]  # answers half
    assert kth - 1e-4 < t50 <= kth and (table["judge_score"] >= t50).mean() >= 0.5
    assert m["judge.quality_at_coverage_0.5"] == pytest.approx(y[table["judge_score"] >= t50].mean(), abs=1e-4)
    assert m["judge.steps"] == 4 and "judge.auroc.judge_output_score" in m  # demo-style good/poor labels

    assert res.outputs.model_uri == "models:/selectune-judge/1"
    version = MlflowClient().get_model_version("selectune-judge", "1")
    assert version.tags["selectune.base"] == tiny_model and version.tags["selectune.model_under_eval"] == tiny_model
    assert version.tags["selectune.kind"] == "self-j-judge" and len(version.tags["selectune.label_digest"]) == 16
    child = MlflowClient().get_run(res.mlflow_run_id)
    assert child.data.metrics["judge.coverage_auc"] == m["judge.coverage_auc"]
    assert "judge_train.loss" in child.data.metrics

    reloaded = load_judge(res.outputs.model_uri)  # base + adapter rebuilt from the registry
    again = score_pairs(reloaded, table, False)["judge_score"].to_numpy()
    assert np.allclose(again, table["judge_score"], atol=1e-5)
    assert (out / "manifest.json").is_file()
    assert judge_stage(cfg, path, tmp_path / "run", model_under_eval=tiny_model).skipped

    # the registered judge feeds selection in a later run: judge_score added, ranked by, version pinned
    from selectune.config import SelectionConfig
    from selectune.selection.stage import select_stage

    scored = str(write_parquet(records.assign(selectit_score=np.linspace(0, 1, len(records))),
                               tmp_path / "scored.parquet"))
    sel_cfg = SelectionConfig(by="judge_score", top_k=2, judge="models:/selectune-judge/latest")
    chosen = select_stage(sel_cfg, scored, tmp_path / "run")
    table = pd.read_parquet(chosen.outputs.selection).set_index("id")
    direct = score_pairs(reloaded, records.set_index("id"), False)["judge_score"]
    assert np.allclose(table.loc[direct.index, "judge_score"], direct, atol=1e-5)
    top2 = set(direct.sort_values(ascending=False).index[:2])
    assert set(pd.read_parquet(chosen.outputs.selected)["id"]) == top2
    manifest = json.loads((tmp_path / "run" / "select" / "manifest.json").read_text())
    assert manifest["inputs"]["judge"] == "models:/selectune-judge/1" and chosen.metrics["judge_seconds"] > 0


def test_stage_needs_a_model_under_evaluation(tiny_model: str, tiny_embedder: str, tmp_path: Path) -> None:
    from selectune.judge.stage import judge_stage

    with pytest.raises(ValueError, match="no model under evaluation"):
        judge_stage(_cfg(tiny_model, tiny_embedder), str(tmp_path / "x.parquet"), tmp_path)


def test_cli_score_best_of_and_answer(tiny_model: str, tiny_embedder: str, records: pd.DataFrame,
                                      tmp_path: Path, mlflow_store: str) -> None:
    import typer
    from typer.testing import CliRunner

    from selectune.cli.judge import answer_cmd, judge_app
    from selectune.judge.infer import load_judge, score_pairs
    from selectune.judge.train import train_judge

    labels = records.assign(response=records["output"], reference=records["output"], sample=0, digit=6)
    judge_dir = str(train_judge(_cfg(tiny_model, tiny_embedder, max_steps=2), labels, tmp_path / "j").adapter_dir)
    app = typer.Typer()
    app.add_typer(judge_app, name="judge")
    app.command("answer")(answer_cmd)
    run = CliRunner().invoke
    pairs = tmp_path / "pairs.jsonl"
    records[["instruction", "input", "output"]].to_json(pairs, orient="records", lines=True)
    r = run(app, ["judge", "score", "--judge", judge_dir, "-i", str(pairs), "-o", str(tmp_path / "s.parquet"),
                  "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    scored = pd.read_parquet(tmp_path / "s.parquet")
    direct = score_pairs(load_judge(judge_dir), records, False)["judge_score"]
    assert np.allclose(scored["judge_score"], direct, atol=1e-5) and json.loads(r.stdout)["with_reference"] is False

    r = run(app, ["judge", "best-of", "--model", tiny_model, "--judge", judge_dir, "-i", str(pairs), "-o",
                  str(tmp_path / "best.parquet"), "--n", "3", "--max-new-tokens", "5", "--all-samples",
                  str(tmp_path / "all.parquet"), "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    best, every = pd.read_parquet(tmp_path / "best.parquet"), pd.read_parquet(tmp_path / "all.parquet")
    assert len(best) == len(records) and len(every) == 3 * len(records)
    assert np.allclose(best["judge_score"], every.groupby("id")["judge_score"].max().loc[best["id"]])

    import mlflow

    from selectune.tracking import registry

    with mlflow.start_run():  # the judge registered: models:/tiny-judge@champion works wherever a judge does
        registry.log_and_register(judge_dir, "tiny-judge", {})
    registry.set_champion("tiny-judge", 1)
    champion = "models:/tiny-judge@champion"
    for threshold, declined in (("0", False), ("9.5", True)):
        r = run(app, ["answer", "--model", tiny_model, "--judge", champion, "--threshold", threshold,
                      "--max-new-tokens", "5", "--json", "--dtype", "float32", "What is the capital of France?"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["declined"] is declined
    r = run(app, ["judge", "score", "--judge", judge_dir, "-i", str(tmp_path / "none.csv"), "-o", "x.parquet"])
    assert r.exit_code == 2 and "no such file" in r.output

    from selectune.cli.main import app as main_app

    records.assign(selectit_score=0.5).to_parquet(tmp_path / "scored.parquet")
    r = run(main_app, ["select", "-i", str(tmp_path / "scored.parquet"), "-o", str(tmp_path / "sel"), "--judge",
                       champion, "--strategy", "combined", "--weight", "judge_score=1", "--k", "3"])
    assert r.exit_code == 0, r.output
    chosen = pd.read_parquet(tmp_path / "sel" / "selected.parquet")
    assert set(chosen["id"]) == set(records.loc[direct.sort_values(ascending=False).index[:3], "id"])


@pytest.mark.slow
def test_embedded_models_smoke(mlflow_store: str, tmp_path: Path) -> None:
    """smollm2-135m-instruct answers and self-evaluates, minilm-l6 recalibrates, a judge is trained on it."""
    from selectune.data.records import load_records, write_parquet
    from selectune.judge.stage import judge_stage

    df = load_records(DEMO).records.head(4)
    path = str(write_parquet(df, tmp_path / "demo4.parquet"))
    cfg = JudgeConfig(base="smollm2-135m-instruct", n_samples=1, max_new_tokens=8, max_steps=1, batch_size=2,
                      grad_accum=1, max_tokens=160, eval_fraction=0.5, register_as=None)
    res = judge_stage(cfg, path, tmp_path / "run", model_under_eval="smollm2-135m-instruct")
    labels = pd.read_parquet(res.outputs.labels)
    assert labels["response"].str.len().gt(0).all() and labels["cosine"].between(-1, 1).all()
    assert labels["self_eval"].between(0, 9).all() and labels["label"].between(0, 9).all()
    assert 0 <= res.metrics["judge.mean_score"] <= 9 and "judge.baseline.perplexity.spearman" in res.metrics
