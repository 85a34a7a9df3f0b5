"""Peak memory and wall time of ``selectune data validate``, ``selectune score selectit`` and ``selectune select`` as
the input grows: synthetic Alpaca-style JSON Lines, Parquet, JSON array and CSV files of 10k, 100k and 1M records
(~560 bytes each, like Alpaca's; 1% exact duplicates), each command in a fresh process whose peak RSS is read from
the kernel (its ``VmHWM``). Scoring uses a tiny random Llama (2 layers, hidden 32, a 400-token byte-level BPE
vocabulary; built here, nothing downloaded), one rating prompt, rating texts cut to 64 tokens (``--max-tokens 64``:
the run takes minutes, not hours) and a fresh rating cache, from the JSON Lines file: memory is about the records,
not the model.

Selection reads a synthetic scored Parquet file (the same texts, unique ids, a category, a score with 0.5% missing)
and keeps the top 20% with a length bound and a category quota.

    .venv/bin/python bench/memory_scaling.py [--sizes 10000,100000,1000000] [--formats jsonl,parquet,json,csv]
                                             [--stages validate,score,select] [--json F]

Goal (issue 17): peak RSS of ``data validate`` under 400 MB at 1M records, and under 2x growth from 100k to 1M for
every stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a of to and in is that for it as with was on be by this are or from at which an have not they "
         "write explain list describe give create generate answer question data model function number list "
         "python example summary sentence paragraph story poem email letter plan recipe").split()


def text(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 13 + (i >> j % 5)) % len(WORDS)] for j in range(n_words))


def records(n: int):
    """n records; every 100th repeats the one before it (an exact duplicate)."""
    for i in range(n):
        k = i - 1 if i % 100 == 99 else i
        yield {"instruction": f"{k}: " + text(k, 12 + k % 9), "input": text(k + 1, k % 3 * 6),
               "output": text(k + 2, 60 + k % 41)}


def write(path: Path, n: int, fmt: str) -> Path:
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for r in records(n):
                fh.write(json.dumps(r) + "\n")
        return path
    if fmt == "json":  # an Alpaca-style JSON array, indented as alpaca_data.json is
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("[")
            for i, r in enumerate(records(n)):
                lines = json.dumps(r, indent=2).split("\n")
                fh.write(("\n" if i == 0 else ",\n") + "\n".join("  " + ln for ln in lines))
            fh.write("\n]\n")
        return path
    if fmt == "csv":
        import csv

        with open(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, ["instruction", "input", "output"])
            w.writeheader()
            w.writerows(records(n))
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch: list[dict] = []
    with pq.ParquetWriter(path, pa.schema([(c, pa.string()) for c in ("instruction", "input", "output")])) as w:
        for r in records(n):
            batch.append(r)
            if len(batch) == 50_000:
                w.write_table(pa.Table.from_pylist(batch))
                batch = []
        if batch:
            w.write_table(pa.Table.from_pylist(batch))
    return path


def scored(path: Path, n: int) -> Path:
    """A scored Parquet file of n records: unique ids, the texts, a category and ``selectit_score`` (every 200th
    missing)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    cats = ("writing", "qa", "code", "math", "chat", "brainstorm", "summary", "other")
    batch: list[dict] = []
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), *[(c, pa.string()) for c in (
            "instruction", "input", "output", "category")], ("selectit_score", pa.float64())])) as w:
        for i, r in enumerate(records(n)):
            key = hashlib.sha256(str(i).encode()).digest()
            batch.append({"id": key.hex()[:16], **r, "category": cats[key[8] % len(cats)],
                          "selectit_score": None if i % 200 == 7 else int.from_bytes(key[:4], "big") / 2**32})
            if len(batch) == 50_000:
                w.write_table(pa.Table.from_pylist(batch, w.schema))
                batch = []
        if batch:
            w.write_table(pa.Table.from_pylist(batch, w.schema))
    return path


def command(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Peak RSS (MB), wall seconds and stdout of ``selectune ARGS`` in a fresh process. The peak is the process's
    own high-water mark (``VmHWM``): ``getrusage``'s ``ru_maxrss`` would carry a large parent's peak (a test run's)
    over fork and exec into the child."""
    code = ("import json, sys\nfrom typer.main import get_command\nfrom selectune.cli.main import app\n"
            "try:\n    get_command(app).main(json.loads(sys.argv[1]), standalone_mode=False)\nfinally:\n"
            "    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
            "    print('MAXRSS', hwm, file=sys.stderr)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"selectune {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    rss = int(proc.stderr.rsplit("MAXRSS", 1)[1].split()[0]) / 1024  # kB
    return rss, seconds, proc.stdout


def tiny_model(folder: Path) -> str:
    """The test suite's tiny random Llama (tests/fixtures/tiny.py), saved as safetensors."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures.tiny import build_tiny_model

    return str(build_tiny_model(folder / "tiny-llama"))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--formats", default="jsonl,parquet,json,csv")
    ap.add_argument("--stages", default="validate,score,select")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    rows = []
    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp)) if "score" in stages else ""
        for fmt in args.formats.split(","):
            for n in map(int, args.sizes.split(",")):
                path = write(Path(tmp) / f"records-{n}.{fmt}", n, fmt)
                size = {"format": fmt, "records": n, "file_mb": round(path.stat().st_size / 2**20, 1)}
                if "validate" in stages:
                    rss, seconds, out = command(["data", "validate", "-i", str(path)])
                    summary = json.loads(out)
                    assert summary["rows_read"] == n and summary["duplicates"] == n // 100, summary
                    rows.append({"stage": "data validate", **size, "peak_rss_mb": round(rss, 1),
                                 "seconds": round(seconds, 2), "records_per_s": round(n / seconds)})
                    print(json.dumps(rows[-1]), flush=True)
                if "score" in stages and fmt == "jsonl":
                    out_file = Path(tmp) / "scored.parquet"
                    cmd = ["score", "selectit", "-i", str(path), "-o", str(out_file), "-m", model, "--dtype",
                            "float32", "--num-prompts", "1", "--max-tokens", "64"]
                    rss, seconds, out = command(cmd, {"SELECTUNE_HOME": str(Path(tmp) / "home")})
                    assert f"scored {n - n // 100} records" in out, out
                    rows.append({"stage": "score selectit", **size, "peak_rss_mb": round(rss, 1),
                                 "seconds": round(seconds, 2), "records_per_s": round(n / seconds)})
                    print(json.dumps(rows[-1]), flush=True)
                    out_file.unlink()
                    shutil.rmtree(Path(tmp) / "home")
                if "select" in stages and fmt == "jsonl":
                    src, out_dir = scored(Path(tmp) / "scored.parquet", n), Path(tmp) / "selected"
                    cmd = ["select", "-i", str(src), "-o", str(out_dir), "--fraction", "0.2", "--min-chars", "300",
                           "--quota", "writing=0.1"]
                    rss, seconds, out = command(cmd)
                    assert f"selected {(n - (n + 192) // 200) // 5} of {n} records" in out, out
                    rows.append({"stage": "select", **size, "file_mb": round(src.stat().st_size / 2**20, 1),
                                 "peak_rss_mb": round(rss, 1), "seconds": round(seconds, 2),
                                 "records_per_s": round(n / seconds)})
                    print(json.dumps(rows[-1]), flush=True)
                    src.unlink()
                    shutil.rmtree(out_dir)
                path.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
