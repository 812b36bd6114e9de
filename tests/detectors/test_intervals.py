"""Intervals against statsmodels, against published worked examples, and by simulated coverage."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from detectors.intervals import (
    newcombe_difference_interval,
    normal_interval,
    ratio_interval_log,
    t_interval,
    wilson_interval,
    z_value,
)

GRID = [(0, 1), (0, 20), (1, 29), (3, 10), (15, 148), (81, 263), (50, 50), (999, 1000), (7, 7)]


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_statsmodels(confidence):
    x = np.array([g[0] for g in GRID])
    n = np.array([g[1] for g in GRID])
    low, high = wilson_interval(x, n, confidence)
    ref_low, ref_high = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    np.testing.assert_allclose(low, ref_low, atol=1e-12)
    np.testing.assert_allclose(high, ref_high, atol=1e-12)


# Newcombe RG (1998a), "Two-sided confidence intervals for the single proportion:
# comparison of seven methods", Stat Med 17:857-872, Table I, method 3 (score, no CC).
@pytest.mark.parametrize(
    "x,n,low,high",
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_published_examples(x, n, low, high):
    lo, hi = wilson_interval(x, n)
    assert round(float(lo), 4) == low and round(float(hi), 4) == high


def test_newcombe_matches_statsmodels():
    rng = np.random.default_rng(3)
    n1 = rng.integers(1, 300, 200)
    n2 = rng.integers(1, 300, 200)
    x1 = rng.integers(0, n1 + 1)
    x2 = rng.integers(0, n2 + 1)
    for conf in (0.9, 0.95):
        low, high = newcombe_difference_interval(x1, n1, x2, n2, conf)
        ref_low, ref_high = confint_proportions_2indep(
            x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - conf
        )
        np.testing.assert_allclose(low, ref_low, atol=1e-12)
        np.testing.assert_allclose(high, ref_high, atol=1e-12)


# Newcombe RG (1998b), "Interval estimation for the difference between independent
# proportions: comparison of eleven methods", Stat Med 17:873-890, Table II, method 10.
@pytest.mark.parametrize(
    "x1,n1,x2,n2,low,high",
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
    ],
)
def test_newcombe_published_examples(x1, n1, x2, n2, low, high):
    lo, hi = newcombe_difference_interval(x1, n1, x2, n2)
    assert round(float(lo), 4) == low and round(float(hi), 4) == high


def test_ratio_log_matches_statsmodels():
    rng = np.random.default_rng(4)
    n1 = rng.integers(5, 300, 100)
    n2 = rng.integers(5, 300, 100)
    x1 = rng.integers(1, n1 + 1)
    x2 = rng.integers(1, n2 + 1)
    low, high = ratio_interval_log(x1, n1, x2, n2)
    ref_low, ref_high = confint_proportions_2indep(x1, n1, x2, n2, method="log", compare="ratio")
    np.testing.assert_allclose(low, ref_low, rtol=1e-12)
    np.testing.assert_allclose(high, ref_high, rtol=1e-12)
    # A zero count switches that pair (only) to the +0.5 "log-adjusted" interval.
    low, high = ratio_interval_log([0, 4], [40, 40], [7, 0], [50, 50])
    for i, (a, b, c, d) in enumerate([(0, 40, 7, 50), (4, 40, 0, 50)]):
        ref = confint_proportions_2indep(a, b, c, d, method="log-adjusted", compare="ratio")
        np.testing.assert_allclose([low[i], high[i]], ref, rtol=1e-12)


def test_t_and_normal_intervals():
    low, high = t_interval(2.0, 3.0, 10, 0.9)
    ref = stats.t.interval(0.9, 9, loc=2.0, scale=3.0 / np.sqrt(10))
    np.testing.assert_allclose([low, high], ref, rtol=1e-12)
    assert np.all(np.isnan(t_interval(1.0, 1.0, 1)))
    low, high = normal_interval(1.0, 0.5)
    np.testing.assert_allclose(
        [low, high], [1 - 0.5 * 1.959963984540054, 1 + 0.5 * 1.959963984540054]
    )
    assert z_value(0.95) == pytest.approx(1.959963984540054)


def test_empty_and_invalid_inputs():
    assert np.all(np.isnan(wilson_interval(0, 0)))
    assert np.all(np.isnan(newcombe_difference_interval(0, 0, 3, 10)))
    assert np.all(np.isnan(ratio_interval_log(1, 10, 0, 0)))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 3, confidence=1.5)
    with pytest.raises(ValueError, match="standard_error"):
        normal_interval(0.0, -1.0)


# Coverage by simulation: 2000 seeded draws with n and p themselves drawn at random, so
# the binomial coverage oscillation at any one (n, p) averages out. The standard error
# of a coverage estimate over 2000 draws is ~0.005; the tolerance [0.93, 0.97] is 4 SE.
DRAWS = 2000


def test_wilson_coverage():
    rng = np.random.default_rng(10)
    n = rng.integers(20, 200, DRAWS)
    p = rng.uniform(0.05, 0.95, DRAWS)
    x = rng.binomial(n, p)
    low, high = wilson_interval(x, n)
    coverage = np.mean((low <= p) & (p <= high))
    assert 0.93 <= coverage <= 0.97, coverage


def test_newcombe_coverage():
    rng = np.random.default_rng(11)
    n1, n2 = rng.integers(20, 200, DRAWS), rng.integers(20, 200, DRAWS)
    p1, p2 = rng.uniform(0.05, 0.95, DRAWS), rng.uniform(0.05, 0.95, DRAWS)
    low, high = newcombe_difference_interval(rng.binomial(n1, p1), n1, rng.binomial(n2, p2), n2)
    coverage = np.mean((low <= p1 - p2) & (p1 - p2 <= high))
    assert 0.93 <= coverage <= 0.97, coverage


def test_ratio_log_coverage():
    rng = np.random.default_rng(12)
    n1, n2 = rng.integers(50, 300, DRAWS), rng.integers(50, 300, DRAWS)
    p1, p2 = rng.uniform(0.1, 0.9, DRAWS), rng.uniform(0.1, 0.9, DRAWS)
    low, high = ratio_interval_log(rng.binomial(n1, p1), n1, rng.binomial(n2, p2), n2)
    coverage = np.mean((low <= p1 / p2) & (p1 / p2 <= high))
    assert 0.93 <= coverage <= 0.97, coverage
