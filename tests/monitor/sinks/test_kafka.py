"""Kafka sink with an in-memory producer: CloudEvents shape, stable id across a retry,
and broker errors classified as retryable (a real broker: tests/integration)."""

from __future__ import annotations

import json
import random

import pytest
from kafka.errors import KafkaTimeoutError

from monitor.errors import ConfigError
from monitor.events import RetrainRequest
from monitor.outbox import Deliverer, Notification, Outbox
from monitor.sinks.kafka import KafkaSink, cloudevents
from monitor.state import StateStore


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error
        return None


class FakeProducer:
    """Fails the first ``failures`` sends with a timeout, then keeps records."""

    def __init__(self, failures=0, **config):
        self.config = config
        self.failures = failures
        self.records = []
        self.closed = False

    def send(self, topic, key=None, value=None, headers=None):
        self.records.append((topic, key, value, headers))
        if self.failures:
            self.failures -= 1
            return Future(KafkaTimeoutError("batch expired"))
        return Future()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


def test_cloudevent_structure(make_event):
    ev = make_event()
    n = Notification(1, "kafka", ev.key, "alert", ev.model, (ev,), None, 0, 0.0, 0)
    ((key, ce),) = cloudevents(n)
    assert key == "credit-risk"
    assert ce["specversion"] == "1.0" and ce["id"] == ev.key
    assert ce["source"] == "driftline/credit-risk" and ce["type"] == "io.driftline.alert.firing"
    assert ce["time"] == "2023-11-14T22:13:20.000Z" and ce["datacontenttype"] == "application/json"
    assert (
        ce["subject"] == "feature-drift/feature:income" and ce["data"]["scope"] == "feature:income"
    )
    r = RetrainRequest(id="r1", model="m", reason="x", window_start=0, window_end=1, created_at=2)
    ((_, rce),) = cloudevents(
        Notification(2, "kafka", "retrain:r1:pending", "retrain", "m", (), r, 0, 2.0, 0)
    )
    assert rce["type"] == "io.driftline.retrain.pending" and rce["id"] == "retrain:r1:pending"


def test_id_is_stable_across_a_retry_through_the_outbox(make_event, tmp_path):
    producers = []

    def factory(**cfg):
        producers.append(FakeProducer(failures=1, **cfg))
        return producers[-1]

    sink = KafkaSink(
        "alerts",
        ["127.0.0.1:9092"],
        timeout_seconds=2,
        producer_factory=factory,
        producer_config={"security_protocol": "PLAINTEXT"},
    )
    assert sink.groupable is False and sink.repeat_interval_seconds == 0
    store = StateStore(tmp_path)
    outbox = Outbox(store, [sink], clock=lambda: 1e9)
    events = [make_event("a"), make_event("b")]
    store.checkpoint({}, {}, extra=lambda conn: outbox.enqueue(conn, events))
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=1, rng=random.Random(0))
    d.run_once(1e9)
    d.run_once(1e9 + 5)
    (p,) = producers
    assert p.config["acks"] == "all" and p.config["max_block_ms"] == 2000
    assert p.config["bootstrap_timeout_ms"] == 2000
    ids = [json.loads(v)["id"] for _, _, v, _ in p.records]
    assert ids == [events[0].key, events[0].key, events[1].key]  # the retry re-sends the same id
    assert all(
        k == "credit-risk"
        and h == [("content-type", b"application/cloudevents+json; charset=UTF-8")]
        for _, k, _, h in p.records
    )
    assert [r["status"] for r in outbox.rows()] == ["delivered", "delivered"]
    sink.close()
    assert p.closed
    store.close()


def test_broker_unreachable_at_start_is_retryable_and_recovers(make_event):
    calls = []

    def factory(**cfg):
        calls.append(cfg)
        if len(calls) == 1:
            raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9092")
        return FakeProducer()

    sink = KafkaSink("alerts", "127.0.0.1:9092", producer_factory=factory)
    ev = make_event()
    n = Notification(1, "kafka", ev.key, "alert", ev.model, (ev,), None, 0, 0.0, 0)
    out = sink.send(n)
    assert (out.ok, out.retryable) == (False, True) and "Unable to bootstrap" in out.error
    assert sink.send(n).ok and len(calls) == 2


def test_config_errors():
    with pytest.raises(ConfigError, match="topics.alerts"):
        KafkaSink("", ["x:1"])
    with pytest.raises(ConfigError, match="kafka.bootstrap_servers"):
        KafkaSink("alerts", [])
