"""After tuning: held-out loss and perplexity of the reference responses (response tokens only, the training
masking) for the base and the tuned model, and a table of greedy generations for a fixed prompt set."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.core.prompts import join_instruction, prompt_ids
from selectune.tuning.data import Collator, Example, encode_frame


def example_losses(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8,
                   max_batch_tokens: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Summed negative log-likelihood of each example's labelled (response) tokens, and their count.

    Batches are length-sorted; logits start at the earliest response position of each batch (the collator's
    ``logits_to_keep``), as in training.
    """
    import torch

    from selectune.core.lm import length_batches

    device = next(model.parameters()).device
    collate = Collator(pad_id)
    sums, counts = np.zeros(len(examples)), np.zeros(len(examples), dtype=int)
    for batch in length_batches([len(e.input_ids) for e in examples], batch_size, max_batch_tokens):
        enc = collate([{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in batch])
        keep, targets = enc.pop("logits_to_keep", 0), enc.pop("labels")[:, 1:].to(device)
        with torch.inference_mode():
            logits = model(**{k: v.to(device) for k, v in enc.items()}, logits_to_keep=keep).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100,
                                                reduction="none")
        sums[batch] = nll.sum(dim=1).double().cpu().numpy()
        counts[batch] = (targets != -100).sum(dim=1).cpu().numpy()
    return sums, counts


def response_loss(model: Any, examples: Sequence[Example], pad_id: int, batch_size: int = 8,
                  max_batch_tokens: int = 4096) -> tuple[float, int]:
    """Token-weighted mean negative log-likelihood of the labelled (response) tokens, and their count."""
    sums, counts = example_losses(model, examples, pad_id, batch_size, max_batch_tokens)
    if not counts.sum():
        raise ValueError("no response tokens to evaluate")
    return float(sums.sum() / counts.sum()), int(counts.sum())


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             batch_size: int = 8) -> list[str]:
    """Greedy continuations of tokenized prompts, special tokens and surrounding whitespace stripped."""
    from tqdm.auto import tqdm

    from selectune.core import generate as engine

    with tqdm(total=len(prompts), desc="generate", leave=False) as bar:
        out = engine.generate(model, tokenizer, prompts, max_new_tokens, batch_size, progress=bar)
    return [g.text.strip() for g in out]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    table: pd.DataFrame  # instruction, reference, base, tuned


def evaluate(model: Any, tokenizer: Any, heldout: pd.DataFrame, template: str, max_length: int, n_prompts: int,
             max_new_tokens: int, out_dir: str | Path | None = None) -> EvalResult:
    """Base (adapter disabled) vs tuned: response loss/perplexity on ``heldout`` and greedy generations for its
    first ``n_prompts`` records; writes ``metrics.json`` and ``generations.jsonl`` to ``out_dir``."""
    if not hasattr(model, "disable_adapter"):
        raise TypeError(f"evaluate needs a peft model (base = adapter disabled), got {type(model).__name__}")
    start = time.perf_counter()
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = encode_frame(heldout, tokenizer, template, max_length)[0] if len(heldout) else []
    rows = heldout.head(n_prompts)
    prompts = [prompt_ids(template, tokenizer, r.instruction, r.input or "") for r in rows.itertuples(index=False)]
    metrics: dict[str, float] = {}
    gens: dict[str, list[str]] = {}
    for name in ("base", "tuned"):
        with model.disable_adapter() if name == "base" else nullcontext():
            if examples:
                loss, n_tokens = response_loss(model, examples, pad_id)
                metrics.update({f"eval.{name}_loss": round(loss, 6), f"eval.{name}_ppl": round(math.exp(loss), 4),
                                "eval.tokens": n_tokens})
            gens[name] = generate(model, tokenizer, prompts, max_new_tokens) if prompts else []
    metrics["eval.seconds"] = round(time.perf_counter() - start, 3)
    table = pd.DataFrame({"instruction": [join_instruction(r.instruction, r.input)
                                          for r in rows.itertuples(index=False)],
                          "reference": list(rows["output"]), "base": gens["base"], "tuned": gens["tuned"]})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        table.to_json(out / "generations.jsonl", orient="records", lines=True, force_ascii=False)
    return EvalResult(metrics, table)

