"""Beyond drift, end to end on seeded streams through ``driftline replay``.

* labels stop for the last 6 hours and the model's scores lose confidence: the accuracy
  drop is alerted from the label-free estimate alone;
* two features' correlation flips while every marginal stays: multivariate drift fires,
  no univariate drift test does;
* a planted degraded slice (one category of cat_1 x one of cat_2, 3% of traffic, error
  rate doubled) is ranked first by the standing degraded-subgroup rule while the global
  accuracy holds, and a performance alert lists the slice that drives it;
* predictions with attributions: a change in how the model uses a feature fires the
  attribution rule and names the new top feature.
"""

from __future__ import annotations

import io
import json

import pytest

from monitor.replay import replay
from monitor.synth import Change, ModelSpec

from .conftest import build_case

WINDOW = 15 * 60.0

ESTIMATE_RULES = """
[[models.rules]]
name = "accuracy-drop"
metric = "accuracy"
warn = 0.70
alert = 0.65
min_samples = 300
for = 2

[[models.rules]]
name = "estimated-accuracy-drop"
metric = "estimated_accuracy"
warn = 0.70
alert = 0.65
min_samples = 300
for = 2
"""

DRIFT_RULES = """
[[models.rules]]
name = "feature-drift"
metric = "psi"
scope = "feature"
warn = 0.1
alert = 0.25
min_samples = 500
for = 2

[[models.rules]]
name = "feature-ks"
metric = "ks"
scope = "feature"
warn = 0.01
alert = 0.001
min_samples = 500
for = 2

[[models.rules]]
name = "multivariate-drift"
metric = "reconstruction_error_change"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
"""

def _subgroup_rules(acc_warn: float, acc_alert: float) -> str:
    return f"""
[[models.rules]]
name = "accuracy-drop"
metric = "accuracy"
warn = {acc_warn}
alert = {acc_alert}
min_samples = 300
for = 2

[[models.rules]]
name = "degraded-subgroup"
metric = "subgroup_error_gap"
warn = 0.1
alert = 0.15
min_samples = 500
for = 2
"""


def _run(tmp_path, spec, hours, rules, seed=3, **kw):
    config, p, lab, start, *_ = build_case(tmp_path, spec, hours=hours, seed=seed, rules=rules, **kw)
    buf = io.StringIO()
    replay(config, p, lab, buf)
    rows = [json.loads(x) for x in buf.getvalue().splitlines()]
    evals = [r for r in rows if r["type"] == "evaluation"]
    firing = [r for r in rows if r["type"] == "alert" and r["state"] == "firing"]
    return start, evals, firing


