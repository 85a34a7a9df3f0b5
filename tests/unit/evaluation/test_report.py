"""From per-item results to metrics, by hand: token-weighted loss, paired deltas on shared items, win-rates,
lm-eval metrics, and the interval figure."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from selectune.evaluation.config import EvalConfig
from selectune.evaluation.report import deltas_figure, summarize


def rows(model: str, metric: str, values: list[float], weights: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(len(values))], "model": model, "metric": metric,
                         "value": values, "weight": weights or [1.0] * len(values)})


def test_summary_by_hand() -> None:
    items = pd.concat([
        rows("tuned", "loss", [1.0, 2.0, float("nan")], [1.0, 3.0, 0.0]),  # item 3: no response token
        rows("base", "loss", [2.0, 2.5, 3.0], [1.0, 3.0, 2.0]),
        rows("tuned", "winrate_vs_base", [1.0, 0.5, float("nan")]),
        rows("tuned", "orders_agree_vs_base", [1.0, 0.0]),
        rows("tuned", "lm_eval.mc.acc", [1.0, 0.0, 1.0]), rows("base", "lm_eval.mc.acc", [0.0, 0.0, 1.0]),
    ])
    m = summarize(items, ["tuned", "base"], EvalConfig(bootstrap_resamples=500), {"tuned_vs_base": 2})
    assert m["eval.loss.tuned"] == pytest.approx((1.0 + 6.0) / 4)  # token-weighted
    assert m["eval.loss.base"] == pytest.approx((2.0 + 7.5 + 6.0) / 6)
    assert m["eval.ppl.tuned"] == pytest.approx(math.exp(1.75), rel=1e-5)
    # paired on the two items both models scored, tokens as weights: (1*(1-2) + 3*(2-2.5)) / 4
    assert m["eval.loss.tuned_vs_base.delta"] == pytest.approx(-0.625)
    assert m["eval.loss.tuned_vs_base.delta.ci_low"] <= -0.625 <= m["eval.loss.tuned_vs_base.delta.ci_high"]
    assert m["eval.winrate.tuned_vs_base"] == 0.75 and m["eval.winrate.tuned_vs_base.items"] == 2
    assert m["eval.winrate.tuned_vs_base.parse_failures"] == 2 and m["eval.winrate.tuned_vs_base.orders_agree"] == 0.5
    assert m["eval.lm_eval.mc.acc.tuned"] == pytest.approx(2 / 3)
    assert m["eval.lm_eval.mc.acc.base"] == pytest.approx(1 / 3)
    assert m["eval.lm_eval.mc.acc.tuned_vs_base.delta"] == pytest.approx(1 / 3)
    assert m["eval.items"] == 3
    fig = deltas_figure(m)
    assert fig is not None and len(fig.axes[0].get_yticklabels()) == 3  # loss delta, win-rate, lm-eval delta


def test_a_single_model_has_no_deltas() -> None:
    m = summarize(rows("tuned", "loss", [1.0, 3.0]), ["tuned"], EvalConfig())
    assert m["eval.loss.tuned"] == 2.0 and not [k for k in m if "_vs_" in k]
    assert deltas_figure(m) is None
