"""The pure parts of the Kafka audit topic (no broker): chain partitioning against the Java
client's murmur2 vectors, per-chain verification of records (cross-checked with the file
verifier), topic-config and ACL errors, the append paths, the CLI's source resolution and
the ``[audit]`` config keys. The broker-backed behaviour is in
tests/integration/test_audit_topic.py."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import kafka.errors as kerrors
import pytest

from monitor.audit import (
    GENESIS_HASH,
    _log_source,
    _TopicSource,
    canonical,
    entry_hash,
    make_entry,
    verify,
)
from monitor.audit_topic import (
    TOPIC_CONFIGS,
    TopicAuditLog,
    _ensure,
    _Scan,
    chain_partition,
    export_order,
    instance_chain,
    model_chain,
    parse_expect_heads,
)
from monitor.config import load_config_text
from monitor.errors import AuditTopicError, ConfigError

# --------------------------------------------------------------------------- partitioning

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's own vectors (signed).
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 50])
def test_chain_partition_is_the_java_default_partitioner(partitions):
    for key, signed in JAVA_MURMUR2.items():
        # Utils.toPositive(murmur2(key)) % numPartitions, in Java's terms.
        assert chain_partition(key, partitions) == (signed & 0x7FFFFFFF) % partitions


def test_chain_names_and_bad_partition_count():
    assert model_chain("credit-risk") == "model/credit-risk"
    assert instance_chain("pod-7") == "instance/pod-7"
    with pytest.raises(ValueError, match="at least 1"):
        chain_partition("model/m", 0)


# --------------------------------------------------------------------------- verification


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    offset: int


def chain_entries(chain: str, n: int, t0: float = 1_700_000_000.0, model: str | None = "m") -> list[dict]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        e = make_entry(i, prev, "alert.transition", {"i": i, "v": 0.25 * i}, model, None, None, t0 + i, chain=chain)
        out.append(e)
        prev = e["hash"]
    return out


def feed(scan: _Scan, partition: int, entries: list, first_offset: int = 0, key: str | None = None) -> None:
    for i, e in enumerate(entries):
        value = e if isinstance(e, bytes | None) else canonical(e)
        k = (key if key is not None else (e["chain"] if isinstance(e, dict) else "model/m")).encode()
        scan.visit(partition, Rec(k, value, first_offset + i))


def test_good_chains_verify_and_agree_with_the_file_verifier(tmp_path):
    a, b = chain_entries("model/a", 5), chain_entries("instance/p", 3, model=None)
    scan = _Scan("audit")
    # Interleaved across two partitions, as a consumer returns them.
    for i in range(5):
        feed(scan, 0, [a[i]], first_offset=i)
        if i < 3:
            feed(scan, 1, [b[i]], first_offset=10 + i)
    res = scan.results()
    assert set(res) == {"model/a", "instance/p"}
    assert res["model/a"].ok and res["model/a"].entries == 5 and res["model/a"].head_seq == 4
    assert res["model/a"].head_hash == a[-1]["hash"] and res["instance/p"].partition == 1
    # Independent check: each chain's record values, as lines, are a valid file log.
    for name, entries in (("a", a), ("p", b)):
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
        assert verify(path).ok


def bad_result(mutate, n: int = 4, at: int = 2):
    """Feed a 4-entry chain whose ``at``-th record is ``mutate``d; return its result."""
    entries = chain_entries("model/m", n)
    values: list = [canonical(e) for e in entries]
    values[at] = mutate(entries[at], values[at], entries)
    scan = _Scan("audit")
    for i, v in enumerate(values):
        scan.visit(3, Rec(b"model/m", v, 100 + i))
    return scan.results()["model/m"]


def _edited(e, v, es):
    return v.replace(b'"i":2', b'"i":9')


def _rehashed_duplicate(e, v, es):
    forged = dict(es[1], data={"i": 99})  # a second seq 1 with a valid hash of its own
    forged["hash"] = entry_hash(forged)
    return canonical(forged)


def _noncanonical(e, v, es):
    return json.dumps(e, sort_keys=True).encode()  # spaces after separators


def _unknown_kind(e, v, es):
    forged = dict(e, kind="alert.invented")
    forged["hash"] = entry_hash(forged)
    return canonical(forged)


def _other_chain(e, v, es):
    forged = dict(e, chain="model/other")
    forged["hash"] = entry_hash(forged)
    return canonical(forged)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_edited, "hash does not match"),
        (_rehashed_duplicate, "seq is 1, expected 2"),
        (_noncanonical, "not in canonical form"),
        (_unknown_kind, "unknown kind 'alert.invented'"),
        (_other_chain, "differs from the record key"),
        (lambda e, v, es: None, "tombstone"),
        (lambda e, v, es: b"{not json", "not valid JSON"),
    ],
)
def test_a_bad_record_is_named_by_partition_offset_and_chain(mutate, reason):
    res = bad_result(mutate)
    assert not res.ok and reason in res.reason
    assert (res.chain, res.partition, res.first_bad_offset, res.entries) == ("model/m", 3, 102, 2)
    assert res.head_seq == 1
    assert res.where() == "topic 'audit' partition 3 offset 102"


@pytest.mark.parametrize("seq", [True, 1.0])
def test_a_seq_equal_but_not_an_integer_is_bad(seq):
    def forge(e, v, es):
        forged = dict(e, seq=seq)  # JSON true and 1.0 compare equal to 1 in Python
        forged["hash"] = entry_hash(forged)
        return canonical(forged)

    res = bad_result(forge, at=1)
    assert not res.ok and res.first_bad_offset == 101 and f"seq is {seq!r}, expected 1" in res.reason


def test_deleted_record_and_missing_start_are_seq_gaps():
    entries = chain_entries("model/m", 4)
    scan = _Scan("t")
    feed(scan, 0, [entries[0], entries[1], entries[3]])
    res = scan.results()["model/m"]
    assert not res.ok and res.first_bad_offset == 2 and "seq is 3, expected 2" in res.reason
    # Retention or DeleteRecords removed the beginning: the chain no longer starts at 0.
    scan = _Scan("t")
    feed(scan, 0, entries[2:], first_offset=2)
    res = scan.results()["model/m"]
    assert not res.ok and res.first_bad_offset == 2 and "expected 0" in res.reason


def test_a_chain_in_two_partitions_is_reported():
    entries = chain_entries("model/m", 3)
    scan = _Scan("t")
    feed(scan, 0, entries[:2])
    feed(scan, 1, entries[2:], first_offset=0)
    res = scan.results()["model/m"]
    assert not res.ok and res.partition == 1 and "also has records in partition 0" in res.reason


def test_only_the_broken_chain_fails():
    scan = _Scan("t")
    a, b = chain_entries("model/a", 3), chain_entries("model/b", 3)
    feed(scan, 0, a)
    feed(scan, 0, [b[0], canonical(b[1]).replace(b'"i":1', b'"i":5'), b[2]], first_offset=3, key="model/b")
    res = scan.results()
    assert res["model/a"].ok and not res["model/b"].ok and res["model/b"].first_bad_offset == 4


def test_expected_heads_detect_truncation_and_absent_chains():
    entries = chain_entries("model/m", 4)
    heads = {"model/m": (3, entries[3]["hash"]), "model/gone": (0, "ab" * 32)}
    scan = _Scan("t", expect_heads=heads)
    feed(scan, 0, entries[:3])  # the newest entry was dropped
    res = scan.results()
    assert not res["model/m"].ok and "seq=3 not found" in res["model/m"].reason
    assert res["model/m"].first_bad_offset is None and res["model/m"].entries == 3
    assert not res["model/gone"].ok and "no entry of this chain" in res["model/gone"].reason
    scan = _Scan("t", expect_heads={"model/m": (3, entries[3]["hash"])})
    feed(scan, 0, entries)
    assert scan.results()["model/m"].ok


def test_export_selection_and_merge_order():
    a = chain_entries("model/m", 3, t0=100.0)
    cfg = make_entry(0, GENESIS_HASH, "config.loaded", {}, None, None, None, 101.0, chain="instance/p")
    other = chain_entries("model/x", 2, t0=100.0, model="x")
    scan = _Scan("t", select=lambda e: e.get("model") == "m" or e["kind"] == "config.loaded")
    feed(scan, 0, a)
    feed(scan, 1, [cfg], key="instance/p")
    feed(scan, 2, other)
    merged = sorted(scan.selected, key=export_order)
    assert [(e["chain"], e["seq"]) for e in merged] == [
        ("model/m", 0), ("instance/p", 0), ("model/m", 1), ("model/m", 2)
    ]  # fmt: skip
    # Same time: chain, then seq decide.
    same = [dict(a[1], chain="model/z"), dict(a[1], chain="model/b", seq=5), dict(a[1], chain="model/b", seq=4)]
    assert [(e["chain"], e["seq"]) for e in sorted(same, key=export_order)] == [
        ("model/b", 4), ("model/b", 5), ("model/z", 1)
    ]  # fmt: skip


# --------------------------------------------------------------------------- the topic


class FakeAdmin:
    """KafkaAdminClient's answers as kafka-python 3.0 shapes them."""

    def __init__(self, exists=True, partitions=1, configs=None, create_error=None, describe_error=0):
        self.exists, self.partitions = exists, partitions
        self.configs = dict(TOPIC_CONFIGS) if configs is None else configs
        self.create_error, self.describe_error = create_error, describe_error
        self.created: dict | None = None

    def describe_topics(self, topics):
        (name,) = topics
        if self.describe_error:
            return [{"name": name, "error_code": self.describe_error, "partitions": []}]
        if not self.exists:
            return [{"name": name, "error_code": 3, "partitions": []}]
        return [{"name": name, "error_code": 0, "partitions": [{"partition_index": i} for i in range(self.partitions)]}]

    def create_topics(self, spec, wait_for_metadata=False):
        if self.create_error is not None:
            raise self.create_error("refused")
        self.created = spec
        ((_, s),) = spec.items()
        self.exists, self.partitions, self.configs = True, s["num_partitions"], dict(s["configs"])

    def describe_configs(self, resources, config_filter="all"):
        (r,) = resources
        return {"topic": {r.name: {k: {"value": v} for k, v in self.configs.items() if k in r.configs}}}


