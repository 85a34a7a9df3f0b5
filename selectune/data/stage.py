"""The load stage: the input file -> ``<run_dir>/load/records.parquet`` (+ rejected.jsonl, duplicates.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selectune.core.digests import file_digest
from selectune.data.config import DataConfig
from selectune.data.records import load_records, write_parquet, write_rejections
from selectune.stage import StageResult, run_stage
from selectune.tracking import runs


@dataclass(frozen=True)
class LoadOutputs:
    records: Path  # valid, deduplicated records with content ids
    rejected: Path | None = None  # rejected rows with file, row, field and reason (on_invalid: skip)
    duplicates: Path | None = None  # exact duplicates dropped


def load_stage(cfg: DataConfig, run_dir: str | Path, parent_run_id: str | None = None) -> StageResult[LoadOutputs]:
    """Read and validate the dataset; write records.parquet (+ rejected.jsonl, duplicates.jsonl)."""

    def body(out: Path) -> tuple[LoadOutputs, dict[str, float]]:
        res = load_records(cfg.input, fmt=cfg.format, on_invalid=cfg.on_invalid)
        df = res.records.head(cfg.limit) if cfg.limit else res.records
        rejected = write_rejections(res.rejected, out / "rejected.jsonl") if res.rejected else None
        duplicates = None
        if len(res.duplicates):
            duplicates = out / "duplicates.jsonl"
            res.duplicates.to_json(duplicates, orient="records", lines=True, force_ascii=False)
        outputs = LoadOutputs(write_parquet(df, out / "records.parquet"), rejected, duplicates)
        if parent_run_id:
            runs.log_dataset(df, cfg.input, "records", "input")
        return outputs, {"rows_read": res.rows_read, "records_out": len(df), "rejected": len(res.rejected),
                         "duplicates": len(res.duplicates)}

    return run_stage("load", run_dir, cfg, {"input": file_digest(cfg.input)}, body, LoadOutputs, parent_run_id)
