"""Attribution drift against scikit-learn's ndcg_score, scipy's spearmanr and SHAP values
of real scikit-learn models, plus the sketch's merge, serialisation and NaN properties."""

import json
import os
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from detectors._serde import StateVersionError
from detectors.attribution import (
    AttributionDriftResult,
    AttributionSketch,
    _ndcg_rows,
    attribution_drift,
    reference_importance,
)

# Same quantities by the same formulas in a different order of floating-point operations
# (tie groups summed by bincount vs differences of cumulative sums): values of order 1
# agree to a few ulps, far inside 1e-12.
EXACT = 1e-12


def _spearman_scipy(a, b) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(a, b).statistic)


def _exact_window(values: np.ndarray, names=None) -> AttributionSketch:
    """A sketch whose mean |a| is exactly ``values`` (two equal rows: the halving of a
    doubled float is exact) and whose standard error is 0."""
    v = np.asarray(values, dtype=np.float64)
    s = AttributionSketch(names or [f"f{i}" for i in range(v.size)])
    s.update(np.vstack([v, -v]))  # the sign is dropped by |a|
    return s


def _same(ours: float, theirs: float) -> bool:
    return (np.isnan(ours) and np.isnan(theirs)) or abs(ours - theirs) <= EXACT


# --------------------------------------------------------------------------- oracles

# Small integers make ties common on both sides (including all-zero and constant vectors);
# quarter steps add distinct values between them.
_importance = st.one_of(st.integers(0, 4), st.integers(0, 40).map(lambda v: v / 4))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(2, 25).flatmap(
        lambda d: st.tuples(
            st.lists(_importance, min_size=d, max_size=d),
            st.lists(_importance, min_size=d, max_size=d),
            st.integers(1, d + 2),
        )
    )
)
def test_ndcg_and_spearman_equal_sklearn_and_scipy_including_ties(case):
    ref, cur, k = (np.array(case[0], float), np.array(case[1], float), case[2])
    r = attribution_drift(ref, _exact_window(cur), k=k, n_draws=20)
    expected = skm.ndcg_score([ref], [cur], k=k)
    assert abs(r.ndcg - expected) <= EXACT, (r.ndcg, expected)
    assert abs(r.statistic - max(1.0 - expected, 0.0)) <= EXACT
    assert _same(r.spearman, _spearman_scipy(ref, cur)), (r.spearman, _spearman_scipy(ref, cur))
    # standard error 0: every bootstrap draw is the point itself, ties and all
    assert r.ci_low == r.ci_high == r.statistic
    assert len(r.top_current) == len(r.top_reference) == min(k, ref.size)


def test_ndcg_and_spearman_on_random_continuous_importances():
    rng = np.random.default_rng(11)
    worst_ndcg = worst_rho = 0.0
    for _ in range(300):
        d = int(rng.integers(2, 40))
        ref = rng.gamma(1.0, size=d)
        cur = np.abs(ref + rng.normal(0.0, rng.uniform(0.01, 2.0), size=d))
        k = int(rng.integers(1, d + 3))
        r = attribution_drift(ref, _exact_window(cur), k=k, n_draws=10)
        worst_ndcg = max(worst_ndcg, abs(r.ndcg - skm.ndcg_score([ref], [cur], k=k)))
        worst_rho = max(worst_rho, abs(r.spearman - stats.spearmanr(ref, cur).statistic))
    assert worst_ndcg <= EXACT and worst_rho <= EXACT, (worst_ndcg, worst_rho)


def test_features_without_data_are_left_out_of_both_rankings():
    rng = np.random.default_rng(12)
    ref = rng.gamma(1.0, size=8)
    ref[2] = np.nan  # no attributions in the reference
    cur = rng.gamma(1.0, size=8)
    s = AttributionSketch([f"f{i}" for i in range(8)])
    rows = np.vstack([cur, cur])
    rows[:, 5] = np.nan  # none in the window
    s.update(rows)
    r = attribution_drift(ref, s, k=4)
    keep = np.array([i not in (2, 5) for i in range(8)])
    assert r.ndcg == pytest.approx(skm.ndcg_score([ref[keep]], [cur[keep]], k=4), abs=EXACT)
    assert r.spearman == pytest.approx(stats.spearmanr(ref[keep], cur[keep]).statistic, abs=EXACT)
    assert "f2" not in r.top_reference and "f5" not in r.top_current


