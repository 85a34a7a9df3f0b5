"""The promotion decision against hand-worked cases: directions, thresholds, significance and the policies."""

from __future__ import annotations

import pytest

from selectune.promotion.config import PromoteConfig
from selectune.promotion.gate import comparison, decide

# tuned (the challenger) vs champion, as the evaluate stage logs them: loss lower is better
LOSS = {"eval.loss.tuned": 1.80, "eval.loss.champion": 2.00, "eval.loss.tuned_vs_champion.delta": -0.20,
        "eval.loss.tuned_vs_champion.delta.ci_low": -0.30, "eval.loss.tuned_vs_champion.delta.ci_high": -0.10}
NOISE = {**LOSS, "eval.loss.tuned_vs_champion.delta": -0.02, "eval.loss.tuned_vs_champion.delta.ci_low": -0.06,
         "eval.loss.tuned_vs_champion.delta.ci_high": 0.03}
WORSE = {**LOSS, "eval.loss.tuned_vs_champion.delta": 0.05, "eval.loss.tuned_vs_champion.delta.ci_low": 0.01,
         "eval.loss.tuned_vs_champion.delta.ci_high": 0.09}


def test_loss_improvement_flips_sign_and_interval() -> None:
    c = comparison(PromoteConfig(), LOSS)
    assert (c.challenger, c.champion) == (1.80, 2.00)
    assert c.improvement == pytest.approx(0.20) and (c.ci_low, c.ci_high) == pytest.approx((0.10, 0.30))


def test_gate() -> None:
    gate = PromoteConfig()
    assert decide(gate, LOSS, 2, 1).outcome == "promoted"
    noisy = decide(gate, NOISE, 2, 1)  # better on average, but the interval [-0.03, +0.06] includes zero
    assert noisy.outcome == "rejected" and "not significant" in noisy.reason
    assert noisy.tag.startswith("rejected: loss improvement +0.0200 [-0.0300, +0.0600]")
    assert decide(gate.model_copy(update={"require_significance": False}), NOISE, 2, 1).outcome == "promoted"
    big = decide(gate.model_copy(update={"min_delta": 0.25}), LOSS, 2, 1)  # 0.20 < 0.25
    assert big.outcome == "rejected" and "below min_delta 0.25" in big.reason
    assert decide(gate, WORSE, 2, 1).outcome == "rejected"
    flat = {**LOSS, **dict.fromkeys(("eval.loss.tuned_vs_champion.delta", "eval.loss.tuned_vs_champion.delta.ci_low",
                                     "eval.loss.tuned_vs_champion.delta.ci_high"), 0.0)}
    assert decide(gate.model_copy(update={"require_significance": False}), flat, 2, 1).outcome == "rejected"


def test_first_version_same_version_and_policies() -> None:
    assert decide(PromoteConfig(policy="never"), {}, 1, None).reason == "first registered version"
    kept = decide(PromoteConfig(), LOSS, 3, 3)
    assert kept.outcome == "kept" and kept.tag == "kept"
    assert decide(PromoteConfig(policy="always"), WORSE, 2, 1).outcome == "promoted"
    assert decide(PromoteConfig(policy="never"), LOSS, 2, 1).outcome == "rejected"
    assert decide(PromoteConfig(policy="if_not_worse"), NOISE, 2, 1).outcome == "promoted"
    assert decide(PromoteConfig(policy="if_not_worse"), WORSE, 2, 1).outcome == "rejected"  # 0.05 worse
    assert decide(PromoteConfig(policy="if_not_worse", tolerance=0.05), WORSE, 2, 1).outcome == "promoted"
    missing = decide(PromoteConfig(), {}, 2, 1)
    assert missing.outcome == "rejected" and "no loss comparison" in missing.reason


def test_winrate_and_harness_metrics() -> None:
    win = {"eval.winrate.tuned_vs_champion": 0.70, "eval.winrate.tuned_vs_champion.ci_low": 0.55,
           "eval.winrate.tuned_vs_champion.ci_high": 0.85}
    c = comparison(PromoteConfig(metric="winrate"), win)
    assert (c.challenger, c.champion, c.improvement) == (0.70, 0.5, pytest.approx(0.20))
    assert (c.ci_low, c.ci_high) == pytest.approx((0.05, 0.35))
    assert decide(PromoteConfig(metric="winrate"), win, 2, 1).outcome == "promoted"
    tie = {**win, "eval.winrate.tuned_vs_champion.ci_low": 0.45}
    assert decide(PromoteConfig(metric="winrate"), tie, 2, 1).outcome == "rejected"
    pair = "eval.lm_eval.mc.acc.tuned_vs_champion.delta"
    acc = {"eval.lm_eval.mc.acc.tuned": 0.6, "eval.lm_eval.mc.acc.champion": 0.5, pair: 0.1, f"{pair}.ci_low": 0.02,
           f"{pair}.ci_high": 0.2}
    assert decide(PromoteConfig(metric="lm_eval.mc.acc"), acc, 2, 1).outcome == "promoted"  # higher is better
    assert decide(PromoteConfig(metric="lm_eval.mc.acc", lower_is_better=True), acc, 2, 1).outcome == "rejected"
