"""Two-sided tabular CUSUM for shifts of a stream's mean, compiled over arrays.

river has no CUSUM, so this follows the textbook tabular form (Page 1954; Montgomery,
*Introduction to Statistical Quality Control*, section 9.1): with in-control mean
``mu0``, standard deviation ``sigma``, allowance ``K = k * sigma`` and decision interval
``H = h * sigma``,

    C+_i = max(0, C+_{i-1} + x_i - (mu0 + K))
    C-_i = max(0, C-_{i-1} + (mu0 - K) - x_i)

and an alarm is raised when ``C+ > H`` (``mode="up"``), ``C- > H`` (``"down"``) or
either (``"both"``). ``target`` and ``sigma`` may be given; any that is not is
estimated from the first ``warm_start`` values (sample mean, sample standard
deviation with ddof=1), which are then not scored. Like the river-backed detectors,
after a detection the detector restarts from the next value: the sums return to zero
and estimated parameters are re-estimated from the next ``warm_start`` values, so the
chart learns the new level. With an estimated ``sigma`` of 0 (a constant warm-up) any
further deviation alarms; pass ``sigma`` for streams that can be constant.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(1.5, 1.0, 1000)])
>>> det = CUSUM(target=0.0, sigma=1.0, k=0.5, h=8.0)
>>> det.update_many(stream)[:3].tolist()
[1012, 1020, 1028]

With a fixed ``target`` the restarted chart keeps alarming while the shift lasts. With
``target`` and ``sigma`` estimated, it re-learns them from the ``warm_start`` values
after each alarm (a 30-value estimate is rough, hence the later alarm):

>>> CUSUM(k=0.5, h=8.0).update_many(stream).tolist()
[1014, 1633]
"""

from __future__ import annotations

import math

import numba
import numpy as np

from detectors.change_detector import DRIFT, ChangeDetector, check_choice, check_float, check_int

__all__ = ["CUSUM"]

_MODES = ("up", "down", "both")
# float state slots: parameters in use, the two sums, warm-up moments (Welford)
_MU, _SD, _C_PLUS, _C_MINUS, _W_N, _W_MEAN, _W_M2 = range(7)


@numba.njit(cache=True, error_model="numpy")
def _cusum_kernel(x, target, sigma, k, h, warm_start, mode, f, i, out):  # pragma: no cover
    mu = f[_MU]
    sd = f[_SD]
    c_plus = f[_C_PLUS]
    c_minus = f[_C_MINUS]
    w_n = f[_W_N]
    w_mean = f[_W_MEAN]
    w_m2 = f[_W_M2]
    drift = i[DRIFT]
    estimate_mu = np.isnan(target)
    estimate_sd = np.isnan(sigma)
    n_out = 0
    for t in range(x.shape[0]):
        v = x[t]
        if drift != 0:
            mu = target
            sd = sigma
            c_plus = 0.0
            c_minus = 0.0
            w_n = 0.0
            w_mean = 0.0
            w_m2 = 0.0
            drift = 0
        if (estimate_mu or estimate_sd) and w_n < warm_start:
            w_n += 1.0
            d = v - w_mean
            w_mean += d / w_n
            w_m2 += d * (v - w_mean)
            if w_n == warm_start:
                if estimate_mu:
                    mu = w_mean
                if estimate_sd:
                    sd = np.sqrt(w_m2 / (w_n - 1.0))
            continue
        allowance = k * sd
        interval = h * sd
        c_plus = max(0.0, c_plus + (v - (mu + allowance)))
        c_minus = max(0.0, c_minus + ((mu - allowance) - v))
        up = c_plus > interval
        down = c_minus > interval
        if mode == 0:
            hit = up
        elif mode == 1:
            hit = down
        else:
            hit = up or down
        if hit:
            drift = 1
            out[n_out] = t
            n_out += 1
    f[_MU] = mu
    f[_SD] = sd
    f[_C_PLUS] = c_plus
    f[_C_MINUS] = c_minus
    f[_W_N] = w_n
    f[_W_MEAN] = w_mean
    f[_W_M2] = w_m2
    i[DRIFT] = drift
    return n_out


class CUSUM(ChangeDetector):
    """Two-sided tabular CUSUM chart for a shift of the mean.

    Parameters
    ----------
    target
        In-control mean ``mu0``; None: estimated from the first ``warm_start`` values.
    sigma
        In-control standard deviation (> 0); None: estimated likewise.
    k
        Allowance in units of sigma (>= 0); 0.5 tunes the chart for a 1-sigma shift.
    h
        Decision interval in units of sigma (> 0); 4 or 5 is usual.
    warm_start
        Values used to estimate ``target``/``sigma`` when not given (>= 2).
    mode
        ``"up"`` (increases), ``"down"`` (decreases) or ``"both"``.

    After a detection the detector restarts from the next value (sums at zero,
    estimates taken afresh), the same convention as the river-backed detectors.
    """

    kind = "cusum"
    _params = ("target", "sigma", "k", "h", "warm_start", "mode")
    _state_fields = ("_i", "_f")

    def __init__(
        self,
        target: float | None = None,
        sigma: float | None = None,
        k: float = 0.5,
        h: float = 5.0,
        warm_start: int = 30,
        mode: str = "both",
    ):
        self.target = None if target is None else check_float("target", target)
        self.sigma = None if sigma is None else check_float("sigma", sigma, 0.0, lo_open=True)
        self.k = check_float("k", k, 0.0)
        self.h = check_float("h", h, 0.0, lo_open=True)
        self.warm_start = check_int("warm_start", warm_start, 2)
        self.mode = check_choice("mode", mode, _MODES)
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(2, dtype=np.int64)
        self._f = np.zeros(7, dtype=np.float64)
        self._f[_MU] = math.nan if self.target is None else self.target
        self._f[_SD] = math.nan if self.sigma is None else self.sigma

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _cusum_kernel(
            x,
            math.nan if self.target is None else self.target,
            math.nan if self.sigma is None else self.sigma,
            self.k,
            self.h,
            float(self.warm_start),
            _MODES.index(self.mode),
            self._f,
            self._i,
            out,
        )
        return out[:n].copy()

    @property
    def mean(self) -> float | None:
        """In-control mean in use (None while it is being estimated)."""
        v = float(self._f[_MU])
        return None if math.isnan(v) else v

    @property
    def std(self) -> float | None:
        """In-control standard deviation in use (None while it is being estimated)."""
        v = float(self._f[_SD])
        return None if math.isnan(v) else v

    @property
    def upper_sum(self) -> float:
        """Current upper cumulative sum C+."""
        return float(self._f[_C_PLUS])

    @property
    def lower_sum(self) -> float:
        """Current lower cumulative sum C-."""
        return float(self._f[_C_MINUS])
