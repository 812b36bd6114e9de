"""ADWIN (adaptive windowing) change detector with a compiled, array-backed bucket list.

Reproduces river 0.26's ``river.drift.ADWIN`` alarm positions on the same input, with
its state in numpy arrays so it runs from one numba kernel and serialises to JSON.

The window is an exponential histogram: level ``l`` holds up to ``max_buckets`` summaries
of ``2**l`` values each (a sum and a sum of squared deviations); when a level holds one
summary too many its two oldest summaries merge into the next level. Every ``clock``
values, once the window is longer than ``grace_period``, each boundary between summaries
splits the window into an older part W0 and a newer part W1; when their means differ by
more than the ADWIN bound (Bifet & Gavaldà 2007, with the variance term) for ``delta``,
the oldest summary is dropped, the scan repeats, and a drift is reported. As in river,
after a detection the detector restarts from the next value (an empty window).

Floating-point operations follow river's order so the bound is evaluated to the same
bits, which is what makes the alarm positions identical rather than merely close.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(1.5, 1.0, 1000)])
>>> det = ADWIN(delta=0.002)
>>> det.update_many(stream).tolist()
[1023]
"""

from __future__ import annotations

import numba
import numpy as np

from detectors.change_detector import DRIFT, ChangeDetector, check_float, check_int

__all__ = ["ADWIN"]

# Enough levels for 2**64 values; the arrays are tiny (levels x (max_buckets + 1)).
_LEVELS = 64
_POW2 = np.array([2.0**k for k in range(_LEVELS)], dtype=np.float64)
_INV_POW2 = 1.0 / _POW2

# float state slots
_TOTAL, _VARIANCE, _WIDTH = 0, 1, 2
# int state slots (0 and 1 are the shared drift and warning flags)
_TICK, _NLEVELS = 2, 3


@numba.njit(cache=True, error_model="numpy")
def _drop_front(totals, variances, counts, level, k):  # pragma: no cover - compiled
    # Remove the k oldest summaries of a level, shifting the rest to the front.
    c = counts[level]
    for j in range(c - k):
        totals[level, j] = totals[level, j + k]
        variances[level, j] = variances[level, j + k]
    for j in range(c - k, c):
        totals[level, j] = 0.0
        variances[level, j] = 0.0
    counts[level] = c - k


@numba.njit(cache=True, error_model="numpy")
def _adwin_kernel(
    x, delta, clock, max_buckets, min_len, grace, f, i, totals, variances, counts, out
):  # pragma: no cover - compiled
    # Scalars live in locals for the whole batch (the arrays could alias as far as the
    # compiler knows, which would force a reload per access) and are stored at the end.
    total = f[_TOTAL]
    variance = f[_VARIANCE]
    width = f[_WIDTH]
    tick = i[_TICK]
    n_levels = i[_NLEVELS]
    drift = i[DRIFT]
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            # river restarts the detector on the value after a detection.
            for lv in range(n_levels):
                totals[lv, :] = 0.0
                variances[lv, :] = 0.0
                counts[lv] = 0
            total = 0.0
            variance = 0.0
            width = 0.0
            tick = 0
            n_levels = 1
        value = x[t]

        # -- insert: new summary at level 0, running variance (Welford order as river) --
        c0 = counts[0]
        totals[0, c0] = value
        variances[0, c0] = 0.0
        counts[0] = c0 + 1
        width += 1.0
        inc = 0.0
        if width > 1.0:
            dv = value - total / (width - 1.0)
            inc = (width - 1.0) * dv * dv / width
        variance += inc
        total += value
        level = 0
        while counts[level] == max_buckets + 1:
            # Dividing by 2**level equals multiplying by its exact reciprocal.
            inv = _INV_POW2[level]
            t0 = totals[level, 0]
            t1 = totals[level, 1]
            mu1 = t0 * inv
            mu2 = t1 * inv
            merged_var = (
                variances[level, 0]
                + variances[level, 1]
                + _POW2[level] * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            )
            if level + 1 >= n_levels:
                n_levels = level + 2
            cn = counts[level + 1]
            totals[level + 1, cn] = t0 + t1
            variances[level + 1, cn] = merged_var
            counts[level + 1] = cn + 1
            _drop_front(totals, variances, counts, level, 2)
            if counts[level + 1] <= max_buckets:
                break
            level += 1

        # -- detect: every `clock` values, scan all cuts; drop the oldest summary on a cut --
        changed = False
        tick += 1
        if tick % clock == 0 and width > grace:
            reduce = True
            while reduce:
                reduce = False
                n0 = 0.0
                n1 = width
                u0 = 0.0
                u1 = total
                cut = False
                # Constant during one pass (the width only changes on a cut, which starts a
                # new pass); the expressions keep river's operation order.
                var_per_value = variance / width
                delta_prime = np.log(2.0 * np.log(width) / delta)
                # Oldest level first, oldest summary first: W0 grows from the old end.
                for level in range(n_levels - 1, -1, -1):
                    size = _POW2[level]
                    c = counts[level]
                    last_k = c - 1 if level == 0 else c
                    for k in range(last_k):
                        n0 += size
                        n1 -= size
                        tk = totals[level, k]
                        u0 += tk
                        u1 -= tk
                        if n1 < min_len or n0 < min_len:
                            continue
                        delta_mean = (u0 / n0) - (u1 / n1)
                        m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0)
                        epsilon = (
                            np.sqrt(2.0 * m_recip * var_per_value * delta_prime)
                            + 2.0 / 3.0 * delta_prime * m_recip
                        )
                        if abs(delta_mean) > epsilon:
                            reduce = True
                            changed = True
                            if width > 0.0:
                                # Drop the oldest summary and shrink the window statistics.
                                top = n_levels - 1
                                n = _POW2[top]
                                u = totals[top, 0]
                                v = variances[top, 0]
                                mu = u / n
                                width -= n
                                total -= u
                                mu_window = total / width
                                variance -= v + n * width * (mu - mu_window) * (mu - mu_window) / (
                                    n + width
                                )
                                _drop_front(totals, variances, counts, top, 1)
                                if counts[top] == 0 and top > 0:
                                    n_levels = top
                                cut = True
                                break
                    if cut:
                        break
        if changed:
            drift = 1
            out[n_out] = t
            n_out += 1
        else:
            drift = 0
    f[_TOTAL] = total
    f[_VARIANCE] = variance
    f[_WIDTH] = width
    i[_TICK] = tick
    i[_NLEVELS] = n_levels
    i[DRIFT] = drift
    return n_out


