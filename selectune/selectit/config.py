"""Config of the SelectIT scoring stage."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selectune.core.config import BatchedScoring
from selectune.core.models import DEFAULT_STUDENT, DEFAULT_TEACHER


class SelectITConfig(BatchedScoring):
    """SelectIT scoring (arXiv 2402.16705): token, sentence and model level uncertainty-aware ratings."""

    renamed: ClassVar[dict[str, str]] = {"k": "rating_scale", "alpha": "std_penalty", "max_length": "max_tokens"}
    models: list[str] = Field([DEFAULT_STUDENT, DEFAULT_TEACHER], min_length=1,
                              description="Raters: aliases, local folders or hub ids")
    weights: list[float] | None = Field(None, description="Model-level weights; default proportional to "
                                        "each rater's parameter count (the paper's theta)")
    rating_scale: int = Field(5, ge=2, le=9, description="Ratings 1..K, K = this (single-token digits)")
    std_penalty: float = Field(0.2, ge=0, description="Sentence level: mean / (1 + std_penalty * std) over the "
                               "rating prompts (the paper's alpha)")
    normalization: Literal["paper", "official"] = Field("paper", description="paper: p/sum(p); official: "
                                                        "additionally softmax of the normalized probabilities")
    layout: Literal["official", "chat"] = Field("official", description="official prompt text, or the same "
                                                "content in each model's chat template")
    rating_prompts_file: str | None = Field(None, description="One rating prompt per line; replaces the "
                                            "built-in prompts")
    batch_size: int = Field(64, ge=1, description="Max ratings per forward pass (length-sorted batches)")
    max_tokens: int = Field(1024, ge=32, description="Token limit per rating prompt")
    truncation: Literal["right", "error"] = Field("right", description="right: cut the end of the response, "
                                                  "keeping the answer cue; error: refuse over-long records")
    use_cache: bool = Field(True, description="Reuse ratings from the content-addressed score cache")

    @model_validator(mode="after")
    def _weights_match(self) -> SelectITConfig:
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"{len(self.weights)} weights given for {len(self.models)} models")
        return self
