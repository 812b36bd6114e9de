"""The hash-chained audit trail on a Kafka topic, so that it survives any pod: append, restore,
verify and export (the file-based log of :mod:`monitor.audit` stays for one process).

Design: one chain per writer, keyed by the chain
-------------------------------------------------
Every entry belongs to exactly one **chain**, named in its ``chain`` field:

- ``model/<name>`` for what concerns one model (alert transitions, acknowledgements,
  retrain requests, deliveries, reference versions), written by the model's owner;
- ``instance/<id>`` for a process's own entries (``config.loaded``), written by that process;
  the id is unique among running processes (a pod name), and a restarted process with the
  same id continues its chain.

The entry shape, the canonical JSON and the hash are :mod:`monitor.audit`'s, plus the
``chain`` field (covered by the hash like every other field). ``seq`` counts from 0 and
``prev_hash`` starts at 64 zeros **per chain**. A record's key is its chain (UTF-8) and its
value is the canonical JSON of the full entry (hash included), byte for byte what a line of
the file log holds without its newline.

A chain's records go to partition ``toPositive(murmur2(key)) % partitions`` (the Java client's default
partitioner, computed here and given explicitly, so any client agrees), hence one chain
lives in one partition, in offset order. The partition count of the audit topic must
therefore never change: :func:`ensure_audit_topic` refuses a topic whose count differs from
the configured one, and :func:`verify_topic` reports a chain found in two partitions.

Each chain has exactly one writer at a time: the model's owner (the daemon guarantees it
with consumer-group ownership of the model and a transactional producer whose epoch fences a
previous owner) or the process itself. A new writer calls :meth:`TopicAuditLog.restore`,
which reads the chain's partition with ``isolation_level="read_committed"`` to its last
stable offset and continues after the last committed entry of the chain. With a
transactional producer the entries are part of the caller's transaction: they become
visible exactly when it commits, vanish when it aborts (then :meth:`TopicAuditLog.rollback`
re-reads the head) and a fenced zombie's entries never become visible.

Order across chains: chains are independent, so a merged view needs a documented order.
:func:`export_topic` (and any reader merging chains) orders entries by ``time`` (UTC, the
writer's clock), then ``chain`` (string order), then ``seq``. Within a chain this is the
chain's own order whenever the writer's clock does not step back; the chain and seq remain
in every entry, so the per-chain order can always be recovered.

What a chain shows, and what it cannot: an inserted, edited, reordered, duplicated or
deleted record breaks the chain at that record; records deleted from the start of a
partition (a finite retention, ``DeleteRecords``) make the chain start at a seq other than
0. Dropping the newest entries of a chain leaves a valid shorter chain: compare against
heads recorded elsewhere (``expect_heads``). A principal allowed to write the topic can
append a well-formed extension of a chain; keep Write on the topic to Driftline's principal.

Kafka's consumer and producer settings (bootstrap servers, TLS, SASL) are passed in as
kafka-python keyword dicts; the consumers made here are always ``read_committed``, without a
group and without commits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time as _time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kafka.errors as kerrors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from monitor.audit import (
    GENESIS_HASH,
    KINDS,
    _iso,
    _Recorder,
    canonical,
    check_record,
    entry_hash,
    make_entry,
    parse_time,
    prepare_entries,
    select_for_export,
)
from monitor.errors import AuditTopicError

__all__ = [
    "TOPIC_CONFIGS",
    "TopicAuditLog",
    "TopicVerifyResult",
    "chain_partition",
    "ensure_audit_topic",
    "export_order",
    "export_topic",
    "instance_chain",
    "model_chain",
    "verify_topic",
]

log = logging.getLogger("driftline.audit_topic")

#: The audit topic's configs: nothing is ever deleted, nothing is ever compacted (a compacted
#: topic keeps only the newest record per key, that is the head of each chain).
TOPIC_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}

_ACL_HINT = (
    "Driftline's principal needs Describe, DescribeConfigs, Write and Create on the audit "
    "topic (Create may be on the cluster instead) and Read for verify/export/restore"
)


def model_chain(model: str) -> str:
    """The chain of a model's entries."""
    return f"model/{model}"


def instance_chain(instance_id: str) -> str:
    """The chain of one process's own entries (``config.loaded``)."""
    return f"instance/{instance_id}"


