"""HDDM-W (Hoeffding drift detection, weighted moving-average test), compiled over arrays.

Reproduces river 0.26's ``river.drift.binary.HDDMW`` alarm positions on the same input.
The detector follows an exponentially weighted mean (EWMA, weight ``lambda_val`` on the
newest value) of the stream together with its McDiarmid bound; it snapshots the EWMA
where the upper bound was lowest and starts a second EWMA after it, and alarms when
the second exceeds the snapshot by more than the McDiarmid bound of both at
``drift_confidence`` (warning at ``warning_confidence``); the two-sided test does the
same for decreases (Frías-Blanco et al. 2014). Values are errors in [0, 1]. As in
river, after a detection the detector restarts from the next value.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> errors = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.3]).astype(float)
>>> det = HDDM_W()
>>> det.update_many(errors).tolist()
[1062]
"""

from __future__ import annotations

import math

import numba
import numpy as np

from detectors.change_detector import (
    DRIFT,
    WARNING,
    ChangeDetector,
    check_bool,
    check_float,
)

__all__ = ["HDDM_W"]

# Each weighted sample is (ewma, initialised 0/1, ibc = sum of squared weights); the
# float state holds five of them (whole stream, before/after the increase cut point,
# before/after the decrease cut point) followed by the two cut points.
_TOTAL, _S1_INC, _S2_INC, _S1_DEC, _S2_DEC = 0, 3, 6, 9, 12
_EWMA, _INIT, _IBC = 0, 1, 2
_INC_CUT, _DEC_CUT = 15, 16
_NF = 17


@numba.njit(cache=True, error_model="numpy")
def _fresh(f):  # pragma: no cover - compiled
    for s in (_TOTAL, _S1_INC, _S2_INC, _S1_DEC, _S2_DEC):
        f[s + _EWMA] = 0.0
        f[s + _INIT] = 0.0
        f[s + _IBC] = 1.0
    f[_INC_CUT] = np.inf
    f[_DEC_CUT] = -np.inf


@numba.njit(cache=True, error_model="numpy")
def _sample_update(f, s, v, lam, one_minus_lam, lam_sq, c_lam_sq):  # pragma: no cover
    if f[s + _INIT] == 0.0:
        f[s + _EWMA] = v
        f[s + _INIT] = 1.0
    else:
        f[s + _EWMA] = lam * v + one_minus_lam * f[s + _EWMA]
    f[s + _IBC] = lam_sq + c_lam_sq * f[s + _IBC]


@numba.njit(cache=True, error_model="numpy")
def _copy_and_restart(f, dst, fresh):  # pragma: no cover - compiled
    # dst := snapshot of the whole-stream sample; fresh := empty sample
    f[dst + _EWMA] = f[_TOTAL + _EWMA]
    f[dst + _INIT] = f[_TOTAL + _INIT]
    f[dst + _IBC] = f[_TOTAL + _IBC]
    f[fresh + _EWMA] = 0.0
    f[fresh + _INIT] = 0.0
    f[fresh + _IBC] = 1.0


@numba.njit(cache=True, error_model="numpy")
def _mean_rose(f, before, after, log_inv_conf):  # pragma: no cover - compiled
    if f[before + _INIT] == 0.0 or f[after + _INIT] == 0.0:
        return False
    ibc_sum = f[before + _IBC] + f[after + _IBC]
    bound = np.sqrt(ibc_sum * log_inv_conf / 2)
    return f[after + _EWMA] - f[before + _EWMA] > bound


@numba.njit(cache=True, error_model="numpy")
def _hddm_w_kernel(
    x, log_inv_drift, log_inv_warning, lam, one_minus_lam, lam_sq, c_lam_sq, two_sided, f, i, out
):  # pragma: no cover - compiled
    drift = i[DRIFT]
    warning = i[WARNING]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            _fresh(f)
            drift = 0
            warning = 0
        v = x[t]
        _sample_update(f, _TOTAL, v, lam, one_minus_lam, lam_sq, c_lam_sq)

        eps = np.sqrt(f[_TOTAL + _IBC] * log_inv_drift / 2)
        if f[_TOTAL + _EWMA] + eps < f[_INC_CUT]:
            f[_INC_CUT] = f[_TOTAL + _EWMA] + eps
            _copy_and_restart(f, _S1_INC, _S2_INC)
        else:
            _sample_update(f, _S2_INC, v, lam, one_minus_lam, lam_sq, c_lam_sq)
        if _mean_rose(f, _S1_INC, _S2_INC, log_inv_drift):
            warning = 0
            drift = 1
        elif _mean_rose(f, _S1_INC, _S2_INC, log_inv_warning):
            warning = 1
            drift = 0
        else:
            warning = 0
            drift = 0

        eps = np.sqrt(f[_TOTAL + _IBC] * log_inv_drift / 2)
        if f[_TOTAL + _EWMA] - eps > f[_DEC_CUT]:
            f[_DEC_CUT] = f[_TOTAL + _EWMA] - eps
            _copy_and_restart(f, _S1_DEC, _S2_DEC)
        else:
            _sample_update(f, _S2_DEC, v, lam, one_minus_lam, lam_sq, c_lam_sq)
        if two_sided:
            # A decrease: the mean before the cut point exceeds the mean after it.
            if _mean_rose(f, _S2_DEC, _S1_DEC, log_inv_drift):
                drift = 1
            elif _mean_rose(f, _S2_DEC, _S1_DEC, log_inv_warning):
                warning = 1
        if drift != 0:
            out[n_out] = t
            n_out += 1
    i[DRIFT] = drift
    i[WARNING] = warning
    return n_out


class HDDM_W(ChangeDetector):
    """Hoeffding drift detection with the weighted moving-average test, for errors in [0, 1].

    Parameters
    ----------
    drift_confidence
        Significance of the alarm test, in (0, 1).
    warning_confidence
        Significance of the warning test, in (0, 1).
    lambda_val
        Weight of the newest value in the moving average, in (0, 1].
    two_sided_test
        Also watch for decreases of the mean (default: increases only).

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "hddm_w"
    _input_domain = "unit"
    _params = ("drift_confidence", "warning_confidence", "lambda_val", "two_sided_test")
    _state_fields = ("_i", "_f")

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
    ):
        self.drift_confidence = check_float(
            "drift_confidence", drift_confidence, 0.0, 1.0, lo_open=True, hi_open=True
        )
        self.warning_confidence = check_float(
            "warning_confidence", warning_confidence, 0.0, 1.0, lo_open=True, hi_open=True
        )
        self.lambda_val = check_float("lambda_val", lambda_val, 0.0, 1.0, lo_open=True)
        self.two_sided_test = check_bool("two_sided_test", two_sided_test)
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(2, dtype=np.int64)
        self._f = np.zeros(_NF, dtype=np.float64)
        _fresh(self._f)

    @property
    def warning_detected(self) -> bool:
        """Whether the last value put the detector in the warning zone."""
        return bool(self._i[WARNING])

    def _run(self, x: np.ndarray) -> np.ndarray:
        lam = self.lambda_val
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _hddm_w_kernel(
            x,
            # Constants computed in Python with river's expressions, so they match bitwise.
            math.log(1 / self.drift_confidence),
            math.log(1 / self.warning_confidence),
            lam,
            1.0 - lam,
            lam * lam,
            (1 - lam) ** 2,
            self.two_sided_test,
            self._f,
            self._i,
            out,
        )
        return out[:n].copy()
