"""Small record tables and shortcuts shared by the selection tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from selectune.selection.config import SelectionConfig
from selectune.selection.select import select_records


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
