"""Hellinger distance against evidently 0.7's categorical hellinger stattest."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.hellinger_distance import _hellinger_distance
from evidently.legacy.core import ColumnType

from detectors.hellinger import hellinger_drift, hellinger_drift_rows
from detectors.sketch import CategoryCounts

RTOL = 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_equals_evidently_on_categories(seed):
    rng = np.random.default_rng(seed)
    cats = [f"c{i}" for i in range(int(rng.integers(2, 10)))]
    ref_v = rng.choice(cats, size=2000, p=rng.dirichlet(np.ones(len(cats))))
    cur_v = rng.choice(cats + ["new"], size=500, p=rng.dirichlet(np.ones(len(cats) + 1)))
    want, _ = _hellinger_distance(pd.Series(ref_v), pd.Series(cur_v), ColumnType.Categorical, 0.1)
    ref, cur = CategoryCounts(cats), CategoryCounts(cats)
    ref.update(ref_v)
    cur.update(cur_v)
    got = hellinger_drift(ref.with_unseen(), cur.with_unseen())
    assert got.statistic == pytest.approx(float(want), rel=RTOL)


def test_formula_bounds_and_rows():
    ref, cur = np.array([1.0, 2, 3, 0]), np.array([0.0, 2, 1, 5])
    p, q = ref / ref.sum(), cur / cur.sum()
    assert hellinger_drift(ref, cur).statistic == pytest.approx(
        np.linalg.norm(np.sqrt(p) - np.sqrt(q)) / np.sqrt(2), rel=1e-12
    )
    assert hellinger_drift([1, 0], [0, 1]).statistic == 1.0
    assert hellinger_drift([2, 4], [1, 2]).statistic == pytest.approx(0.0, abs=1e-7)
    rng = np.random.default_rng(4)
    r, c = rng.integers(0, 9, (4, 6)), rng.integers(0, 9, (4, 6))
    rows = hellinger_drift_rows(r, c)
    for i in range(4):
        assert rows.statistic[i] == pytest.approx(hellinger_drift(r[i], c[i]).statistic, rel=1e-12)
