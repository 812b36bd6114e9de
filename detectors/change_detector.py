"""Common interface of the sequential change detectors and their closed registry.

Every detector watches one scalar stream (the error indicator after the label join, a
mean score, a per-pane statistic) and answers "did the stream change at this value?".
Subclasses keep their whole mutable state in numpy arrays that a compiled numba kernel
reads and writes, so :meth:`ChangeDetector.update_many` is fast and the state serialises
to versioned JSON without pickle.

Behaviour after a detection
---------------------------
All detectors follow river 0.26, whose alarm positions they reproduce exactly: a
detection is reported for the value that caused it, and **the detector restarts from
the next value** (its statistics are cleared before that value is used, as if it had
just been built). This is exposed as :attr:`ChangeDetector.restarts_after_drift`
(always ``True``) and recorded in the serialised state, so a checkpoint taken right
after an alarm resumes with the restart still pending. :meth:`ChangeDetector.reset`
clears the state explicitly at any time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from detectors._serde import check_state, floats, unfloats

__all__ = [
    "ChangeDetector",
    "DETECTOR_KINDS",
    "detector_registry",
    "detector_from_dict",
]

# Slots shared by every detector's integer state array ``_i``.
DRIFT = 0
WARNING = 1

# Closed set of kinds; the classes are imported lazily because each module imports
# this one for the base class.
DETECTOR_KINDS: tuple[str, ...] = (
    "adwin",
    "page_hinkley",
    "cusum",
    "kswin",
    "ddm",
    "eddm",
    "hddm_a",
    "hddm_w",
)


class ChangeDetector:
    """Base class: hyperparameters are public attributes, state lives in numpy arrays.

    Subclasses set ``kind``, ``_params`` (constructor argument names, in order) and
    ``_state_fields`` (names of the numpy array attributes holding the mutable state,
    one of which is ``_i`` with the drift flag in slot 0 and the warning flag in slot
    1), and implement :meth:`_reset` and :meth:`_run`.
    """

    kind: ClassVar[str] = ""
    version: ClassVar[int] = 1
    #: After a detection the detector restarts from the next value, as river does.
    restarts_after_drift: ClassVar[bool] = True
    #: Whether inputs must be 0/1 ("binary") or lie in [0, 1] ("unit"); None: any finite.
    _input_domain: ClassVar[str | None] = None
    _params: ClassVar[tuple[str, ...]] = ()
    _state_fields: ClassVar[tuple[str, ...]] = ("_i",)

    _i: np.ndarray

    # -- to be provided by subclasses ---------------------------------------------------
    def _reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Feed a contiguous float64 array through the kernel; return alarm indices."""
        raise NotImplementedError

    # -- public interface ----------------------------------------------------------------
    @property
    def drift_detected(self) -> bool:
        """Whether the last value fed to the detector raised a drift alarm."""
        return bool(self._i[DRIFT])

    def reset(self) -> None:
        """Forget everything seen so far; the detector is as if freshly constructed."""
        self._reset()

    def update(self, x: float) -> bool:
        """Feed one value; return whether it raised a drift alarm.

        A per-event convenience over :meth:`update_many` (same kernel, same result).
        """
        self.update_many(np.array([x], dtype=np.float64))
        return self.drift_detected

    def update_many(self, values: Iterable[float] | np.ndarray) -> np.ndarray:
        """Feed values in order; return the 0-based positions (within ``values``) of alarms.

        Equivalent to calling :meth:`update` on each value, but runs in one compiled
        pass. Values must be finite (and 0/1 or within [0, 1] for the binary detectors);
        a bad value raises ValueError naming its position before any value is used.
        """
        x = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
        if x.ndim != 1:
            raise ValueError(f"{self.kind}: values must be 1-D, got shape {x.shape}")
        if x.size == 0:
            return np.empty(0, dtype=np.int64)
        self._check_values(x)
        return self._run(x)

    def params(self) -> dict[str, Any]:
        """Hyperparameters as constructor keyword arguments."""
        return {name: getattr(self, name) for name in self._params}

    def to_dict(self) -> dict[str, Any]:
        """Versioned, JSON-safe hyperparameters and state."""
        state: dict[str, Any] = {}
        for name in self._state_fields:
            arr = getattr(self, name)
            if arr.dtype.kind == "f":
                state[name.lstrip("_")] = floats(arr)
            else:
                state[name.lstrip("_")] = arr.tolist()
        return {
            "kind": self.kind,
            "version": self.version,
            "params": _json_params(self.params()),
            "state": state,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeDetector:
        """Rebuild a detector from :meth:`to_dict` output (kind and version are checked)."""
        check_state(d, cls.kind, (cls.version,))
        params = d.get("params")
        state = d.get("state")
        if not isinstance(params, dict) or not isinstance(state, dict):
            raise ValueError(f"{cls.kind!r} state needs 'params' and 'state' objects")
        det = cls(**params)
        for name in cls._state_fields:
            key = name.lstrip("_")
            if key not in state:
                raise ValueError(f"{cls.kind!r} state is missing field {key!r}")
            fresh = getattr(det, name)
            if fresh.dtype.kind == "f":
                arr = unfloats(state[key])
            else:
                arr = np.asarray(state[key], dtype=fresh.dtype)
            if arr.shape != fresh.shape:
                raise ValueError(
                    f"{cls.kind!r} state field {key!r} has shape {arr.shape}, "
                    f"expected {fresh.shape} for these parameters"
                )
            setattr(det, name, np.ascontiguousarray(arr, dtype=fresh.dtype))
        return det

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # -- helpers -------------------------------------------------------------------------
    def _check_values(self, x: np.ndarray) -> None:
        finite = np.isfinite(x)
        if not finite.all():
            pos = int(np.argmin(finite))
            raise ValueError(
                f"{self.kind}: value at position {pos} is {x[pos]!r}; values must be finite"
            )
        if self._input_domain == "binary":
            ok = (x == 0.0) | (x == 1.0)
            if not ok.all():
                pos = int(np.argmin(ok))
                raise ValueError(
                    f"{self.kind}: value at position {pos} is {x[pos]!r}; "
                    "this detector takes 0 (correct) or 1 (error)"
                )
        elif self._input_domain == "unit":
            ok = (x >= 0.0) & (x <= 1.0)
            if not ok.all():
                pos = int(np.argmin(ok))
                raise ValueError(
                    f"{self.kind}: value at position {pos} is {x[pos]!r}; values must lie in [0, 1]"
                )


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"parameter {k!r}={v!r} cannot be serialised")
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