def chain_partition(chain: str, partitions: int) -> int:
    """The partition of ``chain``'s records: the Java client's default for the key."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return (murmur2(chain.encode("utf-8")) & 0x7FFFFFFF) % partitions


def export_order(entry: Mapping[str, Any]) -> tuple[float, str, int]:
    """The documented merge order of entries of several chains: time, chain, seq."""
    return parse_time(entry["time"]), str(entry.get("chain", "")), int(entry["seq"])


# --------------------------------------------------------------------------- the topic


def ensure_audit_topic(
    admin_settings: Mapping[str, Any], topic: str, partitions: int, replication_factor: int
) -> bool:
    """Create the audit topic if missing (:data:`TOPIC_CONFIGS`), else check the existing one.

    Returns True when this call created it. ``replication_factor = -1`` takes the broker's
    ``default.replication.factor``. Raises :class:`AuditTopicError` naming the topic and
    the offending config when an existing topic has a finite retention, compaction or
    another partition count, and naming the ACL when the broker refuses.
    """
    try:
        admin = KafkaAdminClient(**dict(admin_settings))
    except kerrors.KafkaError as exc:
        raise AuditTopicError(
            f"audit topic {topic!r}: cannot connect an admin client to "
            f"{admin_settings.get('bootstrap_servers')!r}: {exc}"
        ) from exc
    try:
        return _ensure(admin, topic, partitions, replication_factor)
    finally:
        admin.close()


def _ensure(admin: Any, topic: str, partitions: int, replication_factor: int) -> bool:
    created = False
    existing = _partition_count(admin, topic)
    if existing is None:
        spec = {"num_partitions": partitions, "replication_factor": replication_factor,
                "configs": dict(TOPIC_CONFIGS)}
        try:
            admin.create_topics({topic: spec}, wait_for_metadata=True)
            created = True
            log.info("created audit topic %s (%d partitions, %s)", topic, partitions, TOPIC_CONFIGS)
        except kerrors.TopicAlreadyExistsError:
            pass  # another replica created it meanwhile: check it like any existing topic
        except (kerrors.TopicAuthorizationFailedError, kerrors.ClusterAuthorizationFailedError) as exc:
            raise AuditTopicError(
                f"audit topic {topic!r} does not exist and creating it was refused "
                f"({type(exc).__name__}): grant Driftline's principal Create on topic "
                f"{topic!r} (or on the cluster), or create the topic beforehand with "
                f"{_configs_text(TOPIC_CONFIGS)} and {partitions} partition(s). {_ACL_HINT}"
            ) from exc
        except kerrors.KafkaError as exc:
            raise AuditTopicError(
                f"creating audit topic {topic!r} ({partitions} partition(s), replication "
                f"factor {replication_factor}) failed: {exc}"
            ) from exc
        existing = _partition_count(admin, topic)
        if existing is None:
            raise AuditTopicError(f"audit topic {topic!r} was created but is not visible in the metadata")
    problems = _config_problems(admin, topic)
    if existing != partitions:
        problems.append(
            f"it has {existing} partition(s) but audit.partitions = {partitions}: a chain's "
            "partition depends on the count, which must never change; set audit.partitions = "
            f"{existing}"
        )
    if problems:
        raise AuditTopicError(
            f"audit topic {topic!r} is not fit for an audit trail: " + "; ".join(problems)
        )
    return created


def _partition_count(admin: Any, topic: str) -> int | None:
    """The topic's partition count, or None when it does not exist."""
    try:
        (meta,) = admin.describe_topics([topic])
    except kerrors.KafkaError as exc:
        raise AuditTopicError(f"audit topic {topic!r}: cannot describe it: {exc}") from exc
    error = kerrors.for_code(meta.get("error_code", 0))
    if error is kerrors.NoError:
        return len(meta["partitions"])
    if error is kerrors.UnknownTopicOrPartitionError:
        return None
    if issubclass(error, kerrors.AuthorizationError):
        raise AuditTopicError(
            f"audit topic {topic!r}: describing it was refused ({error.__name__}): grant "
            f"Driftline's principal Describe on topic {topic!r}. {_ACL_HINT}"
        )
    raise AuditTopicError(f"audit topic {topic!r}: describing it failed: {error.__name__}")


