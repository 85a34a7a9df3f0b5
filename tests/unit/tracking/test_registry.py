"""The Model Registry in a real SQLite MLflow store: challenger on registration, aliases pinned to versions, the
champion's history and rollback, the promote stage moving (or not moving) the alias, and the CLI for people."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selectune.core.lora import META
from selectune.promotion.config import PromoteConfig
from selectune.promotion.stage import promote_stage
from selectune.tracking import registry
from tests.unit.promotion.test_gate import LOSS, NOISE


def register(tmp_path: Path, name: str, n: int) -> str:
    import mlflow

    folder = tmp_path / f"adapter{n}"
    folder.mkdir()
    (folder / META).write_text(json.dumps({"n": n}))
    with mlflow.start_run():
        return registry.log_and_register(folder, name, {"selectune.n": str(n)})


def test_split_ref() -> None:
    assert registry.split_ref("models:/a/3") == ("a", "3")
    assert registry.split_ref("models:/a/latest") == ("a", "latest")
    assert registry.split_ref("models:/a@champion") == ("a", "@champion")
    assert registry.split_ref("gemma-3-270m") is None and registry.split_ref("models:/@x") is None


def test_aliases_history_and_rollback(mlflow_store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    assert register(tmp_path, "m", 1) == "models:/m/1"
    assert registry.resolve_ref("models:/m@challenger") == "models:/m/1"
    with pytest.raises(ValueError, match="no version with alias 'champion'"):
        registry.resolve_ref("models:/m@champion")
    assert registry.alias_version("m", "champion") is None and registry.alias_version("nope", "champion") is None
    register(tmp_path, "m", 2)
    assert registry.resolve_ref("models:/m@challenger") == registry.resolve_ref("models:/m/latest") == "models:/m/2"
    assert registry.resolve_ref("models:/m/1") == "models:/m/1"

    registry.set_champion("m", 1)
    assert registry.model_digest("models:/m@champion") == "models:/m/1"
    assert json.loads((registry.adapter_folder("models:/m@champion") / META).read_text()) == {"n": 1}
    registry.set_champion("m", 2)
    registry.set_champion("m", 2)  # a retry does not repeat the history
    assert registry.champion_history("m") == [1, 2]
    assert registry.rollback("m") == 1 and registry.alias_version("m", "champion") == 1
    assert registry.champion_history("m") == [1]
    with pytest.raises(ValueError, match="no earlier champion"):
        registry.rollback("m")
    assert {v.version for v in MlflowClient().search_model_versions("name='m'")} == {1, 2}  # nothing deleted


def test_promote_stage_moves_the_alias_only_for_a_better_model(mlflow_store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    v1 = register(tmp_path, "p", 1)
    first = promote_stage(PromoteConfig(), v1, None, {}, tmp_path / "r1")
    assert first.outputs.outcome == "promoted" and first.outputs.champion == "models:/p/1"
    assert client.get_model_version("p", "1").tags["selectune.promotion"] == "promoted"

    v2 = register(tmp_path, "p", 2)
    noisy = promote_stage(PromoteConfig(), v2, 1, NOISE, tmp_path / "r2", eval_set_digest="abc")
    assert noisy.outputs.outcome == "rejected" and registry.alias_version("p", "champion") == 1
    tags = client.get_model_version("p", "2").tags
    assert tags["selectune.promotion"].startswith("rejected: loss improvement +0.0200") and "not significant" in tags[
        "selectune.promotion"]
    assert tags["selectune.promotion.ci"] == "[-0.03, 0.06]" and tags["selectune.eval_set_digest"] == "abc"
    assert tags["selectune.eval.loss.tuned"] == "1.8" and registry.alias_version("p", "challenger") == 2
    decision = json.loads(noisy.outputs.decision.read_text())
    assert decision["champion_before"] == decision["champion_after"] == 1

    v3 = register(tmp_path, "p", 3)
    better = promote_stage(PromoteConfig(), v3, 1, LOSS, tmp_path / "r3")
    assert better.outputs.outcome == "promoted" and better.metrics["promote.improvement"] == pytest.approx(0.2)
    assert registry.alias_version("p", "champion") == 3 and registry.champion_history("p") == [1, 3]
    again = promote_stage(PromoteConfig(), v3, 1, LOSS, tmp_path / "r3")  # resumed: the manifest, no new decision
    assert again.skipped and registry.champion_history("p") == [1, 3]
    with pytest.raises(ValueError, match="not a pinned registry reference"):
        promote_stage(PromoteConfig(), "models:/p@challenger", 3, LOSS, tmp_path / "r4")


def test_models_promote_and_rollback_commands(mlflow_store: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from selectune.cli.main import app

    register(tmp_path, "c", 1)
    register(tmp_path, "c", 2)
    run = CliRunner().invoke
    r = run(app, ["models", "promote", "c", "1"])
    assert r.exit_code == 0 and "champion none -> 1" in r.output
    r = run(app, ["models", "promote", "c", "2"])
    assert r.exit_code == 0 and "champion 1 -> 2" in r.output
    assert MlflowClient().get_model_version("c", "2").tags["selectune.promotion"] == "promoted: by hand"
    r = run(app, ["models", "rollback", "c"])
    assert r.exit_code == 0 and "champion 2 -> 1" in r.output
    r = run(app, ["models", "rollback", "c"])
    assert r.exit_code == 2 and "no earlier champion" in r.output
    r = run(app, ["models", "promote", "c", "9"])
    assert r.exit_code == 2 and "models:/c/9" in r.output
    r = run(app, ["models", "rollback", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


def test_a_run_pins_moving_references(mlflow_store: str, tmp_path: Path) -> None:
    from selectune import decisions
    from selectune.config import EvalConfig, PipelineConfig, SelectionConfig, TuneConfig

    register(tmp_path, "j", 1)
    register(tmp_path, "j", 2)
    registry.set_champion("j", 1)
    cfg = PipelineConfig(selection=SelectionConfig(judge="models:/j@champion"),
                         eval=EvalConfig(judge="models:/j/latest"))
    pinned_cfg, pinned = decisions.pin_model_refs(cfg)
    assert pinned_cfg.selection.judge == "models:/j/1" and pinned_cfg.eval.judge == "models:/j/2"
    assert pinned == {"selection.judge": "models:/j@champion -> models:/j/1",
                      "eval.judge": "models:/j/latest -> models:/j/2"}
    assert cfg.selection.judge == "models:/j@champion"  # the recipe itself is untouched

    tune = TuneConfig(register_as="j", base="gemma-3-270m")
    # tuning skipped (subset unchanged): the candidate is the latest version, compared with the champion
    assert decisions.models_to_compare(tune, None, 1) == {"tuned": "models:/j/latest", "base": "gemma-3-270m",
                                                          "champion": "models:/j/1"}
    assert decisions.challenger(tune, None) == "models:/j/2"
    assert "champion" not in decisions.models_to_compare(tune, None, 2)  # the latest is the champion
    assert "champion" not in decisions.models_to_compare(tune, None, None)
