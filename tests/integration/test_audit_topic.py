"""The audit trail on a real Apache Kafka topic: creation with infinite retention, chains
appended inside transactions (committed, aborted, fenced), a new pod continuing a chain, a
forged record found by partition/offset, and `driftline audit verify|export --topic`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kafka.errors as kerrors
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.structs import TopicPartition

from monitor.audit import canonical, entry_hash, verify
from monitor.audit_topic import (
    TopicAuditLog,
    chain_partition,
    ensure_audit_topic,
    export_topic,
    instance_chain,
    model_chain,
    verify_topic,
)
from monitor.errors import AuditTopicError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def settings(kafka) -> dict:
    return {"bootstrap_servers": kafka.bootstrap}


def new_topic(kafka, partitions: int = 3) -> str:
    topic = f"driftline-audit-{time.time_ns()}"
    assert ensure_audit_topic(settings(kafka), topic, partitions, 1) is True
    return topic


def tx_producer(kafka, tid: str) -> KafkaProducer:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id=tid)
    producer.init_transactions()
    return producer


def read_all(kafka, topic: str, isolation: str) -> list:
    """Every record of the topic with the given isolation (an independent reader)."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, isolation_level=isolation,
                             enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out, deadline = [], time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_topic_is_created_with_infinite_retention_and_checked_when_it_exists(kafka):
    topic = new_topic(kafka, partitions=2)
    assert ensure_audit_topic(settings(kafka), topic, 2, 1) is False  # exists and fits
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, ["retention.ms", "retention.bytes", "cleanup.policy"])],
            config_filter="all",
        )["topic"][topic]
        assert {k: v["value"] for k, v in found.items()} == {
            "retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"
        }  # fmt: skip
        (meta,) = admin.describe_topics([topic])
        assert len(meta["partitions"]) == 2
        # Topics someone else made with a finite retention or compaction are refused by name.
        weekly, compacted = f"{topic}-weekly", f"{topic}-compacted"
        admin.create_topics({
            weekly: {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "604800000"}},
            compacted: {"num_partitions": 2, "replication_factor": 1, "configs": {"cleanup.policy": "compact"}},
        }, wait_for_metadata=True)  # fmt: skip
    finally:
        admin.close()
    with pytest.raises(AuditTopicError) as err:
        ensure_audit_topic(settings(kafka), weekly, 2, 1)
    assert f"audit topic {weekly!r}" in str(err.value) and "retention.ms=604800000" in str(err.value)
    with pytest.raises(AuditTopicError) as err:
        ensure_audit_topic(settings(kafka), compacted, 2, 1)
    assert f"audit topic {compacted!r}" in str(err.value) and "cleanup.policy=compact" in str(err.value)
    with pytest.raises(AuditTopicError, match=r"has 2 partition\(s\) but audit.partitions = 3"):
        ensure_audit_topic(settings(kafka), topic, 3, 1)


def test_two_chains_in_one_transaction_commit_and_verify(kafka, tmp_path):
    topic = new_topic(kafka)
    producer = tx_producer(kafka, f"{topic}-owner")
    model = TopicAuditLog(producer, topic, model_chain("credit-risk"), settings(kafka))
    inst = TopicAuditLog(producer, topic, instance_chain("pod-a"), settings(kafka))
    assert model.head()[0] == inst.head()[0] == -1
    producer.begin_transaction()
    cfg = inst.append("config.loaded", {"config_hash": "c0", "models": ["credit-risk"]})
    first = model.append_many([
        {"kind": "reference.version", "data": {"version": "v1"}, "model": "credit-risk"},
        {"kind": "alert.transition", "data": {"state": "firing", "value": 0.71}, "model": "credit-risk"},
    ])  # fmt: skip
    producer.commit_transaction()
    producer.begin_transaction()
    last = model.append("alert.acknowledged", {"reason": "looking"}, model="credit-risk", actor="alice")
    producer.commit_transaction()
    producer.close()

    results = verify_topic(settings(kafka), topic)
    assert {c: (r.ok, r.entries, r.head_seq) for c, r in results.items()} == {
        "model/credit-risk": (True, 3, 2), "instance/pod-a": (True, 1, 0)
    }  # fmt: skip
    assert results["model/credit-risk"].head_hash == last["hash"]
    # What an independent read_committed reader sees: exactly the entries returned, each
    # in the partition that kafka-python's default partitioner gives its key.
    records = read_all(kafka, topic, "read_committed")
    assert sorted(r.value for r in records) == sorted(canonical(e) for e in [cfg, *first, last])
    # Oracle of the partition: the same key sent without a partition to a probe topic of
    # the same size, where the client's default partitioner places it.
    probe = new_topic(kafka, partitions=3) + "-probe"
    assert ensure_audit_topic(settings(kafka), probe, 3, 1)
    plain = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for r in records:
        assert r.partition == chain_partition(r.key.decode(), 3)
        assert r.partition == plain.send(probe, key=r.key, value=b"probe").get(timeout=30).partition
    plain.close()
    # Each chain's record values, as lines, are a valid file log for the file verifier.
    for chain in ("model/credit-risk", "instance/pod-a"):
        path = tmp_path / f"{chain.replace('/', '_')}.jsonl"
        path.write_bytes(b"".join(r.value + b"\n" for r in records if r.key == chain.encode()))
        assert verify(path).ok


