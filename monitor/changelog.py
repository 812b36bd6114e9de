"""Kafka-native state: the internal topics, chunked state snapshots and their restore.

With ``state.backend = "kafka"`` the local SQLite file is only a cache. Each piece of state
lives in a compacted changelog topic, written inside the checkpoint's Kafka transaction
(see :mod:`monitor.kstate`), so a pod that Kubernetes moves or deletes loses nothing:

``<prefix>-partition-changelog``  compacted; one partition per input partition. Partition
    ``p`` holds the stage-1 state of input partition ``p`` (join table, open panes, sealed
    cutoffs) and the input offsets it corresponds to.
``<prefix>-model-changelog``  compacted; ``state.model_partitions`` partitions. A model's
    stage-2 state (window, pending panes, detectors, policy and episode ids, the sources'
    progress) lives in the partition of its panes (:func:`model_partition`).
``<prefix>-panes``  sealed partial panes from stage 1, keyed and partitioned by model.
``<prefix>-evaluations``  every window evaluation (the replayable record of what was judged).
``<prefix>-transitions``  alert transitions and retrain requests, read by delivery.

A snapshot is one header record (key ``<kind>/<id>``: checkpoint id, chunk count, offsets)
and ``n`` chunk records (key ``<kind>/<id>/<i>``), each at most ``state.chunk_bytes``, so a
million waiting predictions (~72 MB) fit the broker's default 1 MB record limit. Chunk
keys past a shorter snapshot get tombstones. Records are read ``read_committed``: a
snapshot is visible whole or not at all, and compaction keeps the newest of each key, so
the newest header and its chunks always belong together.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from monitor.errors import StateError

__all__ = [
    "InternalTopics",
    "Snapshot",
    "SnapshotWriter",
    "read_snapshots_of",
    "ensure_topics",
    "model_partition",
    "read_snapshots",
    "new_checkpoint_id",
]

log = logging.getLogger("driftline.changelog")

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()

SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class InternalTopics:
    """The internal topic names for a prefix."""

    prefix: str

    @property
    def partition_changelog(self) -> str:
        return f"{self.prefix}-partition-changelog"

    @property
    def model_changelog(self) -> str:
        return f"{self.prefix}-model-changelog"

    @property
    def panes(self) -> str:
        return f"{self.prefix}-panes"

    @property
    def evaluations(self) -> str:
        return f"{self.prefix}-evaluations"

    @property
    def transitions(self) -> str:
        return f"{self.prefix}-transitions"

    @property
    def commands(self) -> str:
        return f"{self.prefix}-commands"

    def specs(self, input_partitions: int, model_partitions: int) -> dict[str, tuple[int, dict[str, str]]]:
        """topic -> (partitions, configs) as `driftline run` creates them."""
        compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": "3600000"}
        keep = {"cleanup.policy": "delete", "retention.ms": str(7 * 86400 * 1000)}
        return {
            self.partition_changelog: (input_partitions, compact),
            self.model_changelog: (model_partitions, compact),
            self.panes: (model_partitions, keep),
            self.evaluations: (model_partitions, {"cleanup.policy": "delete", "retention.ms": "-1"}),
            self.transitions: (model_partitions, {"cleanup.policy": "delete", "retention.ms": "-1"}),
        }


def model_partition(model: str, partitions: int) -> int:
    """The panes / model-changelog partition of a model: stable across processes and versions
    (CRC-32 of the name), so every replica routes a model's panes to the same owner."""
    return zlib.crc32(model.encode()) % partitions


def new_checkpoint_id() -> str:
    return uuid.uuid4().hex


def ensure_topics(admin_settings: dict[str, Any], specs: dict[str, tuple[int, dict[str, str]]],
                  replication_factor: int) -> None:
    """Create missing internal topics with their configs; check existing ones.

    An existing changelog that is not compacted, or has other partition counts than the
    layout needs, is refused with the topic named: restoring from it would read the wrong
    state. Lacking the right to create or describe a topic is reported with the ACL needed.
    """
    admin = KafkaAdminClient(**admin_settings)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, num_partitions=n, replication_factor=replication_factor, topic_configs=cfg)
                   for name, (n, cfg) in specs.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=30000)
                log.info("created internal topics: %s", ", ".join(t.name for t in missing))
            except TopicAlreadyExistsError:
                pass  # another replica created them first
            except KafkaError as exc:
                raise StateError(_acl_hint(exc, [t.name for t in missing], "Create")) from exc
        _check_existing(admin, specs)
    finally:
        admin.close()


