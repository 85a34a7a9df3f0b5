"""The judge's self-distillation loss by hand, training lowers it, training resumes after a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.judge.config import JudgeConfig
from tests.unit.judge.helpers import pairs_of


def test_selfj_loss_matches_hand_computation() -> None:
    import torch

    from selectune.judge.train import selfj_loss

    ref = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0]])
    free = np.array([[0.0, 1.0, 0.5, -0.5], [1.5, -1.0, 0.3, 0.0]])
    target = np.array([0, 2])

    def log_softmax(x: np.ndarray) -> np.ndarray:
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(free)
    ce_ref, ce_free = -lp[[0, 1], target].mean(), -lq[[0, 1], target].mean()
    kl = (np.exp(lp) * (lp - lq)).sum() / 2  # KL(p_ref || p_free), mean over the 2 target positions
    expected = ce_ref + 0.3 * ce_free + 2.0 * kl
    t_ref = torch.tensor(ref, requires_grad=True)
    loss, parts = selfj_loss(t_ref, torch.tensor(free, requires_grad=True), torch.tensor(target), 0.3, 2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert parts["kl"].item() == pytest.approx(kl, rel=1e-10) and kl > 0
    assert parts["ce_ref"].item() == pytest.approx(ce_ref) and parts["ce_free"].item() == pytest.approx(ce_free)
    loss.backward()  # the with-reference view is a teacher only through its CE term: its KL side is detached
    grad_ce_only = torch.autograd.grad(torch.nn.functional.cross_entropy(t_ref, torch.tensor(target)), t_ref)[0]
    assert torch.allclose(t_ref.grad, grad_ce_only)


def test_training_lowers_loss_on_constant_target(tiny_model: str, records: pd.DataFrame, tmp_path: Path) -> None:
    from selectune.judge.infer import Judge, score_pairs
    from selectune.judge.train import train_judge

    labels = pairs_of(records).assign(id=records["id"], sample=0, digit=7)
    cfg = JudgeConfig(base=tiny_model, max_steps=15, learning_rate=5e-3, warmup_ratio=0.0, batch_size=6,
                      grad_accum=1, lora_r=4, lora_alpha=8, lora_dropout=0.0, save_steps=1000, dtype="float32")
    res = train_judge(cfg, labels, tmp_path / "run")
    assert (res.adapter_dir / "adapter_model.safetensors").is_file() and (res.adapter_dir / "selectune.json").is_file()
    assert res.metrics["steps"] == 15
    jd = Judge(res.model, res.tokenizer, res.template, cfg.max_tokens)
    trained = score_pairs(jd, labels, False)
    with res.model.disable_adapter():
        before = score_pairs(jd, labels, False)
    p7_after = np.stack(trained["judge_probs"])[:, 7].mean()
    p7_before = np.stack(before["judge_probs"])[:, 7].mean()
    assert p7_after > 0.9 > p7_before
    assert abs(trained["judge_score"] - 7).mean() < abs(before["judge_score"] - 7).mean()
    assert res.metrics["final_ce_ref"] < 0.2 and res.metrics["final_ce_free"] < 0.2
    assert res.metrics["train_loss"] > 2 * (res.metrics["final_ce_ref"] + 0.3 * res.metrics["final_ce_free"])


def test_training_resumes_after_a_crash(tiny_model: str, records: pd.DataFrame, tmp_path: Path) -> None:
    from safetensors.numpy import load_file
    from transformers import TrainerCallback

    from selectune.judge.train import train_judge

    class Crash(TrainerCallback):
        def on_step_end(self, args: object, state: object, control: object, **_: object) -> None:
            if state.global_step == 3:
                raise RuntimeError("killed at step 3")

    labels = pairs_of(records).assign(id=records["id"], sample=0, digit=[1, 2, 3, 4, 5, 6])
    cfg = JudgeConfig(base=tiny_model, max_steps=4, save_steps=2, batch_size=3, grad_accum=1, lora_r=2,
                      lora_dropout=0.0, dtype="float32")
    with pytest.raises(RuntimeError, match="killed"):
        train_judge(cfg, labels, tmp_path / "run", callbacks=(Crash(),))
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train_judge(cfg, labels, tmp_path / "run")
    assert resumed.metrics["resumed_from_step"] == 2 and resumed.metrics["steps"] == 4
    straight = train_judge(cfg, labels, tmp_path / "straight")
    a, b = (load_file(str(r.adapter_dir / "adapter_model.safetensors")) for r in (resumed, straight))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert train_judge(cfg, labels.assign(digit=3), tmp_path / "run").metrics["resumed_from_step"] == 0
