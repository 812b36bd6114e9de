"""Security signals at ingress, end to end on seeded streams through ``driftline replay``.

Two days of predictions with a daily traffic cycle (the first day teaches the seasonal
baseline): a stationary second day fires none of the security rules; a 5x traffic spike
for an hour fires the traffic rule; a burst of near-duplicate queries (perturbations of
one point) fires the near-duplicate rule; out-of-support inputs and dead-lettered
records fire theirs. Pane state keeps no input value.
"""

from __future__ import annotations

import io
import json
import math
import re

import msgspec
import numpy as np
import orjson
import pytest

from detectors.count_min import collision_probability
from monitor.config import SECURITY_METRICS
from monitor.decode import RecordDecoder
from monitor.events import AlertEvent
from monitor.ingest import ingest
from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles
from monitor.replay import replay, write_output
from monitor.security import SecurityLayout
from monitor.sinks.render import statement
from monitor.synth import SECURITY_RULES, Change, ModelSpec

from .conftest import build_case, write_jsonl

RULES = ("traffic-anomaly", "near-duplicate-burst", "out-of-support", "schema-violations")
HOURS = 48.0
DAY2 = 24 * 3600.0


def _spec(*changes: Change) -> ModelSpec:
    return ModelSpec("m", n_numeric=10, n_categorical=2, rate=0.5, sensitive={"sex": ["F", "M"]}, diurnal=0.5,
                     changes=list(changes))


