"""Performance metrics from sketches against scikit-learn on the same data, plus interval checks."""

import json

import numpy as np
import pytest
import sklearn.metrics as skm
from scipy import stats

from detectors.performance import (
    LOSS_COLUMNS,
    REGRESSION_COLUMNS,
    MetricResult,
    classification_metrics,
    estimated_classification_metrics,
    expected_calibration_error,
    loss_columns,
    loss_metrics,
    regression_columns,
    regression_metrics,
    roc_auc,
)
from detectors.sketch import ConfusionCounts, Moments, ScoreHistogram

EXACT = 1e-12  # same arithmetic on the same counts: only rounding differs


def binary_data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0)
    return y, s


def test_binary_confusion_metrics_match_sklearn():
    y, s = binary_data()
    p = (s >= 0.5).astype(int)
    cc = ConfusionCounts(groups=["a", "b"])
    cc.update(y, p, np.arange(y.size) % 2)  # groups are summed
    m = classification_metrics(cc)
    assert m["accuracy"].value == pytest.approx(skm.accuracy_score(y, p), abs=EXACT)
    assert m["precision"].value == pytest.approx(skm.precision_score(y, p), abs=EXACT)
    assert m["recall"].value == pytest.approx(skm.recall_score(y, p), abs=EXACT)
    assert m["f1"].value == pytest.approx(skm.f1_score(y, p), abs=EXACT)
    assert m["accuracy"].n == y.size and m["recall"].n == y.sum()
    # positive=0 is the same as relabelling.
    m0 = classification_metrics(cc.total(), positive=0)
    assert m0["f1"].value == pytest.approx(skm.f1_score(y, p, pos_label=0), abs=EXACT)
    for r in m.values():
        assert r.ci_low <= r.value <= r.ci_high


def test_f1_interval_agrees_with_delta_method_at_large_n():
    tp, fp, fn, tn = 3000.0, 1200.0, 900.0, 5000.0
    f1 = classification_metrics(np.array([[tn, fp], [fn, tp]]))["f1"]
    # Delta method under multinomial sampling: Var = 4 tp (fp+fn)(tp+fp+fn) / (2tp+fp+fn)^4.
    se = np.sqrt(4 * tp * (fp + fn) * (tp + fp + fn)) / (2 * tp + fp + fn) ** 2
    assert f1.ci_low == pytest.approx(f1.value - 1.959964 * se, abs=5e-4)
    assert f1.ci_high == pytest.approx(f1.value + 1.959964 * se, abs=5e-4)


def test_macro_metrics_match_sklearn_including_a_never_predicted_class():
    rng = np.random.default_rng(1)
    yt = rng.integers(0, 4, 3000)
    yp = np.where(rng.random(3000) < 0.6, yt, rng.integers(0, 3, 3000))  # class 3 never predicted
    cc = ConfusionCounts(n_classes=5)  # class 4 absent everywhere: not averaged (as sklearn)
    cc.update(yt, yp)
    m = classification_metrics(cc, average="macro")
    kw = {"average": "macro", "zero_division": 0}
    assert m["precision"].value == pytest.approx(skm.precision_score(yt, yp, **kw), abs=EXACT)
    assert m["recall"].value == pytest.approx(skm.recall_score(yt, yp, **kw), abs=EXACT)
    assert m["f1"].value == pytest.approx(skm.f1_score(yt, yp, **kw), abs=EXACT)
    assert m["accuracy"].value == pytest.approx(skm.accuracy_score(yt, yp), abs=EXACT)


# Coverage checks: the truth is the metric of the cell probabilities; seeded draws. With
# 1000 draws the SE of a coverage estimate is ~0.007; tolerances are ~3-4 SE.
def _cell_draws(probs, n, draws, seed):
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, probs.ravel(), size=draws).reshape(draws, *probs.shape)


def test_binary_f1_interval_coverage():
    probs = np.array([[0.45, 0.10], [0.15, 0.30]])
    tp, fp, fn = probs[1, 1], probs[0, 1], probs[1, 0]
    truth = 2 * tp / (2 * tp + fp + fn)
    hits = [
        (r := classification_metrics(m)["f1"]).ci_low <= truth <= r.ci_high
        for m in _cell_draws(probs, 300, 1000, 20)
    ]
    assert 0.925 <= np.mean(hits) <= 0.975, np.mean(hits)


