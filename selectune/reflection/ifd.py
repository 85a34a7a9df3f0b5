"""Student statistics: IFD and reversed IFD (Selective Reflection-Tuning, arXiv 2402.10110).

For an instruction Q (the joined instruction and input, :func:`selectune.core.prompts.join_instruction`) and a
response A, four mean token losses of the student: s(A), s(A|Q) (A after the templated Q, the prompt tuning
trains on), s(Q) and s(Q|A') (Q after a reverse prompt built from A). IFD = exp(s(A|Q) - s(A)) = ppl(A|Q) /
ppl(A); r-IFD = exp(s(Q|A') - s(Q)); the official code's loss ratios s(A|Q) / s(A) and s(Q|A') / s(Q) are
kept too. The losses come from the target-loss engine (:mod:`selectune.core.losses`: tokenization, truncation,
batching); the unconditional sequence scores exactly the kept target tokens, so each ratio compares the same
tokens. bfloat16 with eager attention on CPUs that support it (``load_student``). Sharing the template's
key/value cache across records was tried and measured no faster here.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from selectune.core import models
from selectune.core.lm import pad_id
from selectune.core.losses import batch_budget, pack, start_ids, target_losses, token_ids
from selectune.core.prompts import join_instruction, prompt_text
from selectune.core.settings import device as best_device
from selectune.core.settings import resolve_dtype
from selectune.reflection.config import IFDConfig

log = logging.getLogger(__name__)

# The paper's reverse instruction: the response, then a request to write the instruction it answers.
REVERSE = ("Below is the response to an instruction, please guess the corresponding instruction for the given "
           "response.\n{response}\nGenerate the instruction for the above response.")
COLUMNS = ["loss_a", "loss_a_given_q", "loss_q", "loss_q_given_a", "ifd", "rifd", "ifd_loss_ratio",
           "rifd_loss_ratio", "ifd_truncated", "n_tokens_a", "n_tokens_q"]


def reverse_prompt(template: str, response: str, tokenizer: Any = None) -> str:
    """The templated reverse prompt A' that precedes the instruction in s(Q|A')."""
    return prompt_text(template, tokenizer, REVERSE.format(response=response), "")


def load_student(cfg: IFDConfig) -> tuple[Any, Any]:
    """The student in ``cfg.dtype`` on the best device (eager attention for bfloat16 on CPU when auto), or a vLLM
    engine (``backend: vllm``), and its tokenizer."""
    if cfg.backend == "vllm":
        from selectune.core.vllm import load_engine

        engine = load_engine(cfg.model, cfg.dtype, cfg.vllm, trust_remote_code=cfg.trust_remote_code)
        return engine, engine.tokenizer()
    dev = best_device()
    return models.load_causal_lm(cfg.model, dtype=resolve_dtype(cfg.dtype, dev), device=dev,
                                 trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)


class Student:
    """The student of :func:`cached_ifd_scores` across chunks of one file: loaded at the first record the cache
    lacks, then kept (``loaded`` is None until then)."""

    def __init__(self, cfg: IFDConfig) -> None:
        self.cfg = cfg
        self.loaded: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self.loaded is None:
            self.loaded = load_student(self.cfg)
        return self.loaded


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
    official = getattr(cfg, "fidelity", "selectune") == "official"  # the released code: no separator
    q_text = [a + b if official else join_instruction(a, b) for a, b in zip(ins, inp, strict=True)]
    a_ids, q_ids = token_ids(tokenizer, out), token_ids(tokenizer, q_text)
    for name, a, q in zip(names, a_ids, q_ids, strict=True):
        if not a or not q:
            raise ValueError(f"record {name}: empty {'response' if not a else 'instruction'} (no tokens); "
                             "IFD needs both")
    prompts = [prompt_text(cfg.template, tokenizer, a, b) for a, b in zip(ins, inp, strict=True)]
    reverses = [reverse_prompt(cfg.template, o, tokenizer) for o in out]
    start = start_ids(tokenizer)
    seqs, n_t, trunc = [], [], []
    for target_ids, prefix_ids in ((a_ids, token_ids(tokenizer, prompts)), (q_ids, token_ids(tokenizer, reverses))):
        cond = [pack(start, p, t, cfg.max_tokens) for p, t in zip(prefix_ids, target_ids, strict=True)]
        seqs += [start + t[:n] for t, (_, n, _) in zip(target_ids, cond, strict=True)] + [s for s, _, _ in cond]
        n_t += [n for _, n, _ in cond] * 2
        trunc.append(np.array([t for _, _, t in cond], dtype=bool))
    bar = tqdm(total=len(seqs), desc=f"IFD {models.model_key(cfg.model)}", unit="seq", disable=not progress)
    if cfg.backend == "vllm":
        from selectune.core import vllm

        losses = vllm.target_losses(model, seqs, n_t, progress=False)
        bar.update(len(seqs))
    else:
        losses = target_losses(model, seqs, n_t, cfg.batch_size, batch_budget(model, cfg.max_batch_tokens),
                               pad_id(tokenizer), progress=bar)
    losses = losses.reshape(4, len(df))
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


STATS = ("ifd_stats", ("stats TEXT",))  # cache table: the COLUMNS of one record as JSON
COMMIT_EVERY = 256  # records scored between cache commits


def cached_ifd_scores(df: pd.DataFrame, cfg: IFDConfig, cache: Any = None, progress: bool = True,
                      student: Student | None = None) -> pd.DataFrame:
    """:func:`ifd_scores` through the content-addressed cache (record id x student fingerprint x template x
    token limit x dtype): only uncached records are computed, the student loads only when one is (pass one
    :class:`Student` to every chunk of a file to load it once), and results are committed every
    ``COMMIT_EVERY`` records so an interrupted run resumes where it stopped."""
    import json

    from selectune.core.cache import cache_key

    student = student or Student(cfg)

    if cache is None:
        return ifd_scores(df, cfg, *student.get(), progress=progress)
    fingerprint = models.fingerprint(cfg.model)
    dtype = resolve_dtype(cfg.dtype, "cuda" if cfg.backend == "vllm" else best_device())
    version = "ifd-v1" + ("-official" if cfg.fidelity == "official" else "")  # official: another r-IFD target
    version += "-vllm" if cfg.backend == "vllm" else ""  # other kernels, other rounding: its own entries
    keys = [cache_key(rid, fingerprint, cfg.template, cfg.max_tokens, dtype, version) for rid in df["id"]]
    found = {k: json.loads(v[0]) for k, v in cache.get_many(keys).items()}
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        from tqdm.auto import tqdm

        model, tokenizer = student.get()
        bar = tqdm(total=len(todo), desc=f"IFD {models.model_key(cfg.model)}", unit="record", disable=not progress)
        for lo in range(0, len(todo), COMMIT_EVERY):  # commit as it goes: a killed run keeps what it scored
            part = todo[lo: lo + COMMIT_EVERY]
            fresh = ifd_scores(df.iloc[part], cfg, model, tokenizer, progress=False)
            rows = [(keys[i], json.dumps({c: (bool(v) if c == "ifd_truncated" else float(v))
                                          for c, v in r.items()}))
                    for i, (_, r) in zip(part, fresh.iterrows(), strict=True)]
            cache.put_many(rows)
            found.update({k: json.loads(v) for k, v in rows})
            bar.update(len(part))
        bar.close()
    out = pd.DataFrame([found[k] for k in keys], index=df.index, columns=COLUMNS)
    return out.astype({"ifd_truncated": bool, "n_tokens_a": int, "n_tokens_q": int})
