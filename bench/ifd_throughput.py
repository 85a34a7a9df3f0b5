"""IFD / reversed-IFD throughput: the official per-record four-pass loop against the project's engine.

Run from the repository root::

    .venv/bin/python bench/ifd_throughput.py --model gemma-3-270m --n 24 [--threads 1] [--json out.json]

Both paths score the first N Alpaca records of ``--input`` (default ``../shared/data/cherry_alpaca_3k.json``,
outside the repo) with the same model and the same Alpaca template, and compute s(A), s(A|Q), s(Q), s(Q|A'):

(a) official: a re-implementation of Reflection-Tuning's ``selection_code/data_analysis.py``. One record at a
    time, four forward passes of batch 1 in float32 with logits at every position and the model's own loss:
    A alone and Q alone (whole text, ``labels=input_ids``), then prompt + A and reverse prompt + Q, each
    tokenized as one text with the prefix's tokens masked (prefix length = tokens of the prefix text, as the
    official code counts them). Q is instruction + "\\n" + input here (the official code joins them without
    the newline) so that both paths score the same text.
(b) engine: ``selectune.reflection.ifd.ifd_scores`` with default settings (length-sorted right-padded batches under a
    1024-token budget on CPU, hidden states gathered at target positions, LM head in 128-row chunks, bf16
    and eager attention where the CPU supports bf16), timed around the whole call (tokenization included),
    model loaded beforehand.

Both are timed after a one-record warmup, without model loading, by wall clock and by process CPU time
(``time.process_time``). On a shared machine run with ``--threads 1`` and read the CPU-time ratio: other
processes barely move it, while they can move the wall-clock ratio either way.

MFU = 2 x non-embedding parameters x tokens run / time / matmul peak (a 2048x2048 matmul in the path's
dtype, measured in the same run: by wall clock with ``bench/selectit_throughput.py``'s helper, and by CPU
time for the CPU-time MFU). "+head" adds the useful LM-head FLOPs (2 x hidden x vocab per scored target
token); the official loop's head at every other position is waste and is not counted, nor is attention.
Agreement: max absolute and relative difference of IFD and r-IFD between (a) and (b), Spearman correlations.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from selectit_throughput import DEFAULT_INPUT, load_records, matmul_peak, spearman, sync

from selectune.config import IFDConfig
from selectune.core import losses, models
from selectune.core.prompts import join_instruction, prompt_text
from selectune.core.settings import device as best_device
from selectune.core.settings import resolve_dtype
from selectune.reflection import ifd


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="Alpaca JSON list")
    ap.add_argument("--model", default="gemma-3-270m", help="model alias or folder")
    ap.add_argument("--n", type=int, default=16, help="records scored by both paths")
    ap.add_argument("--template", default="alpaca", choices=["alpaca", "vicuna"])
    ap.add_argument("--max-length", type=int, default=1024, help="token limit per sequence (both paths)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="engine dtype")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the engine's (1024 on CPU)")
    ap.add_argument("--attn", default="auto", choices=["auto", "eager", "sdpa"], help="engine attention")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    return ap.parse_args()


def cpu_peak(dtype: torch.dtype, size: int = 2048, iters: int = 8) -> float:
    """Best matmul FLOPs per second of process CPU time."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(iters):
        start = time.process_time()
        torch.matmul(a, b)
        best = min(best, time.process_time() - start)
    return 2 * size**3 / max(best, 1e-9)


