"""KSWIN (Kolmogorov-Smirnov windowing) change detector, compiled over arrays.

Reproduces river 0.26's ``river.drift.KSWIN`` alarm positions on the same input and
seed. KSWIN keeps the last ``window_size`` values; once the window is full, every new
value triggers a two-sample KS test between the newest ``stat_size`` values and
``stat_size`` values drawn without replacement from the older part of the window, and
an alarm is raised when the p-value is <= ``alpha`` and the KS statistic exceeds 0.1
(Raab et al. 2020). As in river, after a detection the detector restarts from the next
value: the window empties and, with a seed, the random generator is re-seeded.

How river is matched
--------------------
* **Random draws.** river draws the older sample with ``random.Random(seed).sample(
  range(window_size - stat_size), stat_size)``. The kernel carries CPython's Mersenne
  Twister (state taken from ``random.Random(seed).getstate()``, then advanced in the
  kernel) and reproduces ``Random.sample``'s two strategies (pool swap for small
  populations, rejection of repeats for large ones) and ``_randbelow``'s rejection of
  ``getrandbits(bit_length)``, so it consumes the same 32-bit words and picks the same
  positions. The generator state is part of the serialised state.
* **KS p-value.** Both samples have ``stat_size`` values, so the statistic is ``h /
  stat_size`` for an integer ``h`` (scipy's exact method rounds it to that grid) and the
  p-value is a decreasing function of ``h`` alone. At construction the smallest ``h``
  that alarms is found by asking ``scipy.stats.ks_2samp`` (``method="auto"``, as river)
  about samples whose statistic is exactly ``h / stat_size``; the kernel then only
  computes ``h`` (ties handled like scipy's ``searchsorted(side="right")``) and
  compares. :attr:`KSWIN.p_value` reports the p-value of the last test the same way.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 1000), rng.normal(1.5, 1.0, 1000)])
>>> det = KSWIN(alpha=0.0001, seed=42)
>>> det.update_many(stream).tolist()
[1023]
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Sequence

import numba
import numpy as np
from scipy import stats

from detectors.change_detector import DRIFT, ChangeDetector, check_float, check_int

__all__ = ["KSWIN"]

# int state slots after the shared flags
_N, _COUNT, _HEAD, _LAST_H, _MTI = 2, 3, 4, 5, 6
_MT_N = 624
_MT_M = 397


@numba.njit(cache=True, error_model="numpy")
def _twist(mt):  # pragma: no cover - compiled
    # MT19937 state regeneration, as in CPython's _randommodule.c.
    for kk in range(_MT_N - _MT_M):
        y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
        mt[kk] = mt[kk + _MT_M] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
    for kk in range(_MT_N - _MT_M, _MT_N - 1):
        y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7FFFFFFF)
        mt[kk] = mt[kk + _MT_M - _MT_N] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
    y = (mt[_MT_N - 1] & 0x80000000) | (mt[0] & 0x7FFFFFFF)
    mt[_MT_N - 1] = mt[_MT_M - 1] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)


@numba.njit(cache=True, error_model="numpy")
def _genrand(mt, mti):  # pragma: no cover - compiled
    """Next 32-bit output and the new position (CPython's genrand_uint32)."""
    if mti >= _MT_N:
        _twist(mt)
        mti = 0
    y = mt[mti]
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y, mti + 1


@numba.njit(cache=True, error_model="numpy")
def _randbelow(n, mt, mti):  # pragma: no cover - compiled
    """CPython's Random._randbelow_with_getrandbits for 0 < n < 2**31."""
    # n.bit_length(): frexp's exponent, exact since n < 2**31 converts exactly to float.
    k = math.frexp(float(n))[1]
    y, mti = _genrand(mt, mti)
    r = y >> (32 - k)
    while r >= n:
        y, mti = _genrand(mt, mti)
        r = y >> (32 - k)
    return r, mti


@numba.njit(cache=True, error_model="numpy")
def _sample(pop, k, setsize, mt, mti, result, pool, selected):  # pragma: no cover
    """CPython's Random.sample(range(pop), k): same draws, same picks."""
    if pop <= setsize:
        for j in range(pop):
            pool[j] = j
        for j in range(k):
            r, mti = _randbelow(pop - j, mt, mti)
            result[j] = pool[r]
            pool[r] = pool[pop - j - 1]
    else:
        for j in range(k):
            r, mti = _randbelow(pop, mt, mti)
            while selected[r]:
                r, mti = _randbelow(pop, mt, mti)
            selected[r] = True
            result[j] = r
        for j in range(k):
            selected[result[j]] = False
    return mti


@numba.njit(cache=True, error_model="numpy")
def _sorted_insert(vals, slots, cnt, v, slot):  # pragma: no cover - compiled
    # After existing equal values, like searchsorted(side="right").
    lo = 0
    hi = cnt
    while lo < hi:
        mid = (lo + hi) >> 1
        if vals[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    for j in range(cnt, lo, -1):
        vals[j] = vals[j - 1]
        slots[j] = slots[j - 1]
    vals[lo] = v
    slots[lo] = slot


@numba.njit(cache=True, error_model="numpy")
def _sorted_remove(vals, slots, cnt, v, slot):  # pragma: no cover - compiled
    lo = 0
    hi = cnt
    while lo < hi:  # first position with value >= v
        mid = (lo + hi) >> 1
        if vals[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    while slots[lo] != slot:
        lo += 1
    for j in range(lo, cnt - 1):
        vals[j] = vals[j + 1]
        slots[j] = slots[j + 1]


@numba.njit(cache=True, error_model="numpy")
def _build_sorted(win, count, vals, slots):  # pragma: no cover - compiled
    order = np.argsort(win[:count], kind="mergesort")
    for j in range(count):
        vals[j] = win[order[j]]
        slots[j] = order[j]


@numba.njit(cache=True, error_model="numpy")
def _ks_distance(vals, slots, head, window_size, pop, flagged):  # pragma: no cover
    """Integer KS distance between the flagged older values and the newest ones.

    Walks the whole window in value order: ``max |#{older <= v} - #{recent <= v}|``
    over all values v, evaluated after the last of a run of equal values (scipy's
    ``searchsorted(side="right")`` treatment of ties).
    """
    n_old = 0
    n_new = 0
    d = 0
    for j in range(window_size):
        slot = slots[j]
        age = slot - head
        if age < 0:
            age += window_size
        if age >= pop:
            n_new += 1
        elif flagged[slot]:
            n_old += 1
        if j == window_size - 1 or vals[j + 1] != vals[j]:
            diff = n_old - n_new if n_old >= n_new else n_new - n_old
            if diff > d:
                d = diff
    return d


@numba.njit(cache=True, error_model="numpy")
def _kswin_kernel(
    x, window_size, stat_size, setsize, h_min, reseed, mt0, win, mt, i, out
):  # pragma: no cover - compiled
    pop = window_size - stat_size
    picks = np.empty(stat_size, dtype=np.int64)
    pool = np.empty(pop, dtype=np.int64)
    selected = np.zeros(pop, dtype=np.bool_)
    flagged = np.zeros(window_size, dtype=np.bool_)
    n = i[_N]
    count = i[_COUNT]
    head = i[_HEAD]
    last_h = i[_LAST_H]
    mti = i[_MTI]
    drift = i[DRIFT]
    # The window in value order (values and ring slots): derived from the window, so it
    # is rebuilt here rather than stored, then kept sorted as values come and go.
    vals = np.empty(window_size, dtype=np.float64)
    slots = np.empty(window_size, dtype=np.int64)
    if count > 0:
        _build_sorted(win, count, vals, slots)
    n_out = 0
    for t in range(x.shape[0]):
        if drift != 0:
            # river re-creates the window and Random(seed) on the value after an alarm.
            n = 0
            count = 0
            head = 0
            last_h = -1
            if reseed:
                mt[:] = mt0
                mti = _MT_N
            drift = 0
        n += 1
        v = x[t]
        if count < window_size:
            slot = (head + count) % window_size
            win[slot] = v
            _sorted_insert(vals, slots, count, v, slot)
            count += 1
        else:
            _sorted_remove(vals, slots, count, win[head], head)
            win[head] = v
            _sorted_insert(vals, slots, count - 1, v, head)
            head = (head + 1) % window_size
        if count >= window_size:
            mti = _sample(pop, stat_size, setsize, mt, mti, picks, pool, selected)
            for j in range(stat_size):
                flagged[(head + picks[j]) % window_size] = True
            last_h = _ks_distance(vals, slots, head, window_size, pop, flagged)
            for j in range(stat_size):
                flagged[(head + picks[j]) % window_size] = False
            if last_h >= h_min:
                drift = 1
                out[n_out] = t
                n_out += 1
    i[_N] = n
    i[_COUNT] = count
    i[_HEAD] = head
    i[_LAST_H] = last_h
    i[_MTI] = mti
    i[DRIFT] = drift
    return n_out


@functools.lru_cache(maxsize=256)
def _ks_test_at(stat_size: int, h: int) -> tuple[float, float]:
    """(statistic, p-value) scipy's ks_2samp gives when the ECDFs differ by h/stat_size."""
    a = np.arange(stat_size, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = stats.ks_2samp(a, a + h, method="auto")
    return float(res.statistic), float(res.pvalue)


def _alarms(stat_size: int, h: int, alpha: float) -> bool:
    st, p = _ks_test_at(stat_size, h)
    return p <= alpha and st > 0.1


@functools.lru_cache(maxsize=256)
def _min_alarming_distance(stat_size: int, alpha: float) -> int:
    """Smallest integer ECDF distance h that makes river's KSWIN alarm (stat_size + 1: never)."""
    if not _alarms(stat_size, stat_size, alpha):
        return stat_size + 1
    lo, hi = 0, stat_size  # alarm(hi) holds; p-value falls and statistic grows with h
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _alarms(stat_size, mid, alpha):
            hi = mid
        else:
            lo = mid
    return hi


def _sample_setsize(k: int) -> int:
    # The population size up to which random.sample uses its pool strategy.
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return setsize


class KSWIN(ChangeDetector):
    """Kolmogorov-Smirnov windowing detector for any change in a stream's distribution.

    Parameters
    ----------
    alpha
        Significance of the KS test, in (0, 1); river advises below 0.01.
    window_size
        Length of the sliding window (>= 2 * stat_size).
    stat_size
        Size of the recent sample and of the sample drawn from the older part (>= 1).
    seed
        Seed of the random draws (an int, for reproducible alarms; None: from the OS).
    window
        Values to start the window with, oldest first (at most the last
        ``window_size`` are kept); used at construction and by :meth:`reset`.

    After a detection the detector restarts from the next value, as river does (with
    an empty window, and re-seeded when ``seed`` is set).
    """

    kind = "kswin"
    _params = ("alpha", "window_size", "stat_size", "seed", "window")
    _state_fields = ("_i", "_win", "_mt")

    def __init__(
        self,
        alpha: float = 0.005,
        window_size: int = 100,
        stat_size: int = 30,
        seed: int | None = None,
        window: Sequence[float] | None = None,
    ):
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        self.stat_size = check_int("stat_size", stat_size, 1, 10_000)
        self.window_size = check_int("window_size", window_size, 1, 2**30)
        if self.window_size < 2 * self.stat_size:
            # river would fail drawing stat_size values from the older part of the window.
            raise ValueError(
                f"window_size must be >= 2 * stat_size = {2 * self.stat_size}, "
                f"got window_size={window_size!r}"
            )
        if seed is not None:
            seed = check_int("seed", seed, -(2**63), 2**63 - 1)
        self.seed = seed
        if window is not None:
            w = np.asarray(window, dtype=np.float64)
            if w.ndim != 1 or not np.all(np.isfinite(w)):
                raise ValueError("window must be a 1-D sequence of finite numbers")
            window = [float(v) for v in w]
        self.window = window

        self._setsize = _sample_setsize(self.stat_size)
        self._h_min = _min_alarming_distance(self.stat_size, self.alpha)
        rng = random.Random(seed) if seed is not None else random.Random()
        _, words, _ = rng.getstate()
        self._mt0 = np.array(words[:_MT_N], dtype=np.int64)
        self._mti0 = int(words[_MT_N])
        self._reset()

    def _reset(self) -> None:
        self._i = np.zeros(7, dtype=np.int64)
        self._i[_LAST_H] = -1
        self._i[_MTI] = self._mti0
        self._mt = self._mt0.copy()
        self._win = np.zeros(self.window_size, dtype=np.float64)
        if self.window:
            init = np.asarray(self.window[-self.window_size :], dtype=np.float64)
            self._win[: init.size] = init
            self._i[_COUNT] = init.size

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape[0], dtype=np.int64)
        n = _kswin_kernel(
            x,
            self.window_size,
            self.stat_size,
            self._setsize,
            self._h_min,
            self.seed is not None,
            self._mt0,
            self._win,
            self._mt,
            self._i,
            out,
        )
        return out[:n].copy()

    @property
    def p_value(self) -> float | None:
        """p-value of the last KS test; None if none has run since the last (re)start.

        (river reports 0 in that case.)
        """
        h = int(self._i[_LAST_H])
        if h < 0:
            return None
        return _ks_test_at(self.stat_size, h)[1]

    @property
    def n(self) -> int:
        """Values seen since the last (re)start."""
        return int(self._i[_N])
