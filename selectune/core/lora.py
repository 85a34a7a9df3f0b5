"""The one LoRA trainer, shared by instruction tuning and the Self-J judge: peft adapters on a frozen base, the
transformers Trainer, checkpoints with resume, per-step MLflow metrics, and the adapter folder format.

An adapter folder holds the peft adapter (safetensors), the tokenizer and ``selectune.json`` (the base
reference and fingerprint, the dtype it was trained in, the prompt template, the token limit): everything
:func:`load_adapter` needs to rebuild the model. Checkpoints go to ``<output>/checkpoints`` with the run key
(a hash of the config, the data and the base); a re-run with the same key resumes from the newest complete
checkpoint, any other key starts over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # Llama, Gemma, ...
               "qkv_proj", "gate_up_proj", "c_attn", "c_proj", "c_fc", "query_key_value", "dense",
               "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2", "query", "key", "value", "Wqkv", "out_proj"}
RUN_KEY = "selectune-run.json"
META = "selectune.json"  # in the adapter folder: what it needs to be rebuilt
STEP_KEYS = ("loss", "learning_rate", "grad_norm", "eval_loss", "epoch", "num_input_tokens_seen")


def find_target_modules(model: Any) -> list[str]:
    """Names of the attention and MLP projection layers (Linear/Conv1D leaves) in a model."""
    import torch
    from transformers.pytorch_utils import Conv1D

    found = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear | Conv1D) and name.rsplit(".", 1)[-1] in PROJECTIONS}
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"no attention/MLP projection layers found in {type(model).__name__} (Linear layers: "
                         f"{', '.join(linear) or 'none'}); set target_modules")
    return sorted(found)


def add_lora(model: Any, cfg: Any) -> tuple[Any, list[str]]:
    """Wrap ``model`` in seeded LoRA adapters (cfg: lora_r, lora_alpha, lora_dropout, target_modules, seed);
    returns the peft model and the target module names."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(cfg.seed)  # LoRA A matrices are initialized from the global RNG
    targets = cfg.target_modules or find_target_modules(model)
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    for layer in model.modules():
        for name, drop in getattr(layer, "lora_dropout", {}).items():
            if type(drop) is torch.nn.Dropout:
                layer.lora_dropout[name] = _mask_dropout()(drop.p)
    return model, targets


@functools.cache
def _mask_dropout() -> type:
    """``nn.Dropout`` whose CPU mask comes from 15 random bits per element, two elements per 32-bit draw (the CPU
    ``bernoulli_`` draws one number per element and took 14% of a LoRA step). The drop probability is ``p`` rounded
    to a multiple of 2^-15 (0.05 -> 0.049988) and kept values are scaled by the inverse of the rounded keep
    probability, so the output's expectation is the input. On other devices, and for a ``p`` that rounds to 0 or 1,
    it is ``nn.Dropout``."""
    import torch

    class MaskDropout(torch.nn.Dropout):
        def forward(self, x: Any) -> Any:
            dropped = round(self.p * 32768)
            if not self.training or x.device.type != "cpu" or not 0 < dropped < 32768:
                return super().forward(x)
            n = x.numel()
            bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n].view(x.shape)
            keep = bits.bitwise_and_(0x7FFF) >= dropped  # random_ fills int32 with 31 random bits: use 15 per half
            return x.mul(keep).mul_(32768 / (32768 - dropped))

    return MaskDropout


def write_meta(adapter_dir: str | Path, base: str, template: str, max_tokens: int, dtype: str, kind: str = "sft",
               extra: dict[str, Any] | None = None) -> None:
    """Record what the adapter is (``sft`` or ``self-j-judge``), its base reference, fingerprint and dtype, and the
    prompt template next to the adapter."""
    from selectune.core import models

    meta = {"kind": kind, "base": base, "base_fingerprint": models.fingerprint(base), "dtype": dtype,
            "template": template, "max_length": max_tokens, **(extra or {})}
    (Path(adapter_dir) / META).write_text(json.dumps(meta, indent=2))


def read_meta(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no {META}; not an adapter folder written by selectune")
    return json.loads(path.read_text())


def load_adapter(adapter_dir: str | Path, device: str = "cpu", dtype: str | None = None) -> tuple[Any, Any]:
    """(PeftModel in eval mode, tokenizer) from an adapter folder and the base it records. ``dtype`` None: as
    :func:`train_lora` returns it, base weights in the training dtype (bf16-rounded where trained so), upcast to
    float32 on CPU (bf16 decoding is slower there); else the base weights in ``dtype``."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from selectune.core import models

    meta = read_meta(adapter_dir)
    found = models.fingerprint(meta["base"])
    if found != meta["base_fingerprint"]:
        raise ValueError(f"{adapter_dir}: base model {meta['base']!r} has fingerprint {found}, but the adapter was "
                         f"trained on {meta['base_fingerprint']}; the outputs would differ")
    base, _ = models.load_causal_lm(meta["base"], dtype or meta["dtype"], device)
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    if dtype is None and device == "cpu":
        model.float()
    return model.to(device).eval(), AutoTokenizer.from_pretrained(str(adapter_dir))


def run_key(**parts: Any) -> str:
    """The hash that ties checkpoints to a run (config, data, base)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def last_checkpoint(folder: Path) -> Path | None:
    """Newest complete checkpoint (trainer_state.json is written last)."""
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def step_metrics(keys: Sequence[str] = STEP_KEYS, prefix: str = "") -> Any:
    """Trainer callback: the logged ``keys`` of every step into the active MLflow run (as ``prefix + key``)."""
    from transformers import TrainerCallback

    class StepMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **_: Any) -> None:
            import mlflow

            vals = {prefix + k: float(v) for k, v in (logs or {}).items() if k in keys and isinstance(v, int | float)}
            if vals and state.is_world_process_zero and mlflow.active_run() is not None:
                mlflow.log_metrics(vals, step=state.global_step)

    return StepMetrics()