def test_macro_f1_interval_coverage():
    probs = np.array([[0.25, 0.05, 0.03], [0.04, 0.20, 0.06], [0.02, 0.05, 0.30]])
    truth = np.mean([2 * probs[k, k] / (probs[k].sum() + probs[:, k].sum()) for k in range(3)])
    hits = [
        (r := classification_metrics(m, average="macro")["f1"]).ci_low <= truth <= r.ci_high
        for m in _cell_draws(probs, 400, 1000, 21)
    ]
    assert 0.925 <= np.mean(hits) <= 0.975, np.mean(hits)


def test_auc_exact_when_scores_sit_on_bin_centres():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 5000)
    b = np.clip(rng.normal(40 + 15 * y, 15).astype(int), 0, 99)
    s = (b + 0.5) / 100  # bin centres: within-bin ties are real ties, counted half by sklearn too
    h = ScoreHistogram(2, 100)
    h.update(s, y)
    assert roc_auc(h).value == pytest.approx(skm.roc_auc_score(y, s), abs=EXACT)


def test_auc_continuous_scores_within_stated_bound():
    y, s = binary_data(20000, seed=3)
    h = ScoreHistogram(2, 100)
    h.update(s, y)
    pos, neg = h.counts[1], h.counts[0]
    bound = 0.5 * (pos * neg).sum() / (pos.sum() * neg.sum())
    err = abs(roc_auc(h).value - skm.roc_auc_score(y, s))
    assert err <= bound
    assert err < 2e-3  # the bound itself is ~0.005 for 100 bins here


def test_auc_hanley_mcneil_coverage():
    # Binormal scores with unit variances and mean gap d: true AUC = Phi(d / sqrt(2)).
    rng = np.random.default_rng(22)
    d = 1.0
    truth = stats.norm.cdf(d / np.sqrt(2))
    hits = []
    for _ in range(500):
        s = np.concatenate([rng.normal(0, 1, 150), rng.normal(d, 1, 100)])
        y = np.r_[np.zeros(150), np.ones(100)].astype(int)
        h = ScoreHistogram(2, 1000)
        h.update(stats.norm.cdf(s / 3), y)  # monotone map into [0, 1] keeps the AUC
        r = roc_auc(h)
        hits.append(r.ci_low <= truth <= r.ci_high)
    assert 0.92 <= np.mean(hits) <= 0.98, np.mean(hits)  # 500 draws: SE ~0.01


def test_log_loss_and_brier_match_sklearn():
    y, s = binary_data()
    m = Moments(len(LOSS_COLUMNS))
    m.update(loss_columns(y[:1000], s[:1000]))
    m.update(loss_columns(y[1000:], s[1000:]))
    r = loss_metrics(m)
    assert r["log_loss"].value == pytest.approx(skm.log_loss(y, s), rel=EXACT)
    assert r["brier"].value == pytest.approx(skm.brier_score_loss(y, s), rel=EXACT)
    eps = np.finfo(np.float64).eps  # scikit-learn's clipping
    ll = -np.log(np.where(y == 1, s, 1 - s).clip(eps, 1 - eps))
    lo, hi = stats.t.interval(0.95, y.size - 1, loc=ll.mean(), scale=stats.sem(ll))
    assert (r["log_loss"].ci_low, r["log_loss"].ci_high) == pytest.approx((lo, hi), rel=1e-6)


def test_multiclass_losses_match_sklearn():
    rng = np.random.default_rng(5)
    proba = rng.dirichlet([1, 2, 3], 2000)
    y = np.array([rng.choice(3, p=p) for p in proba])
    m = Moments(2)
    m.update(loss_columns(y, proba))
    r = loss_metrics(m)
    assert r["log_loss"].value == pytest.approx(skm.log_loss(y, proba), rel=EXACT)
    assert r["brier"].value == pytest.approx(skm.brier_score_loss(y, proba), rel=EXACT)


def test_loss_columns_skip_missing_labels():
    cols = loss_columns(np.array([1, np.nan, 0]), np.array([0.9, 0.5, 0.2]))
    assert np.isnan(cols[1]).all() and np.isfinite(cols[[0, 2]]).all()


