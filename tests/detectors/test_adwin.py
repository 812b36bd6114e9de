"""ADWIN: alarm positions and window statistics equal river 0.26's on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors.adwin import ADWIN


def river_alarms(det, x: np.ndarray) -> list[int]:
    out = []
    for t, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(t)
    return out


def mean_shifts(seed: int, means=(0.0, 1.0, 0.3, 2.0, 2.5, -1.0, -1.0, 0.5), seg=2500):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(m, 1.0, seg) for m in means])


PARAMS = [
    {},
    {"clock": 1},
    {"delta": 0.1, "clock": 4, "max_buckets": 2, "min_window_length": 2, "grace_period": 3},
    {"delta": 1e-5, "clock": 16, "max_buckets": 7, "min_window_length": 20, "grace_period": 100},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alarms_equal_river_on_gaussian_mean_shifts(seed, params):
    x = mean_shifts(seed)
    expected = river_alarms(drift.ADWIN(**params), x)
    assert len(expected) >= 4  # several detections and the behaviour after each
    assert ADWIN(**params).update_many(x).tolist() == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_alarms_equal_river_on_error_indicator_streams(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([(rng.random(3000) < p).astype(float) for p in (0.05, 0.25, 0.1, 0.5, 0.05)])
    expected = river_alarms(drift.ADWIN(delta=0.01), x)
    assert len(expected) >= 3
    assert ADWIN(delta=0.01).update_many(x).tolist() == expected


def test_long_stream_with_many_detections():
    rng = np.random.default_rng(11)
    means = rng.choice([-1.0, 0.0, 1.0, 2.0], size=40)
    x = np.concatenate([rng.normal(m, 0.8, int(rng.integers(300, 2500))) for m in means])
    expected = river_alarms(drift.ADWIN(), x)
    assert len(expected) >= 20
    assert ADWIN().update_many(x).tolist() == expected


def test_window_statistics_equal_river_along_the_stream():
    x = mean_shifts(5, seg=1500)
    ours, theirs = ADWIN(), drift.ADWIN()
    seen_drift = False
    for t, v in enumerate(x.tolist()):
        theirs.update(v)
        assert ours.update(v) == theirs.drift_detected
        seen_drift |= theirs.drift_detected
        if t % 97 == 0 or theirs.drift_detected:
            assert ours.width == theirs.width
            assert ours.total == theirs.total
            assert ours.variance == theirs.variance
            assert ours.estimation == theirs.estimation
    assert seen_drift


def test_known_answer_step_change():
    # A clean step from 0 to 1: the window is cut soon after the step, and the window
    # then only holds values from after it.
    x = np.concatenate([np.zeros(1000), np.ones(1000)])
    det = ADWIN()
    alarms = det.update_many(x).tolist()
    assert alarms == river_alarms(drift.ADWIN(), x)
    assert len(alarms) == 1 and 1000 <= alarms[0] < 1100
    assert det.estimation == 1.0
    assert det.width == 2000 - alarms[0] - 1
