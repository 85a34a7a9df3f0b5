"""The CPU throughput table: every figure measured side by side in one run, each as a fraction of this machine's
roofline (its best bfloat16 matmul, measured here first) and as a ratio to the official loop.

    .venv/bin/python bench/cpu_table.py [--model gemma-3-270m] [--n 128] [--json out.json] [--markdown out.md]

Rows (the same N real Alpaca records of ``--input``, the official rating file's first 5 prompts, K = 5):
- SelectIT whole process: ``selectune score selectit`` in a fresh process, from exec to exit (start-up, model
  load, data checks, scoring, writing), no rating cache; start-up + load is the same command on one record.
- SelectIT engine only / official loop: ``bench/selectit_throughput.py`` (model loaded, its timers).
- IFD whole process: ``selectune score ifd``; engine only / official loop: ``bench/ifd_throughput.py`` (on the
  first ``--n-ifd`` records: its official loop runs all of them).
- LoRA: ``bench/sft_throughput.py``, ours and the plain Trainer + peft baseline (steps 2..S).
Useful FLOPs: SelectIT 2 x non-embedding parameters x tokens after each rating prompt's shared prefix (what any
engine must compute); IFD 2 x non-embedding parameters x tokens of the four sequences; LoRA 6 x non-embedding
parameters x real tokens. MFU = useful FLOPs / seconds / roofline, for every row, the official loops included.
"+ head" adds the LM head the method cannot skip (2 x hidden x vocabulary per rating for SelectIT, per scored
target token for IFD): gemma-3's 262k-entry head is 1.7x its body, so for IFD this is most of the work.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHARED = ROOT.parent / "shared" / "data"
CLI = [str(Path(sys.executable).parent / "selectune")]  # the installed console script, as users run it


def wall(cmd: list[str]) -> float:
    """Seconds from exec to exit of ``cmd`` (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def script(name: str, *args: str) -> dict[str, Any]:
    """Run ``bench/NAME.py ARGS --json F`` and return its figures."""
    with tempfile.NamedTemporaryFile(suffix=".json") as fh:
        wall([sys.executable, str(BENCH / f"{name}.py"), *args, "--json", fh.name])
        return json.loads(Path(fh.name).read_text(encoding="utf-8"))


def useful_rating_tokens(model: str, records: Any, prompts: list[str]) -> tuple[int, int]:
    """(tokens after each rating prompt's shared prefix, all tokens) of the rating texts, as the rater builds them."""
    from transformers import AutoTokenizer

    from selectune.core import lm, models
    from selectune.selectit.rater import build_texts

    tok = AutoTokenizer.from_pretrained(models.resolve(model))
    texts, tail = build_texts(records, prompts, "official", tok)
    seqs = [e.ids for e in lm.encode(tok, texts, tail, 1024, "right")]
    r = len(prompts)
    prefix = sum(lm.common_prefix_len(seqs[q::r]) * len(seqs[q::r]) for q in range(r))
    total = sum(map(len, seqs))
    return total - prefix, total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, default=SHARED / "cherry_alpaca_3k.json")
    ap.add_argument("--prompts-file", type=Path, default=SHARED / "selectit_official_rating_prompts.txt")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--n", type=int, default=128, help="records (SelectIT, IFD)")
    ap.add_argument("--n-official", type=int, default=16, help="records timed in the official SelectIT loop")
    ap.add_argument("--n-ifd", type=int, default=32, help="records of the IFD engine-only and official rows")
    ap.add_argument("--lora-steps", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    import torch
    from selectit_throughput import load_records, matmul_peak
    from transformers import AutoConfig

    from selectune.core.models import count_parameters, resolve
    from selectune.selectit import prompts as rating

    roofline = matmul_peak(torch.bfloat16, "cpu")
    config = AutoConfig.from_pretrained(resolve(args.model)).get_text_config()
    n_ne = count_parameters(args.model) - config.vocab_size * config.hidden_size  # the head is tied
    df = load_records(args.input, args.n)
    prompts = rating.load_rating_prompts(args.prompts_file)[:5]
    useful, total = useful_rating_tokens(args.model, df, prompts)
    rows: list[dict[str, Any]] = []

    head = 2 * config.hidden_size * config.vocab_size  # FLOPs of one LM-head row

    def row(stage: str, path: str, items: int, unit: str, seconds: float, flops: float, head_rows: float = 0,
            **extra: Any) -> None:
        rows.append({"stage": stage, "path": path, "items": items, "unit": unit, "seconds": round(seconds, 2),
                     "per_s": items / seconds, "mfu": flops / seconds / roofline,
                     "mfu_with_head": (flops + head * head_rows) / seconds / roofline, **extra})

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.json"
        data.write_text(json.dumps(df.drop(columns="id").to_dict("records")), encoding="utf-8")
        pfile = Path(tmp) / "prompts.txt"
        pfile.write_text("".join(p.rstrip("\n") + "\n" for p in prompts), encoding="utf-8")
        score = [*CLI, "score", "selectit", "-i", str(data), "-m", args.model, "--rating-prompts", str(pfile),
                 "--num-prompts", "5", "--no-cache", "-o", str(Path(tmp) / "scored.parquet")]
        wall(score + ["--limit", "1"])  # first run: files into the page cache, like a user's second run
        startup = wall(score + ["--limit", "1"])
        row("SelectIT", "whole process", args.n, "records", wall(score), 2 * n_ne * useful, 5 * args.n,
            startup_and_load_s=startup)
        s = script("selectit_throughput", "--input", str(args.input), "--model", args.model, "--n", str(args.n),
                   "--n-official", str(args.n_official), "--prompts-file", str(pfile), "--prompts", "5")
        row("SelectIT", "engine only", args.n, "records", s["engine"]["seconds"], 2 * n_ne * useful, 5 * args.n)
        n_off = s["official"]["records"]
        row("SelectIT", "official loop", n_off, "records", s["official"]["seconds"], 2 * n_ne * useful / args.n * n_off,
            5 * n_off)
        ifd_sec = wall([*CLI, "score", "ifd", "-i", str(data), "-m", args.model, "-o", str(Path(tmp) / "i.parquet")])
    i = script("ifd_throughput", "--input", str(args.input), "--model", args.model, "--n", str(args.n_ifd))
    per_record = i["engine"]["tokens"] / i["records"]  # the four sequences the engine runs per record
    targets = i["scored_target_tokens"]
    row("IFD", "whole process", args.n, "records", ifd_sec, 2 * n_ne * per_record * args.n,
        targets / i["records"] * args.n)
    row("IFD", "engine only", i["records"], "records", i["engine"]["seconds"], 2 * n_ne * i["engine"]["tokens"],
        targets)
    row("IFD", "official loop", i["records"], "records", i["official"]["seconds"], 2 * n_ne * i["engine"]["tokens"],
        targets)
    lo = script("sft_throughput", "--input", str(args.input), "--model", args.model, "--steps", str(args.lora_steps))
    for name, path in (("ours", "engine only"), ("baseline", "Trainer + peft baseline")):
        r = lo[name]
        row("LoRA", path, r["tokens"], "tokens", r["seconds"], 6 * n_ne * r["tokens"], 2 * r["scored_tokens"],
            dtype=r["dtype"])  # the head's forward and input gradient on every scored token
    fig = {"model": args.model, "records": args.n, "roofline_bf16_gflops": roofline / 1e9,
           "non_embedding_params": n_ne, "rating_tokens_useful": useful, "rating_tokens_total": total,
           "torch_threads": torch.get_num_threads(), "rows": rows}
    for stage in ("SelectIT", "IFD"):
        off = next(r for r in rows if r["stage"] == stage and r["path"] == "official loop")["per_s"]
        for r in rows:
            if r["stage"] == stage:
                r["x_official"] = r["per_s"] / off
    base = next(r for r in rows if r["path"] == "Trainer + peft baseline")["per_s"]
    for r in rows:
        if r["stage"] == "LoRA":
            r["x_official"] = r["per_s"] / base
    table = markdown(fig)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    return fig


def markdown(fig: dict[str, Any]) -> str:
    lines = [f"roofline (bf16 matmul, measured in this run): {fig['roofline_bf16_gflops']:.0f} GFLOP/s; "
             f"{fig['model']}, {fig['non_embedding_params'] / 1e6:.1f}M non-embedding parameters",
             "", "| stage | path | items | per second | MFU (of roofline) | + head | × official | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in fig["rows"]:
        note = f"start-up + load {r['startup_and_load_s']:.1f} s" if "startup_and_load_s" in r else r.get("dtype", "")
        lines.append(f"| {r['stage']} | {r['path']} | {r['items']} {r['unit']} | {r['per_s']:.3g} | "
                     f"{r['mfu']:.1%} | {r['mfu_with_head']:.1%} | {r['x_official']:.2f}× | {note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
