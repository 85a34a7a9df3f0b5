"""From per-item measurements to the numbers people compare: each model's aggregate and, for the candidate
against each other model, the paired difference with its bootstrap interval.

Metric names (MLflow): ``eval.loss.<model>`` (token-weighted mean loss of the reference answers) and
``eval.ppl.<model>``; ``eval.loss.<candidate>_vs_<other>.delta`` with ``.ci_low`` / ``.ci_high``;
``eval.winrate.<candidate>_vs_<other>`` with its interval, ``.items``, ``.parse_failures`` and ``.orders_agree``
(the share of items whose two orders named the same winner: low means the judge follows the position);
``eval.lm_eval.<task>.<metric>.<model>`` and ``eval.lm_eval.<task>.<metric>.<candidate>_vs_<other>.delta`` with
its interval. Lower is better for loss, higher for win-rate and the harness's accuracies.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from selectune.core.bootstrap import Interval, bootstrap_mean, paired_difference
from selectune.evaluation.config import EvalConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _aligned(items: pd.DataFrame, metric: str, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values of two models on the same items (an item one of them lacks is left out), and shared weights: the
    token counts when both models scored the same tokens, else 1."""
    rows = items[items["metric"] == metric]
    wide = rows.pivot_table(index="item_id", columns="model", values=["value", "weight"], aggfunc="first")
    if ("value", a) not in wide or ("value", b) not in wide:
        return np.empty(0), np.empty(0), np.empty(0)
    va, vb = wide[("value", a)].to_numpy(float), wide[("value", b)].to_numpy(float)
    both = np.isfinite(va) & np.isfinite(vb)
    wa, wb = wide[("weight", a)].to_numpy(float)[both], wide[("weight", b)].to_numpy(float)[both]
    return va[both], vb[both], wa if np.array_equal(wa, wb) else np.ones(len(wa))


def summarize(items: pd.DataFrame, models: list[str], cfg: EvalConfig,
              parse_failures: dict[str, int] | None = None) -> dict[str, float]:
    """Aggregates and paired intervals (see the module docstring) from the long items table."""
    boot = {"resamples": cfg.bootstrap_resamples, "seed": cfg.seed, "confidence": cfg.confidence}
    out: dict[str, float] = {"eval.items": float(items["item_id"].nunique()) if len(items) else 0.0}
    candidate, others = models[0], models[1:]
    lm_eval_metrics = sorted(m for m in items["metric"].unique() if m.startswith("lm_eval."))
    for metric in ["loss", *lm_eval_metrics]:
        prefix = "eval.loss" if metric == "loss" else f"eval.{metric}"
        for name in models:
            rows = items[(items["metric"] == metric) & (items["model"] == name)]
            if len(rows):
                mean = bootstrap_mean(rows["value"].to_numpy(float), rows["weight"].to_numpy(float), **boot)
                out[f"{prefix}.{name}"] = mean.estimate
                if metric == "loss":
                    out[f"eval.ppl.{name}"] = math.exp(mean.estimate) if math.isfinite(mean.estimate) else math.nan
        for other in others:
            a, b, w = _aligned(items, metric, candidate, other)
            if len(a):
                delta = paired_difference(a, b, w, **boot)
                out.update(_interval(f"{prefix}.{candidate}_vs_{other}.delta", delta))
    for other in others:
        rows = items[(items["metric"] == f"winrate_vs_{other}") & (items["model"] == candidate)]
        if len(rows):
            rate = bootstrap_mean(rows["value"].to_numpy(float), **boot)
            name = f"eval.winrate.{candidate}_vs_{other}"
            out.update(_interval(name, rate))
            out[f"{name}.items"] = float(rate.n)
            out[f"{name}.parse_failures"] = float((parse_failures or {}).get(f"{candidate}_vs_{other}", 0))
            agree = items[(items["metric"] == f"orders_agree_vs_{other}") & (items["model"] == candidate)]
            if len(agree):
                out[f"{name}.orders_agree"] = float(agree["value"].mean())
    return {k: round(v, 6) for k, v in out.items() if math.isfinite(v)}


def _interval(name: str, ci: Interval) -> dict[str, float]:
    return {name: ci.estimate, f"{name}.ci_low": ci.low, f"{name}.ci_high": ci.high}


def deltas_figure(metrics: dict[str, float], title: str = "candidate vs baselines (95% paired bootstrap)",
                  ) -> Figure | None:
    """Each paired difference and win-rate with its interval as a horizontal error bar; None when there is none."""
    from matplotlib.figure import Figure

    names = [k.removesuffix(".ci_low") for k in metrics if k.endswith(".ci_low")]
    if not names:
        return None
    fig = Figure(figsize=(7.0, 0.5 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    est = np.array([metrics[n] for n in names])
    err = np.array([[e - metrics[f"{n}.ci_low"] for n, e in zip(names, est, strict=True)],
                    [metrics[f"{n}.ci_high"] - e for n, e in zip(names, est, strict=True)]])
    ax.errorbar(est, range(len(names)), xerr=err, fmt="o", color="tab:blue", capsize=4)
    ax.set_yticks(range(len(names)), [n.removeprefix("eval.") for n in names], fontsize=8)
    for i, n in enumerate(names):  # a win-rate's "no difference" is 0.5, a delta's is 0
        ax.plot([0.5 if ".winrate." in f".{n}" else 0.0] * 2, [i - 0.3, i + 0.3], color="0.5", linestyle="--")
    ax.set_title(title)
    return fig
