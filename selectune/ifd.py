"""Student statistics: IFD and reversed IFD (Selective Reflection-Tuning, arXiv 2402.10110).

For an instruction Q (instruction + "\\n" + input) and a response A, four mean token losses of the student:
s(A), s(A|Q) (A after the templated Q), s(Q) and s(Q|A') (Q after a reverse prompt built from A).
IFD = exp(s(A|Q) - s(A)) = ppl(A|Q) / ppl(A); r-IFD = exp(s(Q|A') - s(Q)); the official code's loss ratios
s(A|Q) / s(A) and s(Q|A') / s(Q) are kept too.

Tokenization: prefix and target are tokenized separately (no special tokens) and their ids concatenated
after the model's start tokens (what the tokenizer puts first, else its BOS, else its EOS), so the target
tokens are the same with and without the prefix, and every target token, the first included, is scored.
A prefix whose text already begins with the start tokens (chat templates that write ``<bos>``) is not
given a second copy.

Truncation to ``max_length``: the target keeps as many tokens as fit after start + min(prefix, half the
room); the prefix then keeps its *end* (the part next to the target, with the template's response cue).
The unconditional sequence scores exactly the kept target tokens, so each ratio compares the same tokens.

Engine: all 4N sequences are length-sorted into right-padded batches under a token budget (right padding
needs no attention mask or position ids: causal attention never looks at the pads after a row). The model's
body runs once per batch; hidden states are gathered at the positions that predict target tokens only and
queued, and the LM head runs on full chunks of them (HEAD_CHUNK_ELEMENTS logits) in reused buffers, so no
[tokens x vocabulary] matrix is ever built; log-softmax and cross-entropy are float32. The model's final
logit soft-cap (Gemma 2) is applied. bfloat16 with eager attention on CPUs that support it (``load_student``).
Sharing the template's key/value cache across records was tried and measured no faster here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from selectune import inference, models
from selectune.config import IFDConfig
from selectune.selectit import format_instruction
from selectune.settings import device as best_device
from selectune.settings import resolve_dtype

log = logging.getLogger(__name__)

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\n{instruction}\n\n### Response:")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
VICUNA_INPUT = VICUNA_SYSTEM + " USER: {instruction}\nInput:\n{input} ASSISTANT:"
VICUNA_NO_INPUT = VICUNA_SYSTEM + " USER: {instruction} ASSISTANT:"
# The paper's reverse instruction: the response, then a request to write the instruction it answers.
REVERSE = ("Below is the response to an instruction, please guess the corresponding instruction for the given "
           "response.\n{response}\nGenerate the instruction for the above response.")
HEAD_CHUNK_ELEMENTS = 1 << 25  # logits per LM-head chunk: 128 rows of a 262k vocabulary (134 MB in float32)
COLUMNS = ["loss_a", "loss_a_given_q", "loss_q", "loss_q_given_a", "ifd", "rifd", "ifd_loss_ratio",
           "rifd_loss_ratio", "ifd_truncated", "n_tokens_a", "n_tokens_q"]


def _chat(tokenizer: Any, content: str) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "")
        raise ValueError(f"IFD template 'chat' needs a tokenizer with a chat template; model {name!r} has none "
                         "(use template 'alpaca' or 'vicuna' for base models)")
    before, after = inference.chat_frame(tokenizer)
    return before + content + after


def render_prompt(template: str, instruction: str, input: str = "", tokenizer: Any = None) -> str:
    """The templated instruction that precedes the response in s(A|Q)."""
    has_input = bool(input and input.strip())
    if template == "alpaca":
        return (ALPACA_INPUT if has_input else ALPACA_NO_INPUT).format(instruction=instruction, input=input)
    if template == "vicuna":
        return (VICUNA_INPUT if has_input else VICUNA_NO_INPUT).format(instruction=instruction, input=input)
    if template == "chat":
        return _chat(tokenizer, format_instruction(instruction, input))
    raise ValueError(f"unknown IFD template {template!r}; expected alpaca, vicuna or chat")


def reverse_prompt(template: str, response: str, tokenizer: Any = None) -> str:
    """The templated reverse prompt A' that precedes the instruction in s(Q|A')."""
    return render_prompt(template, REVERSE.format(response=response), "", tokenizer)


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


def _parts(model: Any) -> tuple[Any, Any, float | None]:
    """(decoder body, LM head, final logit soft-cap) of a causal LM, PEFT-wrapped or not."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
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
        for batch in inference.length_batches([len(s) for s in seqs], batch_size, max_batch_tokens):
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