def test_missing_topic_is_created_with_infinite_retention():
    admin = FakeAdmin(exists=False)
    assert _ensure(admin, "audit", 3, -1) is True
    assert admin.created == {
        "audit": {"num_partitions": 3, "replication_factor": -1,
                  "configs": {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}}
    }  # fmt: skip
    assert _ensure(admin, "audit", 3, -1) is False


@pytest.mark.parametrize(
    ("configs", "fragments"),
    [
        ({"retention.ms": "604800000"}, ["retention.ms=604800000", "set retention.ms=-1"]),
        ({"retention.bytes": "1073741824"}, ["retention.bytes=1073741824"]),
        ({"cleanup.policy": "compact"}, ["cleanup.policy=compact", "set cleanup.policy=delete"]),
        ({"cleanup.policy": "compact,delete", "retention.ms": "1000"},
         ["cleanup.policy=compact,delete", "retention.ms=1000"]),
    ],
)
def test_existing_topic_with_finite_retention_or_compaction_is_refused(configs, fragments):
    admin = FakeAdmin(configs={**TOPIC_CONFIGS, **configs})
    with pytest.raises(AuditTopicError) as err:
        _ensure(admin, "driftline-audit", 1, 3)
    assert "'driftline-audit'" in str(err.value)
    for f in fragments:
        assert f in str(err.value)


