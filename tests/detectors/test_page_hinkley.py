"""Page-Hinkley: alarm positions equal river 0.26's on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors.page_hinkley import PageHinkley


def river_alarms(det, x: np.ndarray) -> list[int]:
    out = []
    for t, v in enumerate(x.tolist()):
        det.update(v)
        if det.drift_detected:
            out.append(t)
    return out


def mean_shifts(seed: int, means=(0.0, 1.0, 0.3, 2.0, 2.5, -1.0, 0.5), seg=2500):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(m, 1.0, seg) for m in means])


PARAMS = [
    {},
    {"mode": "up", "threshold": 20.0, "delta": 0.01},
    {"mode": "down", "alpha": 0.99, "threshold": 10.0},
    {"min_instances": 5, "threshold": 5.0, "delta": 0.0},
    {"alpha": 1.0, "threshold": 30.0},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alarms_equal_river_on_gaussian_mean_shifts(seed, params):
    x = mean_shifts(seed)
    expected = river_alarms(drift.PageHinkley(**params), x)
    assert len(expected) >= 3
    assert PageHinkley(**params).update_many(x).tolist() == expected


def test_alarms_equal_river_on_integer_valued_stream():
    rng = np.random.default_rng(9)
    x = np.concatenate(
        [rng.integers(0, 2, 3000), rng.integers(4, 8, 3000), rng.integers(0, 3, 3000)]
    )
    x = x.astype(float)
    expected = river_alarms(drift.PageHinkley(), x)
    assert len(expected) >= 2
    assert PageHinkley().update_many(x).tolist() == expected


def test_known_answer_no_alarm_before_min_instances():
    # A huge jump right at the start cannot alarm before min_instances values.
    x = np.concatenate([np.zeros(3), np.full(40, 100.0)])
    alarms = PageHinkley(min_instances=10, threshold=1.0).update_many(x).tolist()
    assert alarms[0] == 9
    assert alarms == river_alarms(drift.PageHinkley(min_instances=10, threshold=1.0), x)


def test_one_sided_modes_ignore_the_other_direction():
    x = np.concatenate([np.zeros(500), np.full(500, -5.0)])
    assert PageHinkley(mode="up", threshold=10.0).update_many(x).tolist() == []
    assert PageHinkley(mode="down", threshold=10.0).update_many(x).tolist() != []
