"""Recycling (Selective Reflection-Tuning, arXiv 2402.10110): a teacher reflects on every record's instruction and
answer, the student's IFD / reversed IFD choose between the variants, and the chosen pairs that pass the thresholds
form the recycled set. No record is lost: unreached records keep their original."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.core.settings import home
from selectune.data.records import record_id, write_parquet
from selectune.reflection.config import ReflectionConfig
from selectune.reflection.gate import VARIANTS, gate
from selectune.reflection.parse import Parsed, parse_instruction_reflection, parse_response_reflection
from selectune.reflection.prompts import INSTRUCTION_PARTS, RESPONSE_PARTS, instruction_messages, response_messages

CHUNK = 32  # records per round of teacher calls: a budget stop loses at most one round of work
KINDS = ("instruction", "response_ori", "response_q")
LIMIT_REASON = "not recycled (limit)"
BUDGET_REASON = "teacher budget exhausted"


@dataclass
class RecycleResult:
    """recycled: one row per input record; reflections: every teacher reply; metrics: counts and usage."""

    recycled: pd.DataFrame
    reflections: list[dict[str, Any]]
    metrics: dict[str, float]
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # long table: source_id, variant, ifd, rifd


def _ask(teacher: Any, requests: list[Any], parts: list[Any], parsers: list[Any], retries: int, progress: bool,
         ) -> list[tuple[Any, Parsed | None, int]]:
    """(completion, parsed or None on a teacher error, attempts) per request; an unusable reply is asked again up
    to ``retries`` times (the released scripts retry once), the last reply standing."""
    done = teacher.complete(requests, progress=progress, steps=parts)
    out = [(c, None if c.error else parse(c.text, c.finish_reason), 1) for c, parse in zip(done, parsers, strict=True)]
    for attempt in range(1, retries + 1):
        again = [i for i, (_, p, _) in enumerate(out) if p is not None and not p.ok]
        if not again:
            break
        redo = teacher.complete([requests[i] for i in again], progress=progress, steps=[parts[i] for i in again],
                                attempt=attempt)
        for i, c in zip(again, redo, strict=True):
            if not c.error:  # a budget stop or HTTP failure keeps the first reply
                out[i] = (c, parsers[i](c.text, c.finish_reason), attempt + 1)
    return out


def _trace(teacher: Any, messages: list[dict[str, str]], sid: str, kind: str, comp: Any, parsed: Parsed | None,
           attempts: int) -> None:
    """One MLflow span for a new (uncached) teacher call, in the active run: what was asked and answered."""
    import time

    from selectune.tracking.prompts import trace_call

    end = time.time_ns()
    trace_call(f"teacher.{kind}", messages, comp.text, {
        "backend": teacher.cfg.backend, "model": teacher.cfg.model, "source_id": sid, "kind": kind,
        "latency_s": round(comp.seconds, 3), "prompt_tokens": comp.prompt_tokens,
        "completion_tokens": comp.completion_tokens, "retries": comp.retries, "attempts": attempts,
        "finish_reason": comp.finish_reason, "error": comp.error, "parse_ok": bool(parsed and parsed.ok),
        "parse": parsed.reason if parsed else None}, end - int(comp.seconds * 1e9), end)


def _reflect(teacher: Any, rows: pd.DataFrame, progress: bool, retries: int = 0, prompts: Any = None,
             trace: bool = False) -> tuple[dict[str, dict[str, Any]], bool]:
    """Two rounds of teacher calls for some records -> ({source_id: {kind: log entry}}, budget hit); with
    ``trace``, one MLflow span per new call."""
    log: dict[str, dict[str, Any]] = {sid: {} for sid in rows["id"]}
    budget = False

    def record(sid: str, kind: str, answer: tuple[Any, Parsed | None, int], messages: Any) -> Parsed | None:
        nonlocal budget
        comp, parsed, attempts = answer
        if trace and not comp.cached and not str(comp.error or "").startswith("budget"):
            _trace(teacher, messages, sid, kind, comp, parsed, attempts)
        budget = budget or bool(comp.error and str(comp.error).startswith("budget"))
        log[sid][kind] = {"source_id": sid, "kind": kind, "text": comp.text, "error": comp.error,
                          "ok": bool(parsed and parsed.ok), "parse": parsed.reason if parsed else None,
                          "instruction": parsed.instruction if parsed else None,
                          "answer": parsed.answer if parsed else None, "cached": comp.cached,
                          "finish_reason": comp.finish_reason, "attempts": attempts,
                          "prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens}
        return parsed

    triples = list(zip(rows["instruction"], rows["input"].fillna(""), rows["output"], strict=True))
    n = len(triples)
    ins_file, resp_file = (prompts.reflect_instruction, prompts.reflect_response) if prompts else (None, None)
    first = [instruction_messages(*t, ins_file) for t in triples] + [response_messages(*t, resp_file) for t in triples]
    done = _ask(teacher, first, [INSTRUCTION_PARTS] * n + [RESPONSE_PARTS] * n,
                [parse_instruction_reflection] * n + [parse_response_reflection] * n, retries, progress)
    second: list[tuple[str, list[dict[str, str]]]] = []
    for i, sid in enumerate(rows["id"]):
        p = record(sid, "instruction", done[i], first[i])
        record(sid, "response_ori", done[n + i], first[n + i])
        if p is not None and p.ok:
            second.append((sid, response_messages(p.instruction or "", "", p.answer or "", resp_file)))
    if second:
        again = _ask(teacher, [m for _, m in second], [RESPONSE_PARTS] * len(second),
                     [parse_response_reflection] * len(second), retries, progress)
        for (sid, messages), answer in zip(second, again, strict=True):
            record(sid, "response_q", answer, messages)
    return log, budget


def parse_retries(cfg: ReflectionConfig) -> int:
    """Retries of an unusable reply; none for a greedy local teacher, hf or vllm (it would write the same reply
    again)."""
    t = cfg.teacher
    return 0 if t.backend in ("hf", "vllm") and t.temperature == 0 else cfg.parse_retries


def _why(entry: dict[str, Any] | None, what: str) -> str:
    if entry is None:
        return f"{what}: not run"
    return f"{what}: teacher error: {entry['error']}" if entry["error"] else f"{what}: {entry['parse']}"


def _variants(row: Any, log: dict[str, dict[str, Any]]) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """{variant: (instruction, input, output)} available for one record, and {variant: why absent}."""
    have = {"ori": (row.instruction, row.input, row.output)}
    missing: dict[str, str] = {}
    ins, ori, q = log.get("instruction"), log.get("response_ori"), log.get("response_q")
    if ins and ins["ok"]:
        have["q"] = (ins["instruction"], "", ins["answer"])
    else:
        missing["q"] = missing["qa"] = _why(ins, "instruction reflection")
    if ori and ori["ok"]:
        have["a"] = (row.instruction, row.input, ori["answer"])
    else:
        missing["a"] = _why(ori, "response reflection")
    if "q" in have:
        if q and q["ok"]:
            have["qa"] = (ins["instruction"], "", q["answer"])  # type: ignore[index]
        else:
            missing["qa"] = _why(q, "response reflection of q")
    return have, missing


def _rate(entries: list[dict[str, Any]]) -> float:
    replied = [e for e in entries if not e["error"]]
    return round(sum(not e["ok"] for e in replied) / len(replied), 4) if replied else 0.0


def recycle(df: pd.DataFrame, cfg: ReflectionConfig, teacher: Any = None, progress: bool = True,
            api_key: str | None = None) -> RecycleResult:
    """Reflect, score every variant with the student (one model load, one ifd_scores call) and gate. ``api_key``:
    the openai teacher's key when its environment variable is unset (never stored)."""
    from tqdm.auto import tqdm

    from selectune.reflection.ifd import ifd_scores

    for col in ("id", "instruction", "input", "output"):
        if col not in df.columns:
            raise ValueError(f"recycle: input records have no {col!r} column (columns: {', '.join(df.columns)})")
    if df["id"].duplicated().any():
        raise ValueError(f"recycle: duplicate record ids, e.g. {df.loc[df['id'].duplicated(), 'id'].iloc[0]!r}; "
                         "load the records with selectune.data.load_records (it removes duplicates)")
    df = df.reset_index(drop=True).assign(input=df["input"].fillna("").to_numpy())
    n_target = min(len(df), cfg.limit) if cfg.limit else len(df)
    own = teacher is None and n_target > 0
    if own:
        from selectune.reflection.teachers.base import make_teacher

        teacher = make_teacher(cfg.teacher, home() / "cache" / "teacher.sqlite", api_key)
    logs: dict[str, dict[str, dict[str, Any]]] = {}
    reached: list[int] = []
    budget = False
    bar = tqdm(total=n_target, desc="reflect", unit="rec", disable=not progress)
    for start in range(0, n_target, CHUNK):
        rows = df.iloc[start: min(start + CHUNK, n_target)]
        log, budget = _reflect(teacher, rows, progress=False, retries=parse_retries(cfg), prompts=cfg.prompts,
                               trace=cfg.trace_calls)
        logs.update(log)
        reached += [i for i, sid in zip(rows.index, rows["id"], strict=True)
                    if not any(str(e["error"] or "").startswith("budget") for e in log[sid].values())]
        bar.update(len(rows))
        if budget:
            break
    bar.close()
    usage = teacher.usage if teacher is not None else None
    if own and teacher.cache is not None:
        teacher.cache.close()
    del teacher  # free a local teacher model before the student loads

    variants, missing, long_rows = {}, {}, []
    for i in reached:
        row = df.iloc[i]
        variants[i], missing[i] = _variants(row, logs[row["id"]])
        long_rows += [{"id": f"{row['id']}:{v}", "source_id": row["id"], "variant": v, "instruction": t[0],
                       "input": t[1], "output": t[2]} for v, t in variants[i].items()]
    scores = pd.DataFrame(long_rows, columns=["id", "source_id", "variant", "instruction", "input", "output"])
    if len(scores):
        stats = ifd_scores(scores, cfg.student, progress=progress)
        scores = pd.concat([scores, stats.reset_index(drop=True)], axis=1)
    by_key = {(r.source_id, r.variant): (r.ifd, r.rifd) for r in scores.itertuples()} if len(scores) else {}

    out_rows = []
    for i, row in df.iterrows():
        rec = row.to_dict()
        stat = {v: by_key.get((row["id"], v)) for v in VARIANTS}
        if i in variants:
            d = gate({v: s for v, s in stat.items() if s is not None}, cfg, missing[i])
            content, variant, kept, reason = variants[i].get(d.variant), d.variant, d.kept, d.reason
        else:
            content, variant, kept = None, "ori", True
            reason = LIMIT_REASON if i >= n_target else BUDGET_REASON
        if content is not None and variant != "ori":
            rec.update(instruction=content[0], input=content[1], output=content[2])
        rec.update(id=record_id(rec["instruction"], rec["input"], rec["output"]), source_id=row["id"],
                   variant=variant, decision="kept" if kept else "dropped", reason=reason)
        for v in VARIANTS:
            rec[f"ifd.{v}"] = stat[v][0] if stat[v] else float("nan")
            rec[f"rifd.{v}"] = stat[v][1] if stat[v] else float("nan")
        out_rows.append(rec)
    extra = ["source_id", "variant", "decision", "reason"] + [f"{k}.{v}" for v in VARIANTS for k in ("ifd", "rifd")]
    recycled = pd.DataFrame(out_rows, columns=list(dict.fromkeys([*df.columns, *extra])))
    reflections = [e for sid in df["id"] if sid in logs for e in logs[sid].values()]
    return RecycleResult(recycled, reflections, _metrics(recycled, reflections, usage, scores, n_target), scores)


