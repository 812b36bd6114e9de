"""KSWIN: alarm positions equal river 0.26's on the same input and seed.

Also checks the two pieces that make that possible on their own: the kernel's draws
equal CPython's ``random.Random.sample``, and its integer KS distance and alarm
threshold agree with ``scipy.stats.ks_2samp``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from river import drift
from scipy import stats

from detectors import kswin
from detectors.kswin import KSWIN


def river_alarms(det, x: np.ndarray) -> list[int]:
    out = []
    for t, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(t)
    return out


def mean_shifts(seed: int, means=(0.0, 1.0, 0.3, 2.0, -1.0), seg=600):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(m, 1.0, seg) for m in means])


PARAMS = [
    {"seed": 42},
    {"alpha": 0.0001, "seed": 1},
    # a population above random.sample's pool threshold: the rejection strategy
    {"alpha": 0.01, "window_size": 400, "stat_size": 50, "seed": 7},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_alarms_equal_river_on_gaussian_mean_shifts(seed, params):
    x = mean_shifts(seed)
    expected = river_alarms(drift.KSWIN(**params), x)
    assert len(expected) >= 3  # several detections and the restarts after them
    assert KSWIN(**params).update_many(x).tolist() == expected


def test_alarms_equal_river_with_ties_and_an_initial_window():
    rng = np.random.default_rng(2)
    x = np.round(mean_shifts(2, seg=500), 1)  # many equal values
    params = {"seed": 3, "window_size": 60, "stat_size": 30, "window": list(rng.normal(size=80))}
    expected = river_alarms(drift.KSWIN(**params), x)
    assert len(expected) >= 3
    assert KSWIN(**params).update_many(x).tolist() == expected


def test_p_value_equals_rivers():
    x = mean_shifts(3, seg=300)
    ours, theirs = KSWIN(seed=5), drift.KSWIN(seed=5)
    assert ours.p_value is None
    checked = 0
    for v in x.tolist():
        theirs.update(v)
        ours.update(v)
        if ours.p_value is None:
            assert theirs.p_value == 0  # river's placeholder before a test has run
        else:
            assert ours.p_value == theirs.p_value
            checked += 1
    assert checked > 5


@pytest.mark.parametrize("seed", [0, 42, 12345, -7, 2**40 + 3])
@pytest.mark.parametrize("pop,k", [(70, 30), (970, 30), (5, 5), (300, 100), (1000, 1), (1, 1)])
def test_draws_equal_cpython_random_sample(seed, pop, k):
    rng = random.Random(seed)
    _, words, _ = rng.getstate()
    mt = np.array(words[:624], dtype=np.int64)
    mti = words[624]
    picks = np.empty(k, dtype=np.int64)
    pool = np.empty(pop, dtype=np.int64)
    selected = np.zeros(pop, dtype=np.bool_)
    setsize = kswin._sample_setsize(k)
    for _ in range(40):
        expected = rng.sample(range(pop), k)
        mti = kswin._sample(pop, k, setsize, mt, mti, picks, pool, selected)
        assert picks.tolist() == expected
    assert (*mt.tolist(), mti) == rng.getstate()[1]


# scipy falls back to its asymptotic p-value for D = 1/n and says so; that is expected.
@pytest.mark.filterwarnings("ignore:ks_2samp")
@pytest.mark.parametrize("size", [5, 30, 64])
def test_integer_distance_equals_scipy_statistic(size):
    rng = np.random.default_rng(size)
    for _ in range(200):
        older = np.round(rng.normal(size=size), 1)
        recent = np.round(rng.normal(0.5, 1.0, size), 1)
        window = np.concatenate([older, recent])
        order = np.argsort(window, kind="stable")
        flagged = np.zeros(2 * size, dtype=np.bool_)
        flagged[:size] = True
        h = kswin._ks_distance(window[order], order, 0, 2 * size, size, flagged)
        assert h / size == stats.ks_2samp(older, recent).statistic


@pytest.mark.filterwarnings("ignore:ks_2samp")
@pytest.mark.parametrize("size", [10, 30, 100])
@pytest.mark.parametrize("alpha", [0.05, 0.005, 1e-4])
def test_threshold_equals_scipy_decision(size, alpha):
    # Random sample pairs over a range of shifts cover small and large distances; the
    # precomputed threshold must give scipy's decision (p <= alpha and D > 0.1) on each.
    h_min = kswin._min_alarming_distance(size, alpha)
    rng = np.random.default_rng(size)
    outcomes = set()
    for shift in np.linspace(0.0, 3.0, 60):
        older = np.round(rng.normal(size=size), 2)
        recent = np.round(rng.normal(shift, 1.0, size), 2)
        res = stats.ks_2samp(older, recent, method="auto")
        h = round(res.statistic * size)
        alarm = bool(res.pvalue <= alpha and res.statistic > 0.1)
        assert (h >= h_min) == alarm, (h, h_min, res)
        outcomes.add(alarm)
    assert outcomes == {True, False}


def test_unreachable_threshold_never_alarms():
    # With 3 values per sample no p-value gets below 1e-6: the detector never alarms.
    det = KSWIN(alpha=1e-6, window_size=6, stat_size=3, seed=1)
    assert det.update_many(np.concatenate([np.zeros(100), np.ones(100) * 9])).size == 0
    assert (
        river_alarms(
            drift.KSWIN(alpha=1e-6, window_size=6, stat_size=3, seed=1),
            np.concatenate([np.zeros(100), np.ones(100) * 9]),
        )
        == []
    )
