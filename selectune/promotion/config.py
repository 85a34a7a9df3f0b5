"""Config of the promotion gate: which metric decides and by what rule the challenger replaces the champion."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from selectune.core.config import Config


class PromoteConfig(Config):
    """The gate between a newly registered model version (alias ``challenger``) and the one in use (``champion``),
    both evaluated on the same fixed evaluation set in the same run."""

    runtime: ClassVar[tuple[str, ...]] = ("enabled",)

    enabled: bool = Field(True, description="Decide promotion after evaluation (needs tune.register_as and eval)")
    policy: Literal["gate", "always", "never", "if_not_worse"] = Field(
        "gate", description="gate: promote when the metric improves by at least min_delta (and, with "
        "require_significance, the paired CI of the improvement excludes zero); always / never; if_not_worse: "
        "promote unless the metric is worse by more than tolerance. The first registered version always becomes "
        "champion")
    metric: str = Field("loss", description="Primary metric: loss (reference-answer loss, lower is better), "
                        "winrate (judge win-rate against the champion; needs eval.judge) or "
                        "lm_eval.<task>.<metric> (needs eval.lm_eval_tasks)")
    lower_is_better: bool | None = Field(None, description="Direction of the metric; None: lower for loss, higher "
                                         "for everything else")
    min_delta: float = Field(0.0, ge=0, description="gate: the smallest improvement that promotes, in the "
                             "metric's units")
    require_significance: bool = Field(True, description="gate: also require the paired bootstrap CI of the "
                                       "improvement to lie above zero")
    tolerance: float = Field(0.0, ge=0, description="if_not_worse: how much worse the challenger may be")
