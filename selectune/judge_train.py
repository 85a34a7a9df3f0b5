"""Self-J judge training: LoRA on the judge base with paired examples and the self-distillation loss.

Each labelled response gives two prompts for the same target digit: the with-reference judge prompt (the
teacher view) and the reference-free one (the student view). At the single target position:

    loss = CE(with-ref) + alpha * CE(ref-free) + beta * KL(p_with-ref || p_ref-free)

with the with-reference distribution detached. As in the official trainer (github.com/nusnlp/Self-J, kd.py),
the KL runs over the full vocabulary (softmax of all logits, not just the ten digits) with ``batchmean``
reduction (mean over target positions); only the rating digit is a target here (the official code excludes
EOS from the KL as well). Both views of a batch run in one left-padded forward pass that computes logits at
the last position only (``logits_to_keep=1``). Training reuses the tune stage's machinery: the transformers
Trainer with peft LoRA, checkpoints under ``<output>/checkpoints`` with resume on a matching run key, per-step
MLflow metrics, and the adapter folder format (``selectune.json``) that ``selectune.registry`` reloads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.config import JudgeConfig

log = logging.getLogger(__name__)
PART_KEYS = ("ce_ref", "ce_free", "kl")


def selfj_loss(logits_ref: Any, logits_free: Any, targets: Any, alpha: float, beta: float) -> tuple[Any, dict]:
    """The Self-J loss on target-position logits ``[b, vocab]`` and target ids ``[b]``; returns (loss, parts)."""
    import torch.nn.functional as F

    ce_ref = F.cross_entropy(logits_ref, targets)
    ce_free = F.cross_entropy(logits_free, targets)
    teacher = F.softmax(logits_ref.detach(), dim=-1)
    kl = F.kl_div(F.log_softmax(logits_free, dim=-1), teacher, reduction="batchmean")
    return ce_ref + alpha * ce_free + beta * kl, {"ce_ref": ce_ref, "ce_free": ce_free, "kl": kl}


def build_pairs(labels: pd.DataFrame, tokenizer: Any, template: str, max_length: int) -> list[dict[str, Any]]:
    """One training item per labelled response: with-reference ids, reference-free ids, target digit id."""
    from selectune.judge import digit_ids, judge_inputs

    need = [c for c in ("instruction", "response", "reference", "digit") if c not in labels.columns]
    if need:
        raise ValueError(f"judge training labels lack columns {need}; have {list(labels.columns)}")
    inputs = labels["input"].fillna("") if "input" in labels.columns else [""] * len(labels)
    args = (tokenizer, template, labels["instruction"], inputs, labels["response"])
    ref = judge_inputs(*args, labels["reference"], max_length)
    free = judge_inputs(*args, None, max_length)
    ids = digit_ids(tokenizer)
    return [{"ref": r, "free": f, "target": ids[int(d)]} for r, f, d in zip(ref, free, labels["digit"], strict=True)]


@dataclass
class PairCollator:
    """Left-pads the with-reference rows then the reference-free rows of a batch into one tensor."""

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from selectune.inference import pad_left

        ids, mask, positions = pad_left([x["ref"] for x in items] + [x["free"] for x in items], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                "targets": torch.tensor([x["target"] for x in items], dtype=torch.long)}


def target_logits(model: Any, batch: dict[str, Any]) -> Any:
    """Float32 logits at the last position of every row: ``[rows, vocab]``."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=1, use_cache=False)
    return out.logits[:, -1].float()


def _trainer_class() -> type:
    from transformers import Trainer

    class SelfJTrainer(Trainer):
        loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

        def __init__(self, *args: Any, alpha: float, beta: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.alpha, self.beta = alpha, beta
            self._sums, self._count = dict.fromkeys(PART_KEYS, 0.0), 0

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            logits = target_logits(model, inputs)
            n = len(inputs["targets"])
            loss, parts = selfj_loss(logits[:n], logits[n:], inputs["targets"], self.alpha, self.beta)
            for key, value in parts.items():
                self._sums[key] += float(value.detach())
            self._count += 1
            return (loss, {"logits": logits}) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._count:  # training logs: add the loss parts averaged since the last log
                logs.update({k: round(v / self._count, 6) for k, v in self._sums.items()})
                self._sums, self._count = dict.fromkeys(PART_KEYS, 0.0), 0
            super().log(logs, start_time)

    return SelfJTrainer


def _step_metrics() -> Any:
    """Trainer callback: per-step loss, its parts, learning rate and grad norm into the active MLflow run."""
    from transformers import TrainerCallback

    keys = ("loss", "learning_rate", "grad_norm", *PART_KEYS)

    class StepMetrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **_: Any) -> None:
            import mlflow

            vals = {f"judge_train.{k}": float(v) for k, v in (logs or {}).items()
                    if k in keys and isinstance(v, int | float)}
            if vals and state.is_world_process_zero and mlflow.active_run() is not None:
                mlflow.log_metrics(vals, step=state.global_step)

    return StepMetrics()


