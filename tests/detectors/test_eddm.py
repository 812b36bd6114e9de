"""EDDM: alarm and warning positions equal river 0.26's on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors.eddm import EDDM


def river_run(det, x: np.ndarray) -> tuple[list[int], list[int]]:
    alarms, warnings = [], []
    for t, v in enumerate(x.astype(int).tolist()):
        det.update(v)
        if det.drift_detected:
            alarms.append(t)
        if det.warning_detected:
            warnings.append(t)
    return alarms, warnings


def error_stream(seed: int, rates=(0.05, 0.3, 0.1, 0.5, 0.2, 0.6, 0.1), seg=2500):
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(seg) < p).astype(float) for p in rates])


PARAMS = [
    {},
    {"alpha": 0.8, "beta": 0.75},
    {"warm_start": 5, "alpha": 0.9, "beta": 0.9},
    {"warm_start": 100, "alpha": 0.99, "beta": 0.7},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alarms_equal_river_on_bernoulli_error_streams(seed, params):
    x = error_stream(seed)
    expected, _ = river_run(drift.binary.EDDM(**params), x)
    assert len(expected) >= 2
    assert EDDM(**params).update_many(x).tolist() == expected


def test_warnings_equal_river_per_event():
    x = error_stream(4, seg=1500)
    expected_alarms, expected_warnings = river_run(drift.binary.EDDM(), x)
    det = EDDM()
    alarms, warnings = [], []
    for t, v in enumerate(x):
        if det.update(v):
            alarms.append(t)
        if det.warning_detected:
            warnings.append(t)
    assert alarms == expected_alarms
    assert warnings == expected_warnings and len(warnings) > 10


def test_only_errors_move_the_statistics():
    # Zeros between errors only lengthen the distance; no errors at all never alarms.
    assert EDDM(warm_start=0).update_many(np.zeros(5000)).tolist() == []
    x = np.zeros(4000)
    x[49::50] = 1.0  # regular errors: constant distance 50, zero spread, no alarm
    x[3000::2] = 1.0  # then errors every other value: distance collapses
    alarms = EDDM().update_many(x).tolist()
    assert alarms == river_run(drift.binary.EDDM(), x)[0]
    assert alarms and alarms[0] > 3000