def test_partition_count_must_match():
    with pytest.raises(AuditTopicError, match=r"has 4 partition\(s\) but audit.partitions = 1"):
        _ensure(FakeAdmin(partitions=4), "audit", 1, -1)


@pytest.mark.parametrize("error", [kerrors.TopicAuthorizationFailedError, kerrors.ClusterAuthorizationFailedError])
def test_refused_creation_names_the_create_acl(error):
    with pytest.raises(AuditTopicError) as err:
        _ensure(FakeAdmin(exists=False, create_error=error), "audit", 1, -1)
    msg = str(err.value)
    assert error.__name__ in msg and "Create on topic 'audit'" in msg and "retention.ms=-1" in msg


def test_refused_describe_and_describe_configs_name_their_acl():
    with pytest.raises(AuditTopicError, match="Describe on topic 'audit'"):
        _ensure(FakeAdmin(describe_error=29), "audit", 1, -1)
    with pytest.raises(AuditTopicError, match="DescribeConfigs on topic 'audit'"):
        _ensure(FakeAdmin(configs={}), "audit", 1, -1)


# --------------------------------------------------------------------------- appending


class FakeFuture:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error
        return SimpleNamespace(offset=0)


class FakeProducer:
    def __init__(self, **config):
        self.config = {"acks": -1, "transactional_id": None, "key_serializer": None,
                       "value_serializer": None, **config}  # fmt: skip
        self.sent: list[tuple] = []
        self.flushes = 0
        self.error = None

    def send(self, topic, key=None, value=None, partition=None):
        self.sent.append((topic, key, value, partition))
        return FakeFuture(self.error)

    def flush(self, timeout=None):
        self.flushes += 1


