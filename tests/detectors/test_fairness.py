"""Group fairness from confusion counts against fairlearn on the same rows, plus intervals."""

import json

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from statsmodels.stats.proportion import proportion_confint

from detectors.fairness import (
    FAIRNESS_METRICS,
    GROUP_RATES,
    FairnessResult,
    between_group_metrics,
    evaluate_fairness,
    group_rates,
    intersection_codes,
    intersection_groups,
)
from detectors.intervals import newcombe_difference_interval, ratio_interval_log
from detectors.sketch import CategoryCounts, ConfusionCounts

EXACT = 1e-12
NAMES = ["w", "x", "y", "z"]


def window(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    y = (rng.random(n) < 0.3 + 0.1 * g).astype(int)
    p = (rng.random(n) < 0.2 + 0.08 * g + 0.4 * y).astype(int)
    cc = ConfusionCounts(NAMES)
    cc.update(y, p, g)
    return y, p, np.array(NAMES)[g], cc


def test_group_rates_match_fairlearn_metric_frame():
    y, p, s, cc = window()
    rates = group_rates(cc)
    mf = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "ppv": skm.precision_score,
            "accuracy": skm.accuracy_score,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=s,
    )
    for name in GROUP_RATES:
        ours = rates.rate(name)
        for g in NAMES:
            assert ours[g] == pytest.approx(mf.by_group.loc[g, name], abs=EXACT), (name, g)
    assert rates.n.tolist() == [int((s == g).sum()) for g in NAMES]
    # Each rate's interval is Wilson on its own numerator/denominator.
    low, high = proportion_confint(rates.successes, rates.trials, method="wilson")
    np.testing.assert_allclose(rates.ci_low, low, atol=EXACT)
    np.testing.assert_allclose(rates.ci_high, high, atol=EXACT)


def test_between_group_metrics_match_fairlearn():
    y, p, s, cc = window(seed=1)
    m = evaluate_fairness(cc, min_group_size=0).metrics
    kw = {"y_true": y, "y_pred": p, "sensitive_features": s}
    assert m["demographic_parity_difference"].value == pytest.approx(
        demographic_parity_difference(**kw), abs=EXACT
    )
    assert m["disparate_impact_ratio"].value == pytest.approx(
        demographic_parity_ratio(**kw), abs=EXACT
    )
    assert m["equal_opportunity_difference"].value == pytest.approx(
        equal_opportunity_difference(**kw), abs=EXACT
    )
    assert m["equalized_odds_difference"].value == pytest.approx(
        equalized_odds_difference(**kw), abs=EXACT
    )
    ppv = MetricFrame(metrics=skm.precision_score, **kw).difference()
    assert m["predictive_parity_difference"].value == pytest.approx(ppv, abs=EXACT)
    assert list(m) == list(FAIRNESS_METRICS)
    for r in m.values():
        assert r.status == "ok" and r.n_groups == 4
        assert r.ci_low <= r.value <= r.ci_high


def test_intervals_are_those_of_the_two_extreme_groups():
    y, p, s, cc = window(seed=2)
    report = evaluate_fairness(cc, min_group_size=0)
    rates = report.rates.rate("selection_rate")
    hi, lo = max(rates, key=rates.get), min(rates, key=rates.get)
    dp = report.metrics["demographic_parity_difference"]
    assert dp.groups == (hi, lo)
    sel = lambda g: ((p[s == g] == 1).sum(), (s == g).sum())  # noqa: E731
    # the extremes of k groups: Bonferroni level over the k(k-1)/2 pairs
    level = 1 - 0.05 / (len(NAMES) * (len(NAMES) - 1) / 2)
    expected = newcombe_difference_interval(*sel(hi), *sel(lo), confidence=level)
    assert (dp.ci_low, dp.ci_high) == pytest.approx(tuple(map(float, expected)), abs=EXACT)
    di = report.metrics["disparate_impact_ratio"]
    assert di.groups == (lo, hi)
    assert (di.ci_low, di.ci_high) == pytest.approx(
        tuple(map(float, ratio_interval_log(*sel(lo), *sel(hi), confidence=level)))
    )


