"""KL(cur || ref) against evidently 0.7's kl_div (arguments swapped) and scipy.stats.entropy."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.kl_div import _kl_div
from evidently.legacy.core import ColumnType
from scipy import stats

from detectors._hist import smoothed
from detectors.kl import kl_drift, kl_drift_rows
from detectors.psi import psi_drift
from detectors.sketch import Histogram

RTOL = 1e-12


def _counts(values, n_values):
    h = Histogram(np.arange(n_values - 1) + 0.5)
    h.update(np.asarray(values, dtype=float))
    return h.counts


@pytest.mark.parametrize("seed", range(10))
def test_equals_evidently_kl_div_swapped(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 15))
    ref = rng.choice(k, size=3000, p=rng.dirichlet(np.ones(k)))
    cur = rng.choice(k, size=700, p=rng.dirichlet(np.ones(k))) + int(rng.integers(0, 3))
    # evidently's kl_div(reference=a, current=b) is KL(a || b); ours is KL(cur || ref)
    want, _ = _kl_div(pd.Series(cur), pd.Series(ref), ColumnType.Numerical, 0.1)
    got = kl_drift(_counts(ref, k + 2), _counts(cur, k + 2))
    assert got.statistic == pytest.approx(float(want), rel=RTOL)


def test_equals_scipy_entropy_and_sums_to_psi():
    ref = np.array([40, 0, 30, 30, 0])
    cur = np.array([10, 5, 30, 55, 0])
    used = (ref + cur) > 0
    p, q = smoothed(ref / ref.sum(), used)[used], smoothed(cur / cur.sum(), used)[used]
    assert kl_drift(ref, cur).statistic == pytest.approx(stats.entropy(q, p), rel=RTOL)
    # KL(cur||ref) + KL(ref||cur) is PSI up to the renormalisation after smoothing
    both = kl_drift(ref, cur).statistic + kl_drift(cur, ref).statistic
    assert both == pytest.approx(psi_drift(ref, cur).statistic, rel=1e-3)
    # and exactly PSI when there is nothing to smooth
    r, c = np.array([40, 25, 35]), np.array([20, 45, 35])
    both = kl_drift(r, c).statistic + kl_drift(c, r).statistic
    assert both == pytest.approx(psi_drift(r, c).statistic, rel=1e-12)


def test_rows_equal_scalar():
    rng = np.random.default_rng(2)
    ref, cur = rng.integers(0, 40, (5, 8)), rng.integers(0, 40, (5, 8))
    ref[0, 6:] = cur[0, 6:] = 0
    cur[3, 2] = 0
    rows = kl_drift_rows(ref, cur)
    for i in range(5):
        assert rows.statistic[i] == pytest.approx(kl_drift(ref[i], cur[i]).statistic, rel=1e-12)
