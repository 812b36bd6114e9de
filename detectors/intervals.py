"""Confidence intervals for proportions, their differences and ratios, and means.

These are the interval methods the performance and fairness modules attach to every
number they report. All functions are vectorised: counts may be scalars or numpy arrays
of one shape, and an interval is returned as ``(low, high)`` with that shape. An
undefined interval (no trials) is ``(nan, nan)``.

>>> low, high = wilson_interval(81, 263)
>>> round(float(low), 4), round(float(high), 4)
(0.2553, 0.3662)
>>> low, high = newcombe_difference_interval(56, 70, 48, 80)  # Newcombe (1998), Table II
>>> round(float(low), 4), round(float(high), 4)
(0.0524, 0.3339)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

__all__ = [
    "z_value",
    "wilson_interval",
    "newcombe_difference_interval",
    "ratio_interval_log",
    "normal_interval",
    "t_interval",
]


@lru_cache(maxsize=64)
def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard normal quantile for ``confidence`` (0.95 -> 1.95996...)."""
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    # scipy's ppf costs ~50 us a call; fairness evaluation asks for it many times a second.
    return _z(c)


def _z_of(confidence) -> float | np.ndarray:
    """``z_value`` of a scalar level, or elementwise of an array of levels (one call can
    then take intervals at several levels, e.g. Bonferroni levels per metric)."""
    if np.ndim(confidence) == 0:
        return z_value(confidence)
    levels = np.asarray(confidence, dtype=np.float64)
    return np.array([z_value(c) for c in levels.ravel()]).reshape(levels.shape)


def _counts(successes, trials, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(x < 0) or np.any(n < 0) or np.any(x > n):
        raise ValueError(
            f"{name}: successes must satisfy 0 <= successes <= trials, got {successes!r} of {trials!r}"
        )
    return x, n


def wilson_interval(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion ``successes / trials``.

    Unlike the Wald interval it stays inside [0, 1] and keeps close to nominal coverage
    for small samples and proportions near 0 or 1 (Brown, Cai & DasGupta 2001).
    ``confidence`` may be an array of levels, one per count.
    """
    x, n = _counts(successes, trials, "wilson_interval")
    z = _z_of(confidence)
    z2 = z * z
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = n + z2
        centre = (x + z2 / 2.0) / denom
        half = z / denom * np.sqrt(x * (n - x) / n + z2 / 4.0)
        low = np.clip(centre - half, 0.0, 1.0)
        high = np.clip(centre + half, 0.0, 1.0)
    # At x == 0 (x == n) the bound is exactly 0 (1); this removes rounding residue.
    low = np.where(n > 0, np.where(x == 0, 0.0, low), np.nan)
    high = np.where(n > 0, np.where(x == n, 1.0, high), np.nan)
    return low, high


def newcombe_difference_interval(
    successes1, trials1, successes2, trials2, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Interval for ``p1 - p2`` of two independent proportions (Newcombe 1998, method 10).

    The hybrid score interval combines the two Wilson intervals; it has near-nominal
    coverage where the Wald difference interval fails (small groups, rates near 0 or 1).
    """
    x1, n1 = _counts(successes1, trials1, "newcombe_difference_interval (group 1)")
    x2, n2 = _counts(successes2, trials2, "newcombe_difference_interval (group 2)")
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        p1 = x1 / n1
        p2 = x2 / n2
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return low, high


def ratio_interval_log(
    successes1, trials1, successes2, trials2, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Katz log-method interval for the ratio ``p1 / p2`` of two independent proportions.

    ``log(p1/p2) +- z * sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2)``. When either success count is
    zero the log is undefined, so for those pairs 0.5 is added to both success counts
    and both trial counts (the usual "log-adjusted" correction); pairs without a zero
    are left unadjusted. With no trials in either group the interval is ``(nan, nan)``.
    """
    x1, n1 = _counts(successes1, trials1, "ratio_interval_log (group 1)")
    x2, n2 = _counts(successes2, trials2, "ratio_interval_log (group 2)")
    z = z_value(confidence)
    adjust = np.where((x1 == 0) | (x2 == 0), 0.5, 0.0)
    a1, m1, a2, m2 = x1 + adjust, n1 + adjust, x2 + adjust, n2 + adjust
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.log(a1 / m1) - np.log(a2 / m2)
        se = np.sqrt(1.0 / a1 - 1.0 / m1 + 1.0 / a2 - 1.0 / m2)
        low = np.exp(log_ratio - z * se)
        high = np.exp(log_ratio + z * se)
    undefined = (n1 == 0) | (n2 == 0)
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def normal_interval(
    estimate, standard_error, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``estimate +- z * standard_error`` (delta-method and large-sample intervals)."""
    est = np.asarray(estimate, dtype=np.float64)
    se = np.asarray(standard_error, dtype=np.float64)
    if np.any(se < 0):
        raise ValueError(f"standard_error must be >= 0, got {standard_error!r}")
    z = z_value(confidence)
    return est - z * se, est + z * se


def t_interval(mean, std, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval for a mean from its sample standard deviation (ddof=1) and size.

    Needs ``n >= 2``; smaller samples give ``(nan, nan)``.
    """
    z_value(confidence)  # validates confidence
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    k = np.asarray(n, dtype=np.float64)
    if np.any(s < 0):
        raise ValueError(f"std must be >= 0, got {std!r}")
    ok = k >= 2
    df = np.where(ok, k - 1.0, 1.0)
    q = stats.t.ppf(0.5 + confidence / 2.0, df)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = q * s / np.sqrt(k)
    return np.where(ok, m - half, np.nan), np.where(ok, m + half, np.nan)
