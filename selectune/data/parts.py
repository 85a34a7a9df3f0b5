"""A dataset folder that grows by parts: ``selectune data add`` validates new records, drops the ones the folder
already holds, and writes the rest as one new ``part-<time>-<digest>.jsonl`` (atomically: a temporary name, then
a rename; existing parts are never rewritten). Readers treat the folder as one dataset (:mod:`readers`). The
command then emits the Prefect event ``EVENT`` about the folder, which the ``retrain-on-new-data`` deployment's
trigger turns into one debounced run."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from selectune.core.digests import table_digest
from selectune.data.readers import PART_PREFIX, part_files
from selectune.data.records import load_records

EVENT = "selectune.dataset.updated"  # emitted by `selectune data add`; triggers the retrain-on-new-data deployment


def event_resource(folder: str | Path) -> dict[str, str]:
    """The Prefect event resource of a dataset folder: its absolute path is the resource id."""
    path = Path(folder).resolve()
    return {"prefect.resource.id": str(path), "prefect.resource.name": path.name, "selectune.kind": "dataset"}


@dataclass(frozen=True)
class AddResult:
    folder: Path
    part: Path | None  # None when every record was already there
    added: int
    already_present: int  # records the folder held before (by content id)
    digest: str | None  # the new part's table digest

    def payload(self) -> dict[str, object]:
        """What the ``selectune.dataset.updated`` event carries."""
        return {"folder": str(self.folder), "part": str(self.part) if self.part else None, "added": self.added,
                "already_present": self.already_present, "digest": self.digest,
                "parts": len(part_files(self.folder))}


def add_part(records: pd.DataFrame, folder: str | Path) -> AddResult:
    """Append ``records`` (validated, with content ids) to ``folder`` as one new part file."""
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    held = set(load_records(out).records["id"]) if part_files(out) else set()
    new = records[~records["id"].isin(held)]
    if new.empty:
        return AddResult(out, None, 0, len(records), None)
    digest = table_digest(new)
    part = out / f"{PART_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{digest[:8]}.jsonl"
    tmp = out / f".{part.name}.tmp"  # readers skip it: not a part-* name
    with tmp.open("w", encoding="utf-8") as fh:
        for row in new.to_dict("records"):  # every field but the content id (re-derived when read); no NaN fill-ins
            keep = {k: v for k, v in row.items() if k != "id" and not (isinstance(v, float) and math.isnan(v))}
            fh.write(json.dumps(keep, ensure_ascii=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(part)
    return AddResult(out, part, len(new), len(records) - len(new), digest)
