"""The recycling stage: records -> ``<run_dir>/recycle/`` recycled.parquet (every record, its variant, decision and
reason), kept.parquet (the recycled data set) and reflections.jsonl (every raw teacher reply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectune.core import plots
from selectune.core.digests import file_digest
from selectune.reflection.config import ReflectionConfig
from selectune.reflection.recycle import recycle, write_outputs
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs


@dataclass(frozen=True)
class RecycleOutputs:
    recycled: Path  # every input record: its variant, decision, reason and IFD / r-IFD values
    kept: Path  # the kept rows (unique ids): the recycled data set
    reflections: Path  # every raw teacher reply with its parse outcome


def recycle_stage(cfg: ReflectionConfig, records: str | Path, run_dir: str | Path, parent_run_id: str | None = None,
                  api_key: str | None = None) -> StageResult[RecycleOutputs]:
    """Recycle records.parquet into recycled.parquet / kept.parquet / reflections.jsonl (see :func:`recycle`)."""
    from selectune.core import models

    inputs = {"records": file_digest(records), "student": models.fingerprint(cfg.student.model)}
    if cfg.teacher.backend == "hf":
        inputs["teacher"] = models.fingerprint(cfg.teacher.model)

    def body(out: Path) -> tuple[RecycleOutputs, dict[str, float]]:
        res = recycle(pd.read_parquet(records), cfg, api_key=api_key)
        outputs = RecycleOutputs(**write_outputs(res, out))
        if parent_run_id:
            runs.log_dataset(res.recycled, outputs.recycled, "recycled", "recycled", ["id", "decision"])
            if len(res.scores):
                for col, cut, name in (("ifd", cfg.ifd_max, "IFD"), ("rifd", cfg.rifd_max, "r-IFD")):
                    fig = plots.score_histogram(res.scores[col], cut, f"{name} per variant",
                                                labels=res.scores["variant"], xlabel=name)
                    runs.log_figure(fig, f"recycle_{col}_hist.png")
        return outputs, res.metrics

    return run_stage("recycle", run_dir, cfg, inputs, body, RecycleOutputs, parent_run_id)
