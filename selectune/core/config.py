"""Config bases shared by the stage configs: unknown fields are errors, renamed fields keep working for a release,
and the model-loading, batched-scoring and LoRA-training fields are declared once."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selectune.core.models import DEFAULT_STUDENT

Dtype = Literal["auto", "float32", "bfloat16"]
Backend = Literal["hf", "vllm"]
BACKEND_HELP = ("hf: transformers (CPU or GPU); vllm: the vLLM engine (Linux with a CUDA GPU and "
                "pip install 'selectune[vllm]'; checked when the config loads)")
Fidelity = Literal["selectune", "official"]
FIDELITY_HELP = ("official: reproduce the paper's released code (its defaults fill every field not set "
                 "explicitly); selectune: this project's documented choices (README, 'official vs selectune')")


class Config(BaseModel):
    """A stage config: unknown fields are errors; ``renamed`` maps old field names to new ones, accepted with a
    FutureWarning for one release."""

    model_config = ConfigDict(extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}
    paths: ClassVar[tuple[str, ...]] = ()  # file/folder fields: relative ones are read from the recipe's folder
    official: ClassVar[dict[str, Any]] = {}  # field values of the released code, for ``fidelity: official``
    # fields that change how fast or where the work runs, never what it writes: left out of the stage key, so
    # changing them re-runs nothing (every other field is in the key)
    runtime: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _accept_old_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in cls.renamed.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"{cls.__name__}: both {old!r} and {new!r} given; {old!r} is the old name of {new!r}")
            warnings.warn(f"{cls.__name__}: the field {old!r} is now {new!r}; the old name is accepted until "
                          "selectune 0.3", FutureWarning, stacklevel=2)
            data[new] = data.pop(old)
        if cls.official and data.get("fidelity") == "official":
            data = with_defaults(data, cls.official)
        return data


def resolve_paths(cls: type[BaseModel], raw: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """``raw`` (a config's YAML mapping) with each relative path of ``cls.paths`` (and of its nested configs) made
    absolute against ``folder``, the recipe file's folder; URIs (``hf://``, ``s3://``) and absolute paths stay."""
    out = dict(raw)
    for name in getattr(cls, "paths", ()):
        value = out.get(name)
        if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
            out[name] = str(Path(folder) / value)
    for name, field in cls.model_fields.items():
        sub = field.annotation
        if isinstance(out.get(name), dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            out[name] = resolve_paths(sub, out[name], folder)
    return out


def output_fields(config: BaseModel) -> dict[str, Any]:
    """The config as JSON values without its (and its nested configs') ``runtime`` fields: what a stage key
    hashes."""
    return config.model_dump(mode="json", exclude=_runtime_exclude(type(config)) or None)


def _runtime_exclude(cls: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(getattr(cls, "runtime", ()), True)
    for name, field in cls.model_fields.items():
        sub = field.annotation
        if name not in out and isinstance(sub, type) and issubclass(sub, BaseModel) and (
                inner := _runtime_exclude(sub)):
            out[name] = inner
    return out


def with_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``defaults`` filled in where a field is not given; nested dicts fill nested configs (a dict or
    a config instance: only its fields not set explicitly)."""
    out = dict(data)
    for key, value in defaults.items():
        given = out.get(key)
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(given, dict):
            out[key] = with_defaults(given, value)
        elif isinstance(value, dict) and isinstance(given, BaseModel):
            out[key] = with_defaults(given.model_dump(exclude_unset=True), value)
    return out


class ModelOptions(Config):
    """How a model is loaded."""

    dtype: Dtype = Field("auto", description="Weights dtype; auto = bfloat16 where the hardware supports it")
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code")


class VLLMOptions(Config):
    """How a vLLM engine runs (``backend: vllm``): in this process, or a running server (``base_url``); memory,
    parallelism and transport, never the numbers it returns."""

    runtime: ClassVar[tuple[str, ...]] = ("gpu_memory_utilization", "max_num_seqs", "tensor_parallel_size",
                                          "top_logprobs", "base_url", "served_model", "api_key_env", "concurrency",
                                          "prompts_per_request", "timeout_s")

    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of each GPU's memory vLLM "
                                          "reserves (weights + KV cache)")
    max_num_seqs: int = Field(256, ge=1, description="Sequences vLLM runs at once")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over")
    top_logprobs: int = Field(20, ge=1, description="Log-probabilities returned per rating step (vLLM's "
                              "max_logprobs, 20 by default, caps it); a rating token outside them is queried exactly")
    base_url: str | dict[str, str] | None = Field(None, description="A running vLLM server (vllm serve MODEL), "
                                                  "e.g. http://127.0.0.1:8000/v1, or one per model ({model: URL}; "
                                                  "SelectIT's raters): requests go there instead of an engine in "
                                                  "this process, so this machine needs neither vLLM nor a GPU; the "
                                                  "fields above are then the server's own flags")
    served_model: str | None = Field(None, description="The server's name for the model (--served-model-name); "
                                     "default: the one model it serves")
    api_key_env: str | None = Field(None, description="Environment variable holding the server's --api-key")
    concurrency: int = Field(8, ge=1, description="Requests in flight to the server at once")
    prompts_per_request: int = Field(32, ge=1, description="Prompts sent in one /v1/completions request")
    timeout_s: float = Field(600.0, gt=0, description="Seconds one request may take (retried 3 times)")

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        for url in ([value] if isinstance(value, str) else (value or {}).values()):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
        return value

    def server_for(self, model: str) -> str | None:
        """The server that runs ``model`` (None: an engine in this process)."""
        return self.base_url.get(model) if isinstance(self.base_url, dict) else self.base_url


def check_backend(backend: str, owner: str, options: VLLMOptions | None = None) -> None:
    """Raise when ``backend`` is vllm in this process (no server ``base_url``) and vLLM cannot run on this machine,
    saying what to install. (With servers for some models only, the others fail when they load.)"""
    if backend == "vllm" and not (options is not None and options.base_url):
        from selectune.core.vllm import unavailable

        if why := unavailable():
            raise ValueError(f"{owner}.backend: vllm: {why}")


class EngineChoice(Config):
    """Which engine runs the model: transformers or vLLM (its options under ``vllm``)."""

    backend: Backend = Field("hf", description=BACKEND_HELP)
    vllm: VLLMOptions = Field(default_factory=VLLMOptions, description="vLLM engine options (backend: vllm)")

    @model_validator(mode="after")
    def _backend_runs_here(self) -> EngineChoice:
        check_backend(self.backend, type(self).__name__, self.vllm)
        return self


class BatchedScoring(ModelOptions, EngineChoice):
    """Forward passes over length-sorted, padded batches (SelectIT ratings, IFD losses), or one vLLM request per
    sequence (``backend: vllm``: the batch fields are then unused)."""

    runtime: ClassVar[tuple[str, ...]] = ("batch_size", "max_batch_tokens", "attn_implementation")

    batch_size: int = Field(16, ge=1, description="Max sequences per forward pass (length-sorted batches)")
    max_batch_tokens: int | None = Field(None, ge=64, description="Max padded tokens per forward pass; default "
                                         "1024 on CPU (activations stay in cache), sized to free GPU memory on a GPU")
    attn_implementation: Literal["auto", "eager", "sdpa"] = Field("auto", description="auto = eager for "
                                                                 "bfloat16 on CPU (faster there), else sdpa")
    max_tokens: int = Field(1024, ge=32, description="Token limit per sequence")


class LoRATraining(ModelOptions):
    """LoRA (peft) on a frozen base with the transformers Trainer: shared by tuning and the judge."""

    runtime: ClassVar[tuple[str, ...]] = ("save_steps", "gradient_checkpointing")

    base: str = Field(DEFAULT_STUDENT, description="Base model: alias, local folder or hub id")
    template: Literal["auto", "alpaca", "chat"] = Field("auto", description="auto: the chat template when the "
                                                        "tokenizer has one and the model is instruction-tuned "
                                                        "(instruct alias, or instruct/chat/-it in its name), "
                                                        "else Stanford Alpaca")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] | None = Field(None, description="Default: attention and MLP projections found")
    max_tokens: int = Field(512, ge=16, description="Token limit per training example (longer ones are cut, "
                            "counted)")
    epochs: float = Field(3.0, gt=0, description="Training epochs")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps under <output>/checkpoints; "
                            "a re-run with the same output resumes from the last one")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate")
    lr_scheduler: Literal["cosine", "linear"] = Field("cosine", description="Decay after the warmup")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Linear warmup fraction")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup steps; replaces warmup_ratio")
    batch_size: int = Field(4, ge=1, description="Per-device micro-batch")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory")
    seed: int = Field(0, description="Training seed")
    register_as: str | None = Field(None, description="MLflow Model Registry name (None: skip)")


C = TypeVar("C", bound=BaseModel)


def load_stage_config(cls: type[C], section: str, path: str | Path | None, **options: Any) -> C:
    """A stage config from a YAML file, either a pipeline recipe (its ``section``) or the stage's fields alone,
    with the command-line options that were given (None: not given) on top; ``register_as=""`` means do not
    register. Raises OSError, yaml.YAMLError or pydantic.ValidationError."""
    import yaml

    raw = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}
    raw = raw[section] if section in raw else raw
    base = cls.model_validate(resolve_paths(cls, raw, Path(path).resolve().parent) if path else raw)
    # only the fields given explicitly: a command-line ``fidelity`` then fills the rest with its defaults
    given = base.model_dump(exclude_unset=True)
    for k, v in options.items():  # a nested section given (vllm) is merged into the file's
        if v is not None:
            given[k] = {**given[k], **v} if isinstance(v, dict) and isinstance(given.get(k), dict) else v
    cfg = cls.model_validate(given)
    if getattr(cfg, "register_as", None) == "":
        cfg.register_as = None  # type: ignore[attr-defined]
    return cfg
