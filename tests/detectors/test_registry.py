"""The drift-test registry, and conformance checks run over every registered test."""

import numpy as np
import pytest
from scipy import stats

from detectors.registry import CATEGORICAL, NUMERIC, TESTS, DriftTest, available_tests, get_test
from detectors.result import DriftResult, DriftResults
from detectors.sketch import HistogramBank
from detectors.wasserstein import bin_points

NAMES = ["psi", "jensen_shannon", "kl", "hellinger", "total_variation", "wasserstein", "ks", "chi_square", "g_test"]
EDGES = stats.norm.ppf(np.linspace(0, 1, 11)[1:-1])  # deciles of N(0, 1)


def _kw(test: DriftTest, edges=EDGES) -> dict:
    return {"points": bin_points(edges)} if test.needs_points else {}


def _expected_counts(shift: float, n: int) -> np.ndarray:
    # noise-free counts: n times the bin probabilities of N(shift, 1)
    cdf = np.concatenate([[0.0], stats.norm.cdf(EDGES - shift), [1.0]])
    return np.round(np.diff(cdf) * n)


def test_closed_registry_of_names():
    assert list(TESTS) == NAMES
    assert available_tests() == NAMES
    assert available_tests(CATEGORICAL) == ["psi", "jensen_shannon", "kl", "hellinger", "total_variation",
                                            "chi_square", "g_test"]
    assert "chi_square" not in available_tests(NUMERIC)
    with pytest.raises(TypeError):
        TESTS["mine"] = TESTS["psi"]  # no registration from outside


def test_unknown_name_lists_available_names():
    with pytest.raises(ValueError) as err:
        get_test("kolmogorov")
    msg = str(err.value)
    assert "'kolmogorov'" in msg
    for name in NAMES:
        assert name in msg
    with pytest.raises(ValueError, match="feature kind"):
        available_tests("text")


@pytest.mark.parametrize("name", NAMES)
def test_descriptor_matches_results(name):
    t = get_test(name)
    res = t.function(_expected_counts(0, 10_000), _expected_counts(0.5, 1000), **_kw(t))
    assert isinstance(res, DriftResult)
    assert res.test == name == t.name
    assert res.threshold == t.default_threshold
    assert (res.p_value is not None) == t.has_p_value
    if t.has_p_value:
        assert res.drifted == (res.p_value < res.threshold)
        assert 0 < t.default_threshold < 1
    else:
        assert res.drifted == (res.statistic >= res.threshold)
    assert t.kinds <= {NUMERIC, CATEGORICAL}


@pytest.mark.parametrize("name", NAMES)
def test_statistic_grows_with_drift(name):
    t = get_test(name)
    ref = _expected_counts(0.0, 100_000)
    results = [t.function(ref, _expected_counts(s, 10_000), **_kw(t)) for s in (0.01, 0.2, 0.4, 0.8, 1.6)]
    stat = [r.statistic for r in results]
    assert all(a < b for a, b in zip(stat, stat[1:], strict=False)), stat
    assert not results[0].drifted and results[-1].drifted
    if t.has_p_value:
        p = [r.p_value for r in results]
        assert all(a >= b for a, b in zip(p, p[1:], strict=False)), p


@pytest.mark.parametrize("name", NAMES)
def test_identical_distributions_are_not_drift(name):
    t = get_test(name)
    res = t.function(_expected_counts(0, 10_000), _expected_counts(0, 10_000) / 10, **_kw(t))
    assert res.statistic == pytest.approx(0.0, abs=1e-9)
    assert not res.drifted


@pytest.mark.parametrize("name", NAMES)
def test_rows_form_equals_scalar_form_per_row(name):
    t = get_test(name)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    ref = rng.normal(size=(4000, 5))
    cur = rng.normal(size=(600, 5)) + np.array([0.0, 0.3, 0.0, -0.5, 0.1])
    # different bin counts per feature: the bank pads the short rows with empty bins
    edges = [np.quantile(ref[:, k], np.linspace(0, 1, n + 1)[1:-1]) for k, n in enumerate((3, 12, 6, 9, 4))]
    r, c = HistogramBank(edges), HistogramBank(edges)
    r.update(ref)
    c.update(cur)
    rows_kw = {"points": bin_points(r.edges)} if t.needs_points else {}
    rows = t.rows_function(r.counts, c.counts, **rows_kw)
    assert isinstance(rows, DriftResults) and len(rows) == 5 and rows.test == name
    for k in range(5):
        one = t.function(r.feature(k).counts, c.feature(k).counts, **_kw(t, edges[k]))
        assert rows.statistic[k] == pytest.approx(one.statistic, rel=1e-10, abs=1e-14)
        if t.has_p_value:
            assert rows.p_value[k] == pytest.approx(one.p_value, rel=1e-10, abs=1e-300)
        else:
            assert rows.p_value is None
        assert bool(rows.drifted[k]) == one.drifted
        assert rows.row(k).statistic == pytest.approx(one.statistic, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_empty_side_gives_nan_not_drift(name):
    t = get_test(name)
    res = t.function(np.zeros(10), _expected_counts(1, 100), **_kw(t))
    assert np.isnan(res.statistic) and not res.drifted
    kw = {"points": np.vstack([bin_points(EDGES)] * 2)} if t.needs_points else {}
    ref = np.vstack([_expected_counts(0, 1000), _expected_counts(0, 1000)])
    cur = np.vstack([np.zeros(10), _expected_counts(2, 100)])
    rows = t.rows_function(ref, cur, **kw)
    assert np.isnan(rows.statistic[0]) and not rows.drifted[0]
    assert rows.drifted[1]
