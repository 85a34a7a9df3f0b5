"""Config of the selection stage."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selectune.core.config import Config
from selectune.core.models import DEFAULT_EMBEDDER


class SelectionConfig(Config):
    """Subset selection: rank by one score or a weighted combination, with baselines, constraints and an optional
    diversity pass. Budget: top fraction (SelectIT's 20%), top-k, or a score threshold."""

    renamed: ClassVar[dict[str, str]] = {"k": "top_k", "min_length": "min_chars", "max_length": "max_chars"}

    strategy: Literal["top", "combined", "random", "full"] = Field("top", description="top: rank by `by`; "
                                                                   "combined: weighted sum of rank-normalized "
                                                                   "columns; random (seeded) and full: baselines")
    by: str = Field("selectit_score", description="Score column to rank by (strategy top)")
    weights: dict[str, float] | None = Field(None, description="combined: {column: weight}; a negative weight "
                                             "means lower is better (e.g. ifd)")
    fraction: float | None = Field(0.2, gt=0, le=1, description="Keep this top fraction")
    top_k: int | None = Field(None, ge=1, description="Keep the top k (overrides fraction)")
    threshold: float | None = Field(None, description="Keep scores >= threshold (overrides fraction)")
    score_below: float | None = Field(None, description="Drop records whose ranking score is >= this before the "
                                      "budget is filled, e.g. 1.0 with by: ifd (Cherry LLM keeps IFD < 1)")
    seed: int = Field(0, description="Seed of the random baseline")
    min_chars: int | None = Field(None, ge=0, description="Drop records whose response has fewer characters")
    max_chars: int | None = Field(None, ge=1, description="Drop records whose response has more characters")
    category_column: str = Field("category", description="Column used by quotas (when it exists)")
    quotas: dict[str, float] | None = Field(None, description="Per-category cap: a count (>= 1) or a fraction "
                                            "of the budget (< 1)")
    diversity_threshold: float | None = Field(None, gt=0, le=1, description="DEITA-style pass: accept a record "
                                              "only if its cosine similarity to every accepted one is below this")
    embedder: str = Field(DEFAULT_EMBEDDER, description="Sentence embedder for the diversity pass")
    judge: str | None = Field(None, description="Score every record with this Self-J judge (adapter folder or "
                              "models:/NAME/VERSION|latest) before selecting: adds the column judge_score "
                              "(0-9, reference-free) to rank by or combine, e.g. weights {selectit_score: 1, "
                              "judge_score: 1}")

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        if self.strategy == "combined" and not any((self.weights or {}).values()):
            raise ValueError("strategy 'combined' needs weights with at least one non-zero value, e.g. "
                             "{selectit_score: 1.0, ifd: -0.5}")
        if self.strategy == "random" and self.top_k is None and self.threshold is not None:
            raise ValueError("strategy 'random' takes a k or fraction budget, not a threshold")
        for cat, q in (self.quotas or {}).items():
            if not (0 < q < 1 or (q >= 1 and float(q).is_integer())):
                raise ValueError(f"quota for category {cat!r} must be a whole count >= 1 or a fraction in "
                                 f"(0, 1), got {q}")
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} > max_chars {self.max_chars}")
        return self

    def criteria(self) -> dict[str, float | int]:
        if self.top_k is not None:
            return {"k": self.top_k}
        if self.threshold is not None:
            return {"threshold": self.threshold}
        return {"fraction": self.fraction if self.fraction is not None else 0.2}
