"""HDDM-A (Hoeffding drift detection, moving-average test), compiled over arrays.

Reproduces river 0.26's ``river.drift.binary.HDDMA`` alarm positions on the same input.
The detector keeps the running mean of all values and the prefix (a snapshot of that
running mean and its count) at which the Hoeffding upper bound of the mean was lowest
(and, for the two-sided test, the one where the lower bound was highest). It alarms
when the current mean exceeds that prefix's mean by more than the Hoeffding bound for
the two sample sizes at ``drift_confidence`` (warning at ``warning_confidence``)
(Frías-Blanco et al. 2014). Values are errors in [0, 1] (0/1 for a classifier). As in
river, after a detection the detector restarts from the next value.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> errors = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.3]).astype(float)
>>> det = HDDM_A()
>>> det.update_many(errors).tolist()
[1102]
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

__all__ = ["HDDM_A"]

# float state slots: (count, mean) of the whole stream and of the two prefix snapshots
_Z_N, _Z_MEAN, _MIN_N, _MIN_MEAN, _MAX_N, _MAX_MEAN = range(6)


@numba.njit(cache=True, error_model="numpy")
def _changed(n_ref, mean_ref, z_n, z_mean, log_2_over_conf, increase):  # pragma: no cover
    if n_ref == z_n:
        return False
    m = (z_n - n_ref) / n_ref * (1.0 / z_n)
    eps = np.sqrt(m / 2 * log_2_over_conf)
    if increase:
        return z_mean - mean_ref >= eps
    return mean_ref - z_mean >= eps


@numba.njit(cache=True, error_model="numpy")
def _hddm_a_kernel(
    x, log_2_drift, log_2_warning, log_inv_drift, two_sided, f, i, out
):  # pragma: no cover - compiled
    z_n = f[_Z_N]
    z_mean = f[_Z_MEAN]
    min_n = f[_MIN_N]
    min_mean = f[_MIN_MEAN]
    max_n = f[_MAX_N]
    max_mean = f[_MAX_MEAN]
    drift = i[DRIFT]
    warning = i[WARNING]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            z_n = 0.0
            z_mean = 0.0
            min_n = 0.0
            min_mean = 0.0
            max_n = 0.0
            max_mean = 0.0
            drift = 0
            warning = 0
        z_n += 1.0
        z_mean += (1.0 / z_n) * (x[t] - z_mean)
        if min_n == 0.0:
            min_n = z_n
            min_mean = z_mean
        if max_n == 0.0:
            max_n = z_n
            max_mean = z_mean
        # Hoeffding bound sqrt(1 / (2 n) * log(1 / drift_confidence)), river's order.
        eps_z = np.sqrt(1.0 / (2.0 * z_n) * log_inv_drift)
        eps_x = np.sqrt(1.0 / (2.0 * min_n) * log_inv_drift)
        if min_mean + eps_x >= z_mean + eps_z:
            min_n = z_n
            min_mean = z_mean
        eps_x = np.sqrt(1.0 / (2.0 * max_n) * log_inv_drift)
        if max_mean - eps_x <= z_mean - eps_z:
            max_n = z_n
            max_mean = z_mean
        if _changed(min_n, min_mean, z_n, z_mean, log_2_drift, True):
            warning = 0
            drift = 1
        elif _changed(min_n, min_mean, z_n, z_mean, log_2_warning, True):
            warning = 1
            drift = 0
        else:
            warning = 0
            drift = 0
        if two_sided:
            if _changed(max_n, max_mean, z_n, z_mean, log_2_drift, False):
                drift = 1
            elif _changed(max_n, max_mean, z_n, z_mean, log_2_warning, False):
                warning = 1
        if drift != 0:
            out[n_out] = t
            n_out += 1
    f[_Z_N] = z_n
    f[_Z_MEAN] = z_mean
    f[_MIN_N] = min_n
    f[_MIN_MEAN] = min_mean
    f[_MAX_N] = max_n
    f[_MAX_MEAN] = max_mean
    i[DRIFT] = drift
    i[WARNING] = warning
    return n_out


class HDDM_A(ChangeDetector):
    """Hoeffding drift detection with the moving-average test, for errors in [0, 1].

    Parameters
    ----------
    drift_confidence
        Significance of the alarm test, in (0, 1).
    warning_confidence
        Significance of the warning test, in (0, 1).
    two_sided_test
        Also watch for decreases of the mean (default: increases only).

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "hddm_a"
    _input_domain = "unit"
    _params = ("drift_confidence", "warning_confidence", "two_sided_test")
    _state_fields = ("_i", "_f")

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
    ):
        self.drift_confidence = check_float(
            "drift_confidence", drift_confidence, 0.0, 1.0, lo_open=True, hi_open=True
        )
        self.warning_confidence = check_float(
            "warning_confidence", warning_confidence, 0.0, 1.0, lo_open=True, hi_open=True
        )
        self.two_sided_test = check_bool("two_sided_test", two_sided_test)
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(2, dtype=np.int64)
        self._f = np.zeros(6, dtype=np.float64)

    @property
    def warning_detected(self) -> bool:
        """Whether the last value put the detector in the warning zone."""
        return bool(self._i[WARNING])

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _hddm_a_kernel(
            x,
            # Logs are taken once here, in Python, exactly as river takes them.
            math.log(2.0 / self.drift_confidence),
            math.log(2.0 / self.warning_confidence),
            math.log(1.0 / self.drift_confidence),
            self.two_sided_test,
            self._f,
            self._i,
            out,
        )
        return out[:n].copy()
