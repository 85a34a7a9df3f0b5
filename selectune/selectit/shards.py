"""Sharded SelectIT scoring: balanced shard plans, per-shard persistence with completion markers, and a
deterministic merge that recomputes the model-level combination over all records.

Shard weights are characters (instruction + input + output), not tokens: the plan must be the same whichever
raters (each with its own tokenizer) are configured, and it is made in the orchestrating process without
loading a model. The rating prompt is a shared prefix that the engine runs once per batch, so a record's cost
tracks its own length, and characters are roughly proportional to tokens (~4 per token for English BPE).

Layout under ``<stage_dir>/shards/``: ``<i>.parquet`` (the shard's scored rows plus ``_row``, their position in
the input) and ``<i>.done.json``, written last (datatrove-style), whose ``key`` ties the shard to the stage
config, the input digest, the model fingerprints and the shard's record positions. A re-run skips every shard
whose marker carries the expected key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectune.selectit.config import SelectITConfig
from selectune.selectit.scores import model_scores

ROW = "_row"


def record_weights(df: pd.DataFrame) -> list[int]:
    """Cost proxy per record: characters of instruction + input + output (at least 1)."""
    missing = [c for c in ("instruction", "output") if c not in df.columns]
    if missing:
        raise ValueError(f"records have no column(s) {missing}; expected instruction, input, output")
    inp = df["input"] if "input" in df.columns else [""] * len(df)
    return [max(1, sum(len(x) for x in row if isinstance(x, str)))
            for row in zip(df["instruction"], inp, df["output"], strict=True)]


def file_weights(path: str | Path) -> list[int]:
    """:func:`record_weights` of a Parquet file's records, read a chunk at a time (the texts are not kept)."""
    import pyarrow.parquet as pq

    from selectune.data.stream import iter_frames

    cols = [c for c in ("instruction", "input", "output") if c in pq.read_schema(path).names]
    return [w for chunk in iter_frames(path, 8192, cols) for w in record_weights(chunk)]


def plan_shards(weights: Sequence[int], n: int) -> list[list[int]]:
    """Greedy longest-first into the lightest shard; deterministic (ties: lower index first).

    Returns ``min(n, len(weights))`` shards of record positions, each in ascending (input) order.
    """
    if n < 1:
        raise ValueError(f"number of shards must be >= 1, got {n}")
    n = min(n, len(weights)) or 1
    loads = [0] * n
    shards: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(weights)), key=lambda j: (-weights[j], j)):
        s = min(range(n), key=lambda j: (loads[j], j))
        shards[s].append(i)
        loads[s] += weights[i]
    return [sorted(s) for s in shards]


