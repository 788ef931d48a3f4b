"""Paired-difference statistics for ablation tables: pure functions on arrays of numbers.

Each function takes the differences ``d_i = configuration_i - baseline_i`` of n pairs (runs
with the same seed) or the p-values of a table's rows.

- ``t_interval``: mean(d) ± t_{1-(1-c)/2, n-1} · sd(d) / √n (``sd`` with ``ddof=1``).
- ``paired_t_p_value``: two-sided p of the paired t-test (``scipy.stats.ttest_rel``).
- ``sign_flip_p_value``: two-sided permutation p: under "no effect" each d_i is as likely to have
  the other sign, so p is the share of the 2^n sign patterns s with |Σ s_i d_i| >= |Σ d_i|
  (the observed pattern included, so p >= 2 / 2^n). Exact for n <= ``EXACT_SIGN_FLIP_PAIRS``;
  beyond, a Monte Carlo estimate (1 + hits) / (1 + draws) with a fixed seed.
- ``holm``: Holm's step-down adjustment (family-wise error across the rows of a table).
- ``minimum_detectable_effect``: the smallest true mean difference δ that a two-sided paired
  t-test at level α finds with probability ``power``, for n pairs whose differences have
  standard deviation σ: the δ solving
  P(|T| > t_{1-α/2, n-1}) = power, where T follows the noncentral t distribution with n-1
  degrees of freedom and noncentrality δ√n/σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

EXACT_SIGN_FLIP_PAIRS = 20
MONTE_CARLO_DRAWS = 200_000
MONTE_CARLO_SEED = 0
PATTERNS_PER_CHUNK = 1 << 16


def t_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean difference; needs at least two pairs."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        raise ValueError(f"a t-interval needs at least 2 pairs, got {len(d)}")
    half = stats.t.ppf(1 - (1 - confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def paired_t_p_value(differences: Sequence[float]) -> float:
    """Two-sided p of the paired t-test; differences all equal give 1 (zero) or 0 (not zero)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {len(d)}")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Two-sided sign-flip permutation p-value of the mean difference (see the module)."""
    d = np.asarray(differences, dtype=np.float64)
    observed = abs(d.sum())
    # Sums equal to the observed one up to rounding count as "as extreme".
    tolerance = 1e-9 * np.abs(d).sum()
    n = len(d)
    if n <= EXACT_SIGN_FLIP_PAIRS:
        hits = 0
        bits = 1 << np.arange(n)
        for start in range(0, 1 << n, PATTERNS_PER_CHUNK):
            patterns = np.arange(start, min(start + PATTERNS_PER_CHUNK, 1 << n))
            signs = np.where(patterns[:, None] & bits, -1.0, 1.0)
            hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tolerance))
        return hits / (1 << n)
    rng = np.random.default_rng(MONTE_CARLO_SEED)
    hits = 0
    for start in range(0, MONTE_CARLO_DRAWS, PATTERNS_PER_CHUNK):
        draws = min(PATTERNS_PER_CHUNK, MONTE_CARLO_DRAWS - start)
        signs = rng.choice([-1.0, 1.0], size=(draws, n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tolerance))
    return (1 + hits) / (1 + MONTE_CARLO_DRAWS)


def holm_order(p_values: Sequence[float]) -> np.ndarray:
    """Row indices from the smallest p to the largest (ties in row order)."""
    return np.argsort(np.asarray(p_values, dtype=np.float64), kind="stable")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: the k-th smallest (k = 0, 1, ...) times m - k, made
    non-decreasing in that order, capped at 1. A row is rejected at level α iff its adjusted
    p <= α."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = holm_order(p)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """Each row's Holm test level: α / (m - k) for the row with the k-th smallest p."""
    m = len(p_values)
    levels = np.empty(m)
    levels[holm_order(p_values)] = alpha / (m - np.arange(m))
    return levels.tolist()


def power(effect: float, spread: float, n: int, alpha: float) -> float:
    """Probability that a two-sided paired t-test at level ``alpha`` rejects "no effect" for n
    pairs with true mean difference ``effect`` and standard deviation ``spread``."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect * math.sqrt(n) / spread
    # scipy's noncentral t gives NaN deep in the far tail, where the probability is ~0.
    far_tail = float(np.nan_to_num(stats.nct.cdf(-critical, df, shift)))
    return float(stats.nct.sf(critical, df, shift)) + far_tail


def minimum_detectable_effect(
    spread: float, n: int, alpha: float, target_power: float = 0.8
) -> float:
    """The δ > 0 with ``power(δ, spread, n, alpha) == target_power`` (see the module)."""
    if n < 2:
        raise ValueError(f"a minimum detectable effect needs at least 2 pairs, got {n}")
    if spread == 0:
        return 0.0
    upper = spread
    while power(upper, spread, n, alpha) < target_power:
        upper *= 2
    return float(
        optimize.brentq(lambda delta: power(delta, spread, n, alpha) - target_power, 0, upper)
    )
