"""Replay: the pipeline over files. Output format, determinism, checkpoint round trip."""

from __future__ import annotations

import io
import json

import pytest

from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles
from monitor.replay import replay
from monitor.synth import Change

from .conftest import build_case


def _run(config, p, lab) -> list[dict]:
    buf = io.StringIO()
    replay(config, p, lab, buf)
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_output_lines_have_the_documented_fields(tmp_path, small_spec):
    config, p, lab, *_ = build_case(tmp_path, small_spec, hours=1.0)
    rows = _run(config, p, lab)
    evals = [r for r in rows if r["type"] == "evaluation"]
    assert evals, "no evaluation written"
    keys = {"window_start", "window_end", "model", "metric", "scope", "value", "ci_low", "ci_high",
            "p_value", "threshold", "status", "n"}
    assert all(keys <= set(r) for r in evals)
    metrics = {r["metric"] for r in evals}
    assert {"psi", "accuracy", "roc_auc", "demographic_parity_difference", "selection_rate",
            "label_coverage", "missing_rate", "score_psi"} <= metrics
    scopes = {r["scope"] for r in evals if r["metric"] == "psi"}
    assert scopes == set(small_spec.numeric + small_spec.categorical)
    # windows advance by one pane and never exceed window_panes panes
    ends = sorted({r["window_end"] for r in evals})
    assert all(b - a == 60.0 for a, b in zip(ends, ends[1:], strict=False))
    assert all(r["window_end"] - r["window_start"] <= 15 * 60.0 for r in evals)


def test_replay_is_deterministic(tmp_path, small_spec):
    config, p, lab, *_ = build_case(tmp_path, small_spec, hours=0.5)
    assert _run(config, p, lab) == _run(config, p, lab)


def test_checkpoint_mid_stream_restores_identical_results(tmp_path, small_spec):
    """Half the input, state to bytes, a fresh pipeline restored from them, the rest: same output."""
    config, p, lab, *_ = build_case(tmp_path, small_spec, hours=1.0)
    whole = _run(config, p, lab)

    lines_p = p.read_bytes().splitlines(keepends=True)
    lines_l = lab.read_bytes().splitlines(keepends=True)
    half_t = json.loads(lines_p[len(lines_p) // 2])["timestamp"]
    first_p = [x for x in lines_p if json.loads(x)["timestamp"] <= half_t]
    first_l = [x for x in lines_l if json.loads(x)["timestamp"] <= half_t]
    (tmp_path / "p1.jsonl").write_bytes(b"".join(first_p))
    (tmp_path / "l1.jsonl").write_bytes(b"".join(first_l))
    (tmp_path / "p2.jsonl").write_bytes(b"".join(lines_p[len(first_p):]))
    (tmp_path / "l2.jsonl").write_bytes(b"".join(lines_l[len(first_l):]))

    out = io.StringIO()
    pipe = Pipeline(config, load_profiles(config))
    _feed_without_flush(config, pipe, tmp_path / "p1.jsonl", tmp_path / "l1.jsonl", out)
    blobs = {**pipe.partition_blobs(), **pipe.model_blobs()}
    restored = Pipeline(config, load_profiles(config))
    restored.restore_models(blobs)
    restored.restore_partition(0, blobs["partition/0"])
    replay(config, tmp_path / "p2.jsonl", tmp_path / "l2.jsonl", out, pipeline=restored)
    resumed = [json.loads(x) for x in out.getvalue().splitlines()]
    # classification sums are fixed point, so the resumed run is bit-for-bit the same
    assert resumed == whole


def _feed_without_flush(config, pipe, p, lab, out):
    """Like replay() but without the end-of-input flush (the stream goes on)."""
    import monitor.replay as r

    original = pipe.flush_all
    pipe.flush_all = lambda: pipe.out  # type: ignore[method-assign]
    try:
        r.replay(config, p, lab, out, pipeline=pipe)
    finally:
        pipe.flush_all = original  # type: ignore[method-assign]


def test_covariate_shift_fires_on_the_shifted_feature(tmp_path, small_spec):
    small_spec.changes = [Change("covariate_shift", 3600.0, feature="num_02", shift=0.8)]
    config, p, lab, start, *_ = build_case(tmp_path, small_spec, hours=2.0)
    rows = _run(config, p, lab)
    alerts = [r for r in rows if r["type"] == "alert" and r["state"] == "firing"]
    drift = [a for a in alerts if a["rule"] == "feature-drift"]
    assert drift and {a["scope"] for a in drift} == {"num_02"}, alerts
    first = min(a["window_end"] for a in drift)
    assert start + 3600.0 < first <= start + 3600.0 + 2 * 15 * 60.0


def test_bad_records_are_reported_and_the_rest_goes_on(tmp_path, small_spec, capsys):
    config, p, lab, *_ = build_case(tmp_path, small_spec, hours=0.5)
    lines = p.read_bytes().splitlines()
    bad = [b"{not json", b'{"prediction_id": "x", "model": "m", "timestamp": 1700000001, "features": {"num_00": "high"}}']
    p.write_bytes(b"\n".join(lines[:100] + bad + lines[100:]) + b"\n")
    rows = _run(config, p, lab)
    err = capsys.readouterr().err
    assert "invalid JSON" in err and "$.features.num_00" in err
    assert any(r["type"] == "evaluation" for r in rows)


@pytest.mark.parametrize("unit", ["ms", "iso"])
def test_timestamp_units(tmp_path, small_spec, unit):
    import datetime as dt

    config, p, lab, *_ = build_case(tmp_path, small_spec, hours=0.5, extra_toml=f'[fields]\ntimestamp_unit = "{unit}"\n')
    conv = (lambda t: int(t * 1000)) if unit == "ms" else (lambda t: dt.datetime.fromtimestamp(t, dt.UTC).isoformat())
    for path in (p, lab):
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        for r in rows:
            r["timestamp"] = conv(r["timestamp"])
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rows = _run(config, p, lab)
    assert any(r["type"] == "evaluation" and r["metric"] == "accuracy" for r in rows)


def test_without_a_reference_the_first_events_become_it(tmp_path, small_spec):
    from monitor.config import load_config_text
    from monitor.synth import config_models_toml, default_rules

    _, p, lab, start, preds, _ = build_case(tmp_path, small_spec, hours=1.0)
    cfg = load_config_text(config_models_toml(small_spec, reference="", rules=default_rules(0.6, 0.55),
                                              warmup_events=2000, pane_seconds=60.0, window_panes=15))
    rows = _run(cfg, p, lab)
    evals = [r for r in rows if r["type"] == "evaluation"]
    warm_end = preds[1999]["timestamp"]
    # nothing is evaluated before the warm-up reference exists, everything after it is
    assert evals and min(r["window_start"] for r in evals) >= warm_end - 60.0
    psi = [r["value"] for r in evals if r["metric"] == "psi" and r["n"] >= 500]
    assert psi and max(psi) < 0.1  # a stationary stream against its own first events
    assert not [r for r in rows if r["type"] == "alert"]
