"""Conformance checks run over every registered sequential change detector.

Adding a detector to the registry makes it go through all of these; the tables below
must name it (a test fails otherwise), so no detector can skip the checks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors._serde import StateVersionError
from detectors.change_detector import (
    DETECTOR_KINDS,
    ChangeDetector,
    detector_from_dict,
    detector_registry,
)

REGISTRY = detector_registry()
KINDS = sorted(REGISTRY)

# Parameters that make each detector alarm a few times on the streams below
# (KSWIN needs a seed to be reproducible).
SAMPLE_PARAMS: dict[str, dict] = {
    "adwin": {"delta": 0.01, "clock": 8},
    "page_hinkley": {"threshold": 20.0, "min_instances": 10},
    "cusum": {"k": 0.5, "h": 6.0, "warm_start": 20},
    "kswin": {"alpha": 0.001, "seed": 3},
    "ddm": {"warm_start": 20},
    "eddm": {"alpha": 0.9, "beta": 0.85},
    "hddm_a": {"two_sided_test": True},
    "hddm_w": {"two_sided_test": True, "lambda_val": 0.1},
}

# For each kind: (bad keyword arguments, the parameter name the error must mention).
BAD_PARAMS: dict[str, list[tuple[dict, str]]] = {
    "adwin": [
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"clock": 0}, "clock"),
        ({"max_buckets": 1}, "max_buckets"),
        ({"min_window_length": 0}, "min_window_length"),
        ({"grace_period": -1}, "grace_period"),
    ],
    "page_hinkley": [
        ({"min_instances": 0}, "min_instances"),
        ({"delta": -0.1}, "delta"),
        ({"threshold": 0.0}, "threshold"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.01}, "alpha"),
        ({"mode": "sideways"}, "mode"),
    ],
    "cusum": [
        ({"sigma": 0.0}, "sigma"),
        ({"k": -1.0}, "k"),
        ({"h": 0.0}, "h"),
        ({"warm_start": 1}, "warm_start"),
        ({"target": float("nan")}, "target"),
        ({"mode": "sideways"}, "mode"),
    ],
    "kswin": [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"stat_size": 0}, "stat_size"),
        ({"window_size": 50, "stat_size": 30}, "window_size"),
        ({"seed": 1.5}, "seed"),
        ({"window": [1.0, float("nan")]}, "window"),
    ],
    "ddm": [
        ({"warm_start": -1}, "warm_start"),
        ({"warning_threshold": 0.0}, "warning_threshold"),
        ({"drift_threshold": -2.0}, "drift_threshold"),
    ],
    "eddm": [
        ({"warm_start": -1}, "warm_start"),
        ({"alpha": 1.5}, "alpha"),
        ({"beta": 0.0}, "beta"),
        ({"alpha": 0.8, "beta": 0.9}, "alpha"),
    ],
    "hddm_a": [
        ({"drift_confidence": 0.0}, "drift_confidence"),
        ({"warning_confidence": 1.0}, "warning_confidence"),
        ({"two_sided_test": "yes"}, "two_sided_test"),
    ],
    "hddm_w": [
        ({"drift_confidence": 1.0}, "drift_confidence"),
        ({"warning_confidence": -0.1}, "warning_confidence"),
        ({"lambda_val": 0.0}, "lambda_val"),
        ({"two_sided_test": 1}, "two_sided_test"),
    ],
}


def make(kind: str) -> ChangeDetector:
    return REGISTRY[kind](**SAMPLE_PARAMS[kind])


def stream_for(kind: str, seed: int = 0, n_seg: int = 6, seg: int = 800) -> np.ndarray:
    """A stream with several change points, in the detector's input domain."""
    rng = np.random.default_rng(seed)
    domain = REGISTRY[kind]._input_domain
    if domain in ("binary", "unit"):
        rates = [0.05, 0.3, 0.1, 0.5, 0.05, 0.4][:n_seg]
        return np.concatenate([(rng.random(seg) < p).astype(float) for p in rates])
    means = [0.0, 1.5, 0.0, -1.0, 2.0, 0.5][:n_seg]
    return np.concatenate([rng.normal(m, 1.0, seg) for m in means])


def per_event(det: ChangeDetector, x: np.ndarray) -> tuple[list[int], list[bool]]:
    alarms, warnings = [], []
    for t, v in enumerate(x):
        if det.update(float(v)):
            alarms.append(t)
        warnings.append(bool(getattr(det, "warning_detected", False)))
    return alarms, warnings


def test_registry_is_closed_and_complete():
    assert tuple(REGISTRY) == DETECTOR_KINDS
    assert set(SAMPLE_PARAMS) == set(REGISTRY) == set(BAD_PARAMS)
    for kind, cls in REGISTRY.items():
        assert cls.kind == kind
        assert issubclass(cls, ChangeDetector)


@pytest.mark.parametrize("kind", KINDS)
def test_hyperparameters_are_public_attributes(kind):
    cls = REGISTRY[kind]
    det = make(kind)
    for name, value in SAMPLE_PARAMS[kind].items():
        assert getattr(det, name) == value
    assert set(det.params()) == set(cls._params)
    # defaults construct too, and repr names the class and its parameters
    assert type(cls()).__name__ in repr(cls())