def test_min_group_size_excludes_small_groups_and_reports_insufficient_data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    p = rng.integers(0, 2, 1000)
    g = np.where(np.arange(1000) < 990, 0, 1)  # group "b" has 10 rows
    cc = ConfusionCounts(["a", "b"])
    cc.update(y, p, g)
    m = evaluate_fairness(cc, min_group_size=20).metrics
    for name in FAIRNESS_METRICS:
        r = m[name]
        assert r.status == "insufficient_data" and r.value is None and r.ci_low is None
        assert r.n_groups == 1
    # Eligibility is per rate denominator: a group with many rows but few positives still
    # counts for selection rate, not for TPR.
    g = np.where(np.arange(1000) < 500, 0, 1)
    y = np.where(g == 1, (np.arange(1000) % 100 == 0).astype(int), y)  # 5 positives in "b"
    cc = ConfusionCounts(["a", "b"])
    cc.update(y, p, g)
    m = evaluate_fairness(cc, min_group_size=20).metrics
    assert m["demographic_parity_difference"].status == "ok"
    assert m["equal_opportunity_difference"].status == "insufficient_data"
    assert m["equalized_odds_difference"].status == "insufficient_data"


def test_three_groups_one_too_small_uses_the_other_two():
    counts = np.array(
        [
            [[400, 100], [100, 400]],  # selection 0.5
            [[450, 50], [250, 250]],  # selection 0.3
            [[1, 4], [0, 5]],  # selection 0.9, only 10 rows
        ]
    )
    m = evaluate_fairness(counts, ["a", "b", "c"], min_group_size=30).metrics
    dp = m["demographic_parity_difference"]
    assert dp.groups == ("a", "b") and dp.value == pytest.approx(0.2) and dp.n_groups == 2
    m = evaluate_fairness(counts, ["a", "b", "c"], min_group_size=5).metrics
    assert m["demographic_parity_difference"].groups == ("c", "b")


def test_equal_rates_and_zero_selection():
    counts = np.array([[[50, 50], [50, 50]]] * 3)
    dp = evaluate_fairness(counts, min_group_size=0).metrics["demographic_parity_difference"]
    assert dp.value == 0.0 and dp.groups[0] != dp.groups[1] and dp.ci_low < 0 < dp.ci_high
    none_selected = np.array([[[60, 0], [40, 0]]] * 2)
    di = evaluate_fairness(none_selected, min_group_size=0).metrics["disparate_impact_ratio"]
    assert di.status == "undefined" and di.value is None


def test_equalized_odds_interval_is_max_of_bonferroni_component_intervals():
    y, p, s, cc = window(seed=4)
    eo = evaluate_fairness(cc, min_group_size=0).metrics["equalized_odds_difference"]
    lows, highs, gaps = [], [], []
    for positive_truth in (1, 0):  # TPR among actual positives, FPR among actual negatives
        sub = y == positive_truth
        rate = {g: (p[sub & (s == g)].sum(), (sub & (s == g)).sum()) for g in NAMES}
        hi = max(rate, key=lambda g: rate[g][0] / rate[g][1])
        lo = min(rate, key=lambda g: rate[g][0] / rate[g][1])
        # two components, each the extremes of k groups: 1 - 0.05 / (2 * k(k-1)/2)
        level = 1 - 0.05 / (2 * len(NAMES) * (len(NAMES) - 1) / 2)
        low, high = newcombe_difference_interval(*rate[hi], *rate[lo], confidence=level)
        lows.append(float(low))
        highs.append(float(high))
        gaps.append(rate[hi][0] / rate[hi][1] - rate[lo][0] / rate[lo][1])
    assert eo.value == pytest.approx(max(gaps), abs=EXACT)
    assert eo.ci_low == pytest.approx(max(lows), abs=EXACT)
    assert eo.ci_high == pytest.approx(max(highs), abs=EXACT)


def test_positive_zero_flips_the_classes():
    y, p, s, cc = window(seed=5)
    r0 = group_rates(cc, positive=0).rate("tpr")
    for g in NAMES:
        assert r0[g] == pytest.approx(
            skm.recall_score(y[s == g], p[s == g], pos_label=0), abs=EXACT
        )


