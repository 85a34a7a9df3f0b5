"""LoRA training on a tiny model: target modules, adapter vs base, merge, evaluation equal to a direct
computation, the registry round trip, resume after a kill."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from selectune.core import lora, prompts
from selectune.tracking import registry
from selectune.tuning import data as sft_data
from selectune.tuning import evaluate
from selectune.tuning import train as sft
from selectune.tuning.config import TuneConfig
from tests.fixtures import ROOT

TINY = dict(max_steps=2, save_steps=2, batch_size=2, grad_accum=1, max_tokens=256, eval_fraction=0.34,
            eval_prompts=2, max_new_tokens=4, register_as=None, learning_rate=1e-2, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> str:
    from selectune.data.records import record_id

    rows = [("What is the capital of France?", "", "Paris is the capital of France."),
            ("Add two and three.", "", "2 + 3 = 5"), ("Translate to French", "good morning", "bonjour"),
            ("Write a python function.", "", "def f(xs):\n    return sum(xs)"),
            ("List three colors.", "", "red, green and blue"), ("Explain a function.", "", "A named block. " * 4)]
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", [record_id(*r) for r in rows])
    path = tmp_path_factory.mktemp("sel") / "selected.parquet"
    df.to_parquet(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def trained(tiny_model: str, selected: str, tmp_path_factory: pytest.TempPathFactory) -> sft.TrainResult:
    return sft.train(TuneConfig(base=tiny_model, merge=True, **TINY), selected, tmp_path_factory.mktemp("run"))


def _tok(path: str):  # noqa: ANN202
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_target_modules(tiny_model: str) -> None:
    from selectune.core.models import load_causal_lm

    model, _ = load_causal_lm(tiny_model)
    assert lora.find_target_modules(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                              "v_proj"]
    with pytest.raises(ValueError, match="no attention/MLP projection layers found in Sequential"):
        lora.find_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_adapter_changes_base_does_not(trained: sft.TrainResult, tiny_model: str) -> None:
    from safetensors.torch import load_file

    original = load_file(Path(tiny_model) / "model.safetensors")
    dtype = getattr(torch, lora.read_meta(trained.adapter_dir)["dtype"])
    state = trained.model.state_dict()
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in state.items()
            if "lora_" not in k}
    assert set(original) <= set(base)
    for name, value in original.items():
        assert torch.equal(base[name], value.to(dtype).float()), name  # frozen (trained in bf16 where supported)
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert len(lora_b) == 2 * 7 and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero
    saved = load_file(trained.adapter_dir / "adapter_model.safetensors")
    assert len(saved) == 2 * 2 * 7 and not (trained.adapter_dir / "training_args.bin").exists()
    assert trained.metrics["steps"] == 2 and trained.metrics["train_records"] == 4
    assert trained.metrics["heldout_records"] == 2 and trained.metrics["train_tokens"] > 0


def test_merged_model_matches_adapter(trained: sft.TrainResult) -> None:
    from transformers import AutoModelForCausalLM

    assert trained.merged_dir is not None and (trained.merged_dir / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(trained.merged_dir)
    assert not any("lora" in k for k in merged.state_dict())
    ids = torch.tensor([trained.tokenizer("write a python function")["input_ids"]])
    with torch.no_grad():  # merging into bf16 base weights rounds W + BA once more: compare distances
        tuned, got = trained.model(input_ids=ids).logits.float(), merged(input_ids=ids).logits.float()
        with trained.model.disable_adapter():
            base = trained.model(input_ids=ids).logits.float()
    assert (got - tuned).abs().max() < 0.1 * (base - tuned).abs().max()


def _direct_loss(model: torch.nn.Module, examples: list[sft_data.Example]) -> float:
    nll, n = 0.0, 0
    with torch.no_grad():
        for ex in examples:  # one at a time: the model's own shifted loss is a per-token mean
            k = sum(t != -100 for t in ex.labels[1:])
            nll += model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss.item() * k
            n += k
    return nll / n


def test_evaluation_equals_direct_computation(trained: sft.TrainResult, tiny_model: str, tmp_path: Path) -> None:
    from selectune.core.models import load_causal_lm

    ev = evaluate.evaluate(trained.model, trained.tokenizer, trained.heldout, trained.template, 256, 2, 4, tmp_path)
    exs = sft_data.encode_frame(trained.heldout, trained.tokenizer, "alpaca", 256)[0]
    base, _ = load_causal_lm(tiny_model, lora.read_meta(trained.adapter_dir)["dtype"])  # as trained
    base.float()  # train() hands back float32 on CPU
    assert ev.metrics["eval.base_loss"] == pytest.approx(_direct_loss(base, exs), abs=1e-5)
    assert ev.metrics["eval.tuned_loss"] == pytest.approx(_direct_loss(trained.model, exs), abs=1e-5)
    assert ev.metrics["eval.tuned_ppl"] == pytest.approx(math.exp(ev.metrics["eval.tuned_loss"]), rel=1e-5)
    assert ev.metrics["eval.tuned_loss"] != ev.metrics["eval.base_loss"]
    assert list(ev.table.columns) == ["instruction", "reference", "base", "tuned"] and len(ev.table) == 2
    assert json.loads((tmp_path / "metrics.json").read_text()) == ev.metrics
    # batched greedy generation (left padding) equals one prompt at a time
    ids = [prompts.prompt_ids("alpaca", trained.tokenizer, r.instruction, r.input) for r in
           trained.heldout.itertuples()]
    one = [evaluate.generate(trained.model, trained.tokenizer, [p], 4)[0] for p in ids]
    assert one == list(ev.table["tuned"])


def test_registry_round_trip(trained: sft.TrainResult, mlflow_store: str) -> None:
    import mlflow

    from selectune.tracking import runs

    runs.setup("test")
    with mlflow.start_run():
        uri = registry.log_and_register(trained.adapter_dir, "tiny-sft", {"selectune.base": "tiny"})
    assert uri == "models:/tiny-sft/1"
    assert mlflow.MlflowClient().get_model_version("tiny-sft", "1").tags == {"selectune.base": "tiny"}
    model, tok = registry.load(uri)
    ids = torch.tensor([trained.tokenizer("what is the capital of france")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, trained.model(input_ids=ids).logits)
    assert tok.get_vocab() == trained.tokenizer.get_vocab()
    replies = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"instruction": ["Add two and three."]}),
                                                    params={"max_new_tokens": 3})
    assert len(replies) == 1 and isinstance(replies[0], str)
    files = [p.name for p in Path(mlflow.artifacts.download_artifacts(uri)).rglob("*")]
    assert "python_model.pkl" not in files and "pyfunc_code.py" in files  # models-from-code: no pickle to load
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".bin"))]


KILLER = """
import os, signal, sys
from transformers import TrainerCallback
from selectune.tuning import train as sft
from selectune.core.config import load_stage_config as stage_config
from selectune.tuning.config import TuneConfig

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

