"""The SelectIT stage: records.parquet -> ``<run_dir>/selectit/scored.parquet``, every rating from the cache when
it has it. Scoring runs in this process by default; ``flows/sharded.py`` passes a scorer that spreads shards over
Dask or Ray workers and returns the same table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from selectune.core import metrics, plots
from selectune.core.digests import file_digest
from selectune.data.records import write_parquet
from selectune.selectit.config import SelectITConfig
from selectune.stage import StageResult, run_stage, stage_key
from selectune.tracking import runs

# (records, stage dir, stage key) -> (scored table, metrics, shard folder or None)
Scorer = Callable[[Path, Path, str], tuple[pd.DataFrame, dict[str, float], Path | None]]


@dataclass(frozen=True)
class ScoreOutputs:
    scored: Path  # records + SelectIT columns
    shards: Path | None = None  # per-shard tables and completion markers (sharded scoring)


def score_in_process(cfg: SelectITConfig) -> Scorer:
    """Score every record here, one rater after another, through the rating cache."""

    def score(records: Path, out: Path, key: str) -> tuple[pd.DataFrame, dict[str, float], None]:
        from selectune.selectit.rater import rating_cache, score_selectit

        df = pd.read_parquet(records)
        report = score_selectit(df, cfg, rating_cache() if cfg.use_cache else None)
        seconds = sum(r.seconds for r in report.raters)
        m = {**report.metrics(), "records_per_s": round(len(df) / seconds, 3) if seconds else 0.0,
             **{f"weight.{r.key}": w for r, w in zip(report.raters, report.weights, strict=True)},
             **{f"truncated.{r.key}": int(r.truncated.any(axis=1).sum()) for r in report.raters}}
        return report.table, m, None

    return score


def score_stage(cfg: SelectITConfig, records: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
                stage: str = "selectit", scorer: Scorer | None = None,
                extra_params: dict[str, Any] | None = None) -> StageResult[ScoreOutputs]:
    """SelectIT-score ``records`` into scored.parquet; log the scored dataset, the score histogram and table."""
    from selectune.core import models

    inputs = {"records": file_digest(records), **{f"model.{models.model_key(m)}": models.fingerprint(m)
                                                   for m in cfg.models}}
    if cfg.rating_prompts_file:  # the prompts' text, not only the file's path, decides the ratings
        inputs["rating_prompts"] = file_digest(cfg.rating_prompts_file)
    key = stage_key(cfg, inputs)

    def body(out: Path) -> tuple[ScoreOutputs, dict[str, float]]:
        table, m, shards = (scorer or score_in_process(cfg))(Path(records), out, key)
        path = write_parquet(table, out / "scored.parquet")
        m["records_in"] = len(table)
        if (auroc := metrics.label_auroc(table, "selectit_score")) is not None:
            m["auroc.selectit_score"] = round(auroc, 4)
        if parent_run_id:
            from selectune.selectit.rater import rating_prompts
            from selectune.tracking.prompts import log_prompts

            log_scores(table, path)
            log_prompts({"selectit-rating": "".join(p if p.endswith("\n") else p + "\n" for p in rating_prompts(cfg))})
        return ScoreOutputs(path, shards), m

    return run_stage(stage, run_dir, cfg, inputs, body, ScoreOutputs, parent_run_id, extra_params)


def log_scores(table: pd.DataFrame, path: Path) -> None:
    """Into the active MLflow run: the scored dataset, the score histogram and the per-record score table."""
    import mlflow

    runs.log_dataset(table, path, "scored", "scored", ["id", "selectit_score"])
    runs.log_figure(plots.score_histogram(table["selectit_score"], None, "SelectIT scores",
                                              labels=table.get("label")), "selectit_hist.png")
    cols = ["id", "selectit_score", "selectit_base_rating"] + [c for c in table.columns
                                                                if c.startswith("selectit_sentence.")]
    mlflow.log_table(table[cols], "selectit_scores.json")
