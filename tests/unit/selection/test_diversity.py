"""The diversity pass: known cosines, the vectorized search equals a naive loop, quotas; the embedding cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectune.selection.config import SelectionConfig
from selectune.selection.select import select_records
from tests.unit.selection.helpers import frame, picked, reasons


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_diversity_with_known_cosines() -> None:
    # rank order r0..r3. cos(r0, r1) = cos 10 deg = 0.985; r2 at 90 deg; r3 at 45 deg: cos 0.707 to r0 and r2
    df = frame([4.0, 3.0, 2.0, 1.0])
    emb = np.array([unit(0), unit(10), unit(90), unit(45)]) * [[1.0], [3.0], [0.5], [2.0]]  # norms don't matter
    assert picked(df, emb, top_k=3, diversity_threshold=0.9) == ["r0", "r2", "r3"]
    r = reasons(df, emb, top_k=3, diversity_threshold=0.9)
    assert r["r1"] == "too similar (cos 0.98 to r0)" and r["r3"] == "top 3 (rank 4 <= 4)"
    assert picked(df, emb, top_k=3, diversity_threshold=0.7) == ["r0", "r2"]  # 0.707 >= 0.7: r3 rejected too
    assert reasons(df, emb, top_k=3, diversity_threshold=0.7)["r3"] in ("too similar (cos 0.71 to r0)",
                                                                    "too similar (cos 0.71 to r2)")
    shuffled = df.iloc[[3, 1, 0, 2]]  # embeddings follow the rows
    assert picked(shuffled, emb[[3, 1, 0, 2]], top_k=3, diversity_threshold=0.9) == ["r0", "r2", "r3"]


def naive_diverse(emb: np.ndarray, order: list[int], threshold: float, budget: int | None) -> tuple[list, dict]:
    """Reference O(n^2) loop: accept in order when every cosine to the accepted ones is < threshold."""
    unit_emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    accepted: list[int] = []
    rejected: dict[int, tuple[float, int]] = {}
    for i in order:
        if budget is not None and len(accepted) >= budget:
            break
        best, arg = -np.inf, -1
        for j in accepted:
            cos = float(unit_emb[i] @ unit_emb[j])
            if cos > best:
                best, arg = cos, j
        if best >= threshold:
            rejected[i] = (best, arg)
        else:
            accepted.append(i)
    return accepted, rejected


@pytest.mark.parametrize("budget", [None, 120])
def test_vectorized_diversity_equals_naive_loop(budget: int | None) -> None:
    rng = np.random.default_rng(7)
    n = 700  # crosses several 256-candidate blocks
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    df = frame(list(rng.random(n)))
    cfg = {"strategy": "full"} if budget is None else {"top_k": budget}
    res = select_records(df, SelectionConfig(diversity_threshold=0.8, **cfg), emb)
    order = list(np.argsort(-df["selectit_score"].to_numpy(), kind="stable"))
    accepted, rejected = naive_diverse(emb.astype(np.float64), order, 0.8, budget)
    assert 20 < len(rejected) and len(accepted) > 20
    assert res.selected["id"].tolist() == [f"r{i}" for i in accepted]
    r = dict(zip(res.table["id"], res.table["decision_reason"], strict=True))
    for i, (cos, j) in rejected.items():
        assert r[f"r{i}"] == f"too similar (cos {cos:.2f} to r{j})"


def test_diversity_respects_quotas_and_only_accepted_count() -> None:
    df = frame([5.0, 4.0, 3.0, 2.0, 1.0], category=["a", "a", "a", "b", "b"])
    emb = np.array([unit(0), unit(5), unit(90), unit(180), unit(270)])
    # r1 too similar to r0 (does not use a's quota), r2 fills a's 2nd slot, r3 and r4 unconstrained
    assert picked(df, emb, top_k=4, quotas={"a": 2}, diversity_threshold=0.9) == ["r0", "r2", "r3", "r4"]


def test_embedding_cache_embeds_only_new_records(tiny_embedder: str, records: pd.DataFrame, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_transformers import SentenceTransformer

    from selectune.selection.diversity import cache_path, embed_records, embedding_text

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path))
    calls: list[int] = []
    encode = SentenceTransformer.encode

    def counting_encode(self: SentenceTransformer, inputs: list[str], *args: object, **kwargs: object) -> np.ndarray:
        calls.append(len(inputs))
        return encode(self, inputs, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", counting_encode)
    first = embed_records(records.iloc[:4], tiny_embedder)
    assert first.n_new == 4 and calls == [4] and first.vectors.shape == (4, 32)
    assert cache_path(tiny_embedder).is_file() and cache_path(tiny_embedder).parent == tmp_path / "cache" / "embeddings"
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    again = embed_records(records.iloc[[3, 2, 1, 0]], tiny_embedder)
    assert again.n_new == 0 and calls == [4]
    np.testing.assert_array_equal(again.vectors, first.vectors[[3, 2, 1, 0]])
    more = embed_records(records, tiny_embedder)
    assert more.n_new == 2 and calls == [4, 2]
    np.testing.assert_array_equal(more.vectors[:4], first.vectors)
    texts = [embedding_text(r.instruction, r.input, r.output) for r in records.itertuples()]
    direct = encode(SentenceTransformer(tiny_embedder, device="cpu"), texts, normalize_embeddings=True)
    np.testing.assert_allclose(more.vectors, direct, atol=1e-5)
    assert embedding_text("Do it", "", "Done") == "Do it\n\nDone"