def _metrics(recycled: pd.DataFrame, reflections: list[dict[str, Any]], usage: Any, scores: pd.DataFrame,
             n_target: int) -> dict[str, float]:
    m: dict[str, float] = {"records_in": len(recycled), "records_targeted": n_target,
                           "records_out": recycled.loc[recycled["decision"] == "kept", "id"].nunique(),
                           "passthrough.limit": int((recycled["reason"] == LIMIT_REASON).sum()),
                           "passthrough.budget": int((recycled["reason"] == BUDGET_REASON).sum())}
    gated = recycled[~recycled["reason"].isin([LIMIT_REASON, BUDGET_REASON])]
    m["records_recycled"] = len(gated)
    for v in VARIANTS:
        for decision in ("kept", "dropped"):
            m[f"branch.{v}.{decision}"] = int(((gated["variant"] == v) & (gated["decision"] == decision)).sum())
    m["parse_fail_rate.instruction"] = _rate([e for e in reflections if e["kind"] == "instruction"])
    m["parse_fail_rate.response"] = _rate([e for e in reflections if e["kind"] != "instruction"])
    for kind in KINDS:
        m[f"teacher_errors.{kind}"] = sum(bool(e["error"]) for e in reflections if e["kind"] == kind)
    if usage is not None:
        for key in ("calls", "cached", "failed", "skipped", "prompt_tokens", "completion_tokens", "cost"):
            m[f"teacher.{key}"] = float(getattr(usage, key, 0) or 0)
        m["teacher.tokens"] = m["teacher.prompt_tokens"] + m["teacher.completion_tokens"]
    if "ifd_truncated" in scores.columns:
        m["student.truncated"] = int(scores["ifd_truncated"].astype(bool).sum())
    return m


