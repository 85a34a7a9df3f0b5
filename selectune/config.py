"""One typed config per stage, with the papers' defaults and help text; a pipeline config holds them all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field

from selectune.core.config import Config, LoRATraining
from selectune.core.models import DEFAULT_EMBEDDER, DEFAULT_STUDENT
from selectune.data.config import DataConfig
from selectune.reflection.config import IFDConfig, ReflectionConfig, TeacherConfig  # noqa: F401
from selectune.selection.config import SelectionConfig
from selectune.selectit.config import SelectITConfig
from selectune.tuning.config import TuneConfig

C = TypeVar("C", bound=BaseModel)


class JudgeConfig(LoRATraining):
    """Self-J (arXiv 2409.00935): a judge trained without human labels. The model under evaluation samples
    responses, rates them 0-9 against the gold reference, and the rating is recalibrated by the cosine to the
    reference; a LoRA judge learns to predict the label with and without the reference (self-distillation)."""

    renamed: ClassVar[dict[str, str]] = {"max_length": "max_tokens", "alpha": "ref_free_weight",
                                         "beta": "kl_weight"}
    enabled: bool = Field(False, description="Run the judge stage in the pipeline flow (after tuning)")
    model: str | None = Field(None, description="Model under evaluation: alias, folder, adapter folder or "
                              "models:/NAME/VERSION; default the tuned model of the tune stage")
    base: str = Field(DEFAULT_STUDENT, description="Judge base model (LoRA-tuned into the judge); the tune "
                      "stage's base by default")
    template: Literal["auto", "alpaca", "chat"] = Field("auto", description="Prompt template around the judge "
                                                        "prompt (auto as in tune)")
    n_samples: int = Field(4, ge=1, description="Responses sampled per instruction from the model under evaluation")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature of those responses")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling of those responses")
    max_new_tokens: int = Field(128, ge=1, description="Max tokens per sampled response")
    seed: int = Field(0, description="Seed of sampling, of the held-out split and of training")
    lambda_cos: float = Field(0.5, ge=0, le=1, description="Label = (1 - lambda) * self-eval + lambda * 9 * "
                              "max(cosine, 0)")
    embedder: str = Field(DEFAULT_EMBEDDER, description="Sentence embedder for the response-reference cosine")
    ref_free_weight: float = Field(0.3, ge=0, description="Loss weight of the reference-free cross-entropy "
                                   "(official alpha)")
    kl_weight: float = Field(2.0, ge=0, description="Loss weight of KL(p_with-ref || p_ref-free), the "
                             "self-distillation (official beta)")
    lora_r: int = Field(8, ge=1, description="LoRA rank (official Self-J: 8)")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator (official: 16)")
    max_tokens: int = Field(768, ge=64, description="Token limit per judge prompt (the answer's end is cut)")
    epochs: float = Field(3.0, gt=0, description="Training epochs over the labelled pairs")
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate (official: 3e-4)")
    batch_size: int = Field(4, ge=1, description="Pairs per micro-batch (each pair = two prompts)")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Instructions held out (with all their samples) "
                                 "for the correlation and coverage evaluation")
    threshold: float = Field(5.0, ge=0, le=9, description="Selective instruction following: decline when the "
                             "judge score is below this")
    score_batch_size: int = Field(16, ge=1, description="Max prompts per forward pass (scoring) or generate() "
                                  "call (sampling)")
    max_batch_tokens: int | None = Field(None, ge=64, description="Max padded tokens per scoring pass; default "
                                         "4096 on CPU, 32768 on GPU")
    register_as: str | None = Field("selectune-judge", description="MLflow Model Registry name (None: skip)")


class ScaleConfig(Config):
    """Sharded execution of per-record model work on a distributed engine."""

    runner: Literal["local", "dask", "ray"] = Field("local", description="local: one process; dask: "
                                                    "DaskTaskRunner; ray: RayTaskRunner")
    address: str | None = Field(None, description="Scheduler address (tcp://host:8786 / ray://host:10001); "
                                "default: start a local cluster on 127.0.0.1")
    n_workers: int = Field(2, ge=1, description="Local cluster: worker processes")
    threads_per_worker: int = Field(1, ge=1, description="Local Dask cluster: threads per worker")
    shards: int | None = Field(None, ge=1, description="Number of shards, balanced by record length in "
                               "characters (a tokenizer-free token-count proxy); default 2 x workers")
    gpus_per_shard: float = Field(0.0, ge=0, description="GPUs each shard needs (Dask worker resources / "
                                  "Ray num_gpus)")


class PipelineConfig(Config):
    """A whole curation run: where it writes, how it is tracked, and each stage's config."""

    run_dir: str | None = Field(None, description="Stage outputs go to <run_dir>/<stage>/; default "
                                "runs/<timestamp>")
    experiment: str = Field("selectune", description="MLflow experiment name")
    data: DataConfig = Field(default_factory=DataConfig)
    selectit: SelectITConfig = Field(default_factory=SelectITConfig)
    reflection: ReflectionConfig = Field(default_factory=ReflectionConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)


def load_config(path: str | Path | None) -> PipelineConfig:
    """Read a YAML recipe into a validated PipelineConfig (no file = defaults)."""
    if path is None:
        return PipelineConfig()
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return PipelineConfig.model_validate(raw)


def load_stage_config(cls: type[C], section: str, path: str | Path | None, **options: Any) -> C:
    """A stage config from a YAML file, either a pipeline recipe (its ``section``) or the stage's fields alone,
    with the command-line options that were given (None: not given) on top; ``register_as=""`` means do not
    register. Raises OSError, yaml.YAMLError or pydantic.ValidationError."""
    raw = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}
    base = getattr(PipelineConfig.model_validate(raw), section) if section in raw else cls.model_validate(raw)
    cfg = cls.model_validate({**base.model_dump(), **{k: v for k, v in options.items() if v is not None}})
    if getattr(cfg, "register_as", None) == "":
        cfg.register_as = None  # type: ignore[attr-defined]
    return cfg
