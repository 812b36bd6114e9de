"""Jensen-Shannon distance against evidently 0.7 and scipy on identical bins."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.core import ColumnType
from scipy.spatial import distance

from detectors.jensen_shannon import jensen_shannon_drift, jensen_shannon_drift_rows
from detectors.sketch import Histogram

RTOL = 1e-12


def _counts(values, n_values):
    h = Histogram(np.arange(n_values - 1) + 0.5)
    h.update(np.asarray(values, dtype=float))
    return h.counts


@pytest.mark.parametrize("seed", range(10))
def test_equals_evidently_jensenshannon(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 15))
    ref = rng.choice(k, size=3000, p=rng.dirichlet(np.ones(k)))
    cur = rng.choice(k, size=700, p=rng.dirichlet(np.ones(k))) + int(rng.integers(0, 3))
    want, _ = _jensenshannon(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)
    got = jensen_shannon_drift(_counts(ref, k + 2), _counts(cur, k + 2))
    assert got.statistic == pytest.approx(float(want), rel=RTOL)
    assert got.drifted == (float(want) >= 0.1)


@pytest.mark.parametrize("base", [None, 2.0, 10.0])
def test_equals_scipy_with_base(base):
    rng = np.random.default_rng(5)
    ref, cur = rng.integers(0, 30, 12), rng.integers(0, 30, 12)
    cur[3] = 0
    want = distance.jensenshannon(ref, cur, base=base)
    assert jensen_shannon_drift(ref, cur, base=base).statistic == pytest.approx(want, rel=RTOL)
    with pytest.raises(ValueError, match="base"):
        jensen_shannon_drift(ref, cur, base=1.0)


def test_bounds_and_rows():
    # disjoint supports give the maximum, sqrt(ln 2)
    assert jensen_shannon_drift([5, 0], [0, 5]).statistic == pytest.approx(np.sqrt(np.log(2)))
    assert jensen_shannon_drift([5, 0], [0, 5], base=2).statistic == pytest.approx(1.0)
    assert jensen_shannon_drift([3, 4, 5], [6, 8, 10]).statistic == pytest.approx(0.0, abs=1e-8)
    rng = np.random.default_rng(1)
    ref, cur = rng.integers(0, 40, (5, 7)), rng.integers(0, 40, (5, 7))
    ref[1, 5:] = cur[1, 5:] = 0
    rows = jensen_shannon_drift_rows(ref, cur)
    for i in range(5):
        assert rows.statistic[i] == pytest.approx(jensen_shannon_drift(ref[i], cur[i]).statistic, rel=1e-12)
