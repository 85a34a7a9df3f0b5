"""The keep-if-better gate (pure function), against the official rule and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selectune.reflection.config import ReflectionConfig
from selectune.reflection.gate import VARIANTS, gate

CFG = ReflectionConfig()

OFFICIAL = ReflectionConfig(fidelity="official")


def official(s: dict[str, tuple[float, float]], ifd_max: float = 1.0, rifd_max: float = 1.0) -> tuple[str, bool]:
    """The rule of selection_code/get_select_data.py with every branch written (selectune mode): (branch, passes)."""
    if s["q"][0] > s["ori"][0]:
        v = "qa" if s["qa"][1] < s["q"][1] else "q"
    else:
        v = "a" if s["a"][1] < s["ori"][1] else "ori"
    return v, s[v][0] < ifd_max and s[v][1] < rifd_max


def released(s: dict[str, tuple[float, float]]) -> str | None:
    """selection_code/get_select_data.py as released, line by line: the pair it writes to new_data, or None (its
    ``new_data.append(data_i_Q)`` and ``new_data.append(data_i_ori)`` are commented out)."""
    if s["q"][0] > s["ori"][0]:
        if s["qa"][1] < s["q"][1]:
            if s["qa"][1] < 1 and s["qa"][0] < 1:
                return "qa"
    else:
        if s["a"][1] < s["ori"][1]:
            if s["a"][1] < 1 and s["a"][0] < 1:
                return "a"
    return None


@pytest.mark.parametrize("stats,variant,kept,phrase", [
    ({"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.1, 0.1), "qa": (0.8, 0.4)}, "qa", True,
     "IFD(q)=0.7 > IFD(ori)=0.5: reflected instruction kept; r-IFD(qa)=0.4 < r-IFD(q)=0.5: reflected answer kept"),
    ({"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.1, 0.1), "qa": (0.8, 0.5)}, "q", True,
     "r-IFD(qa)=0.5 >= r-IFD(q)=0.5: answer kept"),  # a tie keeps the unreflected answer
    ({"ori": (0.5, 0.6), "q": (0.5, 0.1), "a": (0.4, 0.3), "qa": (0.1, 0.1)}, "a", True,
     "IFD(q)=0.5 <= IFD(ori)=0.5: original instruction kept; r-IFD(a)=0.3 < r-IFD(ori)=0.6"),
    ({"ori": (0.5, 0.6), "q": (0.2, 0.1), "a": (0.4, 0.9), "qa": (0.1, 0.1)}, "ori", True,
     "r-IFD(a)=0.9 >= r-IFD(ori)=0.6: answer kept; IFD 0.5 < 1 and r-IFD 0.6 < 1: kept"),
    ({"ori": (1.0, 0.6), "q": (0.2, 0.1), "a": (0.4, 0.9), "qa": (0.1, 0.1)}, "ori", False,
     "IFD 1 >= ifd_max 1: dropped"),  # the threshold is strict
    ({"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.1, 0.1), "qa": (0.8, 1.3)}, "q", True, "answer kept"),
    ({"ori": (0.5, 0.6), "q": (0.7, 1.2), "a": (0.1, 0.1), "qa": (1.5, 1.1)}, "qa", False,
     "IFD 1.5 >= ifd_max 1, r-IFD 1.1 >= rifd_max 1: dropped"),
])
def test_gate_branches(stats: dict, variant: str, kept: bool, phrase: str) -> None:
    d = gate(stats, CFG)
    assert (d.variant, d.kept) == (variant, kept) == official(stats)
    assert phrase in d.reason


def test_gate_thresholds_and_keep_regardless() -> None:
    stats = {"ori": (0.5, 0.6), "q": (0.7, 1.2), "a": (0.1, 0.1), "qa": (1.5, 1.1)}
    d = gate(stats, ReflectionConfig(keep_regardless=True))
    assert (d.variant, d.kept) == ("qa", True) and d.reason.endswith("kept (keep_regardless)")
    assert gate(stats, ReflectionConfig(ifd_max=2.0, rifd_max=1.2)).kept
    assert not gate(stats, ReflectionConfig(ifd_max=2.0, rifd_max=1.1)).kept


def test_gate_matches_official_rule_on_random_stats() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        stats = {v: tuple(np.round(rng.uniform(0.2, 1.4, 2), 1)) for v in VARIANTS}  # rounding makes ties
        d = gate(stats, CFG)
        assert (d.variant, d.kept) == official(stats), stats


def test_gate_missing_variants() -> None:
    full = {"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.4, 0.3), "qa": (0.8, 0.4)}
    why = {"q": "instruction reflection: no [New Instruction] marker", "qa": "instruction reflection: no [New "
           "Instruction] marker"}
    d = gate({"ori": full["ori"], "a": full["a"]}, CFG, why)
    assert (d.variant, d.kept) == ("a", True)
    assert d.reason.startswith("q unavailable (instruction reflection: no [New Instruction] marker): original")
    d = gate({k: v for k, v in full.items() if k != "qa"}, CFG, {"qa": "response reflection of q: teacher error: "
                                                                    "HTTP 500"})
    assert (d.variant, d.kept) == ("q", True) and "qa unavailable (response reflection of q: teacher error" in d.reason
    d = gate({"ori": full["ori"]}, CFG, {"a": "response reflection: empty answer"})
    assert d.variant == "ori" and "a unavailable (response reflection: empty answer): answer kept" in d.reason
    d = gate({"q": full["q"], "qa": full["qa"]}, CFG)  # no student numbers for the original: nothing to judge by
    assert (d.variant, d.kept) == ("ori", False) and "no IFD/r-IFD for ori: dropped" in d.reason
    assert gate({"q": full["q"]}, ReflectionConfig(keep_regardless=True)).kept


def test_gate_reads_rows_and_treats_nan_as_missing() -> None:
    row = pd.Series({"ifd.ori": 0.5, "rifd.ori": 0.6, "ifd.q": 0.7, "rifd.q": 0.5, "ifd.a": 0.4, "rifd.a": 0.3,
                     "ifd.qa": math.nan, "rifd.qa": 0.1, "other": "x"})
    d = gate(row, CFG)
    assert (d.variant, d.kept) == ("q", True) and "qa unavailable" in d.reason
    assert gate(row.to_dict(), CFG) == d


@pytest.mark.parametrize("stats,variant,selectune_keeps", [
    ({"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.1, 0.1), "qa": (0.8, 0.4)}, "qa", True),
    ({"ori": (0.5, 0.6), "q": (0.7, 0.5), "a": (0.1, 0.1), "qa": (0.8, 0.5)}, "q", True),  # modes differ
    ({"ori": (0.5, 0.6), "q": (0.5, 0.1), "a": (0.4, 0.3), "qa": (0.1, 0.1)}, "a", True),
    ({"ori": (0.5, 0.6), "q": (0.2, 0.1), "a": (0.4, 0.9), "qa": (0.1, 0.1)}, "ori", True),  # modes differ
])
def test_official_mode_writes_only_qa_and_a_pairs(stats: dict, variant: str, selectune_keeps: bool) -> None:
    ours, theirs = gate(stats, CFG), gate(stats, OFFICIAL)
    assert (ours.variant, ours.kept) == (variant, selectune_keeps)
    assert (theirs.variant, theirs.kept) == (variant, variant in ("qa", "a"))
    if variant in ("q", "ori"):
        assert theirs.reason.endswith("dropped (the official selection script writes only qa and a pairs)")


def test_official_mode_matches_the_released_script_on_random_stats() -> None:
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(500):
        stats = {v: tuple(np.round(rng.uniform(0.2, 1.4, 2), 1)) for v in VARIANTS}
        d = gate(stats, OFFICIAL)
        assert (d.variant if d.kept else None) == released(stats), stats
        differ += gate(stats, CFG).kept != d.kept
    assert differ > 50  # the two modes really differ
