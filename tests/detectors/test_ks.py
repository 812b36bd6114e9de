"""KS statistic and p-value against scipy.stats.ks_2samp on the same data.

Tolerances: on single-value bins the statistic is bit-identical; exact p-values agree
to 1e-10 relative; asymptotic ones to 1e-9 relative (the Smirnov tail is summed in plain
double here, double-double in scipy); on genuinely binned data the statistic brackets
the raw one (1e-12 slack for float rounding).
"""

import numpy as np
import pytest
from scipy import stats

from detectors.ks import (
    EXACT_MAX_PRODUCT,
    _kstwo_sf,
    ks_drift,
    ks_drift_rows,
    ks_pvalue,
    ks_statistic_bounds,
)
from detectors.sketch import Histogram, HistogramBank, quantile_edges

EXACT_RTOL = 1e-10
ASYMP_RTOL = 1e-9


def _int_counts(values, n_values):
    h = Histogram(np.arange(n_values - 1) + 0.5)
    h.update(np.asarray(values, dtype=float))
    return h.counts


def _int_samples(rng, n_ref, n_cur, k=12):
    ref = rng.choice(k, size=n_ref, p=rng.dirichlet(np.ones(k) * 3))
    cur = rng.choice(k, size=n_cur, p=rng.dirichlet(np.ones(k) * 3)) if rng.random() < 0.5 else rng.choice(ref, n_cur)
    return ref, cur, k


@pytest.mark.parametrize("seed", range(40))
def test_exact_matches_scipy_on_single_value_bins(seed):
    rng = np.random.default_rng(seed)
    n_ref = int(rng.integers(1, 600))
    n_cur = n_ref if seed % 5 == 0 else int(rng.integers(1, 600))  # the n1 == n2 case too
    ref, cur, k = _int_samples(rng, n_ref, n_cur)
    want = stats.ks_2samp(ref, cur, method="exact")
    got = ks_drift(_int_counts(ref, k), _int_counts(cur, k), method="exact")
    assert got.statistic == want.statistic
    assert got.p_value == pytest.approx(want.pvalue, rel=EXACT_RTOL, abs=1e-300)
    # small samples: our "auto" picks exact, as scipy's does
    auto = ks_drift(_int_counts(ref, k), _int_counts(cur, k))
    assert auto.p_value == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=EXACT_RTOL, abs=1e-300)
    assert auto.drifted == (want.pvalue < 0.05)


@pytest.mark.parametrize("seed", range(40))
def test_asymp_matches_scipy_on_single_value_bins(seed):
    rng = np.random.default_rng(100 + seed)
    n_ref = int(rng.integers(20, 12_000))
    n_cur = int(rng.integers(20, 3_000))
    ref, cur, k = _int_samples(rng, n_ref, n_cur, k=int(rng.integers(2, 20)))
    want = stats.ks_2samp(ref, cur, method="asymp")
    got = ks_drift(_int_counts(ref, k), _int_counts(cur, k), method="asymp")
    assert got.statistic == want.statistic
    assert got.p_value == pytest.approx(want.pvalue, rel=ASYMP_RTOL, abs=1e-300)


def test_kstwo_branches_match_scipy():
    # every branch of kstwo.sf: tiny n (fallback), Ruben-Gambino corners, the Durbin
    # corner (fallback), Pelz-Good, the doubled Smirnov tail, and the far tail (0)
    n = np.array([5, 50, 141, 141, 300, 909, 909, 909, 909, 909, 2000, 5000, 909, 909])
    d = np.array([0.3, 0.01, 0.005, 0.995, 0.02, 0.012, 0.03, 0.045, 0.06, 0.2, 0.033, 0.02, 0.7, 0.8])
    got = _kstwo_sf(d, n)
    want = stats.kstwo.sf(d, n)
    np.testing.assert_allclose(got, want, rtol=ASYMP_RTOL, atol=1e-300)


def test_auto_differs_from_scipy_auto_only_by_exact_vs_asymp_at_large_sizes():
    # At 10k x 1k scipy's auto runs the exact count (~2 ms); ours the asymptotic form.
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 15, 10_000)
    for shift in (0, 1):
        cur = np.clip(rng.integers(0, 15, 1000) + shift * (rng.random(1000) < 0.1), 0, 15)
        got = ks_drift(_int_counts(ref, 16), _int_counts(cur, 16))
        assert EXACT_MAX_PRODUCT < 10_000 * 1000
        assert got.p_value == pytest.approx(stats.ks_2samp(ref, cur, method="asymp").pvalue, rel=ASYMP_RTOL)
        # documented gap to scipy's exact answer: a few percent relative at most
        assert got.p_value == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=0.03)