# -- parameter validation shared by the detector modules ----------------------------------
def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` as an int within ``[lo, hi]``, else ValueError naming the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``value`` as a finite float within the given bounds, else ValueError naming them."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    lo_s = "(" if lo_open else "["
    hi_s = ")" if hi_open else "]"
    rng = f"{lo_s}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_s}"
    bad = not math.isfinite(v)
    if lo is not None:
        bad = bad or v < lo or (lo_open and v == lo)
    if hi is not None:
        bad = bad or v > hi or (hi_open and v == hi)
    if bad:
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")
    return v


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@functools.cache
def detector_registry() -> dict[str, type[ChangeDetector]]:
    """The closed mapping of kind names to detector classes."""
    from detectors.adwin import ADWIN
    from detectors.cusum import CUSUM
    from detectors.ddm import DDM
    from detectors.eddm import EDDM
    from detectors.hddm_a import HDDM_A
    from detectors.hddm_w import HDDM_W
    from detectors.kswin import KSWIN
    from detectors.page_hinkley import PageHinkley

    classes = (ADWIN, PageHinkley, CUSUM, KSWIN, DDM, EDDM, HDDM_A, HDDM_W)
    reg = {c.kind: c for c in classes}
    assert tuple(reg) == DETECTOR_KINDS, "DETECTOR_KINDS out of sync with the classes"
    return reg


def detector_from_dict(d: dict[str, Any]) -> ChangeDetector:
    """Rebuild any registered detector from its :meth:`ChangeDetector.to_dict` output."""
    if not isinstance(d, dict):
        raise ValueError(f"detector state must be a dict, got {type(d).__name__}")
    kind = d.get("kind")
    reg = detector_registry()
    if kind not in reg:
        raise ValueError(f"unknown detector kind {kind!r}; available: {sorted(reg)}")
    return reg[kind].from_dict(d)
