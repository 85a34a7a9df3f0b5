"""Experiment comparison from MLflow parent runs: table, HTML report, CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from selectune.cli.main import app


def _pipeline_run(name: str, strategy: str, selected: int, loss: float | None, seconds: float) -> str:
    import mlflow

    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({"selection.strategy": strategy, "selection.fraction": "0.2", "selection.top_k": "",
                           "selectit.models": "['gemma-3-270m']"})
        metrics = {"records_in": 150, "records_selected": selected, "seconds": seconds}
        if loss is not None:
            metrics["eval.loss.tuned"] = loss
        mlflow.log_metrics(metrics)
        mlflow.set_tag("selectune.selected_digest", f"digest-{name}")
        with mlflow.start_run(run_name="select", nested=True):  # a stage child run: not a pipeline run
            mlflow.log_metric("records_out", selected)
    return run.info.run_id


def test_compare_by_ids_and_experiment(mlflow_store, tmp_path: Path) -> None:
    from selectune.tracking import compare, runs

    runs.setup("cmp")
    a = _pipeline_run("top", "top", 30, 1.25, 61.0)
    b = _pipeline_run("random", "random", 30, 1.5, 58.0)
    by_exp = compare.collect(experiment="cmp")
    assert by_exp["run_id"].tolist() == [b, a]  # newest first, child runs left out
    by_ids = compare.collect([a, b])
    row = by_ids.set_index("run_id").loc[a]
    assert row["strategy"] == "top" and row["budget"] == "fraction 0.2" and row["selected"] == 30
    assert row["tuned loss"] == 1.25 and row["selected digest"] == "digest-top"
    text = compare.text_table(by_ids)
    assert "random" in text and "1.5" in text and "digest-top" in text
    html = compare.html_report(by_ids, tmp_path / "r.html").read_text()
    assert html.count("<img") == 3  # selected, tuned loss, seconds: the numeric fields present
    assert "digest-random" in html


def test_compare_cli(mlflow_store, tmp_path: Path) -> None:
    from selectune.tracking import runs

    runs.setup("cmp-cli")
    _pipeline_run("one", "top", 10, None, 5.0)
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["compare", "--experiment", "cmp-cli", "--html", str(out)])
    assert res.exit_code == 0, res.output
    assert "strategy" in res.output and out.is_file()
    res = CliRunner().invoke(app, ["compare", "--experiment", "nope"])
    assert res.exit_code == 2 and "no MLflow experiment named 'nope'" in res.output


def _evaluated_run(name: str, digest: str, losses: list[float], tmp_path: Path, nested_in: str | None = None) -> str:
    """A pipeline run with an evaluate child run holding per-item losses (evaluate/items.parquet), as the flow logs."""
    import mlflow
    import pandas as pd

    with mlflow.start_run(run_name=name, parent_run_id=nested_in, nested=bool(nested_in)) as run:
        mlflow.log_params({"selection.strategy": name, "selection.fraction": "0.2"})
        mlflow.log_metrics({"eval.loss.tuned": sum(losses) / len(losses), "eval.loss.tuned_vs_base.delta": -0.1,
                            "eval.loss.tuned_vs_base.delta.ci_low": -0.2,
                            "eval.loss.tuned_vs_base.delta.ci_high": 0.05})
        mlflow.set_tag("selectune.eval_set_digest", digest)
        with mlflow.start_run(run_name="evaluate", nested=True) as child:
            mlflow.set_tag("selectune.stage", "evaluate")
            folder = tmp_path / name
            folder.mkdir()
            pd.DataFrame({"item_id": [f"i{k}" for k in range(len(losses))], "model": "tuned", "metric": "loss",
                          "value": losses, "weight": 2.0}).to_parquet(folder / "items.parquet")
            mlflow.log_artifact(str(folder / "items.parquet"), "evaluate")
        mlflow.set_tag("selectune.evaluate_run_id", child.info.run_id)
    return run.info.run_id


def test_baseline_deltas_only_within_one_evaluation_set(mlflow_store, tmp_path: Path) -> None:
    import mlflow

    from selectune.tracking import compare, runs

    runs.setup("cmp-eval")
    with mlflow.start_run(run_name="experiment-x", tags={"selectune.kind": "experiment"}) as grid:
        pass
    base = _evaluated_run("random", "set-a", [2.0, 2.0, 3.0, 3.0], tmp_path, nested_in=grid.info.run_id)
    better = _evaluated_run("top", "set-a", [1.5, 1.5, 2.5, 2.5], tmp_path, nested_in=grid.info.run_id)
    other = _evaluated_run("elsewhere", "set-b", [1.0, 1.0, 1.0, 1.0], tmp_path)
    df = compare.collect(experiment="cmp-eval")
    assert set(df["run_id"]) == {base, better, other}  # runs nested in a grid count; the grid run itself does not
    assert compare.eval_sets(df) == {"set-b": [other], "set-a": [better, base]}
    out = compare.against_baseline(df, base, resamples=500).set_index("run_id")
    column = compare.VS_BASELINE["loss"]
    assert out.loc[base, column] == "baseline"
    assert out.loc[better, column] == "-0.5000 [-0.5000, -0.5000]"  # the same items, every one 0.5 lower
    assert out.loc[other, column].startswith("not comparable (eval set set-b vs set-a)")
    assert out.loc[better, "tuned - base loss [95% CI]"] == "-0.1000 [-0.2000, +0.0500]"
    res = CliRunner().invoke(app, ["compare", "--experiment", "cmp-eval", "--baseline", base, "--html",
                                   str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "2 different evaluation sets" in res.output and "not comparable" in res.output
    page = (tmp_path / "c.html").read_text()
    assert "different evaluation sets" in page and page.count("<img") >= 2
