"""Erasure with ``state.backend = "kafka"`` against Apache Kafka: after ``POST /api/erasures``
the newest snapshots on the partition and model changelogs (read from the topics directly)
no longer hold the id, and the audit topic's chains verify with a ``privacy.erased`` entry
that holds no id."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import msgspec
import numpy as np
import pytest
from kafka import KafkaConsumer

from monitor.changelog import InternalTopics, read_snapshots
from monitor.decode import hash_ids

from .daemon_harness import Daemon, Producer, Topics, create_topics, make_case, servers, wait_until
from .test_kafka_state import _api, _config, _no_traceback, _settled, _topic_records

pytestmark = pytest.mark.integration

_unpack = msgspec.msgpack.Decoder()


def _snapshots(bootstrap: str, topic: str) -> dict:
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = sorted(c.partitions_for_topic(topic) or ())
    finally:
        c.close()
    out = {}
    for p in parts:
        out.update(read_snapshots({"bootstrap_servers": bootstrap}, topic, p, timeout_seconds=60))
    return out


def _pane_keys(d: dict) -> set[int]:
    return set(d["psample"]["keys"]) | set(d["osample"]["keys"]) | set(d["pending_errors"]["key"])


def _stored_keys(bootstrap: str, internal: InternalTopics) -> tuple[set[int], set[int]]:
    """(keys waiting in the join, keys in pane samples) of the newest snapshots."""
    join, panes = set(), set()
    for key, snap in _snapshots(bootstrap, internal.partition_changelog).items():
        if not key.startswith("partition/"):
            continue
        s = _unpack.decode(snap.data)
        for side in ("preds", "labels"):
            join |= set(np.load(io.BytesIO(s[side]), allow_pickle=False)["keys"].tolist())
        for open_panes in s["open"]:
            for d in open_panes:
                panes |= _pane_keys(d)
    for key, snap in _snapshots(bootstrap, internal.model_changelog).items():
        if not key.startswith("model/"):
            continue  # the panes offsets
        rt = _unpack.decode(_unpack.decode(snap.data)["runtime"])
        for d in list(rt["panes"]) + list(rt["pending"]) + ([rt["window"]] if rt["window"] else []):
            panes |= _pane_keys(d)
    return join, panes


def test_an_erasure_reaches_the_changelog_snapshots_and_the_audit_topic(kafka, tmp_path):
    bootstrap = servers(kafka)
    case = make_case(tmp_path, minutes=12, rate=6.0, seed=4, label_delay=120.0)
    topics = Topics.unique("erase")
    create_topics(bootstrap, topics.all(), 2)
    group = f"erase-{time.time_ns()}"
    internal = InternalTopics(group)
    os.environ["DRIFTLINE_TEST_API_TOKEN"] = "t0ken-for-the-erasure-test"
    cfg = _config(case, bootstrap, topics, group, tmp_path / "state", None, tmp_path / "a.toml")
    cfg.write_text(cfg.read_text().replace("[http]\n", '[http]\napi_token = "${DRIFTLINE_TEST_API_TOKEN}"\n')
                   .replace("[reports]\nenabled = false\n", "[reports]\nenabled = true\nsample_size = 300\n"))
    d = Daemon(cfg, tmp_path / "a.log")
    prod = Producer(bootstrap)
    try:
        d.start()
        d.wait_http(90)
        cut = case.preds[-1]["timestamp"] - 300.0  # the last five minutes' predictions wait for labels
        prod.send(topics.predictions, case.preds)
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] < cut])
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "the replica to consume everything")
        by_key = {int(k): p["prediction_id"]
                  for k, p in zip(hash_ids([p["prediction_id"] for p in case.preds]), case.preds, strict=True)}
        join, panes = wait_until(lambda: (lambda j, p: (j, p) if j and p else None)(*_stored_keys(bootstrap, internal)),
                                 60, "snapshots holding waiting predictions and pane samples")
        targets = [by_key[min(join - panes)], by_key[min(k for k in panes - join if k in by_key)]]
        for pid in targets:
            status, body = _api(d, "POST", "/api/erasures", {"prediction_id": pid, "who": "dpo"})
            assert status == 200, body
        assert _api(d, "POST", "/api/erasures", {"prediction_id": "", "who": "dpo"})[0] == 400
        gone = {int(hash_ids([t])[0]) for t in targets}
        join2, panes2 = wait_until(lambda: (lambda j, p: (j, p) if not (gone & (j | p)) else None)(
            *_stored_keys(bootstrap, internal)), 60, "the next snapshots without the erased ids")
        assert join2 == join - gone  # nothing else left the join (no new input came)
        assert d.terminate() == 0
        _no_traceback(d)
    finally:
        prod.close()
        d.stop_quietly()
    res = subprocess.run([sys.executable, "-m", "monitor.cli", "audit", "verify", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    records = [r.value.decode() for r in _topic_records(bootstrap, f"{group}-audit")]
    erased = [json.loads(v) for v in records if '"privacy.erased"' in v]
    assert len(erased) == 2 and all(e["data"]["backend"] == "kafka" for e in erased)
    for pid in targets:
        assert not any(pid in v for v in records)
