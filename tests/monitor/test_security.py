"""monitor/security.py and its wiring: the [models.security] table and its errors, the
pane's security counts (state round trip mid-stream, older panes, batch independence),
and dead-lettered records attributed to their model's pane."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from monitor.config import SECURITY_METRICS, SecurityConfig, load_config, load_config_text
from monitor.decode import RecordDecoder, hash_ids
from monitor.evaluate import Evaluator, layout_from_profile
from monitor.ingest import ingest
from monitor.panes import Pane
from monitor.pipeline import Pipeline
from monitor.security import TrafficWatch
from monitor.synth import SECURITY_RULES, ModelSpec, config_models_toml, generate, reference_profile

from .test_config_beyond import EXAMPLE, assert_error, model, rule

SPEC = ModelSpec("m", n_numeric=3, n_categorical=2, sensitive={"sex": ["F", "M"]})


@pytest.fixture(scope="module")
def profile():
    return reference_profile(SPEC, n=3000)


@pytest.fixture(scope="module")
def config():
    return load_config_text(config_models_toml(SPEC, pane_seconds=60.0), env={})


@pytest.fixture(scope="module")
def layout(config, profile):
    return layout_from_profile(config.model("m"), profile)


def events(L, lo: int, hi: int) -> dict:
    """Rows ``lo..hi`` of one seeded stream: out-of-range values, unseen and missing
    categories, NaN, and a near-duplicate burst in rows 500..700."""
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.standard_normal((n, 3))
    X[::37, 0] = 40.0
    X[500:700] = 0.35 + 0.001 * rng.standard_normal((200, 3))
    X[::23, 2] = np.nan
    cats = [rng.choice(["a", "b", "c", "d", "zz", None], n).astype(object) for _ in range(2)]
    for c in cats:
        c[500:700] = "b"
    s = slice(lo, hi)
    X, cats = X[s], [c[s] for c in cats]
    m = hi - lo
    return {"numeric": X, "categorical": cats, "category_codes": L.category_codes(cats), "n": m,
            "keys": hash_ids([f"p{i}" for i in range(lo, hi)])}


def feed(p: Pane, e: dict) -> Pane:
    n = e["n"]
    p.add_predictions(e["numeric"], np.full(n, 0.3), e["categorical"], np.zeros(n, dtype=np.int64),
                      [np.zeros(n, dtype=np.int64)], keys=e["keys"], category_codes=e["category_codes"])
    return p


# --------------------------------------------------------------------------- config


def test_example_documents_the_security_defaults():
    m = load_config(EXAMPLE, env={}).model("credit-risk")
    assert m.security == SecurityConfig()
    assert m.security == SecurityConfig(enabled=True, resolution=0.1, projections=4, width=1024, depth=4, period_seconds=86400.0,
                                        slot_seconds=3600.0, half_life_periods=7.0, min_periods=1.0,
                                        tolerance=1.5)
    rules = {r.metric: r for r in m.rules}
    assert set(SECURITY_METRICS) <= set(rules), "config.toml has a default rule per security metric"
    assert all(rules[x].scope == "model" and rules[x].direction == "above" for x in SECURITY_METRICS)
    # the tests and the demo run the documented defaults
    synth = {r.metric: r for r in load_config_text(model(rules=SECURITY_RULES), env={}).model("m").rules}
    assert {x: synth[x] for x in SECURITY_METRICS} == {x: rules[x] for x in SECURITY_METRICS}


@pytest.mark.parametrize(
    "table,key,marker,fragment",
    [
        ("[models.security]\nresolution = 0", "models[0].security.resolution", "resolution", "must be > 0"),
        ("[models.security]\nprojections = -1", "models[0].security.projections", "projections",
         "must be at least 0, got -1"),
        ("[models.security]\nwidth = 1000", "models[0].security.width", "width", "power of two >= 2, got 1000"),
        ("[models.security]\ndepth = 17", "models[0].security.depth", "depth", "must be in [1, 16], got 17"),
        ("[models.security]\ntolerance = 0.9", "models[0].security.tolerance", "tolerance", "must be >= 1"),
        ("[models.security]\nslot_seconds = 7000", "models[0].security.period_seconds", "[models.security]",
         "whole multiple of slot_seconds (7000"),
        ("[models.security]\nslot_seconds = 90", "models[0].security.slot_seconds", "slot_seconds",
         "whole multiple of pane_seconds (60"),
        ("[models.security]\nhalf_life_periods = 0", "models[0].security.half_life_periods", "half_life",
         "must be greater than 0, got 0.0"),
        ("[models.security]\nmin_periods = -1", "models[0].security.min_periods", "min_periods",
         "must be at least 0, got -1.0"),
        ("[models.security]\nwidht = 64", "models[0].security.widht", "widht", 'did you mean "width"?'),
    ],
)
def test_security_table_errors_name_key_and_line(table, key, marker, fragment):
    assert_error(model(table), key, marker, fragment)


@pytest.mark.parametrize("metric", SECURITY_METRICS)
def test_security_rule_needs_security_enabled(metric):
    text = model("[models.security]\nenabled = false\n", rules=rule(metric, 0.5))
    assert_error(text, "models[0].rules[0].metric", f'metric = "{metric}"',
                 f'"{metric}" needs security.enabled = true on this model')
    assert load_config_text(model(rules=rule(metric, 0.5)), env={}).model("m").rules[0].scope == "model"


# --------------------------------------------------------------------------- panes


def test_pane_security_counts_equal_direct_numpy_counts(layout, profile):
    e = events(layout, 0, 2000)
    p = feed(Pane(layout, 0.0), e)
    lo = np.array([profile.numeric[f].low for f in layout.numeric])
    hi = np.array([profile.numeric[f].high for f in layout.numeric])
    X = e["numeric"]
    vocab = [set(profile.categorical[c].categories) for c in layout.categorical]
    unseen = np.array([[v is not None and v not in voc for v, voc in zip(row, vocab, strict=True)]
                       for row in zip(*e["categorical"], strict=True)])
    want = ((lo > X) | (hi < X)).any(axis=1) | unseen.any(axis=1)
    assert p.n_outside == int(want.sum()) > 0
    per = np.hstack([(lo > X) | (hi < X), unseen]).sum(axis=0)
    assert p.outside_by.tolist() == per.tolist()
    assert p.dups.n == 2000
    assert p.n_invalid == 0


def test_pane_security_state_round_trips_mid_stream_and_is_independent_of_batches(layout):
    whole = feed(Pane(layout, 0.0), events(layout, 0, 1200))
    p = feed(Pane(layout, 0.0), events(layout, 0, 450))
    p.n_invalid += 3
    text = json.dumps(p.to_dict())
    q = Pane.from_dict(layout, json.loads(text))
    assert json.dumps(q.to_dict()) == text
    feed(q, events(layout, 450, 1200))
    feed(p, events(layout, 450, 1200))
    assert json.dumps(q.to_dict()) == json.dumps(p.to_dict())
    assert q.dups == whole.dups and q.n_outside == whole.n_outside and q.n_invalid == 3
    # a window is a running sum: merge then subtract gives the other pane back exactly
    w = Pane(layout, 0.0).merge(whole, samples=False).merge(q, samples=False).subtract(whole)
    assert w.dups == q.dups and w.n_outside == q.n_outside and w.n_invalid == 3
    assert w.outside_by.tolist() == q.outside_by.tolist()


def test_panes_written_before_the_security_signals_restore_with_them_empty(layout):
    p = feed(Pane(layout, 0.0), events(layout, 0, 300))
    old = p.to_dict()
    del old["n_outside"], old["n_invalid"], old["outside_by"], old["extras"]["dups"]
    q = Pane.from_dict(layout, json.loads(json.dumps(old)))
    assert q.n_outside == q.n_invalid == 0 and q.dups.n == 0 and q.n_predictions == 300
    assert not q.outside_by.any()
    feed(q, events(layout, 300, 400))
    assert q.dups.n == 100


def test_window_evaluations_and_the_traffic_watch(config, profile, layout):
    ev = Evaluator(config.model("m"), profile, layout)
    win = feed(Pane(layout, 0.0), events(layout, 0, 1000))
    win.n_invalid = 10
    out = {e.metric: e for e in ev.evaluate(win, 0.0, 60.0)}
    assert out["out_of_support_share"].value == pytest.approx(win.n_outside / 1000)
    assert out["schema_violation_rate"].value == pytest.approx(10 / 1010) and out["schema_violation_rate"].n == 1010
    # 200 of 1000 rows are one burst (rows 500..700): the share reads about 0.2
    assert out["near_duplicate_share"].value == pytest.approx(0.2, abs=0.03)
    assert "traffic_rate_anomaly" not in out  # no pane given: nothing to judge
    # the watch judges a slot only after min_periods of its panes, then scores a spike
    w = TrafficWatch(SecurityConfig(period_seconds=600.0, slot_seconds=120.0), pane_seconds=60.0)
    rng = np.random.default_rng(1)
    assert all(w.judge(t, int(rng.poisson(100))) is None for t in np.arange(0.0, 600.0, 60.0))
    assert w.judge(600.0, 100).statistic == 0.0
    spike = w.judge(660.0, 500)
    assert spike.direction == "spike" and spike.statistic > 6
    # the anomalous pane was learned only up to the tolerated band
    mean, _, _ = w.baseline.expected(np.array([660.0]))
    assert mean[0] < 160


def test_dead_lettered_predictions_count_in_their_model_pane(config, profile):
    pipe = Pipeline(config, {"m": profile}, labels_expected=False)
    dec = RecordDecoder(config.fields, config.models)
    preds, _ = generate(SPEC, 1_700_000_000.0, 600.0, seed=2)
    values = [orjson.dumps(r) for r in preds[:200]]
    bad = dict(preds[10], features={**preds[10]["features"], "num_00": "x"})  # known model and time
    values.append(orjson.dumps(bad))
    values.append(orjson.dumps(dict(preds[11], model="other")))  # unknown model: belongs to none
    values.append(b"{not json")
    failures = ingest(pipe, dec, "predictions", 0, values)
    assert [f.code for f in failures] == ["invalid_field", "unknown_model", "invalid_json"]
    assert [f.model for f in failures] == ["m", None, None]
    start = np.floor(bad["timestamp"] / 60.0) * 60.0
    panes = pipe.partition(0).open[0]
    assert panes[start].n_invalid == 1
    assert sum(p.n_invalid for p in panes.values()) == 1
