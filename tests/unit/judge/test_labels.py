"""Self-J labels: the recalibration formula, seeded batch-independent sampling, the label rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selectune.judge.config import JudgeConfig
from selectune.judge.labels import make_labels
from selectune.judge.prompts import expected_score


def test_labels_follow_formula() -> None:
    probs = np.zeros((4, 10))
    probs[0, 6] = 1.0                    # self-eval 6
    probs[1, [2, 8]] = 0.5               # self-eval 5
    probs[2] = 0.1                       # uniform: 4.5
    probs[3, [0, 9]] = [0.75, 0.25]      # 2.25
    cos = np.array([0.8, -0.4, 0.0, 1.0])
    self_eval = expected_score(probs)
    assert self_eval.tolist() == pytest.approx([6.0, 5.0, 4.5, 2.25])
    label, digit = make_labels(self_eval, cos, 0.5)
    # (1 - 0.5) * s + 0.5 * 9 * max(cos, 0)
    assert label.tolist() == pytest.approx([3.0 + 3.6, 2.5 + 0.0, 2.25, 1.125 + 4.5])
    assert digit.tolist() == [7, 3, 2, 6]  # 6.6 -> 7, 2.5 -> 3 (half up), 2.25 -> 2, 5.625 -> 6
    assert make_labels(np.array([9.0]), np.array([1.0]), 0.0)[1].tolist() == [9]


def test_sampling_is_seeded_and_batch_independent(tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.judge.labels import sample_responses
    from selectune.tracking.registry import load_model

    lm = load_model(tiny_model, dtype="float32")
    a = sample_responses(lm, records, 2, 1.0, 1.0, 6, seed=3, batch_size=16)
    b = sample_responses(lm, records.iloc[::-1].reset_index(drop=True), 2, 1.0, 1.0, 6, seed=3, batch_size=1)
    assert len(a) == 2 * len(records) and set(a["sample"]) == {0, 1}
    key = ["id", "sample"]
    assert a.sort_values(key)["response"].tolist() == b.sort_values(key)["response"].tolist()
    c = sample_responses(lm, records, 2, 1.0, 1.0, 6, seed=4)
    assert a["response"].tolist() != c["response"].tolist()


def test_generate_labels_rows(tiny_model: str, tiny_embedder: str, records: pd.DataFrame) -> None:
    from selectune.judge.labels import generate_labels
    from selectune.tracking.registry import load_model

    cfg = JudgeConfig(n_samples=2, max_new_tokens=6, embedder=tiny_embedder, lambda_cos=0.5)
    labels = generate_labels(records, cfg, load_model(tiny_model, dtype="float32"))
    assert len(labels) == 2 * len(records)
    probs = np.stack(labels["self_eval_probs"])
    assert probs.shape == (len(labels), 10) and np.allclose(probs.sum(1), 1)
    assert np.allclose(labels["self_eval"], probs @ np.arange(10))
    assert ((labels["cosine"] >= -1 - 1e-6) & (labels["cosine"] <= 1 + 1e-6)).all()
    hand = 0.5 * labels["self_eval"] + 4.5 * labels["cosine"].clip(lower=0)
    assert np.allclose(labels["label"], hand)
    assert (labels["digit"] == np.floor(hand + 0.5).astype(int)).all()
    assert (labels["reference"] == np.repeat(records["output"].to_numpy(), 2)).all()


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_label_weights_self_eval_by_one_minus_lambda(lam: float) -> None:
    """label = (1 - lambda) * self_eval + lambda * 9 * max(cos, 0): a swap of the weights fails at 0, 0.3 and 1."""
    self_eval, cos = np.array([6.0, 2.0, 8.0]), np.array([0.5, -0.2, 1.0])
    label, digit = make_labels(self_eval, cos, lam)
    by_hand = {0.0: [6.0, 2.0, 8.0], 0.3: [0.7 * 6 + 0.3 * 4.5, 0.7 * 2, 0.7 * 8 + 0.3 * 9], 1.0: [4.5, 0.0, 9.0]}
    assert label.tolist() == pytest.approx(by_hand[lam])
    assert digit.tolist() == {0.0: [6, 2, 8], 0.3: [6, 1, 8], 1.0: [5, 0, 9]}[lam]


def test_official_preset_is_the_released_training_script() -> None:
    cfg = JudgeConfig(fidelity="official")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules) == (
        16, 16, 0.05, ["q_proj", "k_proj", "v_proj", "o_proj"])
    assert (cfg.learning_rate, cfg.epochs, cfg.lr_scheduler, cfg.warmup_steps) == (3e-4, 2.0, "linear", 100)
    assert (cfg.batch_size * cfg.grad_accum, cfg.max_tokens) == (128, 1024)
    assert (cfg.ref_free_weight, cfg.kl_weight) == (0.3, 2.0)
    ours = JudgeConfig()
    assert (ours.lora_r, ours.epochs, ours.lr_scheduler, ours.warmup_steps) == (8, 3.0, "cosine", None)
    assert JudgeConfig(fidelity="official", lora_r=4).lora_r == 4  # a field given explicitly wins
    help_texts = " ".join(f.description or "" for f in JudgeConfig.model_fields.values())
    assert "official Self-J: 8" not in help_texts and "official: 16" in help_texts