@pytest.mark.parametrize("kind", KINDS)
def test_bad_parameters_raise_value_error_naming_them(kind):
    cls = REGISTRY[kind]
    for kwargs, name in BAD_PARAMS[kind]:
        with pytest.raises(ValueError, match=name):
            cls(**kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_every_hyperparameter_rejects_a_string(kind):
    cls = REGISTRY[kind]
    for name in cls._params:
        with pytest.raises(ValueError):
            cls(**{name: "not-a-value"})


@pytest.mark.parametrize("kind", KINDS)
def test_alarms_on_the_test_stream(kind):
    # The other checks are only meaningful if there are alarms to reproduce.
    alarms = make(kind).update_many(stream_for(kind))
    assert alarms.dtype == np.int64
    assert len(alarms) >= 2
    assert np.all(np.diff(alarms) > 0)


@pytest.mark.parametrize("kind", KINDS)
def test_update_per_event_agrees_with_update_many(kind):
    x = stream_for(kind, seed=1, n_seg=3)
    batch = make(kind)
    many = batch.update_many(x).tolist()
    single = make(kind)
    alarms, _ = per_event(single, x)
    assert alarms == many
    assert single.to_dict() == batch.to_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_update_many_agrees_with_one_call(kind):
    x = stream_for(kind, seed=2)
    whole = make(kind).update_many(x).tolist()
    det = make(kind)
    rng = np.random.default_rng(5)
    got, start = [], 0
    while start < len(x):
        stop = min(len(x), start + int(rng.integers(0, 400)))
        got.extend((det.update_many(x[start:stop]) + start).tolist())
        start = stop
    assert got == whole


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_mid_stream(kind):
    x = stream_for(kind, seed=3)
    whole = make(kind).update_many(x).tolist()
    # Cut in the middle, and right after the first alarm (restart still pending).
    for cut in (len(x) // 2, whole[0] + 1):
        det = make(kind)
        first = det.update_many(x[:cut]).tolist()
        if cut == whole[0] + 1:
            assert det.drift_detected
        state = json.loads(json.dumps(det.to_dict(), allow_nan=False))
        restored = detector_from_dict(state)
        assert type(restored) is type(det)
        assert restored.to_dict() == det.to_dict()
        rest = (restored.update_many(x[cut:]) + cut).tolist()
        assert first + rest == whole


@pytest.mark.parametrize("kind", KINDS)
def test_restarts_from_the_value_after_an_alarm(kind):
    # The documented post-detection behaviour: what follows an alarm is processed
    # exactly as by a new detector fed only what follows.
    cls = REGISTRY[kind]
    assert cls.restarts_after_drift is True
    x = stream_for(kind, seed=4)
    alarms = make(kind).update_many(x).tolist()
    first = alarms[0]
    fresh = (make(kind).update_many(x[first + 1 :]) + first + 1).tolist()
    assert fresh == alarms[1:]


@pytest.mark.parametrize("kind", KINDS)
def test_reset_returns_to_the_fresh_state(kind):
    x = stream_for(kind, seed=5)
    det = make(kind)
    fresh_state = det.to_dict()
    first = det.update_many(x).tolist()
    assert det.to_dict() != fresh_state
    det.reset()
    assert det.to_dict() == fresh_state
    assert not det.drift_detected
    assert det.update_many(x).tolist() == first


@pytest.mark.parametrize("kind", KINDS)
def test_state_version_and_kind_are_checked(kind):
    det = make(kind)
    det.update_many(stream_for(kind, n_seg=2))
    d = det.to_dict()
    assert d["kind"] == kind and d["version"] == 1
    with pytest.raises(StateVersionError, match="version"):
        REGISTRY[kind].from_dict({**d, "version": 999})
    with pytest.raises(StateVersionError, match="version"):
        detector_from_dict({**d, "version": 999})
    other = next(k for k in KINDS if k != kind)
    with pytest.raises(StateVersionError, match="kind"):
        REGISTRY[other].from_dict(d)
    broken = json.loads(json.dumps(d))
    name = next(iter(broken["state"]))
    broken["state"][name] = [0] * 3 + broken["state"][name]
    with pytest.raises(ValueError, match=name):
        detector_from_dict(broken)
    missing = json.loads(json.dumps(d))
    del missing["state"][name]
    with pytest.raises(ValueError, match=name):
        detector_from_dict(missing)


def test_unknown_kind_lists_the_available_ones():
    with pytest.raises(ValueError, match="adwin"):
        detector_from_dict({"kind": "module:Evil", "version": 1})
    with pytest.raises(ValueError):
        detector_from_dict("adwin")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_values_are_refused_before_any_is_used(kind):
    det = make(kind)
    before = det.to_dict()
    x = stream_for(kind, n_seg=1)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[7] = bad
        with pytest.raises(ValueError, match="position 7"):
            det.update_many(y)
    with pytest.raises(ValueError, match="1-D"):
        det.update_many(x.reshape(-1, 2))
    domain = REGISTRY[kind]._input_domain
    if domain is not None:
        y = x.copy()
        y[3] = 0.5 if domain == "binary" else 1.5
        with pytest.raises(ValueError, match="position 3"):
            det.update_many(y)
    assert det.to_dict() == before


@pytest.mark.parametrize("kind", KINDS)
def test_empty_input_changes_nothing(kind):
    det = make(kind)
    det.update_many(stream_for(kind, n_seg=2))
    before = det.to_dict()
    flag = det.drift_detected
    out = det.update_many(np.array([]))
    assert out.dtype == np.int64 and out.size == 0
    assert det.to_dict() == before and det.drift_detected == flag


@pytest.mark.parametrize("kind", KINDS)
def test_accepts_lists_and_integer_arrays(kind):
    x = stream_for(kind, seed=6, n_seg=3)
    expected = make(kind).update_many(x).tolist()
    assert make(kind).update_many(x.tolist()).tolist() == expected
    if REGISTRY[kind]._input_domain is not None:
        assert make(kind).update_many(x.astype(np.int8)).tolist() == expected
