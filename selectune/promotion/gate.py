"""The promotion decision as a pure function of the evaluation's metrics (names as
:mod:`selectune.evaluation.report` logs them, candidate ``tuned`` against ``champion``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from selectune.promotion.config import PromoteConfig

Outcome = Literal["promoted", "kept", "rejected"]


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on the primary metric; ``improvement`` > 0 means the challenger is
    better (its sign already follows the metric's direction), with the paired bootstrap interval."""

    metric: str
    challenger: float | None
    champion: float | None
    improvement: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    comparison: Comparison | None = None

    @property
    def tag(self) -> str:
        """The model version tag ``selectune.promotion``: promoted | kept | rejected: <reason>."""
        return self.outcome if self.outcome != "rejected" else f"rejected: {self.reason}"


def comparison(cfg: PromoteConfig, metrics: dict[str, float], candidate: str = "tuned",
               champion: str = "champion") -> Comparison | None:
    """The primary metric's comparison from the evaluate stage's metrics, or None when it was not measured."""
    pair = f"{candidate}_vs_{champion}"
    lower = cfg.lower_is_better if cfg.lower_is_better is not None else cfg.metric == "loss"
    sign = -1.0 if lower else 1.0
    if cfg.metric == "winrate":  # a win-rate against the champion: 0.5 is a draw
        name = f"eval.winrate.{pair}"
        if name not in metrics:
            return None
        c_values: tuple[float | None, float | None] = (metrics[name], 0.5)
        delta, low, high = metrics[name] - 0.5, metrics[f"{name}.ci_low"] - 0.5, metrics[f"{name}.ci_high"] - 0.5
    else:
        prefix = "eval.loss" if cfg.metric == "loss" else f"eval.{cfg.metric}"
        name = f"{prefix}.{pair}.delta"
        if name not in metrics:
            return None
        c_values = (metrics.get(f"{prefix}.{candidate}"), metrics.get(f"{prefix}.{champion}"))
        delta, low, high = metrics[name], metrics[f"{name}.ci_low"], metrics[f"{name}.ci_high"]
    low, high = sorted((sign * low, sign * high))
    return Comparison(cfg.metric, *c_values, sign * delta, low, high)


def decide(cfg: PromoteConfig, metrics: dict[str, float], challenger: int, champion: int | None) -> Decision:
    """Whether version ``challenger`` replaces version ``champion`` (None: there is none yet)."""
    if champion is None:
        return Decision("promoted", "first registered version")
    if challenger == champion:
        return Decision("kept", f"version {challenger} is already the champion")
    comp = comparison(cfg, metrics)
    if cfg.policy == "always":
        return Decision("promoted", "policy always", comp)
    if cfg.policy == "never":
        return Decision("rejected", "policy never (promote by hand: selectune models promote)", comp)
    if comp is None or not math.isfinite(comp.improvement):
        return Decision("rejected", f"no {cfg.metric} comparison with the champion was measured", comp)
    said = f"{cfg.metric} improvement {comp.improvement:+.4f} [{comp.ci_low:+.4f}, {comp.ci_high:+.4f}]"
    if cfg.policy == "if_not_worse":
        if comp.improvement >= -cfg.tolerance:
            return Decision("promoted", f"{said} not worse than -{cfg.tolerance:g}", comp)
        return Decision("rejected", f"{said} worse than the tolerance -{cfg.tolerance:g}", comp)
    if comp.improvement < cfg.min_delta or (cfg.min_delta == 0 and comp.improvement <= 0):
        return Decision("rejected", f"{said} below min_delta {cfg.min_delta:g}", comp)
    if cfg.require_significance and comp.ci_low <= 0:
        return Decision("rejected", f"{said}: not significant, the paired interval includes zero", comp)
    return Decision("promoted", f"{said} at least min_delta {cfg.min_delta:g}"
                    + (", interval above zero" if cfg.require_significance else ""), comp)
