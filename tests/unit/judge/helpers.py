"""Shared by the judge tests."""

from __future__ import annotations

import pandas as pd


def pairs_of(records: pd.DataFrame) -> pd.DataFrame:
    rev = records["output"].iloc[::-1].tolist()
    return pd.DataFrame({"instruction": records["instruction"], "input": records["input"], "response": rev,
                         "reference": records["output"]})