@pytest.fixture
def empty_topic(monkeypatch):
    """The topic read as holding nothing of the chain, in partition 2."""
    reads = []

    def read_head(self):
        reads.append(self.chain)
        return 2, None

    monkeypatch.setattr(TopicAuditLog, "_read_head", read_head)
    return reads


def test_plain_producer_append_is_flushed_and_acknowledged(empty_topic):
    producer = FakeProducer()
    log = TopicAuditLog(producer, "audit", "model/m", {"bootstrap_servers": ["x:1"]})
    e0, e1 = log.append_many([{"kind": "alert.transition", "data": {"v": float("inf")}, "model": "m"},
                              {"kind": "retrain.created", "model": "m", "time": 5.0}])  # fmt: skip
    assert producer.flushes == 1 and [s[3] for s in producer.sent] == [2, 2]
    assert [s[1] for s in producer.sent] == [b"model/m", b"model/m"]
    assert producer.sent[0][2] == canonical(e0) and json.loads(producer.sent[1][2]) == e1
    assert e0["data"] == {"v": "Infinity"} and e1["prev_hash"] == e0["hash"] and e1["chain"] == "model/m"
    assert log.head() == (1, e1["hash"]) and log.last_entry == e1


def test_failed_plain_append_rereads_the_head_and_names_the_partition(empty_topic):
    producer = FakeProducer()
    log = TopicAuditLog(producer, "audit", "model/m", {})
    log.append("alert.transition", {})
    producer.error = kerrors.NotEnoughReplicasError("isr")
    with pytest.raises(AuditTopicError, match="partition 2 .chain 'model/m'.: append not acknowledged"):
        log.append("alert.transition", {})
    assert empty_topic == ["model/m", "model/m"]  # restored on open, re-read after the failure
    assert log.head() == (-1, GENESIS_HASH)  # what the (fake) topic holds


def test_transactional_append_only_sends_and_unknown_kinds_send_nothing(empty_topic):
    producer = FakeProducer(transactional_id="tx")
    log = TopicAuditLog(producer, "audit", "instance/p", {})
    log.append("config.loaded", {"models": ["m"]})
    assert producer.flushes == 0 and len(producer.sent) == 1 and log.head()[0] == 0
    with pytest.raises(ValueError, match="unknown audit kind 'alert.typo'"):
        log.append_many([{"kind": "config.loaded"}, {"kind": "alert.typo"}])
    assert len(producer.sent) == 1 and log.head()[0] == 0


def test_producer_settings_that_would_lose_or_mangle_entries_are_refused(empty_topic):
    with pytest.raises(AuditTopicError, match="needs acks='all'"):
        TopicAuditLog(FakeProducer(acks=1), "audit", "model/m", {})
    with pytest.raises(AuditTopicError, match="value_serializer"):
        TopicAuditLog(FakeProducer(value_serializer=json.dumps), "audit", "model/m", {})
    with pytest.raises(ValueError, match="chain must not be empty"):
        TopicAuditLog(FakeProducer(), "audit", "", {})


# --------------------------------------------------------------------------- CLI and config


def test_expect_heads_parsing():
    h = "ab" * 32
    assert parse_expect_heads([f"model/a=b=3:{h}", f"instance/p=0:{h}"]) == {
        "model/a=b": (3, h), "instance/p": (0, h)
    }  # fmt: skip
    for bad in ("3:abc", "model/a=x:abc", "model/a=3"):
        with pytest.raises(SystemExit, match="CHAIN=SEQ:HASH"):
            parse_expect_heads([bad])


