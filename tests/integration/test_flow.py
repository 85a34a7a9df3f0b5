"""The curation flow end to end under Prefect, tracked in a temporary MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from selectune.config import DataConfig, EvalConfig, PipelineConfig, SelectionConfig, SelectITConfig, TuneConfig
from selectune.core.prompts import prompt_text


def _config(tmp_path: Path, data_file: Path, models: list[str], on_invalid: str = "error") -> PipelineConfig:
    return PipelineConfig(run_dir=str(tmp_path / "run"), experiment="flow-test",
                          data=DataConfig(input=str(data_file), on_invalid=on_invalid),
                          selectit=SelectITConfig(models=models, dtype="float32"),
                          selection=SelectionConfig(fraction=0.5), tune=TuneConfig(enabled=False),
                          eval=EvalConfig(enabled=False))  # these tests count records: evaluation has its own


def _children(client, parent_id: str) -> dict[str, object]:
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.info.run_name: r for r in runs}


def test_flow_end_to_end(prefect_server, mlflow_store, tmp_path, records, tiny_model, tiny_model_2,
                         monkeypatch) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    from flows.curate import run_pipeline as curate

    data_file = tmp_path / "data.json"
    rows = records.drop(columns="id").to_dict("records")
    data_file.write_text(json.dumps(rows + [rows[0]] + [{"instruction": "Say hi", "output": "  "}]))
    summary = curate(_config(tmp_path, data_file, [tiny_model, tiny_model_2], on_invalid="skip"))

    run_dir = tmp_path / "run"
    for stage in ("load", "selectit", "select"):
        assert (run_dir / stage / "manifest.json").is_file()
    assert summary["records_in"] == 6 and summary["rejected"] == 1 and summary["duplicates"] == 1
    assert summary["selected"] == 3
    assert len(json.loads(Path(summary["selected_alpaca"]).read_text())) == 3
    assert (run_dir / "load" / "rejected.jsonl").read_text().count("\n") == 1
    assert Path(mlflow_store.removeprefix("sqlite:///")).is_file()
    assert not (tmp_path / "mlruns").exists() and (tmp_path / "mlartifacts").is_dir()

    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert parent.data.params["selectit.rating_scale"] == "5" and parent.data.params["selection.fraction"] == "0.5"
    assert parent.data.metrics["records_selected"] == 3
    children = _children(client, parent.info.run_id)
    assert set(children) == {"load", "selectit", "select"}
    load, score, select = children["load"], children["selectit"], children["select"]
    assert all(c.info.status == "FINISHED" for c in children.values())
    assert load.data.metrics["rejected"] == 1 and load.data.metrics["duplicates"] == 1
    assert load.data.metrics["records_out"] == 6 and load.data.metrics["rows_read"] == 8
    assert score.data.metrics["ratings_computed"] == 2 * 6 * 5 and score.data.metrics["cache_hits"] == 0
    assert score.data.metrics["records_per_s"] > 0 and "auroc.selectit_score" in score.data.metrics
    assert score.data.params["selectit.models"].startswith("[")
    assert select.data.metrics["records_out"] == 3 and "cut_value" in select.data.metrics
    for child, name in ((load, "records"), (score, "scored"), (select, "selected")):
        (ds_input,) = child.inputs.dataset_inputs
        assert ds_input.dataset.name == name and len(ds_input.dataset.digest) == 16
    selected_df = pd.read_parquet(run_dir / "select" / "selected.parquet")
    from selectune.core.digests import table_digest as digest

    assert select.inputs.dataset_inputs[0].dataset.digest == digest(selected_df)
    artifacts = {a.path for c in children.values() for a in client.list_artifacts(c.info.run_id)}
    assert {"selectit_hist.png", "selection_cut.png", "score_vs_length.png", "selectit_scores.json"} <= artifacts

    async def prefect_records():
        async with get_client() as pc:
            fr = await pc.read_flow_run(flow_run_id)
            arts = await pc.read_artifacts()
            return fr, [a for a in arts if a.key == "selectune-curate" and str(a.flow_run_id) == flow_run_id]

    import asyncio

    fr, arts = asyncio.run(prefect_records())
    assert fr.state.is_completed()
    assert arts and summary["mlflow_run_id"] in arts[0].data

    # Re-running with the same config skips every stage by its manifest: no model is loaded.
    import selectune.core.models as models

    def no_load(*a, **k):
        raise AssertionError("model loaded on a resumed run")

    monkeypatch.setattr(models, "load_causal_lm", no_load)
    again = curate(_config(tmp_path, data_file, [tiny_model, tiny_model_2], on_invalid="skip"))
    assert again["skipped_stages"] == "load,selectit,select" and again["selected"] == 3
    rerun_children = _children(client, again["mlflow_run_id"])
    assert {c.data.tags["selectune.skipped"] for c in rerun_children.values()} == {"true"}


def test_stage_failure_marks_runs_failed(prefect_server, mlflow_store, tmp_path, tiny_model) -> None:
    from mlflow.tracking import MlflowClient

    from flows.curate import run_pipeline as curate
    from selectune.data.readers import DataValidationError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": ""}\n')
    with pytest.raises(DataValidationError, match="line 2"):
        curate(_config(tmp_path, bad, [tiny_model]))
    client = MlflowClient()
    (parent,) = client.search_runs([client.get_experiment_by_name("flow-test").experiment_id],
                                   filter_string="tags.mlflow.runName LIKE 'curate-%'")
    assert parent.info.status == "FAILED"
    children = _children(client, parent.info.run_id)
    assert children["load"].info.status == "FAILED"
    assert "line 2" in children["load"].data.tags["selectune.error"]
    assert not (tmp_path / "run" / "load" / "manifest.json").exists()


def test_retrain_only_when_selected_subset_changes(prefect_server, mlflow_store, tmp_path, records,
                                                   tiny_model) -> None:
    """Incremental retraining: same data -> 'no change', no new model version; grown data -> a new version."""
    from mlflow.tracking import MlflowClient

    from flows.curate import run_pipeline as curate

    data_file = tmp_path / "data.json"
    rows = records.drop(columns="id").to_dict("records")
    data_file.write_text(json.dumps(rows[:4]))
    tune = TuneConfig(base=tiny_model, max_steps=2, batch_size=2, grad_accum=1, max_tokens=128, eval_prompts=1,
                      max_new_tokens=4, register_as="flow-test-sft", dtype="float32")

    def run(name: str) -> dict:
        cfg = _config(tmp_path, data_file, [tiny_model]).model_copy(
            update={"tune": tune, "run_dir": str(tmp_path / name)})
        return curate(cfg)

    first = run("r1")
    assert first["model_uri"] == "models:/flow-test-sft/1"
    second = run("r2")  # a new run dir, same data: selection identical, no retraining
    assert "model_uri" not in second and second["tune"].startswith("no change")
    assert not (tmp_path / "r2" / "tune").exists()
    data_file.write_text(json.dumps(rows))  # the dataset grew: the subset changes
    third = run("r3")
    assert third["model_uri"] == "models:/flow-test-sft/2"
    client = MlflowClient()
    v2 = client.get_model_version("flow-test-sft", "2")
    assert v2.tags["selectune.selected_digest"] == third["selected_digest"] != first["selected_digest"]
    assert client.get_run(second["mlflow_run_id"]).data.tags["selectune.tune"] == "no change"
    # promotion: the first version becomes champion; the unchanged run keeps it; without an evaluation nothing
    # can show the new version is better, so it stays challenger
    assert first["promotion"] == "promoted" and first["champion"] == "models:/flow-test-sft/1"
    assert second["promotion"] == "kept" and second["champion"] == "models:/flow-test-sft/1"
    assert third["promotion"] == "rejected: no loss comparison with the champion was measured"
    assert v2.aliases == ["challenger"] and client.get_model_version("flow-test-sft", "1").aliases == ["champion"]
    assert client.get_run(third["mlflow_run_id"]).data.tags["selectune.champion_at_start"] == "models:/flow-test-sft/1"


def test_promotion_gate(prefect_server, mlflow_store, tmp_path, tiny_model) -> None:
    """Version 1 (an untrained adapter) becomes champion; version 2 (untrained, other data) is not better on the
    same evaluation set and stays challenger with the reason; version 3 (trained) is clearly better and is
    promoted; every later reference to models:/NAME@champion means version 3."""
    from mlflow.tracking import MlflowClient

    from flows.curate import run_pipeline as curate
    from selectune.tracking import registry

    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(_dataset(48)))
    untrained = TuneConfig(base=tiny_model, max_steps=1, learning_rate=1e-12, batch_size=2, grad_accum=1,
                           max_tokens=128, dtype="float32", register_as="promo")
    trained = untrained.model_copy(update={"max_steps": 30, "learning_rate": 5e-3, "warmup_ratio": 0.0})

    def run(name: str, tune: TuneConfig, seed: int) -> dict:
        cfg = _config(tmp_path, data_file, [tiny_model]).model_copy(update={
            "tune": tune, "eval": EvalConfig(fraction=0.25, bootstrap_resamples=200), "run_dir": str(tmp_path / name),
            "selection": SelectionConfig(strategy="random", fraction=0.5, seed=seed)})
        return curate(cfg)

    first, second, third = run("v1", untrained, 0), run("v2", untrained, 1), run("v3", trained, 2)
    client = MlflowClient()
    assert first["promotion"] == "promoted" and first["promotion_reason"] == "first registered version"
    assert "eval.loss.tuned_vs_champion.delta" not in first  # no champion to compare with yet
    assert abs(second["eval.loss.tuned_vs_champion.delta"]) < 1e-4  # two untrained adapters: the same model
    assert second["promotion"].startswith("rejected: loss improvement") and second["champion"] == "models:/promo/1"
    v2 = client.get_model_version("promo", "2")
    assert v2.aliases == [] and v2.tags["selectune.promotion"] == second["promotion"]  # v3 took 'challenger'
    assert v2.tags["selectune.eval_set_digest"] == second["eval_set_digest"] == third["eval_set_digest"]
    assert third["eval.loss.tuned_vs_champion.delta"] < -0.5 and third["promotion"] == "promoted"
    assert third["champion"] == "models:/promo/3" and registry.champion_history("promo") == [1, 3]
    parent = client.get_run(third["mlflow_run_id"]).data
    assert parent.tags["selectune.promotion"] == "promoted" and parent.metrics["promote.ci_low"] > 0
    decision = json.loads((tmp_path / "v3" / "promote" / "decision.json").read_text())
    assert decision["champion_before"] == 1 and decision["champion_after"] == 3
    assert registry.load_model("models:/promo@champion").adapter_dir == str(
        registry.adapter_folder("models:/promo/3"))

    # the champion's training data outlives its run directory
    import shutil

    from selectune.core.digests import table_digest
    from selectune.tracking import datasets

    trained_ids = set(pd.read_parquet(tmp_path / "v3" / "select" / "selected.parquet")["id"])
    shutil.rmtree(tmp_path / "v3")
    digest = client.get_model_version("promo", "3").tags["selectune.dataset.training"]
    back = pd.read_parquet(datasets.get(datasets.model_dataset("models:/promo@champion"), tmp_path / "back.parquet"))
    assert table_digest(back) == digest and set(back["id"]) == trained_ids
    evaluated = pd.read_parquet(datasets.get(datasets.model_dataset("models:/promo/2", "evaluation"),
                                             tmp_path / "eval.parquet"))
    assert len(evaluated) == third["eval_records"] and not set(evaluated["id"]) & trained_ids


@pytest.mark.parametrize("order", ["before_scoring", "after_scoring"])
def test_flow_with_reflection_key_from_secret_block(prefect_server, mlflow_store, tmp_path, records, tiny_model,
                                                    monkeypatch, order) -> None:
    """Recycling inside the flow against a real OpenAI-compatible server, the API key read from a Prefect
    Secret block (no environment variable): the key is sent, never stored; MLflow has the recycle child run
    and the teacher totals; the scored set is the recycled one."""
    from mlflow.tracking import MlflowClient
    from prefect.blocks.system import Secret

    from flows.curate import run_pipeline as curate
    from selectune.config import ReflectionConfig
    from tests.fixtures.openai_server import FakeOpenAI
    from tests.fixtures.scripted_teacher import scripted

    key = "sk-flow-secret-4d1c9e"
    Secret(value=key).save("teacher-key-flow-test", overwrite=True)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(records.drop(columns="id").to_dict("records")))
    with FakeOpenAI(reply=scripted) as srv:
        reflection = ReflectionConfig.model_validate({
            "enabled": True, "order": order, "top_fraction": 0.5, "keep_regardless": True,
            "student": {"model": tiny_model, "dtype": "float32"},
            "teacher": {"backend": "openai", "model": "m", "base_url": srv.url, "temperature": 0,
                        "max_retries": 0, "api_key_secret": "teacher-key-flow-test"}})
        cfg = _config(tmp_path, data_file, [tiny_model]).model_copy(update={"reflection": reflection})
        summary = curate(cfg)
    assert srv.total > 0 and {h["authorization"] for h in srv.headers} == {f"Bearer {key}"}

    run_dir = tmp_path / "run"
    recycled = pd.read_parquet(run_dir / "recycle" / "recycled.parquet")
    n_in = len(records) if order == "before_scoring" else 3  # the top half of the six scored records
    assert len(recycled) == n_in and (recycled["decision"] == "kept").all()  # keep_regardless
    assert set(recycled["variant"]) - {"ori"}, "the scripted teacher's rewrites should be chosen somewhere"
    scored_stage = "selectit" if order == "before_scoring" else "selectit-recycled"
    scored = pd.read_parquet(run_dir / scored_stage / "scored.parquet")
    assert sorted(scored["id"]) == sorted(recycled["id"])
    assert summary["selected"] == len(pd.read_parquet(run_dir / "select" / "selected.parquet"))

    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    children = _children(client, parent.info.run_id)
    assert {"load", "recycle", "select"} <= set(children) and scored_stage in children
    rec = children["recycle"].data.metrics
    assert rec["teacher.calls"] == srv.total and rec["records_recycled"] == n_in
    assert parent.data.metrics["teacher.calls"] == srv.total
    assert parent.data.params["reflection.teacher.api_key_secret"] == "teacher-key-flow-test"
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:  # run dir, MLflow store, artifacts, cache
        assert key.encode() not in path.read_bytes(), path


def _dataset(n: int) -> list[dict[str, str]]:
    words = ("the capital of france is paris two and three is five a python function returns the sum of a list "
             "translate good morning red is a color").split()
    return [{"instruction": f"Explain {' '.join(words[i % 7:i % 7 + 3])} number {i}?", "input": "",
             "output": " ".join(words[(i * 3) % 20:(i * 3) % 20 + 4 + i % 5])} for i in range(n)]


def test_evaluation_is_fixed_across_runs_and_recomputable(prefect_server, mlflow_store, tmp_path, tiny_model) -> None:
    """Two runs with different selection strategies: the same evaluation set (digest tag), never trained on; the
    logged tuned-model loss equals a recomputation from the registered adapter on the logged evaluation set; the
    judge's win-rate and the harness's local tasks are measured per item."""
    import torch
    from mlflow.tracking import MlflowClient

    from flows.curate import run_pipeline as curate
    from selectune.tracking import registry
    from tests.fixtures import LM_EVAL_TASKS

    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(_dataset(48)))
    tune = TuneConfig(base=tiny_model, max_steps=2, batch_size=2, grad_accum=1, max_tokens=128, dtype="float32",
                      register_as="eval-test")
    evaluation = EvalConfig(fraction=0.25, judge=tiny_model, max_new_tokens=4, lm_eval_tasks=["selectune_mc"],
                            lm_eval_include_path=str(LM_EVAL_TASKS), bootstrap_resamples=200)
    summaries = []
    for strategy in ("top", "random"):
        cfg = _config(tmp_path, data_file, [tiny_model]).model_copy(update={
            "tune": tune, "eval": evaluation, "run_dir": str(tmp_path / strategy),
            "selection": SelectionConfig(strategy=strategy, fraction=0.5)})
        summaries.append(curate(cfg))
    top, rnd = summaries
    assert top["eval_set_digest"] == rnd["eval_set_digest"] and top["selected_digest"] != rnd["selected_digest"]
    client = MlflowClient()
    tags = [client.get_run(s["mlflow_run_id"]).data.tags for s in summaries]
    assert tags[0]["selectune.eval_set_digest"] == tags[1]["selectune.eval_set_digest"] == top["eval_set_digest"]
    eval_set = pd.read_parquet(tmp_path / "top" / "evalset" / "eval.parquet")
    assert len(eval_set) == top["eval_records"] > 5
    for strategy in ("top", "random"):
        trained = set(pd.read_parquet(tmp_path / strategy / "select" / "selected.parquet")["id"])
        pool = set(pd.read_parquet(tmp_path / strategy / "evalset" / "pool.parquet")["id"])
        assert trained and not trained & set(eval_set["id"]) and not pool & set(eval_set["id"])

    # the logged tuned loss, recomputed independently from the registered adapter on the evaluation set
    model, tok = registry.load(top["model_uri"])
    nll, count = 0.0, 0
    for r in eval_set.itertuples():
        prompt = tok(prompt_text("alpaca", tok, r.instruction, r.input), add_special_tokens=True)["input_ids"]
        reply = tok(r.output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([(prompt + reply)[:128]])
        n = ids.shape[1] - len(prompt)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        nll -= float(logp[len(prompt) - 1:, :].gather(1, ids[0, len(prompt):, None]).sum()) if n > 0 else 0.0
        count += max(n, 0)
    metrics = client.get_run(top["mlflow_run_id"]).data.metrics
    assert metrics["eval.loss.tuned"] == pytest.approx(nll / count, abs=1e-4)
    assert metrics["eval.loss.tuned_vs_base.delta"] == pytest.approx(metrics["eval.loss.tuned"]
                                                                      - metrics["eval.loss.base"], abs=1e-4)
    assert metrics["eval.loss.tuned_vs_base.delta.ci_low"] <= metrics["eval.loss.tuned_vs_base.delta"]
    assert 0 <= metrics["eval.winrate.tuned_vs_base"] <= 1 and metrics["eval.winrate.tuned_vs_base.parse_failures"] == 0
    assert metrics["eval.winrate.tuned_vs_base.items"] == len(eval_set)
    assert {"eval.lm_eval.selectune_mc.acc.tuned", "eval.lm_eval.selectune_mc.acc.base"} <= set(metrics)
    items = pd.read_parquet(tmp_path / "top" / "evaluate" / "items.parquet")
    assert set(items["metric"]) == {"loss", "winrate_vs_base", "orders_agree_vs_base", "answer_chars",
                                    "lm_eval.selectune_mc.acc"}
    assert len(items[items["metric"] == "loss"]) == 2 * len(eval_set)
    evaluate_run = tags[0]["selectune.evaluate_run_id"]
    assert "evaluate/items.parquet" in {a.path for a in client.list_artifacts(evaluate_run, "evaluate")}
    ds = [i.dataset for i in client.get_run(
        next(r.info.run_id for r in client.search_runs([client.get_run(top["mlflow_run_id"]).info.experiment_id],
                                                        f"tags.mlflow.parentRunId = '{top['mlflow_run_id']}' and "
                                                        "tags.mlflow.runName = 'evalset'"))).inputs.dataset_inputs]
    assert ds[0].name == "eval_set"


def test_official_recipe_runs_every_stage_in_official_mode(prefect_server, mlflow_store, tmp_path, records,
                                                           tiny_model, tiny_embedder, monkeypatch) -> None:
    """deployments/recipes/official.yaml end to end (tiny models, a local reflector server as the teacher): each
    stage's manifest and MLflow child run record fidelity official and the official values it filled in."""
    import yaml
    from mlflow.tracking import MlflowClient

    from flows.curate import run_pipeline as curate
    from selectune.config import PipelineConfig
    from tests.fixtures import RECIPES
    from tests.fixtures.openai_server import FakeOpenAI

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(_dataset(24)))
    raw = yaml.safe_load((RECIPES / "official.yaml").read_text(encoding="utf-8"))
    with FakeOpenAI({"reflector": True}) as srv:
        tiny = {"dtype": "float32"}
        overrides = {
            "run_dir": str(tmp_path / "run"), "experiment": "official-test", "data": {"input": str(data_file)},
            "selectit": {"models": [tiny_model], **tiny},
            "reflection": {"limit": 8, "student": {"model": tiny_model, **tiny},
                           "teacher": {"backend": "openai", "model": "m", "base_url": srv.url, "max_retries": 0}},
            "tune": {"base": tiny_model, "max_steps": 1, "batch_size": 2, "grad_accum": 1, "max_tokens": 128,
                     "eval_prompts": 1, "max_new_tokens": 4, "register_as": None, **tiny},
            "judge": {"base": tiny_model, "embedder": tiny_embedder, "n_samples": 1, "max_new_tokens": 4,
                      "max_steps": 1, "batch_size": 2, "grad_accum": 1, "register_as": None, **tiny},
            "eval": {"enabled": False}}
        for key, value in overrides.items():
            raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
        cfg = PipelineConfig.model_validate(raw)
        assert (cfg.selectit.num_prompts, cfg.selectit.normalization, cfg.reflection.teacher.max_new_tokens,
                cfg.reflection.student.template, cfg.judge.lora_r, cfg.judge.lr_scheduler) == (
            5, "official", 2048, "vicuna", 16, "linear")
        summary = curate(cfg)
        bodies = list(srv.bodies)
    assert bodies and {(b["temperature"], b["top_p"], b["max_tokens"]) for b in bodies} == {(0, 1.0, 2048)}
    run_dir = tmp_path / "run"
    manifests = {p.parent.name: json.loads(p.read_text()) for p in run_dir.glob("*/manifest.json")}
    assert {"selectit", "recycle", "tune", "judge"} <= set(manifests)
    assert manifests["selectit"]["config"]["fidelity"] == "official"
    assert manifests["recycle"]["config"]["fidelity"] == manifests["recycle"]["config"]["student"]["fidelity"] \
        == "official"
    assert manifests["judge"]["config"]["fidelity"] == "official"
    recycled = pd.read_parquet(run_dir / "recycle" / "recycled.parquet")
    gated = recycled[recycled["reason"] != "not recycled (limit)"]
    assert len(gated) == 8 and set(gated.loc[gated["decision"] == "kept", "variant"]) <= {"qa", "a"}
    children = _children(MlflowClient(), summary["mlflow_run_id"])
    params = {name: run.data.params for name, run in children.items()}
    assert (params["selectit"]["selectit.fidelity"], params["selectit"]["selectit.num_prompts"]) == ("official", "5")
    assert params["recycle"]["recycle.fidelity"] == "official" and params["judge"]["judge.fidelity"] == "official"
    assert params["judge"]["judge.warmup_steps"] == "100"
    tags = {name: run.data.tags for name, run in children.items()}  # every prompt used, versioned in the registry
    assert tags["selectit"]["selectune.prompt.selectit-rating.uri"].startswith("prompts:/selectune-selectit-rating/")
    assert {"selectune.prompt.reflect-instruction", "selectune.prompt.reflect-response"} <= set(tags["recycle"])
    assert {"selectune.prompt.judge-with-reference", "selectune.prompt.judge-without-reference"} <= set(tags["judge"])