def official_loop(model: Any, tok: Any, df: pd.DataFrame, template: str, max_length: int,
                  dev: str) -> tuple[np.ndarray, int]:
    """Losses [n, 4] (s(A), s(A|Q), s(Q), s(Q|A')) one record and one pass at a time, and tokens run."""
    out = np.zeros((len(df), 4))
    tokens = 0
    for i, (ins, inp, ans) in enumerate(zip(df["instruction"], df["input"], df["output"], strict=True)):
        q = join_instruction(ins, inp)
        for j, (prefix, target) in enumerate((("", ans), (prompt_text(template, None, ins, inp), ans),
                                              ("", q), (ifd.reverse_prompt(template, ans), q))):
            ids = tok(prefix + target, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            labels = ids.clone()
            labels[0, : len(tok(prefix)["input_ids"]) if prefix else 0] = -100
            tokens += ids.shape[1]
            with torch.no_grad():  # logits at every position, the model's own float32 loss
                out[i, j] = float(model(input_ids=ids.to(dev), labels=labels.to(dev)).loss)
    sync(dev)
    return out, tokens


def timed(fn: Any) -> tuple[Any, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    df = load_records(args.input, args.n)
    n, dev = len(df), best_device()
    cfg = IFDConfig(model=args.model, template=args.template, max_tokens=args.max_length, dtype=args.dtype,
                    batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, attn_implementation=args.attn)
    eng_dtype = resolve_dtype(args.dtype, dev)
    torch.manual_seed(0)
    dtypes = list(dict.fromkeys(["float32", eng_dtype]))
    peaks = {d: matmul_peak(getattr(torch, d), dev) for d in dtypes}
    cpu_peaks = {d: cpu_peak(getattr(torch, d)) for d in dtypes} if dev == "cpu" else {}

    # (a) official loop, float32
    model, tok = models.load_causal_lm(args.model, dtype="float32", device=dev)
    n_total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    n_nonemb, (vocab, hidden) = n_total - embed.numel(), embed.shape
    official_loop(model, tok, df.head(1), args.template, args.max_length, dev)  # warmup
    (loss_a, tokens_a), sec_a, cpu_a = timed(lambda: official_loop(model, tok, df, args.template,
                                                                   args.max_length, dev))
    del model

    # (b) the engine, default settings
    model, tok = ifd.load_student(cfg)
    ifd.ifd_scores(df.head(1), cfg, model, tok, progress=False)  # warmup
    res, sec_b, cpu_b = timed(lambda: (ifd.ifd_scores(df, cfg, model, tok, progress=True), sync(dev))[0])
    start = losses.start_ids(tok)
    prefixes = tok([prompt_text(args.template, None, a, b) for a, b in zip(df["instruction"], df["input"],
                                                                           strict=True)]
                   + [ifd.reverse_prompt(args.template, o) for o in df["output"]], add_special_tokens=False)
    kept = np.concatenate([res["n_tokens_a"].to_numpy(), res["n_tokens_q"].to_numpy()])
    targets = 2 * int(kept.sum())  # each target is scored alone and after its prefix
    # tokens the engine ran (pads excluded): each target alone and after its (possibly truncated) prefix
    tokens_b = sum(len(losses.pack(start, p, [0] * int(t), args.max_length)[0]) + len(start) + int(t)
                   for p, t in zip(prefixes["input_ids"], kept, strict=True))

    loss_b = res[["loss_a", "loss_a_given_q", "loss_q", "loss_q_given_a"]].to_numpy()
    ifd_a, rifd_a = np.exp(loss_a[:, 1] - loss_a[:, 0]), np.exp(loss_a[:, 3] - loss_a[:, 2])
    ifd_b, rifd_b = res["ifd"].to_numpy(), res["rifd"].to_numpy()

    def path(dtype: str, tokens: int, sec: float, cpu: float) -> dict[str, Any]:
        body, head = 2 * n_nonemb * tokens, 2 * hidden * vocab * targets
        d = {"dtype": dtype, "seconds": sec, "cpu_seconds": cpu, "tokens": tokens, "records_per_s": n / sec,
             "mfu": body / sec / peaks[dtype], "mfu_with_head": (body + head) / sec / peaks[dtype]}
        if cpu_peaks:
            d.update(mfu_cpu=body / cpu / cpu_peaks[dtype], mfu_cpu_with_head=(body + head) / cpu / cpu_peaks[dtype])
        return d

    def rel(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.max(np.abs(x - y) / np.abs(x)))

    fig: dict[str, Any] = {
        "model": args.model, "device": dev, "threads": torch.get_num_threads(), "records": n,
        "template": args.template, "params_total": n_total, "params_non_embedding": int(n_nonemb), "vocab": vocab,
        "hidden": hidden, "peak_flops": peaks, "peak_flops_per_cpu_s": cpu_peaks, "scored_target_tokens": targets,
        "official": path("float32", tokens_a, sec_a, cpu_a),
        "engine": {**path(eng_dtype, tokens_b, sec_b, cpu_b), "batch_size": args.batch_size,
                   "max_batch_tokens": args.max_batch_tokens, "attn": args.attn,
                   "truncated": int(res["ifd_truncated"].sum())},
        "speedup_records_per_s": sec_a / sec_b, "speedup_cpu_time": cpu_a / cpu_b,
        "agreement": {"max_abs_loss_diff": float(np.abs(loss_a - loss_b).max()),
                      "ifd_max_abs_diff": float(np.abs(ifd_a - ifd_b).max()), "ifd_max_rel_diff": rel(ifd_a, ifd_b),
                      "rifd_max_abs_diff": float(np.abs(rifd_a - rifd_b).max()),
                      "rifd_max_rel_diff": rel(rifd_a, rifd_b),
                      "spearman_ifd": spearman(ifd_a, ifd_b), "spearman_rifd": spearman(rifd_a, rifd_b)},
    }

    a, b, ag = fig["official"], fig["engine"], fig["agreement"]
    print(f"\nIFD throughput: {args.model} on {dev} ({fig['threads']} threads), {n} records, template "
          f"{args.template}; engine batch_size={args.batch_size} max_batch_tokens={args.max_batch_tokens} "
          f"attn={args.attn}")
    print(f"parameters: {n_total / 1e6:.1f}M total, {n_nonemb / 1e6:.1f}M non-embedding (vocab {vocab} x hidden "
          f"{hidden}); matmul peak " + ", ".join(f"{d} {p / 1e9:.1f}" for d, p in peaks.items()) + " GFLOP/s"
          + ("; per CPU-second " + ", ".join(f"{d} {p / 1e9:.1f}" for d, p in cpu_peaks.items()) if cpu_peaks
             else ""))
    for name, d in (("(a) official loop", a), ("(b) engine       ", b)):
        cpu_mfu = (f", CPU-time MFU {100 * d['mfu_cpu']:5.1f}% (+head {100 * d['mfu_cpu_with_head']:5.1f}%)"
                   if cpu_peaks else "")
        print(f"{name} [{d['dtype']:>8}] {d['seconds']:8.2f} s ({d['cpu_seconds']:8.2f} CPU-s)  "
              f"{d['records_per_s']:7.3f} records/s  {d['tokens']:7d} tokens  MFU {100 * d['mfu']:5.1f}% "
              f"(+head {100 * d['mfu_with_head']:5.1f}%){cpu_mfu}")
    print(f"speedup (b)/(a): {fig['speedup_records_per_s']:.2f}x records/s (wall clock), "
          f"{fig['speedup_cpu_time']:.2f}x by process CPU time; engine truncated: {b['truncated']}")
    print(f"agreement: IFD max |diff| {ag['ifd_max_abs_diff']:.4g} (rel {ag['ifd_max_rel_diff']:.3g}), r-IFD max "
          f"|diff| {ag['rifd_max_abs_diff']:.4g} (rel {ag['rifd_max_rel_diff']:.3g}), max loss |diff| "
          f"{ag['max_abs_loss_diff']:.4g}; Spearman IFD {ag['spearman_ifd']:.4f}, r-IFD {ag['spearman_rifd']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
