"""The judge's correlations and coverage-vs-quality curve, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selectune.judge.metrics import correlations, coverage_curve


def test_coverage_curve_and_correlations_by_hand() -> None:
    cov, quality, auc = coverage_curve([0.1, 0.9, 0.5], [1.0, 3.0, 2.0])
    assert cov.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert quality.tolist() == pytest.approx([3.0, 2.5, 2.0]) and auc == pytest.approx(2.5)
    pearson, spearman = correlations([1, 2, 3, 4], [1, 4, 9, 16])
    assert pearson == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 4, 9, 16])[0, 1]) and spearman == pytest.approx(1.0)
    assert correlations([1, 1, 2], [3, 2, 1])[1] == pytest.approx(-math.sqrt(3) / 2)  # ranks (1.5,1.5,3) vs (3,2,1)
    assert all(math.isnan(v) for v in correlations([1, 1, 1], [1, 2, 3]))
