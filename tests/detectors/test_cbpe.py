"""CBPE from score histograms against NannyML's CBPE, scikit-learn's isotonic regression
and ROC AUC on the same data, plus interval coverage of the realised metrics."""

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from sklearn.isotonic import IsotonicRegression

from detectors._serde import StateVersionError
from detectors.cbpe import ScoreCalibrator, _calibration_variance, estimate_performance
from detectors.performance import estimated_classification_metrics
from detectors.sketch import ScoreHistogram

EXACT = 1e-12  # same arithmetic on the same numbers: only rounding differs
BINARY_KEYS = (
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
    "estimated_roc_auc",
)


def latent_data(n, mu, rng, k=0.5):
    """Labels ~ Bernoulli(p) with p = sigmoid(1.5 x - 0.5), x ~ N(mu, 1); the model's
    score is sigmoid(k * logit(p)): under-confident for k < 1, over-confident for k > 1.
    Moving mu is covariate shift: P(y | score) stays, accuracy changes."""
    x = rng.normal(mu, 1.0, n)
    logit = 1.5 * x - 0.5
    p = 1.0 / (1.0 + np.exp(-logit))
    score = 1.0 / (1.0 + np.exp(-k * logit))
    return score, (rng.random(n) < p).astype(np.int64)


def labelled_hist(scores, labels, n_bins=100):
    h = ScoreHistogram(n_classes=2, n_bins=n_bins)
    h.update(scores, labels)
    return h


def prediction_hist(scores, n_bins=100):
    # a window's histogram before labels arrive: every event in class 0
    return labelled_hist(scores, np.zeros(len(scores), dtype=np.int64), n_bins)


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    s, y = latent_data(20_000, 0.0, rng)
    return s, y, ScoreCalibrator.fit(labelled_hist(s, y))