def test_vectorised_ndcg_over_draws_equals_sklearn_per_row_with_ties():
    rng = np.random.default_rng(13)
    for d, k in [(2, 1), (5, 3), (12, 5), (30, 40)]:
        relevance = rng.integers(0, 4, size=d).astype(float)  # tied relevance
        scores = rng.integers(0, 3, size=(50, d)).astype(float)  # many tied scores per row
        scores[:10] = rng.normal(size=(10, d))  # and rows without ties
        ours = _ndcg_rows(relevance, scores, k)
        theirs = [skm.ndcg_score([relevance], [row], k=k) for row in scores]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=EXACT)


def test_bootstrap_interval_is_the_quantiles_of_ndcg_over_normal_draws():
    # An independent replay of the stated procedure, with scikit-learn doing each NDCG.
    rng = np.random.default_rng(14)
    a = rng.normal(size=(400, 6)) * [3.0, 2.0, 1.5, 1.4, 0.5, 0.1]
    s = AttributionSketch([f"f{i}" for i in range(6)])
    s.update(a)
    ref = np.array([3.0, 2.0, 1.5, 1.4, 0.5, 0.1]) * np.sqrt(2 / np.pi)
    r = attribution_drift(ref, s, k=3, confidence=0.9, n_draws=300, seed=5)
    draws = np.random.default_rng(5).normal(s.mean_abs(), s.std_error(), size=(300, 6))
    per_draw = [1.0 - skm.ndcg_score([ref], [row], k=3) for row in draws]
    low, high = np.quantile(np.maximum(per_draw, 0.0), [0.05, 0.95])
    assert r.ci_low == pytest.approx(low, abs=EXACT) and r.ci_high == pytest.approx(high, abs=EXACT)
    assert r.ci_high > r.ci_low  # f2 and f3 are close: the draws reorder them
    # the same seed gives the same interval; another seed another one
    assert attribution_drift(ref, s, k=3, confidence=0.9, n_draws=300, seed=5) == r
    assert attribution_drift(ref, s, k=3, confidence=0.9, n_draws=300, seed=6).ci_high >= 0


def test_std_error_matches_scipy_sem():
    rng = np.random.default_rng(15)
    a = rng.normal(size=(500, 4)) * [1.0, 10.0, 0.01, 1e3]
    a[rng.random(a.shape) < 0.2] = np.nan
    s = AttributionSketch(list("abcd"))
    s.update(a)
    sem = stats.sem(np.abs(a), axis=0, nan_policy="omit")
    # sums of squares minus n mean^2 loses about |mean|/sd digits: rtol 1e-10 is ample
    np.testing.assert_allclose(s.std_error(), sem, rtol=1e-10)
    np.testing.assert_allclose(s.mean_abs(), np.nanmean(np.abs(a), axis=0), rtol=1e-13)


# --------------------------------------------------------------------------- SHAP scenarios

NAMES = tuple(f"x{i}" for i in range(6))
# Clearly ordered use of the features by the data-generating model; x5 is pure noise.
WEIGHTS = np.array([3.0, 2.0, 1.2, 0.6, 0.25, 0.0])


def _data(n, seed, weights=WEIGHTS, scale=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WEIGHTS.size))
    if scale is not None:
        x = x * scale
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(x @ weights)))).astype(int)
    return x, y


def _window_of(shap_values: np.ndarray) -> AttributionSketch:
    s = AttributionSketch(NAMES)
    for start in range(0, shap_values.shape[0], 1000):  # micro-batches as the monitor feeds
        s.update(shap_values[start : start + 1000])
    return s


@pytest.fixture(scope="module")
def shap_lib():
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    return pytest.importorskip("shap")


