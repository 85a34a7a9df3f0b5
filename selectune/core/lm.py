"""The batched engine shared by SelectIT, the judge and IFD: tokenized prompts are sorted by length and packed
into padded batches under a token budget, and only the logits that are needed are computed.

Last-token probabilities (:func:`iter_last_token_probs`): left-padded batches, logits at the last position only
(``logits_to_keep=1``): a 262k-token vocabulary at every position would dominate the cost. Sequences that start
with the same tokens (every rating text begins with its rating prompt) run that prefix once and reuse its
key/value cache. Target losses are in :mod:`selectune.core.losses`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_SPACE_MARKERS = ("", "▁", "Ġ")  # plain digit, SentencePiece space, byte-level BPE space


def digit_token_ids(tokenizer: Any, labels: Sequence[str], what: str = "rating") -> list[int]:
    """Vocabulary ids of the single tokens spelling each label ("1".."K" ratings, "0".."9" judge digits), plain or
    with a leading-space marker; a label that is not one token is an error (the score is read from one token)."""
    vocab = tokenizer.get_vocab()
    ids = []
    for label in labels:
        tid = next((vocab[m + label] for m in _SPACE_MARKERS if m + label in vocab), None)
        if tid is None:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no single token for {what} "
                             f"{label!r}; the score is read from one token per {what}: use another model"
                             + (" or K <= 9" if what == "rating" else ""))
        ids.append(tid)
    return ids


def pad_id(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else its EOS, else 0."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    truncated: bool


class TooLong(ValueError):
    """A text over the token limit with ``truncation='error'``; ``row`` is its position in the texts."""

    def __init__(self, row: int, tokens: int, limit: int) -> None:
        super().__init__(f"prompt {row} has {tokens} tokens > max_length {limit} (truncation='error')")
        self.row, self.tokens, self.limit = row, tokens, limit


def encode(tokenizer: Any, texts: Sequence[str], tail: str, max_length: int, truncation: str = "right",
           add_special_tokens: bool = True) -> list[Encoded]:
    """Tokenize full texts; over-long ones keep their head and the tokens of ``tail`` (the answer cue)."""
    batch = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    n_tail = len(tokenizer(tail, add_special_tokens=False)["input_ids"]) + 1
    out = []
    for row, ids in enumerate(batch):
        if len(ids) <= max_length:
            out.append(Encoded(ids, False))
        elif truncation == "error":
            raise TooLong(row, len(ids), max_length)
        else:
            out.append(Encoded(ids[: max_length - n_tail] + ids[-n_tail:], True))
    return out


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so each padded batch stays under both limits."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        # the first (longest) row of a batch sets its padded width
        if cur and len(cur) < batch_size and lengths[cur[0]] * (len(cur) + 1) <= max_batch_tokens:
            cur.append(i)
        else:
            batches.append([i])
    return batches


def pad_left(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Any, Any, Any]:
    """Left-padded input ids, attention mask and position ids (positions count real tokens only)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[row, width - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix shared by all sequences, leaving at least one token in each."""
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


def iter_last_token_probs(model: Any, tokenizer: Any, seqs: Sequence[Sequence[int]], token_ids: Sequence[int],
                          batch_size: int = 16, max_batch_tokens: int = 8192, progress: Any = None,
                          share_prefix: bool = True) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (row indices, probabilities ``[b, len(token_ids)]``) batch by batch.

    Probabilities are the full-vocabulary softmax at the last position, read at ``token_ids``.
    With ``share_prefix``, the common token prefix of ``seqs`` runs once and each batch continues from a
    copy of its key/value cache (the same numbers as running every sequence whole). It is skipped for
    sequences longer than a sliding attention window, whose caches drop old positions.
    ``progress`` (a tqdm bar) is advanced by the batch size.
    """
    import torch

    pad = pad_id(tokenizer)
    device = next(model.parameters()).device
    wanted = torch.tensor(list(token_ids), dtype=torch.long, device=device)
    window = getattr(model.config, "sliding_window", None) or float("inf")
    n_prefix = common_prefix_len(seqs) if share_prefix and len(seqs) > 1 else 0
    if n_prefix < 8 or max(len(s) for s in seqs) > window:
        n_prefix = 0
    prefix_cache = None
    if n_prefix:
        with torch.inference_mode():
            prefix = torch.tensor([list(seqs[0][:n_prefix])], dtype=torch.long, device=device)
            prefix_cache = model(input_ids=prefix, use_cache=True).cache
    for batch in length_batches([len(s) - n_prefix for s in seqs], batch_size, max_batch_tokens):
        ids, mask, positions = pad_left([seqs[i][n_prefix:] for i in batch], pad)
        kwargs: dict[str, Any] = {"use_cache": False}
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones((len(batch), n_prefix), dtype=mask.dtype), mask], dim=1)
            kwargs = {"use_cache": True, "cache": cache}
        with torch.inference_mode():
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        position_ids=(positions + n_prefix).to(device), logits_to_keep=1, **kwargs)
            probs = torch.softmax(out.logits[:, -1, :].float(), dim=-1)[:, wanted]
        if progress is not None:
            progress.update(len(batch))
        yield batch, probs.double().cpu().numpy()
