"""Config of the evaluation stages: the fixed evaluation set carved off the input, and what is measured on it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from selectune.core.config import BACKEND_HELP, Config, EngineChoice


class EvalSetConfig(Config):
    """Which records are the evaluation set (the ``evalset`` stage's config): only these fields re-carve it."""

    paths: ClassVar[tuple[str, ...]] = ("heldout",)

    fraction: float = Field(0.05, gt=0, lt=1, description="Share of the input held out for evaluation, by record "
                            "id hash (the same records for every run over the same input; never trained on)")
    max_records: int | None = Field(500, ge=1, description="Evaluate at most this many held-out records (those "
                                    "with the smallest id hashes); the rest of the hash band is still never "
                                    "trained on")
    heldout: str | None = Field(None, description="An explicit evaluation set (any data format) instead of the "
                                "carve-out; records with the same ids are removed from the training pool")


class EvalConfig(EvalSetConfig, EngineChoice):
    """A fixed evaluation set and the measurements every compared model gets on it: reference-answer loss,
    lm-evaluation-harness tasks and a judge's pairwise win-rate, each per item with paired bootstrap intervals."""

    paths: ClassVar[tuple[str, ...]] = ("heldout", "lm_eval_include_path")
    runtime: ClassVar[tuple[str, ...]] = ("enabled", "batch_size", "judge_api_key_env", "judge_api_key_secret")

    enabled: bool = Field(True, description="Carve the evaluation set at load time and evaluate after tuning")
    reference_loss: bool = Field(True, description="Loss and perplexity of each reference answer (response tokens "
                                 "only, the training masking)")
    max_tokens: int = Field(512, ge=16, description="Token limit per (prompt, reference) pair for the loss")
    judge: str | None = Field(None, description="Pairwise win-rate judge: a Self-J judge (adapter folder or "
                              "models:/NAME/VERSION), any local causal LM (alias, folder, hub id), or "
                              "openai:MODEL for an OpenAI-compatible endpoint; None: no win-rate")
    judge_kind: Literal["auto", "pairwise", "self-j"] = Field("auto", description="auto: a Self-J judge when "
                                                              "the adapter says so, else a pairwise judge")
    judge_base_url: str | None = Field(None, description="openai judge: endpoint, e.g. http://127.0.0.1:8000/v1")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="openai judge: environment variable with the key")
    judge_api_key_secret: str | None = Field(None, description="openai judge: Prefect Secret block with the key "
                                             "(read when the pipeline flow runs)")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per greedy answer compared by the judge")
    backend: Literal["hf", "vllm"] = Field("hf", description="Engine writing the greedy answers the judge compares "
                                           "(losses and lm-eval tasks run on transformers); " + BACKEND_HELP)
    lm_eval_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks to run on "
                                     "every compared model (standard tasks need the hub; see lm_eval_include_path)")
    lm_eval_include_path: str | None = Field(None, description="Folder of local lm-evaluation-harness task YAMLs")
    lm_eval_limit: int | None = Field(None, ge=1, description="At most this many documents per lm-eval task")
    lm_eval_num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples (default: the task's)")
    batch_size: int = Field(8, ge=1, description="Sequences per forward pass (loss, lm-eval) or generate() call")
    bootstrap_resamples: int = Field(1000, ge=100, description="Paired bootstrap resamples for every interval")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap intervals")
    seed: int = Field(0, description="Seed of the bootstrap")

    def carving(self) -> EvalSetConfig:
        """The fields that choose the evaluation set."""
        return EvalSetConfig.model_validate(self.model_dump(include=set(EvalSetConfig.model_fields)))