def _config_problems(admin: Any, topic: str) -> list[str]:
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, list(TOPIC_CONFIGS))
    try:
        found = admin.describe_configs([resource], config_filter="all").get("topic", {}).get(topic, {})
    except kerrors.AuthorizationError as exc:
        found, cause = {}, type(exc).__name__
    except kerrors.KafkaError as exc:
        raise AuditTopicError(
            f"audit topic {topic!r}: cannot read its configs ({exc}), so its retention is "
            "unknown; the broker must answer DescribeConfigs (the embedded Tansu broker does "
            'not: keep audit.topic = "" there, the file log)'
        ) from exc
    else:
        cause = "no configs returned"
    missing = [k for k in TOPIC_CONFIGS if k not in found]
    if missing:
        # kafka-python drops a DescribeConfigs error code and returns nothing: the usual
        # cause is a missing ACL, and without the values the retention is unknown.
        raise AuditTopicError(
            f"audit topic {topic!r}: cannot read {', '.join(missing)} ({cause}): grant "
            f"Driftline's principal DescribeConfigs on topic {topic!r}. {_ACL_HINT}"
        )
    problems = []
    policy = str(found["cleanup.policy"]["value"])
    if "compact" in policy.split(","):
        problems.append(
            f"cleanup.policy={policy} (compaction keeps only the newest record of each key, "
            "i.e. of each chain, and deletes the rest); set cleanup.policy=delete"
        )
    for key in ("retention.ms", "retention.bytes"):
        value = str(found[key]["value"])
        if value != "-1":
            problems.append(f"{key}={value} (finite: old entries would be deleted); set {key}=-1")
    return problems


def _configs_text(configs: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in configs.items())


# --------------------------------------------------------------------------- reading


def _consumer(consumer_settings: Mapping[str, Any], topic: str) -> KafkaConsumer:
    settings = dict(consumer_settings)
    # Only committed entries count: an aborted transaction's or a fenced zombie's records
    # must never become a chain head or be verified.
    settings.update(isolation_level="read_committed", group_id=None, enable_auto_commit=False)
    try:
        return KafkaConsumer(**settings)
    except kerrors.KafkaError as exc:
        raise AuditTopicError(
            f"audit topic {topic!r}: cannot connect a consumer to "
            f"{settings.get('bootstrap_servers')!r}: {exc}"
        ) from exc


#: How long a topic may be missing from the metadata before it counts as absent: a topic
#: created a moment ago by another process may not be in every broker's cache yet.
_METADATA_GRACE_SECONDS = 5.0


def _partitions(consumer: KafkaConsumer, topic: str, timeout: float) -> list[int]:
    deadline = _time.monotonic() + min(timeout, _METADATA_GRACE_SECONDS)
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if _time.monotonic() >= deadline:
            raise AuditTopicError(
                f"audit topic {topic!r} does not exist or is not visible to this principal "
                f"(Describe and Read on topic {topic!r} are needed)"
            )
        _time.sleep(0.2)


def _read(
    consumer: KafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    visit: Callable[[int, Any], None],
    stall_seconds: float,
) -> None:
    """Call ``visit(partition, record)`` for every committed record in ``[start, end)``.

    Ends at positions, not record counts: under read_committed the commit/abort markers and
    aborted records occupy offsets that are never returned. Fails when no partition moved
    for ``stall_seconds`` (a long topic may take longer in all; a stuck read may not).
    """
    pending = {tp for tp in starts if starts[tp] < ends[tp]}
    consumer.assign(sorted(starts, key=lambda tp: tp.partition))
    for tp, start in starts.items():
        consumer.seek(tp, start)
    done = [tp for tp in starts if tp not in pending]
    if done:
        consumer.pause(*done)
    if pending:
        consumer.resume(*pending)  # paused by an earlier read with this consumer
    deadline = _time.monotonic() + stall_seconds
    while pending:
        remaining = deadline - _time.monotonic()
        if remaining <= 0:
            where = ", ".join(
                f"partition {tp.partition} at offset {consumer.position(tp)} of {ends[tp]}"
                for tp in sorted(pending, key=lambda t: t.partition)
            )
            raise AuditTopicError(
                f"audit topic {next(iter(pending)).topic!r}: reading stalled for {stall_seconds:g} s "
                f"({where}); check the broker and the Read ACL, or raise audit.read_timeout_seconds"
            )
        batch = consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000) + 1)
        for tp, records in batch.items():
            end = ends.get(tp)
            if end is None:
                continue
            for record in records:
                if record.offset < end:
                    visit(tp.partition, record)
        if batch:
            deadline = _time.monotonic() + stall_seconds
        for tp in list(pending):
            if consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
                consumer.pause(tp)
                deadline = _time.monotonic() + stall_seconds


