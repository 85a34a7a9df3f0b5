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
            metrics["eval.tuned_loss"] = loss
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
    assert row["strategy"] == "top" and row["budget"] == "top 0.2" and row["selected"] == 30
    assert row["tuned held-out loss"] == 1.25 and row["selected digest"] == "digest-top"
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
