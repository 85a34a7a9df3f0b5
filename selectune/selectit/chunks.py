"""SelectIT over a records file in chunks: memory holds one rater and one chunk of records, whatever the file's size.

Rater by rater (each model loaded once, :class:`rater.Rater`) and chunk by chunk, the rating probabilities and
truncation flags go to ``<work>/<rater>/<chunk>.npz``; then chunk by chunk, the records and every rater's arrays are
combined (:func:`rater.combine`) into rows appended to the scored Parquet file. The model-level weights depend only on
the raters (their parameter counts, or ``weights``), so the rows are those of scoring the whole table at once; only
the batches differ (length-sorted within a chunk), which moves probabilities by float rounding.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from selectune.core.cache import Cache
from selectune.data.stream import iter_frames, map_chunks
from selectune.selectit.config import SelectITConfig

CHUNK_RECORDS = 2048  # x rating prompts = the ratings tokenized and batched together (length-sorted)
TEXT_COLUMNS = ["id", "instruction", "input", "output"]


@dataclass
class RaterTotals:
    """One rater over the whole file."""

    key: str
    n_params: int
    cache_hits: int = 0
    computed: int = 0
    tokens: int = 0
    seconds: float = 0.0
    truncated: int = 0  # records with at least one truncated rating text


@dataclass
class FileReport:
    records: int
    raters: list[RaterTotals] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """score_stage's metrics: per rater cache hits, ratings computed, seconds, ratings/s, weight, truncated."""
        from selectune.selectit.rater import rater_metrics

        seconds = sum(r.seconds for r in self.raters)
        return {**rater_metrics(self.records, self.raters),
                "records_per_s": round(self.records / seconds, 3) if seconds else 0.0,
                **{f"weight.{r.key}": w for r, w in zip(self.raters, self.weights, strict=True)},
                **{f"truncated.{r.key}": r.truncated for r in self.raters}}


def score_file(records: str | Path, output: str | Path, cfg: SelectITConfig, cache: Cache | None = None,
               progress: bool = True, chunk_records: int = CHUNK_RECORDS) -> FileReport:
    """SelectIT-score the Parquet file ``records`` into ``output`` (records + SelectIT columns, as
    :func:`rater.score_selectit` adds them), a chunk at a time; ``output`` is written atomically."""
    import pyarrow.parquet as pq

    from selectune.selectit.rater import Rater, RaterResult, combine, rating_prompts

    prompts = rating_prompts(cfg)
    n = pq.ParquetFile(records).metadata.num_rows
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = FileReport(n)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.ratings-") as work:
        for j, name in enumerate(cfg.models):
            with Rater(name, cfg, prompts, cache, progress, n * len(prompts)) as rater:
                totals = RaterTotals(rater.key, rater.n_params)
                for c, chunk in enumerate(iter_frames(records, chunk_records, TEXT_COLUMNS)):
                    res = rater.rate(chunk)
                    np.savez(Path(work) / f"{j}-{c}.npz", probs=res.probs, truncated=res.truncated)
                    totals.cache_hits += res.cache_hits
                    totals.computed += res.computed
                    totals.tokens += res.tokens
                    totals.seconds += res.seconds
                    totals.truncated += int(res.truncated.any(axis=1).sum())
                report.raters.append(totals)

        def combined(c: int, chunk: pd.DataFrame) -> pd.DataFrame:
            raters = []
            for j, totals in enumerate(report.raters):
                with np.load(Path(work) / f"{j}-{c}.npz") as arrays:
                    raters.append(RaterResult(totals.key, arrays["probs"], arrays["truncated"], totals.n_params))
            scored = combine(chunk, raters, cfg)
            report.weights = scored.weights
            return scored.table

        map_chunks(records, output, combined, chunk_records)
    return report

