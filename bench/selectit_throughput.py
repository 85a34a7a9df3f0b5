"""SelectIT rating throughput: the official per-record loop against the project's batched engine.

Run from the repository root::

    .venv/bin/python bench/selectit_throughput.py --model gemma-3-270m --n 64 [--json out.json]

Both paths rate the first N Alpaca records of ``--input`` (default ``../shared/data/cherry_alpaca_3k.json``,
outside the repo) with the same model, the same R rating prompts and K = 5 rating tokens:

(a) official: a re-implementation of SelectIT's ``self_reflection/sentence_level.py`` loop. One
    (record, prompt) pair at a time: build the text, tokenize it alone, run the model in float32 with
    logits at every position, softmax the last position over the full vocabulary, read the K
    probabilities. It is slow, so it is timed on the first ``--n-official`` records (default min(N, 8)).
(b) engine: ``selectune.selectit.rater.rate`` (length-sorted, left-padded batches, last-position logits only)
    in ``--dtype`` (auto = bfloat16 where the CPU supports it), without the rating cache.

Timings use ``time.perf_counter`` after a small warmup and exclude model loading; (a) includes its
per-pair tokenization (part of the official loop), (b) is the engine's own forward-loop timer (its batch
tokenization runs before, in a few ms). ``--attn`` sets the engine's attention kernel (default
auto: eager for bfloat16 on CPU, sdpa elsewhere).

MFU = 2 * non-embedding parameters * prompt tokens / seconds, divided by the peak of a 2048x2048
torch.matmul in the path's dtype, measured in the same run. The non-embedding count is all parameters
minus the input embedding matrix (tied to the LM head in both default models). The "+head" figure also
counts the LM-head matmul once per rating at the last position (2 * hidden * vocab); the full-vocab head
at every other position that (a) computes is waste and is counted in neither. Attention FLOPs are not
counted. Agreement: max |p_a - p_b| over the shared records' rating probabilities and the Spearman
correlation of their sentence-level scores (paper normalization, alpha = 0.2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from selectune.config import SelectITConfig
from selectune.core import models
from selectune.core.settings import device as best_device
from selectune.core.settings import resolve_dtype
from selectune.selectit import prompts as rating
from selectune.selectit import rater as scoring
from selectune.selectit import scores

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared/data/cherry_alpaca_3k.json"
K = 5


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="Alpaca JSON list")
    ap.add_argument("--model", default="gemma-3-270m", help="model alias or folder")
    ap.add_argument("--n", type=int, default=64, help="records rated by the engine")
    ap.add_argument("--n-official", type=int, default=None, help="records timed in the official loop "
                    "(default min(N, 8))")
    ap.add_argument("--prompts", type=int, default=None, help="use the first R rating prompts (default all)")
    ap.add_argument("--prompts-file", type=Path, default=None, help="one rating prompt per line "
                    "(default: the project's 5 built-in prompts)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="engine dtype")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the engine's (1024 on CPU)")
    ap.add_argument("--attn", default="auto", choices=["auto", "eager", "sdpa"],
                    help="engine only: attention implementation (an experiment; wraps model loading)")
    ap.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    return ap.parse_args()


def load_records(path: Path, n: int) -> pd.DataFrame:
    if not path.is_file():
        sys.exit(f"input not found: {path}\n(expected the shared Alpaca file; pass --input PATH)")
    rows = json.loads(path.read_text(encoding="utf-8"))[:n]
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(rows))],
                         "instruction": [r["instruction"] for r in rows],
                         "input": [r.get("input") or "" for r in rows],
                         "output": [r["output"] for r in rows]})


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, dev: str, size: int = 2048, warmup: int = 2, iters: int = 8) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype``."""
    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    for _ in range(warmup):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(iters):
        sync(dev)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(dev)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def official_loop(model: Any, tok: Any, df: pd.DataFrame, prompts: list[str], token_ids: list[int],
                  dev: str) -> tuple[np.ndarray, int]:
    """The official per-pair loop: probabilities [n, R, K] and prompt tokens processed."""
    probs = np.zeros((len(df), len(prompts), len(token_ids)))
    tokens = 0
    for i, (ins, inp, out) in enumerate(zip(df["instruction"], df["input"], df["output"], strict=True)):
        for j, rating_prompt in enumerate(prompts):
            text = rating.official_prompt(rating_prompt, ins, inp, out)
            tokenized = tok(text, return_tensors="pt").to(dev)
            tokens += tokenized["input_ids"].shape[1]
            with torch.no_grad():
                logits = model(**tokenized).logits  # [1, L, V]: every position, as the official code does
            p = torch.softmax(logits[0, -1, :].float(), dim=-1)
            probs[i, j] = p[token_ids].double().cpu().numpy()
    sync(dev)
    return probs, tokens


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (numpy only: scipy is not a project dependency)."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):
        r[x == v] = r[x == v].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1]) if len(a) > 2 else float("nan")


def sentence(probs: np.ndarray) -> np.ndarray:
    return scores.sentence_scores(scores.token_scores(probs, "paper"), alpha=0.2)