def test_intersections_match_fairlearn_with_two_sensitive_features():
    rng = np.random.default_rng(6)
    n = 10000
    sex = rng.choice(["f", "m"], n)
    age = rng.choice(["<40", ">=40", "?"], n)
    y = rng.integers(0, 2, n)
    p = (rng.random(n) < 0.3 + 0.2 * (sex == "m") + 0.3 * y).astype(int)
    vocab = {"sex": ["f", "m"], "age": ["<40", ">=40"]}  # "?" is outside the vocabulary
    codes = [CategoryCounts(vocab[a]).index_of(v) for a, v in (("sex", sex), ("age", age))]
    code = intersection_codes(codes, [2, 2])
    cc = ConfusionCounts(intersection_groups(vocab))
    cc.update(y, p, code)
    assert cc.unseen == int((age == "?").sum())
    rates = group_rates(cc)
    keep = age != "?"
    mf = MetricFrame(
        metrics={"selection_rate": selection_rate, "tpr": true_positive_rate},
        y_true=y[keep],
        y_pred=p[keep],
        sensitive_features=pd.DataFrame({"sex": sex[keep], "age": age[keep]}),
    )
    for (sx, ag), row in mf.by_group.iterrows():
        name = f"sex={sx}&age={ag}"
        assert rates.rate("selection_rate")[name] == pytest.approx(row["selection_rate"], abs=EXACT)
        assert rates.rate("tpr")[name] == pytest.approx(row["tpr"], abs=EXACT)


def test_difference_interval_coverage_by_simulation():
    # Two groups with a real gap: 2000 seeded windows; SE of coverage ~0.005, tolerance 4 SE.
    rng = np.random.default_rng(7)
    p_a, p_b, n_a, n_b = 0.45, 0.30, 300, 200
    sel_a = rng.binomial(n_a, p_a, 2000)
    sel_b = rng.binomial(n_b, p_b, 2000)
    hits = 0
    for a, b in zip(sel_a, sel_b, strict=True):
        counts = np.array([[[n_a - a, a], [0, 0]], [[n_b - b, b], [0, 0]]])
        r = evaluate_fairness(counts, ["a", "b"], min_group_size=30).metrics[
            "demographic_parity_difference"
        ]
        truth = p_a - p_b if r.groups == ("a", "b") else p_b - p_a
        hits += r.ci_low <= truth <= r.ci_high
    assert 0.93 <= hits / 2000 <= 0.97, hits / 2000


def test_result_round_trip_and_records_are_json_safe():
    counts = np.array([[[10, 0], [0, 0]], [[5, 5], [0, 0]]])  # no positives: TPR undefined
    report = evaluate_fairness(counts, ["a", "b"], min_group_size=1)
    for r in report.metrics.values():
        d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        assert FairnessResult.from_dict(d) == r
    rows = json.loads(json.dumps(report.rates.records(), allow_nan=False))
    assert rows[0]["tpr"] is None and rows[1]["selection_rate"] == 0.5


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="binary confusion counts"):
        group_rates(ConfusionCounts(["a"], n_classes=3))
    with pytest.raises(ValueError, match="min_group_size"):
        evaluate_fairness(ConfusionCounts(["a", "b"]), min_group_size=-1)
    with pytest.raises(ValueError, match="unknown rate"):
        group_rates(ConfusionCounts()).rate("fnr")
    with pytest.raises(ValueError, match="attribute 1"):
        intersection_codes([np.array([0]), np.array([3])], [2, 3])


def test_higher_confidence_widens_every_interval():
    _, _, _, cc = window(seed=8)
    rates = group_rates(cc)
    m95 = between_group_metrics(rates, min_group_size=0)
    m99 = between_group_metrics(rates, min_group_size=0, confidence=0.99)
    for name in FAIRNESS_METRICS:
        assert m99[name].value == m95[name].value
        assert m99[name].ci_low < m95[name].ci_low and m99[name].ci_high > m95[name].ci_high
