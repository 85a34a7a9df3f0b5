"""The evaluation stages on tiny models: the carve-out stage, the evaluate stage (items table, MLflow records,
answers cached across runs, lm-eval on the local tasks) and `selectune evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from selectune.data.records import record_id, write_parquet
from selectune.evaluation.config import EvalConfig
from selectune.evaluation.stage import evalset_stage, evaluate_stage
from tests.fixtures import LM_EVAL_TASKS


@pytest.fixture
def eval_set(records: pd.DataFrame, tmp_path: Path) -> Path:
    return write_parquet(records, tmp_path / "eval.parquet")


def test_evalset_stage_writes_disjoint_files_and_logs_the_set(records, tmp_path: Path, mlflow_store) -> None:
    import mlflow

    from selectune.tracking import runs

    many = pd.concat([records.assign(instruction=records["instruction"] + f" ({k})") for k in range(10)],
                     ignore_index=True)
    many["id"] = [record_id(*t) for t in many[["instruction", "input", "output"]].itertuples(index=False)]
    path = write_parquet(many, tmp_path / "records.parquet")
    runs.setup("evalset")
    with mlflow.start_run() as parent:
        res = evalset_stage(EvalConfig(fraction=0.3), path, tmp_path / "run", parent.info.run_id)
    pool, evaluated = pd.read_parquet(res.outputs.pool), pd.read_parquet(res.outputs.eval_set)
    assert len(pool) + len(evaluated) == 60 and not set(pool["id"]) & set(evaluated["id"])
    assert res.metrics["eval_records"] == len(evaluated) > 0 and len(res.outputs.digest) == 16
    child = mlflow.tracking.MlflowClient().get_run(res.mlflow_run_id)
    assert child.data.tags["selectune.eval_set_digest"] == res.outputs.digest
    assert child.inputs.dataset_inputs[0].dataset.name == "eval_set"
    assert child.inputs.dataset_inputs[0].tags[0].value == "evaluation"
    explicit = evalset_stage(EvalConfig(heldout=str(write_parquet(many.head(5), tmp_path / "h.parquet"))), path,
                             tmp_path / "run2")
    assert explicit.metrics["overlap_removed"] == 5 and explicit.metrics["pool_records"] == 55
    with pytest.raises(ValueError, match="evaluation set is empty"):
        evalset_stage(EvalConfig(fraction=0.001), write_parquet(records, tmp_path / "few.parquet"), tmp_path / "r3")


def test_evaluate_stage_items_metrics_and_cached_answers(eval_set: Path, tiny_model: str, tiny_model_2: str,
                                                         tmp_path: Path, monkeypatch) -> None:
    from selectune.core import generate

    calls: list[int] = []
    original = generate.generate_batch
    monkeypatch.setattr(generate, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or original(*a, **k))
    cfg = EvalConfig(judge=tiny_model, max_new_tokens=4, lm_eval_tasks=["selectune_mc", "selectune_gen"],
                     lm_eval_include_path=str(LM_EVAL_TASKS), bootstrap_resamples=200)
    res = evaluate_stage(cfg, eval_set, {"tuned": tiny_model_2, "base": tiny_model}, tmp_path / "run")
    items = pd.read_parquet(res.outputs.items)
    assert set(items["metric"]) == {"loss", "winrate_vs_base", "orders_agree_vs_base", "answer_chars",
                                    "lm_eval.selectune_mc.acc", "lm_eval.selectune_gen.exact_match"}
    assert len(items[items["metric"] == "loss"]) == 2 * 6 and (items.query("metric == 'loss'")["weight"] > 0).all()
    assert len(items[items["metric"] == "lm_eval.selectune_mc.acc"]) == 2 * 6  # every document, both models
    answers = items[items["metric"] == "answer_chars"]
    assert len(answers) == 12 and answers["answer"].notna().all()
    m = res.metrics
    assert {"eval.loss.tuned", "eval.loss.base", "eval.loss.tuned_vs_base.delta.ci_high", "eval.winrate.tuned_vs_base",
            "eval.lm_eval.selectune_mc.acc.tuned", "eval.lm_eval.selectune_gen.exact_match.base"} <= set(m)
    summary = json.loads(res.outputs.summary.read_text())
    assert summary["metrics"] == {k: v for k, v in m.items() if k != "seconds"}
    assert summary["models"] == {"tuned": tiny_model_2, "base": tiny_model}
    generated = sum(calls)
    assert generated == 12  # six answers per model
    again = evaluate_stage(cfg.model_copy(update={"bootstrap_resamples": 300}), eval_set,
                           {"tuned": tiny_model_2, "base": tiny_model}, tmp_path / "run2")
    assert sum(calls) == generated  # every answer from the cache: nothing generated twice
    assert again.metrics["eval.winrate.tuned_vs_base"] == m["eval.winrate.tuned_vs_base"]


def test_evaluate_command(eval_set: Path, tiny_model: str, tiny_model_2: str, tmp_path: Path, mlflow_store) -> None:
    from selectune.cli.main import app

    res = CliRunner().invoke(app, ["evaluate", "--eval-set", str(eval_set), "--model", f"tuned={tiny_model_2}",
                                   "--model", f"base={tiny_model}", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.output[res.output.index("{"):])
    assert Path(printed["items"]).is_file() and "eval.loss.tuned_vs_base.delta" in printed
    bad = CliRunner().invoke(app, ["evaluate", "--eval-set", str(eval_set), "--model", "tuned", "--output",
                                   str(tmp_path / "x")])
    assert bad.exit_code == 2 and "NAME=REF" in bad.output
