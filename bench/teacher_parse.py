"""Parse-failure rates of a reflection teacher: how often its replies yield a usable rewrite.

Run from the repository root::

    .venv/bin/python bench/teacher_parse.py [--records 150] [--no-prefill] [--repetition-penalty 1.2]
        [--teacher smollm2-135m-instruct] [--json out.json]

Sends the recycling stage's two rounds of teacher calls (instruction reflection and response reflection of every
record, then response reflection of each usable new instruction) for the first ``--records`` demo records, with
the default teacher settings (greedy, 512 new tokens, the marker prefill, repetition penalty 1.2 for a model under
1B parameters; ``--no-prefill``, ``--repetition-penalty`` and ``--temperature`` change them), parses every reply
and reports the failure rate per kind, the failure reasons, the wall time and a few usable rewrites. No student,
no gate: only the teacher. Replies go to a cache of their own under ``$SELECTUNE_HOME/cache/bench-teacher.sqlite``
(a re-run reads them back).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "demo.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=150)
    ap.add_argument("--teacher", default="smollm2-135m-instruct")
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--repetition-penalty", type=float, default=None, help="default: the config's")
    ap.add_argument("--temperature", type=float, default=None, help="default: the config's")
    ap.add_argument("--data", default=str(DEMO))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from selectune.core.settings import home
    from selectune.data.records import load_records
    from selectune.reflection.config import TeacherConfig
    from selectune.reflection.recycle import CHUNK, _reflect
    from selectune.reflection.teachers.base import make_teacher

    df = load_records(args.data).records.head(args.records)
    df = df.assign(input=df["input"].fillna(""))
    given = {k: v for k, v in (("repetition_penalty", args.repetition_penalty), ("temperature", args.temperature))
             if v is not None}
    cfg = TeacherConfig(model=args.teacher, prefill=not args.no_prefill, **given)
    teacher = make_teacher(cfg, home() / "cache" / "bench-teacher.sqlite")
    start = time.perf_counter()
    entries = []
    for lo in range(0, len(df), CHUNK):
        log, _ = _reflect(teacher, df.iloc[lo: lo + CHUNK], progress=True)
        entries += [e for per in log.values() for e in per.values()]
        print(f"{min(lo + CHUNK, len(df))}/{len(df)} records, {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    out: dict = {"teacher": args.teacher, "prefill": cfg.prefill, "repetition_penalty": cfg.repetition_penalty,
                 "temperature": cfg.temperature,
                 "records": len(df), "wall_s": round(wall, 1),
                 "calls": teacher.usage.calls, "cached": teacher.usage.cached,
                 "completion_tokens": teacher.usage.completion_tokens}
    for name, kinds in (("instruction", ("instruction",)), ("response", ("response_ori", "response_q"))):
        mine = [e for e in entries if e["kind"] in kinds and not e["error"]]
        failed = [e for e in mine if not e["ok"]]
        out[f"{name}.replies"] = len(mine)
        out[f"{name}.failure_rate"] = round(len(failed) / len(mine), 4) if mine else None
        out[f"{name}.reasons"] = dict(Counter(e["parse"] for e in failed).most_common())
        out[f"{name}.examples"] = [{k: e[k] for k in ("instruction", "answer") if e[k]}
                                   for e in [e for e in mine if e["ok"]][:3]]
    text = json.dumps(out, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
