"""The load stage: the input file -> ``<run_dir>/load/records.parquet`` (+ rejected.jsonl, duplicates.jsonl)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selectune.core.digests import file_digest
from selectune.data.config import DataConfig
from selectune.data.records import write_duplicates, write_rejections
from selectune.data.stream import write_records
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
        records = out / "records.parquet"  # streamed: memory holds one chunk of records
        scan = write_records(cfg.input, records, fmt=cfg.format, on_invalid=cfg.on_invalid, limit=cfg.limit or None)
        rejected = write_rejections(scan.rejected, out / "rejected.jsonl") if scan.rejected else None
        duplicates = write_duplicates(scan.duplicates, out / "duplicates.jsonl") if scan.duplicates else None
        n_out = min(scan.valid, cfg.limit) if cfg.limit else scan.valid
        if parent_run_id:
            runs.log_dataset_file(records, cfg.input, "records", "input")
        return LoadOutputs(records, rejected, duplicates), {"rows_read": scan.rows_read, "records_out": n_out,
                                                            "rejected": len(scan.rejected),
                                                            "duplicates": len(scan.duplicates)}

    return run_stage("load", run_dir, cfg, {"input": file_digest(cfg.input)}, body, LoadOutputs, parent_run_id)
