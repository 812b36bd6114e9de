"""Privacy: an erased prediction id is gone from every store the daemon owns (each store read
directly: the SQLite blobs, the reports directory, the audit file) and the audit chain still
verifies; no raw feature or sensitive value reaches the logs or the metrics."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import orjson
import pytest
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest

from monitor.app import App
from monitor.audit import verify
from monitor.decode import hash_ids
from monitor.privacy import digest_matches, id_key
from monitor.synth import Change, ModelSpec

from .conftest import FakeConsumer, build_case

SECRET = "s3cr3t-erasure-key"
TOKEN = "test-token-123"


class _Record(SimpleNamespace):
    pass


class LoopConsumer(FakeConsumer):
    """Hands the App's poll loop the queued records of one partition per topic."""

    def __init__(self):
        super().__init__()
        self.queue: list[tuple[str, list[bytes], int]] = []  # (topic, values, first offset)

    def poll(self, timeout_ms=0, max_records=None):
        if not self.queue:
            return {}
        topic, values, first = self.queue.pop(0)
        return {TopicPartition(topic, 0): [_Record(offset=first + i, value=v, key=None)
                                           for i, v in enumerate(values)]}


class FakeProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, value=None, key=None, headers=None):
        self.sent.append((topic, value, headers))

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def _extra(tmp_path: Path, sample_size: int = 300, port: int = 0) -> str:
    return (f'[kafka]\nfetch_process = false\n[http]\nport = {port}\napi_token = "${{TEST_API_TOKEN}}"\n'
            f'[reports]\ndir = "{(tmp_path / "reports").as_posix()}"\nsample_size = {sample_size}\n'
            '[privacy]\nerasure_secret = "${TEST_ERASURE_SECRET}"\n')


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("TEST_API_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_ERASURE_SECRET", SECRET)


def _app(tmp_path, config, registry=None) -> App:
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"), http_port=0,
              registry=registry or CollectorRegistry())
    app.consumer = LoopConsumer()
    app.producer = FakeProducer()
    app._on_assigned([TopicPartition("predictions", 0), TopicPartition("labels", 0)])
    return app


def _feed(app: App, topic: str, rows: list, offset: int) -> int:
    values = [r if isinstance(r, bytes) else orjson.dumps(r) for r in rows]
    for i in range(0, len(values), 500):
        app.consumer.queue.append((topic, values[i : i + 500], offset + i))
        app.poll_once()
    return offset + len(values)


