"""Page-Hinkley test for a change in the mean of a scalar stream, compiled over arrays.

Reproduces river 0.26's ``river.drift.PageHinkley`` alarm positions on the same input.
The test keeps the running mean and two fading cumulative sums of the deviations from
it, one for increases (``sum = alpha * sum + (x - mean) - delta``) and one for
decreases (``+ delta``); it alarms when a sum has moved more than ``threshold`` from
its running extreme, after at least ``min_instances`` values. As in river, the
decrease sum's running maximum starts at -1 (not -inf), and after a detection the
detector restarts from the next value.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(1.5, 1.0, 1000)])
>>> det = PageHinkley(threshold=50.0)
>>> det.update_many(stream).tolist()
[1027]
"""

from __future__ import annotations

import numba
import numpy as np

from detectors.change_detector import DRIFT, ChangeDetector, check_choice, check_float, check_int

__all__ = ["PageHinkley"]

_MODES = ("up", "down", "both")
# float state slots
_N, _MEAN, _SUM_INC, _SUM_DEC, _MIN_INC, _MAX_DEC = range(6)


@numba.njit(cache=True, error_model="numpy")
def _fresh(f):  # pragma: no cover - compiled
    f[_N] = 0.0
    f[_MEAN] = 0.0
    f[_SUM_INC] = 0.0
    f[_SUM_DEC] = 0.0
    f[_MIN_INC] = np.inf
    f[_MAX_DEC] = -1.0


@numba.njit(cache=True, error_model="numpy")
def _ph_kernel(x, min_instances, delta, threshold, alpha, mode, f, i, out):  # pragma: no cover
    n = f[_N]
    mean = f[_MEAN]
    s_inc = f[_SUM_INC]
    s_dec = f[_SUM_DEC]
    min_inc = f[_MIN_INC]
    max_dec = f[_MAX_DEC]
    drift = i[DRIFT]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            n = 0.0
            mean = 0.0
            s_inc = 0.0
            s_dec = 0.0
            min_inc = np.inf
            max_dec = -1.0
            drift = 0
        v = x[t]
        # river's running mean: n += 1; mean += (1 / n) * (x - mean)
        n += 1.0
        mean += (1.0 / n) * (v - mean)
        dev = v - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        if s_inc < min_inc:
            min_inc = s_inc
        if s_dec > max_dec:
            max_dec = s_dec
        if n >= min_instances:
            up = s_inc - min_inc > threshold
            down = max_dec - s_dec > threshold
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
    f[_N] = n
    f[_MEAN] = mean
    f[_SUM_INC] = s_inc
    f[_SUM_DEC] = s_dec
    f[_MIN_INC] = min_inc
    f[_MAX_DEC] = max_dec
    i[DRIFT] = drift
    return n_out


class PageHinkley(ChangeDetector):
    """Page-Hinkley detector for increases and/or decreases of the mean.

    Parameters
    ----------
    min_instances
        Values needed before an alarm can be raised (>= 1).
    delta
        Magnitude of change tolerated per value (>= 0).
    threshold
        Alarm threshold (lambda) on the cumulative deviation (> 0).
    alpha
        Forgetting factor of the cumulative sums, in (0, 1].
    mode
        ``"up"`` (increases), ``"down"`` (decreases) or ``"both"``.

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "page_hinkley"
    _params = ("min_instances", "delta", "threshold", "alpha", "mode")
    _state_fields = ("_i", "_f")

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ):
        self.min_instances = check_int("min_instances", min_instances, 1)
        self.delta = check_float("delta", delta, 0.0)
        self.threshold = check_float("threshold", threshold, 0.0, lo_open=True)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, lo_open=True)
        self.mode = check_choice("mode", mode, _MODES)
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(2, dtype=np.int64)
        self._f = np.zeros(6, dtype=np.float64)
        _fresh(self._f)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _ph_kernel(
            x,
            float(self.min_instances),
            self.delta,
            self.threshold,
            self.alpha,
            _MODES.index(self.mode),
            self._f,
            self._i,
            out,
        )
        return out[:n].copy()