@pytest.mark.parametrize("seed", range(10))
def test_binned_statistic_brackets_the_raw_one(seed):
    rng = np.random.default_rng(200 + seed)
    ref = rng.normal(size=int(rng.integers(100, 5000)))
    cur = rng.normal(loc=rng.uniform(0, 0.5), scale=rng.uniform(0.8, 1.3), size=int(rng.integers(50, 2000)))
    edges = quantile_edges(ref, int(rng.integers(3, 30)))
    r, c = Histogram(edges), Histogram(edges)
    r.update(ref)
    c.update(cur)
    lower, upper = ks_statistic_bounds(r.counts, c.counts)
    raw = stats.ks_2samp(ref, cur, method="asymp")
    assert lower - 1e-12 <= raw.statistic <= upper + 1e-12
    res = ks_drift(r.counts, c.counts, method="asymp")
    assert res.statistic == lower
    # the p-value of the lower bound is conservative
    assert res.p_value >= raw.pvalue * (1 - ASYMP_RTOL)


def test_lower_bound_is_exact_on_single_value_bins():
    rng = np.random.default_rng(9)
    ref, cur = rng.integers(0, 8, 500), rng.integers(1, 9, 300)
    lower, upper = ks_statistic_bounds(_int_counts(ref, 10), _int_counts(cur, 10))
    # method="asymp": scipy reports the raw maximum (exact moves it onto the lattice)
    assert lower == stats.ks_2samp(ref, cur, method="asymp").statistic
    assert upper >= lower


def test_rows_equal_scalar_and_mixed_methods():
    rng = np.random.default_rng(12)
    data_ref = rng.normal(size=(8000, 5))
    data_cur = rng.normal(size=(1500, 5)) + np.array([0, 0.1, 0, 0.3, 0])
    edges = [quantile_edges(data_ref[:, k], 10 + k) for k in range(5)]
    r, c = HistogramBank(edges), HistogramBank(edges)
    r.update(data_ref)
    c.update(data_cur)
    ref_counts, cur_counts = r.counts.copy(), c.counts.copy()
    # a small-sample row that will take the exact path
    ref_counts[2] = np.where(ref_counts[2] > 0, 3, 0)
    cur_counts[2] = np.where(cur_counts[2] > 0, 2, 0)
    rows = ks_drift_rows(ref_counts, cur_counts)
    for i in range(5):
        one = ks_drift(ref_counts[i], cur_counts[i])
        assert rows.statistic[i] == one.statistic
        assert rows.p_value[i] == pytest.approx(one.p_value, rel=1e-12)
        assert rows.drifted[i] == one.drifted
    assert rows.drifted[3] and not rows.drifted[0]


def test_pvalue_api_and_errors():
    # exact: d is moved onto the lattice h / lcm(n_ref, n_cur), as scipy does
    d, p = ks_pvalue(0.1000001, 100, 80, method="exact")
    assert d == 40 / 400
    # broadcasting gives the same numbers as one call per entry
    ds = np.array([0.05, 0.1, 0.2, 0.4])
    d_vec, p_vec = ks_pvalue(ds, np.array([100, 100, 5000, 5000]), 80)
    for i in range(4):
        assert p_vec[i] == ks_pvalue(ds[i], [100, 100, 5000, 5000][i], 80)[1]
    _, p0 = ks_pvalue(0.0, 100, 80)
    assert p0 == 1.0
    _, pn = ks_pvalue(0.2, 0, 80)
    assert np.isnan(pn)
    with pytest.raises(ValueError, match="method"):
        ks_pvalue(0.1, 10, 10, method="fast")
    with pytest.raises(ValueError, match="whole"):
        ks_drift([1.5, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        ks_drift([1, 2], [1, 2], threshold=1.5)
    empty = ks_drift([0, 0], [1, 2])
    assert np.isnan(empty.statistic) and np.isnan(empty.p_value) and not empty.drifted