def _budget(cfg: IFDConfig, model: Any) -> int:
    return cfg.max_batch_tokens or (1024 if next(model.parameters()).device.type == "cpu" else 32768)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def sequence_losses(model: Any, tokenizer: Any, prefixes: list[str], targets: list[str], cfg: IFDConfig,
                    head_rows: int | None = None, progress: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean loss of each target after its prefix ("" = none): (losses, target tokens scored, truncated)."""
    if len(prefixes) != len(targets):
        raise ValueError(f"{len(prefixes)} prefixes for {len(targets)} targets")
    start = start_ids(tokenizer)
    packed = [pack(start, p, t, cfg.max_tokens) for p, t in zip(_ids(tokenizer, prefixes), _ids(tokenizer, targets),
                                                                strict=True)]
    for i, (_, n, _) in enumerate(packed):
        if n == 0:
            raise ValueError(f"target {i} has no tokens: {targets[i][:60]!r}")
    seqs, n_t, trunc = (list(x) for x in zip(*packed, strict=True)) if packed else ([], [], [])
    losses = target_losses(model, seqs, n_t, cfg.batch_size, _budget(cfg, model), _pad_id(tokenizer), head_rows,
                           progress)
    return losses, np.array(n_t, dtype=int), np.array(trunc, dtype=bool)


def load_student(cfg: IFDConfig) -> tuple[Any, Any]:
    """The student in ``cfg.dtype`` on the best device (eager attention for bfloat16 on CPU when auto)."""
    dev = best_device()
    dtype = resolve_dtype(cfg.dtype, dev)
    attn = cfg.attn_implementation
    if attn == "auto":
        attn = "eager" if dev == "cpu" and dtype == "bfloat16" else "sdpa"
    return models.load_causal_lm(cfg.model, dtype=dtype, device=dev, trust_remote_code=cfg.trust_remote_code,
                                 attn_implementation=attn)


def ifd_scores(df: pd.DataFrame, cfg: IFDConfig, model: Any = None, tokenizer: Any = None, progress: bool = True,
               instruction_col: str = "instruction", input_col: str = "input",
               output_col: str = "output") -> pd.DataFrame:
    """IFD, r-IFD, their loss-ratio variants and the four losses per record (same index as ``df``)."""
    from tqdm.auto import tqdm

    missing = [c for c in (instruction_col, output_col) if c not in df.columns]
    if missing:
        raise ValueError(f"ifd_scores: missing column(s) {missing}; have {list(df.columns)}")
    if (model is None) != (tokenizer is None):
        raise ValueError("ifd_scores: pass both model and tokenizer, or neither (to load cfg.model)")
    if model is None:
        model, tokenizer = load_student(cfg)
    ins = df[instruction_col].fillna("").astype(str).tolist()
    inp = df[input_col].fillna("").astype(str).tolist() if input_col in df.columns else [""] * len(df)
    out = df[output_col].fillna("").astype(str).tolist()
    names = df["id"].astype(str).tolist() if "id" in df.columns else [str(i) for i in df.index]
    q_text = [format_instruction(a, b) for a, b in zip(ins, inp, strict=True)]
    a_ids, q_ids = _ids(tokenizer, out), _ids(tokenizer, q_text)
    for name, a, q in zip(names, a_ids, q_ids, strict=True):
        if not a or not q:
            raise ValueError(f"record {name}: empty {'response' if not a else 'instruction'} (no tokens); "
                             "IFD needs both")
    prompts = [render_prompt(cfg.template, a, b, tokenizer) for a, b in zip(ins, inp, strict=True)]
    reverses = [reverse_prompt(cfg.template, o, tokenizer) for o in out]
    start = start_ids(tokenizer)
    seqs, n_t, trunc = [], [], []
    for target_ids, prefix_ids in ((a_ids, _ids(tokenizer, prompts)), (q_ids, _ids(tokenizer, reverses))):
        cond = [pack(start, p, t, cfg.max_tokens) for p, t in zip(prefix_ids, target_ids, strict=True)]
        seqs += [start + t[:n] for t, (_, n, _) in zip(target_ids, cond, strict=True)] + [s for s, _, _ in cond]
        n_t += [n for _, n, _ in cond] * 2
        trunc.append(np.array([t for _, _, t in cond], dtype=bool))
    bar = tqdm(total=len(seqs), desc=f"IFD {models.model_key(cfg.model)}", unit="seq", disable=not progress)
    losses = target_losses(model, seqs, n_t, cfg.batch_size, _budget(cfg, model), _pad_id(tokenizer),
                           progress=bar).reshape(4, len(df))
    bar.close()
    res = pd.DataFrame(dict(zip(COLUMNS[:4], losses, strict=True)), index=df.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        res["ifd"] = np.exp(res["loss_a_given_q"] - res["loss_a"])
        res["rifd"] = np.exp(res["loss_q_given_a"] - res["loss_q"])
        res["ifd_loss_ratio"] = res["loss_a_given_q"] / res["loss_a"]
        res["rifd_loss_ratio"] = res["loss_q_given_a"] / res["loss_q"]
    res["ifd_truncated"] = trunc[0] | trunc[1]
    res["n_tokens_a"] = np.array(n_t[: len(df)], dtype=int)
    res["n_tokens_q"] = np.array(n_t[2 * len(df): 3 * len(df)], dtype=int)
    if res["ifd_truncated"].any():
        log.info("IFD: %d of %d records truncated to max_length %d", res["ifd_truncated"].sum(), len(df),
                 cfg.max_tokens)
    return res[COLUMNS]
