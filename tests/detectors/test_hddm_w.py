"""HDDM-W: alarm and warning positions equal river 0.26's (HDDMW) on the same input."""

from __future__ import annotations

import numpy as np
import pytest
from river import drift

from detectors.hddm_w import HDDM_W


def river_run(det, x: np.ndarray) -> tuple[list[int], list[int]]:
    alarms, warnings = [], []
    for t, v in enumerate(x.tolist()):
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
    {"two_sided_test": True},
    {"drift_confidence": 0.01, "warning_confidence": 0.05, "two_sided_test": True},
    {"drift_confidence": 1e-4, "warning_confidence": 0.001},
    {
        "lambda_val": 0.2,
        "drift_confidence": 0.01,
        "warning_confidence": 0.05,
        "two_sided_test": True,
    },
    {"lambda_val": 0.01, "two_sided_test": True},
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alarms_equal_river_on_bernoulli_error_streams(seed, params):
    x = error_stream(seed)
    expected, _ = river_run(drift.binary.HDDMW(**params), x)
    assert len(expected) >= 2
    assert HDDM_W(**params).update_many(x).tolist() == expected


@pytest.mark.parametrize("seed", [3, 4])
def test_alarms_equal_river_on_bounded_gaussian_shifts(seed):
    # Per-pane error rates: values in [0, 1] rather than 0/1.
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(m, 0.1, 2000) for m in (0.2, 0.5, 0.3, 0.7, 0.2)])
    x = np.clip(x, 0.0, 1.0)
    params = {"two_sided_test": True}
    expected, _ = river_run(drift.binary.HDDMW(**params), x)
    assert len(expected) >= 2
    assert HDDM_W(**params).update_many(x).tolist() == expected


def test_warnings_equal_river_per_event():
    x = error_stream(5, seg=1500)
    params = {"two_sided_test": True}
    expected_alarms, expected_warnings = river_run(drift.binary.HDDMW(**params), x)
    det = HDDM_W(**params)
    alarms, warnings = [], []
    for t, v in enumerate(x):
        if det.update(v):
            alarms.append(t)
        if det.warning_detected:
            warnings.append(t)
    assert alarms == expected_alarms
    assert warnings == expected_warnings and len(warnings) > 5