# --------------------------------------------------------------------------- writing


class TopicAuditLog(_Recorder):
    """Appends one chain's entries to the audit topic through the caller's producer.

    The interface of :class:`monitor.audit.AuditLog` (``append``, ``append_many``,
    ``last_entry``, ``head``, ``close``, ``config_loaded``, ``reference_version``).

    - With a **transactional** producer (``transactional_id`` set) an append only sends: the
      entries belong to the caller's open transaction and become visible when the caller
      commits. The head advances at once (the next append chains on it); after an abort,
      call :meth:`rollback`. Kafka errors (fencing, no open transaction) propagate unchanged
      for the caller's transaction handling, and the head does not advance.
    - With a plain producer (``acks="all"``, no transaction) an append sends, flushes and
      waits for every acknowledgement: durable on return, as the file log is after fsync.
      A failed send re-reads the head from the topic and raises :class:`AuditTopicError`.

    The head is restored from the topic on construction (:meth:`restore`); a writer that
    gains ownership of the chain later (after a rebalance) calls :meth:`restore` again
    before appending, and only once the previous writer is fenced (for the same
    transactional id: after ``init_transactions()``). Until then a transaction the previous
    writer holds open keeps the last stable offset back, and if it could still commit, its
    entries would fork the chain (which :func:`verify_topic` reports as a seq error).
    The producer must send raw bytes (no key or value serializer).
    """

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        chain: str,
        consumer_settings: Mapping[str, Any],
        *,
        read_timeout_seconds: float = 30.0,
        send_timeout_seconds: float = 30.0,
    ) -> None:
        if not chain:
            raise ValueError("chain must not be empty (e.g. 'model/<name>' or 'instance/<id>')")
        if read_timeout_seconds <= 0 or send_timeout_seconds <= 0:
            raise ValueError(
                "read_timeout_seconds and send_timeout_seconds must be positive, got "
                f"{read_timeout_seconds} and {send_timeout_seconds}"
            )
        config = getattr(producer, "config", {})
        for key in ("key_serializer", "value_serializer"):
            if config.get(key) is not None:
                raise AuditTopicError(
                    f"audit topic {topic!r}: the producer has a {key}; the audit trail sends "
                    "canonical bytes and needs a producer without serializers"
                )
        self.transactional = config.get("transactional_id") is not None
        if not self.transactional and config.get("acks") not in (-1, "all"):
            raise AuditTopicError(
                f"audit topic {topic!r}: a non-transactional audit producer needs acks='all' "
                f"(got acks={config.get('acks')!r}), or an entry could be lost after append returned"
            )
        self.producer = producer
        self.topic = topic
        self.chain = chain
        self.consumer_settings = dict(consumer_settings)
        self.read_timeout_seconds = read_timeout_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self._key = chain.encode("utf-8")
        self._lock = threading.Lock()
        self._owns_producer = False
        self._seq = -1
        self._hash = GENESIS_HASH
        self._last: dict | None = None
        self.partition = -1
        self.restore()

    @classmethod
    def standalone(
        cls,
        client_settings: Mapping[str, Any],
        topic: str,
        chain: str,
        *,
        read_timeout_seconds: float = 30.0,
        send_timeout_seconds: float = 30.0,
    ) -> TopicAuditLog:
        """A log with its own plain idempotent ``acks="all"`` producer (closed by :meth:`close`).

        ``client_settings``: connection settings shared by producer and consumers
        (``bootstrap_servers``, ``security_protocol``, SASL/TLS keys).
        """
        producer = KafkaProducer(**dict(client_settings), acks="all", enable_idempotence=True)
        try:
            log_ = cls(producer, topic, chain, client_settings,
                       read_timeout_seconds=read_timeout_seconds,
                       send_timeout_seconds=send_timeout_seconds)
        except BaseException:
            producer.close()
            raise
        log_._owns_producer = True
        return log_

    # ------------------------------------------------------------ head

    def restore(self) -> tuple[int, str]:
        """Set the head from the last committed entry of the chain; return ``(seq, hash)``.

        Reads the chain's partition backwards in growing windows from its last stable offset,
        so a restore costs the distance to the chain's last entry, not the topic's length.
        """
        partition, last = self._read_head()
        with self._lock:
            self._set_head(partition, last)
            return self._seq, self._hash

    def _read_head(self) -> tuple[int, dict | None]:
        """The chain's partition and its last committed entry (None: the chain is empty).

        The head is checked against the entry before it (or the genesis hash for seq 0), so
        a writer never continues a chain whose tail was forged or whose start was deleted.
        """
        consumer = _consumer(self.consumer_settings, self.topic)
        try:
            parts = _partitions(consumer, self.topic, self.read_timeout_seconds)
            partition = chain_partition(self.chain, len(parts))
            tp = TopicPartition(self.topic, partition)
            first = consumer.beginning_offsets([tp])[tp]
            end = consumer.end_offsets([tp])[tp]  # read_committed: the last stable offset
            found: list[tuple[int, bytes | None]] = []
            hi, window = end, 256
            while hi > first and not self._enough(found):
                lo = max(first, hi - window)
                batch: list[tuple[int, bytes | None]] = []

                def keep(_p: int, record: Any, batch: list = batch) -> None:
                    if record.key == self._key:
                        batch.append((record.offset, record.value))

                _read(consumer, {tp: lo}, {tp: hi}, keep, self.read_timeout_seconds)
                found[:0] = batch
                hi, window = lo, window * 4
        finally:
            consumer.close()
        if not found:
            return partition, None
        last = self._check_head(partition, *found[-1])
        if len(found) >= 2:
            prev = self._check_head(partition, *found[-2], role="entry before the last")
            linked = last["seq"] == prev["seq"] + 1 and last["prev_hash"] == prev["hash"]
        else:
            linked = last["seq"] == 0 and last["prev_hash"] == GENESIS_HASH
        if not linked:
            raise AuditTopicError(
                f"audit topic {self.topic!r} partition {partition} offset {found[-1][0]} "
                f"(chain {self.chain!r}): the chain's last entry (seq {last['seq']}) does not "
                f"follow the entry before it; run `driftline audit verify --topic {self.topic}` "
                "before appending"
            )
        return partition, last

    @staticmethod
    def _enough(found: list[tuple[int, bytes | None]]) -> bool:
        """Whether the head can be checked: two entries, or one that claims to be seq 0."""
        if len(found) >= 2:
            return True
        if not found or found[0][1] is None:
            return False
        try:
            return json.loads(found[0][1]).get("seq") == 0
        except (ValueError, AttributeError):
            return False

    def _set_head(self, partition: int, last: dict | None) -> None:
        self.partition = partition
        if last is None:
            self._seq, self._hash, self._last = -1, GENESIS_HASH, None
        else:
            self._seq, self._hash, self._last = int(last["seq"]), str(last["hash"]), last
        log.debug("audit chain %s restored at seq %d (partition %d)", self.chain, self._seq, partition)

    def _check_head(self, partition: int, offset: int, value: bytes | None, role: str = "last entry") -> dict:
        where = f"audit topic {self.topic!r} partition {partition} offset {offset} (chain {self.chain!r})"
        try:
            entry = json.loads(value) if value is not None else None
        except ValueError:
            entry = None
        reason = None
        if not isinstance(entry, dict) or not {"seq", "hash", "prev_hash", "time", "kind"} <= entry.keys():
            reason = "is not an audit entry"
        elif not isinstance(entry["seq"], int) or isinstance(entry["seq"], bool):
            reason = f"has a seq that is not an integer ({entry['seq']!r})"
        elif entry.get("chain") != self.chain:
            reason = f"belongs to chain {entry.get('chain')!r}"
        elif entry_hash(entry) != entry["hash"] or canonical(entry) != value:
            reason = "does not match its hash or is not canonical"
        if reason:
            raise AuditTopicError(
                f"{where}: the chain's {role} {reason}; run `driftline audit verify --topic "
                f"{self.topic}` before appending"
            )
        return entry

    def rollback(self) -> tuple[int, str]:
        """After the caller's transaction aborted: forget its entries, re-read the head."""
        return self.restore()

    def append_many(self, entries: list[dict]) -> list[dict]:
        """Append several entries (dicts with :meth:`append`'s arguments) in order."""
        prepared = prepare_entries(entries)
        if not prepared:
            return []
        with self._lock:
            seq, prev = self._seq, self._hash
            out = []
            for p in prepared:
                entry = make_entry(seq + 1, prev, *p, chain=self.chain)
                seq, prev = entry["seq"], entry["hash"]
                out.append(entry)
            futures = [
                self.producer.send(self.topic, key=self._key, value=canonical(e), partition=self.partition)
                for e in out
            ]
            if not self.transactional:
                self._await(futures)
            self._seq, self._hash, self._last = seq, prev, out[-1]
            return out

    def _await(self, futures: list[Any]) -> None:
        try:
            self.producer.flush(timeout=self.send_timeout_seconds)
            for f in futures:
                f.get(timeout=self.send_timeout_seconds)
        except kerrors.KafkaError as exc:
            # Some of the batch may have been written: the topic, not memory, says where the
            # chain ends now. (Called with the lock held: no append can slip in between.)
            try:
                self._set_head(*self._read_head())
            except AuditTopicError as again:
                log.warning("audit chain %s: head not re-read after a failed append: %s", self.chain, again)
            raise AuditTopicError(
                f"audit topic {self.topic!r} partition {self.partition} (chain {self.chain!r}): "
                f"append not acknowledged: {exc!r}. {_ACL_HINT}"
            ) from exc

    def close(self) -> None:
        """Close the producer if this log made it (:meth:`standalone`); a caller's stays open."""
        if self._owns_producer:
            self.producer.close(timeout=self.send_timeout_seconds)

    def __enter__(self) -> TopicAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- verify, export