def ns(**kw):
    base = {"path": None, "config": None, "topic": None, "bootstrap_servers": None}
    return argparse.Namespace(**{**base, **kw})


MODEL = '[[models]]\nname = "m"\ntask = "binary"\n'


def test_cli_source_resolution(tmp_path):
    assert _log_source(ns(path="a.jsonl")) == Path("a.jsonl")
    src = _log_source(ns(topic="audit", bootstrap_servers="h1:9092, h2:9092"))
    assert src == _TopicSource("audit", {"bootstrap_servers": ["h1:9092", "h2:9092"]}, 30.0)
    with pytest.raises(SystemExit, match="give one"):
        _log_source(ns(path="a.jsonl", topic="audit"))
    with pytest.raises(SystemExit, match="--bootstrap-servers needs --topic"):
        _log_source(ns(bootstrap_servers="h:1"))
    with pytest.raises(SystemExit, match="needs --bootstrap-servers"):
        _log_source(ns(topic="audit"))
    # A config with [audit] topic set reads the topic with the config's Kafka and TLS settings.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        MODEL + '[kafka]\nbootstrap_servers = ["k:9093"]\nsecurity_protocol = "SSL"\n'
        'ssl_cafile = "/ca.pem"\n[audit]\ntopic = "driftline-audit"\nread_timeout_seconds = 5.0\n'
    )
    src = _log_source(ns(config=str(cfg)))
    assert isinstance(src, _TopicSource) and src.topic == "driftline-audit" and src.read_timeout_seconds == 5.0
    assert src.settings["bootstrap_servers"] == ["k:9093"] and src.settings["security_protocol"] == "SSL"
    assert src.settings["ssl_cafile"] == "/ca.pem"
    # Without [audit] topic the config means the file, as before.
    cfg.write_text(MODEL + '[audit]\npath = "x/audit.jsonl"\n')
    assert str(_log_source(ns(config=str(cfg)))) == "x/audit.jsonl"


@pytest.mark.parametrize(
    ("line", "key", "fragment"),
    [
        ('topic = "audit log"', "audit.topic", "is not a Kafka topic name"),
        ('topic = ".."', "audit.topic", "is not a Kafka topic name"),
        ("partitions = 0", "audit.partitions", "must be greater than 0"),
        ("replication_factor = 0", "audit.replication_factor", "must be -1"),
        ("read_timeout_seconds = 0.0", "audit.read_timeout_seconds", "must be greater than 0"),
    ],
)
def test_audit_config_errors_name_key_and_line(line, key, fragment):
    with pytest.raises(ConfigError) as err:
        load_config_text(MODEL + "[audit]\n" + line + "\n", path="c.toml", env={})
    assert str(err.value).startswith(f"c.toml:5: {key}: ") and fragment in str(err.value)


def test_audit_config_defaults_are_file_mode():
    audit = load_config_text(MODEL, env={}).audit
    assert (audit.topic, audit.partitions, audit.replication_factor, audit.read_timeout_seconds) == ("", 1, -1, 30.0)
    cfg = load_config_text(MODEL + '[audit]\ntopic = "driftline-audit"\nreplication_factor = 3\n', env={})
    assert cfg.audit.topic == "driftline-audit" and cfg.audit.replication_factor == 3


# --------------------------------------------------------------------------- reading


class FakeConsumer:
    """A partition log where some offsets are transaction markers (never returned)."""

    def __init__(self, logs: dict[int, dict[int, Rec | None]], stuck: bool = False):
        self.logs, self.stuck = logs, stuck
        self.pos: dict = {}
        self.paused: set = set()

    def assign(self, tps):
        self.pos = {tp: 0 for tp in tps}

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    def position(self, tp):
        return self.pos[tp]

    def poll(self, timeout_ms=0):
        out = {}
        for tp in self.pos:
            if tp in self.paused or self.stuck:
                continue
            offsets = sorted(o for o in self.logs[tp.partition] if o >= self.pos[tp])[:2]
            if offsets:
                recs = [self.logs[tp.partition][o] for o in offsets]
                self.pos[tp] = offsets[-1] + 1  # a marker-only fetch still moves the position
                if any(recs):
                    out[tp] = [r for r in recs if r is not None]
        return out


