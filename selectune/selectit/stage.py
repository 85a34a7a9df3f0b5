"""The SelectIT stage: records.parquet -> ``<run_dir>/selectit/scored.parquet``, every rating from the cache when
it has it. Scoring runs in this process by default; ``flows/sharded.py`` passes a scorer that spreads shards over
Dask or Ray workers and returns the same table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selectune.core import metrics, plots
from selectune.core.digests import file_digest
from selectune.selectit.config import SelectITConfig
from selectune.stage import StageResult, run_stage, stage_key
from selectune.tracking import runs

# (records, stage dir, stage key) -> (<stage dir>/scored.parquet, metrics, shard folder or None)
Scorer = Callable[[Path, Path, str], tuple[Path, dict[str, float], Path | None]]


@dataclass(frozen=True)
class ScoreOutputs:
    scored: Path  # records + SelectIT columns
    shards: Path | None = None  # per-shard tables and completion markers (sharded scoring)


def score_in_process(cfg: SelectITConfig) -> Scorer:
    """Score every record here, one rater after another, a chunk of records at a time, through the rating cache."""

    def score(records: Path, out: Path, key: str) -> tuple[Path, dict[str, float], None]:
        from selectune.selectit.chunks import score_file
        from selectune.selectit.rater import open_rating_cache

        path = out / "scored.parquet"
        with open_rating_cache(cfg) as cache:
            return path, score_file(records, path, cfg, cache).metrics(), None

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
        from selectune.data.stream import read_columns

        path, m, shards = (scorer or score_in_process(cfg))(Path(records), out, key)
        scores = read_columns(path, ["selectit_score", "label"])
        m["records_in"] = len(scores)
        if (auroc := metrics.label_auroc(scores, "selectit_score")) is not None:
            m["auroc.selectit_score"] = round(auroc, 4)
        if parent_run_id:
            from selectune.selectit.rater import rating_prompts
            from selectune.tracking.prompts import log_prompts

            log_scores(path)
            log_prompts({"selectit-rating": "".join(p if p.endswith("\n") else p + "\n" for p in rating_prompts(cfg))})
        return ScoreOutputs(path, shards), m

    return run_stage(stage, run_dir, cfg, inputs, body, ScoreOutputs, parent_run_id, extra_params)


def log_scores(path: Path) -> None:
    """Into the active MLflow run: the scored dataset, the score histogram and the per-record score table (the
    scored file is read by those columns, never whole)."""
    import mlflow
    import pyarrow.parquet as pq

    from selectune.data.stream import read_columns

    runs.log_dataset_file(path, str(path), "scored", "scored", ["id", "selectit_score"])
    cols = ["id", "selectit_score", "selectit_base_rating"] + [c for c in pq.read_schema(path).names
                                                                if c.startswith("selectit_sentence.")]
    table = read_columns(path, [*cols, "label"])
    runs.log_figure(plots.score_histogram(table["selectit_score"], None, "SelectIT scores",
                                              labels=table.get("label")), "selectit_hist.png")
    mlflow.log_table(table[cols], "selectit_scores.json")
