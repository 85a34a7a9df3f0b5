"""lm-evaluation-harness on an in-memory model: the ecosystem's standard benchmarks (and local task YAMLs) run
through ``lm_eval.simple_evaluate`` on the loaded model and tokenizer, with every document's result kept, so two
models can be compared document by document.

Standard tasks download their data from the Hugging Face hub; offline (no cache) such a task stops with an error
that names it. Local tasks (``include_path``) work offline, e.g. ``tests/fixtures/lm_eval/``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import pandas as pd

COLUMNS = ["task", "doc_id", "metric", "value", "response"]


@cache
def _manager(include_path: str | None, include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def task_manager(tasks: Sequence[str], include_path: str | None = None) -> Any:
    """lm-eval's task index, built once per process: the local tasks alone when they hold every requested task
    (indexing the thousands of standard task files takes ~25 s on a small CPU), else the standard ones too."""
    if include_path:
        local = _manager(str(include_path), False)
        if set(tasks) <= set(local.all_tasks):
            return local
    return _manager(str(include_path) if include_path else None, True)


def check_tasks(tasks: Sequence[str], include_path: str | None = None) -> Any:
    """The task manager, after making sure every task exists and loads its data; the error names the task."""
    manager = task_manager(tasks, include_path)
    known = set(manager.all_tasks)
    for name in tasks:
        if name not in known:
            raise ValueError(f"lm-eval task {name!r} is unknown" + (f" (local tasks from {include_path})"
                                                                   if include_path else "")
                             + "; `lm-eval ls tasks` lists the standard ones")
        try:
            manager.load([name])
        except Exception as err:  # noqa: BLE001 - datasets raises many kinds; say which task and why
            raise ValueError(f"lm-eval task {name!r} could not load its data: {type(err).__name__}: "
                             f"{str(err)[:300]}. Standard tasks download from the Hugging Face hub: run once with "
                             "network access to fill the datasets cache, or use local task YAMLs "
                             "(eval.lm_eval_include_path)") from None
    return manager


def run_tasks(model: Any, tokenizer: Any, tasks: Sequence[str], include_path: str | None = None,
              limit: int | None = None, num_fewshot: int | None = None, batch_size: int = 8,
              max_length: int | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """(one row per task x document x metric, aggregates ``{task.metric: value}``) for one model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = check_tasks(tasks, include_path)
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, device=device)
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                          log_samples=True, bootstrap_iters=0, verbosity="WARNING")
    rows = []
    aggregates: dict[str, float] = {}
    for task in tasks:
        metrics = [str(m["metric"]) for m in out["configs"][task].get("metric_list", [])]
        for key, value in out["results"][task].items():
            name = key.split(",")[0]
            if name in metrics and isinstance(value, int | float) and math.isfinite(value):
                aggregates[f"{task}.{name}"] = float(value)
        for sample in out["samples"][task]:
            response = sample.get("filtered_resps") or sample.get("resps")
            for name in metrics:
                if name in sample:
                    rows.append({"task": task, "doc_id": int(sample["doc_id"]), "metric": name,
                                 "value": float(sample[name]), "response": str(response)[:2000]})
    return pd.DataFrame(rows, columns=COLUMNS), aggregates