def write_outputs(res: RecycleResult, out: Path, stem: str | None = None) -> dict[str, str]:
    """recycled.parquet (every record), kept.parquet (kept rows, unique ids) and reflections.jsonl in ``out``;
    with ``stem``: <stem>.parquet, <stem>.kept.parquet and <stem>.reflections.jsonl."""
    names = (f"{stem}.parquet", f"{stem}.kept.parquet", f"{stem}.reflections.jsonl") if stem else (
        "recycled.parquet", "kept.parquet", "reflections.jsonl")
    kept = res.recycled[res.recycled["decision"] == "kept"].drop_duplicates("id").reset_index(drop=True)
    path = out / names[2]
    with path.open("w", encoding="utf-8") as fh:
        for entry in res.reflections:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return {"recycled": str(write_parquet(res.recycled, out / names[0])),
            "kept": str(write_parquet(kept, out / names[1])), "reflections": str(path)}


def dry_run(cfg: ReflectionConfig, records_df: pd.DataFrame) -> dict[str, Any]:
    """Expected teacher calls, tokens and cost without calling it. The second round's prompts depend on the
    first round's replies: they are approximated by the original pairs' response prompts, counted as new."""
    from selectune.reflection.teachers.base import estimate

    rows = records_df.head(cfg.limit) if cfg.limit else records_df
    triples = list(zip(rows["instruction"], rows["input"].fillna(""), rows["output"], strict=True))
    n, ins_file, resp_file = len(triples), cfg.prompts.reflect_instruction, cfg.prompts.reflect_response
    first = estimate([instruction_messages(*t, ins_file) for t in triples]
                     + [response_messages(*t, resp_file) for t in triples],
                     cfg.teacher, home() / "cache" / "teacher.sqlite", [INSTRUCTION_PARTS] * n + [RESPONSE_PARTS] * n)
    second = estimate([response_messages(*t, resp_file) for t in triples], cfg.teacher, None) if triples else first
    out: dict[str, Any] = {"records": len(rows), "cached": first["cached"], "token_count": first["token_count"]}
    for key in ("requests", "calls", "prompt_tokens", "max_completion_tokens", "cost"):
        out[key] = first[key] + (second[key] if triples else 0)
    return out
