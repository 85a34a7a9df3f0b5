"""LoRA training throughput: the project's trainer (selectune.tuning.train) against a plain Trainer + peft baseline.

Run from the repository root::

    .venv/bin/python bench/sft_throughput.py --model gemma-3-270m --n 64 --steps 4 [--json out.json]

Both paths train the same LoRA adapter (r 16, alpha 32, dropout 0.05, the attention and MLP projections) on
the first N Alpaca records of ``--input`` (default ``../shared/data/cherry_alpaca_3k.json``, outside the repo),
micro-batch ``--batch-size``, no gradient accumulation, ``--steps`` optimizer steps, no evaluation:

(a) ours: ``selectune.tuning.train.train`` with its defaults: base weights in bfloat16 where the CPU/GPU computes it
    (``--dtype auto``) under bf16 autocast, adapters float32, length-grouped batches padded to the longest
    row, loss on response tokens only (Stanford Alpaca prompt, EOS appended), ``--max-length`` cut, the LM head
    applied to the scored positions only with its gradient in the same pass (``core.losses.causal_lm_loss``),
    adapters under the same autocast, their dropout masks drawn 15 bits per element (``core.lora``; p 0.05 rounds
    to 0.049988).
(b) baseline: what a naive user writes: float32, ``transformers.Trainer`` with its default random sampler,
    every example tokenized with ``padding="max_length"`` to ``--max-length``, labels = input ids with
    padding masked (loss on prompt and response), same prompt text, same LoRA config.

Timing: a Trainer callback stamps ``time.perf_counter`` at the end of every optimizer step; throughput is
taken over steps 2..S (step 1 carries one-off allocation costs). Tokens are real (non-padding) tokens,
counted by the Trainer (``include_num_input_tokens_seen="non_padding"``) in both paths; the baseline's
padded tokens are reported too. Model loading and tokenization are not timed.

MFU = 6 * N * T / seconds / peak, the standard forward + backward estimate, with N = non-embedding
parameters (all parameters minus the input embedding matrix, which gemma-3 ties to the LM head) and T =
real tokens. It counts neither the LM head (2 * hidden * vocab per token, large for a 262k vocabulary) nor
attention, and LoRA's backward skips the frozen weights' gradients (about 4 * N * T is actually computed),
so it is the conventional figure, not a roofline. ``mfu_with_head`` adds the LM head the loss needs: its forward
pass and input gradient (2 x 2 * hidden * vocab) on every scored token (for (a) the response tokens, counted in each
training batch; for (b) the real tokens, one per row too many, though it runs the head on its padding as well).
Peak = best 2048x2048 ``torch.matmul`` in the path's compute dtype (bf16 for (a) when it uses bf16, float32 for
(b)), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import TrainerCallback

from selectune.core import lora, prompts
from selectune.core.settings import device as best_device
from selectune.core.settings import resolve_dtype
from selectune.data.records import record_id
from selectune.tuning import train as sft
from selectune.tuning.config import TuneConfig

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared/data/cherry_alpaca_3k.json"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="Alpaca JSON list")
    ap.add_argument("--model", default="gemma-3-270m", help="model alias or folder")
    ap.add_argument("--n", type=int, default=64, help="records to train on")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per path (>= 2)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="(a)'s dtype")
    ap.add_argument("--only", choices=["ours", "baseline"], default=None, help="run one path")
    ap.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    return ap.parse_args()


class StepClock(TrainerCallback):
    """(seconds, real tokens seen, scored tokens so far) at the end of every optimizer step. ``scored`` is counted by
    the caller (the labels the loss scores, in training batches only)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int, int]] = []
        self.scored = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen, self.scored))

    def rate(self) -> tuple[float, int, int]:
        """(seconds, tokens, scored tokens) over steps 2..S."""
        (t0, n0, s0), (t1, n1, s1) = self.marks[0], self.marks[-1]
        return t1 - t0, n1 - n0, s1 - s0

    def count(self, labels: Any) -> None:
        """Add the scored tokens of a training batch (a label other than -100 after the shift)."""
        if torch.is_grad_enabled():  # not the first-batch check or evaluation
            self.scored += int((labels[:, 1:] != -100).sum())


