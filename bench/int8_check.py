"""Would an int8 path pay for SelectIT on this CPU? Dynamic int8 quantization of the decoder's linear layers against
bfloat16 and float32: speed and agreement of the sentence-level scores.

Run from the repository root::

    .venv/bin/python bench/int8_check.py --model gemma-3-270m --n 32 [--json out.json]

Each path rates the first N Alpaca records of ``--input`` with the official file's first 5 rating prompts through
the project's engine (``selectune.selectit.rater.rate``, no cache, timed by its own forward-loop timer after a
warm-up): ``bfloat16`` (the default on CPUs with AVX-512 bf16), ``float32``, and ``int8`` = the float32 model with
every ``nn.Linear`` of the decoder body replaced by ``torch.ao.quantization.quantize_dynamic``'s int8 kernels
(activations quantized per batch, weights per tensor or, ``int8-channel``, per output channel; fbgemm/x86 uses
VNNI where the CPU has it). The LM head stays float32 (it runs once per rating). Agreement: Spearman correlation of
the sentence-level scores (paper normalization, alpha 0.2) with the float32 path's, and the largest rating
probability difference. Issue 17's rule: use int8 only if its Spearman to bf16 is at least 0.99.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import selectit_throughput as st  # noqa: E402

PATHS = {"bfloat16": ("bfloat16", None), "float32": ("float32", None), "int8": ("float32", "tensor"),
         "int8-channel": ("float32", "channel")}


def quantized_loader(load: Any, weights: str) -> Any:
    """``models.load_causal_lm`` with the decoder body's linear layers dynamically quantized to int8."""
    import torch

    qconfig = (torch.ao.quantization.per_channel_dynamic_qconfig if weights == "channel"
               else torch.ao.quantization.default_dynamic_qconfig)

    def loader(*args: Any, **kwargs: Any) -> Any:
        model, tok = load(*args, **kwargs)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            torch.ao.quantization.quantize_dynamic(model.get_decoder(), {torch.nn.Linear: qconfig}, dtype=torch.qint8,
                                                   inplace=True)
        return model, tok

    return loader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=st.DEFAULT_INPUT, help="Alpaca JSON list")
    ap.add_argument("--model", default="gemma-3-270m", help="model alias or folder")
    ap.add_argument("--n", type=int, default=32, help="records")
    ap.add_argument("--prompts-file", type=Path,
                    default=st.DEFAULT_INPUT.parent / "selectit_official_rating_prompts.txt")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args()

    from selectune.config import SelectITConfig
    from selectune.core import models

    df = st.load_records(args.input, args.n)
    prompts = st.rating.load_rating_prompts(args.prompts_file)[:5]
    load = models.load_causal_lm
    runs: dict[str, Any] = {}
    try:
        for name, (dtype, weights) in PATHS.items():
            models.load_causal_lm = quantized_loader(load, weights) if weights else load
            cfg = SelectITConfig(models=[args.model], dtype=dtype, use_cache=False)
            st.scoring.rate(df.head(2), args.model, cfg, prompts[:1], cache=None, progress=False)  # warm-up
            runs[name] = st.scoring.rate(df, args.model, cfg, prompts, cache=None, progress=False)
    finally:
        models.load_causal_lm = load
    ref = st.sentence(runs["float32"].probs)
    bf16 = st.sentence(runs["bfloat16"].probs)
    fig: dict[str, Any] = {"model": args.model, "records": len(df), "rating_prompts": len(prompts), "paths": {}}
    for name, res in runs.items():
        s = st.sentence(res.probs)
        fig["paths"][name] = {"seconds": res.seconds, "tokens_per_s": res.tokens / res.seconds,
                              "speed_vs_bfloat16": runs["bfloat16"].seconds / res.seconds,
                              "spearman_vs_float32": st.spearman(s, ref), "spearman_vs_bfloat16": st.spearman(s, bf16),
                              "max_abs_prob_diff_vs_float32": float(np.abs(res.probs - runs["float32"].probs).max())}
    for name, p in fig["paths"].items():
        print(f"{name:>13}: {p['tokens_per_s']:7.0f} tokens/s ({p['speed_vs_bfloat16']:.2f}x bf16)  Spearman vs "
              f"float32 {p['spearman_vs_float32']:.4f}, vs bf16 {p['spearman_vs_bfloat16']:.4f}  max |dp| "
              f"{p['max_abs_prob_diff_vs_float32']:.4f}")
    ok = [n for n in ("int8", "int8-channel") if fig["paths"][n]["spearman_vs_bfloat16"] >= 0.99
          and fig["paths"][n]["speed_vs_bfloat16"] > 1]
    fig["int8_pays"] = bool(ok)
    print("int8 pays (Spearman to bf16 >= 0.99 and faster):", ", ".join(ok) or "no")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))


if __name__ == "__main__":
    main()
