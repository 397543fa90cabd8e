"""Interval arithmetic against values worked out by hand or printed in textbooks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from emergence.analysis.intervals import cv_interval, median_interval, wilson_interval
from emergence.analysis.sweep import coefficient_of_variation


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),  # the score interval of 8/10
        (0, 10, 0.0, 0.2775),  # Newcombe (1998), Statistics in Medicine 17:857, table I: 0/10 -> 0 to 0.2775
        (1, 29, 0.0061, 0.1718),  # Newcombe (1998), table I: 1/29 -> 0.0061 to 0.1718
        (81, 263, 0.2553, 0.3662),  # Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got = wilson_interval(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_of_no_trials_is_none():
    assert wilson_interval(0, 0) is None


def exact_bootstrap_median_quantile(sorted_values: np.ndarray, q: float) -> float:
    """The q-quantile of the median of n draws with replacement from n distinct values, computed exactly: the
    median (n odd) is at most the j-th order statistic when at least (n + 1) / 2 draws fall at or below it, a
    binomial count with success probability j / n."""
    n = len(sorted_values)
    for j in range(1, n + 1):
        if binom.sf((n + 1) // 2 - 1, n, j / n) >= q:
            return float(sorted_values[j - 1])
    return float(sorted_values[-1])


def test_median_interval_is_the_exact_bootstrap_distributions_percentiles():
    values = np.array([3.0, 11.0, 20.0, 26.0, 40.0, 52.0, 61.0, 75.0, 90.0])  # nine replicates
    expected = (exact_bootstrap_median_quantile(values, 0.025), exact_bootstrap_median_quantile(values, 0.975 + 1e-12))
    assert median_interval(list(values)) == pytest.approx(expected)
    assert expected == (11.0, 75.0)  # worked by hand from the binomial tail: P(median <= x_(2)) = 0.0304 > 0.025, P(median <= x_(7)) = 0.9696 < 0.975


def test_median_interval_needs_two_replicates_and_agreeing_ones_give_a_point():
    assert median_interval([400.0]) is None
    assert median_interval([]) is None
    assert median_interval([150.0, 150.0, 150.0]) == (150.0, 150.0)


def test_cv_interval_resamples_each_size_on_its_own():
    # Sizes whose floors never vary: every resample has the same means, so the interval is the CV itself.
    fixed = [[2.0, 2.0], [3.0, 3.0]]
    assert cv_interval(fixed) == pytest.approx((0.2, 0.2))  # |2 - 3| / (2 + 3)
    assert coefficient_of_variation([2.0, 3.0]) == pytest.approx(0.2)
    spread = [[1.9, 2.0, 2.1], [2.0, 2.1, 2.2], [1.8, 2.0, 2.2]]
    low, high = cv_interval(spread)
    assert 0 <= low <= coefficient_of_variation([2.0, 2.1, 2.0]) <= high
    assert cv_interval([[2.0, 2.1]]) is None  # one size: no variation across sizes to estimate
    assert cv_interval([[2.0], [2.1, 2.2]]) is None  # a size of one run: its floor's spread is unknown