def test_aborted_transaction_is_invisible_and_the_head_rolls_back(kafka):
    topic = new_topic(kafka)
    producer = tx_producer(kafka, f"{topic}-owner")
    log = TopicAuditLog(producer, topic, model_chain("churn"), settings(kafka))
    producer.begin_transaction()
    kept = log.append("alert.transition", {"state": "firing"}, model="churn")
    producer.commit_transaction()
    producer.begin_transaction()
    log.append_many([{"kind": "retrain.created", "data": {"n": i}, "model": "churn"} for i in range(3)])
    assert log.head()[0] == 3
    producer.flush()  # the aborted entries really reach the log before the abort
    producer.abort_transaction()
    assert log.rollback() == (0, kept["hash"]) and log.last_entry == kept
    producer.begin_transaction()
    after = log.append("alert.transition", {"state": "resolved"}, model="churn")
    producer.commit_transaction()
    producer.close()
    assert (after["seq"], after["prev_hash"]) == (1, kept["hash"])
    # The aborted records are in the partition (read_uncommitted sees them) but not committed.
    assert len(read_all(kafka, topic, "read_uncommitted")) == 5
    res = verify_topic(settings(kafka), topic)["model/churn"]
    assert (res.ok, res.entries, res.head_hash) == (True, 2, after["hash"])


def test_a_new_pod_restores_the_head_and_continues_the_chain(kafka):
    topic = new_topic(kafka, partitions=1)  # one partition: other chains bury the head
    first_pod = tx_producer(kafka, f"{topic}-pod-1")
    log = TopicAuditLog(first_pod, topic, model_chain("m"), settings(kafka))
    first_pod.begin_transaction()
    log.append_many([{"kind": "alert.transition", "data": {"i": i}, "model": "m"} for i in range(5)])
    first_pod.commit_transaction()
    head = log.head()
    first_pod.close()
    # 1,500 entries of another chain after m's last one: restore must look past them.
    with TopicAuditLog.standalone(settings(kafka), topic, model_chain("busy")) as busy:
        busy.append_many([{"kind": "notification.delivered", "data": {"i": i}, "model": "busy"}
                          for i in range(1500)])  # fmt: skip
        assert busy.head()[0] == 1499

    second_pod = tx_producer(kafka, f"{topic}-pod-2")
    restored = TopicAuditLog(second_pod, topic, model_chain("m"), settings(kafka))
    assert restored.head() == head and restored.last_entry["data"] == {"i": 4}
    second_pod.begin_transaction()
    nxt = restored.append("alert.acknowledged", {}, model="m", actor="bob")
    second_pod.commit_transaction()
    second_pod.close()
    assert (nxt["seq"], nxt["prev_hash"]) == (5, head[1])
    results = verify_topic(settings(kafka), topic, expect_heads={"model/m": (5, nxt["hash"])})
    assert {c: (r.ok, r.entries) for c, r in results.items()} == {"model/m": (True, 6), "model/busy": (True, 1500)}
    doc = export_topic(settings(kafka), topic, "m")
    assert doc["verification"]["ok"] and [e["seq"] for e in doc["entries"]] == list(range(6))