def shard_key(stage_key: str, positions: Sequence[int]) -> str:
    blob = json.dumps({"stage": stage_key, "rows": list(positions)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def paths(shard_dir: str | Path, index: int) -> tuple[Path, Path]:
    """(scored rows, completion marker) of shard ``index``."""
    d = Path(shard_dir)
    return d / f"{index}.parquet", d / f"{index}.done.json"


def finished(shard_dir: str | Path, index: int, key: str) -> dict[str, Any] | None:
    """The marker of a finished shard with this key, else None (missing, stale or unreadable)."""
    table, marker = paths(shard_dir, index)
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("key") == key and table.is_file() else None


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    tmp.replace(path)


def score_shard(cfg: SelectITConfig, records: str, positions: Sequence[int], shard_dir: str, index: int,
                key: str, progress: bool = True) -> dict[str, Any]:
    """Score one shard (unless its marker says it is done); returns the marker plus ``skipped``. The shard's rows are
    copied out of ``records`` and scored a chunk at a time (:func:`chunks.score_file`): memory holds one chunk."""
    if (meta := finished(shard_dir, index, key)) is not None:
        return {**meta, "skipped": True}
    from selectune.data.stream import map_chunks, take_rows
    from selectune.selectit.chunks import CHUNK_RECORDS, score_file
    from selectune.selectit.rater import open_rating_cache

    table, marker = paths(shard_dir, index)
    table.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    rows = sorted(positions)
    with tempfile.TemporaryDirectory(dir=table.parent, prefix=f".{index}.work-") as work:
        try:
            take_rows(records, rows, Path(work) / "records.parquet")
        except ValueError as err:
            raise ValueError(f"shard {index}: {err}") from None
        with open_rating_cache(cfg) as cache:
            report = score_file(Path(work) / "records.parquet", Path(work) / "scored.parquet", cfg, cache, progress)
        map_chunks(Path(work) / "scored.parquet", table, lambda c, chunk: chunk.assign(
            **{ROW: rows[c * CHUNK_RECORDS:c * CHUNK_RECORDS + len(chunk)]}), CHUNK_RECORDS)
    meta = {"key": key, "index": index, "rows": len(rows), "host": os.uname().nodename, "pid": os.getpid(),
            "weights": report.weights,
            "raters": [{"key": r.key, "n_params": r.n_params, "cache_hits": r.cache_hits, "computed": r.computed,
                        "tokens": r.tokens, "seconds": round(r.seconds, 3), "truncated": r.truncated}
                       for r in report.raters]}
    _atomic_write(marker, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return {**meta, "skipped": False}


def merge_shards(shard_dir: str | Path, results: Sequence[dict[str, Any]], n_records: int, cfg: SelectITConfig,
                 out: str | Path, rows: int = 8192) -> dict[str, float]:
    """Merge the shard tables into ``out`` in input order, ``selectit_score`` recomputed with global weights, and
    return score_stage-style metrics; per-rater ``computed``/``seconds`` count only the shards run now (skipped
    shards did no model work). Each shard is sorted by input row, so a k-way merge by row range, ``rows`` at a time,
    holds one window of rows whatever the number of records."""
    import pyarrow as pa

    from selectune.data.stream import ParquetOut

    results = sorted(results, key=lambda r: r["index"])
    keys = [r["key"] for r in results[0]["raters"]]
    counts = {tuple(r["n_params"] for r in res["raters"]) for res in results}
    if len(counts) != 1 or any([r["key"] for r in res["raters"]] != keys for res in results):
        raise RuntimeError(f"shards under {shard_dir} were scored by different raters: {sorted(counts)}")
    weights = list(cfg.weights) if cfg.weights is not None else [float(n) for n in counts.pop()]
    sources = [_Rows(paths(shard_dir, r["index"])[0], rows) for r in results]
    done = 0
    with ParquetOut(out) as merged:
        while done < n_records or any(src.pending() for src in sources):
            window = pa.concat_tables([src.below(done + rows) for src in sources],
                                      promote_options="permissive").sort_by(ROW)
            got = window[ROW].to_numpy()
            if len(got) != min(rows, n_records - done) or not np.array_equal(got, np.arange(done, done + len(got))):
                raise RuntimeError(f"shards under {shard_dir} do not cover rows {done}..{min(done + rows, n_records)}"
                                   f" of {n_records} exactly once (got {len(got)} rows): the shard plan and the input"
                                   " disagree")
            window = window.drop_columns([ROW])
            sentence = np.stack([window[f"selectit_sentence.{k}"].to_numpy().astype(np.float64) for k in keys])
            window = window.set_column(window.column_names.index("selectit_score"), "selectit_score",
                                       pa.array(model_scores(sentence, weights)))
            merged.write(window)
            done += len(got)
    return _merge_metrics(results, keys, weights, n_records)


class _Rows:
    """A shard table read in order of input row: :meth:`below` hands out the rows before a bound."""

    def __init__(self, path: Path, rows: int) -> None:
        import pyarrow.parquet as pq

        self.batches: Iterator[Any] = pq.ParquetFile(path).iter_batches(batch_size=rows)
        self.buffer: Any = None
        self.empty = pq.read_schema(path).empty_table()

    def pending(self) -> bool:
        if self.buffer is None or len(self.buffer) == 0:
            self.buffer = self._next()
        return self.buffer is not None and len(self.buffer) > 0

    def below(self, bound: int) -> Any:
        import pyarrow as pa

        parts = []
        while self.pending():
            rows = self.buffer[ROW].to_numpy()
            k = int(np.searchsorted(rows, bound))
            parts.append(self.buffer.slice(0, k))
            self.buffer = self.buffer.slice(k)
            if len(self.buffer):
                break
        return pa.concat_tables(parts) if parts else self.empty

    def _next(self) -> Any:
        import pyarrow as pa

        batch = next(self.batches, None)
        return None if batch is None else pa.Table.from_batches([batch])


def _merge_metrics(results: Sequence[dict[str, Any]], keys: list[str], weights: list[float],
                   n_records: int) -> dict[str, float]:
    m: dict[str, float] = {"records": float(n_records)}
    for j, k in enumerate(keys):
        ran = [res["raters"][j] for res in results if not res["skipped"]]
        seconds = sum(r["seconds"] for r in ran)
        m[f"{k}.cache_hits"] = sum(r["cache_hits"] for r in ran)
        m[f"{k}.computed"] = sum(r["computed"] for r in ran)
        m[f"{k}.seconds"] = round(seconds, 3)
        if seconds > 0:
            m[f"{k}.ratings_per_s"] = round(m[f"{k}.computed"] / seconds, 3)
        m[f"weight.{k}"] = weights[j]
        m[f"truncated.{k}"] = sum(res["raters"][j]["truncated"] for res in results)
    m["cache_hits"] = sum(m[f"{k}.cache_hits"] for k in keys)
    m["ratings_computed"] = sum(m[f"{k}.computed"] for k in keys)
    m["shards_total"] = len(results)
    m["shards_skipped"] = sum(1 for r in results if r["skipped"])
    return m
