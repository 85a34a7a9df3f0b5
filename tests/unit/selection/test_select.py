"""select_records: budgets, ranking and ties, strategies (top, combined, random, full), length bounds, quotas,
every decision with its reason."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from selectune.selection.config import SelectionConfig
from selectune.selection.select import SelectionResult, select_records
from tests.unit.selection.helpers import TEN, frame, picked, reasons


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

# --------------------------------------------------------------------------- budgets, ranking, ties (one score)


def frame10(scores: list[float], ids: list[str] | None = None, col: str = "selectit_score") -> pd.DataFrame:
    """Records r00, r01, ... with the given scores and some payload text (TEN's best two: r07 9.5, r02 8.0)."""
    ids = ids if ids is not None else [f"r{i:02d}" for i in range(len(scores))]
    return pd.DataFrame({"id": ids, "instruction": [f"do {i}" for i in ids], col: scores})


def select(df: pd.DataFrame, by: str = "selectit_score", *, fraction: float | None = None, k: int | None = None,
           threshold: float | None = None) -> SelectionResult:
    """Strategy ``top`` by one column with one budget (fraction 0.2 when none is given)."""
    budget = {"top_k": k} if k is not None else {"threshold": threshold} if threshold is not None else {
        "fraction": 0.2 if fraction is None else fraction}
    return select_records(df, SelectionConfig(by=by, **budget))


def test_fraction_point_two_of_ten_picks_the_two_best() -> None:
    res = select(frame10(TEN), fraction=0.2)
    assert isinstance(res, SelectionResult)
    assert res.selected["id"].tolist() == ["r07", "r02"]
    assert res.cut_value == 8.0
    assert res.table["selected"].sum() == 2


def test_default_is_fraction_point_two() -> None:
    assert select(frame10(TEN)).selected["id"].tolist() == ["r07", "r02"]


def test_table_has_all_rows_ranked_with_reasons() -> None:
    df = frame10(TEN)
    res = select(df, fraction=0.2)
    t = res.table
    assert len(t) == 10 and set(t["id"]) == set(df["id"])
    assert t["rank"].tolist() == list(range(1, 11))
    # rank order = score descending: 9.5, 8, 7, 6, 5, 4, 3, 2, 1, 0.5
    assert t["id"].tolist() == ["r07", "r02", "r09", "r08", "r05", "r04", "r03", "r01", "r00", "r06"]
    assert t["selected"].dtype == bool
    assert t["decision_reason"].tolist()[:3] == [
        "top 20% (rank 1 <= 2)",
        "top 20% (rank 2 <= 2)",
        "below cut (rank 3 > 2)",
    ]
    assert t["instruction"].tolist()[0] == "do r07"  # payload columns travel with their row
    assert "rank" not in df.columns  # input untouched


def test_fraction_floor_and_minimum_one() -> None:
    assert len(select(frame10(TEN), fraction=0.35).selected) == 3  # floor(3.5)
    assert len(select(frame10(TEN), fraction=0.01).selected) == 1  # floor(0.1) = 0 -> at least 1
    assert len(select(frame10(TEN), fraction=1.0).selected) == 10
    # 100 * 0.29 == 28.999999999999996 in floats; must still give 29
    assert len(select(frame10([float(i) for i in range(100)]), fraction=0.29).selected) == 29


def test_k_selects_top_k() -> None:
    res = select(frame10(TEN), k=3)
    assert res.selected["id"].tolist() == ["r07", "r02", "r09"]
    assert res.cut_value == 7.0
    assert res.table["decision_reason"].iloc[2] == "top 3 (rank 3 <= 3)"
    assert res.table["decision_reason"].iloc[3] == "below cut (rank 4 > 3)"


def test_k_larger_than_n_selects_all_and_k_zero_selects_none() -> None:
    res = select(frame10(TEN), k=50)
    assert res.table["selected"].all() and len(res.selected) == 10
    assert res.cut_value == 0.5


def test_threshold_is_inclusive() -> None:
    res = select(frame10(TEN), threshold=7.0)
    assert res.selected["id"].tolist() == ["r07", "r02", "r09"]  # 9.5, 8.0, 7.0 (>= 7)
    assert res.cut_value == 7.0
    reasons = dict(zip(res.table["id"], res.table["decision_reason"], strict=True))
    assert reasons["r09"] == "score 7 >= threshold 7"
    assert reasons["r08"] == "score 6 < threshold 7"
    assert select(frame10([3.1, 2.9]), threshold=3.0).table["decision_reason"].tolist() == [
        "score 3.1 >= threshold 3",
        "score 2.9 < threshold 3",
    ]


def test_threshold_above_everything_keeps_cut() -> None:
    res = select(frame10(TEN), threshold=100)
    assert res.selected.empty and res.cut_value == 100.0


def test_ties_broken_by_id_ascending() -> None:
    # Three records tie at 5.0 for the last two places of k=3; "a" wins the top spot alone.
    df = frame10([5.0, 5.0, 9.0, 5.0, 1.0], ids=["zeta", "beta", "a", "alpha", "omega"])
    res = select(df, k=3)
    assert res.selected["id"].tolist() == ["a", "alpha", "beta"]  # "zeta" loses the tie
    assert res.table["id"].tolist() == ["a", "alpha", "beta", "zeta", "omega"]
    assert res.cut_value == 5.0


def test_ties_at_fraction_cut() -> None:
    df = frame10([2.0] * 10, ids=[f"id{c}" for c in "jihgfedcba"])
    assert select(df, fraction=0.2).selected["id"].tolist() == ["ida", "idb"]


def test_shuffle_invariance() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties
    scores[[3, 17]] = np.nan
    df = frame10(list(scores))
    ref = select(df, fraction=0.25)
    for seed in range(5):
        shuffled = df.sample(frac=1.0, random_state=seed)
        assert not shuffled["id"].equals(df["id"])
        res = select(shuffled, fraction=0.25)
        pd.testing.assert_frame_equal(res.table, ref.table)
        pd.testing.assert_frame_equal(res.selected, ref.selected)
        assert res.cut_value == ref.cut_value


def test_nan_scores_ranked_last_never_selected() -> None:
    df = frame10([float("nan"), 1.0, float("nan"), 3.0, 2.0], ids=["n2", "b", "n1", "a", "c"])
    res = select(df, k=10)
    t = res.table
    assert t["id"].tolist() == ["a", "c", "b", "n1", "n2"]  # NaNs last, by id among themselves
    assert t["selected"].tolist() == [True, True, True, False, False]
    assert t["decision_reason"].tolist()[3:] == ["score missing", "score missing"]
    assert res.cut_value == 1.0
    th = select(df, threshold=-1e9)
    assert th.selected["id"].tolist() == ["a", "c", "b"]
    assert th.table["decision_reason"].tolist()[3:] == ["score missing", "score missing"]


def test_fraction_counts_scored_records_only() -> None:
    # 10 records, 5 missing: 40% of the 5 scored ones = 2
    res = select(frame10([1.0, 2.0, 3.0, 4.0, 5.0] + [math.nan] * 5), fraction=0.4)
    assert res.selected["selectit_score"].tolist() == [5.0, 4.0]


def test_all_missing_and_empty() -> None:
    res = select(frame10([math.nan, math.nan]), fraction=0.5)
    assert res.selected.empty and res.cut_value is None
    assert res.table["decision_reason"].tolist() == ["score missing", "score missing"]
    empty = select(frame10([]).astype({"selectit_score": float}))
    assert empty.table.empty and empty.selected.empty and empty.cut_value is None
    assert {"rank", "selected", "decision_reason"} <= set(empty.table.columns)


def test_other_score_column_and_nullable_ints() -> None:
    df = frame10([1, None, 3], col="other").astype({"other": "Int64"})
    res = select(df, "other", k=1)
    assert res.selected["id"].tolist() == ["r02"]
    assert res.table["decision_reason"].tolist()[-1] == "score missing"


def test_rerunning_on_a_result_table_replaces_columns() -> None:
    first = select(frame10(TEN), k=2).table
    again = select(first, k=5)
    assert again.table["selected"].sum() == 5
    assert list(again.table.columns).count("rank") == 1


def test_duplicate_index_is_fine() -> None:
    df = frame10([1.0, 2.0, 3.0])
    df.index = [0, 0, 0]
    assert select(df, k=1).selected["id"].tolist() == ["r02"]


@pytest.mark.parametrize(
    "kwargs",
    [{"fraction": 0.0}, {"fraction": 1.5}, {"fraction": -0.1}, {"fraction": float("nan")}, {"k": -1}, {"k": 0},
     {"k": 2.5}],
)
def test_budget_errors(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="top_k|fraction"):  # pydantic's ValidationError is a ValueError
        select(frame10(TEN), **kwargs)


def test_nan_threshold_is_an_error() -> None:
    with pytest.raises(ValueError, match="threshold must be a number"):
        select(frame10(TEN), threshold=float("nan"))


def test_top_k_overrides_fraction_and_threshold() -> None:
    assert SelectionConfig(top_k=3, fraction=0.5).criteria() == {"k": 3}
    assert SelectionConfig(top_k=3, threshold=1.0).criteria() == {"k": 3}
    assert SelectionConfig(threshold=1.0, fraction=0.5).criteria() == {"threshold": 1.0}


def test_missing_column_names_available_columns() -> None:
    with pytest.raises(ValueError, match=r"'nope' not found; available columns: \['id', 'instruction', "):
        select(frame10(TEN), "nope")


def test_missing_id_column() -> None:
    with pytest.raises(ValueError, match="'id' column"):
        select(frame10(TEN).drop(columns="id"))


def test_non_numeric_column() -> None:
    with pytest.raises(ValueError, match="'instruction' must be numeric"):
        select(frame10(TEN), "instruction")
    df = frame10(TEN).assign(flag=True)
    with pytest.raises(ValueError, match="'flag' must be numeric, got dtype bool"):
        select(df, "flag")


def test_duplicate_ids() -> None:
    df = frame10([1.0, 2.0, 3.0], ids=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"1 duplicate id\(s\) in 'id', e.g. \['a'\]"):
        select(df)


def test_missing_ids() -> None:
    df = frame10([1.0, 2.0], ids=["a", None])
    with pytest.raises(ValueError, match=r"1 record\(s\) have a missing 'id'"):
        select(df)


def test_score_below_drops_high_scores_before_the_budget_is_filled() -> None:
    df = frame([0.5, 1.2, 0.9, 0.7, 1.0, 0.95, 0.3, 0.8, 0.6, 0.4])  # IFD-like: >= 1 means the prompt does not help
    res = select_records(df, SelectionConfig(by="selectit_score", fraction=0.3, score_below=1.0))
    assert res.selected["id"].tolist() == ["r5", "r2", "r7"]  # 0.95, 0.9, 0.8: budget floor(0.3 * 10) = 3
    r = dict(zip(res.table["id"], res.table["decision_reason"], strict=True))
    assert r["r1"] == "score 1.2 >= score_below 1" and r["r4"] == "score 1 >= score_below 1"
    assert set(res.table.loc[res.table["decision"] == "score_too_high", "id"]) == {"r1", "r4"}
