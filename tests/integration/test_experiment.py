"""An experiment grid as one Prefect flow: arms x seeds as curate subflows nested in one MLflow run, the arm table
with intervals, the figure and the Prefect artifact; `selectune compare` reads the nested runs.

The flow runs in-process (like tests/integration/test_flow.py): under CliRunner, Prefect's console log handler would
keep CliRunner's stream, closed afterwards, and break every later test's logging. The command's recipe checks are
in tests/unit/test_experiment.py."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.integration.test_flow import _dataset


def test_experiment_grid(prefect_server, mlflow_store, tmp_path: Path, tiny_model: str) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    from flows.experiment import experiment
    from selectune.cli.main import app
    from selectune.experiment import load_experiment

    data = tmp_path / "data.json"
    data.write_text(json.dumps(_dataset(48)))
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(yaml.safe_dump({
        "experiment": "grid-test", "data": {"input": str(data)},
        "selectit": {"models": [tiny_model], "dtype": "float32"}, "selection": {"fraction": 0.3},
        "tune": {"base": tiny_model, "max_steps": 2, "batch_size": 2, "grad_accum": 1, "max_tokens": 128,
                 "dtype": "float32"},
        "eval": {"fraction": 0.25, "bootstrap_resamples": 200},
        "arms": {"top": {"selection": {"strategy": "top"}}, "random": {"selection": {"strategy": "random"}}},
        "seeds": [0, 1]}, sort_keys=False))  # the first arm is the baseline
    res = experiment(*load_experiment(recipe), "grid", str(tmp_path / "grid"))
    assert [(r["metric"], r["arm"]) for r in res["table"]] == [("loss", "top"), ("loss", "random")]

    client = MlflowClient()
    exp = client.get_experiment_by_name("grid-test")
    top_level = client.search_runs([exp.experiment_id], "tags.`selectune.kind` = 'experiment'")
    assert len(top_level) == 1
    grid = top_level[0]
    m = grid.data.metrics
    assert {"experiment.loss.top", "experiment.loss.random.ci_low", "experiment.loss.random_vs_top.delta",
            "experiment.loss.random_vs_top.delta.ci_high"} <= set(m)
    assert m["experiment.loss.random.ci_low"] <= m["experiment.loss.random"] <= m["experiment.loss.random.ci_high"]
    assert m["experiment.loss.random_vs_top.delta"] != 0  # the arms trained on different records
    artifacts = {a.path for a in client.list_artifacts(grid.info.run_id, "experiment")}
    assert {"experiment/table.json", "experiment/arms.png"} <= artifacts
    nested = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{grid.info.run_id}'")
    assert sorted(r.info.run_name for r in nested) == ["curate-grid-random-seed0", "curate-grid-random-seed1",
                                                       "curate-grid-top-seed0", "curate-grid-top-seed1"]
    digests = {r.data.tags["selectune.eval_set_digest"] for r in nested}
    assert len(digests) == 1  # every arm and seed on the same items
    seeds = {r.info.run_name: r.data.params["tune.seed"] for r in nested}
    assert seeds["curate-grid-top-seed1"] == "1" and seeds["curate-grid-random-seed0"] == "0"

    async def artifacts_and_subflows() -> tuple[list, list]:
        async with get_client() as c:
            arts = [a for a in await c.read_artifacts() if a.key == "selectune-experiment"]
            runs = await c.read_flow_runs()
        return [a.data for a in arts], [r.name for r in runs]

    import asyncio

    tables, flow_runs = asyncio.run(artifacts_and_subflows())
    assert len(tables) == 1 and "| loss | random |" in tables[0]  # the arm table as a Prefect markdown artifact
    assert {"grid-top-seed0", "grid-random-seed1"} <= set(flow_runs)

    cmp = CliRunner().invoke(app, ["compare", "--experiment", "grid-test", "--baseline", nested[0].info.run_id,
                                   "--html", str(tmp_path / "c.html")])
    assert cmp.exit_code == 0, cmp.output
    assert "baseline" in cmp.output and "different evaluation sets" not in cmp.output