@dataclass
class JudgeTrainResult:
    model: Any  # the trained PeftModel, eval mode
    tokenizer: Any
    template: str
    adapter_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


TRAIN_FIELDS = ("base", "template", "ref_free_weight", "kl_weight", "lora_r", "lora_alpha", "lora_dropout",
                "target_modules", "max_tokens", "epochs", "max_steps", "learning_rate", "warmup_ratio", "batch_size",
                "grad_accum", "seed", "dtype")


def train_judge(cfg: JudgeConfig, labels: pd.DataFrame, output: str | Path, callbacks: tuple = ()) -> JudgeTrainResult:
    """Train the judge adapter on ``labels`` (rows of :func:`selectune.judge.generate_labels`); writes
    ``<output>/adapter`` and checkpoints under ``<output>/checkpoints`` (resumed when the run key matches)."""
    from transformers import TrainingArguments

    from selectune import models, tracking
    from selectune.settings import device, resolve_dtype
    from selectune.sft import RUN_KEY, _last_checkpoint, add_lora, write_meta
    from selectune.sft_data import pick_template

    if labels.empty:
        raise ValueError("judge training: no labelled responses")
    out, dev = Path(output), device()
    ckpt = out / "checkpoints"
    key = hashlib.sha256(json.dumps({"cfg": {k: getattr(cfg, k) for k in TRAIN_FIELDS}, "base":
                                     models.fingerprint(cfg.base), "labels": tracking.digest(
                                         labels, ["id", "sample", "response", "digit"])},
                                    sort_keys=True, default=str).encode()).hexdigest()
    key_file = ckpt / RUN_KEY
    if ckpt.is_dir() and (not key_file.is_file() or json.loads(key_file.read_text())["key"] != key):
        log.warning("%s: checkpoints from another config or label set; starting over", ckpt)
        shutil.rmtree(ckpt)
    resume = _last_checkpoint(ckpt) if ckpt.is_dir() else None

    precision = resolve_dtype(cfg.dtype, dev)  # frozen base weights in it; adapters stay float32 (peft)
    model, tok = models.load_causal_lm(cfg.base, precision, "cpu", cfg.trust_remote_code)
    model.config.use_cache = False
    template = pick_template(cfg.template, cfg.base, tok)
    pairs = build_pairs(labels, tok, template, cfg.max_tokens)
    model, _ = add_lora(model, cfg)
    args = TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio, bf16=precision == "bfloat16",
        fp16=precision == "float16", use_cpu=dev == "cpu", seed=cfg.seed, data_seed=cfg.seed, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=2, logging_steps=1, report_to="none",
        remove_unused_columns=False, include_num_input_tokens_seen="no", dataloader_pin_memory=dev == "cuda")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    trainer = _trainer_class()(model=model, args=args, data_collator=PairCollator(pad_id), train_dataset=pairs,
                               callbacks=[_step_metrics(), *callbacks], alpha=cfg.ref_free_weight, beta=cfg.kl_weight)
    if args.should_save:
        ckpt.mkdir(parents=True, exist_ok=True)
        key_file.write_text(json.dumps({"key": key}))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    model.config.use_cache = True
    adapter_dir = out / "adapter"
    if args.should_save:
        trainer.save_model(str(adapter_dir))
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config is in MLflow
        tok.save_pretrained(adapter_dir)
        write_meta(adapter_dir, cfg.base, template, cfg.max_tokens, precision)
    logged = [h for h in trainer.state.log_history if "ce_ref" in h]
    metrics = {"train_loss": round(result.training_loss, 6), "steps": trainer.state.global_step,
               "resumed_from_step": int(resume.name.split("-")[-1]) if resume else 0, "train_pairs": len(pairs),
               "train_seconds": round(result.metrics.get("train_runtime", 0.0), 3),
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
               **({f"final_{k}": logged[-1][k] for k in PART_KEYS} if logged else {})}
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.eval()
    return JudgeTrainResult(model, tok, template, adapter_dir, metrics)
