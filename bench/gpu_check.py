"""GPU check: SelectIT ratings/s, IFD sequences/s and LoRA tokens/s of the project's engines on Llama-shaped models
with random weights (nothing downloaded; throughput does not depend on weight values), each as MFU against the
GPU's bfloat16 matmul peak measured in the same run, next to the official loops on the same model.

    .venv/bin/python bench/gpu_check.py [--shapes 1b,8b] [--json out.json]   # one CUDA GPU, < 8 minutes
    .venv/bin/python bench/gpu_check.py --dry-run                            # CPU, tiny shapes, seconds

Workloads (synthetic token ids, lengths like Alpaca's: a record 40..360 tokens, mean ~200):
- SelectIT: R = 5 rating prompts (64 tokens each, shared by their texts) x N records + a 6-token answer cue; ours
  is ``selectune.core.lm.iter_last_token_probs`` (length-sorted batches, the prompt's prefix run once, logits at
  the last position only); the official loop (SelectIT ``self_reflection/sentence_level.py``) runs one text at a
  time with logits at every position. Useful FLOPs = 2 x non-embedding parameters x tokens after the shared prefix.
- IFD: N sequences (a 40-token prompt + the record), loss over the record's tokens; ours is
  ``selectune.core.losses.target_losses``; the official loop (Reflection-Tuning ``data_analysis.py``) runs one
  sequence at a time through the model's own loss. Useful FLOPs = 2 x non-embedding parameters x tokens.
- LoRA: r 16 on the attention and MLP projections (``selectune.core.lora.add_lora``), micro-batches of B
  sequences of 512 tokens, AdamW; MFU = 6 x non-embedding parameters x tokens (the conventional estimate).
Both paths run in bfloat16 on the GPU (float32 in the dry run), so the ratio measures the engines, not the dtype.
The dry run also checks the arithmetic: ours and the official loop must agree (probabilities, losses), and the
MFU formula is recomputed by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

SHAPES = {  # Llama-3.2-1B and Llama-3.1-8B dimensions; tiny for the dry run
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256},
    "8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 512},
}
RATING_TOKENS = [16, 17, 18, 19, 20]  # stand-ins for "1".."5"


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype, dev: str, size: int, iters: int = 10) -> float:
    """Best FLOP/s of a size x size matmul."""
    a, b = torch.randn(size, size, dtype=dtype, device=dev), torch.randn(size, size, dtype=dtype, device=dev)
    best = float("inf")
    for _ in range(iters + 2):
        sync(dev)
        t = time.perf_counter()
        a @ b
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def build(shape: str, dev: str, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def non_embedding_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def workload(n: int, vocab: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """(rating texts record-major, IFD sequences, IFD target lengths)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(32, vocab, 64).tolist() for _ in range(5)]
    cue = rng.integers(32, vocab, 6).tolist()
    records = [rng.integers(32, vocab, int(rng.integers(40, 361))).tolist() for _ in range(n)]
    texts = [p + r + cue for r in records for p in prompts]
    ifd = [rng.integers(32, vocab, 40).tolist() + r for r in records]
    return texts, ifd, [len(r) for r in records]


def timed(fn: Any, dev: str) -> tuple[Any, float]:
    sync(dev)
    t = time.perf_counter()
    out = fn()
    sync(dev)
    return out, time.perf_counter() - t


def selectit(model: Any, texts: list[list[int]], budget: int) -> np.ndarray:
    from selectune.core.lm import iter_last_token_probs

    out = np.zeros((len(texts), len(RATING_TOKENS)))
    tok = SimpleNamespace(pad_token_id=0, eos_token_id=0)
    for q in range(5):  # one group per rating prompt, as the rater runs them
        group = list(range(q, len(texts), 5))
        for batch, p in iter_last_token_probs(model, tok, [texts[i] for i in group], RATING_TOKENS, 256, budget):
            out[[group[b] for b in batch]] = p
    return out


def selectit_official(model: Any, texts: list[list[int]], dev: str) -> np.ndarray:
    out = np.zeros((len(texts), len(RATING_TOKENS)))
    with torch.no_grad():
        for i, t in enumerate(texts):
            logits = model(input_ids=torch.tensor([t], device=dev)).logits[:, -1, :]  # every position computed
            out[i] = torch.softmax(logits.float(), -1)[0, RATING_TOKENS].double().cpu().numpy()
    return out


def ifd(model: Any, seqs: list[list[int]], n_t: list[int], budget: int) -> np.ndarray:
    from selectune.core.losses import target_losses

    return target_losses(model, seqs, n_t, 256, budget, 0)


def ifd_official(model: Any, seqs: list[list[int]], n_t: list[int], dev: str) -> np.ndarray:
    out = np.zeros(len(seqs))
    with torch.no_grad():
        for i, (s, n) in enumerate(zip(seqs, n_t, strict=True)):
            ids = torch.tensor([s], device=dev)
            labels = ids.clone()
            labels[0, : len(s) - n] = -100
            out[i] = float(model(input_ids=ids, labels=labels).loss)
    return out


