"""The batched generation engine shared by the local teacher, the judge's response sampling and evaluation.

Prompts (token ids) are length-sorted into left-padded batches. Greedy decoding, or sampling where every row
draws with its own ``torch.Generator`` (:class:`RowSampler`), so a row's text never depends on its batch
neighbours or on the batch size. What can still differ between a batched and a lone run is float rounding from
padding (masked positions), which can flip a near-tie between two tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selectune.core.lm import length_batches, pad_left


@dataclass(frozen=True)
class Generated:
    text: str  # decoded up to the first end-of-sequence token, special tokens skipped (not stripped)
    n_tokens: int  # new tokens, the end-of-sequence token included when one was emitted
    finish_reason: str = "stop"  # "stop": an end-of-sequence token (or a stop string); "length": max_new_tokens hit


def row_seed(*parts: object) -> int:
    """A 60-bit sampling seed from anything that identifies a row (a seed, a record id, a sample index)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:15], 16)


class RowSampler:
    """Logits processor that samples each row with its own generator (temperature, then top-p) and leaves
    only the drawn token, so greedy decoding emits it: a row's draws never depend on its batch neighbours."""

    def __init__(self, generators: list[Any], temperature: float, top_p: float) -> None:
        self.generators, self.temperature, self.top_p = generators, temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= self.top_p  # keep the smallest prefix reaching top_p
            probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            pick = torch.multinomial(probs[row].cpu(), 1, generator=gen).item()
            out[row, pick] = 0.0
        return out


class ReplyRepetitionPenalty:
    """CTRL's repetition penalty over the tokens of the reply only: the prompt's tokens (its markers, the chat
    template's end-of-turn) and the end-of-sequence ids stay free, so the penalty breaks loops without stopping
    the model from ending its turn."""

    def __init__(self, prompt_len: int, penalty: float, exempt: set[int]) -> None:
        self.prompt_len, self.penalty, self.exempt = prompt_len, penalty, sorted(exempt)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        reply = input_ids[:, self.prompt_len:]
        if reply.shape[1] == 0:
            return scores
        seen = scores.gather(1, reply)
        seen = seen.where(seen < 0, seen / self.penalty).where(seen >= 0, seen * self.penalty)
        out = scores.scatter(1, reply, seen)
        out[:, self.exempt] = scores[:, self.exempt]
        return out


def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the model's generation config, else the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
                   stop_strings: Sequence[str] = (), repetition_penalty: float = 1.0) -> list[Generated]:
    """One left-padded ``generate`` call: greedy when ``temperature`` is 0, else sampled with one generator per
    row seeded from ``seeds``; a row also ends after any of ``stop_strings`` (kept in its text).
    ``repetition_penalty`` > 1 applies :class:`ReplyRepetitionPenalty`."""
    import torch
    from transformers import GenerationConfig

    eos = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(eos),
                              pad_token_id=pad, use_cache=True,  # training switches the model's cache default off
                              stop_strings=list(stop_strings) or None)
    ids, mask, _ = pad_left(prompts, pad)
    processors: list[Any] = []
    if repetition_penalty != 1:
        processors.append(ReplyRepetitionPenalty(ids.shape[1], repetition_penalty, eos))
    if temperature > 0:
        if seeds is None or len(seeds) != len(prompts):
            raise ValueError("sampling needs one seed per prompt")
        processors.append(RowSampler([torch.Generator().manual_seed(s) for s in seeds], temperature, top_p))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), generation_config=config,
                             logits_processor=processors or None, tokenizer=tokenizer if stop_strings else None)
    results = []
    for row in range(len(prompts)):
        new = out[row, ids.shape[1]:].tolist()
        end = next((j for j, t in enumerate(new) if t in eos), None)
        if end is not None:
            results.append(Generated(tokenizer.decode(new[:end], skip_special_tokens=True), min(end + 1, len(new))))
            continue
        while new and new[-1] == pad:  # a row a stop string ended is padded while the others go on
            new.pop()
        results.append(Generated(tokenizer.decode(new, skip_special_tokens=True), len(new),
                                 "length" if len(new) >= max_new_tokens else "stop"))
    return results


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 8,
             temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
             progress: Any = None) -> list[Generated]:
    """:func:`generate_batch` over length-sorted batches of at most ``batch_size``; results in prompt order.
    ``progress`` (a tqdm bar) is advanced by each batch's size."""
    out: list[Generated | None] = [None] * len(prompts)
    for batch in length_batches([len(p) for p in prompts], batch_size, 1 << 62):
        texts = generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens, temperature, top_p,
                               [seeds[i] for i in batch] if seeds is not None else None)
        for i, g in zip(batch, texts, strict=True):
            out[i] = g
        if progress is not None:
            progress.update(len(batch))
    return out  # type: ignore[return-value]