@dataclass
class Base:
    """The frozen base model for LoRA training, in the precision its weights train in."""

    model: Any
    tokenizer: Any
    template: str
    precision: str  # frozen base weights in it; adapters stay float32 (peft)


def load_base(cfg: Any) -> Base:
    """The base model of ``cfg`` (base, dtype, template, trust_remote_code) ready for training."""
    from selectune.core import models
    from selectune.core.prompts import pick_template
    from selectune.core.settings import device, resolve_dtype

    precision = resolve_dtype(cfg.dtype, device())
    model, tok = models.load_causal_lm(cfg.base, precision, "cpu", cfg.trust_remote_code)
    model.config.use_cache = False  # a cache would disable the packed-sequence mask
    return Base(model, tok, pick_template(cfg.template, cfg.base, tok), precision)


@dataclass
class LoRARun:
    model: Any  # the trained PeftModel, unwrapped, eval mode
    tokenizer: Any
    template: str
    adapter_dir: Path
    target_modules: list[str]
    trainer: Any
    metrics: dict[str, float]


def _no_args_pickle() -> Any:
    """Trainer callback: each checkpoint without ``training_args.bin`` (a full pickle, never read on resume; the
    optimizer, scheduler and RNG states left beside it are loaded with ``weights_only``)."""
    from transformers import TrainerCallback

    class NoArgsPickle(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / "training_args.bin").unlink(missing_ok=True)

    return NoArgsPickle()


def train_lora(cfg: Any, base: Base, train_set: list[dict], collator: Any, output: str | Path, key: str, *,
               eval_set: list[dict] | None = None, trainer_cls: type | None = None,
               trainer_kwargs: dict[str, Any] | None = None, args: dict[str, Any] | None = None,
               callbacks: Sequence[Any] = (), kind: str = "sft", meta: dict[str, Any] | None = None) -> LoRARun:
    """Wrap ``base`` in LoRA and train it on ``train_set`` (feature dicts); save ``<output>/adapter``.

    ``cfg`` carries the LoRA and optimizer fields (lora_*, target_modules, batch_size, grad_accum, epochs,
    max_steps, learning_rate, lr_scheduler, warmup_ratio, warmup_steps, save_steps, seed, gradient_checkpointing,
    base, max_tokens).
    ``args`` add to or override the TrainingArguments; ``trainer_cls`` replaces the transformers Trainer; ``meta``
    goes into the adapter's selectune.json."""
    from peft.helpers import disable_input_dtype_casting
    from transformers import Trainer, TrainingArguments

    from selectune.core.settings import device

    out, dev = Path(output), device()
    ckpt = out / "checkpoints"
    key_file = ckpt / RUN_KEY
    if ckpt.is_dir() and (not key_file.is_file() or json.loads(key_file.read_text())["key"] != key):
        log.warning("%s: checkpoints from another config, data or base; starting over", ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
    resume = last_checkpoint(ckpt) if ckpt.is_dir() else None
    model, targets = add_lora(base.model, cfg)
    arguments = TrainingArguments(**{
        "output_dir": str(ckpt), "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum, "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps or -1, "learning_rate": cfg.learning_rate, "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio if cfg.warmup_steps is None else cfg.warmup_steps,
        "bf16": base.precision == "bfloat16", "fp16": base.precision == "float16",
        "use_cpu": dev == "cpu", "seed": cfg.seed, "data_seed": cfg.seed,
        "activation_checkpointing": cfg.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False}, "save_strategy": "steps",
        "save_steps": cfg.save_steps, "save_total_limit": 2, "logging_steps": 1, "report_to": "none",
        "remove_unused_columns": False, "ddp_find_unused_parameters": False,
        "dataloader_pin_memory": dev == "cuda", **(args or {})})
    trainer = (trainer_cls or Trainer)(model=model, args=arguments, data_collator=collator, train_dataset=train_set,
                                       eval_dataset=eval_set or None, callbacks=[*callbacks, _no_args_pickle()],
                                       **(trainer_kwargs or {}))
    if arguments.should_save:
        ckpt.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps({"key": key}))
    # Under autocast the adapters' matmuls run in the autocast dtype anyway: peft's cast of every adapter input to
    # float32 (and autocast's cast back) would only copy activations.
    with disable_input_dtype_casting(model, active=arguments.bf16 or arguments.fp16):
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    model.config.use_cache = True
    adapter_dir = out / "adapter"
    if arguments.should_save:
        trainer.save_model(str(adapter_dir))
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in MLflow
        base.tokenizer.save_pretrained(adapter_dir)
        write_meta(adapter_dir, cfg.base, base.template, cfg.max_tokens, base.precision, kind, meta)
    metrics = {"train_loss": round(result.training_loss, 6), "steps": trainer.state.global_step,
               "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
               "train_seconds": round(result.metrics.get("train_runtime", 0.0), 3),
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # drop the autocast wrapper
    model.eval()
    log.info("LoRA on %s (%s): %s", cfg.base, ", ".join(targets), metrics)
    return LoRARun(model, base.tokenizer, base.template, adapter_dir, targets, trainer, metrics)
