"""DDM: alarm and warning positions equal river 0.26's on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors.ddm import DDM


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
    {"warm_start": 10, "warning_threshold": 1.5, "drift_threshold": 2.0},
    {"warm_start": 100, "warning_threshold": 2.5, "drift_threshold": 4.0},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alarms_equal_river_on_bernoulli_error_streams(seed, params):
    x = error_stream(seed)
    expected, _ = river_run(drift.binary.DDM(**params), x)
    assert len(expected) >= 3
    assert DDM(**params).update_many(x).tolist() == expected


def test_warnings_equal_river_per_event():
    x = error_stream(4, seg=1500)
    expected_alarms, expected_warnings = river_run(drift.binary.DDM(), x)
    det = DDM()
    alarms, warnings = [], []
    for t, v in enumerate(x):
        if det.update(v):
            alarms.append(t)
        if det.warning_detected:
            warnings.append(t)
    assert alarms == expected_alarms
    assert warnings == expected_warnings and len(warnings) > 10


def test_known_answer_all_correct_then_all_errors():
    # p_min = 0, s_min = 0 after 30 zeros, so the first error (p + s > 0) alarms.
    x = np.concatenate([np.zeros(40), np.ones(5)])
    assert DDM().update_many(x).tolist() == [40]
    assert river_run(drift.binary.DDM(), x)[0] == [40]
