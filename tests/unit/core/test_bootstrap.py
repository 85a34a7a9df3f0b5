"""Paired bootstrap intervals: a hand-computed case, degenerate cases, and coverage on a known distribution."""

from __future__ import annotations

import numpy as np
import pytest

from selectune.core.bootstrap import bootstrap_mean, paired_difference


def test_two_items_by_hand() -> None:
    """With items d = (1, 3) a resample is (1,1), (3,3) or one of each: means 1, 3, 2 with probabilities 1/4, 1/4,
    1/2. The 2.5% quantile is 1 and the 97.5% quantile is 3; the estimate is 2."""
    ci = paired_difference(np.array([1.5, 3.5]), np.array([0.5, 0.5]), resamples=20000, seed=1)
    assert ci.estimate == 2.0 and ci.low == 1.0 and ci.high == 3.0 and ci.n == 2
    draws = np.random.default_rng(1).integers(0, 2, size=(20000, 2)).mean(axis=1)
    assert abs(np.mean(draws == 0.5) - 0.5) < 0.02  # the resample distribution the interval comes from


def test_weighted_mean_is_token_weighted() -> None:
    # item losses 1.0 over 1 token and 4.0 over 3 tokens: token-weighted mean (1 + 12) / 4 = 3.25
    ci = bootstrap_mean(np.array([1.0, 4.0]), np.array([1.0, 3.0]), resamples=500)
    assert ci.estimate == pytest.approx(3.25)
    assert 1.0 <= ci.low <= ci.estimate <= ci.high <= 4.0


def test_constant_differences_have_a_point_interval_and_nan_items_are_dropped() -> None:
    a = np.array([2.0, 3.0, np.nan, 5.0])
    ci = paired_difference(a, a - 0.25)
    assert ci.estimate == pytest.approx(0.25) and ci.low == pytest.approx(0.25) and ci.high == pytest.approx(0.25)
    assert ci.n == 3
    empty = bootstrap_mean(np.array([np.nan]))
    assert empty.n == 0 and np.isnan(empty.estimate)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(np.ones(3), np.ones(4))


def test_coverage_on_a_known_distribution() -> None:
    """Paired normal data with a true mean difference of 0.3: about 95% of the intervals contain it, and a true
    difference of 0 is excluded about 5% of the time."""
    rng = np.random.default_rng(7)
    hits, false_alarms, sims = 0, 0, 300
    for s in range(sims):
        base = rng.normal(2.0, 1.0, size=60)  # item difficulty, shared by both models
        a = base + 0.3 + rng.normal(0, 0.5, size=60)
        ci = paired_difference(a, base, resamples=1000, seed=s)
        hits += ci.low <= 0.3 <= ci.high
        null = paired_difference(base + rng.normal(0, 0.5, size=60), base, resamples=1000, seed=s)
        false_alarms += not (null.low <= 0.0 <= null.high)
    assert 0.90 <= hits / sims <= 0.985
    assert false_alarms / sims <= 0.10


def test_grid_bootstrap_over_seeds_and_items() -> None:
    from selectune.core.bootstrap import grid_bootstrap

    values = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, np.nan]])  # seed 0: mean 2; seed 1: mean 3.5 (item 3 failed)
    ci = grid_bootstrap(values, resamples=2000)
    assert ci.estimate == pytest.approx((2.0 + 3.5) / 2) and ci.n == 3
    assert 1.0 <= ci.low < ci.estimate < ci.high <= 4.0
    one_seed = grid_bootstrap(values[:1], resamples=2000, seed=3)
    plain = bootstrap_mean(values[0], resamples=2000, seed=3)
    assert one_seed.estimate == plain.estimate and abs(one_seed.low - plain.low) < 0.2
    with pytest.raises(ValueError, match="seeds, items"):
        grid_bootstrap(np.ones(3))
