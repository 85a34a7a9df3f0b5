"""Self-J judge training: LoRA on the judge base with paired examples and the self-distillation loss.

Each labelled response gives two prompts for the same target digit: the with-reference judge prompt (the
teacher view) and the reference-free one (the student view). At the single target position:

    loss = CE(with-ref) + ref_free_weight * CE(ref-free) + kl_weight * KL(p_with-ref || p_ref-free)

with the with-reference distribution detached. As in the official trainer (github.com/nusnlp/Self-J, kd.py),
the KL runs over the full vocabulary (softmax of all logits, not just the ten digits) with ``batchmean``
reduction (mean over target positions); only the rating digit is a target here (the official code excludes
EOS from the KL as well). Both views of a batch run in one left-padded forward pass that computes logits at
the last position only (``logits_to_keep=1``). Training is the shared LoRA trainer (:mod:`selectune.core.lora`):
checkpoints with resume on a matching run key, per-step MLflow metrics, and the adapter folder format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.core.lm import pad_id, pad_left
from selectune.judge.config import JudgeConfig

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


def build_pairs(labels: pd.DataFrame, tokenizer: Any, template: str, max_length: int,
                texts: tuple[str | None, str | None] = (None, None)) -> list[dict[str, Any]]:
    """One training item per labelled response: with-reference ids, reference-free ids, target digit id."""
    from selectune.judge.prompts import digit_ids, judge_inputs

    need = [c for c in ("instruction", "response", "reference", "digit") if c not in labels.columns]
    if need:
        raise ValueError(f"judge training labels lack columns {need}; have {list(labels.columns)}")
    inputs = labels["input"].fillna("") if "input" in labels.columns else [""] * len(labels)
    args = (tokenizer, template, labels["instruction"], inputs, labels["response"])
    ref = judge_inputs(*args, labels["reference"], max_length, texts)
    free = judge_inputs(*args, None, max_length, texts)
    ids = digit_ids(tokenizer)
    return [{"ref": r, "free": f, "target": ids[int(d)]} for r, f, d in zip(ref, free, labels["digit"], strict=True)]


@dataclass
class PairCollator:
    """Left-pads the with-reference rows then the reference-free rows of a batch into one tensor."""

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

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


@dataclass
class JudgeTrainResult:
    model: Any  # the trained PeftModel, eval mode
    tokenizer: Any
    template: str
    adapter_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


TRAIN_FIELDS = ("base", "template", "ref_free_weight", "kl_weight", "lora_r", "lora_alpha", "lora_dropout",
                "target_modules", "max_tokens", "epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_ratio",
                "warmup_steps", "batch_size", "grad_accum", "seed", "dtype")


def train_judge(cfg: JudgeConfig, labels: pd.DataFrame, output: str | Path, callbacks: tuple = ()) -> JudgeTrainResult:
    """Train the judge adapter on ``labels`` (rows of :func:`selectune.judge.labels.generate_labels`) with the
    shared LoRA trainer; writes ``<output>/adapter`` and checkpoints under ``<output>/checkpoints`` (resumed when
    the run key matches)."""
    from selectune.core import lora, models
    from selectune.core.digests import table_digest
    from selectune.judge.prompts import prompt_texts

    if labels.empty:
        raise ValueError("judge training: no labelled responses")
    texts = prompt_texts(cfg.prompts)
    key = lora.run_key(cfg={k: getattr(cfg, k) for k in TRAIN_FIELDS}, base=models.fingerprint(cfg.base),
                       labels=table_digest(labels, ["id", "sample", "response", "digit"]), prompts=texts)
    base = lora.load_base(cfg)
    pairs = build_pairs(labels, base.tokenizer, base.template, cfg.max_tokens, texts)
    run = lora.train_lora(cfg, base, pairs, PairCollator(pad_id(base.tokenizer)), output, key,
                          trainer_cls=_trainer_class(),
                          trainer_kwargs={"alpha": cfg.ref_free_weight, "beta": cfg.kl_weight},
                          args={"include_num_input_tokens_seen": "no"},
                          callbacks=[lora.step_metrics(("loss", "learning_rate", "grad_norm", *PART_KEYS),
                                                       "judge_train."), *callbacks], kind="self-j-judge",
                          meta={"prompts": {"with_reference": texts[0], "without_reference": texts[1]}})
    logged = [h for h in run.trainer.state.log_history if "ce_ref" in h]
    metrics = {**run.metrics, "train_pairs": len(pairs),
               **({f"final_{k}": logged[-1][k] for k in PART_KEYS} if logged else {})}
    return JudgeTrainResult(run.model, run.tokenizer, run.template, run.adapter_dir, metrics)
