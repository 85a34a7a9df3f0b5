"""LoRA instruction tuning on the selected subset with the shared LoRA trainer (:mod:`selectune.core.lora`).

Examples become (prompt tokens, response tokens + EOS); the loss covers the response only (labels are -100
on prompt and padding). Base models get the Stanford Alpaca prompt, instruction-tuned models their chat
template (:mod:`selectune.core.prompts`). With ``packing`` examples are concatenated into ``max_tokens``
blocks whose position ids restart at 0 per example and no attention mask is passed: transformers then
builds a block-diagonal causal mask from the position ids, so packed examples do not attend to each other.

Runs unchanged on several GPUs: ``torchrun --nproc_per_node N -m selectune.tuning --data ... --output ...``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.data.records import split
from selectune.tuning.config import TuneConfig
from selectune.tuning.data import Collator, encode_frame, pack


def _trainer_class() -> type:
    """The transformers Trainer with the causal LM loss of :func:`selectune.core.losses.causal_lm_loss` (the LM head
    on the scored positions only). The first batch is also scored by the model's own loss; a model whose loss that
    does not reproduce (a logit scale the fused head does not know) trains on the model's own loss instead."""
    import logging

    from transformers import Trainer

    from selectune.core.losses import causal_lm_loss, fused_head_supported

    class SFTTrainer(Trainer):
        fused: bool | None = None  # None: not checked yet
        head_buffers: dict | None = None

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if self.fused is None:
                self.fused = fused_head_supported(model) and self._fused_matches(model, inputs)
            if return_outputs or not self.fused:  # evaluation needs the logits
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            items = num_items_in_batch if self.model_accepts_loss_kwargs else None  # as the model would use it
            self.head_buffers = {} if self.head_buffers is None else self.head_buffers
            with self.accelerator.autocast():  # the model's forward is wrapped in it; its body and head are not
                return causal_lm_loss(model, inputs, items, buffers=self.head_buffers)

        def _fused_matches(self, model: Any, inputs: dict) -> bool:
            """Both losses of the batch's first row, with the same dropout masks, leaving the random state as it
            was."""
            import torch

            row = {k: v[:1] if torch.is_tensor(v) else v for k, v in inputs.items()}
            cuda = list(range(torch.cuda.device_count()))
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                state = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None)
                with self.accelerator.autocast():
                    fused = causal_lm_loss(model, row)
                torch.set_rng_state(state[0])
                if cuda:
                    torch.cuda.set_rng_state_all(state[1])
                own = super().compute_loss(model, row)
            if ok := bool(torch.isclose(fused, own, rtol=5e-3)):
                return ok
            logging.getLogger(__name__).warning("the fused LM-head loss (%.5f) does not reproduce the model's own "
                                                "(%.5f): training on the model's loss", float(fused), float(own))
            return ok

    return SFTTrainer


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


def train(cfg: TuneConfig, data_path: str | Path, output: str | Path, callbacks: tuple = ()) -> TrainResult:
    """Train a LoRA adapter on ``data_path``; writes ``<output>/adapter`` (+ ``merged``), checkpoints under
    ``<output>/checkpoints`` and resumes from the newest one when the run key (config, data, base) matches."""
    from selectune.core import lora, models
    from selectune.core.config import output_fields
    from selectune.core.digests import file_digest
    from selectune.data.records import load_records

    out = Path(output)
    records = load_records(data_path).records
    train_df, heldout = split(records, 0.0 if cfg.heldout else cfg.eval_fraction, cfg.seed)
    if cfg.heldout:
        heldout = load_records(cfg.heldout).records
    if train_df.empty:
        raise ValueError(f"{data_path}: no training records")
    key = lora.run_key(cfg=output_fields(cfg), data=file_digest(data_path), base=models.fingerprint(cfg.base))
    base = lora.load_base(cfg)
    examples, dropped = encode_frame(train_df, base.tokenizer, base.template, cfg.max_tokens)
    if not examples:
        raise ValueError(f"{data_path}: every prompt is longer than max_tokens {cfg.max_tokens}")
    truncated = sum(e.truncated for e in examples)
    train_set = pack(examples, cfg.max_tokens) if cfg.packing else examples
    eval_set = encode_frame(heldout, base.tokenizer, base.template, cfg.max_tokens)[0] if len(heldout) else []
    tok = base.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    run = lora.train_lora(
        cfg, base, [e.features() for e in train_set], Collator(pad_id), out, key, trainer_cls=_trainer_class(),
        eval_set=[e.features() for e in eval_set], callbacks=[lora.step_metrics(), *callbacks],
        args={"per_device_eval_batch_size": cfg.batch_size, "eval_strategy": "steps" if eval_set else "no",
              "eval_steps": cfg.save_steps,
              "train_sampling_strategy": "sequential" if cfg.packing else "group_by_length",
              "include_num_input_tokens_seen": "all" if cfg.packing else "non_padding"})
    model, state = run.model, run.trainer.state
    merged_dir = None
    if cfg.merge and run.trainer.args.should_save:
        merged_dir = out / "merged"
        copy.deepcopy(model).merge_and_unload().save_pretrained(merged_dir)
        tok.save_pretrained(merged_dir)
    evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    seconds = run.metrics["train_seconds"]
    tokens = state.num_input_tokens_seen - run.trainer._initial_num_input_tokens_seen
    metrics = {**run.metrics, "train_records": len(train_df), "heldout_records": len(heldout), "truncated": truncated,
               "dropped_too_long": dropped, "train_tokens": tokens,
               "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
               **({"packed_blocks": len(train_set)} if cfg.packing else {}),
               **({"trainer_eval_loss": round(evals[-1], 6)} if evals else {})}
    if next(model.parameters()).device.type == "cpu":
        model.float()  # bf16 decoding is ~3x slower than float32 on CPU; upcasting bf16 weights is exact
    return TrainResult(model, tok, run.template, train_df, heldout, run.adapter_dir, merged_dir, run.target_modules,
                       metrics)
