"""IFD through the cache: same numbers as uncached, committed in chunks, resumed after a crash without rework."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selectune.config import IFDConfig
from selectune.core.cache import Cache
from selectune.reflection import ifd


def test_cache_commits_in_chunks_and_resumes(records: pd.DataFrame, tiny_model: str, tmp_path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = IFDConfig(model=tiny_model, dtype="float32")
    direct = ifd.ifd_scores(records, cfg, progress=False)
    monkeypatch.setattr(ifd, "COMMIT_EVERY", 2)
    real, sizes = ifd.ifd_scores, []

    def crash_on_third(df: pd.DataFrame, *a: object, **kw: object) -> pd.DataFrame:
        sizes.append(len(df))
        if len(sizes) == 3:
            raise RuntimeError("killed")
        return real(df, *a, **kw)

    monkeypatch.setattr(ifd, "ifd_scores", crash_on_third)
    cache = Cache(tmp_path / "ifd.sqlite", *ifd.STATS)
    with pytest.raises(RuntimeError, match="killed"):
        ifd.cached_ifd_scores(records, cfg, cache, progress=False)
    assert sizes == [2, 2, 2] and len(cache) == 4  # the two chunks before the crash were committed

    sizes.clear()
    monkeypatch.setattr(ifd, "ifd_scores", lambda df, *a, **kw: sizes.append(len(df)) or real(df, *a, **kw))
    out = ifd.cached_ifd_scores(records, cfg, Cache(tmp_path / "ifd.sqlite", *ifd.STATS), progress=False)
    assert sizes == [len(records) - 4]  # only the records the crash lost are scored again
    assert list(out.index) == list(records.index) and list(out.columns) == ifd.COLUMNS
    np.testing.assert_allclose(out[["ifd", "rifd", "loss_a", "loss_q_given_a"]].to_numpy(),
                               direct[["ifd", "rifd", "loss_a", "loss_q_given_a"]].to_numpy(), rtol=1e-4)
    assert (out["n_tokens_a"] == direct["n_tokens_a"]).all()

    sizes.clear()
    again = ifd.cached_ifd_scores(records, cfg, Cache(tmp_path / "ifd.sqlite", *ifd.STATS), progress=False)
    assert sizes == [] and again.equals(out)  # everything cached: nothing is scored again
