"""Config of the SelectIT scoring stage."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selectune.core.config import FIDELITY_HELP, BatchedScoring, Fidelity
from selectune.core.models import DEFAULT_STUDENT, DEFAULT_TEACHER


class SelectITConfig(BatchedScoring):
    """SelectIT scoring (arXiv 2402.16705): token, sentence and model level uncertainty-aware ratings."""

    renamed: ClassVar[dict[str, str]] = {"k": "rating_scale", "alpha": "std_penalty", "max_length": "max_tokens"}
    # github.com/Blue-Raincoat/SelectIT self_reflection/*.py at 21e3ba7: five rating tokens, the first k = 5
    # lines of the prompt file read with readlines(), exp-renormalized probabilities, alpha 0.2
    official: ClassVar[dict[str, object]] = {"rating_scale": 5, "num_prompts": 5, "normalization": "official",
                                             "layout": "official", "std_penalty": 0.2}
    paths: ClassVar[tuple[str, ...]] = ("rating_prompts_file",)
    runtime: ClassVar[tuple[str, ...]] = (*BatchedScoring.runtime, "use_cache")
    fidelity: Fidelity = Field("selectune", description=FIDELITY_HELP)
    models: list[str] = Field([DEFAULT_STUDENT, DEFAULT_TEACHER], min_length=1,
                              description="Raters: aliases, local folders or hub ids")
    weights: list[float] | None = Field(None, description="Model-level weights; default proportional to "
                                        "each rater's parameter count (the paper's theta)")
    rating_scale: int = Field(5, ge=2, le=9, description="Ratings 1..K, K = this (single-token digits)")
    std_penalty: float = Field(0.2, ge=0, description="Sentence level: mean / (1 + std_penalty * std) over the "
                               "rating prompts (the paper's alpha)")
    normalization: Literal["paper", "official"] = Field("paper", description="paper: P = p/sum(p), the paper's "
                                                        "formula (and the first release's code, 1a6fe70); official: "
                                                        "exp(P) renormalized, what the released scripts execute "
                                                        "since 21e3ba7 (2024-03-02)")
    layout: Literal["official", "chat"] = Field("official", description="official prompt text, or the same "
                                                "content in each model's chat template")
    rating_prompts_file: str | None = Field(None, description="One rating prompt per line; replaces the "
                                            "built-in prompts (official mode reads it with readlines(): each "
                                            "line keeps its newline, blank lines count)")
    num_prompts: int | None = Field(None, ge=1, description="Rate with the first N rating prompts (the official "
                                    "-k: 5); default every prompt")
    sentence_level: bool = Field(True, description="false: the paper's token-level ablation, one rating prompt "
                                 "drawn at random (seeded by prompt_seed) from all of them for the whole dataset")
    prompt_seed: int = Field(0, description="Seed of the token-level ablation's prompt draw")
    batch_size: int = Field(64, ge=1, description="Max ratings per forward pass (length-sorted batches)")
    max_tokens: int = Field(1024, ge=32, description="Token limit per rating prompt")
    truncation: Literal["right", "error"] = Field("right", description="right: cut the end of the response, "
                                                  "keeping the answer cue; error: refuse over-long records")
    use_cache: bool = Field(True, description="Reuse ratings from the content-addressed score cache")

    @model_validator(mode="after")
    def _weights_match(self) -> SelectITConfig:
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"{len(self.weights)} weights given for {len(self.models)} models")
        if self.backend == "vllm" and isinstance(self.vllm.base_url, str) and len(self.models) > 1:
            raise ValueError(f"vllm.base_url: one vLLM server serves one model, and {len(self.models)} raters are "
                             "given; name a server per rater ({model: URL})")
        prompts = self.num_prompts or 0
        if self.fidelity == "official" and self.sentence_level and prompts != self.rating_scale:
            raise ValueError(f"fidelity official: num_prompts ({self.num_prompts}) must equal rating_scale "
                             f"({self.rating_scale}): the released sentence-level script sums the rating spread "
                             "over range(k), k the number of prompts; use fidelity: selectune to vary either")
        return self
