"""PSI against evidently 0.7's psi stattest on identical bins, plus its own properties."""

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests.psi import _psi
from evidently.legacy.core import ColumnType

from detectors.psi import PSI_ALERT, PSI_WARN, psi_drift, psi_drift_rows
from detectors.sketch import Histogram

# Same formula and the same zero-bin rule, so only summation order differs.
RTOL = 1e-12


def _integer_samples(seed: int):
    """Integer data (<= 20 distinct values) so evidently bins one value per bin, as we do."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 15))
    ref = rng.choice(k, size=int(rng.integers(200, 5000)), p=rng.dirichlet(np.ones(k)))
    # the window may miss values and show values the reference never had
    shift = int(rng.integers(0, 3))
    cur = rng.choice(k, size=int(rng.integers(50, 2000)), p=rng.dirichlet(np.ones(k))) + shift
    return ref, cur, k + 2


def _counts(values: np.ndarray, n_values: int) -> np.ndarray:
    # edges between the integers: every bin holds exactly one distinct value
    h = Histogram(np.arange(n_values - 1) + 0.5)
    h.update(values.astype(float))
    return h.counts


@pytest.mark.parametrize("seed", range(12))
def test_psi_equals_evidently_on_the_same_bins(seed):
    ref, cur, k = _integer_samples(seed)
    want, _ = _psi(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, PSI_WARN)
    got = psi_drift(_counts(ref, k), _counts(cur, k))
    assert got.statistic == pytest.approx(float(want), rel=RTOL)
    assert got.drifted == (float(want) >= PSI_WARN)
    assert got.p_value is None and got.test == "psi"


def test_defaults_follow_common_practice():
    assert (PSI_WARN, PSI_ALERT) == (0.1, 0.25)
    assert psi_drift([10, 10], [10, 10]).threshold == 0.1


def test_threshold_decides_drift():
    r = psi_drift([50, 30, 20], [30, 30, 40])
    assert r.drifted is (r.statistic >= 0.1)
    assert psi_drift([50, 30, 20], [30, 30, 40], threshold=r.statistic).drifted
    assert not psi_drift([50, 30, 20], [30, 30, 40], threshold=r.statistic * 1.01).drifted


def test_rows_equal_scalar_with_padding():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 50, size=(6, 9)).astype(float)
    cur = rng.integers(0, 50, size=(6, 9)).astype(float)
    ref[2, 6:] = cur[2, 6:] = 0  # a feature with fewer bins: padded, zero on both sides
    cur[4, 1] = 0
    rows = psi_drift_rows(ref, cur)
    for i in range(6):
        assert rows.row(i).statistic == pytest.approx(psi_drift(ref[i], cur[i]).statistic, rel=1e-12)
        assert rows.row(i).drifted == psi_drift(ref[i], cur[i]).drifted
    # padding adds nothing
    assert rows.statistic[2] == pytest.approx(psi_drift(ref[2, :6], cur[2, :6]).statistic, rel=1e-12)


def test_empty_side_is_nan_and_not_drift():
    r = psi_drift([0, 0, 0], [1, 2, 3])
    assert np.isnan(r.statistic) and not r.drifted
    rows = psi_drift_rows([[0, 0], [1, 1]], [[1, 1], [1, 1]])
    assert np.isnan(rows.statistic[0]) and not rows.drifted[0]


@pytest.mark.parametrize(
    "ref,cur,match",
    [
        ([1, 2], [1, 2, 3], "share bins"),
        ([1, -2], [1, 2], "non-negative"),
        ([[1, 2]], [1, 2], "1-D"),
        ([1, np.nan], [1, 2], "finite"),
    ],
)
def test_bad_input_names_the_argument(ref, cur, match):
    with pytest.raises(ValueError, match=match):
        psi_drift(ref, cur)


def test_bins_empty_on_both_sides_add_nothing_when_fills_differ():
    # A rare reference value (share < 1e-4) makes evidently's fill differ between the
    # sides; bins empty on both sides must still add nothing, as evidently never sees them.
    rng = np.random.default_rng(11)
    ref = np.concatenate([rng.integers(0, 5, 30_000), [7]])
    cur = rng.integers(1, 6, 800)
    want, _ = _psi(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, PSI_WARN)
    got = psi_drift(_counts(ref, 12), _counts(cur, 12))
    assert got.statistic == pytest.approx(float(want), rel=RTOL)
    rows = psi_drift_rows(np.vstack([_counts(ref, 12)] * 2), np.vstack([_counts(cur, 12)] * 2))
    assert rows.statistic.tolist() == pytest.approx([float(want)] * 2, rel=RTOL)
