"""Tests for selectune.selection.select_records: strategies, budgets, constraints and the diversity pass."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from selectune.config import SelectionConfig
from selectune.selection import select, select_records
from tests.fixtures import DEMO


def frame(scores: list[float], **cols: list) -> pd.DataFrame:
    """Records r0, r1, ... with the given selectit scores and extra columns."""
    df = pd.DataFrame({"id": [f"r{i}" for i in range(len(scores))], "selectit_score": scores})
    for name, values in cols.items():
        df[name] = values
    return df


def picked(df: pd.DataFrame, embeddings: np.ndarray | None = None, **cfg: object) -> list[str]:
    return select_records(df, SelectionConfig(**cfg), embeddings).selected["id"].tolist()


def reasons(df: pd.DataFrame, embeddings: np.ndarray | None = None, **cfg: object) -> dict[str, str]:
    t = select_records(df, SelectionConfig(**cfg), embeddings).table
    return dict(zip(t["id"], t["decision_reason"], strict=True))


TEN = [1.0, 2.0, 8.0, 3.0, 4.0, 5.0, 0.5, 9.5, 6.0, 7.0]  # best: r7, r2, r9, r8, r5, ...


@pytest.mark.parametrize("budget", [{"fraction": 0.2}, {"fraction": 0.35}, {"top_k": 3}, {"threshold": 2.0}])
def test_top_matches_select_without_constraints(budget: dict) -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=30).astype(float)  # ties
    scores[[4, 11]] = np.nan
    df = frame(list(scores))
    old = select(df, **{"k" if key == "top_k" else key: v for key, v in budget.items()})
    new = select_records(df, SelectionConfig(**{"fraction": None, **budget}))
    assert new.table["id"].tolist() == old.table["id"].tolist()
    assert new.table["decision_reason"].tolist() == old.table["decision_reason"].tolist()
    assert new.selected["id"].tolist() == old.selected["id"].tolist() and new.cut_value == old.cut_value
    assert (new.table["selection_score"].to_numpy()[:28] == old.table["selectit_score"].to_numpy()[:28]).all()


def test_top_reasons_and_decisions() -> None:
    res = select_records(frame(TEN), SelectionConfig(top_k=2))
    t = res.table
    assert res.selected["id"].tolist() == ["r7", "r2"] and res.budget == 2 and res.cut_value == 8.0
    assert t["decision_reason"].tolist()[:3] == ["top 2 (rank 1 <= 2)", "top 2 (rank 2 <= 2)", "below cut (rank 3 > 2)"]
    assert t["decision"].tolist()[:3] == ["selected", "selected", "below_cut"]
    assert picked(frame(TEN), fraction=0.2) == ["r7", "r2"]


def test_combined_weights_hand_computed() -> None:
    # a (higher better) ranks -> [0, 1/3, 2/3, 1]; b (weight < 0, lower better) -> 1 - [1, 0, 2/3, 1/3]
    # combined = (2 * a + 1 * b') / 3 = [0, 5/9, 5/9, 8/9]; r1 and r2 tie -> id order
    df = frame([0.0] * 4, a=[10.0, 20.0, 30.0, 40.0], b=[4.0, 1.0, 3.0, 2.0])
    res = select_records(df, SelectionConfig(strategy="combined", weights={"a": 2.0, "b": -1.0}, top_k=2))
    t = res.table
    assert t["id"].tolist() == ["r3", "r1", "r2", "r0"]
    np.testing.assert_allclose(t["selection_score"], [8 / 9, 5 / 9, 5 / 9, 0.0])
    assert res.selected["id"].tolist() == ["r3", "r1"] and math.isclose(res.cut_value, 5 / 9)
    only_b = dict(strategy="combined", weights={"b": -1.0, "a": 0.0}, top_k=1)  # zero weight: column ignored
    assert picked(df, **only_b) == ["r1"]
    thr = dict(strategy="combined", weights={"a": 2.0, "b": -1.0}, threshold=0.5)
    assert picked(df, **thr) == ["r3", "r1", "r2"]


def test_combined_ties_and_nan() -> None:
    # a: [1, 1, 2, NaN] -> average ranks 1.5, 1.5, 3 over 3 values -> [0.25, 0.25, 1]; r3 is missing a
    df = frame([0.0] * 4, a=[1.0, 1.0, 2.0, np.nan], c=[0.0, 1.0, 0.0, 5.0])
    t = select_records(df, SelectionConfig(strategy="combined", weights={"a": 1.0}, top_k=4)).table
    assert t["id"].tolist() == ["r2", "r0", "r1", "r3"]
    np.testing.assert_allclose(t["selection_score"].to_numpy()[:3], [1.0, 0.25, 0.25])
    assert t["decision_reason"].iloc[3] == "score missing (a)" and not t["selected"].iloc[3]
    both = select_records(df, SelectionConfig(strategy="combined", weights={"a": 1.0, "c": 1.0}, top_k=2)).table
    assert both.set_index("id").loc["r3", "decision_reason"] == "score missing (a)"


def test_random_is_seeded_and_order_independent() -> None:
    df = frame(list(range(40)), output=["x"] * 40)
    df.loc[5, "selectit_score"] = np.nan  # the random baseline ignores scores
    ref = picked(df, strategy="random", top_k=10, seed=3)
    assert len(ref) == 10 and len(set(ref)) == 10
    for state in range(3):
        assert picked(df.sample(frac=1.0, random_state=state), strategy="random", top_k=10, seed=3) == ref
    assert picked(df, strategy="random", top_k=10, seed=4) != ref
    assert len(picked(df, strategy="random", fraction=0.25, seed=3)) == 10
    # a record's draw depends on its id only: a subset of the rows keeps their relative order
    sub = df[df["id"].isin(ref[:5] + ["r0", "r1"])]
    assert picked(sub, strategy="random", top_k=5, seed=3) == ref[:5]
    r = reasons(df, strategy="random", top_k=10, seed=3)
    assert r[ref[0]] == "random baseline (seed 3, rank 1 <= 10)"
    assert sorted(v for v in r.values() if v.startswith("not drawn"))[0].startswith("not drawn (rank 1")


def test_full_keeps_everything_within_length_bounds() -> None:
    df = frame([1.0, np.nan, 3.0], output=["a" * 5, "b" * 50, "c" * 500])
    res = select_records(df, SelectionConfig(strategy="full", max_chars=100))
    assert res.selected["id"].tolist() == ["r0", "r1"]
    r = dict(zip(res.table["id"], res.table["decision_reason"], strict=True))
    assert r == {"r0": "full baseline", "r1": "full baseline", "r2": "too long (500 > 100 chars)"}
    assert res.cut_value is None and res.budget is None
    assert picked(frame([1.0, 2.0]).drop(columns="selectit_score"), strategy="full") == ["r0", "r1"]


def test_length_bounds_and_next_record_takes_the_slot() -> None:
    df = frame(TEN, output=["x" * n for n in (30, 30, 10, 30, 30, 30, 30, 30, 300, 30)])
    res = select_records(df, SelectionConfig(top_k=2, min_chars=20, max_chars=200))
    assert res.selected["id"].tolist() == ["r7", "r9"]  # r2 too short; r9 takes its slot; budget stays 2
    r = dict(zip(res.table["id"], res.table["decision_reason"], strict=True))
    assert r["r2"] == "too short (10 < 20 chars)" and r["r8"] == "too long (300 > 200 chars)"
    assert r["r9"] == "top 2 (rank 3 <= 3)" and r["r5"] == "below cut (rank 5 > 3)"
    # threshold 6: 9.5, 8 (too short), 7, 6 (too long)
    assert picked(df, threshold=6.0, min_chars=20, max_chars=200) == ["r7", "r9"]


def test_quota_counts_and_fractions() -> None:
    cats = ["code", "code", "code", "math", "math", "code", "chat", "code", "chat", "code"]
    df = frame(TEN, category=cats)  # rank order: r7 code, r2 code, r9 code, r8 chat, r5 code, r4 math, r3 math
    assert picked(df, top_k=4, quotas={"code": 1}) == ["r7", "r8", "r4", "r3"]
    r = reasons(df, top_k=4, quotas={"code": 1})
    assert r["r2"] == "quota full for category 'code' (1)" and r["r9"] == "quota full for category 'code' (1)"
    assert picked(df, top_k=4, quotas={"code": 0.5}) == ["r7", "r2", "r8", "r4"]  # floor(0.5 * 4) = 2 code
    assert picked(df, top_k=4, quotas={"code": 0.5, "chat": 1, "math": 1}) == ["r7", "r2", "r8", "r4"]
    assert picked(df, top_k=3, quotas={"poetry": 2}) == ["r7", "r2", "r9"]  # unknown category: no effect
    df.loc[df["id"] == "r2", "category"] = None  # no category: unconstrained
    assert picked(df, top_k=3, quotas={"code": 1}) == ["r7", "r2", "r8"]
    with pytest.raises(ValueError, match="quotas need the category column 'topic'"):
        select_records(df, SelectionConfig(quotas={"code": 1}, category_column="topic"))


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


def test_input_errors() -> None:
    df = frame(TEN)
    with pytest.raises(ValueError, match="diversity_threshold is set: pass embeddings"):
        select_records(df, SelectionConfig(diversity_threshold=0.9))
    with pytest.raises(ValueError, match=r"one row per record \(10\), got shape \(9, 3\)"):
        select_records(df, SelectionConfig(diversity_threshold=0.9), np.ones((9, 3)))
    bad = np.ones((10, 3))
    bad[4] = 0
    with pytest.raises(ValueError, match=r"1 embedding row\(s\) are zero or not finite, e.g. ids \['r4'\]"):
        select_records(df, SelectionConfig(diversity_threshold=0.9), bad)
    with pytest.raises(ValueError, match="score column 'ifd' not found"):
        select_records(df, SelectionConfig(strategy="combined", weights={"ifd": -1.0}))
    with pytest.raises(ValueError, match="need an 'output' column"):
        select_records(df, SelectionConfig(min_chars=3))
    with pytest.raises(ValueError, match="duplicate id"):
        select_records(pd.concat([df, df]), SelectionConfig())


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"strategy": "combined"}, "needs weights"),
        ({"strategy": "combined", "weights": {"a": 0.0}}, "needs weights"),
        ({"strategy": "random", "threshold": 0.5}, "not a threshold"),
        ({"quotas": {"code": 2.5}}, "quota for category 'code' must be a whole count"),
        ({"quotas": {"code": 0}}, "quota for category 'code'"),
        ({"min_chars": 10, "max_chars": 5}, "min_chars 10 > max_chars 5"),
    ],
)
def test_config_errors(cfg: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SelectionConfig(**cfg)


# --------------------------------------------------------------------------- embeddings and the stage


def test_embedding_cache_embeds_only_new_records(tiny_embedder: str, records: pd.DataFrame, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_transformers import SentenceTransformer

    from selectune.embed import cache_path, embed_records, embedding_text

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


def scored_demo(tmp_path: Path) -> Path:
    """Demo records with a score that separates the labels perfectly (AUROC 1)."""
    from selectune.data.records import load_records, write_parquet

    df = load_records(DEMO).records
    jitter = np.array([int(i[:6], 16) for i in df["id"]]) / 16**6 * 0.5
    df["selectit_score"] = (df["label"] == "good").astype(float) + jitter
    return write_parquet(df, tmp_path / "scored.parquet")


def test_stage_writes_files_and_logs_metrics_and_figures(tiny_embedder: str, mlflow_store: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from selectune import tracking
    from selectune.select_stage import DECISIONS, select_stage

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path / "home"))
    scored = str(scored_demo(tmp_path))
    cfg = SelectionConfig(top_k=20, min_chars=20, quotas={"math": 3}, diversity_threshold=0.995, embedder=tiny_embedder)
    tracking.setup("select-test")
    with mlflow.start_run() as parent:
        res = select_stage(cfg, scored, tmp_path / "run", parent.info.run_id)
    out = Path(res.dir)
    table = pd.read_parquet(out / "selection.parquet")
    selected = pd.read_parquet(out / "selected.parquet")
    assert len(table) == 150 and table["decision_reason"].str.len().gt(0).all()
    assert len(selected) == 20 == len(json.loads((out / "selected_alpaca.json").read_text()))
    assert (selected["category"] == "math").sum() == 3 and selected["output"].str.len().min() >= 20
    m = res.metrics
    assert m["records_in"] == 150 and m["records_out"] == 20 and m["embedded_new"] == 150
    assert sum(m[f"decision.{k}"] for k in DECISIONS) == 150 and m["decision.quota_full"] > 0
    assert m["decision.too_short"] == int((table["output"].str.len() < 20).sum()) > 0
    assert m["decision.too_similar"] == int((table["decision"] == "too_similar").sum())
    assert m["auroc.selectit_score"] == 1.0 and m["selected_poor_fraction"] == 0.0 and m["input_poor_fraction"] == 0.2
    child = MlflowClient().get_run(res.mlflow_run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["records_out"] == 20 and child.data.metrics["decision.selected"] == 20
    arts = {a.path for a in MlflowClient().list_artifacts(res.mlflow_run_id)}
    assert {"selection_cut.png", "score_vs_length.png", "score_before_after.selectit_score.png",
            "length_before_after.png", "category_mix.png", "selection.json"} <= arts
    # another run dir: the embeddings come from the cache; the same run dir: the stage is skipped
    again = select_stage(cfg, scored, tmp_path / "run2")
    assert again.metrics["embedded_new"] == 0 and not again.skipped
    assert pd.read_parquet(Path(again.dir) / "selected.parquet")["id"].tolist() == selected["id"].tolist()
    assert select_stage(cfg, scored, tmp_path / "run").skipped


def test_stage_baselines_without_tracking(tmp_path: Path) -> None:
    from selectune.select_stage import select_stage

    scored = str(scored_demo(tmp_path))
    full = select_stage(SelectionConfig(strategy="full"), scored, tmp_path / "full")
    assert full.metrics["records_out"] == 150 and "embedded_new" not in full.metrics
    rnd = select_stage(SelectionConfig(strategy="random", fraction=0.1, seed=1), scored, tmp_path / "random")
    assert rnd.metrics["records_out"] == 15 and rnd.metrics["decision.below_cut"] == 135
    assert "auroc.random_key" not in rnd.metrics


def test_category_mix_and_before_after_plots() -> None:
    from selectune.core.plots import before_after_histogram, category_mix

    fig = category_mix(["a", "a", "b", None], ["a"], "mix")
    bars = fig.axes[0].patches
    assert [round(b.get_width(), 3) for b in bars] == [0.25, 0.5, 0.25, 0.0, 1.0, 0.0]  # (none), a, b
    fig = before_after_histogram([1.0, 2.0, 3.0, np.nan], [3.0], "scores")
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "all (3)"


@pytest.mark.slow
def test_minilm_diversity_drops_a_paraphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selectune.embed import embed_records

    monkeypatch.setenv("SELECTUNE_HOME", str(tmp_path))
    rows = [("What is the capital of France?", "", "The capital of France is Paris."),
            ("Which city is the capital of France?", "", "Paris is the capital city of France."),
            ("Write a python function that adds two numbers.", "", "def add(a, b):\n    return a + b")]
    df = pd.DataFrame(rows, columns=["instruction", "input", "output"])
    df.insert(0, "id", ["a", "b", "c"])
    df["selectit_score"] = [3.0, 2.0, 1.0]
    emb = embed_records(df, "minilm-l6")
    cos = emb.vectors @ emb.vectors.T
    assert emb.vectors.shape == (3, 384) and cos[0, 1] > 0.85 > 0.3 > cos[0, 2]
    assert picked(df, emb.vectors, strategy="full", diversity_threshold=0.85) == ["a", "c"]
    assert embed_records(df, "minilm-l6").n_new == 0