@dataclass(frozen=True)
class TopicVerifyResult:
    """Outcome of :func:`verify_topic` for one chain.

    ``entries`` counts the chain's entries that verified before its first bad record (all
    of them when ``ok``); ``partition``/``first_bad_offset`` locate that record (the offset
    is None when ``ok`` or when the problem is at the chain's end, e.g. a missing head).
    """

    ok: bool
    chain: str
    topic: str
    partition: int | None
    entries: int
    first_bad_offset: int | None
    reason: str
    head_seq: int | None = None
    head_hash: str | None = None

    def where(self) -> str:
        """``topic[partition]@offset``, or the chain's end when no record is at fault."""
        if self.first_bad_offset is None:
            return f"end of chain (topic {self.topic!r})"
        return f"topic {self.topic!r} partition {self.partition} offset {self.first_bad_offset}"


class _ChainState:
    __slots__ = ("chain", "partition", "count", "prev_hash", "last_seq", "bad", "seen_head")

    def __init__(self, chain: str, partition: int) -> None:
        self.chain = chain
        self.partition = partition
        self.count = 0
        self.prev_hash = GENESIS_HASH
        self.last_seq: int | None = None
        self.bad: TopicVerifyResult | None = None
        self.seen_head = False


class _Scan:
    """One pass over the topic: per-chain verification and the model's evidence."""

    def __init__(
        self,
        topic: str,
        expect_heads: Mapping[str, tuple[int, str]] | None = None,
        select: Callable[[dict], bool] | None = None,
    ) -> None:
        self.topic = topic
        self.expect_heads = {c: (int(s), str(h)) for c, (s, h) in (expect_heads or {}).items()}
        self.chains: dict[str, _ChainState] = {}
        self.select = select
        self.selected: list[dict] = []

    def visit(self, partition: int, record: Any) -> None:
        value: bytes | None = record.value
        key_chain: str | None = None
        if record.key is not None:
            try:
                key_chain = record.key.decode("utf-8")
            except UnicodeDecodeError:
                key_chain = None
        entry_chain = None
        if value is not None:
            try:
                parsed = json.loads(value)
                if isinstance(parsed, dict) and isinstance(parsed.get("chain"), str):
                    entry_chain = parsed["chain"]
            except ValueError:
                pass
        name = key_chain or entry_chain or f"(unkeyed record in partition {partition})"
        state = self.chains.get(name)
        if state is None:
            state = self.chains[name] = _ChainState(name, partition)
        if state.bad is not None:
            return  # a chain is reported at its first bad record, as the file log is
        entry, reason = None, None
        if state.partition != partition:
            reason = (
                f"chain also has records in partition {state.partition}: the topic's partition "
                "count changed or a record was produced to an explicit partition"
            )
        elif value is None:
            reason = "record has no value (a tombstone)"
        elif key_chain is None:
            reason = "record has no UTF-8 key (the key must be the chain)"
        else:
            entry, reason = check_record(value, state.count, state.prev_hash, KINDS)
            if reason is None and entry.get("chain") != key_chain:
                reason = f"entry's chain {entry.get('chain')!r} differs from the record key {key_chain!r}"
        if reason is not None:
            state.bad = TopicVerifyResult(
                False, name, self.topic, partition, state.count, record.offset, reason,
                state.last_seq, state.prev_hash if state.count else None,
            )
            return
        state.count += 1
        state.last_seq = entry["seq"]
        state.prev_hash = entry["hash"]
        if self.expect_heads.get(name) == (entry["seq"], entry["hash"]):
            state.seen_head = True
        if self.select is not None and self.select(entry):
            self.selected.append(entry)

    def results(self) -> dict[str, TopicVerifyResult]:
        out: dict[str, TopicVerifyResult] = {}
        for name in sorted(self.chains):
            s = self.chains[name]
            head_hash = s.prev_hash if s.count else None
            if s.bad is not None:
                out[name] = s.bad
            elif name in self.expect_heads and not s.seen_head:
                seq = self.expect_heads[name][0]
                out[name] = TopicVerifyResult(
                    False, name, self.topic, s.partition, s.count, None,
                    f"expected head seq={seq} not found: the chain was truncated or replaced",
                    s.last_seq, head_hash,
                )
            else:
                out[name] = TopicVerifyResult(
                    True, name, self.topic, s.partition, s.count, None, "ok", s.last_seq, head_hash
                )
        for name, (seq, _) in self.expect_heads.items():
            if name not in out:
                out[name] = TopicVerifyResult(
                    False, name, self.topic, None, 0, None,
                    f"expected head seq={seq} not found: no entry of this chain in the topic",
                )
        return out


