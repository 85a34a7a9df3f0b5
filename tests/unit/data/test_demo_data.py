"""Tests for the bundled demo dataset selectune/data/demo/demo.json."""

from __future__ import annotations

import pandas as pd
import pytest

from selectune.data.records import LoadResult, load_records
from tests.fixtures import DEMO

CATEGORIES = {"facts", "how-to", "rewriting", "math", "code", "classification"}
DEFECTS = {"wrong_answer", "truncated", "off_topic", "instruction_ignored", "near_empty"}


@pytest.fixture(scope="module")
def demo() -> LoadResult:
    return load_records(DEMO)


@pytest.fixture(scope="module")
def df(demo: LoadResult) -> pd.DataFrame:
    return demo.records


def test_loads_cleanly(demo: LoadResult) -> None:
    assert demo.fmt == "alpaca-json"
    assert demo.rejected == []
    assert demo.duplicates.empty
    assert demo.rows_read == len(demo.records)
    assert 140 <= len(demo.records) <= 160
    assert demo.records["id"].is_unique


def test_label_columns_preserved(df: pd.DataFrame) -> None:
    assert {"id", "instruction", "input", "output", "label", "defect", "category"} <= set(df.columns)
    for col in ("label", "defect", "category"):
        assert df[col].map(type).eq(str).all(), col


def test_labels_good_and_poor(df: pd.DataFrame) -> None:
    assert set(df["label"]) == {"good", "poor"}
    assert 0.15 <= (df["label"] == "poor").mean() <= 0.25


def test_every_category_present(df: pd.DataFrame) -> None:
    assert set(df["category"]) == CATEGORIES
    poor_by_category = df[df["label"] == "poor"].groupby("category").size()
    assert set(poor_by_category.index) == CATEGORIES  # each category has poor examples to rank


def test_defects_match_labels(df: pd.DataFrame) -> None:
    poor, good = df[df["label"] == "poor"], df[df["label"] == "good"]
    assert poor["defect"].str.strip().ne("").all()
    assert set(poor["defect"]) <= DEFECTS
    assert good["defect"].eq("").all()


def test_text_fields_non_empty(df: pd.DataFrame) -> None:
    for col in ("instruction", "output"):
        assert df[col].str.strip().ne("").all(), col
