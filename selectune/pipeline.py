"""The curation stages (load -> SelectIT scoring -> selection) as Prefect-free functions.

Each returns a StageResult; the Prefect tasks in ``tasks/`` are thin wrappers around these.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from selectune.data.records import write_parquet


def top_part(scored: str | Path, fraction: float, path: Path) -> str:
    """The best-scored fraction of records (SelectIT order, ties by id), for recycling after scoring."""
    df = pd.read_parquet(scored).sort_values(["selectit_score", "id"], ascending=[False, True])
    n = max(1, int(len(df) * fraction + 1e-9))
    keep = [c for c in df.columns if not c.startswith("selectit")]
    return str(write_parquet(df.head(n)[keep].reset_index(drop=True), path))