def matmul_peak(dtype: torch.dtype, dev: str, size: int = 2048, iters: int = 8) -> float:
    """Best observed FLOP/s of a square matmul in ``dtype``."""
    a, b = (torch.randn(size, size, device=dev).to(dtype) for _ in range(2))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(iters):
        if dev == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def load_records(path: Path, n: int) -> pd.DataFrame:
    if not path.is_file():
        sys.exit(f"input not found: {path}\n(expected the shared Alpaca file; pass --input PATH)")
    rows = json.loads(path.read_text(encoding="utf-8"))[:n]
    df = pd.DataFrame({"instruction": [r["instruction"] for r in rows], "input": [r.get("input") or "" for r in rows],
                       "output": [r["output"] for r in rows]})
    df.insert(0, "id", [record_id(*r) for r in df.itertuples(index=False, name=None)])
    return df


def run_ours(args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    from selectune.core import losses

    clock = StepClock()
    cfg = TuneConfig(base=args.model, max_steps=args.steps, batch_size=args.batch_size, grad_accum=1,
                     max_tokens=args.max_length, eval_fraction=0.0, eval_prompts=0, save_steps=10**6,
                     dtype=args.dtype, register_as=None, warmup_ratio=0.0)
    loss = losses.causal_lm_loss

    def counted(model: Any, batch: dict, *rest: Any, **kwargs: Any) -> Any:
        clock.count(batch["labels"])
        return loss(model, batch, *rest, **kwargs)

    losses.causal_lm_loss = counted  # the trainer class imports it when it is built, in sft.train
    try:
        res = sft.train(cfg, data, out, callbacks=(clock,))
    finally:
        losses.causal_lm_loss = loss
    seconds, tokens, scored = clock.rate()
    return {"seconds": seconds, "tokens": tokens, "scored_tokens": scored, "padded_tokens": None,
            "truncated": res.metrics["truncated"], "dtype": resolve_dtype(args.dtype, best_device()),
            "loss_tokens": "response"}


def run_baseline(args: argparse.Namespace, df: pd.DataFrame, out: Path) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from selectune.core.models import resolve

    src = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=lora.find_target_modules(model)))
    texts = [prompts.prompt_text("alpaca", tok, r.instruction, r.input) + r.output + tok.eos_token
             for r in df.itertuples()]
    enc = tok(texts, padding="max_length", truncation=True, max_length=args.max_length)
    rows = [{"input_ids": ids, "attention_mask": m, "labels": [t if k else -100 for t, k in zip(ids, m, strict=True)]}
            for ids, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
    clock = StepClock()
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps, learning_rate=2e-4, report_to="none", save_strategy="no",
                              logging_steps=1, use_cpu=best_device() == "cpu",
                              include_num_input_tokens_seen="non_padding")
    Trainer(model=model, args=targs, train_dataset=rows, callbacks=[clock]).train()
    seconds, tokens, _ = clock.rate()
    steps = len(clock.marks) - 1
    return {"seconds": seconds, "tokens": tokens, "scored_tokens": tokens,  # the loss scores every real token
            "padded_tokens": steps * args.batch_size * args.max_length,
            "truncated": sum(len(ids) >= args.max_length for ids in tok(texts)["input_ids"]), "dtype": "float32",
            "loss_tokens": "prompt+response"}


def main() -> None:
    args = parse_args()
    if args.steps < 2:
        sys.exit("--steps must be >= 2 (step 1 is not timed)")
    dev = best_device()
    df = load_records(args.input, args.n)
    from transformers import AutoConfig

    from selectune.core.models import count_parameters, resolve

    config = AutoConfig.from_pretrained(resolve(args.model))
    n_all = count_parameters(args.model)
    n_nonemb = n_all - config.vocab_size * config.hidden_size
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.parquet"
        df.to_parquet(data, index=False)
        if args.only in (None, "ours"):
            results["ours"] = run_ours(args, data, Path(tmp) / "ours")
        if args.only in (None, "baseline"):
            results["baseline"] = run_baseline(args, df, Path(tmp) / "baseline")
    peaks = {d: matmul_peak(getattr(torch, d), dev) for d in {r["dtype"] for r in results.values()}}
    head = 2 * config.hidden_size * config.vocab_size  # FLOPs of one LM-head row
    for r in results.values():
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["mfu"] = 6 * n_nonemb * r["tokens"] / r["seconds"] / peaks[r["dtype"]]
        r["mfu_with_head"] = (6 * n_nonemb * r["tokens"] + 2 * head * r["scored_tokens"]) / r["seconds"] / peaks[
            r["dtype"]]
    report = {"model": args.model, "device": dev, "n": args.n, "steps": args.steps, "batch_size": args.batch_size,
              "max_length": args.max_length, "params": n_all, "non_embedding_params": n_nonemb,
              "peak_flops": peaks, "torch_threads": torch.get_num_threads(), **results}
    if len(results) == 2:
        report["speedup_tokens_per_s"] = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