class ADWIN(ChangeDetector):
    """Adaptive windowing detector for changes in the mean of a bounded-variance stream.

    Parameters
    ----------
    delta
        Significance of the cut test, in (0, 1); smaller means fewer false alarms.
    clock
        The window is checked every ``clock`` values (>= 1).
    max_buckets
        Summaries kept per level before two merge (>= 2; river fails with 1).
    min_window_length
        Both sub-windows must hold at least this many values to be compared (>= 1).
    grace_period
        No check until the window holds more than this many values (>= 0).

    After a detection the detector restarts from the next value, as river does.
    """

    kind = "adwin"
    _params = ("delta", "clock", "max_buckets", "min_window_length", "grace_period")
    _state_fields = ("_i", "_f", "_totals", "_variances", "_counts")

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        self.delta = check_float("delta", delta, 0.0, 1.0, lo_open=True, hi_open=True)
        self.clock = check_int("clock", clock, 1, 2**31 - 1)
        self.max_buckets = check_int("max_buckets", max_buckets, 2, 10_000)
        self.min_window_length = check_int("min_window_length", min_window_length, 1, 2**31 - 1)
        self.grace_period = check_int("grace_period", grace_period, 0, 2**31 - 1)
        self._reset()

    def _reset(self) -> None:
        self._f = np.zeros(3, dtype=np.float64)
        self._i = np.zeros(4, dtype=np.int64)
        self._i[_NLEVELS] = 1
        self._totals = np.zeros((_LEVELS, self.max_buckets + 1), dtype=np.float64)
        self._variances = np.zeros((_LEVELS, self.max_buckets + 1), dtype=np.float64)
        self._counts = np.zeros(_LEVELS, dtype=np.int64)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _adwin_kernel(
            x,
            self.delta,
            self.clock,
            self.max_buckets,
            float(self.min_window_length),
            float(self.grace_period),
            self._f,
            self._i,
            self._totals,
            self._variances,
            self._counts,
            out,
        )
        return out[:n].copy()

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._f[_WIDTH])

    @property
    def total(self) -> float:
        """Sum of the values in the current window."""
        return float(self._f[_TOTAL])

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the mean within the current window."""
        return float(self._f[_VARIANCE])

    @property
    def estimation(self) -> float:
        """Mean of the current window (0 when empty)."""
        w = self._f[_WIDTH]
        return float(self._f[_TOTAL] / w) if w > 0 else 0.0