# -- reading the stores directly ---------------------------------------------------------------
def _blobs(state_dir: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(state_dir / "driftline.db")
    try:
        return {n: bytes(d) for n, d in conn.execute("SELECT name, data FROM blobs")}
    finally:
        conn.close()


def _pane_keys(d: dict) -> set[int]:
    out = set(d["psample"]["keys"]) | set(d["osample"]["keys"]) | set(d["pending_errors"]["key"])
    return out


def _keys_in_state(state_dir: Path) -> dict[str, set[int]]:
    """Every id hash each store of the state database holds, by store."""
    stores: dict[str, set[int]] = {"join": set(), "panes": set()}
    unpack = msgspec.msgpack.Decoder()
    for name, data in _blobs(state_dir).items():
        s = unpack.decode(data)
        if name.startswith("partition/"):
            for side in ("preds", "labels"):
                z = np.load(io.BytesIO(s[side]), allow_pickle=False)
                stores["join"] |= set(z["keys"].tolist())
            for panes in s["open"]:
                for d in panes:
                    stores["panes"] |= _pane_keys(d)
        elif name.startswith("model/"):
            for d in list(s["panes"]) + list(s["pending"]) + ([s["window"]] if s["window"] else []):
                stores["panes"] |= _pane_keys(d)
    return stores


def _sampled_rows(state_dir: Path) -> dict[int, dict]:
    """The window panes' sampled prediction rows by id hash."""
    unpack = msgspec.msgpack.Decoder()
    out = {}
    for name, data in _blobs(state_dir).items():
        if name.startswith("model/"):
            for d in unpack.decode(data)["panes"]:
                ps = d["psample"]
                for i, k in enumerate(ps["keys"]):
                    out[k] = {c: v[i] for c, v in ps["data"].items()}
    return out


def _report_keys(reports: Path) -> dict[str, set[int]]:
    return {p.name[: -len(".keys.json")]: set(json.loads(p.read_text())["keys"])
            for p in reports.glob("*.keys.json")}


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


def _erase_via_api(app: App, prediction_id: str) -> tuple[int, dict]:
    """POST /api/erasures from another thread while this one runs the poll loop."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", _post(f"{app.http.url}/api/erasures", {"prediction_id": prediction_id, "who": "dpo@example.org"})))
    t.start()
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        app.poll_once()  # applies the queued erasure between batches, then checkpoints
        time.sleep(0.01)
    t.join(1)
    return result["r"]


def test_erased_id_is_gone_from_every_store_and_the_chain_verifies(tmp_path, env, small_spec):
    small_spec.changes = [Change("covariate_shift", 1800.0, feature="num_02", shift=1.5)]
    config, _p, _l, start, preds, labels = build_case(tmp_path, small_spec, hours=1.0, extra_toml=_extra(tmp_path))
    state, reports = tmp_path / "state", tmp_path / "reports"
    app = _app(tmp_path, config)
    try:
        app._start_http()
        cut = start + 3000.0  # labels up to here: predictions after it wait in the join
        _feed(app, "predictions", preds, 0)
        _feed(app, "labels", [r for r in labels if r["timestamp"] < cut], 0)
        app.report_pool.submit(lambda: None).result()  # the evidence report is written
        app.checkpoint(commit=False)
        before = _keys_in_state(state)
        in_reports = _report_keys(reports)
        assert in_reports, "the shift should have fired with an evidence report"
        report_id, report_keys = next(iter(in_reports.items()))
        assert (reports / f"{report_id}.html").exists()
        by_key = {int(k): p["prediction_id"] for k, p in zip(hash_ids([p["prediction_id"] for p in preds]), preds,
                                                            strict=True)}
        # one id sampled in the report and in a window pane, one waiting for its label
        rows = _sampled_rows(state)
        sampled = sorted(k for k in report_keys & set(rows) if k in by_key)
        waiting = sorted(k for k in before["join"] - before["panes"] if k in by_key)
        assert sampled and waiting
        targets = [by_key[sampled[0]], by_key[waiting[0]]]
        row = next(p for p in preds if p["prediction_id"] == targets[0])
        assert rows[sampled[0]]["num_00"] == row["features"]["num_00"]  # its raw values, by its key

        raw = b"".join(p.read_bytes() for p in state.glob("driftline.db*"))
        assert b"\xcf" + sampled[0].to_bytes(8, "big") in raw  # the byte check below can fail
        for pid in targets:
            status, body = _erase_via_api(app, pid)
            assert status == 200, body
            assert pid not in json.dumps(body)
        url = f"{app.http.url}/api/erasures"
        for headers, body, code in (({}, {"prediction_id": targets[0], "who": "x"}, 401),
                                    ({"Authorization": f"Bearer {TOKEN}"}, {"prediction_id": targets[0]}, 400),
                                    ({"Authorization": f"Bearer {TOKEN}"}, {"prediction_id": 7, "who": "x"}, 400)):
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == code

        after = _keys_in_state(state)
        for pid in targets:
            k = id_key(pid)
            assert k not in after["join"] and k not in after["panes"]
            assert all(k not in keys for keys in _report_keys(reports).values())
        assert not (reports / f"{report_id}.html").exists()  # the report held the sampled id
        # the erased keys' bytes (numpy's little-endian arrays, msgpack's big-endian ints) are
        # not in the database files either: no old page or log frame keeps them
        raw = b"".join(p.read_bytes() for p in state.glob("driftline.db*"))
        for pid in targets:
            k = id_key(pid)
            assert np.uint64(k).tobytes() not in raw and b"\xcf" + k.to_bytes(8, "big") not in raw
        assert row["features"]["num_00"] not in [r["num_00"] for r in _sampled_rows(state).values()]
        # nothing else was taken: the other ids are all still there
        assert after["join"] == before["join"] - {id_key(t) for t in targets}
        assert after["panes"] == before["panes"] - {id_key(t) for t in targets} - {0}
    finally:
        app.close()
    audit_path = state / "audit.jsonl"
    res = verify(audit_path)
    assert res.ok, res
    text = audit_path.read_text()
    entries = [json.loads(x) for x in text.splitlines()]
    erased = [e for e in entries if e["kind"] == "privacy.erased"]
    assert len(erased) == 2
    for pid, e in zip(targets, erased, strict=True):
        assert pid not in text and str(id_key(pid)) not in text  # neither the id nor its state key
        assert digest_matches(e["data"], pid, SECRET)
        assert not digest_matches(e["data"], pid + "x", SECRET)
        assert e["actor"] == "dpo@example.org"
    assert erased[0]["data"]["reports_deleted"] == [report_id]
    assert erased[0]["data"]["removed"]["pane_prediction_rows"] >= 1
    assert erased[1]["data"]["removed"]["join_predictions"] == 1


def test_offline_erase_on_a_stopped_daemons_state(tmp_path, env, small_spec):
    from monitor.cli import main as cli_main

    config, _p, _l, _start, preds, _labels = build_case(tmp_path, small_spec, hours=0.5, extra_toml=_extra(tmp_path))
    state = tmp_path / "state"
    app = _app(tmp_path, config)
    try:
        _feed(app, "predictions", preds, 0)
        app.checkpoint(commit=False)
    finally:
        app.close()
    before = _keys_in_state(state)
    waiting = sorted(before["join"])
    by_key = {int(k): p["prediction_id"] for k, p in zip(hash_ids([p["prediction_id"] for p in preds]), preds,
                                                        strict=True)}
    pid = by_key[waiting[0]]
    assert cli_main(["erase", "--config", str(_config_file(tmp_path, state)), pid, "--by", "dpo"]) == 0
    after = _keys_in_state(state)
    assert id_key(pid) not in after["join"] and after["join"] == before["join"] - {id_key(pid)}
    assert verify(state / "audit.jsonl").ok
    assert pid not in (state / "audit.jsonl").read_text()
    # the freed pages were overwritten: the erased key's bytes are not in the database files
    raw = b"".join(p.read_bytes() for p in state.glob("driftline.db*"))
    assert np.uint64(id_key(pid)).tobytes() not in raw


def test_offline_erase_refuses_while_the_daemon_answers(tmp_path, env, small_spec):
    from monitor.errors import StateError
    from monitor.privacy import erase_offline

    config, *_ = build_case(tmp_path, small_spec, hours=0.1, extra_toml=_extra(tmp_path))
    app = _app(tmp_path, config)
    try:
        app._start_http()
        cfg = _config_file(tmp_path, tmp_path / "state", port=app.http.port)
        from monitor.config import load_config

        with pytest.raises(StateError, match=r"a daemon answers on 127\.0\.0\.1:\d+.*POST /api/erasures"):
            erase_offline(load_config(cfg), "m-0-1")
    finally:
        app.close()


def _config_file(tmp_path: Path, state: Path, port: int = 0) -> Path:
    from monitor.synth import config_models_toml, default_rules

    spec = ModelSpec("m", n_numeric=4, n_categorical=2, rate=4.0, label_delay=60.0, sensitive={"sex": ["F", "M"]})
    text = (_extra(tmp_path, port=port) + f'[state]\ndir = "{state.as_posix()}"\n[audit]\npath = '
            f'"{(state / "audit.jsonl").as_posix()}"\n'
            + config_models_toml(spec, reference=(tmp_path / "m.json").as_posix(), rules=default_rules(0.6, 0.55),
                                 pane_seconds=60.0, window_panes=15, allowed_lateness_seconds=30.0))
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- no raw values in logs or metrics ----------------------------------------------------------------
SENSITIVE = "ZZ-SENSITIVE-VALUE-ZZ"
NUMERIC = 0.7319645821337741
CATEGORY = "QQ-CATEGORY-VALUE-QQ"


def test_no_raw_value_in_logs_or_metrics(tmp_path, env, small_spec, caplog):
    small_spec.changes = [Change("covariate_shift", 1200.0, feature="num_01", shift=1.5)]
    config, _p, _l, start, preds, labels = build_case(tmp_path, small_spec, hours=0.75, extra_toml=_extra(tmp_path))
    for r in preds[100:400]:
        r["sensitive"]["sex"] = SENSITIVE
        r["features"]["num_00"] = NUMERIC
        r["features"]["cat_0"] = CATEGORY
    bad = [dict(preds[5], timestamp="not-a-time " + SENSITIVE),  # dead-lettered: bad timestamp
           dict(preds[6], features={**preds[6]["features"], "num_01": f"{NUMERIC} {SENSITIVE}"}),  # bad type
           b'{"prediction_id": "x", "model": "m", "features": {"num_00": ' + repr(NUMERIC).encode() + b", ",  # bad JSON
           {**preds[7], "model": CATEGORY}]  # unknown model
    wrong_label = [{**labels[0], "label": SENSITIVE}]
    registry = CollectorRegistry()
    caplog.set_level(logging.DEBUG)
    # the daemon's own loggers too: an in-process bench run (tests/monitor/test_bench_pipeline.py)
    # quiets "driftline" to ERROR for the rest of the session
    caplog.set_level(logging.DEBUG, logger="driftline")
    app = _app(tmp_path, config, registry)
    try:
        off = _feed(app, "predictions", preds[:50] + bad + preds[50:], 0)
        assert off
        _feed(app, "labels", labels + wrong_label, 0)
        app.report_pool.submit(lambda: None).result()
        app.checkpoint(commit=False)
    finally:
        app.close()
    assert len(app.producer.sent) == len(bad) + 1  # every bad record was dead-lettered
    assert any(r.levelno >= logging.WARNING and "dead-lettered" in r.getMessage() for r in caplog.records)
    logs = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    metrics = generate_latest(registry).decode()
    assert "ALERT FIRING" in logs  # the stream was processed and alerting (the test sees the logs)
    audit = (tmp_path / "state" / "audit.jsonl").read_text()
    assert '"alert.transition"' in audit
    for text, where in ((logs, "logs"), (metrics, "metrics"), (audit, "audit trail")):
        for value in (SENSITIVE, repr(NUMERIC), CATEGORY, "0.73196458"):
            assert value not in text, f"{value!r} appears in the {where}"


# -- retention ----------------------------------------------------------------------------------------
def test_row_samples_are_kept_for_the_window_only(tmp_path, env, small_spec):
    config, _p, _l, start, preds, labels = build_case(tmp_path, small_spec, hours=1.0, extra_toml=_extra(tmp_path))
    state = tmp_path / "state"
    app = _app(tmp_path, config)
    try:
        _feed(app, "predictions", preds, 0)
        _feed(app, "labels", labels, 0)
        app.checkpoint(commit=False)
    finally:
        app.close()
    unpack = msgspec.msgpack.Decoder()
    model = unpack.decode(_blobs(state)["model/m"])
    oldest = min(d["start"] for d in model["panes"])
    assert len(model["panes"]) == 15 and oldest > start + 1800  # the window moved on
    ts = {int(k): p["timestamp"] for k, p in zip(hash_ids([p["prediction_id"] for p in preds]), preds, strict=True)}
    rows = _sampled_rows(state)
    assert len(rows) >= 100
    # every sampled row is a prediction of a pane still in the window: rows of evicted panes left with them
    assert min(ts[k] for k in rows) >= oldest
    assert sum(1 for t in ts.values() if t < oldest) > 1000


def test_purge_deletes_reports_with_their_manifests(tmp_path):
    from monitor.privacy import write_manifest
    from monitor.reports import purge

    now = time.time()
    for name, age_days in (("old", 31), ("new", 1)):
        (tmp_path / f"{name}.html").write_text("<html></html>")
        write_manifest(tmp_path, name, [1, 2, 3])
        for p in (tmp_path / f"{name}.html", tmp_path / f"{name}.keys.json"):
            os.utime(p, (now - age_days * 86400, now - age_days * 86400))
    deleted = sorted(p.name for p in purge(tmp_path, 30, now=now))
    assert deleted == ["old.html", "old.keys.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.html", "new.keys.json"]