def lora_tokens(model: Any, dev: str, steps: int, batch: int, length: int = 512) -> tuple[int, float]:
    """(tokens trained in steps 2..S, their seconds): LoRA r 16 through the project's add_lora."""
    from selectune.core.lora import add_lora
    from selectune.tuning.config import TuneConfig

    peft_model, _ = add_lora(model, TuneConfig(lora_r=16, lora_alpha=32, lora_dropout=0.0))
    peft_model.train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(32, vocab, (batch, length), device=dev)
    t0 = 0.0
    for step in range(steps):
        if step == 1:
            sync(dev)
            t0 = time.perf_counter()
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(dev)
    return batch * length * (steps - 1), time.perf_counter() - t0


def check(shape: str, n: int, n_official: int, dev: str, dtype: torch.dtype, peak: float, dry: bool) -> dict:
    model = build(shape, dev, dtype)
    n_params = non_embedding_params(model)
    budget = 1024 if dev == "cpu" else 65536
    texts, seqs, n_t = workload(n, model.config.vocab_size)
    selectit(model, texts[:10], budget)  # warm-up
    probs, sec = timed(lambda: selectit(model, texts, budget), dev)
    useful = sum(len(t) - 64 for t in texts)  # after each prompt's shared prefix
    ref, sec_off = timed(lambda: selectit_official(model, texts[: n_official * 5], dev), dev)
    losses, sec_ifd = timed(lambda: ifd(model, seqs, n_t, budget), dev)
    ref_l, sec_ifd_off = timed(lambda: ifd_official(model, seqs[:n_official], n_t[:n_official], dev), dev)
    out = {"shape": shape, "non_embedding_params": n_params, "records": n, "official_records": n_official,
           "selectit": {"ratings_per_s": len(texts) / sec, "mfu": 2 * n_params * useful / sec / peak,
                        "official_ratings_per_s": n_official * 5 / sec_off},
           "ifd": {"sequences_per_s": len(seqs) / sec_ifd, "mfu": 2 * n_params * sum(map(len, seqs)) / sec_ifd / peak,
                   "official_sequences_per_s": n_official / sec_ifd_off}}
    for k in ("selectit", "ifd"):
        rate = out[k]["ratings_per_s" if k == "selectit" else "sequences_per_s"]
        out[k]["speedup"] = rate / out[k][f"official_{'ratings' if k == 'selectit' else 'sequences'}_per_s"]
    tokens, sec_lora = lora_tokens(model, dev, 3 if dry else 6, 2 if dry else 8)
    out["lora"] = {"tokens_per_s": tokens / sec_lora, "mfu": 6 * n_params * tokens / sec_lora / peak}
    if dry:  # the arithmetic: both engines agree, and the MFU figures are the formula's
        np.testing.assert_allclose(probs[: n_official * 5], ref, atol=1e-5)
        np.testing.assert_allclose(losses[:n_official], ref_l, atol=1e-4)
        by_hand = 2 * n_params * useful / sec / peak
        assert abs(out["selectit"]["mfu"] - by_hand) < 1e-12 and n_params == sum(
            p.numel() for n_, p in model.named_parameters() if "embed_tokens" not in n_ and "lora" not in n_)
        out["checked"] = True
    return out  # the model is freed with this frame, before the next shape is built


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1b,8b", help="comma-separated: 1b, 8b, tiny")
    ap.add_argument("--records", type=int, default=512, help="records per workload (SelectIT: x 5 ratings)")
    ap.add_argument("--official-records", type=int, default=32, help="records timed in the official loops")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, float32: check the arithmetic")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.dry_run:
        dev, dtype, shapes, n, n_off = "cpu", torch.float32, ["tiny"], 12, 4
    else:
        if not torch.cuda.is_available():
            sys.exit("gpu_check: no CUDA GPU visible; use --dry-run on CPU")
        dev, dtype, shapes = "cuda", torch.bfloat16, args.shapes.split(",")
        n, n_off = args.records, args.official_records
    torch.manual_seed(0)
    peak = matmul_peak(dtype, dev, 512 if args.dry_run else 8192)
    fig = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "dtype": str(dtype).split(".")[-1],
           "matmul_peak_tflops": peak / 1e12, "torch": torch.__version__,
           "models": [check(s, n, n_off, dev, dtype, peak, args.dry_run) for s in shapes]}
    print(f"{fig['device']}: measured {fig['dtype']} matmul peak {fig['matmul_peak_tflops']:.2f} TFLOP/s")
    for m in fig["models"]:
        s, i, lo = m["selectit"], m["ifd"], m["lora"]
        print(f"{m['shape']} ({m['non_embedding_params'] / 1e9:.2f}B non-embedding): "
              f"SelectIT {s['ratings_per_s']:.1f} ratings/s, MFU {s['mfu']:.1%}, {s['speedup']:.1f}x official | "
              f"IFD {i['sequences_per_s']:.1f} seq/s, MFU {i['mfu']:.1%}, {i['speedup']:.1f}x official | "
              f"LoRA {lo['tokens_per_s']:.0f} tokens/s, MFU {lo['mfu']:.1%}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(fig, fh, indent=2)
    return fig


if __name__ == "__main__":
    main()
