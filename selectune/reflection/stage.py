"""The recycling stage: records -> ``<run_dir>/recycle/`` recycled.parquet (every record, its variant, decision and
reason), kept.parquet (the recycled data set) and reflections.jsonl (every raw teacher reply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from selectune.core import plots
from selectune.core.digests import file_digest
from selectune.reflection.config import IFDScoringConfig, ReflectionConfig
from selectune.reflection.prompts import builtin_file
from selectune.reflection.recycle import recycle, write_outputs
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs

IFD_CHUNK = 4096  # records per chunk of the IFD stage (memory holds one chunk and the student)


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
    if cfg.teacher.backend in ("hf", "vllm"):
        inputs["teacher"] = models.fingerprint(cfg.teacher.model)
    for kind, path in (("instruction", cfg.prompts.reflect_instruction), ("response", cfg.prompts.reflect_response)):
        inputs[f"prompt.reflect_{kind}"] = file_digest(path or builtin_file(kind))

    def body(out: Path) -> tuple[RecycleOutputs, dict[str, float]]:
        res = recycle(pd.read_parquet(records), cfg, api_key=api_key)
        outputs = RecycleOutputs(**write_outputs(res, out))
        if parent_run_id:
            from selectune.tracking.prompts import flush_traces, log_prompts

            flush_traces()  # every teacher call's span is stored before the stage's run ends
            log_prompts({f"reflect-{kind}": Path(path or builtin_file(kind)).read_text(encoding="utf-8")
                         for kind, path in (("instruction", cfg.prompts.reflect_instruction),
                                            ("response", cfg.prompts.reflect_response))})
            runs.log_dataset(res.recycled, outputs.recycled, "recycled", "recycled", ["id", "decision"])
            if len(res.scores):
                for col, cut, name in (("ifd", cfg.ifd_max, "IFD"), ("rifd", cfg.rifd_max, "r-IFD")):
                    fig = plots.score_histogram(res.scores[col], cut, f"{name} per variant",
                                                labels=res.scores["variant"], xlabel=name)
                    runs.log_figure(fig, f"recycle_{col}_hist.png")
        return outputs, res.metrics

    return run_stage("recycle", run_dir, cfg, inputs, body, RecycleOutputs, parent_run_id)


@dataclass(frozen=True)
class IFDOutputs:
    scored: Path  # the scored records plus the IFD columns (ifd, rifd, their loss ratios, the four losses)


def ifd_stage(cfg: IFDScoringConfig, scored: str | Path, run_dir: str | Path,
              parent_run_id: str | None = None) -> StageResult[IFDOutputs]:
    """Add every record's IFD / r-IFD under the student to the scored table (cached per record)."""
    from selectune.core import models
    from selectune.core.cache import Cache
    from selectune.core.settings import home
    from selectune.data.stream import map_chunks, read_columns
    from selectune.reflection.ifd import STATS, Student, cached_ifd_scores

    inputs = {"scored": file_digest(scored), "student": models.fingerprint(cfg.model)}

    def body(out: Path) -> tuple[IFDOutputs, dict[str, float]]:
        cache = Cache(home() / "cache" / "ifd.sqlite", *STATS) if cfg.use_cache else None
        student = Student(cfg)  # loaded once, at the first record the cache lacks

        def with_ifd(_: int, df: pd.DataFrame) -> pd.DataFrame:  # a chunk of records + its IFD columns
            stats = cached_ifd_scores(df, cfg, cache, student=student)
            return pd.concat([df.drop(columns=[c for c in stats.columns if c in df.columns]), stats], axis=1)

        path = out / "scored.parquet"
        map_chunks(scored, path, with_ifd, IFD_CHUNK)
        student.loaded = None
        stats = read_columns(path, ["ifd", "ifd_truncated", "label"])
        m = {"records_in": len(stats), "ifd_median": float(stats["ifd"].median()),
             "ifd_below_1": int((stats["ifd"] < 1).sum()), "truncated": int(stats["ifd_truncated"].sum())}
        if parent_run_id:
            runs.log_figure(plots.score_histogram(stats["ifd"], 1.0, "IFD of every record",
                                                  labels=stats.get("label"), xlabel="IFD"), "ifd_hist.png")
        return IFDOutputs(path), m

    return run_stage("ifd", run_dir, cfg, inputs, body, IFDOutputs, parent_run_id)
