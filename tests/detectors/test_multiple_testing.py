"""Benjamini-Hochberg against scipy.stats.false_discovery_control (scipy >= 1.11).

Tolerance: adjusted p-values to 1e-12 relative.
"""

import numpy as np
import pytest
from scipy import stats

from detectors.multiple_testing import benjamini_hochberg


def _step_up(p, alpha):
    # the textbook definition: reject the k smallest, k = max{i : p_(i) <= i * alpha / m}
    m = p.size
    order = np.argsort(p)
    ok = np.flatnonzero(p[order] <= np.arange(1, m + 1) * alpha / m)
    out = np.zeros(m, dtype=bool)
    if ok.size:
        out[order[: ok[-1] + 1]] = True
    return out


@pytest.mark.parametrize("seed", range(20))
def test_equals_scipy_and_the_step_up_rule(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 80))
    p = np.concatenate([rng.uniform(size=m), rng.uniform(0, 0.01, size=int(rng.integers(0, 10)))])
    p[rng.integers(0, p.size, size=2)] = p[0]  # ties
    alpha = float(rng.choice([0.01, 0.05, 0.1]))
    rejected, adjusted = benjamini_hochberg(p, alpha)
    np.testing.assert_allclose(adjusted, stats.false_discovery_control(p, method="bh"), rtol=1e-12)
    np.testing.assert_array_equal(rejected, _step_up(p, alpha))


def test_missing_p_values_are_left_out():
    p = [0.001, None, 0.02, float("nan"), 0.04, 0.3]
    rejected, adjusted = benjamini_hochberg(p, 0.05)
    present = np.array([0.001, 0.02, 0.04, 0.3])
    want = stats.false_discovery_control(present, method="bh")
    np.testing.assert_allclose(adjusted[[0, 2, 4, 5]], want, rtol=1e-12)
    assert np.isnan(adjusted[1]) and np.isnan(adjusted[3])
    assert rejected.tolist() == [True, False, True, False, False, False]
    none_at_all = benjamini_hochberg([None, None])
    assert np.isnan(none_at_all[1]).all() and not none_at_all[0].any()


def test_errors():
    with pytest.raises(ValueError, match="alpha"):
        benjamini_hochberg([0.1], alpha=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, 1.5])
