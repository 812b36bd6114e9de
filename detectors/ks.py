"""Two-sample Kolmogorov-Smirnov test of a window's histogram against the reference's.

Statistic: ``D = max_k |F_ref(e_k) - F_cur(e_k)|`` over the bin edges, where ``F(e_k)``
is the share of values below edge ``e_k`` (the cumulative counts). When every bin holds
a single distinct value (integer data with edges between the integers, categories in
order) this is exactly the raw-sample statistic of ``scipy.stats.ks_2samp``. When a bin
spans several values it is a lower bound on the raw-sample D, and
:func:`ks_statistic_bounds` also gives the upper bound
``max_k max(F_ref(e_k) - F_cur(e_{k-1}), F_cur(e_k) - F_ref(e_{k-1}))``; the p-value of
the lower bound is then an upper bound on the raw-sample p-value (conservative).

p-value (two-sided) for the actual sample sizes, computed the way scipy 1.11-1.17's
``ks_2samp`` does it:

* ``method="exact"``: the lattice-path probability (Hodges 1958, inside method, with
  Viehmann's 2021 recursion for the proportion of paths that leave the band); ``D`` is
  rounded to a multiple of ``1 / lcm(n_ref, n_cur)`` first, as scipy does.
* ``method="asymp"``: ``kstwo.sf(D, round(n_ref * n_cur / (n_ref + n_cur)))``, the exact
  one-sample distribution at the effective size n. Its common branches are evaluated
  vectorised here: for small p-values twice the one-sided Smirnov tail, summed like
  ``scipy.special.smirnov`` but in plain double arithmetic (~20x faster, within ~1e-12
  relative of it at n ~ 1e3 and ~1e-9 at n ~ 1e5); otherwise the Pelz-Good series,
  following Simard & L'Ecuyer (2011) as scipy does, or Durbin's matrix in the corner
  where p > ~0.95 (compiled here; scipy runs it in Python). The rare remaining branches
  (n <= 140, D within 1/n of 0 or 1) call ``scipy.stats.kstwo.sf`` itself.
* ``method="auto"``: exact when ``max(n) <= 10_000`` (scipy's rule) *and*
  ``n_ref * n_cur <= 1_000_000``, else asymp. The extra bound keeps a monitor's
  evaluation cheap: the exact recursion costs about ``2 D n_ref n_cur`` steps, so
  scipy's own ``auto`` (exact at 10k x 1k) is ~1000x slower per feature; there the two
  methods differ by ~1% relative p-value (see tests/detectors/test_ks.py).

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(10000, 4)), rng.normal(size=(1000, 4))
>>> cur[:, 3] += 0.2
>>> edges = [quantile_edges(ref[:, k], 20) for k in range(4)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = ks_drift_rows(r.counts, c.counts)
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.024, 0.02, 0.022, 0.11], [3])
>>> ks_drift([0, 5, 10, 5], [6, 4, 0, 0]).p_value < 0.05
True
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy import stats

from detectors._hist import check_alpha, counts_pair, counts_rows
from detectors.result import DriftResult, DriftResults

__all__ = ["ks_drift", "ks_drift_rows", "ks_pvalue", "ks_statistic_bounds"]

NAME = "ks"
DEFAULT_THRESHOLD = 0.05
METHODS = ("auto", "exact", "asymp")
# scipy's ks_2samp: method="auto" is exact when both samples have at most this many values.
SCIPY_EXACT_MAX_N = 10_000
# Our extra bound on n_ref * n_cur for "auto" (see the module docstring).
EXACT_MAX_PRODUCT = 1_000_000

_SQRT2PI = math.sqrt(2.0 * math.pi)
_PI2 = math.pi**2
_PI4 = math.pi**4
_PI6 = math.pi**6


# --------------------------------------------------------------------------- statistic


def _cdf_rows(counts: np.ndarray) -> np.ndarray:
    # Integer cumulative counts divided once by n: the same float operations as scipy's
    # searchsorted(...) / n, so D comes out bit-identical on single-value bins.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.cumsum(counts, axis=-1) / counts.sum(axis=-1, keepdims=True)


def _d_lower(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    diff = _cdf_rows(ref) - _cdf_rows(cur)
    return np.maximum(diff.max(axis=-1), -diff.min(axis=-1))


def ks_statistic_bounds(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Lower and upper bound on the raw-sample KS statistic from two histograms.

    The lower bound is the statistic :func:`ks_drift` reports and equals the raw-sample
    D when every non-empty bin holds a single distinct value. The upper bound assumes
    nothing about where values sit inside a bin, so it stays loose even then.
    """
    ref, cur = counts_pair(ref_counts, cur_counts)
    if ref.sum() == 0 or cur.sum() == 0:
        return float("nan"), float("nan")
    f_ref, f_cur = _cdf_rows(ref), _cdf_rows(cur)
    prev_ref = np.concatenate(([0.0], f_ref[:-1]))
    prev_cur = np.concatenate(([0.0], f_cur[:-1]))
    lower = float(np.max(np.abs(f_ref - f_cur)))
    upper = float(max(np.max(f_ref - prev_cur), np.max(f_cur - prev_ref)))
    return lower, upper