def test_shap_tree_model_stationary_window_and_retrained_model(shap_lib):
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _data(3000, 0)
    model = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0).fit(x, y)
    explainer = shap_lib.TreeExplainer(model)
    reference = reference_importance(explainer.shap_values(_data(2000, 1)[0]))
    assert list(np.argsort(-reference)[:5]) == [0, 1, 2, 3, 4]  # the ordering is learnt

    current_x = _data(2000, 2)[0]
    same = attribution_drift(reference, _window_of(explainer.shap_values(current_x)), k=5)
    assert same.ci_low <= 0.05 and same.statistic <= 0.05, same
    assert same.top_current[:3] == ("x0", "x1", "x2") and same.spearman > 0.8

    # Model version 2, trained where x3 (a minor feature before) drives the label.
    x2, y2 = _data(3000, 3, weights=np.array([1.0, 0.8, 0.5, 3.0, 0.25, 0.0]))
    retrained = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0).fit(x2, y2)
    values = shap_lib.TreeExplainer(retrained).shap_values(current_x)
    moved = attribution_drift(reference, _window_of(values), k=5)
    assert moved.top_current[0] == "x3" and moved.top_reference[0] == "x0"
    assert moved.ci_low > 0.1 and moved.statistic > 0.1, moved
    assert moved.n == 2000


def test_shap_linear_model_input_shift_makes_a_minor_feature_dominate(shap_lib):
    from sklearn.linear_model import LogisticRegression

    x, y = _data(3000, 0)
    model = LogisticRegression().fit(x, y)
    background = _data(2000, 1)[0]
    explainer = shap_lib.LinearExplainer(model, background)
    reference = reference_importance(explainer.shap_values(background))

    stationary = attribution_drift(reference, _window_of(explainer.shap_values(_data(2000, 2)[0])))
    assert stationary.ci_low <= 0.05 and stationary.statistic <= 0.05, stationary

    # The same model sees x3 at ten times its reference spread (a unit change upstream):
    # its attributions (coef * (x - mean)) now dominate.
    shifted_x = _data(2000, 4, scale=np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0]))[0]
    shifted = attribution_drift(reference, _window_of(explainer.shap_values(shifted_x)))
    assert shifted.top_current[0] == "x3"
    assert shifted.ci_low > 0.1, shifted
    # x0..x2 keep their order below x3, so the rank correlation stays positive but lower
    assert shifted.spearman < stationary.spearman


# --------------------------------------------------------------------------- sketch

# Dyadic values (multiples of 1/8) keep every sum exact, so window properties hold with ==.
_cell = st.one_of(st.integers(-64, 64).map(lambda v: v / 8), st.just(np.nan))
_batch = st.integers(0, 15).flatmap(
    lambda n: st.lists(_cell, min_size=3 * n, max_size=3 * n).map(
        lambda v: np.array(v, dtype=float).reshape(-1, 3)
    )
)


def _fed(*batches) -> AttributionSketch:
    s = AttributionSketch(["a", "b", "c"])
    for b in batches:
        s.update(b)
    return s


