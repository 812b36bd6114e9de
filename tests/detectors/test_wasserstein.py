"""Normalised Wasserstein distance against evidently 0.7's wasserstein stattest.

Exact case (tolerance 1e-10 relative): integer data with edges between the integers,
so the bin centres are the values themselves and W1 and the std are the raw-sample ones.
Binned case: |W1(binned) - W1(raw)| <= mean distance of each sample's values from their
bin points (a coupling bound), checked against scipy.stats.wasserstein_distance.
"""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import (
    _wasserstein_distance_norm,
)
from evidently.legacy.core import ColumnType
from scipy import stats

from detectors.sketch import Histogram, HistogramBank, quantile_edges
from detectors.wasserstein import bin_points, wasserstein_drift, wasserstein_drift_rows

RTOL = 1e-10


@pytest.mark.parametrize("seed", range(10))
def test_equals_evidently_on_single_value_bins(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 30))
    ref = rng.choice(k, size=int(rng.integers(100, 5000)), p=rng.dirichlet(np.ones(k)))
    cur = rng.choice(k, size=int(rng.integers(50, 2000)), p=rng.dirichlet(np.ones(k))) + int(rng.integers(0, 3))
    edges = np.arange(k + 1) + 0.5  # bins hold 0, 1, ..., k+1
    r, c = Histogram(edges), Histogram(edges)
    r.update(ref.astype(float))
    c.update(cur.astype(float))
    np.testing.assert_array_equal(bin_points(edges), np.arange(k + 2))
    want, _ = _wasserstein_distance_norm(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
    got = wasserstein_drift(r.counts, c.counts, edges=edges)
    assert got.statistic == pytest.approx(float(want), rel=RTOL)
    assert got.drifted == (float(want) >= 0.1)


def test_constant_reference_uses_evidently_floor():
    ref, cur = np.full(100, 3), np.full(50, 4)
    want, _ = _wasserstein_distance_norm(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
    got = wasserstein_drift([0, 100, 0], [0, 0, 50], points=[2.0, 3.0, 4.0])
    assert got.statistic == pytest.approx(float(want), rel=RTOL)


@pytest.mark.parametrize("seed", range(6))
def test_binned_w1_within_the_coupling_bound(seed):
    rng = np.random.default_rng(50 + seed)
    ref = rng.normal(size=4000)
    cur = rng.normal(rng.uniform(0, 1), rng.uniform(0.7, 1.5), size=1000)
    edges = quantile_edges(ref, 30)
    pts = bin_points(edges)
    r, c = Histogram(edges), Histogram(edges)
    r.update(ref)
    c.update(cur)
    binned = wasserstein_drift(r.counts, c.counts, points=pts, ref_std=1.0).statistic  # = W1
    raw = stats.wasserstein_distance(ref, cur)
    moved = np.mean(np.abs(ref - pts[np.searchsorted(edges, ref, side="right")]))
    moved += np.mean(np.abs(cur - pts[np.searchsorted(edges, cur, side="right")]))
    assert abs(binned - raw) <= moved + 1e-12


def test_rows_equal_scalar_with_bank_edges():
    rng = np.random.default_rng(1)
    data_ref, data_cur = rng.normal(size=(3000, 4)), rng.normal(size=(700, 4)) * 1.2
    edges = [quantile_edges(data_ref[:, k], n) for k, n in enumerate((4, 10, 20, 7))]
    r, c = HistogramBank(edges), HistogramBank(edges)
    r.update(data_ref)
    c.update(data_cur)
    rows = wasserstein_drift_rows(r.counts, c.counts, edges=r.edges)
    stds = data_ref.std(axis=0)
    rows_std = wasserstein_drift_rows(r.counts, c.counts, points=bin_points(r.edges), ref_std=stds)
    for k in range(4):
        one = wasserstein_drift(r.feature(k).counts, c.feature(k).counts, edges=edges[k])
        assert rows.statistic[k] == pytest.approx(one.statistic, rel=1e-12)
        one_std = wasserstein_drift(r.feature(k).counts, c.feature(k).counts, edges=edges[k], ref_std=stds[k])
        assert rows_std.statistic[k] == pytest.approx(one_std.statistic, rel=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="points= or edges="):
        wasserstein_drift([1, 2], [2, 1])
    with pytest.raises(ValueError, match="1 finite edge"):
        wasserstein_drift([1, 2], [2, 1], edges=[0.0])
    with pytest.raises(ValueError, match="feature row 1"):
        bin_points(np.array([[0.0, 1.0], [2.0, np.inf]]))
    with pytest.raises(ValueError, match="non-decreasing"):
        wasserstein_drift([1, 2], [2, 1], points=[1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        wasserstein_drift([1, 2], [2, 1], points=[1.0, 2.0, 3.0])