def main() -> None:
    args = parse_args()
    df = load_records(args.input, args.n)
    n, n_off = len(df), min(len(df), args.n_official or 8)
    prompts = (rating.load_rating_prompts(args.prompts_file) if args.prompts_file
               else rating.default_rating_prompts(K))[: args.prompts]
    r = len(prompts)
    dev = best_device()
    eng_dtype = resolve_dtype(args.dtype, dev)
    torch.manual_seed(0)
    peaks = {"float32": matmul_peak(torch.float32, dev), "bfloat16": matmul_peak(torch.bfloat16, dev)}
    if eng_dtype not in peaks:
        peaks[eng_dtype] = matmul_peak(getattr(torch, eng_dtype), dev)

    # (a) official loop, float32
    model, tok = models.load_causal_lm(args.model, dtype="float32", device=dev)
    n_total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    embed = model.get_input_embeddings().weight
    n_nonemb, (vocab, hidden) = n_total - embed.numel(), embed.shape
    token_ids = scoring.rating_token_ids(tok, K)
    official_loop(model, tok, df.head(1), prompts[:1], token_ids, dev)  # warmup
    start = time.perf_counter()
    probs_a, tokens_a = official_loop(model, tok, df.head(n_off), prompts, token_ids, dev)
    sec_a = time.perf_counter() - start
    del model

    # (b) the engine (loads its own model; its timer excludes loading)
    cfg = SelectITConfig(models=[args.model], dtype=args.dtype, batch_size=args.batch_size,
                         max_batch_tokens=args.max_batch_tokens, attn_implementation=args.attn, use_cache=False)
    scoring.rate(df.head(2), args.model, cfg, prompts[:1], cache=None, progress=False)  # warmup
    wall = time.perf_counter()
    res = scoring.rate(df, args.model, cfg, prompts, cache=None, progress=True)
    wall_b = time.perf_counter() - wall
    sec_b, tokens_b, probs_b = res.seconds, res.tokens, res.probs

    def mfu(tokens: int, ratings: int, seconds: float, dtype: str) -> tuple[float, float]:
        body = 2 * n_nonemb * tokens
        return body / seconds / peaks[dtype], (body + 2 * hidden * vocab * ratings) / seconds / peaks[dtype]

    mfu_a, mfu_head_a = mfu(tokens_a, n_off * r, sec_a, "float32")
    mfu_b, mfu_head_b = mfu(tokens_b, n * r, sec_b, eng_dtype)
    shared = probs_b[:n_off]
    rho = spearman(sentence(probs_a), sentence(shared))
    fig: dict[str, Any] = {
        "model": args.model, "device": dev, "threads": torch.get_num_threads(), "rating_prompts": r, "k": K,
        "params_total": n_total, "params_non_embedding": int(n_nonemb), "vocab": vocab, "hidden": hidden,
        "peak_flops": peaks,
        "official": {"records": n_off, "dtype": "float32", "seconds": sec_a, "tokens": tokens_a,
                     "records_per_s": n_off / sec_a, "ratings_per_s": n_off * r / sec_a,
                     "mfu": mfu_a, "mfu_with_head": mfu_head_a},
        "engine": {"records": n, "dtype": eng_dtype, "seconds": sec_b, "rate_call_seconds": wall_b,
                   "tokens": tokens_b, "records_per_s": n / sec_b, "ratings_per_s": n * r / sec_b,
                   "mfu": mfu_b, "mfu_with_head": mfu_head_b, "batch_size": args.batch_size,
                   "max_batch_tokens": args.max_batch_tokens, "attn": args.attn,
                   "truncated": int(res.truncated.sum())},
        "agreement": {"records": n_off, "max_abs_prob_diff": float(np.abs(probs_a - shared).max()),
                      "spearman_sentence": rho},
    }
    fig["speedup_records_per_s"] = fig["engine"]["records_per_s"] / fig["official"]["records_per_s"]
    fig["speedup_tokens_per_s"] = (tokens_b / sec_b) / (tokens_a / sec_a)

    a, b, ag = fig["official"], fig["engine"], fig["agreement"]
    print(f"\nSelectIT throughput: {args.model} on {dev} ({fig['threads']} threads), R={r} prompts, K={K}; "
          f"engine batch_size={args.batch_size} max_batch_tokens={args.max_batch_tokens} attn={args.attn}")
    print(f"parameters: {n_total / 1e6:.1f}M total, {n_nonemb / 1e6:.1f}M non-embedding "
          f"(vocab {vocab} x hidden {hidden})")
    print(f"matmul peak (2048^2): float32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s")
    for name, d in (("(a) official loop", a), ("(b) engine       ", b)):
        print(f"{name} [{d['dtype']:>8}] {d['records']:4d} records {d['seconds']:8.2f} s  "
              f"{d['records_per_s']:7.3f} records/s  {d['ratings_per_s']:7.2f} ratings/s  "
              f"{d['tokens']:7d} tokens ({d['tokens'] / d['seconds']:7.0f} tok/s)  "
              f"MFU {100 * d['mfu']:5.1f}% (+head {100 * d['mfu_with_head']:5.1f}%)")
    print(f"(a) was timed on the first {n_off} of the {n} records (the official loop is slow); rates are "
          f"per record. (b) rate() call incl. model load: {wall_b:.2f} s; truncated: {b['truncated']}")
    print(f"speedup (b)/(a) records/s: {fig['speedup_records_per_s']:.1f}x  (tokens/s: "
          f"{fig['speedup_tokens_per_s']:.1f}x; the subsets differ in mean prompt length)")
    print(f"agreement on {n_off} records: max |p_a - p_b| = {ag['max_abs_prob_diff']:.4g}, "
          f"Spearman(sentence scores) = {ag['spearman_sentence']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
