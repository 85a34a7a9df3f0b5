"""Target losses, the engine behind IFD and response perplexity: the mean cross-entropy of the
last tokens of each sequence, with no [tokens x vocabulary] matrix ever built.

Tokenization (:func:`sequence_losses`): prefix and target are tokenized separately (no special tokens) and their
ids concatenated after the model's start tokens (what the tokenizer puts first, else its BOS, else its EOS), so
the target tokens are the same with and without the prefix, and every target token, the first included, is
scored. A prefix whose text already begins with the start tokens (chat templates that write ``<bos>``) is not
given a second copy. Truncation to ``max_length``: the target keeps as many tokens as fit after start + min(prefix,
half the room); the prefix then keeps its *end* (the part next to the target, with the template's response cue).

Engine (:func:`target_losses`): sequences are length-sorted into right-padded batches under a token budget (right
padding needs no attention mask or position ids: causal attention never looks at the pads after a row). The
model's body runs once per batch; hidden states are gathered at the positions that predict target tokens only and
queued, and the LM head runs on full chunks of them (HEAD_CHUNK_ELEMENTS logits) in reused buffers; log-softmax
and cross-entropy are float32. The model's final logit soft-cap (Gemma 2) is applied.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from selectune.core.lm import length_batches, pad_id

HEAD_CHUNK_ELEMENTS = 1 << 25  # logits per LM-head chunk: 128 rows of a 262k vocabulary (134 MB in float32)


def batch_budget(model: Any, max_batch_tokens: int | None, cpu_default: int = 1024) -> int:
    """Padded tokens per forward pass: the configured budget, else ``cpu_default`` on CPU (activations stay in
    cache), else what a quarter of the GPU's free memory holds (:func:`gpu_budget`)."""
    if max_batch_tokens:
        return max_batch_tokens
    param = next(model.parameters())
    if param.device.type != "cuda":
        return cpu_default
    import torch

    free, _ = torch.cuda.mem_get_info(param.device)
    return gpu_budget(free, model.config, param.element_size())


def gpu_budget(free_bytes: int, config: Any, dtype_bytes: int, low: int = 4096, high: int = 131072) -> int:
    """Tokens whose inference activations fit in a quarter of ``free_bytes``: per token the residual stream and
    attention projections (4 x hidden), the MLP's gate, up and product (3 x intermediate) and the key/value cache a
    shared prompt prefix is copied into (2 x layers x kv heads x head dim), in the model's dtype; clamped to
    [low, high] and rounded down to a multiple of 1024."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = 2 * c.num_hidden_layers * getattr(c, "num_key_value_heads", c.num_attention_heads) * head_dim
    per_token = dtype_bytes * (4 * c.hidden_size + 3 * c.intermediate_size + kv)
    return max(low, min(high, int(free_bytes / 4 / per_token) // 1024 * 1024))


def start_ids(tokenizer: Any) -> list[int]:
    """Tokens a sequence starts with: those the tokenizer adds in front, else its BOS, else its EOS."""
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    if ids:
        return list(ids)
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [tid]
    raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither BOS nor EOS token: "
                     "the first target token would have no context")


def pack(start: list[int], prefix: list[int], target: list[int], max_length: int) -> tuple[list[int], int, bool]:
    """start + prefix + target within ``max_length`` -> (ids, kept target tokens, truncated)."""
    if prefix[: len(start)] == start:
        prefix = prefix[len(start):]
    room = max_length - len(start)
    if len(prefix) + len(target) <= room:
        return start + prefix + target, len(target), False
    n_target = min(len(target), room - min(len(prefix), room // 2))
    n_prefix = min(len(prefix), room - n_target)
    return start + prefix[len(prefix) - n_prefix:] + target[:n_target], n_target, True


def _core(model: Any) -> Any:
    """The causal LM itself, PEFT-wrapped or not."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _parts(model: Any) -> tuple[Any, Any, float | None]:
    """(decoder body, LM head, final logit soft-cap) of a causal LM, PEFT-wrapped or not."""
    core = _core(model)
    return core.get_decoder(), core.get_output_embeddings(), getattr(core.config, "final_logit_softcapping", None)