def test_ece_matches_direct_computation_on_raw_scores():
    y, s = binary_data(5000, seed=6)
    h = ScoreHistogram(2, 100)
    h.update(s, y)
    for bins in (10, 20, 100):
        idx = np.minimum((s * bins).astype(int), bins - 1)
        direct = sum(
            abs(s[idx == b].mean() - y[idx == b].mean()) * np.mean(idx == b) for b in np.unique(idx)
        )
        r = expected_calibration_error(h, bins)
        assert r.value == pytest.approx(direct, abs=1e-12)
        assert 0.0 <= r.ci_low <= r.value <= r.ci_high
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(h, 7)


FIXED_POINT = 1e-9


def test_estimated_performance_equals_raw_cbpe_formula():
    # score sums are fixed point (2**-32 per score), so sums of scores agree to ~1e-10
    y, s = binary_data(5000, seed=7)
    h = ScoreHistogram(2, 100)
    h.update(s, np.zeros_like(y))  # labels ignored: a prediction-only histogram
    e = estimated_classification_metrics(h, decision_threshold=0.5)
    pp = s >= 0.5
    assert e["estimated_accuracy"].value == pytest.approx(np.mean(np.maximum(s, 1 - s)), abs=FIXED_POINT)
    assert e["estimated_precision"].value == pytest.approx(s[pp].mean(), abs=FIXED_POINT)
    assert e["estimated_recall"].value == pytest.approx(s[pp].sum() / s.sum(), abs=FIXED_POINT)
    exp_f1 = 2 * s[pp].sum() / (pp.sum() + s.sum())
    assert e["estimated_f1"].value == pytest.approx(exp_f1, abs=FIXED_POINT)
    # A top-label histogram at threshold 0 gives the mean confidence (multiclass accuracy).
    top = estimated_classification_metrics(h, decision_threshold=0.0)["estimated_accuracy"]
    assert top.value == pytest.approx(s.mean(), abs=FIXED_POINT)


def test_estimated_accuracy_covers_realised_accuracy_when_calibrated():
    # Calibrated scores: y ~ Bernoulli(s). The interval should cover the realised accuracy
    # at least at the nominal rate (it is conservative by construction).
    rng = np.random.default_rng(8)
    hits = []
    for _ in range(300):
        s = rng.beta(2, 2, 2000)
        y = (rng.random(2000) < s).astype(int)
        h = ScoreHistogram(2, 20)
        h.update(s, np.zeros_like(y))
        r = estimated_classification_metrics(h)["estimated_accuracy"]
        hits.append(r.ci_low <= skm.accuracy_score(y, s >= 0.5) <= r.ci_high)
    assert np.mean(hits) >= 0.93, np.mean(hits)


def test_regression_metrics_match_sklearn_and_survive_mid_stream_round_trip():
    rng = np.random.default_rng(9)
    y = rng.normal(1000.0, 30.0, 6000)  # large mean: the shift keeps the variance accurate
    yhat = y + rng.normal(2.0, 10.0, y.size)
    full = Moments(len(REGRESSION_COLUMNS), shift=[0, 0, 0, 0, 1000.0])
    full.update(regression_columns(y[:3000], yhat[:3000]))
    full.update(regression_columns(y[3000:], yhat[3000:]))
    half = Moments(len(REGRESSION_COLUMNS), shift=[0, 0, 0, 0, 1000.0])
    half.update(regression_columns(y[:3000], yhat[:3000]))
    resumed = Moments.from_dict(json.loads(json.dumps(half.to_dict())))
    resumed.update(regression_columns(y[3000:], yhat[3000:]))
    r = regression_metrics(resumed)
    assert r == regression_metrics(full)
    assert r["mae"].value == pytest.approx(skm.mean_absolute_error(y, yhat), rel=1e-12)
    assert r["rmse"].value == pytest.approx(skm.root_mean_squared_error(y, yhat), rel=1e-12)
    assert r["mape"].value == pytest.approx(skm.mean_absolute_percentage_error(y, yhat), rel=1e-12)
    assert r["r2"].value == pytest.approx(skm.r2_score(y, yhat), rel=1e-9)
    assert r["bias"].value == pytest.approx(np.mean(yhat - y), rel=1e-9)
    for m in r.values():
        assert m.ci_low <= m.value <= m.ci_high and m.n == y.size


