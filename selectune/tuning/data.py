"""Supervised fine-tuning data: example encoding, packing and batch collation.

An example is (prompt tokens, response tokens + EOS) with labels -100 on the prompt; the prompt is
:func:`selectune.core.prompts.prompt_ids` (Stanford Alpaca for base models, the chat template for
instruction-tuned ones). Shared by training (:mod:`selectune.tuning.train`) and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectune.core.prompts import join_instruction, prompt_ids, prompt_text


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    n_prompt: int
    truncated: bool = False
    position_ids: list[int] | None = None

    def features(self) -> dict[str, list[int]]:
        out = {"input_ids": self.input_ids, "labels": self.labels}
        return out if self.position_ids is None else {**out, "position_ids": self.position_ids}


def encode(tokenizer: Any, template: str, instruction: str, input: str, output: str, max_length: int) -> Example:
    """Prompt + response (+ EOS) tokens, labels -100 on the prompt; cut to ``max_length`` from the end."""
    if template != "chat":
        response = output
    else:
        msgs = [{"role": "user", "content": join_instruction(instruction, input)},
                {"role": "assistant", "content": output}]
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        head = prompt_text(template, tokenizer, instruction, input)
        if not full.startswith(head):
            raise ValueError("the chat template renders the prompt differently with and without the reply; "
                             "use template 'alpaca'")
        response = full[len(head):]
    prompt = prompt_ids(template, tokenizer, instruction, input)
    resp = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in resp[-2:]:
        resp = [*resp, tokenizer.eos_token_id]
    ids = prompt + resp
    labels = [-100] * len(prompt) + resp
    return Example(ids[:max_length], labels[:max_length], len(prompt), len(ids) > max_length)


def encode_frame(df: pd.DataFrame, tokenizer: Any, template: str, max_length: int) -> tuple[list[Example], int]:
    """Encode every record; returns (examples with at least one response token, records dropped)."""
    out = [encode(tokenizer, template, r.instruction, r.input or "", r.output, max_length)
           for r in df.itertuples(index=False)]
    kept = [e for e in out if any(t != -100 for t in e.labels)]
    return kept, len(out) - len(kept)


def pack(examples: list[Example], max_length: int) -> list[Example]:
    """Concatenate examples in order into blocks of at most ``max_length`` tokens, positions reset per example."""
    blocks: list[Example] = []
    for ex in examples:
        cur = blocks[-1] if blocks else None
        if cur is None or len(cur.input_ids) + len(ex.input_ids) > max_length:
            cur = Example([], [], 0, position_ids=[])
            blocks.append(cur)
        cur.input_ids += ex.input_ids
        cur.labels += ex.labels
        cur.position_ids += list(range(len(ex.input_ids)))  # type: ignore[operator]
        cur.truncated = cur.truncated or ex.truncated
    return blocks


@dataclass
class Collator:
    """Right-pads a batch: attention mask for plain examples; packed blocks keep position ids, no mask.

    With ``trim``, logits are computed only from the first position that predicts a response token
    (``logits_to_keep``) and the labels are cut to match: the prompt part of a 262k-entry LM head is skipped.
    """

    pad_id: int
    trim: bool = True

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]

        def pad(key: str, value: int | None) -> Any:
            rows = [f[key] + ([value] * (width - len(f[key])) if value is not None
                              else list(range(width - len(f[key])))) for f in features]
            return torch.tensor(rows, dtype=torch.long)

        batch = {"input_ids": pad("input_ids", self.pad_id), "labels": pad("labels", -100)}
        if packed:  # padding becomes its own "sequence" (positions from 0), masked out of the loss
            batch["position_ids"] = pad("position_ids", None)
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                                                    for f in features], dtype=torch.long)
        start = min(next((i for i, t in enumerate(f["labels"]) if t != -100), width) for f in features) - 1
        if self.trim and 0 < start < width - 1:  # the model shifts labels: logits[:, i] predict labels[:, i + 1]
            batch["labels"] = batch["labels"][:, start:]
            batch["logits_to_keep"] = width - start
        return batch