@settings(max_examples=60, deadline=None)
@given(st.lists(_batch, min_size=4, max_size=8))
def test_sliding_window_as_running_sum_equals_recomputation(panes):
    sketches = [_fed(p) for p in panes]
    window = sketches[0].copy().merge(sketches[1]).merge(sketches[2])
    for new in range(3, len(panes)):
        window.merge(sketches[new]).subtract(sketches[new - 3])
        assert window == _fed(np.vstack(panes[new - 2 : new + 1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_batch, min_size=2, max_size=8))
def test_round_trip_mid_stream_continues_identically(batches):
    half = len(batches) // 2
    uninterrupted = _fed(*batches)
    first = _fed(*batches[:half])
    restored = AttributionSketch.from_dict(json.loads(json.dumps(first.to_dict())))
    for b in batches[half:]:
        restored.update(b)
    assert restored.to_dict() == uninterrupted.to_dict()
    np.testing.assert_array_equal(restored.mean_abs(), uninterrupted.mean_abs())


def test_round_trip_mid_stream_with_general_floats_is_bit_identical():
    rng = np.random.default_rng(16)
    batches = [rng.standard_t(3, size=(1000, 20)) for _ in range(6)]
    uninterrupted = AttributionSketch([f"f{i}" for i in range(20)])
    for b in batches:
        uninterrupted.update(b)
    first = AttributionSketch([f"f{i}" for i in range(20)])
    for b in batches[:3]:
        first.update(b)
    restored = AttributionSketch.from_dict(json.loads(json.dumps(first.to_dict())))
    for b in batches[3:]:
        restored.update(b)
    assert restored.to_dict() == uninterrupted.to_dict()


@settings(max_examples=60, deadline=None)
@given(_batch)
def test_vectorised_update_equals_row_by_row(batch):
    rows = AttributionSketch(["a", "b", "c"])
    for row in batch:
        rows.update(row[None, :])
    assert _fed(batch) == rows


def test_vectorised_update_equals_row_by_row_with_general_floats():
    rng = np.random.default_rng(17)
    a = rng.normal(size=(300, 5))
    a[rng.random(a.shape) < 0.1] = np.nan
    batch, rows = AttributionSketch(list("abcde")), AttributionSketch(list("abcde"))
    batch.update(a)
    for row in a:
        rows.update(row[None, :])
    np.testing.assert_array_equal(batch.count, rows.count)
    # pairwise (numpy) vs sequential summation of 300 terms: a few ulps of the total
    np.testing.assert_allclose(batch.sum_abs, rows.sum_abs, rtol=1e-13)
    np.testing.assert_allclose(batch.sum_sq, rows.sum_sq, rtol=1e-13)


def test_nan_and_inf_are_absent_per_feature():
    a = np.array(
        [
            [1.0, np.nan, -2.0, np.nan],
            [-3.0, np.inf, 2.0, np.nan],
            [np.nan, 4.0, -np.inf, np.nan],
            [np.nan, np.nan, np.nan, np.nan],  # a record without attributions
        ]
    )
    s = AttributionSketch(list("abcd"))
    s.update(a)
    assert s.count.tolist() == [2, 1, 2, 0]
    assert s.n == 2
    np.testing.assert_array_equal(s.mean_abs(), [2.0, 4.0, 2.0, np.nan])
    se = s.std_error()
    assert se[0] == pytest.approx(stats.sem([1.0, 3.0])) and se[2] == 0.0
    assert np.isnan(se[1]) and np.isnan(se[3])  # one value / none: no spread
    np.testing.assert_array_equal(reference_importance(a), s.mean_abs())
    assert json.loads(json.dumps(s.to_dict(), allow_nan=False))["count"] == [2, 1, 2, 0]


def test_evicting_everything_leaves_no_data_even_with_rounding_residue():
    rng = np.random.default_rng(18)
    panes = [AttributionSketch(["a", "b"]) for _ in range(3)]
    for p in panes:
        p.update(rng.normal(size=(100, 2)))
    window = AttributionSketch(["a", "b"])
    for p in panes:
        window.merge(p)
    for p in panes[::-1]:  # another order than merged: the float sums need not cancel exactly
        window.subtract(p)
    assert window.n == 0 and np.isnan(window.mean_abs()).all() and np.isnan(window.std_error()).all()
    r = attribution_drift(np.array([1.0, 0.5]), window)
    assert np.isnan(r.statistic) and r.top_current == () and r.n == 0


def test_reference_importance_is_mean_abs():
    rng = np.random.default_rng(19)
    a = rng.normal(size=(1000, 7)) * np.arange(1, 8)
    np.testing.assert_allclose(reference_importance(a), np.abs(a).mean(axis=0), rtol=1e-13)
    with pytest.raises(ValueError, match="attributions must be an"):
        reference_importance(a[0])


# --------------------------------------------------------------------------- API edges


def test_sketch_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one feature"):
        AttributionSketch([])
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        AttributionSketch(["a", "b", "a"])
    with pytest.raises(ValueError, match="the string"):
        AttributionSketch("abc")
    s = AttributionSketch(["a", "b"])
    with pytest.raises(ValueError, match=r"\(n, 2\) matrix, got shape \(3, 3\)"):
        s.update(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"got shape \(2,\)"):
        s.update(np.zeros(2))
    with pytest.raises(ValueError, match="different features"):
        s.merge(AttributionSketch(["a", "c"]))
    with pytest.raises(TypeError):
        s.merge(object())
    with pytest.raises(StateVersionError):
        AttributionSketch.from_dict({**s.to_dict(), "version": 99})
    with pytest.raises(StateVersionError):
        AttributionSketch.from_dict({**s.to_dict(), "kind": "moments"})
    with pytest.raises(ValueError, match="do not match its 2 features"):
        AttributionSketch.from_dict({**s.to_dict(), "count": [1, 2, 3]})


def test_attribution_drift_rejects_bad_parameters():
    s = _exact_window([1.0, 2.0, 3.0])
    ref = np.array([3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"reference must have shape \(3,\)"):
        attribution_drift(ref[:2], s)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        attribution_drift(ref, s, k=0)
    with pytest.raises(ValueError, match="k must be an integer"):
        attribution_drift(ref, s, k=2.5)
    with pytest.raises(ValueError, match="confidence"):
        attribution_drift(ref, s, confidence=1.0)
    with pytest.raises(ValueError, match="n_draws"):
        attribution_drift(ref, s, n_draws=0)
    with pytest.raises(ValueError, match=">= 0"):
        attribution_drift(np.array([3.0, -1.0, 1.0]), s)
    with pytest.raises(TypeError, match="AttributionSketch"):
        attribution_drift(ref, np.array([1.0, 2.0, 3.0]))


def test_too_little_data_gives_nan_results():
    ref = np.array([3.0, 2.0, 1.0])
    empty = attribution_drift(ref, AttributionSketch(["a", "b", "c"]), k=2)
    assert np.isnan([empty.statistic, empty.ci_low, empty.ci_high, empty.ndcg, empty.spearman]).all()
    assert empty.top_reference == ("a", "b") and empty.top_current == () and empty.n == 0
    one_feature = AttributionSketch(["a", "b", "c"])
    one_feature.update(np.array([[1.0, np.nan, np.nan], [2.0, np.nan, np.nan]]))
    assert np.isnan(attribution_drift(ref, one_feature).statistic)
    # one row: a ranking but no standard error, so no interval
    single = AttributionSketch(["a", "b", "c"])
    single.update(np.array([[1.0, 2.0, 3.0]]))
    r = attribution_drift(ref, single)
    assert r.statistic > 0 and np.isnan(r.ci_low) and np.isnan(r.ci_high)


def test_interval_narrows_as_the_window_grows():
    rng = np.random.default_rng(20)
    scale = np.array([2.0, 1.9, 1.0, 0.5])  # f0 and f1 are close: small windows confuse them
    ref = scale * np.sqrt(2 / np.pi)
    widths = []
    for n in (50, 500, 50_000):
        s = AttributionSketch(list("abcd"))
        s.update(rng.normal(size=(n, 4)) * scale)
        r = attribution_drift(ref, s, k=2)
        widths.append(r.ci_high - r.ci_low)
    assert widths[0] > 0 and widths[0] >= widths[1] >= widths[2] and widths[2] == 0.0, widths


def test_result_to_dict_is_json_safe_and_round_trips():
    rng = np.random.default_rng(21)
    s = AttributionSketch(list("abcd"))
    s.update(rng.normal(size=(200, 4)))
    r = attribution_drift(np.array([1.0, 0.8, 0.3, 0.1]), s, k=2)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["kind"] == "attribution_drift_result" and d["version"] == 1
    assert AttributionDriftResult.from_dict(d) == r
    nan = attribution_drift(np.array([1.0, 0.8, 0.3, 0.1]), AttributionSketch(list("abcd")))
    d = json.loads(json.dumps(nan.to_dict(), allow_nan=False))
    assert d["statistic"] is None and d["top_current"] == []
    back = AttributionDriftResult.from_dict(d)
    assert np.isnan(back.statistic) and back.top_reference == nan.top_reference
