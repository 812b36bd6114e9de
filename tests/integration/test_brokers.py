"""Smoke tests of the real servers the integration suite and the demo rely on: both Kafka
brokers carry a batched JSON stream through a consumer group with manual commits,
Alertmanager keeps a posted alert, Prometheus scrapes a real /metrics endpoint."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from monitor.broker import create_topics, free_port

pytestmark = pytest.mark.integration

N = 10_000
PARTITIONS = 3


def unique(prefix: str) -> str:
    # Fixtures are shared by the session; names never collide between tests or reruns.
    # A fresh group id also sidesteps Tansu's stuck-group quirk (monitor/broker.py).
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def encode(value: dict) -> bytes:
    return json.dumps(value).encode()


def consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


def drain(c: KafkaConsumer, want: int, timeout: float = 60.0) -> list:
    """Poll until ``want`` records came (committing after every batch) or ``timeout``."""
    records = []
    deadline = time.monotonic() + timeout
    while len(records) < want and time.monotonic() < deadline:
        batch = c.poll(timeout_ms=500, max_records=2000)
        for recs in batch.values():
            records.extend(recs)
        if batch:
            c.commit()
    return records


def test_batched_json_round_trip_with_group_commits(broker):
    bootstrap = broker.bootstrap
    topic, group = unique("smoke"), unique("smoke-group")
    assert create_topics(bootstrap, [topic], partitions=PARTITIONS) == [topic]
    assert create_topics(bootstrap, [topic], partitions=PARTITIONS) == []  # idempotent

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        batch_size=256 * 1024,
    )
    futures = [
        producer.send(topic, key=str(i % 97).encode(), value=encode({"id": i, "score": i / N}))
        for i in range(N)
    ]
    producer.flush()
    producer.close()
    assert all(f.is_done and f.succeeded() for f in futures)

    first = consumer(bootstrap, topic, group)
    records = drain(first, N)
    per_partition = {p: 0 for p in range(PARTITIONS)}
    for r in records:
        per_partition[r.partition] += 1
    committed = {p: first.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    first.close()

    values = [json.loads(r.value) for r in records]
    ids = [v["id"] for v in values]
    assert len(ids) == N and set(ids) == set(range(N))
    assert all(v["score"] == v["id"] / N for v in values)
    # Every partition got records (keys spread), and the group's commit is exactly what
    # was consumed from each partition.
    assert all(n > 0 for n in per_partition.values())
    assert committed == per_partition

    # A new member of the same group resumes after the commit: only the new records.
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(N, N + 5):
        producer.send(topic, value=encode({"id": i, "score": 1.0}))
    producer.close()
    second = consumer(bootstrap, topic, group)
    more = drain(second, 5, timeout=30)
    time.sleep(0.5)  # a late duplicate would arrive with the next poll
    more += [r for recs in second.poll(timeout_ms=500).values() for r in recs]
    second.close()
    assert sorted(json.loads(r.value)["id"] for r in more) == list(range(N, N + 5))


def test_tansu_end_offsets_count_batches_not_records(tansu):
    """Pins the Tansu quirk documented in monitor/broker.py: if this fails, Tansu was fixed
    and the docstring (and any workaround in the daemon) should go."""
    topic = unique("offsets")
    create_topics(tansu.bootstrap, [topic])
    producer = KafkaProducer(bootstrap_servers=tansu.bootstrap, linger_ms=50, batch_size=1 << 20)
    futures = [producer.send(topic, b"x") for _ in range(100)]
    producer.close()
    assert [f.get().offset for f in futures] == list(range(100))
    c = KafkaConsumer(bootstrap_servers=tansu.bootstrap)
    end = c.end_offsets([TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
    c.close()
    assert end < 100  # Apache Kafka answers 100


def test_kafka_has_topic_autocreation_off(kafka):
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, max_block_ms=2000)
    with pytest.raises(Exception, match="not present|Timeout|UNKNOWN_TOPIC"):
        producer.send(unique("never-created"), b"x").get(timeout=5)
    producer.close(timeout=1)


def test_alertmanager_keeps_a_posted_alert(alertmanager):
    marker = unique("smoke")
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "DriftlineSmoke", "marker": marker, "severity": "info"},
        "annotations": {"summary": "integration smoke test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://127.0.0.1/driftline",
    }
    r = httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text

    deadline = time.monotonic() + 10
    found: list = []
    while not found and time.monotonic() < deadline:
        got = httpx.get(
            f"{alertmanager}/api/v2/alerts", params={"filter": f'marker="{marker}"'}, timeout=5
        )
        got.raise_for_status()
        found = got.json()
        time.sleep(0.1)
    assert len(found) == 1, found
    assert found[0]["labels"]["alertname"] == "DriftlineSmoke"
    assert found[0]["status"]["state"] == "active"
    assert found[0]["annotations"] == {"summary": "integration smoke test"}


def test_prometheus_scrapes_a_metrics_endpoint(prometheus):
    registry = CollectorRegistry()
    Gauge("driftline_smoke_value", "integration smoke gauge", registry=registry).set(42.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        base = prometheus(targets=[f"127.0.0.1:{port}"])
        assert httpx.get(f"{base}/-/ready", timeout=5).status_code == 200
        deadline = time.monotonic() + 20
        result: list = []
        while not result and time.monotonic() < deadline:
            q = httpx.get(
                f"{base}/api/v1/query", params={"query": "driftline_smoke_value"}, timeout=5
            )
            q.raise_for_status()
            result = q.json()["data"]["result"]
            time.sleep(0.2)
        assert result, "Prometheus never scraped the endpoint"
        assert float(result[0]["value"][1]) == 42.5
        assert result[0]["metric"]["job"] == "driftline"
    finally:
        server.shutdown()
        thread.join(timeout=5)
