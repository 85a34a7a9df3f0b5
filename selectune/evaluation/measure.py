"""Every compared model measured on the same evaluation items, each result kept per item.

For each model (loaded one at a time): the loss of every reference answer (response tokens only, the training
masking), greedy answers when a judge will compare them (cached by model, item and settings, so a base model
shared by many runs answers once), and the lm-evaluation-harness tasks. Then the judge compares the first model
(the candidate) with each other one in both orders. The long table has one row per item x model x metric.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selectune.core.models import collect_if_alive
from selectune.evaluation.config import EvalConfig

ITEM_COLUMNS = ["item_id", "model", "metric", "value", "weight", "answer", "detail"]
ANSWERS = ("answers", ("text TEXT", "n_tokens INTEGER"))  # cache table of greedy answers


@dataclass
class Measurements:
    items: pd.DataFrame  # ITEM_COLUMNS
    answers: dict[str, list[str]] = field(default_factory=dict)  # model -> greedy answer per item
    parse_failures: dict[str, int] = field(default_factory=dict)  # comparison -> unparsed verdicts
    lm_eval: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> {task.metric: harness value}


def item_losses(lm: Any, items: pd.DataFrame, max_tokens: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean response-token loss, response tokens) per item; NaN and 0 when the prompt leaves no response token."""
    from selectune.core.lm import pad_id
    from selectune.tuning.data import encode
    from selectune.tuning.evaluate import example_losses

    examples = [encode(lm.tokenizer, lm.template, r.instruction, r.input or "", r.output, max_tokens)
                for r in items.itertuples(index=False)]
    usable = [i for i, e in enumerate(examples) if any(t != -100 for t in e.labels)]
    loss, tokens = np.full(len(items), np.nan), np.zeros(len(items), dtype=int)
    if usable:
        sums, counts = example_losses(lm.model, [examples[i] for i in usable], pad_id(lm.tokenizer), batch_size)
        loss[usable], tokens[usable] = sums / np.maximum(counts, 1), counts
    return loss, tokens


def greedy_answers(lm: Any, identity: str, items: pd.DataFrame, cfg: EvalConfig) -> list[str]:
    """Greedy answers per item, from the cache when this model answered this item with these settings before;
    ``lm.model`` is a transformers model or a vLLM engine (its answers cached apart)."""
    from tqdm.auto import tqdm

    from selectune.core.cache import Cache, cache_key
    from selectune.core.generate import generate
    from selectune.core.prompts import prompt_ids
    from selectune.core.settings import home
    from selectune.core.vllm import Engine

    on_vllm = isinstance(lm.model, Engine)
    cache = Cache(home() / "cache" / "evaluation.sqlite", *ANSWERS)
    keys = [cache_key(identity, rid, lm.template, cfg.max_new_tokens, "greedy", *(["vllm"] if on_vllm else []))
            for rid in items["id"]]
    found = cache.get_many(keys)
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        prompts = [prompt_ids(lm.template, lm.tokenizer, items["instruction"].iloc[i], items["input"].iloc[i] or "")
                   for i in todo]
        if on_vllm:
            from selectune.core import vllm

            out = vllm.generate_batch(lm.model, prompts, cfg.max_new_tokens)
        else:
            with tqdm(total=len(todo), desc=f"answers {identity[:24]}", leave=False) as bar:
                out = generate(lm.model, lm.tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, progress=bar)
        cache.put_many((keys[i], g.text.strip(), g.n_tokens) for i, g in zip(todo, out, strict=True))
        found.update({keys[i]: (g.text.strip(), g.n_tokens) for i, g in zip(todo, out, strict=True)})
    cache.close()
    return [found[k][0] for k in keys]


def measure(cfg: EvalConfig, items: pd.DataFrame, models: dict[str, str], judge: Any = None) -> Measurements:
    """Measure ``models`` ({name: reference}, the candidate first) on ``items`` (records with references)."""
    from selectune.tracking.registry import load_model, model_digest

    items = items.assign(input=items["input"].fillna("") if "input" in items else "").reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    out = Measurements(pd.DataFrame(columns=ITEM_COLUMNS))
    for name, ref in models.items():
        if judge is not None and cfg.backend == "vllm":  # answers on vLLM, released before transformers loads
            from selectune.tracking.registry import load_vllm_model

            vlm = load_vllm_model(ref, cfg.vllm)
            out.answers[name] = greedy_answers(vlm, model_digest(ref), items, cfg)
            alive = weakref.ref(vlm)
            del vlm
            collect_if_alive(alive)
        lm = load_model(ref)
        if cfg.reference_loss:
            loss, tokens = item_losses(lm, items, cfg.max_tokens, cfg.batch_size)
            rows += [{"item_id": rid, "model": name, "metric": "loss", "value": v, "weight": float(t)}
                     for rid, v, t in zip(items["id"], loss, tokens, strict=True)]
        if judge is not None and name not in out.answers:
            out.answers[name] = greedy_answers(lm, model_digest(ref), items, cfg)
        if cfg.lm_eval_tasks:
            from selectune.evaluation.harness import run_tasks

            docs, out.lm_eval[name] = run_tasks(lm.model, lm.tokenizer, cfg.lm_eval_tasks, cfg.lm_eval_include_path,
                                                cfg.lm_eval_limit, cfg.lm_eval_num_fewshot, cfg.batch_size)
            rows += [{"item_id": f"{d.task}:{d.doc_id}", "model": name, "metric": f"lm_eval.{d.task}.{d.metric}",
                      "value": d.value, "weight": 1.0, "detail": d.response} for d in docs.itertuples(index=False)]
        alive = weakref.ref(lm.model)
        del lm
        collect_if_alive(alive)
    if judge is not None:
        rows += judged_rows(judge, items, out, list(models))
    for name, answers in out.answers.items():
        rows += [{"item_id": rid, "model": name, "metric": "answer_chars", "value": float(len(a)), "weight": 1.0,
                  "answer": a} for rid, a in zip(items["id"], answers, strict=True)]
    out.items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    return out


def judged_rows(judge: Any, items: pd.DataFrame, out: Measurements, names: list[str]) -> list[dict[str, Any]]:
    """The candidate's win-rate against every other model, one row per item (both orders in ``detail``)."""
    import json

    from selectune.evaluation.winrate import win_rates

    candidate, rows = names[0], []
    for other in names[1:]:
        res = win_rates(judge, items, out.answers[candidate], out.answers[other])
        out.parse_failures[f"{candidate}_vs_{other}"] = int(res["parse_failures"].sum())
        for rid, r in zip(items["id"], res.itertuples(index=False), strict=True):
            detail = {"candidate_first": [r.verdict_candidate_first, r.raw_candidate_first],
                      "baseline_first": [r.verdict_baseline_first, r.raw_baseline_first]}
            rows.append({"item_id": rid, "model": candidate, "metric": f"winrate_vs_{other}",
                         "value": r.winrate if not math.isnan(r.winrate) else float("nan"), "weight": 1.0,
                         "detail": json.dumps(detail, ensure_ascii=False)})
            if not math.isnan(r.orders_agree):
                rows.append({"item_id": rid, "model": candidate, "metric": f"orders_agree_vs_{other}",
                             "value": r.orders_agree, "weight": 1.0})
    return rows
