"""Self-J pieces: the distillation loss, the label formula, digit scoring, selective answering, training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.judge.config import JudgeConfig
from selectune.judge.infer import decide
from selectune.judge.labels import make_labels
from selectune.judge.metrics import correlations, coverage_curve
from selectune.judge.prompts import digit_ids, expected_score


def _pairs(records: pd.DataFrame) -> pd.DataFrame:
    rev = records["output"].iloc[::-1].tolist()
    return pd.DataFrame({"instruction": records["instruction"], "input": records["input"], "response": rev,
                         "reference": records["output"]})


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


def test_digit_ids_are_single_tokens(tiny_model: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = digit_ids(tok)
    assert [tok.decode([i]) for i in ids] == list("0123456789")

    class NoSeven:
        name_or_path = "no-seven"

        def get_vocab(self) -> dict[str, int]:
            return {d: i for i, d in enumerate("012345689")}

    with pytest.raises(ValueError, match="no single token for the digit '7'"):
        digit_ids(NoSeven())


def test_scores_in_range_and_batched_equals_single(tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.judge.infer import load_judge, score_pairs

    jd = load_judge(tiny_model, "float32")
    pairs = _pairs(records)
    for with_ref in (False, True):
        batched = score_pairs(jd, pairs, with_ref, batch_size=16)
        single = pd.concat([score_pairs(jd, pairs.iloc[[i]], with_ref, batch_size=1) for i in range(len(pairs))])
        assert np.allclose(batched["judge_score"], single["judge_score"], atol=1e-5)
        assert ((batched["judge_score"] >= 0) & (batched["judge_score"] <= 9)).all()
        probs = np.stack(batched["judge_probs"])
        assert np.allclose(probs.sum(1), 1.0)
        assert np.allclose(batched["judge_score"], probs @ np.arange(10))
    assert batched["judge_score"].nunique() > 1  # the random model rates different pairs differently
    # the reference column is used by default when present, and changes the prompt
    assert not np.allclose(score_pairs(jd, pairs)["judge_score"], score_pairs(jd, pairs, False)["judge_score"])


def test_decline_below_threshold_only(tiny_model: str) -> None:
    from selectune.judge.infer import answer, as_judge
    from selectune.judge.labels import load_model

    lm = load_model(tiny_model, dtype="float32")
    first = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=0.0, max_new_tokens=6)[0]
    assert not first["declined"] and first["answer"] == first["draft"] and 0 <= first["score"] <= 9
    s = first["score"]
    above = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=s - 1e-3, max_new_tokens=6)[0]
    below = answer(lm, as_judge(lm), ["What is the capital of France?"], threshold=s + 1e-3, max_new_tokens=6)[0]
    assert not above["declined"] and above["answer"] == first["draft"]
    assert below["declined"] and "will not answer" in below["answer"] and f"{s:.2f}" in below["answer"]
    assert decide("x", 4.99, 5.0)["declined"] and not decide("x", 5.0, 5.0)["declined"]


def test_sampling_is_seeded_and_batch_independent(tiny_model: str, records: pd.DataFrame) -> None:
    from selectune.judge.labels import load_model, sample_responses

    lm = load_model(tiny_model, dtype="float32")
    a = sample_responses(lm, records, 2, 1.0, 1.0, 6, seed=3, batch_size=16)
    b = sample_responses(lm, records.iloc[::-1].reset_index(drop=True), 2, 1.0, 1.0, 6, seed=3, batch_size=1)
    assert len(a) == 2 * len(records) and set(a["sample"]) == {0, 1}
    key = ["id", "sample"]
    assert a.sort_values(key)["response"].tolist() == b.sort_values(key)["response"].tolist()
    c = sample_responses(lm, records, 2, 1.0, 1.0, 6, seed=4)
    assert a["response"].tolist() != c["response"].tolist()


def test_generate_labels_rows(tiny_model: str, tiny_embedder: str, records: pd.DataFrame) -> None:
    from selectune.judge.labels import generate_labels, load_model

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


def test_training_lowers_loss_on_constant_target(tiny_model: str, records: pd.DataFrame, tmp_path: Path) -> None:
    from selectune.judge.infer import Judge, score_pairs
    from selectune.judge.train import train_judge

    labels = _pairs(records).assign(id=records["id"], sample=0, digit=7)
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

    labels = _pairs(records).assign(id=records["id"], sample=0, digit=[1, 2, 3, 4, 5, 6])
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


def test_coverage_curve_and_correlations_by_hand() -> None:
    cov, quality, auc = coverage_curve([0.1, 0.9, 0.5], [1.0, 3.0, 2.0])
    assert cov.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert quality.tolist() == pytest.approx([3.0, 2.5, 2.0]) and auc == pytest.approx(2.5)
    pearson, spearman = correlations([1, 2, 3, 4], [1, 4, 9, 16])
    assert pearson == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 4, 9, 16])[0, 1]) and spearman == pytest.approx(1.0)
    assert correlations([1, 1, 2], [3, 2, 1])[1] == pytest.approx(-math.sqrt(3) / 2)  # ranks (1.5,1.5,3) vs (3,2,1)
    assert all(math.isnan(v) for v in correlations([1, 1, 1], [1, 2, 3]))