# --------------------------------------------------------------------------- exact p-value


@numba.njit(cache=True, nogil=True)
def _exact_sf(n1, n2, h):  # pragma: no cover - compiled
    """P(D >= h / lcm(n1, n2)) under H0 by counting lattice paths that leave the band.

    Walk x over the larger sample's steps; ``u[y]`` is the share of paths from (0, 0)
    to (x, y) that have already touched ``|ng*x - mg*y| >= h``. A point outside the band
    has share 1; inside, paths arrive from the left with weight x/(x+y) and from below
    with weight y/(x+y). Only the band is visited, so the cost is O(m * h / mg).
    """
    m = max(n1, n2)
    n = min(n1, n2)
    a, b = m, n
    while b:
        a, b = b, a % b
    g = a
    mg = m // g
    ng = n // g
    u = np.ones(n + 1)
    for x in range(m + 1):
        lo = (ng * x - h) // mg + 1
        if lo < 0:
            lo = 0
        hi = -((-(ng * x + h)) // mg)  # exclusive, ceil division
        if hi > n + 1:
            hi = n + 1
        if lo >= hi:
            return 1.0  # the band closed: every path leaves it
        below = 1.0  # (x, lo - 1) is outside the band, or does not exist
        for y in range(lo, hi):
            val = 0.0 if x == 0 and y == 0 else (x * u[y] + y * below) / (x + y)
            u[y] = val
            below = val
    return u[n]


@numba.njit(cache=True, nogil=True)
def _exact_sf_many(n1, n2, h, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = _exact_sf(n1[i], n2[i], h[i])


# --------------------------------------------------------------------------- asymptotic p-value


@numba.njit(cache=True, nogil=True)
def _smirnov_sf(n, d):  # pragma: no cover - compiled
    """One-sided P(D+_n >= d) by the Birnbaum-Tingey sum, in log space.

    Term v is ``d * C(n, v) * (d + v/n)^(v-1) * (1 - d - v/n)^(n-v)`` for
    ``v = 0 .. floor(n (1 - d))``; all terms are positive, so the plain sum is stable.
    ``scipy.special.smirnov`` evaluates the same sum in double-double arithmetic,
    ~20x slower; here log C(n, v) is carried by recurrence, good to ~1e-12 relative.
    """
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    last = int(math.floor(n * (1.0 - d)))
    log_d = math.log(d)
    log_comb = 0.0
    total = 0.0
    for v in range(last + 1):
        a = d + v / n
        if v > 0:
            log_comb += math.log((n - v + 1) / v)
        if a >= 1.0:
            continue  # (1 - a)^(n - v) = 0: v < n here because d > 0
        total += math.exp(log_comb + (v - 1) * math.log(a) + (n - v) * math.log1p(-a) + log_d)
    return total


@numba.njit(cache=True, nogil=True)
def _two_smirnov_many(n, d, out):  # pragma: no cover - compiled
    for i in range(out.size):
        p = 2.0 * _smirnov_sf(n[i], d[i])
        out[i] = min(max(p, 0.0), 1.0)


@numba.njit(cache=True, nogil=True)
def _durbin_cdf(n, d):  # pragma: no cover - compiled
    """P(D_n < d) by Durbin's matrix (Marsaglia, Tsang & Wang 2003), as scipy's kstwo.

    With ``n d = k - h`` (k integer, 0 <= h < 1) the answer is ``n!/n^n`` times entry
    (k, k) of ``H^n`` for an m x m matrix H, m = 2k - 1. Powers are taken by squaring,
    with exponents of 2 split off so nothing overflows.
    """
    nd = n * d
    if d >= 1.0:
        return 1.0
    if nd <= 0.5:
        return 0.0
    k = int(math.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    w = np.empty(m)
    v = np.empty(m)
    fac = 1.0
    for j in range(1, m + 1):
        w[j - 1] = fac  # 1 / (j - 1)!
        fac /= j
        v[j - 1] = (1.0 - h**j) * fac
    v[m - 1] = (1.0 + max(2.0 * h - 1.0, 0.0) ** m - 2.0 * h**m) * fac
    mat = np.zeros((m, m))
    for col in range(1, m):
        for row in range(col - 1, m):
            mat[row, col] = w[row - col + 1]
    mat[:, 0] = v
    mat[m - 1, :] = v[::-1]
    big = 2.0**128
    power = np.eye(m)
    expo = 0
    mat_expo = 0
    nn = n
    while nn > 0:
        if nn % 2:
            power = power @ mat
            expo += mat_expo
        mat = mat @ mat
        mat_expo *= 2
        if abs(mat[k - 1, k - 1]) > big:
            mat /= big
            mat_expo += 128
        nn //= 2
    p = power[k - 1, k - 1]
    for i in range(1, n + 1):  # times n! / n^n, rescaled as it shrinks
        p = i * p / n
        if abs(p) < 1.0 / big:
            p *= big
            expo -= 128
    return math.ldexp(p, expo)


@numba.njit(cache=True, nogil=True)
def _durbin_sf_many(n, d, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = min(max(1.0 - _durbin_cdf(n[i], d[i]), 0.0), 1.0)


def _durbin_sf(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = np.empty(d.size)
    _durbin_sf_many(n.astype(np.int64), d.astype(np.float64), out)
    return out


def _two_smirnov(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = np.empty(d.size)
    _two_smirnov_many(n.astype(np.int64), d.astype(np.float64), out)
    return out


@numba.njit(cache=True, nogil=True)
def _pelz_good_cdf(n, x):  # pragma: no cover - compiled
    """Pelz-Good (1976) approximation of P(D_n <= x), as in Simard & L'Ecuyer (2011).

    ``K0(z) + K1(z)/sqrt(n) + K2(z)/n + K3(z)/n^1.5`` with ``z = x sqrt(n)``, each K a
    theta-function series summed over ``k = 1 .. ceil(16 z / pi)``.
    """
    z = math.sqrt(n) * x
    z2 = z * z
    z4 = z2 * z2
    z6 = z4 * z2
    q = math.exp(-_PI2 / 8.0 / z2)
    a1, b1 = -z2, _PI2 / 4.0
    a2 = 6.0 * z6 + 2.0 * z4
    b2 = (2.0 * z4 - 5.0 * z2) * _PI2 / 4.0
    c2 = _PI4 * (1.0 - 2.0 * z2) / 16.0
    a3 = -30.0 * z6 - 90.0 * z4 * z4
    b3 = _PI2 * (135.0 * z4 - 96.0 * z6) / 4.0
    c3 = _PI4 * (-60.0 * z2 + 212.0 * z4) / 16.0
    d3 = _PI6 * (5.0 - 30.0 * z2) / 64.0
    kmax = int(math.ceil(16.0 * z / math.pi))
    # Sums over odd m = 2k - 1 of poly(m^2) * q^(m^2), by Horner in q^(8k) from the top k.
    s0 = s1 = s2 = s3 = 0.0
    for k in range(kmax, 0, -1):
        m2 = float((2 * k - 1) ** 2)
        qp = q ** (8 * k)
        s0 = s0 * qp + 1.0
        s1 = s1 * qp + (a1 + b1 * m2)
        s2 = s2 * qp + (a2 + b2 * m2 + c2 * m2 * m2)
        s3 = s3 * qp + (a3 + b3 * m2 + c3 * m2 * m2 + d3 * m2 * m2 * m2)
    k0 = s0 * q * _SQRT2PI / z
    k1 = s1 * q * _SQRT2PI / (6.0 * z4)
    k2 = s2 * q * _SQRT2PI / (72.0 * z6 * z)
    k3 = s3 * q * _SQRT2PI / (6480.0 * z4 * z6)
    # Second family, over all integers k: q2^(k^2) with q2 = exp(-pi^2 / (2 z^2)).
    q2 = math.exp(-_PI2 / 2.0 / z2)
    e2 = 0.0
    e3 = 0.0
    sq3z = math.sqrt(3.0) * z
    for k in range(kmax, 0, -1):
        kk = float(k * k)
        t = kk * q2**kk
        e2 += t
        e3 += (sq3z + math.pi * k) * (sq3z - math.pi * k) * t
    k2 += e2 * (_PI2 * _SQRT2PI / (-36.0 * z2 * z))
    k3 += e3 * (_PI2 * _SQRT2PI / (216.0 * z6))
    return k0 + k1 / math.sqrt(n) + k2 / n + k3 / (n * math.sqrt(n))


@numba.njit(cache=True, nogil=True)
def _pelz_good_sf_many(n, x, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = min(max(1.0 - _pelz_good_cdf(n[i], x[i]), 0.0), 1.0)


def _kstwo_sf(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """``scipy.stats.kstwo.sf(d, n)`` with the frequent branches vectorised."""
    d = np.asarray(d, dtype=np.float64)
    n = np.asarray(n, dtype=np.int64)
    out = np.full(d.shape, np.nan)
    nf = n.astype(np.float64)
    t = nf * d
    nx2 = t * d
    todo = np.isfinite(d) & (n > 0)

    def take(mask):
        nonlocal todo
        sel = todo & mask
        todo = todo & ~mask
        return sel

    sel = take(d >= 1.0)
    out[sel] = 0.0
    sel = take(t <= 0.5)  # includes d <= 0
    out[sel] = 1.0
    fallback = take(t <= 1.0)  # Ruben-Gambino lower corner
    sel = take(t >= nf - 1.0)  # Ruben-Gambino upper corner
    out[sel] = np.clip(2.0 * (1.0 - d[sel]) ** nf[sel], 0.0, 1.0)
    sel = take(d >= 0.5)
    out[sel] = _two_smirnov(n[sel], d[sel])
    fallback |= take(n <= 140)
    sel = take(nx2 >= 370.0)
    out[sel] = 0.0
    sel = take(nx2 >= 2.2)
    out[sel] = _two_smirnov(n[sel], d[sel])
    sel = take((n <= 100_000) & (nf * d**1.5 <= 1.4))  # the corner where p > ~0.95
    if sel.any():
        out[sel] = _durbin_sf(n[sel], d[sel])
    sel = todo
    if sel.any():
        pg = np.empty(int(sel.sum()))
        _pelz_good_sf_many(nf[sel], d[sel], pg)
        out[sel] = pg
    if fallback.any():
        out[fallback] = stats.kstwo.sf(d[fallback], n[fallback])
    return out


def ks_pvalue(d, n_ref, n_cur, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Two-sided KS p-value of statistic ``d`` for sample sizes ``n_ref`` and ``n_cur``.

    Broadcasts over arrays. Returns ``(d_used, p)``: where the exact method ran, ``d`` is
    rounded to the lattice ``h / lcm(n_ref, n_cur)`` as scipy's ``ks_2samp`` does.
    Entries with a zero sample size give NaN.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    d, n1, n2 = np.broadcast_arrays(
        np.asarray(d, dtype=np.float64), np.asarray(n_ref), np.asarray(n_cur)
    )
    shape = d.shape
    if np.any(n1 != np.round(n1)) or np.any(n2 != np.round(n2)):
        raise ValueError("n_ref and n_cur must be whole numbers of observations")
    n1 = n1.astype(np.int64).ravel()
    n2 = n2.astype(np.int64).ravel()
    d = d.astype(np.float64).ravel()  # a copy: broadcast views are read-only
    p = np.full(d.shape, np.nan)
    ok = (n1 > 0) & (n2 > 0) & np.isfinite(d)
    d[~ok] = np.nan
    big = np.maximum(n1, n2)
    if method == "exact":
        exact = ok.copy()
    elif method == "asymp":
        exact = np.zeros_like(ok)
    else:
        exact = ok & (big <= SCIPY_EXACT_MAX_N) & (n1.astype(np.float64) * n2 <= EXACT_MAX_PRODUCT)
    # scipy switches to asymp when lcm(n_ref, n_cur) does not fit in an int32.
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.gcd(n1, n2)
        exact &= (n1 // np.maximum(g, 1)) < np.iinfo(np.int32).max / np.maximum(n2 // np.maximum(g, 1), 1)
    if exact.any():
        e1, e2 = n1[exact], n2[exact]
        lcm = (e1 // np.gcd(e1, e2)) * e2
        h = np.round(d[exact] * lcm).astype(np.int64)
        pe = np.empty(h.size)
        _exact_sf_many(e1, e2, h, pe)
        pe[h == 0] = 1.0
        d[exact] = h / lcm
        good = (pe >= 0.0) & (pe <= 1.0)
        p[exact] = pe
        # Like scipy, fall back to the asymptotic form if the exact count went wrong.
        exact[np.flatnonzero(exact)[~good]] = False
    asymp = ok & ~exact
    if asymp.any():
        a1 = n1[asymp].astype(np.float64)
        a2 = n2[asymp].astype(np.float64)
        en = np.round(a1 * a2 / (a1 + a2))
        p[asymp] = _kstwo_sf(d[asymp], en.astype(np.int64))
    return d.reshape(shape), p.reshape(shape)


# --------------------------------------------------------------------------- the test


def _sample_sizes(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_ref, n_cur = ref.sum(axis=-1), cur.sum(axis=-1)
    if np.any(n_ref != np.round(n_ref)) or np.any(n_cur != np.round(n_cur)):
        raise ValueError("KS needs whole-number counts (its p-value depends on the sample sizes)")
    return n_ref, n_cur


def ks_drift(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
) -> DriftResult:
    """KS test of one feature's window counts against its reference counts (same bins).

    ``statistic`` is the lower bound D from the bin edges (moved onto the
    ``1 / lcm(n_ref, n_cur)`` lattice when the exact method ran, as scipy reports it).
    """
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    n_ref, n_cur = _sample_sizes(ref, cur)
    if n_ref == 0 or n_cur == 0:
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        return DriftResult(NAME, float("nan"), float("nan"), threshold, False)
    d = float(_d_lower(ref, cur))
    d_used, p = ks_pvalue(d, n_ref, n_cur, method)
    pv = float(p)
    return DriftResult(NAME, float(d_used), pv, threshold, bool(pv < threshold))


def ks_drift_rows(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "auto",
) -> DriftResults:
    """KS test per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    n_ref, n_cur = _sample_sizes(ref, cur)
    d, p = ks_pvalue(_d_lower(ref, cur), n_ref, n_cur, method)
    with np.errstate(invalid="ignore"):
        drifted = p < threshold
    return DriftResults(NAME, d, p, threshold, drifted)