def _check_existing(admin: KafkaAdminClient, specs: dict[str, tuple[int, dict[str, str]]]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            described = {t["name"]: t for t in admin.describe_topics(list(specs))}
            if all(d.get("partitions") and not d.get("error_code") for d in described.values()):
                break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise StateError(_acl_hint(exc, list(specs), "Describe")) from exc
        if time.monotonic() > deadline:
            raise StateError(f"internal topics {sorted(specs)} have no metadata after 30 s")
        time.sleep(0.3)
    for name, (n, _) in specs.items():
        got = len(described[name]["partitions"])
        if got != n:
            raise StateError(f"internal topic {name} has {got} partitions, the layout needs {n} (input partitions "
                             "for the partition changelog, state.model_partitions for the model topics); "
                             "changing them would move state: use a new state.topic_prefix")
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in specs])
    except KafkaError as exc:
        raise StateError(_acl_hint(exc, list(specs), "DescribeConfigs")) from exc
    for name, configs in res.get("topic", {}).items():
        have = (configs.get("cleanup.policy") or {}).get("value")
        if specs[name][1].get("cleanup.policy") == "compact" and have is not None and "compact" not in have:
            raise StateError(f"internal topic {name} has cleanup.policy={have}; a changelog must be compacted "
                             f"(kafka-configs --alter --entity-type topics --entity-name {name} "
                             "--add-config cleanup.policy=compact)")


def _acl_hint(exc: Exception, topics: list[str], operation: str) -> str:
    name = type(exc).__name__
    if "Authorization" in name:
        return (f"not allowed to {operation} internal topics {topics}: {name}. Grant the monitor's principal "
                "Create, Describe, DescribeConfigs, Read and Write on the topics with its state.topic_prefix, "
                "and Write/Describe on its transactional ids (see helm/driftline/README.md), or create the "
                "topics beforehand")
    return f"cannot {operation} internal topics {topics}: {name}: {exc}"


# -- writing ----------------------------------------------------------------------------------
class SnapshotWriter:
    """Sends snapshots of state through a (transactional) producer, chunked.

    Remembers each id's chunk count so a shorter snapshot tombstones the chunks it no
    longer has; :meth:`forget` after the state moved away (another owner writes it now).
    """

    def __init__(self, send: Callable[..., Any], topic: str, chunk_bytes: int):
        self.send = send
        self.topic = topic
        self.chunk_bytes = chunk_bytes
        self._chunks: dict[str, int] = {}

    def known(self, key: str, chunks: int) -> None:
        """The chunk count found at restore (for tombstones of the next, shorter snapshot)."""
        self._chunks[key] = chunks

    def forget(self, key: str) -> None:
        self._chunks.pop(key, None)

    def write(self, key: str, partition: int, data: bytes, ckpt: str, meta: dict[str, Any]) -> int:
        """Chunks then the header; returns the bytes written."""
        step = self.chunk_bytes
        chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for i, part in enumerate(chunks):
            self.send(self.topic, key=f"{key}/{i}".encode(), partition=partition,
                      value=_pack.encode({"ckpt": ckpt, "i": i, "data": part}))
        for i in range(len(chunks), self._chunks.get(key, 0)):
            self.send(self.topic, key=f"{key}/{i}".encode(), partition=partition, value=None)
        self._chunks[key] = len(chunks)
        header = {"kind": "snapshot", "version": SNAPSHOT_VERSION, "ckpt": ckpt, "chunks": len(chunks),
                  "bytes": len(data), "at": time.time(), **meta}
        self.send(self.topic, key=key.encode(), partition=partition, value=_pack.encode(header))
        return len(data)


# -- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    key: str
    data: bytes
    header: dict[str, Any]

    @property
    def ckpt(self) -> str:
        return self.header["ckpt"]


