"""LoRA instruction tuning with peft and the transformers Trainer.

Examples become (prompt tokens, response tokens + EOS); the loss covers the response only (labels are -100
on prompt and padding). Base models get the Stanford Alpaca prompt, instruction-tuned models their chat
template (:mod:`selectune.sft_data`). With ``packing`` examples are concatenated into ``max_length``
blocks whose position ids restart at 0 per example and no attention mask is passed: transformers then
builds a block-diagonal causal mask from the position ids, so packed examples do not attend to each other.

Runs unchanged on several GPUs: ``torchrun --nproc_per_node N -m selectune.sft --data ... --output ...``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.config import TuneConfig
from selectune.sft_data import Collator, encode_frame, pack, pick_template

log = logging.getLogger(__name__)

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",  # Llama, Gemma, ...
               "qkv_proj", "gate_up_proj", "c_attn", "c_proj", "c_fc", "query_key_value", "dense",
               "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2", "query", "key", "value", "Wqkv", "out_proj"}
RUN_KEY = "selectune-run.json"
META = "selectune.json"  # in the adapter folder: what it needs to be rebuilt


def add_lora(model: Any, cfg: Any) -> tuple[Any, list[str]]:
    """Wrap ``model`` in seeded LoRA adapters from a config with lora_r/lora_alpha/lora_dropout/target_modules/seed
    (TuneConfig, JudgeConfig); returns the peft model and the target module names."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(cfg.seed)  # LoRA A matrices are initialized from the global RNG
    targets = cfg.target_modules or find_target_modules(model)
    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    return model, targets


def find_target_modules(model: Any) -> list[str]:
    """Names of the attention and MLP projection layers (Linear/Conv1D leaves) in a model."""
    import torch
    from transformers.pytorch_utils import Conv1D

    found = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear | Conv1D) and name.rsplit(".", 1)[-1] in PROJECTIONS}
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"no attention/MLP projection layers found in {type(model).__name__} (Linear layers: "
                         f"{', '.join(linear) or 'none'}); set tune.target_modules")
    return sorted(found)


