"""SelectIT over a records file in chunks equals scoring the whole table at once; each rater loads once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.config import SelectITConfig
from selectune.core import models
from selectune.selectit.chunks import score_file
from selectune.selectit.rater import rating_cache, score_selectit


def _values(column: pd.Series) -> np.ndarray:
    """A column of scalars, lists or lists of lists (as written, or as read back from Parquet) as one array."""
    def cell(v: object) -> np.ndarray:
        if isinstance(v, list | np.ndarray) and len(v) and isinstance(v[0], list | np.ndarray):
            return np.stack([np.asarray(x, dtype=float) for x in v])
        return np.asarray(v, dtype=float)

    return np.stack([cell(v) for v in column])


def test_chunks_equal_the_whole_table_and_each_rater_loads_once(tiny_model: str, tiny_model_2: str,
                                                                 records: pd.DataFrame, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SelectITConfig(models=[tiny_model, tiny_model_2], dtype="float32", num_prompts=3, weights=[2.0, 1.0])
    src = tmp_path / "records.parquet"
    records.assign(extra=[None] * 2 + ["x"] * (len(records) - 2)).to_parquet(src, index=False)  # null in chunk 1
    whole = score_selectit(pd.read_parquet(src), cfg, progress=False).table

    loads: list[str] = []
    load = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda name, **kw: loads.append(name) or load(name, **kw))
    cache = rating_cache(tmp_path / "ratings.sqlite")
    report = score_file(src, tmp_path / "out" / "scored.parquet", cfg, cache, progress=False, chunk_records=2)
    chunked = pd.read_parquet(tmp_path / "out" / "scored.parquet")

    assert len(records) >= 5 and loads == [tiny_model, tiny_model_2], "one load per rater, not per chunk"
    assert list(chunked.columns) == list(whole.columns) and chunked["extra"].tolist() == whole["extra"].tolist()
    pd.testing.assert_frame_equal(chunked[list(records.columns)], whole[list(records.columns)])
    for col in [c for c in whole.columns if c.startswith("selectit_")]:
        np.testing.assert_allclose(_values(chunked[col]), _values(whole[col]), rtol=1e-5, atol=1e-6, err_msg=col)
    m = report.metrics()
    n = len(records) * 3
    assert m["records"] == len(records) and m["ratings_computed"] == 2 * n and m["cache_hits"] == 0
    assert report.weights == [2.0, 1.0] and m[f"weight.{models.model_key(tiny_model)}"] == 2.0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scored.parquet"], "no work files left behind"

    loads.clear()  # again: every rating from the cache, no model loaded
    again = score_file(src, tmp_path / "again.parquet", cfg, cache, progress=False, chunk_records=4)
    assert loads == [] and again.metrics()["cache_hits"] == 2 * n and again.metrics()["ratings_computed"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again.parquet"), chunked)
