"""EDDM (early drift detection method) on a 0/1 error stream, compiled over arrays.

Reproduces river 0.26's ``river.drift.binary.EDDM`` alarm positions on the same input.
EDDM follows the distance between consecutive errors: its running mean ``p'`` and
standard deviation ``s'`` (Welford, ddof=1). It remembers the largest ``p' + 2 s'``
and, once more than ``warm_start`` values and errors have been seen, alarms when the
current ``p' + 2 s'`` falls below ``beta`` times that maximum (warning below ``alpha``)
(Baena-García et al. 2006). Only error values (1) move the statistics. As in river,
after a detection the detector restarts from the next value.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(5)
>>> errors = np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.5]).astype(float)
>>> det = EDDM(alpha=0.8, beta=0.75)
>>> det.update_many(errors).tolist()
[1044]
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

__all__ = ["EDDM"]

# float state slots: distance mean/var (Welford) and the running maximum of p' + 2 s'
_D_N, _D_MEAN, _D_S, _P2S_MAX = range(4)
# int state slots after the shared flags
_N, _LAST_ERROR, _N_ERRORS = 2, 3, 4


@numba.njit(cache=True, error_model="numpy")
def _eddm_kernel(x, warm_start, alpha, beta, f, i, out):  # pragma: no cover - compiled
    d_n = f[_D_N]
    d_mean = f[_D_MEAN]
    d_s = f[_D_S]
    p2s_max = f[_P2S_MAX]
    n = i[_N]
    last_error = i[_LAST_ERROR]
    n_errors = i[_N_ERRORS]
    drift = i[DRIFT]
    warning = i[WARNING]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            d_n = 0.0
            d_mean = 0.0
            d_s = 0.0
            p2s_max = -1.0
            n = 0
            last_error = 0
            n_errors = 0
            drift = 0
            warning = 0
        n += 1
        if x[t] == 1.0:
            n_errors += 1
            dist = float(n - last_error)
            old = d_mean
            d_n += 1.0
            d_mean += (1.0 / d_n) * (dist - d_mean)
            d_s += (dist - old) * (dist - d_mean)
            if n > warm_start:
                var = d_s / (d_n - 1.0) if d_n > 1.0 else 0.0
                p2s = d_mean + 2.0 * var**0.5
                if p2s > p2s_max:
                    p2s_max = p2s
                elif n_errors > warm_start:
                    level = p2s / p2s_max
                    if level < beta:
                        drift = 1
                        out[n_out] = t
                        n_out += 1
                    elif level < alpha:
                        warning = 1
                    else:
                        warning = 0
            last_error = n
    f[_D_N] = d_n
    f[_D_MEAN] = d_mean
    f[_D_S] = d_s
    f[_P2S_MAX] = p2s_max
    i[_N] = n
    i[_LAST_ERROR] = last_error
    i[_N_ERRORS] = n_errors
    i[DRIFT] = drift
    i[WARNING] = warning
    return n_out


class EDDM(ChangeDetector):
    """Early drift detection method for a stream of 0 (correct) / 1 (error) values.

    Parameters
    ----------
    warm_start
        Values and errors needed before a warning or alarm can be raised (>= 0).
    alpha
        Warning level, in (0, 1]; must be >= ``beta``.
    beta
        Alarm level, in (0, 1].

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "eddm"
    _input_domain = "binary"
    _params = ("warm_start", "alpha", "beta")
    _state_fields = ("_i", "_f")

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9):
        self.warm_start = check_int("warm_start", warm_start, 0)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, lo_open=True)
        self.beta = check_float("beta", beta, 0.0, 1.0, lo_open=True)
        if self.alpha < self.beta:
            raise ValueError(f"alpha must be >= beta, got alpha={alpha!r} < beta={beta!r}")
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(5, dtype=np.int64)
        self._f = np.zeros(4, dtype=np.float64)
        self._f[_P2S_MAX] = -1.0

    @property
    def warning_detected(self) -> bool:
        """Whether the last value put the detector in the warning zone."""
        return bool(self._i[WARNING])

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _eddm_kernel(x, float(self.warm_start), self.alpha, self.beta, self._f, self._i, out)
        return out[:n].copy()
