"""The report's paired statistics against scipy.stats, hand enumeration and hand-computed tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from yolor_lightning.report.statistics import (
    holm,
    holm_levels,
    minimum_detectable_effect,
    paired_t_p_value,
    power,
    sign_flip_p_value,
    t_interval,
)

# AP of six paired seeds: configuration and baseline.
RUN = np.array([0.361, 0.349, 0.355, 0.372, 0.344, 0.366])
BASE = np.array([0.340, 0.352, 0.347, 0.360, 0.338, 0.351])
DELTA = RUN - BASE


def test_t_interval_matches_scipy_t_ppf():
    low, high = t_interval(DELTA, 0.95)

    half = stats.t.ppf(0.975, df=5) * DELTA.std(ddof=1) / math.sqrt(6)
    assert (low, high) == pytest.approx((DELTA.mean() - half, DELTA.mean() + half), abs=1e-15)
    scipy_interval = stats.ttest_rel(RUN, BASE).confidence_interval(0.95)
    assert (low, high) == pytest.approx((scipy_interval.low, scipy_interval.high), abs=1e-12)


def test_t_interval_at_a_holm_level_is_wider():
    low, high = t_interval(DELTA, 1 - 0.05 / 4)

    scipy_interval = stats.ttest_rel(RUN, BASE).confidence_interval(1 - 0.05 / 4)
    assert (low, high) == pytest.approx((scipy_interval.low, scipy_interval.high), abs=1e-12)
    assert high - low > np.subtract(*reversed(t_interval(DELTA, 0.95)))


def test_paired_t_p_value_matches_scipy_ttest_rel():
    assert paired_t_p_value(DELTA) == pytest.approx(stats.ttest_rel(RUN, BASE).pvalue, rel=1e-12)
    assert paired_t_p_value([0.01, 0.01, 0.01]) == 0.0
    assert paired_t_p_value([0.0, 0.0]) == 1.0


def test_sign_flip_p_value_by_hand_on_three_pairs():
    # d = (1, 2, -4): |sum| = 1. The 8 sign patterns give sums
    # +1+2-4=-1, +1+2+4=7, +1-2-4=-5, +1-2+4=3, -1+2-4=-3, -1+2+4=5, -1-2-4=-7, -1-2+4=1:
    # |sum| >= 1 for all 8, so p = 1. For d = (1, 2, 4): |sum| = 7, reached by 2 of 8.
    assert sign_flip_p_value([1.0, 2.0, -4.0]) == 1.0
    assert sign_flip_p_value([1.0, 2.0, 4.0]) == 2 / 8
    # d = (3, 1, 1, 1): sums as extreme as 6: (+,+,+,+), (-,-,-,-), and those flipping one of the
    # ones give 4; so |sum| >= 6 only 2 of 16 -> 0.125; threshold 4 would add 6 more.
    assert sign_flip_p_value([3.0, 1.0, 1.0, 1.0]) == 2 / 16


def test_sign_flip_p_value_equals_brute_force_enumeration_on_real_deltas():
    observed = abs(DELTA.sum())
    sums = [abs(np.dot(signs, DELTA)) for signs in itertools.product((1, -1), repeat=6)]
    expected = sum(s >= observed - 1e-12 for s in sums) / 64

    assert sign_flip_p_value(DELTA) == expected
    assert sign_flip_p_value(DELTA) >= 2 / 64


def test_sign_flip_is_exact_at_sixteen_pairs_and_monte_carlo_beyond_twenty():
    rng = np.random.default_rng(3)
    sixteen = rng.normal(0.3, 1.0, 16)
    all_positive = np.abs(rng.normal(1.0, 0.1, 24))

    p = sign_flip_p_value(sixteen)

    assert p * 2**16 == round(p * 2**16)  # a count of patterns over all 65,536
    assert sign_flip_p_value(all_positive) == pytest.approx(1 / 200_001)  # only (1 + 0 hits)
    assert sign_flip_p_value(all_positive) == sign_flip_p_value(all_positive)  # fixed seed


def test_holm_matches_a_hand_computed_table():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06
    # to stay monotone). Rows are given out of order.
    p = [0.03, 0.01, 0.04, 0.02]

    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm_levels(p, 0.05) == pytest.approx([0.025, 0.0125, 0.05, 0.05 / 3])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2]


def test_minimum_detectable_effect_has_eighty_percent_power():
    spread = DELTA.std(ddof=1)

    mde = minimum_detectable_effect(spread, 6, 0.05)

    assert power(mde, spread, 6, 0.05) == pytest.approx(0.8, abs=1e-9)
    # The normal approximation (z_{0.975} + z_{0.8}) σ / √n is a lower bound at small n.
    assert mde > (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * spread / math.sqrt(6)
    assert minimum_detectable_effect(spread, 6, 0.0125) > mde
    assert minimum_detectable_effect(spread, 24, 0.05) < mde


def test_power_matches_a_monte_carlo_of_the_paired_t_test():
    rng = np.random.default_rng(0)
    samples = rng.normal(0.01, 0.008, size=(20_000, 6))
    p = stats.ttest_1samp(samples, 0.0, axis=1).pvalue

    assert power(0.01, 0.008, 6, 0.05) == pytest.approx(np.mean(p <= 0.05), abs=0.01)