def read_snapshots(consumer_settings: dict[str, Any], topic: str, partition: int,
                   timeout_seconds: float = 120.0,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Snapshot]:
    """The newest committed snapshot of every key in one changelog partition (see
    :func:`read_snapshots_of`)."""
    return read_snapshots_of(consumer_settings, topic, [partition], timeout_seconds, progress)[partition]


def read_snapshots_of(consumer_settings: dict[str, Any], topic: str, partitions: list[int],
                      timeout_seconds: float = 120.0,
                      progress: Callable[[int, int], None] | None = None) -> dict[int, dict[str, Snapshot]]:
    """The newest committed snapshot of every key in each of these changelog partitions,
    read with one consumer (each new consumer costs a connection, metadata and offset
    look-ups: about 0.1 s here, which a rebalance paid per partition before).

    Reads from the beginning to the end offsets taken at the start, ``read_committed`` (for
    which the end offset is the last stable one, before any open transaction). It fails
    when no record comes for ``timeout_seconds``. ``progress(read, total)`` is called as
    records come.
    """
    settings = {k: v for k, v in consumer_settings.items() if k not in ("group_id", "enable_auto_commit")}
    c = KafkaConsumer(**settings, group_id=None, enable_auto_commit=False, isolation_level="read_committed",
                      auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in partitions]
    latest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
    try:
        c.assign(tps)
        # one ListOffsets request each way for all partitions (position() after a
        # seek_to_beginning() looks each partition up on its own)
        start = c.beginning_offsets(tps)
        end = c.end_offsets(tps)
        for tp in tps:
            c.seek(tp, start[tp])
        # a deadline on progress, not on the whole read: a large changelog that keeps
        # coming is fine, a reader that stops moving is not
        deadline = time.monotonic() + timeout_seconds
        pos = dict(start)
        total = sum(end[tp] - start[tp] for tp in tps)
        while any(pos[tp] < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                behind = next(tp for tp in tps if pos[tp] < end[tp])
                raise StateError(f"restore of {topic}[{behind.partition}] stalled at offset {pos[behind]} of "
                                 f"{end[behind]} for {timeout_seconds:.0f} s (an open transaction that never ends?)")
            for tp, recs in c.poll(timeout_ms=200, max_records=5000).items():
                got = latest[tp.partition]
                for r in recs:
                    got[r.key] = r.value
            moved = False
            for tp in tps:
                now_pos = c.position(tp)
                if now_pos > pos[tp]:
                    pos[tp] = now_pos
                    moved = True
            if moved:
                deadline = time.monotonic() + timeout_seconds
            if progress is not None:
                progress(sum(pos[tp] - start[tp] for tp in tps), total)
    finally:
        c.close()
    return {p: _assemble(topic, p, latest[p]) for p in partitions}


def _assemble(topic: str, partition: int, latest: dict[bytes, bytes | None]) -> dict[str, Snapshot]:
    """Each key's snapshot from its header and chunks, as the last records left them."""
    out: dict[str, Snapshot] = {}
    for k, v in latest.items():
        if v is None or k is None:
            continue
        key = k.decode()
        head = _unpack.decode(v)
        if not isinstance(head, dict) or head.get("kind") != "snapshot":
            continue
        if head.get("version") != SNAPSHOT_VERSION:
            raise StateError(f"{topic}[{partition}] key {key!r}: snapshot version {head.get('version')!r}, "
                             f"this build reads version {SNAPSHOT_VERSION}")
        parts = []
        for i in range(head["chunks"]):
            raw = latest.get(f"{key}/{i}".encode())
            chunk = _unpack.decode(raw) if raw is not None else None
            if chunk is None or chunk.get("ckpt") != head["ckpt"]:
                raise StateError(f"{topic}[{partition}] key {key!r}: chunk {i} of checkpoint {head['ckpt']} is "
                                 "missing (a changelog written outside a transaction, or compacted by hand?)")
            parts.append(chunk["data"])
        data = b"".join(parts)
        if len(data) != head["bytes"]:
            raise StateError(f"{topic}[{partition}] key {key!r}: {len(data)} bytes restored, header says {head['bytes']}")
        out[key] = Snapshot(key, data, head)
    return out