sft.train(stage_config(TuneConfig, "tune", sys.argv[1]), sys.argv[2], sys.argv[3], callbacks=(Kill(),))
"""


def test_resume_after_kill(tiny_model: str, selected: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml
    from safetensors.torch import load_file

    from selectune.tuning.__main__ import main

    cfg = TuneConfig(base=tiny_model, **{**TINY, "max_steps": 4, "eval_fraction": 0.0, "lora_dropout": 0.0})
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({"tune": cfg.model_dump(mode="json")}))
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "tune.yaml"), selected, str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "adapter").exists()

    main(["--data", selected, "--output", str(out), "--config", str(tmp_path / "tune.yaml")])  # -m selectune.tuning
    stdout = capsys.readouterr().out
    printed = json.loads(stdout[stdout.rindex('{\n  "adapter"'):])
    assert printed["resumed_from_step"] == 2 and printed["steps"] == 4
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]

    whole = sft.train(cfg, selected, tmp_path / "whole")
    assert whole.metrics["steps"] == 4 and whole.metrics["resumed_from_step"] == 0
    resumed, straight = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (out, tmp_path / "whole"))
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("packing", [False, True])
def test_fused_head_loss_trains_the_adapter_the_model_loss_trains(tiny_model: str, selected: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, caplog,
                                                                  packing: bool) -> None:
    """Two optimizer steps of two micro-batches each (gradient accumulation normalised by the items in the batch)
    with the fused LM-head loss and with the model's own loss (the fallback when the fused loss does not reproduce
    it on the first batch): the same adapter weights and training losses."""
    from safetensors.torch import load_file

    from selectune.core import losses

    cfg = TuneConfig(base=tiny_model, **{**TINY, "grad_accum": 2, "batch_size": 1, "dtype": "float32"},
                     packing=packing)
    fused = sft.train(cfg, selected, tmp_path / "fused")
    assert "fused LM-head loss" not in caplog.text
    real = losses.causal_lm_loss
    monkeypatch.setattr(losses, "causal_lm_loss", lambda *a, **k: real(*a, **k) * 1.5)  # a logit scale it misses
    own = sft.train(cfg, selected, tmp_path / "own")
    assert "does not reproduce the model's own" in caplog.text  # checked on the first batch: the model's loss
    a, b = (load_file(r.adapter_dir / "adapter_model.safetensors") for r in (fused, own))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-5)  # Adam magnifies float rounding
    assert fused.metrics["train_loss"] == pytest.approx(own.metrics["train_loss"], rel=1e-5)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in a.items() if "lora_B" in k)
