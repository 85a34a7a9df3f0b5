"""Run it as a service, with real servers on loopback: a Prefect API server + process worker running the
deployments, and an MLflow tracking server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures import ROOT
from tests.fixtures.servers import api_call, mlflow_server, prefect_server, prefect_worker, wait_flow_run

POOL = "test-pool"
DEBOUNCE_S = 15  # retrain-on-new-data's window here (10 minutes by default)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


CRON = "0 0 1 1 *"  # midnight on January 1


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, tiny_model: str):
    """A Prefect server, the three deployments on a process pool, and a worker; MLflow in a SQLite file."""
    tmp = tmp_path_factory.mktemp("service")
    with prefect_server(tmp / "prefect") as env:
        # its own SELECTUNE_HOME: a fresh rating cache, so the call counts below are this module's alone
        env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "SELECTUNE_HOME": str(tmp / "home")}
        grow = tmp / "incoming.jsonl"
        recipe = tmp / "on-new-data.yaml"
        recipe.write_text(json.dumps({"run_dir": str(tmp / "on-new-data-run"), "selectit": {
            "models": [tiny_model], "dtype": "float32"}, "selection": {"fraction": 0.5}, "tune": {"enabled": False},
            "eval": {"enabled": False}}))
        # a schedule that is live but does not fire while the tests run (a */30 one could start an extra run)
        for only, extra in (("curate-on-demand", []), ("scheduled-retrain", ["--cron", CRON, "--data", str(grow)]),
                            ("retrain-on-new-data", ["--within", str(DEBOUNCE_S), "--recipe", str(recipe)])):
            subprocess.run([sys.executable, str(ROOT / "deployments" / "deploy.py"), "--pool", POOL, "--only", only,
                            *extra], env={**os.environ, **env}, check=True, cwd=ROOT, capture_output=True)
        with prefect_worker(POOL, env, tmp / "worker.log", ROOT):
            yield {"api": env["PREFECT_API_URL"], "tmp": tmp, "env": env, "grow": grow}


def _deployment(api: str, name: str, flow: str = "selectune-curate") -> dict:
    return api_call("GET", f"{api}/deployments/name/{flow}/{name}").json()


def _trigger(api: str, deployment_id: str, parameters: dict) -> dict:
    res = api_call("POST", f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
    return wait_flow_run(api, res.json()["id"])


def _mlflow_runs(uri: str, flow_run_id: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(exps, filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    children = client.search_runs(exps, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, {c.info.run_name: c for c in children}


def test_dashboard_triggered_run_records_its_parameters(service, records, tiny_model) -> None:
    api, tmp = service["api"], service["tmp"]
    data = tmp / "on-demand.jsonl"
    _write_jsonl(data, records.drop(columns="id").to_dict("records"))
    dep = _deployment(api, "curate-on-demand")
    assert dep["schedules"] == [] and dep["work_pool_name"] == POOL
    props = dep["parameter_openapi_schema"]["properties"]
    assert {"data", "selectit", "reflection", "selection", "tune", "eval", "run_dir", "experiment"} <= set(props)
    params = {"data": {"input": str(data)}, "selectit": {"models": [tiny_model], "rating_scale": 3, "dtype": "float32"},
              "selection": {"fraction": 0.5}, "tune": {"enabled": False}, "eval": {"enabled": False},
              "run_dir": str(tmp / "run-a"),
              "experiment": "dashboard"}
    run = _trigger(api, dep["id"], params)
    assert run["state"]["type"] == "COMPLETED", (tmp / "worker.log").read_text()[-4000:]
    parent, children = _mlflow_runs(service["env"]["MLFLOW_TRACKING_URI"], run["id"])
    assert parent.data.params["selectit.rating_scale"] == "3" and parent.data.params["selection.fraction"] == "0.5"
    assert parent.data.params["selectit.models"] == str([tiny_model])
    assert parent.data.tags["prefect.deployment_id"] == dep["id"]
    assert parent.data.metrics["records_selected"] == 3
    assert set(children) == {"load", "selectit", "select"}
    assert (tmp / "run-a" / "select" / "selected.parquet").is_file()


def test_scheduled_retrain_scores_only_new_rows(service, records, tiny_model) -> None:
    api, tmp, grow = service["api"], service["tmp"], service["grow"]
    dep = _deployment(api, "scheduled-retrain")
    (schedule,) = dep["schedules"]
    assert schedule["schedule"]["cron"] == CRON and schedule["active"]
    assert dep["parameters"]["data"]["input"] == str(grow)
    rows = records.drop(columns="id").to_dict("records")
    override = {"selectit": {"models": [tiny_model], "dtype": "float32"}, "tune": {"enabled": False},
                "eval": {"enabled": False}}
    uri = service["env"]["MLFLOW_TRACKING_URI"]
    _write_jsonl(grow, rows[:4])
    first = _trigger(api, dep["id"], {**override, "run_dir": str(tmp / "scheduled-1")})  # never the repository
    assert first["state"]["type"] == "COMPLETED", (tmp / "worker.log").read_text()[-4000:]
    _write_jsonl(grow, rows)  # the dataset grew by two records
    second = _trigger(api, dep["id"], {**override, "run_dir": str(tmp / "scheduled-2")})
    assert second["state"]["type"] == "COMPLETED", (tmp / "worker.log").read_text()[-4000:]
    _, c1 = _mlflow_runs(uri, first["id"])
    _, c2 = _mlflow_runs(uri, second["id"])
    n_prompts = 5
    assert c1["selectit"].data.metrics["ratings_computed"] == 4 * n_prompts
    assert c2["selectit"].data.metrics["ratings_computed"] == 2 * n_prompts
    assert c2["selectit"].data.metrics["cache_hits"] == 4 * n_prompts
    assert c2["select"].data.metrics["records_in"] == 6


def test_data_added_twice_starts_one_debounced_retrain(service, records) -> None:
    """Two `selectune data add` within the debounce window: one retrain-on-new-data run, over both parts."""
    import time

    from mlflow.tracking import MlflowClient

    from tests.fixtures.servers import BIN

    api, tmp, env = service["api"], service["tmp"], service["env"]
    dep = _deployment(api, "retrain-on-new-data", "selectune-retrain-on-new-data")
    (automation,) = api_call("GET", f"{api}/automations/related-to/prefect.deployment.{dep['id']}").json()
    trigger = automation["trigger"]  # visible in the UI: Automations, and the deployment's Triggers tab
    assert trigger["expect"] == ["selectune.dataset.updated"] and trigger["within"] == DEBOUNCE_S
    assert automation["actions"][0]["schedule_after"] == DEBOUNCE_S
    rows = records.drop(columns="id").to_dict("records")
    folder = tmp / "dataset"
    for name, part in (("a.jsonl", rows[:4]), ("b.jsonl", rows[2:])):
        _write_jsonl(tmp / name, part)
        res = subprocess.run([str(BIN / "selectune"), "data", "add", "-i", str(tmp / name), "--into", str(folder)],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        out = json.loads(res.stdout)
        assert out["event"] and out["added"] == (4 if name == "a.jsonl" else 2)
    query = {"deployments": {"id": {"any_": [dep["id"]]}}}
    deadline, done = time.monotonic() + 300, []
    while time.monotonic() < deadline and not done:
        time.sleep(2)
        found = api_call("POST", f"{api}/flow_runs/filter", json=query).json()
        done = [r for r in found if r["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"}]
    assert done and done[0]["state"]["type"] == "COMPLETED", (tmp / "worker.log").read_text()[-4000:]
    assert done[0]["parameters"]["dataset"] == str(folder.resolve())
    time.sleep(DEBOUNCE_S + 5)  # well past the window: the second event started nothing
    assert len(api_call("POST", f"{api}/flow_runs/filter", json=query).json()) == 1
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (parent,) = client.search_runs([client.get_experiment_by_name("selectune-retrain").experiment_id],
                                   f"tags.`selectune.run_dir` = '{tmp / 'on-new-data-run'}'")
    assert parent.data.metrics["records_in"] == 6  # both parts, read as one dataset


def test_flow_against_mlflow_server(tmp_path, records, tiny_model, monkeypatch, prefect_home) -> None:
    """The flow with an MLflow tracking server as the tracking URI (ephemeral Prefect in a subprocess)."""
    data = tmp_path / "d.jsonl"
    _write_jsonl(data, records.drop(columns="id").to_dict("records"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"experiment": "server", "run_dir": str(tmp_path / "run"),
                                  "data": {"input": str(data)}, "selectit": {"models": [tiny_model],
                                                                             "dtype": "float32"},
                                  "selection": {"top_k": 2}, "tune": {"enabled": False},
                                  "eval": {"enabled": False}}))
    with mlflow_server(tmp_path / "mlflow") as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(prefect_home)}
        env.pop("PREFECT_API_URL", None)
        res = subprocess.run([str(Path(sys.executable).parent / "selectune"), "run", "--config", str(recipe)],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-4000:]
        out = res.stdout  # MLflow prints "View run ..." lines of its own before the summary
        summary = json.loads(out[out.index("\n{") + 1: out.rindex("}") + 1])
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        parent = client.get_run(summary["mlflow_run_id"])
        assert parent.data.metrics["records_selected"] == 2
        assert summary["mlflow_run_url"].startswith(uri)
        children = client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        select = next(c for c in children if c.info.run_name == "select")
        assert {a.path for a in client.list_artifacts(select.info.run_id)} >= {"selection_cut.png"}
        # the selected subset is a dataset version on the server, restorable without the run directory
        from selectune.core.digests import table_digest
        from selectune.tracking import datasets

        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        (selected,) = [i for i in select.inputs.dataset_inputs if i.dataset.name == "selected"]
        assert {t.key: t.value for t in selected.tags}["stored"].startswith("mlflow-artifacts:/")
        back = datasets.get(selected.dataset.digest, tmp_path / "selected.parquet")
        assert table_digest(pd.read_parquet(back)) == selected.dataset.digest
    assert not (tmp_path / "mlruns").exists() and (tmp_path / "mlflow" / "artifacts").is_dir()