# --------------------------------------------------------------------------- calibrator


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_calibrator_is_sklearn_isotonic_regression_on_bins(seed):
    rng = np.random.default_rng(seed)
    n_bins = 40
    counts = rng.integers(0, 30, n_bins)
    counts[rng.random(n_bins) < 0.25] = 0  # empty bins inside and (often) at the edges
    counts[n_bins // 2] = 5  # at least one filled bin
    # a noisy, partly decreasing rate, so the fit has to pool
    rate = np.clip(0.3 + 0.4 * np.sin(np.arange(n_bins) / 6.0) + rng.normal(0, 0.2, n_bins), 0, 1)
    pos = rng.binomial(counts, rate)
    h = ScoreHistogram(n_classes=2, n_bins=n_bins)
    h.counts = np.stack([counts - pos, pos])
    cal = ScoreCalibrator.fit(h)

    filled = np.flatnonzero(counts)
    iso = IsotonicRegression(increasing=True).fit(filled, pos[filled] / counts[filled], sample_weight=counts[filled])
    np.testing.assert_allclose(cal.probabilities[filled], iso.predict(filled), rtol=0, atol=EXACT)
    assert np.all(np.diff(cal.probabilities) >= 0)
    # empty bins: linear between the fitted neighbours, the nearest fitted value at the edges
    np.testing.assert_allclose(
        cal.probabilities, np.interp(np.arange(n_bins), filled, iso.predict(filled)), rtol=0, atol=EXACT
    )
    assert cal.probabilities[: filled[0]].tolist() == [cal.probabilities[filled[0]]] * filled[0]
    assert cal.n_bins == n_bins and cal.counts.tolist() == counts.tolist()


def test_calibrator_round_trip_and_merge_independence(reference):
    s, y, cal = reference
    restored = ScoreCalibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert restored == cal
    assert np.array_equal(restored.probabilities, cal.probabilities)

    # a reference or a window built from two halves, merged, is the one built from all rows
    half = s.size // 2
    merged_ref = labelled_hist(s[:half], y[:half]).merge(labelled_hist(s[half:], y[half:]))
    assert ScoreCalibrator.fit(merged_ref) == cal
    w_all = prediction_hist(s[:5000])
    w_merged = prediction_hist(s[:1234]).merge(prediction_hist(s[1234:5000]))
    for c in (cal, restored, None):
        assert estimate_performance(w_merged, c) == estimate_performance(w_all, c)


def test_calibrator_state_and_arguments_are_checked():
    with pytest.raises(StateVersionError, match="kind"):
        ScoreCalibrator.from_dict({"kind": "score_histogram", "version": 1})
    with pytest.raises(StateVersionError, match="version"):
        ScoreCalibrator.from_dict({"kind": "score_calibrator", "version": 99})
    with pytest.raises(ValueError, match="non-decreasing"):
        ScoreCalibrator(np.array([0.2, 0.1, 0.5]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ScoreCalibrator(np.array([0.2, 1.5]), np.array([1, 1]))
    with pytest.raises(ValueError, match="shape"):
        ScoreCalibrator(np.array([0.2, 0.5]), np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="non-negative integers"):
        ScoreCalibrator(np.array([0.2, 0.5]), np.array([1, -1]))


def test_fit_refuses_non_binary_and_empty_references():
    h3 = ScoreHistogram(n_classes=3, n_bins=10)
    h3.update(np.array([0.1, 0.9]), np.array([0, 2]))
    with pytest.raises(ValueError, match="n_classes=3"):
        ScoreCalibrator.fit(h3)
    with pytest.raises(ValueError, match="no labelled events|labelled events, got none"):
        ScoreCalibrator.fit(ScoreHistogram())
    with pytest.raises(TypeError, match="ScoreHistogram"):
        ScoreCalibrator.fit(np.zeros((2, 100)))


def test_calibration_variance_of_empty_bins_is_the_larger_neighbour():
    cal = ScoreCalibrator(np.array([0.1, 0.1, 0.2, 0.3, 0.4, 0.4]), np.array([0, 50, 0, 0, 10, 0]))
    v = _calibration_variance(cal)
    assert v[0] == v[1]  # edge: nearest filled bin
    assert v[2] == v[3] == max(v[1], v[4]) == v[4]  # fewer events, larger variance
    assert v[5] == v[4]


# --------------------------------------------------------------------------- estimates


@pytest.mark.parametrize("threshold", [0.5, 0.437, 0.0, 1.0, 0.73])
def test_without_calibrator_equals_estimated_classification_metrics(threshold):
    rng = np.random.default_rng(5)
    s, _ = latent_data(7000, 0.3, rng, k=2.0)
    w = prediction_hist(s)
    ours = estimate_performance(w, None, decision_threshold=threshold)
    theirs = estimated_classification_metrics(w, decision_threshold=threshold)
    assert set(ours) == set(BINARY_KEYS)
    for key, m in theirs.items():
        o = ours[key]
        assert o.n == m.n
        for a, b in ((o.value, m.value), (o.ci_low, m.ci_low), (o.ci_high, m.ci_high)):
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=EXACT), key


def test_estimates_equal_the_per_event_computation(reference):
    # Each event gets its bin's calibrated probability; predicted positive iff its raw score
    # >= threshold (0.5 is a bin edge). The expected AUC is then the AUC of events weighted
    # p (as positives) and 1 - p (as negatives), ties within a bin counting half: exactly
    # scikit-learn's roc_auc_score with the bin as the score and those sample weights.
    _, _, cal = reference
    rng = np.random.default_rng(11)
    s, _ = latent_data(5000, 0.7, rng)
    w = prediction_hist(s)
    est = estimate_performance(w, cal)
    p = cal.probabilities[w.bin_of(s)]
    pred = s >= 0.5
    tp, fp = p[pred].sum(), (1 - p[pred]).sum()
    fn = p[~pred].sum()
    assert est["estimated_accuracy"].value == pytest.approx(np.where(pred, p, 1 - p).mean(), abs=EXACT)
    assert est["estimated_precision"].value == pytest.approx(tp / (tp + fp), abs=EXACT)
    assert est["estimated_recall"].value == pytest.approx(tp / (tp + fn), abs=EXACT)
    assert est["estimated_f1"].value == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=EXACT)
    b = w.bin_of(s)
    auc = skm.roc_auc_score(
        np.r_[np.ones(s.size), np.zeros(s.size)], np.r_[b, b], sample_weight=np.r_[p, 1 - p]
    )
    assert est["estimated_roc_auc"].value == pytest.approx(auc, abs=EXACT)
    assert est["estimated_accuracy"].n == 5000 and est["estimated_precision"].n == int(pred.sum())
    for m in est.values():
        assert 0.0 <= m.ci_low < m.value < m.ci_high <= 1.0


def test_multiclass_top_label_accuracy():
    rng = np.random.default_rng(3)
    conf = rng.beta(5, 2, 20_000)  # top-label confidence, over-confident: correct w.p. conf**2
    correct = (rng.random(conf.size) < conf**2).astype(np.int64)
    cal = ScoreCalibrator.fit(labelled_hist(conf, correct))
    w_conf = rng.beta(5, 2, 4000)
    w = prediction_hist(w_conf)
    est = estimate_performance(w, cal, task="multiclass")
    assert list(est) == ["estimated_accuracy"]
    acc = est["estimated_accuracy"]
    assert acc.value == pytest.approx(cal.probabilities[w.bin_of(w_conf)].mean(), abs=EXACT)
    assert acc.value == pytest.approx(np.mean(w_conf**2), abs=0.01)  # the truth, up to binning and reference noise
    assert acc.ci_low < acc.value < acc.ci_high
    # without a calibrator: the mean confidence, as the existing function at threshold 0
    raw = estimate_performance(w, None, decision_threshold=0.8, task="multiclass")["estimated_accuracy"]
    old = estimated_classification_metrics(w, decision_threshold=0.0)["estimated_accuracy"]
    assert (raw.value, raw.ci_low, raw.ci_high, raw.n) == pytest.approx((old.value, old.ci_low, old.ci_high, old.n), abs=EXACT)


def test_a_very_large_reference_leaves_only_label_noise(reference):
    _, _, cal = reference
    huge = ScoreCalibrator(cal.probabilities, cal.counts * 10**12)
    s, _ = latent_data(5000, 0.0, np.random.default_rng(8))
    w = prediction_hist(s)
    acc = estimate_performance(w, huge)["estimated_accuracy"]
    n = w.counts.sum(axis=0)
    c = huge.probabilities
    se = np.sqrt((n * c * (1 - c)).sum()) / n.sum()
    assert acc.ci_high - acc.value == pytest.approx(1.959963985 * se, rel=1e-6)
    # the finite reference widens the interval, never narrows it
    for key, m in estimate_performance(w, cal).items():
        h = estimate_performance(w, huge)[key]
        assert m.ci_high - m.ci_low > h.ci_high - h.ci_low


def test_empty_window_and_no_predicted_positives(reference):
    _, _, cal = reference
    for m in estimate_performance(ScoreHistogram(), cal).values():
        assert np.isnan(m.value) and np.isnan(m.ci_low) and m.n == 0
    low = prediction_hist(np.full(100, 0.2))
    est = estimate_performance(low, cal)
    assert np.isnan(est["estimated_precision"].value) and est["estimated_precision"].n == 0
    assert est["estimated_accuracy"].value == pytest.approx(1 - cal.probabilities[20], abs=EXACT)


def test_bad_arguments_are_refused(reference):
    _, _, cal = reference
    w = prediction_hist(np.array([0.1, 0.6]))
    for t in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="decision_threshold"):
            estimate_performance(w, cal, decision_threshold=t)
    with pytest.raises(ValueError, match="task"):
        estimate_performance(w, cal, task="regression")
    with pytest.raises(ValueError, match="confidence"):
        estimate_performance(w, cal, confidence=1.0)
    with pytest.raises(ValueError, match="100 bins but the histogram has 10"):
        estimate_performance(prediction_hist(np.array([0.3]), n_bins=10), cal)
    with pytest.raises(TypeError, match="ScoreCalibrator"):
        estimate_performance(w, cal.probabilities)
    with pytest.raises(TypeError, match="ScoreHistogram"):
        estimate_performance(np.array([0.1, 0.6]), cal)


