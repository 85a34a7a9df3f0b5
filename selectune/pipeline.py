"""The curation stages (load -> SelectIT scoring -> selection) as Prefect-free functions.

Each returns a StageResult; the Prefect tasks in ``tasks/`` are thin wrappers around these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectune import tracking
from selectune.config import SelectITConfig
from selectune.core import metrics, plots
from selectune.core.digests import file_digest
from selectune.data.records import write_parquet
from selectune.stage import StageResult, run_stage


def _auroc_metric(df: pd.DataFrame, column: str) -> dict[str, float]:
    value = metrics.label_auroc(df, column)
    return {} if value is None else {f"auroc.{column}": round(value, 4)}


@dataclass(frozen=True)
class ScoreOutputs:
    scored: Path  # records + SelectIT columns
    shards: Path | None = None  # per-shard tables and completion markers (sharded scoring)


def score_stage(cfg: SelectITConfig, records: str | Path, run_dir: str | Path,
                parent_run_id: str | None = None, stage: str = "selectit") -> StageResult[ScoreOutputs]:
    """SelectIT-score records.parquet into scored.parquet, reusing the content-addressed rating cache."""
    from selectune.core import models
    from selectune.scoring import rating_cache, score_selectit

    fingerprints = {f"model.{models.model_key(m)}": models.fingerprint(m) for m in cfg.models}

    def body(out: Path) -> tuple[ScoreOutputs, dict[str, float]]:
        df = pd.read_parquet(records)
        cache = rating_cache() if cfg.use_cache else None
        report = score_selectit(df, cfg, cache)
        path = write_parquet(report.table, out / "scored.parquet")
        seconds = sum(r.seconds for r in report.raters)
        m = {**report.metrics(), "records_in": len(df),
             "records_per_s": round(len(df) / seconds, 3) if seconds else 0.0,
             **{f"weight.{r.key}": w for r, w in zip(report.raters, report.weights, strict=True)},
             **_auroc_metric(report.table, "selectit_score")}
        m.update({f"truncated.{r.key}": int(r.truncated.any(axis=1).sum()) for r in report.raters})
        if parent_run_id:
            import mlflow

            tracking.log_dataset(report.table, path, "scored", "scored", ["id", "selectit_score"])
            tracking.log_figure(plots.score_histogram(report.table["selectit_score"], None, "SelectIT scores",
                                                      labels=report.table.get("label")), "selectit_hist.png")
            cols = ["id", "selectit_score", "selectit_base_rating"] + [
                c for c in report.table.columns if c.startswith("selectit_sentence.")]
            mlflow.log_table(report.table[cols], "selectit_scores.json")
        return ScoreOutputs(path), m

    inputs = {"records": file_digest(records), **fingerprints}
    return run_stage(stage, run_dir, cfg, inputs, body, ScoreOutputs, parent_run_id)


def top_part(scored: str | Path, fraction: float, path: Path) -> str:
    """The best-scored fraction of records (SelectIT order, ties by id), for recycling after scoring."""
    df = pd.read_parquet(scored).sort_values(["selectit_score", "id"], ascending=[False, True])
    n = max(1, int(len(df) * fraction + 1e-9))
    keep = [c for c in df.columns if not c.startswith("selectit")]
    return str(write_parquet(df.head(n)[keep].reset_index(drop=True), path))


def retrain_needed(model_name: str | None, digest: str) -> str | None:
    """Why the tuning stage must run, or None when the latest registered version was trained on this subset."""
    if not model_name:
        return "no registry name: always train"
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        versions = MlflowClient().search_model_versions(f"name = '{model_name}'", order_by=["version_number DESC"],
                                                        max_results=1)
    except MlflowException:
        return f"no registered model {model_name!r} yet"
    if not versions:
        return f"no registered model {model_name!r} yet"
    last = versions[0]
    if last.tags.get("selectune.selected_digest") != digest:
        return f"selected subset changed since {model_name} v{last.version}"
    return None