def test_accuracy_drop_without_labels_is_alerted_from_the_estimate(tmp_path):
    hours = 14.0
    stop, drop = 8 * 3600.0, 10 * 3600.0
    spec = ModelSpec("m", n_numeric=10, n_categorical=2, rate=2.0, label_delay=120.0,
                     changes=[Change("labels_stop", stop), Change("confidence_drop", drop, factor=0.25)])
    start, evals, firing = _run(tmp_path, spec, hours, ESTIMATE_RULES)
    # No prediction of the last 6 hours gets a label: past the stragglers of the label
    # delay (outcomes count when they join), the labelled accuracy has too few samples
    # for its rule in every window.
    late = [e for e in evals if e["metric"] == "accuracy" and e["window_start"] > start + stop + 600]
    assert max((e["n"] for e in late), default=0) < 300, [e["n"] for e in late][:5]
    assert not [e for e in evals if e["metric"] == "accuracy" and e["window_start"] > start + stop + 3600]
    est = [a for a in firing if a["rule"] == "estimated-accuracy-drop"]
    assert est, [(a["rule"], a["window_end"] - start) for a in firing]
    first = min(a["window_end"] for a in est) - (start + drop)
    assert 0 < first <= 2 * WINDOW, f"estimate alerted {first / 60:.1f} min after the drop"
    assert not [a for a in firing if a["rule"] == "accuracy-drop"]
    # while labels joined, the estimate sat beside the realised value and agreed with it
    both = [e for e in evals if e["metric"] == "estimated_accuracy" and e.get("details")
            and e["window_end"] < start + stop and e["n"] >= 1000]
    assert len(both) > 100
    gaps = sorted(abs(e["value"] - e["details"]["realised"]) for e in both)
    assert gaps[len(gaps) // 2] < 0.02, gaps[len(gaps) // 2]


def test_correlation_change_is_caught_by_multivariate_drift_alone(tmp_path):
    hours, at = 8.0, 4 * 3600.0
    spec = ModelSpec("m", n_numeric=6, n_categorical=2, rate=2.0, label_delay=120.0,
                     correlated=[("num_02", "num_03", 0.9)],
                     changes=[Change("correlation_flip", at, feature="num_02", other="num_03")])
    start, evals, firing = _run(tmp_path, spec, hours, DRIFT_RULES)
    multi = [a for a in firing if a["rule"] == "multivariate-drift"]
    assert multi, [(a["rule"], a["scope"]) for a in firing]
    first = min(a["window_end"] for a in multi) - (start + at)
    assert 0 < first <= 2 * WINDOW, f"multivariate drift fired {first / 60:.1f} min after the change"
    # No univariate test flags the flipped pair (their marginals stay N(0, 1)). Other
    # features are left out of this check: a KS rule at p < 0.001 on 1-minute slides of
    # 8 features makes ~3,800 overlapping tests in 8 hours and may fire once by chance.
    univariate = [(a["rule"], a["scope"]) for a in firing
                  if a["rule"] in ("feature-drift", "feature-ks") and a["scope"] in ("num_02", "num_03")]
    assert not univariate, univariate
    flipped = [e for e in evals if e["metric"] in ("psi", "ks") and e["scope"] in ("num_02", "num_03")
               and e["window_start"] > start + at]
    assert flipped and all(e["status"] != "alert" for e in flipped)
    before = [e for e in evals if e["metric"] == "reconstruction_error_change" and e["window_end"] <= start + at]
    assert before and all(e["status"] == "ok" or e["status"] == "insufficient_data" for e in before)


def test_planted_degraded_slice_is_ranked_first(tmp_path):
    # cat_1 = "b" (30%) x cat_2 = "d" (10%): 3% of traffic; flipping 47% of its labels takes
    # its error rate from about 30% to about 52%
    planted = {"cat_1": "b", "cat_2": "d"}
    spec = ModelSpec("m", n_numeric=6, n_categorical=4, rate=5.0, label_delay=60.0,
                     changes=[Change("slice_errors", 2 * 3600.0, where=planted, flip=0.47)])
    # Accuracy rule about 0.06 below this spec's accuracy (0.705), as in test_soundness.
    start, evals, firing = _run(tmp_path, spec, 5.0, _subgroup_rules(0.64, 0.60))
    assert not [a for a in firing if a["rule"] == "accuracy-drop"], "the global metric stays fine"
    sub = [a for a in firing if a["rule"] == "degraded-subgroup"]
    assert sub, [(a["rule"], a["scope"]) for a in firing]
    assert min(a["window_end"] for a in sub) > start + 2 * 3600.0
    top = sub[0]["details"]["slices"][0]
    assert top["name"] == "cat_1=b&cat_2=d", [s["name"] for s in sub[0]["details"]["slices"]]
    assert top["significant"] and top["share"] == pytest.approx(0.03, abs=0.015)
    # the rule judges errors beyond what the calibrated scores expect: none before the change
    # (bins of the features that drive the score differ in plain error rate by nature)
    assert sub[0]["details"]["slices_by"] == "excess_error"
    assert top["rate"] > 0.1 and abs(top["rest_rate"]) < 0.02
    before = [e for e in evals if e["metric"] == "subgroup_error_gap" and e["window_end"] <= start + 2 * 3600.0]
    assert before and all(e["value"] == 0.0 for e in before)


def test_performance_alert_lists_the_slice_that_drives_it(tmp_path):
    spec = ModelSpec("m", n_numeric=6, n_categorical=3, rate=5.0, label_delay=60.0,
                     changes=[Change("slice_errors", 2 * 3600.0, where={"cat_0": "a"}, flip=0.5)])
    start, evals, firing = _run(tmp_path, spec, 4.0, _subgroup_rules(0.70, 0.65))
    acc = [a for a in firing if a["rule"] == "accuracy-drop"]
    assert acc, [(a["rule"], a["scope"]) for a in firing]
    assert min(a["window_end"] for a in acc) > start + 2 * 3600.0
    names = [s["name"] for s in acc[0]["details"]["slices"]]
    assert acc[0]["details"]["slices_by"] == "error"
    assert names[0] == "cat_0=a", names


def test_attribution_shift_names_the_feature_the_model_now_leans_on(tmp_path):
    # a new model version leans on num_02 (weight x6: from one of the weakest features to the
    # strongest); the inputs do not change, the attributions do
    spec = ModelSpec("m", n_numeric=6, n_categorical=2, rate=2.0, label_delay=120.0, attributions=True,
                     changes=[Change("reweight", 3 * 3600.0, feature="num_02", factor=6.0)])
    rules = """
[[models.rules]]
name = "attribution-drift"
metric = "attribution_shift"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
"""
    start, evals, firing = _run(tmp_path, spec, 6.0, rules)
    hits = [a for a in firing if a["rule"] == "attribution-drift"]
    assert hits, [(a["rule"], a["scope"]) for a in firing]
    assert min(a["window_end"] for a in hits) > start + 3 * 3600.0
    assert hits[0]["details"]["top_current"][0] == "num_02"
    before = [e for e in evals if e["metric"] == "attribution_shift" and e["window_end"] <= start + 3 * 3600.0]
    assert before and all(e["status"] in ("ok", "insufficient_data") for e in before)
    imp = [e for e in evals if e["metric"] == "mean_abs_attribution"]
    assert {e["scope"] for e in imp} == set(spec.numeric + spec.categorical)


@pytest.mark.slow
def test_stationary_stream_fires_none_of_the_beyond_drift_rules(tmp_path):
    # 24 stationary hours, every beyond-drift rule on (thresholds as the demo's), attributions
    # carried; slices over every dimension (numeric bins, categories, groups and pairs)
    spec = ModelSpec("m", n_numeric=8, n_categorical=3, rate=2.0, label_delay=120.0, attributions=True)
    rules = _subgroup_rules(0.64, 0.60) + """
[[models.rules]]
name = "estimated-accuracy-drop"
metric = "estimated_accuracy"
warn = 0.64
alert = 0.60
min_samples = 300
for = 2

[[models.rules]]
name = "multivariate-drift"
metric = "reconstruction_error_change"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2

[[models.rules]]
name = "attribution-drift"
metric = "attribution_shift"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
"""
    start, evals, firing = _run(tmp_path, spec, 24.0, rules, seed=11)
    judged = {e["metric"] for e in evals if e["status"] in ("ok", "warn", "alert")}
    assert {"estimated_accuracy", "reconstruction_error_change", "attribution_shift", "subgroup_error_gap"} <= judged
    assert firing == [], [(a["rule"], a["scope"], a["value"], (a["window_end"] - start) / 3600) for a in firing]