def test_read_ends_at_positions_across_markers_and_stops_at_the_end_offsets():
    from kafka.structs import TopicPartition

    from monitor.audit_topic import _read

    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    # p0: records at 0-2, a commit marker at 3 (the end), a later record at 4 beyond the end.
    logs = {0: {0: Rec(b"k", b"a", 0), 1: Rec(b"k", b"b", 1), 2: Rec(b"k", b"c", 2), 3: None,
                4: Rec(b"k", b"late", 4)},
            1: {0: None, 1: None}}  # only an aborted transaction's markers  # fmt: skip
    seen = []
    consumer = FakeConsumer(logs)
    _read(consumer, {t0: 0, t1: 0}, {t0: 4, t1: 2}, lambda p, r: seen.append((p, r.value)), 5.0)
    assert seen == [(0, b"a"), (0, b"b"), (0, b"c")]
    # A second read with the same consumer resumes the partitions the first one paused.
    seen.clear()
    _read(consumer, {t0: 1}, {t0: 3}, lambda p, r: seen.append((p, r.value)), 5.0)
    assert seen == [(0, b"b"), (0, b"c")]
    with pytest.raises(AuditTopicError, match=r"stalled for 0.2 s \(partition 0 at offset 0 of 4\)"):
        _read(FakeConsumer(logs, stuck=True), {t0: 0}, {t0: 4}, lambda p, r: None, 0.2)


class FakeTopicConsumer(FakeConsumer):
    """One partition holding ``records`` from offset ``first`` (what restore reads)."""

    def __init__(self, records: list[Rec], first: int = 0):
        super().__init__({0: {first + i: r for i, r in enumerate(records)}})
        self.first, self.end = first, first + len(records)

    def partitions_for_topic(self, topic):
        return {0}

    def beginning_offsets(self, tps):
        return dict.fromkeys(tps, self.first)

    def end_offsets(self, tps):
        return dict.fromkeys(tps, self.end)

    def close(self):
        pass


def restore_from(monkeypatch, records: list[Rec], first: int = 0) -> TopicAuditLog:
    import monitor.audit_topic as at

    monkeypatch.setattr(at, "_consumer", lambda settings, topic: FakeTopicConsumer(records, first))
    return TopicAuditLog(FakeProducer(), "audit", "model/m", {})


def recs(entries: list, start: int = 0) -> list[Rec]:
    return [Rec(e["chain"].encode(), canonical(e), start + i) for i, e in enumerate(entries)]


def test_restore_finds_a_head_buried_under_other_chains(monkeypatch):
    mine, other = chain_entries("model/m", 3), chain_entries("model/busy", 2000)
    log = restore_from(monkeypatch, recs(mine) + recs(other, start=3))
    assert log.head() == (2, mine[2]["hash"]) and log.partition == 0
    assert restore_from(monkeypatch, recs(other)).head() == (-1, GENESIS_HASH)
    only_first = restore_from(monkeypatch, recs(mine[:1]) + recs(other, start=1))
    assert only_first.head() == (0, mine[0]["hash"])


def test_restore_refuses_to_continue_a_forged_or_cut_chain(monkeypatch):
    mine = chain_entries("model/m", 4)
    forged = dict(mine[1], data={"i": 42})
    forged["hash"] = entry_hash(forged)
    with pytest.raises(AuditTopicError, match="offset 4 .chain 'model/m'.: the chain's last entry .seq 1. does not follow"):
        restore_from(monkeypatch, recs([*mine, forged]))
    # The start of the partition was deleted: seq 3 alone, with no entry before it.
    with pytest.raises(AuditTopicError, match="offset 3 .*seq 3. does not follow"):
        restore_from(monkeypatch, recs(mine[3:], start=3), first=3)
    edited = Rec(b"model/m", canonical(mine[3]).replace(b'"i":3', b'"i":4'), 3)
    with pytest.raises(AuditTopicError, match="last entry does not match its hash"):
        restore_from(monkeypatch, [*recs(mine[:3]), edited])