def test_regression_interval_coverage():
    # True MAE = sigma * sqrt(2/pi); true R² = 1 - sigma_e² / sigma_y² for independent noise.
    rng = np.random.default_rng(23)
    sigma_y, sigma_e = 2.0, 1.0
    true_r2 = 1 - sigma_e**2 / sigma_y**2
    true_mae = sigma_e * np.sqrt(2 / np.pi)
    hits_r2, hits_mae = [], []
    for _ in range(500):
        y = rng.normal(0, sigma_y, 300)
        m = Moments(5)
        m.update(regression_columns(y, y + rng.normal(0, sigma_e, 300)))
        r = regression_metrics(m)
        hits_r2.append(r["r2"].ci_low <= true_r2 <= r["r2"].ci_high)
        hits_mae.append(r["mae"].ci_low <= true_mae <= r["mae"].ci_high)
    assert 0.92 <= np.mean(hits_mae) <= 0.98, np.mean(hits_mae)  # 500 draws: SE ~0.01
    assert 0.92 <= np.mean(hits_r2) <= 0.99, np.mean(hits_r2)


def test_metric_result_round_trip_and_undefined_values():
    cc = ConfusionCounts()
    cc.update(np.array([0, 0]), np.array([0, 0]))
    prec = classification_metrics(cc)["precision"]
    assert np.isnan(prec.value) and prec.n == 0
    d = json.loads(json.dumps(prec.to_dict(), allow_nan=False))
    assert d["value"] is None
    back = MetricResult.from_dict(d)
    assert back.name == "precision" and np.isnan(back.value)
    ok = MetricResult("mae", 1.5, 1.0, 2.0, 10)
    assert MetricResult.from_dict(ok.to_dict()) == ok


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="binary"):
        classification_metrics(np.eye(3))
    with pytest.raises(ValueError, match="average"):
        classification_metrics(np.eye(2), average="micro")
    with pytest.raises(ValueError, match="n_classes"):
        roc_auc(ScoreHistogram(3, 10))
    with pytest.raises(ValueError, match="5 columns"):
        regression_metrics(Moments(2))
    with pytest.raises(ValueError, match="decision_threshold"):
        estimated_classification_metrics(ScoreHistogram(), 1.5)


def test_macro_standard_errors_match_finite_difference_delta_method():
    # Independent check of the analytic gradients: numerical gradients of scikit-learn's
    # own macro scores, then the multinomial delta-method variance.
    rng = np.random.default_rng(24)
    m = rng.integers(0, 60, (4, 4)) + np.diag([200, 150, 100, 80])
    n = m.sum()
    p = (m / n).ravel()
    kw = {"average": "macro", "zero_division": 0}

    def scores(q):
        # Continuous extension of sklearn's macro scores to real-valued cell weights.
        q = q.reshape(4, 4)
        tp, col, row = np.diag(q), q.sum(axis=0), q.sum(axis=1)
        return np.array([np.mean(tp / col), np.mean(tp / row), np.mean(2 * tp / (row + col))])

    yt = np.repeat(np.arange(4), m.sum(axis=1))
    yp = np.concatenate([np.repeat(np.arange(4), m[i]) for i in range(4)])
    np.testing.assert_allclose(
        scores(p),
        [
            skm.precision_score(yt, yp, **kw),
            skm.recall_score(yt, yp, **kw),
            skm.f1_score(yt, yp, **kw),
        ],
        atol=EXACT,
    )
    h = 1e-6
    g = np.array([(scores(p + h * e) - scores(p - h * e)) / (2 * h) for e in np.eye(16)])
    se = np.sqrt(((g * g * p[:, None]).sum(0) - (g * p[:, None]).sum(0) ** 2) / n)
    r = classification_metrics(m, average="macro")
    for i, name in enumerate(("precision", "recall", "f1")):
        assert (r[name].ci_high - r[name].ci_low) / (2 * 1.959963984540054) == pytest.approx(
            se[i], rel=1e-6
        )