def split(df: pd.DataFrame, eval_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded (train, held-out) split; at least one record on each side when eval_fraction > 0."""
    n_eval = 0 if eval_fraction == 0 or len(df) < 2 else min(len(df) - 1, max(1, round(len(df) * eval_fraction)))
    order = np.random.default_rng(seed).permutation(len(df))
    return df.iloc[order[n_eval:]].reset_index(drop=True), df.iloc[order[:n_eval]].reset_index(drop=True)


@dataclass
class TrainResult:
    model: Any  # the trained PeftModel, eval mode
    tokenizer: Any
    template: str
    train: pd.DataFrame
    heldout: pd.DataFrame
    adapter_dir: Path
    merged_dir: Path | None
    target_modules: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


def write_meta(adapter_dir: str | Path, base: str, template: str, max_length: int, dtype: str) -> None:
    """Record the base reference, fingerprint and dtype and the prompt template next to the adapter."""
    from selectune import models

    meta = {"base": base, "base_fingerprint": models.fingerprint(base), "dtype": dtype, "template": template,
            "max_length": max_length}
    (Path(adapter_dir) / META).write_text(json.dumps(meta, indent=2))


def _last_checkpoint(folder: Path) -> Path | None:
    """Newest complete checkpoint (trainer_state.json is written last)."""
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _step_metrics() -> Any:
    """Trainer callback: per-step loss, learning rate, grad norm and eval loss into the active MLflow run."""
    from transformers import TrainerCallback

    keys = ("loss", "learning_rate", "grad_norm", "eval_loss", "epoch", "num_input_tokens_seen")

    class StepMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **_: Any) -> None:
            import mlflow

            vals = {k: float(v) for k, v in (logs or {}).items() if k in keys and isinstance(v, int | float)}
            if vals and state.is_world_process_zero and mlflow.active_run() is not None:
                mlflow.log_metrics(vals, step=state.global_step)

    return StepMetrics()


def train(cfg: TuneConfig, data_path: str | Path, output: str | Path, callbacks: tuple = ()) -> TrainResult:
    """Train a LoRA adapter on ``data_path``; writes ``<output>/adapter`` (+ ``merged``), checkpoints under
    ``<output>/checkpoints`` and resumes from the newest one when the run key (config, data, base) matches."""
    from transformers import Trainer, TrainingArguments

    from selectune import data, models
    from selectune.settings import device, resolve_dtype
    from selectune.stages import file_digest

    out, dev = Path(output), device()
    ckpt = out / "checkpoints"
    records = data.load_records(data_path).records
    train_df, heldout = split(records, 0.0 if cfg.heldout else cfg.eval_fraction, cfg.seed)
    if cfg.heldout:
        heldout = data.load_records(cfg.heldout).records
    if train_df.empty:
        raise ValueError(f"{data_path}: no training records")
    key = hashlib.sha256(json.dumps({"cfg": cfg.model_dump(mode="json"), "data": file_digest(data_path),
                                     "base": models.fingerprint(cfg.base)}, sort_keys=True).encode()).hexdigest()
    key_file = ckpt / RUN_KEY
    if ckpt.is_dir() and (not key_file.is_file() or json.loads(key_file.read_text())["key"] != key):
        log.warning("%s: checkpoints from another config or data; starting over", ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
    resume = _last_checkpoint(ckpt) if ckpt.is_dir() else None

    precision = resolve_dtype(cfg.dtype, dev)  # frozen base weights in it; adapters stay float32 (peft)
    model, tok = models.load_causal_lm(cfg.base, precision, "cpu", cfg.trust_remote_code)
    model.config.use_cache = False  # a cache would disable the packed-sequence mask
    template = pick_template(cfg.template, cfg.base, tok)
    examples, dropped = encode_frame(train_df, tok, template, cfg.max_tokens)
    if not examples:
        raise ValueError(f"{data_path}: every prompt is longer than max_length {cfg.max_tokens}")
    truncated = sum(e.truncated for e in examples)
    train_set = pack(examples, cfg.max_tokens) if cfg.packing else examples
    eval_set = encode_frame(heldout, tok, template, cfg.max_tokens)[0] if len(heldout) else []

    model, targets = add_lora(model, cfg)
    args = TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,
        bf16=precision == "bfloat16", fp16=precision == "float16", use_cpu=dev == "cpu", seed=cfg.seed,
        data_seed=cfg.seed, activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False}, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=2, eval_strategy="steps" if eval_set else "no", eval_steps=cfg.save_steps,
        logging_steps=1, report_to="none", remove_unused_columns=False, ddp_find_unused_parameters=False,
        train_sampling_strategy="sequential" if cfg.packing else "group_by_length",
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding", dataloader_pin_memory=dev == "cuda")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    trainer = Trainer(model=model, args=args, data_collator=Collator(pad_id),
                      train_dataset=[e.features() for e in train_set],
                      eval_dataset=[e.features() for e in eval_set] or None, callbacks=[_step_metrics(), *callbacks])
    if args.should_save:
        ckpt.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps({"key": key}))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    model.config.use_cache = True
    state = trainer.state
    adapter_dir, merged_dir = out / "adapter", None
    if args.should_save:
        trainer.save_model(str(adapter_dir))
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in MLflow
        tok.save_pretrained(adapter_dir)
        write_meta(adapter_dir, cfg.base, template, cfg.max_tokens, precision)
        if cfg.merge:
            import copy

            merged_dir = out / "merged"
            copy.deepcopy(model).merge_and_unload().save_pretrained(merged_dir)
            tok.save_pretrained(merged_dir)
    evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    seconds = result.metrics.get("train_runtime", 0.0)
    tokens = state.num_input_tokens_seen - trainer._initial_num_input_tokens_seen
    metrics = {"train_loss": round(result.training_loss, 6), "steps": state.global_step,
               "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0,
               "train_records": len(train_df), "heldout_records": len(heldout), "truncated": truncated,
               "dropped_too_long": dropped, "train_tokens": tokens, "train_seconds": round(seconds, 3),
               "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
               **({"packed_blocks": len(train_set)} if cfg.packing else {}),
               **({"trainer_eval_loss": round(evals[-1], 6)} if evals else {})}
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # drop the autocast wrapper
    if next(model.parameters()).device.type == "cpu":
        model.float()  # bf16 decoding is ~3x slower than float32 on CPU; upcasting bf16 weights is exact
    model.eval()
    return TrainResult(model, tok, template, train_df, heldout, adapter_dir, merged_dir, targets, metrics)


if __name__ == "__main__":  # python -m selectune.sft, also under torchrun / accelerate launch
    from selectune.commands.tune import main

    main()
