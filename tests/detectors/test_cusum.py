"""Tabular CUSUM against a plain-Python reference of the textbook chart and hand-worked cases."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from detectors.cusum import CUSUM


def reference_cusum(x, target=None, sigma=None, k=0.5, h=5.0, warm_start=30, mode="both"):
    """Straightforward tabular CUSUM (Montgomery 9.1), restarting after each signal."""
    alarms = []
    t = 0
    n = len(x)
    while t < n:
        mu0, sd = target, sigma
        if mu0 is None or sd is None:
            warm = list(x[t : t + warm_start])
            t += len(warm)
            if len(warm) < warm_start:
                break
            if mu0 is None:
                mu0 = statistics.fmean(warm)
            if sd is None:
                sd = statistics.stdev(warm)
        hi = lo = 0.0
        signalled = False
        while t < n:
            xi = x[t]
            hi = max(0.0, xi - (mu0 + k * sd) + hi)
            lo = max(0.0, (mu0 - k * sd) - xi + lo)
            up, down = hi > h * sd, lo > h * sd
            hit = {"up": up, "down": down, "both": up or down}[mode]
            t += 1
            if hit:
                alarms.append(t - 1)
                signalled = True
                break
        if not signalled:
            break
    return alarms


def shifts(seed, means=(0.0, 1.0, 1.0, -0.5, 2.0, 0.0), seg=1500):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(m, 1.0, seg) for m in means])


@pytest.mark.parametrize("mode", ["up", "down", "both"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_parameters_equal_reference(seed, mode):
    x = shifts(seed)
    params = {"target": 0.0, "sigma": 1.0, "k": 0.5, "h": 5.0, "mode": mode}
    expected = reference_cusum(x.tolist(), **params)
    assert len(expected) >= 3
    assert CUSUM(**params).update_many(x).tolist() == expected


@pytest.mark.parametrize(
    "params", [{}, {"target": 0.0}, {"sigma": 1.0}, {"k": 1.0, "h": 4.0, "warm_start": 100}]
)
@pytest.mark.parametrize("seed", [3, 4])
def test_estimated_parameters_equal_reference(seed, params):
    x = shifts(seed)
    expected = reference_cusum(x.tolist(), **params)
    assert len(expected) >= 2
    assert CUSUM(**params).update_many(x).tolist() == expected


def test_known_answer_upper_sum():
    # mu0 = 0, sigma = 1, K = 0.5, H = 2: each 1.0 adds 0.5 to C+ -> 0.5, 1.0, 1.5, 2.0,
    # 2.5 > 2 at the fifth one (index 2 + 4 = 6).
    x = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    det = CUSUM(target=0.0, sigma=1.0, k=0.5, h=2.0)
    got = []
    for t, v in enumerate(x):
        if det.update(v):
            got.append(t)
        if t == 5:
            assert det.upper_sum == 2.0 and det.lower_sum == 0.0
    assert got == [6]


def test_known_answer_lower_sum_and_restart():
    # Values of -2: C- grows by 1.5 per value -> 1.5, 3.0, 4.5 > 4 at index 2; the
    # detector restarts on index 3 and signals again three values later.
    x = np.full(9, -2.0)
    det = CUSUM(target=0.0, sigma=1.0, k=0.5, h=4.0)
    assert det.update_many(x).tolist() == [2, 5, 8]
    assert CUSUM(target=0.0, sigma=1.0, k=0.5, h=4.0, mode="up").update_many(x).size == 0


def test_known_answer_warm_up_estimate():
    # Warm-up 1, 3, 1, 3 -> mean 2, sd = sqrt(4/3); then 2 + 4 sd alarms on the first value
    # with h = 3 (C+ = 4 sd - 0.5 sd = 3.5 sd > 3 sd).
    det = CUSUM(warm_start=4, k=0.5, h=3.0)
    assert det.update_many([1.0, 3.0, 1.0, 3.0]).size == 0
    assert det.mean == 2.0 and det.std == pytest.approx((4 / 3) ** 0.5, rel=1e-15)
    assert det.update(2.0 + 4 * det.std)
    # after the alarm the estimates are taken afresh
    det.update(5.0)
    assert det.mean is None and det.std is None


def test_zero_warm_up_spread_alarms_on_any_deviation():
    det = CUSUM(warm_start=5)
    assert det.update_many(np.r_[np.zeros(5), 0.0, 0.0, 1.0]).tolist() == [7]