def _run(tmp_path, spec, seed=5, mutate=None, hours=36.0):
    """Replay ``hours`` of the spec's stream (the first day teaches the traffic baseline)."""
    config, p, _, start, preds, _ = build_case(tmp_path, spec, hours=hours, seed=seed, rules=SECURITY_RULES,
                                               pane_seconds=300.0, window_panes=3)
    if mutate is not None:
        with open(p, "wb") as f:
            for line in mutate(preds, start):
                f.write(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
    buf = io.StringIO()
    # predictions only: the security signals need no labels, and a labels-only pane after
    # the last prediction would be (rightly) a traffic drop
    pipeline = replay(config, p, None, buf)
    rows = [json.loads(x) for x in buf.getvalue().splitlines()]
    evals = [r for r in rows if r["type"] == "evaluation"]
    firing = [r for r in rows if r["type"] == "alert" and r["state"] == "firing"]
    return start, evals, firing, pipeline


@pytest.fixture(scope="module")
def stationary(tmp_path_factory):
    path = tmp_path_factory.mktemp("stationary")
    return (*_run(path, _spec(), hours=HOURS), path)


def test_a_stationary_day_fires_no_security_rule(stationary):
    start, evals, firing, _, _ = stationary
    assert not [a for a in firing if a["rule"] in RULES], [(a["rule"], a["window_end"] - start) for a in firing]
    traffic = [e for e in evals if e["metric"] == "traffic_rate_anomaly"]
    # judged only once a slot has a period of history: the whole second day, not the first
    assert traffic and min(e["window_end"] for e in traffic) > start + DAY2
    assert len(traffic) >= 0.95 * DAY2 / 300
    assert np.median([e["value"] for e in traffic]) == 0.0
    dup = [e["value"] for e in evals if e["metric"] == "near_duplicate_share"]
    assert max(dup) < 0.05
    assert {e["metric"] for e in evals} >= set(SECURITY_METRICS)


def test_a_5x_traffic_spike_fires_the_traffic_rule_and_only_it(tmp_path, stationary):
    at = DAY2 + 6 * 3600.0
    start, evals, firing, _ = _run(tmp_path, _spec(Change("traffic_spike", at, factor=5.0, until=at + 3600.0)))
    hits = [a for a in firing if a["rule"] == "traffic-anomaly"]
    assert hits, [(a["rule"], a["window_end"] - start) for a in firing]
    first = min(a["window_end"] for a in hits) - (start + at)
    assert 0 < first <= 3 * 300.0, f"fired {first:.0f} s after the spike began"
    assert hits[0]["details"]["direction"] == "spike" and hits[0]["details"]["ratio"] > 3
    # notifications say what the pane saw against what was expected
    ev = msgspec.convert({k: v for k, v in hits[0].items() if k not in ("type", "key")}, AlertEvent)
    assert re.search(r"traffic_rate_anomaly = [\d.e+]+ vs threshold 6 \(p = .*\) \(\d+ events vs [\d.]+ "
                     r"expected: spike x[\d.]+\) on model", statement(ev)), statement(ev)
    assert not [a for a in firing if a["rule"] in RULES and a["rule"] != "traffic-anomaly"]
    # the spike's panes score far above the stationary run's worst
    calm = max(e["value"] for e in stationary[1] if e["metric"] == "traffic_rate_anomaly"
               and e["window_end"] < stationary[0] + HOURS * 3600 - 600)
    inside = [e["value"] for e in evals if e["metric"] == "traffic_rate_anomaly"
              and start + at + 300 < e["window_end"] <= start + at + 3600]
    assert min(inside) > max(calm, 6.0)


@pytest.mark.parametrize("factor", [0.1, 0.0])
def test_a_traffic_drop_fires_the_traffic_rule(tmp_path, factor):
    at = DAY2 + 10 * 3600.0
    start, _, firing, _ = _run(tmp_path, _spec(Change("traffic_spike", at, factor=factor, until=at + 3600.0)))
    hits = [a for a in firing if a["rule"] == "traffic-anomaly"]
    assert hits and hits[0]["details"]["direction"] == "drop", [(a["rule"], a["window_end"] - start) for a in firing]
    assert hits[0]["details"]["count"] <= 0.2 * hits[0]["details"]["expected"]
    assert 0 < min(a["window_end"] for a in hits) - (start + at) <= 3 * 300.0


def test_a_near_duplicate_burst_fires_its_rule(tmp_path):
    at = DAY2 + 3 * 3600.0
    # 0.3 probes/s for 30 min on top of ~0.5/s: about a third of each window's queries
    spec = _spec(Change("probe", at, rate=0.3, until=at + 1800.0, spread=0.005))
    start, evals, firing, _ = _run(tmp_path, spec)
    hits = [a for a in firing if a["rule"] == "near-duplicate-burst"]
    assert hits, [(a["rule"], a["window_end"] - start) for a in firing]
    assert 0 < min(a["window_end"] for a in hits) - (start + at) <= 4 * 300.0
    during = [e for e in evals if e["metric"] == "near_duplicate_share"
              and start + at <= e["window_start"] and e["window_end"] <= start + at + 1800]
    assert during and min(e["value"] for e in during) > 0.2
    # the interval from the sketch's error bound holds the value
    assert all(e["ci_low"] <= e["value"] <= e["ci_high"] for e in during)
    # (the burst is extra traffic too, which the traffic rule may see; the others stay quiet)
    assert not [a for a in firing if a["rule"] in ("out-of-support", "schema-violations")]


def test_out_of_support_inputs_and_schema_violations_fire_their_rules(tmp_path):
    at = DAY2 + 2 * 3600.0

    def mutate(preds, start):
        rng = np.random.default_rng(0)
        for r in preds:
            late = r["timestamp"] >= start + at
            if late and rng.random() < 0.2:
                r["features"]["num_01"] = 50.0  # far beyond the reference's largest value
            if late and rng.random() < 0.1:
                # a known model's record with a feature of the wrong type: dead-lettered
                yield {**r, "features": {**r["features"], "num_02": "oops"}}
                continue
            yield r

    start, evals, firing, _ = _run(tmp_path, _spec(), mutate=mutate)
    rules = {a["rule"] for a in firing}
    assert {"out-of-support", "schema-violations"} <= rules, rules
    sv = [e for e in evals if e["metric"] == "schema_violation_rate" and e["window_start"] > start + at]
    assert np.median([e["value"] for e in sv]) == pytest.approx(0.1, abs=0.03)
    assert all(e["ci_low"] <= e["value"] <= e["ci_high"] for e in sv)
    oos = [e for e in evals if e["metric"] == "out_of_support_share" and e["window_start"] > start + at]
    # the violating records are not among the predictions: 20% of the 90% left
    assert np.median([e["value"] for e in oos]) == pytest.approx(0.2, abs=0.05)
    # the alert names the feature that went out of range, not its values
    oos_alert = next(a for a in firing if a["rule"] == "out-of-support")
    assert next(iter(oos_alert["details"]["features"])) == "num_01"
    assert "50.0" not in json.dumps(oos_alert)
    before = [e["value"] for e in evals if e["metric"] == "out_of_support_share" and e["window_end"] <= start + at]
    assert max(before) < 0.05


def test_out_of_support_share_equals_a_direct_numpy_count(stationary):
    start, evals, _, pipeline, tmp_path = stationary
    m = pipeline.by_name["m"]
    sec = m.layout.security
    prof = m.profile
    with open(tmp_path / "predictions.jsonl", "rb") as f:
        preds = [json.loads(x) for x in f]
    ts = np.array([r["timestamp"] for r in preds])
    X = np.array([[r["features"][f] for f in m.layout.numeric] for r in preds], dtype=float)
    lo = np.array([prof.numeric[f].low for f in m.layout.numeric])
    hi = np.array([prof.numeric[f].high for f in m.layout.numeric])
    vocab = [set(prof.categorical[c].categories) for c in m.layout.categorical]
    unseen = np.array([[r["features"][c] not in v for c, v in zip(m.layout.categorical, vocab, strict=True)]
                       for r in preds])
    outside = ((lo > X) | (hi < X)).any(axis=1) | unseen.any(axis=1)
    # every window's share against the rows of its time range, counted directly
    cum = np.concatenate([[0], np.cumsum(outside)])
    windows = [e for e in evals if e["metric"] == "out_of_support_share"]
    a = np.searchsorted(ts, [e["window_start"] for e in windows])
    b = np.searchsorted(ts, [e["window_end"] for e in windows])
    assert [e["n"] for e in windows] == (b - a).tolist()
    np.testing.assert_allclose([e["value"] for e in windows], (cum[b] - cum[a]) / (b - a), rtol=0, atol=1e-12)
    assert 0 < outside.sum() < 0.01 * len(preds)  # the test sees some, as ordinary traffic has a few
    # the reference's collision level is the exact one of its sample rows on the same grid
    Xs = np.array([[np.nan if v is None else v for v in prof.sample[f]] for f in m.layout.numeric], dtype=float).T
    Cs = np.array([[list(prof.categorical[c].categories).index(v) for v in prof.sample[c]]
                   for c in m.layout.categorical]).T
    assert sec.baseline_collision == collision_probability(sec.grid.keys(Xs, Cs)) < 1e-3
    assert isinstance(sec, SecurityLayout)


def test_pane_state_holds_no_input_value(stationary):
    pipeline = stationary[3]
    m = pipeline.by_name["m"]
    blob = m.window.to_dict()
    text = json.dumps(blob["extras"]["dups"]) + json.dumps({k: blob[k] for k in ("n_outside", "n_invalid")})
    # the sketch is counters and their indices: no float (feature values are floats)
    assert "." not in text
    d = blob["extras"]["dups"]
    assert set(d) == {"kind", "version", "width", "depth", "seed", "n", "index", "count"}


def test_traffic_baseline_survives_a_checkpoint(stationary):
    pipeline = stationary[3]
    m = pipeline.by_name["m"]
    before = m.evaluator.traffic.to_dict()
    m2 = type(m)(m.cfg, 0, m.profile)
    m2.restore(m.to_bytes())
    assert m2.evaluator.traffic.to_dict() == before
    assert math.isfinite(before["s1"][0])


def test_a_run_resumed_from_a_checkpoint_mid_spike_matches_an_uninterrupted_one(tmp_path):
    """The traffic baseline, the sketches and the violation counts live in the checkpoint:
    a run stopped in the middle of a spike and resumed gives the same evaluations and alerts."""
    at = DAY2 + 2 * 3600.0
    spec = _spec(Change("traffic_spike", at, factor=5.0, until=at + 3600.0))
    config, p, _, start, preds, _ = build_case(tmp_path, spec, hours=30.0, seed=5, rules=SECURITY_RULES,
                                               pane_seconds=300.0, window_panes=3)
    whole = io.StringIO()
    replay(config, p, None, whole)

    cut = start + at + 1500.0
    head = [orjson.dumps(r) for r in preds if r["timestamp"] < cut]
    head.insert(len(head) // 2, orjson.dumps({**preds[len(head) // 2], "features": {"num_00": "x"}}))
    first = Pipeline(config, load_profiles(config), labels_expected=False)
    got = io.StringIO()
    dec = RecordDecoder(config.fields, config.models)
    for i in range(0, len(head), 1000):
        ingest(first, dec, "predictions", 0, head[i : i + 1000])
        first.advance()
        write_output(first.drain(), got)
    blobs = {**first.model_blobs(), **first.partition_blobs()}
    resumed = Pipeline(config, load_profiles(config), labels_expected=False)
    resumed.restore_models(blobs)
    resumed.restore_partition(0, blobs["partition/0"])
    rest = write_jsonl(tmp_path / "rest.jsonl", [r for r in preds if r["timestamp"] >= cut])
    replay(config, rest, None, got, pipeline=resumed)

    # the whole run had no malformed record: compare everything but the violation counts
    def strip(text: str) -> list[dict]:
        rows = [json.loads(x) for x in text.splitlines()]
        return [r for r in rows if r.get("metric") != "schema_violation_rate"]

    mine, theirs = strip(got.getvalue()), strip(whole.getvalue())
    assert [r for r in mine if r["type"] == "alert"] == [r for r in theirs if r["type"] == "alert"]
    assert mine == theirs
    assert any(r["type"] == "alert" and r["rule"] == "traffic-anomaly" for r in mine)
    sv = [json.loads(x) for x in got.getvalue().splitlines() if '"schema_violation_rate"' in x]
    assert max(r["details"]["violations"] for r in sv if r["type"] == "evaluation") == 1
