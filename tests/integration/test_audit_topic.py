"""The audit trail on a real Apache Kafka topic: creation with infinite retention, chains
appended inside transactions (committed, aborted, fenced), a new pod continuing a chain, a
forged record found by partition/offset, `driftline audit verify|export --topic`, and the
ACL named by each refusal of a broker with an authorizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kafka.errors as kerrors
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
)
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
from monitor.broker import free_port, wait_for_kafka
from monitor.errors import AuditTopicError

from .conftest import (
    _LOG4J2,
    KAFKA_LIBS,
    START_TIMEOUT,
    _java,
    _kafka_cluster_id,
    _start,
    kafka_properties,
    unavailable,
)

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


def test_the_embedded_broker_is_refused_for_the_audit_topic(tansu):
    # Tansu answers no DescribeConfigs (and its end offsets lag batched produces): an audit
    # topic there could not be checked for retention, nor restored exactly. The demo keeps
    # the file log.
    topic = f"driftline-audit-{time.time_ns()}"
    with pytest.raises(AuditTopicError) as err:
        ensure_audit_topic({"bootstrap_servers": tansu.bootstrap}, topic, 1, 1)
    assert f"audit topic {topic!r}" in str(err.value) and "DescribeConfigs" in str(err.value)
    assert 'keep audit.topic = ""' in str(err.value)


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
    # A head recorded elsewhere that the chain no longer reaches (cut short): exit 1.
    res = cli("audit", "verify", "--config", str(config), "--expect-head", f"model/x=0:{x.head()[1]}",
              "--expect-head", f"model/m=2:{'0' * 64}")
    assert res.returncode == 1 and "FAILED model/m at end of chain" in res.stderr
    assert "expected head seq=2 not found" in res.stderr and "OK model/x: 1 entries" in res.stdout
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


# --------------------------------------------------------------------------- ACLs


@dataclass
class SecuredKafka:
    plain: str  # PLAINTEXT listener: ANONYMOUS, a super user (grants the ACLs)
    sasl: str  # SASL_PLAINTEXT listener: alice and bob, only what their ACLs allow


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """Apache Kafka with the StandardAuthorizer, deny-by-default, and SASL/PLAIN users."""
    java = _java()
    if java is None or not list(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        unavailable(f"Apache Kafka needs java and the jars in {KAFKA_LIBS} (scripts/provision.sh)")
    work = tmp_path_factory.mktemp("kafka-acl")
    data = work / "data"
    (work / "log4j2.properties").write_text(_LOG4J2)
    jvm = [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}", "-cp", str(KAFKA_LIBS / "*")]
    state: dict[str, str] = {}

    def make_cmd() -> list[str]:
        shutil.rmtree(data, ignore_errors=True)
        port, cport, sport = free_port(), free_port(), free_port()
        props = kafka_properties(port, cport, data)
        listeners = (f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport},"
                     f"SASL_PLAINTEXT://127.0.0.1:{sport}")
        props.update({
            "listeners": listeners,
            "advertised.listeners": listeners,
            "listener.security.protocol.map": props["listener.security.protocol.map"]
            + ",SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                'user_alice="alice-secret" user_bob="bob-secret";',
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",  # the broker, the controller, the test's admin
            "allow.everyone.if.no.acl.found": "false",
        })  # fmt: skip
        conf = work / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        fmt = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "--standalone", "--cluster-id",
                              _kafka_cluster_id(), "--config", str(conf)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        if fmt.returncode != 0:
            unavailable(f"kafka.tools.StorageTool format failed: {(fmt.stdout + fmt.stderr)[-2000:]}")
        state.update(plain=f"127.0.0.1:{port}", sasl=f"127.0.0.1:{sport}")
        return [*jvm, "kafka.Kafka", str(conf)]

    def ready(proc: subprocess.Popen[bytes]) -> None:
        wait_for_kafka(state["plain"], START_TIMEOUT, proc)

    server = _start("Apache Kafka with ACLs", make_cmd, ready, work / "kafka.log")
    try:
        yield SecuredKafka(state["plain"], state["sasl"])
    finally:
        server.stop()


def user(k: SecuredKafka, name: str) -> dict:
    return {"bootstrap_servers": k.sasl, "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": name, "sasl_plain_password": f"{name}-secret"}  # fmt: skip


def grant(k: SecuredKafka, name: str, topic: str, *operations: ACLOperation) -> None:
    admin = KafkaAdminClient(bootstrap_servers=k.plain)
    try:
        pattern = ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL)
        result = admin.create_acls(
            [ACL(f"User:{name}", "*", op, ACLPermissionType.ALLOW, pattern) for op in operations]
        )
        assert not result["failed"], result
    finally:
        admin.close()
    time.sleep(1.0)  # ACLs reach the broker's authorizer through the metadata log


def test_each_missing_acl_is_named(secured_kafka):
    k, topic = secured_kafka, "driftline-audit-acl"
    alice = user(k, "alice")
    with pytest.raises(AuditTopicError) as err:  # no ACL at all
        ensure_audit_topic(alice, topic, 1, 1)
    assert f"grant Driftline's principal Describe on topic {topic!r}" in str(err.value)
    grant(k, "alice", topic, ACLOperation.DESCRIBE)
    with pytest.raises(AuditTopicError) as err:
        ensure_audit_topic(alice, topic, 1, 1)
    assert "TopicAuthorizationFailedError" in str(err.value)
    assert f"grant Driftline's principal Create on topic {topic!r} (or on the cluster)" in str(err.value)
    grant(k, "alice", topic, ACLOperation.CREATE)
    with pytest.raises(AuditTopicError) as err:  # created, but its retention cannot be read
        ensure_audit_topic(alice, topic, 1, 1)
    assert f"DescribeConfigs on topic {topic!r}" in str(err.value)
    grant(k, "alice", topic, ACLOperation.DESCRIBE_CONFIGS, ACLOperation.WRITE, ACLOperation.READ)
    assert ensure_audit_topic(alice, topic, 1, 1) is False  # it exists since the last call
    with TopicAuditLog.standalone(alice, topic, model_chain("m")) as log:
        log.append("alert.transition", {"state": "firing"}, model="m")
    # bob may read (verify, export) but not write.
    bob = user(k, "bob")
    grant(k, "bob", topic, ACLOperation.DESCRIBE, ACLOperation.READ)
    assert verify_topic(bob, topic)["model/m"].ok
    with (
        pytest.raises(AuditTopicError) as err,
        TopicAuditLog.standalone(bob, topic, model_chain("m"), send_timeout_seconds=10) as log,
    ):
        log.append("alert.transition", {"state": "resolved"}, model="m")
    # Without Write on any topic the idempotent producer cannot even get its producer id.
    assert "append not acknowledged" in str(err.value) and "ClusterAuthorizationFailedError" in str(err.value)
    res = verify_topic(bob, topic)["model/m"]
    assert (res.ok, res.entries) == (True, 1)


def test_internal_state_topics_name_the_missing_acl(secured_kafka):
    """`driftline run` with state.backend = "kafka" creates its changelog topics; a principal
    without Create on them is told which ACLs it needs (monitor.changelog.ensure_topics)."""
    from monitor.changelog import InternalTopics, ensure_topics
    from monitor.errors import StateError

    k = secured_kafka
    specs = InternalTopics("acl-state").specs(2, 2)
    with pytest.raises(StateError) as err:
        ensure_topics(user(k, "bob"), specs, 1)
    msg = str(err.value)
    assert "not allowed to Create internal topics" in msg and "Authorization" in msg
    assert "Create, Describe, DescribeConfigs, Read and Write on the topics with its state.topic_prefix" in msg
    for name in specs:
        grant(k, "bob", name, ACLOperation.CREATE, ACLOperation.DESCRIBE, ACLOperation.DESCRIBE_CONFIGS)
    ensure_topics(user(k, "bob"), specs, 1)  # created and checked (compacted changelogs)
    admin = KafkaAdminClient(bootstrap_servers=k.plain)
    try:
        assert set(specs) <= set(admin.list_topics())
    finally:
        admin.close()