def _scan(
    consumer_settings: Mapping[str, Any], topic: str, scan: _Scan, read_timeout_seconds: float
) -> None:
    """Read every partition from its beginning to the end offsets taken at the start."""
    consumer = _consumer(consumer_settings, topic)
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic, read_timeout_seconds)]
        try:
            starts = consumer.beginning_offsets(tps)
            ends = consumer.end_offsets(tps)
        except kerrors.KafkaError as exc:
            raise AuditTopicError(
                f"audit topic {topic!r}: cannot list its offsets ({exc!r}); Read on topic {topic!r} is needed"
            ) from exc
        _read(consumer, starts, ends, scan.visit, read_timeout_seconds)
    finally:
        consumer.close()


def verify_topic(
    consumer_settings: Mapping[str, Any],
    topic: str,
    expect_heads: Mapping[str, tuple[int, str]] | None = None,
    *,
    read_timeout_seconds: float = 30.0,
) -> dict[str, TopicVerifyResult]:
    """Check every chain of the topic (committed records only); one result per chain.

    Per chain: seq continuity from 0, prev_hash linkage from the genesis hash, the hash,
    canonical encoding, known kinds, key = chain and one partition. A chain stops at its
    first bad record, named by partition and offset. ``expect_heads`` maps a chain to a
    ``(seq, hash)`` it must still contain (recorded elsewhere), which detects truncation.
    """
    scan = _Scan(topic, expect_heads)
    _scan(consumer_settings, topic, scan, read_timeout_seconds)
    return scan.results()