def test_a_forged_record_fails_verify_at_its_partition_and_offset(kafka):
    topic = new_topic(kafka)
    chain = model_chain("credit-risk")
    with TopicAuditLog.standalone(settings(kafka), topic, chain) as log:
        entries = log.append_many([{"kind": "alert.transition", "data": {"v": i}, "model": "credit-risk"}
                                   for i in range(4)])  # fmt: skip
        partition = log.partition
    with TopicAuditLog.standalone(settings(kafka), topic, instance_chain("pod-a")) as other:
        other.append("config.loaded", {"models": ["credit-risk"]})
    good = cli("audit", "verify", "--topic", topic, "--bootstrap-servers", kafka.bootstrap)
    assert good.returncode == 0, good.stderr
    assert "OK model/credit-risk: 4 entries" in good.stdout and "2 chain(s)" in good.stdout

    # A forger with Write on the topic appends a "correction" of seq 1 with a valid hash.
    forged = dict(entries[1], data={"v": 0.0})
    forged["hash"] = entry_hash(forged)
    plain = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    meta = plain.send(topic, key=chain.encode(), value=canonical(forged), partition=partition).get(timeout=30)
    plain.close()

    results = verify_topic(settings(kafka), topic)
    bad = results[chain]
    assert not bad.ok and bad.entries == 4 and "seq is 1, expected 4" in bad.reason
    assert (bad.partition, bad.first_bad_offset) == (meta.partition, meta.offset)
    assert results[instance_chain("pod-a")].ok
    res = cli("audit", "verify", "--topic", topic, "--bootstrap-servers", kafka.bootstrap)
    assert res.returncode == 1
    assert f"FAILED {chain} at topic {topic!r} partition {meta.partition} offset {meta.offset}" in res.stderr
    as_json = cli("audit", "verify", "--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["chains"][chain]["first_bad_offset"] == meta.offset
    # A writer taking over the chain refuses to continue after the forged record.
    with pytest.raises(AuditTopicError) as err:
        TopicAuditLog.standalone(settings(kafka), topic, chain)
    assert f"partition {meta.partition} offset {meta.offset}" in str(err.value)
    assert "does not follow the entry before it" in str(err.value)


def test_a_fenced_zombie_cannot_append(kafka):
    topic = new_topic(kafka)
    tid = f"{topic}-owner-of-m"  # one transactional id per owned model, as EOS fences
    zombie = tx_producer(kafka, tid)
    z_log = TopicAuditLog(zombie, topic, model_chain("m"), settings(kafka))
    zombie.begin_transaction()
    z_log.append("alert.transition", {"by": "zombie", "n": 0}, model="m")
    zombie.commit_transaction()
    # The zombie is paused mid-transaction with a late entry already on the broker...
    zombie.begin_transaction()
    z_log.append("alert.transition", {"by": "zombie", "n": 1}, model="m")
    zombie.flush()
    # ...while its model moves to a successor with the same transactional id: fenced.
    successor = tx_producer(kafka, tid)
    s_log = TopicAuditLog(successor, topic, model_chain("m"), settings(kafka))
    assert s_log.head()[0] == 0  # the zombie's open transaction is not a head
    successor.begin_transaction()
    s_entry = s_log.append("alert.transition", {"by": "successor"}, model="m")
    successor.commit_transaction()
    # The zombie wakes up: its commit is refused, and so is any later transaction.
    with pytest.raises(kerrors.KafkaError) as fenced:
        zombie.commit_transaction()
    assert isinstance(fenced.value, kerrors.ProducerFencedError | kerrors.InvalidProducerEpochError), fenced.value
    with pytest.raises(kerrors.KafkaError):
        zombie.begin_transaction()
        z_log.append("alert.transition", {"by": "zombie", "n": 2}, model="m")
        zombie.commit_transaction()
    zombie.close(timeout=5)
    successor.close()
    committed = [json.loads(r.value) for r in read_all(kafka, topic, "read_committed")]
    assert [(e["seq"], e["data"].get("by")) for e in committed] == [(0, "zombie"), (1, "successor")]
    assert committed[1]["hash"] == s_entry["hash"]
    assert any(b'"n":1' in r.value for r in read_all(kafka, topic, "read_uncommitted"))
    res = verify_topic(settings(kafka), topic)["model/m"]
    assert (res.ok, res.entries, res.head_hash) == (True, 2, s_entry["hash"])


def test_cli_reads_the_topic_from_the_config_and_exports_evidence(kafka, tmp_path):
    topic = new_topic(kafka, partitions=1)
    with TopicAuditLog.standalone(settings(kafka), topic, instance_chain("pod-a")) as inst:
        inst.append("config.loaded", {"models": ["m", "x"]}, time=1_790_000_100.0)
    with TopicAuditLog.standalone(settings(kafka), topic, model_chain("m")) as m:
        m.append("alert.transition", {"state": "firing"}, model="m", time=1_790_000_000.0)
        m.append("alert.transition", {"state": "resolved"}, model="m", time=1_790_000_200.0)
    with TopicAuditLog.standalone(settings(kafka), topic, model_chain("x")) as x:
        x.append("alert.transition", {"state": "firing"}, model="x", time=1_790_000_050.0)
    config = tmp_path / "config.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = ["' + kafka.bootstrap + '"]\n'
        '[[models]]\nname = "m"\ntask = "binary"\n[audit]\ntopic = "' + topic + '"\n'
    )
    res = cli("audit", "verify", "--config", str(config))
    assert res.returncode == 0 and "3 chain(s), 4 good entries" in res.stdout, res.stderr
    out = tmp_path / "evidence.json"
    res = cli("audit", "export", "--config", str(config), "--model", "m", "-o", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "driftline.audit_export" and doc["model"] == "m"
    assert doc["source"] == f"kafka://{kafka.bootstrap}/{topic}" and doc["verification"]["ok"]
    # x's entry is left out; the instance's config load is context; merged by time.
    assert [(e["chain"], e["kind"]) for e in doc["entries"]] == [
        ("model/m", "alert.transition"), ("instance/pod-a", "config.loaded"), ("model/m", "alert.transition")
    ]  # fmt: skip
    res = cli("audit", "export", "--topic", topic, "--bootstrap-servers", kafka.bootstrap, "--model", "m",
              "--since", "2026-09-21T14:14:00Z")  # after the first entry (1_790_000_000 = 14:13:20)
    assert res.returncode == 0 and len(json.loads(res.stdout)["entries"]) == 2
    missing = cli("audit", "verify", "--topic", f"{topic}-absent", "--bootstrap-servers", kafka.bootstrap)
    assert missing.returncode != 0 and f"{topic}-absent" in missing.stderr
