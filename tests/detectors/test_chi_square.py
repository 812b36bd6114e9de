"""Chi-square homogeneity test against scipy.stats.chi2_contingency on the same table.

Tolerance: statistic and p-value to 1e-12 relative (same formula, different order).
"""

import numpy as np
import pytest
from scipy import stats

from detectors.chi_square import chi_square_drift, chi_square_drift_rows
from detectors.sketch import CategoryCounts

RTOL = 1e-12


def _scipy(ref, cur, **kw):
    table = np.vstack([ref, cur]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    return stats.chi2_contingency(table, correction=False, **kw)


@pytest.mark.parametrize("seed", range(15))
def test_equals_chi2_contingency_with_unseen_bucket(seed):
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(int(rng.integers(2, 9)))]
    ref, cur = CategoryCounts(cats), CategoryCounts(cats)
    ref.update(rng.choice(cats, size=int(rng.integers(50, 5000)), p=rng.dirichlet(np.ones(len(cats)))))
    extra = ["unknown-a", "unknown-b"] if seed % 2 else []
    pool = cats + extra
    cur.update(rng.choice(pool, size=int(rng.integers(20, 1000)), p=rng.dirichlet(np.ones(len(pool)))))
    r, c = ref.with_unseen(), cur.with_unseen()
    want = _scipy(r, c)
    got = chi_square_drift(r, c)
    assert got.statistic == pytest.approx(want.statistic, rel=RTOL)
    assert got.p_value == pytest.approx(want.pvalue, rel=RTOL, abs=1e-300)
    assert got.drifted == (want.pvalue < 0.05)


def test_two_categories_have_no_yates_correction():
    r, c = np.array([30, 70]), np.array([45, 55])
    want = _scipy(r, c)
    assert want.dof == 1
    assert chi_square_drift(r, c).statistic == pytest.approx(want.statistic, rel=RTOL)
    assert chi_square_drift(r, c).statistic > stats.chi2_contingency(np.vstack([r, c]))[0]


def test_degenerate_tables():
    one = chi_square_drift([5, 0, 0], [3, 0, 0])  # one used bin: dof 0, as scipy
    assert (one.statistic, one.p_value, one.drifted) == (0.0, 1.0, False)
    empty = chi_square_drift([0, 0], [1, 2])
    assert np.isnan(empty.statistic) and not empty.drifted


def test_rows_equal_scalar():
    rng = np.random.default_rng(3)
    r, c = rng.integers(0, 60, (6, 7)), rng.integers(0, 60, (6, 7))
    r[1, 4:] = c[1, 4:] = 0
    r[2, 6] = 0
    r[5] = 0
    r[5, 0] = 7
    c[5] = 0
    c[5, 0] = 3
    rows = chi_square_drift_rows(r, c)
    for i in range(6):
        one = chi_square_drift(r[i], c[i])
        assert rows.statistic[i] == pytest.approx(one.statistic, rel=1e-12, abs=1e-12)
        assert rows.p_value[i] == pytest.approx(one.p_value, rel=1e-12)
        assert rows.drifted[i] == one.drifted
