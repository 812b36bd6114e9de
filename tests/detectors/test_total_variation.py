"""Total variation distance against evidently 0.7's TVD statistic (before its permutation test)."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.tvd_stattest import _total_variation_distance

from detectors.sketch import CategoryCounts
from detectors.total_variation import total_variation_drift, total_variation_drift_rows

RTOL = 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_equals_evidently_tvd_statistic(seed):
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(int(rng.integers(2, 10)))]
    ref_v = rng.choice(cats, size=2000, p=rng.dirichlet(np.ones(len(cats))))
    cur_v = rng.choice(cats + ["new"], size=500, p=rng.dirichlet(np.ones(len(cats) + 1)))
    want = _total_variation_distance(pd.Series(ref_v), pd.Series(cur_v))
    ref, cur = CategoryCounts(cats), CategoryCounts(cats)
    ref.update(ref_v)
    cur.update(cur_v)
    got = total_variation_drift(ref.with_unseen(), cur.with_unseen())
    assert got.statistic == pytest.approx(float(want), rel=RTOL)


def test_bounds_and_rows():
    assert total_variation_drift([3, 0], [0, 7]).statistic == 1.0
    assert total_variation_drift([3, 1], [6, 2]).statistic == 0.0
    r = np.array([[10, 20, 0], [5, 5, 5]])
    c = np.array([[20, 10, 0], [0, 5, 10]])
    rows = total_variation_drift_rows(r, c)
    assert rows.statistic.tolist() == pytest.approx([1 / 3, 1 / 3])
    assert rows.drifted.tolist() == [True, True]
