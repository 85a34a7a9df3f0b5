"""The tuning stage end to end through `selectune tune`: stage folder, MLflow child run, registered model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from selectune.cli.tune import tune_cmd


def test_tune_command_stage_and_registry(tiny_model: str, records: pd.DataFrame, mlflow_store: str,
                                         tmp_path: Path) -> None:
    import mlflow
    from transformers import AutoTokenizer

    from selectune.data.records import split, subset_digest
    from selectune.tracking import registry
    from selectune.tuning import data as sft_data
    from selectune.tuning.config import TuneConfig
    from selectune.tuning.stage import tune_stage

    records.to_parquet(tmp_path / "selected.parquet", index=False)
    tune = {"max_steps": 3, "save_steps": 2, "batch_size": 2, "grad_accum": 1, "max_tokens": 256,
            "eval_fraction": 0.34, "eval_prompts": 2, "max_new_tokens": 4, "register_as": "tiny-tuned",
            "packing": True, "learning_rate": 1e-2}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"experiment": "ignored", "tune": tune}))
    app = typer.Typer()
    app.command()(tune_cmd)
    res = CliRunner().invoke(app, ["--data", str(tmp_path / "selected.parquet"), "--output", str(tmp_path / "run"),
                                   "--base", tiny_model, "--config", str(tmp_path / "recipe.yaml")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.rindex('{\n  "mlflow_run_id"'):])

    stage = tmp_path / "run" / "tune"
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/tokenizer.json",
                 "adapter/selectune.json", "checkpoints/checkpoint-2/adapter_model.safetensors",
                 "checkpoints/checkpoint-3/trainer_state.json", "eval/metrics.json", "eval/generations.jsonl",
                 "manifest.json"):
        assert (stage / name).is_file(), name
    assert summary["model_uri"] == "models:/tiny-tuned/1" and summary["steps"] == 3
    assert summary["train_records"] == 4 and summary["heldout_records"] == 2
    tok = AutoTokenizer.from_pretrained(tiny_model)
    train, _ = split(records, 0.34, 0)
    lengths = [len(sft_data.encode(tok, "alpaca", r.instruction, r.input, r.output, 10**6).input_ids)
               for r in train.itertuples()]
    assert summary["truncated"] == sum(n > 256 for n in lengths) == 1  # the long demo record
    blocks = sft_data.pack([sft_data.Example([0] * min(n, 256), [], 0) for n in lengths], 256)
    assert summary["packed_blocks"] == len(blocks)
    assert summary["train_tokens"] >= summary["steps"] * 2 * 100 and summary["tokens_per_s"] > 0
    for key in ("eval.base_loss", "eval.tuned_loss", "eval.base_ppl", "eval.tuned_ppl", "train_loss"):
        assert summary[key] > 0, key

    client = mlflow.MlflowClient()
    child = client.search_runs([client.get_experiment_by_name("selectune").experiment_id],
                               "tags.`selectune.stage` = 'tune'")[0]
    assert child.data.tags["mlflow.parentRunId"] == summary["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "eval_loss")] == [2, 3]
    assert {"learning_rate", "grad_norm", "eval.tuned_loss", "tokens_per_s"} <= set(child.data.metrics)
    assert child.data.params["tune.lora_r"] == "16" and child.data.params["tune.template_used"] == "alpaca"
    assert {f.path for f in client.list_artifacts(child.info.run_id, "adapter")} >= {
        "adapter/adapter_model.safetensors", "adapter/selectune.json"}
    table = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=child.info.run_id,
                                                                artifact_path="eval/generations.json")).read_text())
    assert table["columns"] == ["instruction", "reference", "base", "tuned"] and len(table["data"]) == 2

    version = client.get_model_version("tiny-tuned", "1")
    assert version.run_id == child.info.run_id
    assert version.tags["selectune.base"] == tiny_model
    assert version.tags["selectune.selected_digest"] == subset_digest(tmp_path / "selected.parquet")
    assert float(version.tags["selectune.eval_loss"]) == pytest.approx(summary["eval.tuned_loss"])
    assert version.tags["selectune.data_path"] == str((tmp_path / "selected.parquet").resolve())

    model, _ = registry.load(summary["model_uri"])
    local, _ = registry.load(str(stage / "adapter"))
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, local(input_ids=ids).logits)

    cfg = TuneConfig(base=tiny_model, **tune)  # same config and data: the manifest says it already ran
    again = tune_stage(cfg, str(tmp_path / "selected.parquet"), tmp_path / "run")
    assert again.skipped and again.outputs.model_uri == "models:/tiny-tuned/1"


def test_tune_command_reports_bad_input(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(tune_cmd)
    res = CliRunner().invoke(app, ["--data", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing.parquet: no such file" in res.output
    (tmp_path / "bad.yaml").write_text("tune:\n  lora_r: 0\n")
    res = CliRunner().invoke(app, ["--data", str(tmp_path), "--output", str(tmp_path / "o"),
                                   "--config", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "lora_r" in res.output