# --------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("k", [0.5, 2.0])  # under- and over-confident scores
def test_matches_nannyml_cbpe_per_chunk(k):
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"
    nml = pytest.importorskip("nannyml")
    rng = np.random.default_rng(0)
    s, y = latent_data(20_000, 0.0, rng, k)
    mus = [0.0, 0.5, 1.0, 1.5, -0.5, -1.0]  # covariate shift moves the accuracy by ~0.1
    chunks = [latent_data(5000, m, rng, k)[0] for m in mus]
    analysis = np.concatenate(chunks)
    estimator = nml.CBPE(
        y_pred_proba="score",
        y_pred="pred",
        y_true="y",
        problem_type="classification_binary",
        metrics=["roc_auc", "f1", "precision", "recall", "accuracy"],
        chunk_size=5000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(pd.DataFrame({"score": s, "pred": (s >= 0.5).astype(int), "y": y}))
        res = estimator.estimate(pd.DataFrame({"score": analysis, "pred": (analysis >= 0.5).astype(int)}))
    theirs = res.filter(period="analysis").to_df()
    # NannyML must have calibrated (it skips when calibrating does not lower the ECE),
    # otherwise this would compare two uncalibrated estimates.
    assert estimator.needs_calibration
    assert len(theirs) == len(mus)

    cal = ScoreCalibrator.fit(labelled_hist(s, y))
    for i, chunk in enumerate(chunks):
        w = prediction_hist(chunk)
        ours = estimate_performance(w, cal)
        raw = estimate_performance(w, None)
        for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
            ref_value = theirs[(name, "value")].iloc[i]
            diff = abs(ours[f"estimated_{name}"].value - ref_value)
            if name == "roc_auc":
                # NannyML orders events within a bin by raw score; we count a bin's pairs
                # half. That alone moves the AUC by at most 0.5 sum_b pos_b neg_b / (P N)
                # (0.005-0.035 here: over-confident scores pile into the edge bins), plus
                # the calibration difference below.
                cnt = w.counts.sum(axis=0)
                pos = cnt * cal.probabilities
                neg = cnt - pos
                tol = 0.5 * (pos * neg).sum() / (pos.sum() * neg.sum()) + 0.005
            else:
                # NannyML's isotonic map is fitted on rows, so it varies within a score
                # bin; ours holds the reference's bin average. Its slope times the bin
                # width (0.01) is <= 0.02 in probability, and covariate shift moves the
                # within-bin mass by part of that: measured <= 0.002 (k=0.5), 0.008 (k=2).
                tol = 0.01
            assert diff <= tol, (k, mus[i], name, diff, tol)
            if name in ("accuracy", "roc_auc"):
                # and calibration matters: the raw-score estimate is off by ~0.1
                assert abs(raw[f"estimated_{name}"].value - ref_value) > 0.05, (k, mus[i], name)


def test_intervals_cover_the_realised_metrics_when_calibration_holds(reference):
    _, _, cal = reference
    rng = np.random.default_rng(42)
    hits = {"accuracy": 0, "roc_auc": 0}
    raw_hits = {"accuracy": 0, "roc_auc": 0}
    n_chunks = 100
    for _ in range(n_chunks):
        s, y = latent_data(5000, rng.uniform(-1.0, 1.0), rng)  # same P(y | score) as the reference
        w = prediction_hist(s)
        realised = {
            "accuracy": skm.accuracy_score(y, (s >= 0.5).astype(int)),
            "roc_auc": skm.roc_auc_score(y, s),
        }
        for hit, est in ((hits, estimate_performance(w, cal)), (raw_hits, estimate_performance(w, None))):
            for name, value in realised.items():
                m = est[f"estimated_{name}"]
                hit[name] += m.ci_low <= value <= m.ci_high
    # Nominal 95%; the binomial SD of a 100-chunk coverage is ~2 points, so >= 90 allows
    # for that and for the shared error of one 20k-row reference.
    assert hits["accuracy"] >= 0.90 * n_chunks, hits
    assert hits["roc_auc"] >= 0.90 * n_chunks, hits
    # the same check fails for the uncalibrated (under-confident) raw scores
    assert raw_hits["accuracy"] < 0.2 * n_chunks and raw_hits["roc_auc"] < 0.2 * n_chunks, raw_hits
