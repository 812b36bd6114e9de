"""G-test against scipy.stats.chi2_contingency(lambda_="log-likelihood") on the same table.

Tolerance: statistic and p-value to 1e-12 relative.
"""

import numpy as np
import pytest
from scipy import stats

from detectors.g_test import g_test_drift, g_test_drift_rows
from detectors.sketch import CategoryCounts

RTOL = 1e-12


def _scipy(ref, cur):
    table = np.vstack([ref, cur]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    return stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")


@pytest.mark.parametrize("seed", range(15))
def test_equals_scipy_log_likelihood(seed):
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(int(rng.integers(2, 9)))]
    ref, cur = CategoryCounts(cats), CategoryCounts(cats)
    ref.update(rng.choice(cats, size=int(rng.integers(50, 5000)), p=rng.dirichlet(np.ones(len(cats)))))
    pool = cats + (["unseen"] if seed % 2 else [])
    cur.update(rng.choice(pool, size=int(rng.integers(20, 1000)), p=rng.dirichlet(np.ones(len(pool)))))
    r, c = ref.with_unseen(), cur.with_unseen()
    want = _scipy(r, c)
    got = g_test_drift(r, c)
    assert got.statistic == pytest.approx(want.statistic, rel=RTOL)
    assert got.p_value == pytest.approx(want.pvalue, rel=RTOL, abs=1e-300)


def test_identical_proportions_give_zero():
    res = g_test_drift([20, 40, 0, 60], [2, 4, 0, 6])
    assert res.statistic == pytest.approx(0.0, abs=1e-12)
    assert res.p_value == pytest.approx(1.0)
    assert not res.drifted


def test_rows_equal_scalar():
    rng = np.random.default_rng(8)
    r, c = rng.integers(0, 60, (5, 6)), rng.integers(0, 60, (5, 6))
    r[0, 3:] = c[0, 3:] = 0
    c[2, 1] = 0
    rows = g_test_drift_rows(r, c)
    for i in range(5):
        one = g_test_drift(r[i], c[i])
        assert rows.statistic[i] == pytest.approx(one.statistic, rel=1e-12)
        assert rows.p_value[i] == pytest.approx(one.p_value, rel=1e-12)
