"""DDM (drift detection method) on a 0/1 error stream, compiled over arrays.

Reproduces river 0.26's ``river.drift.binary.DDM`` alarm positions on the same input.
DDM tracks the error rate ``p`` and its binomial standard deviation ``s = sqrt(p(1-p)/n)``,
remembers ``p_min`` and ``s_min`` where ``p + s`` was lowest, and after ``warm_start``
values warns when ``p + s > p_min + warning_threshold * s_min`` and alarms when
``p + s > p_min + drift_threshold * s_min`` (Gama et al. 2004). As in river, after a
detection the detector restarts from the next value.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> errors = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.3]).astype(float)
>>> det = DDM()
>>> det.update_many(errors).tolist()
[1039]
"""

from __future__ import annotations

import numba
import numpy as np

from detectors.change_detector import (
    DRIFT,
    WARNING,
    ChangeDetector,
    check_float,
    check_int,
)

__all__ = ["DDM"]

# float state slots
_N, _P, _P_MIN, _S_MIN, _PS_MIN = range(5)


@numba.njit(cache=True, error_model="numpy")
def _ddm_kernel(x, warm_start, warning_threshold, drift_threshold, f, i, out):  # pragma: no cover
    n = f[_N]
    p = f[_P]
    p_min = f[_P_MIN]
    s_min = f[_S_MIN]
    ps_min = f[_PS_MIN]
    drift = i[DRIFT]
    warning = i[WARNING]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            n = 0.0
            p = 0.0
            p_min = 0.0
            s_min = 0.0
            ps_min = np.inf
            drift = 0
            warning = 0
        n += 1.0
        p += (1.0 / n) * (x[t] - p)
        s = np.sqrt(p * (1.0 - p) / n)
        if n > warm_start:
            if p + s <= ps_min:
                p_min = p
                s_min = s
                ps_min = p_min + s_min
            warning = 1 if p + s > p_min + warning_threshold * s_min else 0
            if p + s > p_min + drift_threshold * s_min:
                drift = 1
                warning = 0
                out[n_out] = t
                n_out += 1
    f[_N] = n
    f[_P] = p
    f[_P_MIN] = p_min
    f[_S_MIN] = s_min
    f[_PS_MIN] = ps_min
    i[DRIFT] = drift
    i[WARNING] = warning
    return n_out


class DDM(ChangeDetector):
    """Drift detection method for a stream of 0 (correct) / 1 (error) values.

    Parameters
    ----------
    warm_start
        Values needed before a warning or alarm can be raised (>= 0).
    warning_threshold
        Warning level in units of ``s_min`` above ``p_min`` (> 0).
    drift_threshold
        Alarm level in units of ``s_min`` above ``p_min`` (> 0).

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "ddm"
    _input_domain = "binary"
    _params = ("warm_start", "warning_threshold", "drift_threshold")
    _state_fields = ("_i", "_f")

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ):
        self.warm_start = check_int("warm_start", warm_start, 0)
        self.warning_threshold = check_float(
            "warning_threshold", warning_threshold, 0.0, lo_open=True
        )
        self.drift_threshold = check_float("drift_threshold", drift_threshold, 0.0, lo_open=True)
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(2, dtype=np.int64)
        self._f = np.zeros(5, dtype=np.float64)
        self._f[_PS_MIN] = np.inf

    @property
    def warning_detected(self) -> bool:
        """Whether the last value put the detector in the warning zone."""
        return bool(self._i[WARNING])

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _ddm_kernel(
            x,
            float(self.warm_start),
            self.warning_threshold,
            self.drift_threshold,
            self._f,
            self._i,
            out,
        )
        return out[:n].copy()