def _source(consumer_settings: Mapping[str, Any], topic: str) -> str:
    servers = consumer_settings.get("bootstrap_servers") or ()
    if isinstance(servers, str):
        servers = [servers]
    return f"kafka://{','.join(servers)}/{topic}"


def export_topic(
    consumer_settings: Mapping[str, Any],
    topic: str,
    model: str,
    since: float | str | None = None,
    until: float | str | None = None,
    *,
    read_timeout_seconds: float = 30.0,
) -> dict:
    """The evidence for one model, in :func:`monitor.audit.export`'s format.

    Entries: the model's (any chain) and the global ones (``config.loaded`` of every
    instance), in ``[since, until)``, merged in :func:`export_order` (time, chain, seq);
    only entries that verified are included. ``verification`` holds ``ok``, ``entries``,
    ``reason`` like the file export, plus ``chains``: every chain's result, since the
    evidence spans several chains.
    """
    since_ts = parse_time(since) if isinstance(since, str) else since
    until_ts = parse_time(until) if isinstance(until, str) else until
    scan = _Scan(topic, select=lambda e: select_for_export(e, model, since_ts, until_ts))
    _scan(consumer_settings, topic, scan, read_timeout_seconds)
    results = scan.results()
    bad = [r for r in results.values() if not r.ok]
    reason = "ok" if not bad else "; ".join(f"chain {r.chain!r} at {r.where()}: {r.reason}" for r in bad)
    return {
        "kind": "driftline.audit_export",
        "version": 1,
        "model": model,
        "since": None if since_ts is None else _iso(since_ts),
        "until": None if until_ts is None else _iso(until_ts),
        "source": _source(consumer_settings, topic),
        "verification": {
            "ok": not bad,
            "entries": sum(r.entries for r in results.values()),
            "reason": reason,
            "chains": {name: asdict(r) for name, r in results.items()},
        },
        "entries": sorted(scan.selected, key=export_order),
    }


