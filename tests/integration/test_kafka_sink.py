"""The Kafka sink against real brokers (``broker``: Tansu and Apache Kafka): CloudEvents on the alerts
topic, read back with a consumer; the id is the same on every retry, across a broker that
is unreachable at first and a crash that re-sends an already produced event."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import time

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from monitor.events import AlertEvent, alert_id
from monitor.outbox import Deliverer, Outbox
from monitor.sinks.kafka import KafkaSink
from monitor.state import DB_NAME, StateStore

pytestmark = pytest.mark.integration


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def firing() -> AlertEvent:
    return AlertEvent(
        id=alert_id("credit-risk", "accuracy-drop", "model", 1_700_000_000.0),
        seq=1,
        state="firing",
        model="credit-risk",
        rule="accuracy-drop",
        metric="accuracy",
        scope="model",
        severity="critical",
        value=0.71,
        threshold=0.75,
        window_start=1_700_000_000.0 - 900,
        window_end=1_700_000_000.0,
        started_at=1_700_000_000.0,
    )


def open_outbox(directory, bootstrap, topic, timeout=5.0):
    store = StateStore(directory)
    sink = KafkaSink(topic, [bootstrap], timeout_seconds=timeout)
    return store, Outbox(store, [sink]), sink


def test_cloudevents_reach_the_topic_with_a_stable_id(broker, tmp_path):
    bootstrap = broker.bootstrap
    topic = f"driftline-alerts-{time.time_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    state = tmp_path / "state"
    ev = firing()

    # 1. The broker is unreachable: a retryable failure, the row stays pending.
    store, outbox, sink = open_outbox(state, dead_address(), topic, timeout=1.0)
    store.checkpoint({}, {}, extra=lambda c: outbox.enqueue(c, [ev]))
    Deliverer(outbox).run_once()
    (row,) = outbox.rows()
    assert (row["status"], row["attempts"]) == ("pending", 1) and "KafkaTimeoutError" in row[
        "last_error"
    ]
    sink.close()
    store.close()

    # 2. Restart against the real broker: delivered. Keep the DB as it was before the mark.
    shutil.copytree(state, tmp_path / "before")
    store, outbox, sink = open_outbox(state, bootstrap, topic)
    Deliverer(outbox).run_once(time.time() + 3600)
    assert outbox.rows()[0]["status"] == "delivered"
    sink.close()
    store.close()

    # 3. A crash lost the delivered mark: the restarted daemon produces the event again.
    src = sqlite3.connect(tmp_path / "before" / DB_NAME)
    assert src.execute("SELECT status FROM outbox").fetchall() == [("pending",)]
    src.close()
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "before", state)
    store, outbox, sink = open_outbox(state, bootstrap, topic)
    Deliverer(outbox).run_once(time.time() + 3600)
    assert outbox.rows()[0]["status"] == "delivered"
    sink.close()
    store.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    records = []
    deadline = time.monotonic() + 20
    while len(records) < 2 and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    assert len(records) == 2
    events = [json.loads(r.value) for r in records]
    assert [e["id"] for e in events] == [ev.key, ev.key]  # same id: consumers drop the repeat
    assert len({e["id"] for e in events}) == 1
    for r, e in zip(records, events, strict=True):
        assert r.key == b"credit-risk"
        assert dict(r.headers)["content-type"].startswith(b"application/cloudevents+json")
        assert e["specversion"] == "1.0" and e["type"] == "io.driftline.alert.firing"
        assert e["source"] == "driftline/credit-risk" and e["datacontenttype"] == "application/json"
        assert e["data"]["value"] == 0.71 and e["data"]["rule"] == "accuracy-drop"