def _head_nll(hidden: Any, labels: Any, head: Any, softcap: float | None, buf: Any, raw: Any) -> Any:
    """Float32 cross-entropy of ``labels`` under ``head(hidden)``, ``len(buf)`` rows at a time.

    The logits go into the reused buffers ``raw`` (model dtype) and ``buf`` (float32; a fresh [rows x
    vocabulary] tensor per chunk would be paged in from the OS each time) and become log-probabilities in place.
    """
    import torch

    rows = len(buf)
    out = torch.empty(len(hidden), dtype=torch.float32, device=hidden.device)
    for s in range(0, len(hidden), rows):
        h = hidden[s:s + rows]
        x = buf[: len(h)]
        if isinstance(head, torch.nn.Linear):
            torch.mm(h, head.weight.t(), out=raw[: len(h)])
            x.copy_(raw[: len(h)])
            if head.bias is not None:
                x.add_(head.bias)
        else:
            x.copy_(head(h))
        if softcap:
            x.div_(softcap).tanh_().mul_(softcap)
        torch.log_softmax(x, -1, out=x)
        out[s:s + rows] = -x.gather(1, labels[s:s + rows, None])[:, 0]
    return out


def target_losses(model: Any, seqs: Sequence[Sequence[int]], n_targets: Sequence[int], batch_size: int,
                  max_batch_tokens: int, pad_id: int = 0, head_rows: int | None = None,
                  progress: Any = None) -> np.ndarray:
    """Mean cross-entropy of the last ``n_targets[i]`` tokens of each ``seqs[i]`` (float64 array).

    Hidden states at target positions are queued across body batches and go through the LM head in full
    chunks of ``head_rows`` (default: HEAD_CHUNK_ELEMENTS / vocabulary size), whatever the batch sizes.
    """
    import torch

    body, head, softcap = _parts(model)
    dev = next(model.parameters()).device
    vocab = head.weight.shape[0]
    rows = min(head_rows or max(1, HEAD_CHUNK_ELEMENTS // vocab), max(1, sum(n_targets)))
    buf = torch.empty((rows, vocab), dtype=torch.float32, device=dev)
    raw = torch.empty((rows, vocab), dtype=head.weight.dtype, device=dev)
    sums = np.zeros(len(seqs))
    queue: list[tuple[Any, Any, np.ndarray]] = []  # (hidden [k, H], labels [k], sequence index [k])

    def flush(final: bool) -> None:
        h, lab, own = (torch.cat([q[0] for q in queue]), torch.cat([q[1] for q in queue]),
                       np.concatenate([q[2] for q in queue]))
        k = len(h) if final else len(h) // rows * rows
        np.add.at(sums, own[:k], _head_nll(h[:k], lab[:k], head, softcap, buf, raw).double().cpu().numpy())
        queue[:] = [(h[k:], lab[k:], own[k:])] if k < len(h) else []

    with torch.inference_mode():
        for batch in length_batches([len(s) for s in seqs], batch_size, max_batch_tokens):
            ids = torch.full((len(batch), len(seqs[batch[0]])), pad_id, dtype=torch.long)
            rows_i, cols_i = [], []
            for r, i in enumerate(batch):
                n, length = n_targets[i], len(seqs[i])
                ids[r, :length] = torch.tensor(seqs[i], dtype=torch.long)
                rows_i += [r] * n
                cols_i += range(length - n - 1, length - 1)  # position p - 1 predicts token p
            rows_t, cols_t = torch.tensor(rows_i), torch.tensor(cols_i)
            hidden = body(input_ids=ids.to(dev), use_cache=False).last_hidden_state  # right padding: no mask
            queue.append((hidden[rows_t.to(dev), cols_t.to(dev)], ids[rows_t, cols_t + 1].to(dev),
                          np.asarray(batch)[rows_t.numpy()]))
            if sum(len(q[0]) for q in queue) >= rows:
                flush(final=False)
            if progress is not None:
                progress.update(len(batch))
        if queue:
            flush(final=True)
    return sums / np.asarray(n_targets, dtype=float)


def token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def sequence_losses(model: Any, tokenizer: Any, prefixes: list[str], targets: list[str], max_length: int,
                    batch_size: int = 16, max_batch_tokens: int | None = None, head_rows: int | None = None,
                    progress: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean loss of each target after its prefix ("" = none): (losses, target tokens scored, truncated)."""
    if len(prefixes) != len(targets):
        raise ValueError(f"{len(prefixes)} prefixes for {len(targets)} targets")
    start = start_ids(tokenizer)
    packed = [pack(start, p, t, max_length)
              for p, t in zip(token_ids(tokenizer, prefixes), token_ids(tokenizer, targets), strict=True)]
    for i, (_, n, _) in enumerate(packed):
        if n == 0:
            raise ValueError(f"target {i} has no tokens: {targets[i][:60]!r}")
    seqs, n_t, trunc = (list(x) for x in zip(*packed, strict=True)) if packed else ([], [], [])
    losses = target_losses(model, seqs, n_t, batch_size, batch_budget(model, max_batch_tokens), pad_id(tokenizer),
                           head_rows, progress)
    return losses, np.array(n_t, dtype=int), np.array(trunc, dtype=bool)


# ---- training: the causal LM loss with the head on the scored positions only ----

def fused_head_supported(model: Any) -> bool:
    """Whether :func:`causal_lm_loss` applies: a causal LM (PEFT-wrapped or not) whose body can be called directly,
    not one inside a wrapper whose own forward must run (DistributedDataParallel synchronises gradients there), with
    a plain, frozen linear LM head without bias."""
    import torch

    if not hasattr(_core(model), "get_decoder"):
        return False
    _, head, _ = _parts(model)
    return isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad


def causal_lm_loss(model: Any, batch: dict[str, Any], num_items: Any = None, head_rows: int | None = None,
                   buffers: dict | None = None) -> Any:
    """transformers' causal LM loss of ``batch`` (``input_ids``, ``labels`` with -100 where unscored, an
    ``attention_mask`` or packed ``position_ids``, optionally the collator's ``logits_to_keep``) without a
    [batch x length x vocabulary] logits tensor: the body runs once, the frozen head runs only on the hidden states
    that predict a scored label, ``head_rows`` at a time in reused buffers, and the gradient with respect to those
    hidden states is computed in the same pass (softmax - one-hot, times the head). Sum over scored tokens divided
    by ``num_items`` (transformers' gradient-accumulation normalisation) when given, else their mean. ``buffers``: a
    dict kept by the caller across batches, so the head's [rows x vocabulary] buffers are allocated once (a fresh
    one per batch is paged in from the OS each time)."""
    import torch

    body, head, softcap = _parts(model)
    keep = batch.get("logits_to_keep") or batch["input_ids"].shape[1]
    extra = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
    hidden = body(input_ids=batch["input_ids"], use_cache=False, **extra).last_hidden_state[:, -keep:]
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]  # position i predicts label i + 1
    scored = targets != -100
    total = _head_ce()(hidden[scored], targets[scored], head.weight, softcap,
                       head_rows or max(1, HEAD_CHUNK_ELEMENTS // head.weight.shape[0]),
                       {} if buffers is None else buffers)
    return total / (num_items if num_items is not None else scored.sum().clamp(min=1))


@functools.cache
def _head_ce() -> Any:
    """``apply`` of an autograd function: (hidden [n, H], labels [n], head weight [V, H], soft-cap, rows, buffers) ->
    summed float32 cross-entropy; its backward returns the gradient for the hidden states computed in the forward
    pass."""
    import torch

    class HeadCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, hidden: Any, labels: Any, weight: Any, softcap: float | None, rows: int,
                    buffers: dict) -> Any:
            kind = hidden.device.type
            dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
            w = weight if weight.dtype == dtype else weight.to(dtype)
            n, rows = len(hidden), max(1, min(rows, len(hidden)))
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad = torch.empty((n, w.shape[1]), dtype=dtype, device=hidden.device)
            key = (w.shape[0], dtype, hidden.device)
            if buffers.get("key") != key or len(buffers["buf"]) < rows:
                buffers.update(key=key, buf=torch.empty((rows, w.shape[0]), dtype=torch.float32, device=hidden.device),
                               raw=torch.empty((rows, w.shape[0]), dtype=dtype, device=hidden.device))
            buf, raw = buffers["buf"], buffers["raw"]
            with torch.autocast(kind, enabled=False):
                for s in range(0, n, rows):
                    h, y = hidden[s:s + rows].to(dtype), labels[s:s + rows]
                    k, x = len(h), buf[: len(h)]
                    torch.mm(h, w.t(), out=raw[:k])  # the logits as the model computes them, then float32
                    x.copy_(raw[:k])
                    tanh = x.div(softcap).tanh_() if softcap else None
                    if tanh is not None:
                        torch.mul(tanh, softcap, out=x)
                    picked = x.gather(1, y[:, None])[:, 0]
                    top = x.amax(-1)
                    norm = x.sub_(top[:, None]).exp_().sum(-1)  # one exp pass serves the loss and the softmax
                    total += (top + norm.log() - picked).sum()
                    x.div_(norm[:, None])  # softmax
                    x[torch.arange(k, device=x.device), y] -= 1.0  # d(nll)/d(logits)
                    if tanh is not None:
                        x.mul_(1.0 - tanh * tanh)
                    raw[:k].copy_(x)
                    torch.mm(raw[:k], w, out=grad[s:s + k])
            ctx.save_for_backward(grad)
            ctx.hidden_dtype = hidden.dtype
            return total

        @staticmethod
        def backward(ctx: Any, upstream: Any) -> Any:
            (grad,) = ctx.saved_tensors
            return (grad * upstream).to(ctx.hidden_dtype), None, None, None, None, None

    return HeadCrossEntropy.apply