# --------------------------------------------------------------------------- CLI


def parse_expect_heads(values: list[str]) -> dict[str, tuple[int, str]]:
    """``["model/m=12:ab..."]`` -> ``{"model/m": (12, "ab...")}`` (``--expect-head``)."""
    heads: dict[str, tuple[int, str]] = {}
    for text in values:
        chain, eq, rest = text.rpartition("=")
        seq, colon, h = rest.partition(":")
        try:
            if not (eq and chain and colon and h):
                raise ValueError
            heads[chain] = (int(seq), h)
        except ValueError:
            raise SystemExit(
                f"error: with --topic, --expect-head must be CHAIN=SEQ:HASH, got {text!r}"
            ) from None
    return heads


def main_verify_topic(
    ns: argparse.Namespace, topic: str, settings: Mapping[str, Any], read_timeout_seconds: float
) -> int:
    """`driftline audit verify --topic`: exit 0 when every chain is intact, 1 otherwise."""
    raw = getattr(ns, "expect_head", None) or []
    heads = parse_expect_heads([raw] if isinstance(raw, str) else list(raw))
    try:
        results = verify_topic(settings, topic, heads, read_timeout_seconds=read_timeout_seconds)
    except AuditTopicError as exc:
        raise SystemExit(f"error: {exc}") from None
    ok = all(r.ok for r in results.values())
    if getattr(ns, "json", False):
        print(json.dumps({"ok": ok, "topic": topic, "chains": {c: asdict(r) for c, r in results.items()}}))
        return 0 if ok else 1
    for r in results.values():
        if r.ok:
            print(f"OK {r.chain}: {r.entries} entries, head seq={r.head_seq} hash={r.head_hash}")
        else:
            print(f"FAILED {r.chain} at {r.where()} (after {r.entries} good entries): {r.reason}",
                  file=sys.stderr)
    total = sum(r.entries for r in results.values())
    print(f"{'OK' if ok else 'FAILED'}: topic {topic!r}, {len(results)} chain(s), {total} good entries",
          file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def main_export_topic(
    ns: argparse.Namespace, topic: str, settings: Mapping[str, Any], read_timeout_seconds: float
) -> int:
    """`driftline audit export --topic ... --model M`: exit 1 if a chain is broken."""
    try:
        doc = export_topic(settings, topic, ns.model, since=getattr(ns, "since", None),
                           until=getattr(ns, "until", None), read_timeout_seconds=read_timeout_seconds)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    except AuditTopicError as exc:
        raise SystemExit(f"error: {exc}") from None
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    out = getattr(ns, "output", "-") or "-"
    if out != "-":
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {len(doc['entries'])} entries for {ns.model!r} to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not doc["verification"]["ok"]:
        print(f"warning: audit chain is broken: {doc['verification']['reason']}", file=sys.stderr)
        return 1
    return 0
