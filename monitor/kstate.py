"""``state.backend = "kafka"``: state in changelog topics, one transaction per checkpoint,
stage 2 over the panes topic, delivery from the transitions topic.

What one process runs, beside the App's input consumer (group ``kafka.group_id``):

- **Stage 1** (the App's pipeline, per input partition): sealed partial panes are not
  evaluated there. :meth:`KafkaState.absorb` encodes each once for its panes record, which
  waits for the checkpoint; a pane of a model this process also owns is merged into stage 2
  at once (when stage 2 has merged every earlier record of that source), so with one
  replica, or a model whose sources are all local, windows are evaluated as they seal, as
  with the SQLite backend. Such panes get no record at all: the model's snapshot in the
  same transaction holds them (and the source's progress), which is all a later owner
  reads. The encoded bytes are kept until that commit, for a roll-back (below) or a model
  given up before it, whose panes then go out as records after all.
- **Stage 2** (:class:`~monitor.stage2.ModelStage`): a consumer in group
  ``<group_id>-models`` on ``<prefix>-panes`` and ``<prefix>-transitions``
  (``read_committed``, range assignment, equal partition counts): a model lives on the one
  process that owns its panes partition, and that process also delivers the model's
  notifications, from the same partition of the transitions topic into the local outbox
  (sinks, retries, idempotency keys). The delivery offset moves only past notifications
  that reached a final state, in the next checkpoint's transaction, so a pod that dies with
  undelivered notifications leaves them to the next owner.

**The checkpoint is one Kafka transaction** (:meth:`KafkaState.checkpoint`): the stage-1
snapshots of the input partitions that moved, their sealed panes and progress for stage 2,
the input offsets (``send_offsets_to_transaction`` with the input consumer's group
metadata), then stage 2's evaluations, alert transitions and retrain requests, the
snapshots of the models that changed and the panes offsets (with the models consumer's
group metadata). Either all of it becomes visible to ``read_committed`` readers or none.
The group metadata fences zombies (KIP-447): a process that was paused past its session
while its partitions moved fails its next commit (``CommitFailedError``), its writes are
aborted, and it stops; its supervisor restarts it and it restores from the changelog.

A partition revoked or lost between checkpoints drops what it did since the last one: its
next owner restores the snapshot and re-reads from the offsets in the same transaction. A
model that merged that partition's panes directly since the last commit is rolled back with
it: its models partition is restored from the changelog and re-read from its committed
panes offset, as on a new assignment.
After a successful commit the same state is written to the local SQLite file, which a
restart on the same volume uses instead of the changelog when its offsets equal the
group's committed ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections import defaultdict

import msgspec
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata

from monitor.changelog import (
    InternalTopics,
    SnapshotWriter,
    ensure_topics,
    model_partition,
    new_checkpoint_id,
    read_snapshots_of,
)
from monitor.config import internal_topic_prefix
from monitor.errors import StateError
from monitor.events import decode_alert, encode
from monitor.panes import Pane
from monitor.pipeline import Output
from monitor.stage2 import ModelStage, encode_pane, pane_headers, pane_message
from monitor.state import write_evaluations

__all__ = ["KafkaState", "OUTPUTS_VERSION"]

log = logging.getLogger("driftline.kstate")

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()

OUTPUTS_VERSION = 1
_STAGE_POLL_SECONDS = 0.1  # each poll of the models consumer costs 1.5-2 ms here, idle or not
_JOIN_POLL_MS = 20
_IDLE_MEMBER_POLL_SECONDS = 0.5


def instance_id(config) -> str:
    """This process's transactional id and audit chain: ``<prefix>-<hostname>-<pid>``. Stable
    across restarts of a pod's container (same hostname, pid 1), so a restarted process
    fences its predecessor's open transaction at once instead of after its timeout."""
    return f"{internal_topic_prefix(config)}-{socket.gethostname()}-{os.getpid()}"


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: only records what moved (no blocking calls on the
    consumer there); the poll loop restores and seeks."""

    def __init__(self, on_assigned, on_revoked):
        self._assigned, self._revoked = on_assigned, on_revoked

    def on_partitions_revoked(self, revoked):
        self._revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self._assigned(assigned)

    def on_partitions_lost(self, lost):
        self._revoked(lost)


class KafkaState:
    """The Kafka side of one process in ``state.backend = "kafka"`` (see the module doc)."""

    def __init__(self, app):
        self.app = app
        cfg = app.config
        s = cfg.state
        self.settings = s
        self.topics = InternalTopics(internal_topic_prefix(cfg))
        self.stage = ModelStage(cfg, app.profiles, app.metrics, reports=cfg.reports.enabled)
        self.n_sources = 0
        self.producer: KafkaProducer | None = None
        self.models_consumer: KafkaConsumer | None = None
        self.partition_writer: SnapshotWriter | None = None
        self.model_writer: SnapshotWriter | None = None
        self.transactional_id = instance_id(cfg)
        # input partition numbers assigned and not yet restored; panes partitions likewise
        self._inputs_to_restore: set[int] = set()
        self._models_to_restore: set[int] = set()
        self.restored_inputs: set[int] = set()
        self._restored_at: dict[int, float] = {}
        self.owned_panes: set[int] = set()
        self.panes_positions: dict[int, int] = {}
        self._written: dict[int, tuple] = {}  # input partition -> offsets of its last snapshot
        self._snap_ckpt: dict[int, str] = {}  # input partition -> checkpoint id of its last snapshot
        self._panes_written: dict[int, int] = {}
        self._published: dict[tuple[str, int], tuple[float, bool]] = {}
        self._stage_polled = 0.0
        # delivery: per transitions partition, (next offset, highest outbox row id it made)
        self._delivery_marks: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._delivery_committed: dict[int, int] = {}
        self._delivered_through: dict[int, int] = {}
        # transitions partitions to read from their start: records before the committed
        # delivery offset rebuild the oversight tables (alerts, requests) without notifying
        self._rewind: set[int] = set()
        self._rebuild_until: dict[int, int] = {}
        self.commands = None
        # Held by a checkpoint (and by absorb), and by the rebalance listeners, which
        # kafka-python 3 runs on its IO thread. In 3.0.12 they run only while the poll loop
        # waits in that consumer's poll(), so they never overlap a checkpoint; the lock keeps
        # that order (a revocation waits for a checkpoint under way to commit, and the
        # group's rebalance for the revocation, as Kafka Streams commits in
        # onPartitionsRevoked) should listeners ever run concurrently. Neither side blocks
        # on a consumer's IO thread while holding it (checkpoints use the producer).
        self.lock = threading.RLock()
        # stage 1's panes records per (model, source partition): the seq of the last one
        # published, restored with the partition's snapshot
        self._seq: dict[tuple[str, int], int] = {}
        # sealed panes not yet published, per (model index, source partition), in order:
        # [start, encoded bytes, the Pane until stage 2 takes it, merged directly]
        self._unpublished: dict[tuple[int, int], list[list]] = {}
        # (model, source partition) whose panes this process merges directly, without the
        # round trip through the panes topic: it owns both, and its stage has merged every
        # record the source published before (such panes need no record: see checkpoint)
        self._local: set[tuple[str, int]] = set()
        self._local_dirty: set[tuple[str, int]] = set()  # merged directly since the last commit
        self._revoked_inputs: list[int] = []  # from the listener, for the poll loop

    # -- start-up ------------------------------------------------------------------------------
    def start(self) -> None:
        app, cfg = self.app, self.app.config
        common = app._client_common()
        probe = KafkaConsumer(**common)
        try:
            deadline = time.monotonic() + 30
            while not (parts := probe.partitions_for_topic(cfg.topics.predictions)):
                if time.monotonic() > deadline:
                    raise StateError(f"topic {cfg.topics.predictions!r} (topics.predictions) has no metadata after "
                                     "30 s: create it before starting with state.backend = \"kafka\"")
                time.sleep(0.2)
        finally:
            probe.close()
        self.n_sources = len(parts)
        ensure_topics(common, self.topics.specs(self.n_sources, self.settings.model_partitions),
                      self.settings.replication_factor)
        # batch_size 256 KB (default 16 KB): a checkpoint sends thousands of evaluation records
        # at once; with small batches the sender thread falls behind, every send() then finds
        # a full batch and wakes it through a socket write (bench/pipeline.py kafka_state under
        # cProfile: 14.5k wakeups for 15k sends, 0.7 s of the checkpoints' 3.9 s per 300k input
        # records). Below the broker's default 1 MB message.max.bytes; larger records go alone.
        # retry_backoff_ms 20 (default 100): right after a commit the coordinator is still
        # writing the transaction's markers and answers the next transaction's first
        # AddOffsetsToTxn with CONCURRENT_TRANSACTIONS; kafka-python (like the Java client)
        # retries AddPartitionsToTxn after 20 ms in that case but AddOffsetsToTxn only after
        # retry_backoff_ms: 110 ms per send_offsets_to_transaction at the default, 16-32 ms
        # at 10-20 (measured against Apache Kafka 4.1 here, checkpoints back to back)
        self.producer = KafkaProducer(
            transactional_id=self.transactional_id, transaction_timeout_ms=self.settings.transaction_timeout_ms,
            acks="all", linger_ms=5, batch_size=256 * 1024, retry_backoff_ms=20,
            max_request_size=max(1048576, 2 * self.settings.chunk_bytes), **common)
        self.producer.init_transactions()
        for topic in (self.topics.panes, self.topics.partition_changelog, self.topics.model_changelog,
                      self.topics.evaluations, self.topics.transitions):
            self.producer.partitions_for(topic)  # metadata now, not inside the first checkpoint
        log.info("transactional producer %s ready (transaction timeout %d ms)", self.transactional_id,
                 self.settings.transaction_timeout_ms)
        self.partition_writer = SnapshotWriter(self.producer.send, self.topics.partition_changelog,
                                               self.settings.chunk_bytes)
        self.model_writer = SnapshotWriter(self.producer.send, self.topics.model_changelog, self.settings.chunk_bytes)
        group = app._consumer_settings()
        base = {k: v for k, v in group.items() if k not in ("group_id", "max_poll_records")}
        self.models_consumer = KafkaConsumer(**{**base, "group_id": f"{cfg.kafka.group_id}-models",
                                                "isolation_level": "read_committed",
                                                "auto_offset_reset": "earliest", "enable_auto_commit": False,
                                                "max_partition_fetch_bytes": 8 * 1048576,
                                                "fetch_max_wait_ms": max(100, base.get("fetch_max_wait_ms", 500)),
                                                "partition_assignment_strategy": [RangePartitionAssignor]})
        # one group for a model's panes and its transitions: the range assignor gives one
        # member the same partition of both (equal partition counts), so the model's owner
        # also delivers its notifications, and one transaction commits both offsets
        self.models_consumer.subscribe([self.topics.panes, self.topics.transitions],
                                       listener=_Listener(self._models_assigned, self._models_revoked))

    def start_commands(self):
        """The oversight command bus on ``<prefix>-commands`` (monitor.commands)."""
        from monitor.commands import CommandBus

        app = self.app

        def applied(cmd, result) -> None:
            if cmd.op == "approve":
                app._on_approve(msgspec.to_builtins(result))
            app.oversight.flush_audit()

        bus = CommandBus(app._client_common(), self.topics.commands, app.oversight, app.store,
                         self.settings.replication_factor, on_applied=applied)
        bus.owned_models = lambda: set(self.stage.runtimes)
        self.commands = bus
        return bus

    def restoring(self) -> bool:
        return bool(self._inputs_to_restore or self._models_to_restore)

    # -- stage 1: input partitions ---------------------------------------------------------------
    def inputs_assigned(self, tps) -> None:
        """Listener side: remember the partition numbers to restore before they are read."""
        self._inputs_to_restore |= {tp.partition for tp in tps}

    def inputs_revoked(self, tps) -> None:
        """Listener side: what these partitions did since the last commit is dropped (their
        next owner restores the committed snapshot and re-reads from its offsets)."""
        for tp in tps:
            p = tp.partition
            self.restored_inputs.discard(p)
            self._inputs_to_restore.discard(p)
            self._written.pop(p, None)
            self._snap_ckpt.pop(p, None)
            self.partition_writer and self.partition_writer.forget(f"partition/{p}")
            for key in [k for k in self._published if k[1] == p]:
                del self._published[key]
            self._revoked_inputs.append(p)  # the rest on the poll loop's thread (_sync_revoked)

    def _sync_revoked(self) -> None:
        """The poll loop's side of a revoked input partition: its unpublished panes and seq
        go; a model that merged its panes directly since the last commit is rolled back to
        that commit (restored from its changelog and re-read from its committed panes
        offset), or it would count panes that the partition's next owner seals again."""
        roll_back: set[int] = set()
        n = self.settings.model_partitions
        while self._revoked_inputs:
            p = self._revoked_inputs.pop()
            # list() copies: the models consumer's listener changes these on its IO thread
            for key in [k for k in list(self._unpublished) if k[1] == p]:
                del self._unpublished[key]
            for key in [k for k in list(self._seq) if k[1] == p]:
                del self._seq[key]
            for key in [k for k in list(self._local) if k[1] == p]:
                self._local.discard(key)
                if key in self._local_dirty:
                    roll_back.add(model_partition(key[0], n))
        for part in sorted(roll_back):
            if part in self.owned_panes:
                log.info("models partition %d: rolled back to its last commit (an input partition whose panes it "
                         "merged directly was revoked)", part)
                tp = TopicPartition(self.topics.panes, part)
                self._models_revoked([tp])
                self._models_to_restore.add(part)
                self.models_consumer.pause(tp)

    def restore_inputs(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Restore the input partitions assigned since the last call; returns where to start
        reading each (the offsets in the restored snapshot, None: the group's committed)."""
        if not self._inputs_to_restore:
            return {}
        app = self.app
        self._sync_revoked()  # a partition revoked and assigned again starts clean
        starts: dict[TopicPartition, int | None] = {}
        t0 = time.perf_counter()
        todo = {p: tps for p in sorted(self._inputs_to_restore)
                if (tps := [tp for tp in assigned if tp.partition == p])}
        found = {p: self._local_snapshot(p, tps) for p, tps in todo.items()}
        rest = [p for p, got in found.items() if got is None]
        if rest:  # the others from the changelog, all with one reader
            restored = read_snapshots_of(app._client_common(), self.topics.partition_changelog, rest,
                                         timeout_seconds=self._restore_timeout(),
                                         progress=lambda done, total: app.metrics.state_restore_records
                                         .labels("partition").set(done))
            for p in rest:
                snap = restored[p].get(f"partition/{p}")
                if snap is None:
                    found[p] = (None, {}, {}, "", "nothing (a new partition)")
                    continue
                self.partition_writer.known(f"partition/{p}", snap.header["chunks"])
                found[p] = (snap.data, {t: int(o) for t, o in snap.header.get("offsets", {}).items()},
                            snap.header.get("seq", {}), snap.ckpt, "the changelog")
        for p, tps in todo.items():
            data, offsets, seqs, snap_ckpt, source = found[p]
            self._snap_ckpt[p] = snap_ckpt
            for name, seq in seqs.items():
                self._seq[(name, p)] = int(seq)
            app.pipeline.drop_partition(p)
            if data is not None:
                app.pipeline.restore_partition(p, data)
            for tp in tps:
                off = offsets.get(tp.topic)
                starts[tp] = off
                if off is not None:
                    app.positions[(tp.topic, tp.partition)] = off
                else:
                    app.positions.pop((tp.topic, tp.partition), None)
            self._written[p] = tuple(sorted(offsets.items()))
            self.restored_inputs.add(p)
            self._restored_at[p] = app.pipeline.clock()
            log.info("input partition %d restored from %s (offsets %s)", p, source, offsets or "none")
        if todo:
            seconds = time.perf_counter() - t0
            app.metrics.state_restore_seconds.labels("partition").observe(seconds)
            log.info("input partitions %s restored in %.2fs", sorted(todo), seconds)
        self._inputs_to_restore.clear()
        return starts

    def _restore_timeout(self) -> float:
        """How long a restore may go without progress: past a dead owner's open transaction."""
        return max(60.0, 6 * self.settings.transaction_timeout_ms / 1000.0)

    def _local_snapshot(self, p: int, tps: list[TopicPartition]
                        ) -> tuple[bytes, dict[str, int], dict[str, int], str, str] | None:
        """(state bytes, offsets by topic, seq of its last panes record by model, checkpoint
        id, where from) from the local copy when the group's committed offsets are its
        offsets and name its checkpoint, else None."""
        app = self.app
        local_off = {t: o for (t, pp), o in app.store.offsets().items() if pp == p}
        blob = app.store.blob(f"kpartition/{p}")
        local_ckpt = app.store.blob(f"kckpt/{p}")
        if blob is None or not local_off or not local_ckpt:
            return None
        committed = {}
        for tp in tps:
            # read_committed: waits out pending transactional offsets
            c = app.consumer.committed(tp, metadata=True)
            if c is not None:
                if c.metadata != local_ckpt.decode():
                    return None  # another process committed this partition since (same offsets or not)
                committed[tp.topic] = c.offset
        if not committed or committed != {t: local_off.get(t) for t in committed}:
            return None
        seqs = app.store.blob(f"kseq/{p}")
        return (blob, {t: local_off[t] for t in committed}, {} if seqs is None else _unpack.decode(seqs),
                local_ckpt.decode(), "the local copy")

    def _progress(self, model_index: int, p: int) -> tuple[float, bool]:
        """A source's progress for stage 2. A partition that has had no prediction yet holds
        the model back for scheduler.idle_close_seconds after its assignment: its first fetch may still be under way, and panes it then seals must not
        arrive after stage 2 evaluated their windows."""
        pipeline = self.app.pipeline
        sealed, active = pipeline.progress(model_index, p)
        st = pipeline.partitions.get(p)
        if st is None or st.pred_max == -math.inf:  # no prediction yet (labels may come first)
            waited = pipeline.clock() - self._restored_at.get(p, 0.0)
            return sealed, waited < self.app.config.scheduler.idle_close_seconds
        return sealed, active

    # -- stage 2: models -----------------------------------------------------------------------------
    def _models_assigned(self, tps) -> None:
        # The leader of a kafka-python group rejoins whenever its metadata snapshot of the
        # group's topics differs from the one it assigned with. The panes and transitions
        # topics' partition counts are fixed (ensure_topics checks them at start), and in the
        # three-replica test that check kept the models group rebalancing about once a
        # second for minutes (broker log: "Leader ... re-joining group during Stable"), so
        # the leader never kept its models long enough to restore them. Forget the snapshot.
        co = getattr(self.models_consumer, "_coordinator", None)
        if co is not None and hasattr(co, "_assignment_snapshot"):
            co._assignment_snapshot = None
        panes = [tp for tp in tps if tp.topic == self.topics.panes]
        self._models_to_restore |= {tp.partition for tp in panes}
        if panes:
            self.models_consumer.pause(*panes)  # read only once the models are restored
        delivery = sorted(tp.partition for tp in tps if tp.topic == self.topics.transitions)
        if delivery:
            log.info("delivering the notifications of transitions partitions %s", delivery)
            self._rewind |= set(delivery)

    def _models_revoked(self, tps) -> None:
        with self.lock:
            self._release_models(tps)

    def _release_models(self, tps) -> None:
        for tp in tps:
            part = tp.partition
            if tp.topic == self.topics.transitions:
                self._delivery_marks.pop(part, None)
                self._delivery_committed.pop(part, None)
                self._delivered_through.pop(part, None)
                self._rebuild_until.pop(part, None)
                self._rewind.discard(part)
                continue
            self._models_to_restore.discard(part)
            self.owned_panes.discard(part)
            self.panes_positions.pop(part, None)
            self._panes_written.pop(part, None)
            for name in self._models_of(part):
                self.stage.release(name)
                self.model_writer and self.model_writer.forget(f"model/{name}")
                for key in [k for k in list(self._local) if k[0] == name]:
                    self._local.discard(key)
                    self._local_dirty.discard(key)
                # panes merged directly went with the released stage: merge them again (from
                # their bytes) if the model comes back before they are published
                index = self.stage.index[name]
                for (mi, _), entries in list(self._unpublished.items()):
                    if mi == index:
                        for e in entries:
                            e[2], e[3] = (None, False) if e[3] else (e[2], False)

    def _models_of(self, part: int) -> list[str]:
        n = self.settings.model_partitions
        return [m.name for m in self.app.config.models if model_partition(m.name, n) == part]

    def _rewind_transitions(self) -> None:
        c = self.models_consumer
        for part in sorted(self._rewind):
            tp = TopicPartition(self.topics.transitions, part)
            committed = c.committed(tp) or 0
            self._rebuild_until[part] = committed
            # the delivery offset never moves back below what a previous owner committed
            self._delivered_through[part] = max(committed, self._delivered_through.get(part, 0))
            self._delivery_committed[part] = committed
            if committed:
                c.seek_to_beginning(tp)
        self._rewind.clear()

    def _restore_models(self) -> None:
        if self._rewind:
            self._rewind_transitions()
        if not self._models_to_restore:
            return
        c = self.models_consumer
        parts = sorted(self._models_to_restore)
        t0 = time.perf_counter()
        restored = read_snapshots_of(self.app._client_common(), self.topics.model_changelog, parts,
                                     timeout_seconds=self._restore_timeout(),
                                     progress=lambda done, total: self.app.metrics.state_restore_records
                                     .labels("model").set(done))
        for part in parts:
            snaps = restored[part]
            for name in self._models_of(part):
                snap = snaps.get(f"model/{name}")
                self.stage.own(name, None if snap is None else snap.data)
                if snap is not None:
                    self.model_writer.known(f"model/{name}", snap.header["chunks"])
            tp = TopicPartition(self.topics.panes, part)
            pos = snaps.get(f"panes-offset/{part}")
            if pos is not None:
                off = int(_unpack.decode(pos.data))
                c.seek(tp, off)
                self.panes_positions[part] = off
                self._panes_written[part] = off
                self.model_writer.known(f"panes-offset/{part}", pos.header["chunks"])
            else:  # never committed (a roll-back may have read past it)
                c.seek_to_beginning(tp)
            self.owned_panes.add(part)
            c.resume(tp)
        seconds = time.perf_counter() - t0
        self.app.metrics.state_restore_seconds.labels("model").observe(seconds)
        log.info("models partitions %s (%s) restored in %.2fs", parts,
                 ", ".join(n for part in parts for n in self._models_of(part)) or "no models", seconds)
        self._models_to_restore.clear()
        self.app._refresh_alert_gauges()

    def absorb(self) -> Output:
        """Take stage 1's newly sealed panes: encode each once for its record, and merge those
        of local (model, source) pairs into stage 2 directly; keep local sources' progress
        current; evaluate what that made ready. Returns what stage 2 produced."""
        with self.lock:
            return self.stage.advance() if self._absorb() else Output()

    def _absorb(self) -> bool:
        self._sync_revoked()
        pipeline = self.app.pipeline
        for key, panes in pipeline.take_sealed().items():
            entries = self._unpublished.setdefault(key, [])
            for pane in sorted(panes, key=lambda x: x.start):
                entries.append([pane.start, encode_pane(pane), pane, False])
        changed = False
        n_models = self.settings.model_partitions
        for m in pipeline.models:
            name = m.cfg.name
            if (name not in self.stage.runtimes or model_partition(name, n_models) not in self.owned_panes
                    or not m.ready):
                continue
            for p in sorted(self.restored_inputs):
                key = (name, p)
                if key not in self._local:
                    if self.stage.seq(name, p) != self._seq.get(key, 0):
                        continue  # records of this source still to merge: they come first
                    self._local.add(key)
                    self.stage.n_sources[name] = max(self.stage.n_sources[name], self.n_sources)
                todo = [e for e in self._unpublished.get((m.index, p), ()) if not e[3]]
                moved = False
                if todo:
                    layout = self.stage.runtimes[name].layout
                    panes = [e[2] if e[2] is not None else Pane.from_dict(layout, _unpack.decode(e[1])) for e in todo]
                    for e in todo:
                        e[2], e[3] = None, True  # the stage owns (and mutates) the pane now
                    self.stage.merge_local(name, p, panes, self.n_sources)
                    moved = True
                moved = self.stage.set_progress(name, p, *self._progress(m.index, p)) or moved
                if moved:
                    self._local_dirty.add(key)
                    changed = True
        return changed

    def poll(self) -> Output:
        """Stage 2 and delivery, from the poll loop: restore what was assigned, merge panes
        (this process's directly, others' from the panes topic), evaluate, feed the outbox.
        Returns what stage 2 produced."""
        now = time.monotonic()
        if now - self._stage_polled < _STAGE_POLL_SECONDS:
            return Output()
        self._stage_polled = now
        c = self.models_consumer
        records = _poll_member(c, 500)
        self._restore_models()  # assignments happen inside poll()
        with self.lock:
            changed = self._absorb()
        for tp, recs in records.items():
            if tp.topic != self.topics.panes or tp.partition not in self.owned_panes:
                continue  # transitions (below), or arrived before a revoke in the same poll
            for r in recs:
                if self.stage.accept(r.value, f"{tp.topic}[{tp.partition}]@{r.offset}", r.headers, r.key) is not None:
                    changed = True
        # the consumer's position, not the last record + 1: it also steps over the
        # transaction markers that follow every committed batch of panes
        for part in self.owned_panes:
            pos = self._position(TopicPartition(self.topics.panes, part))
            if pos is not None:
                self.panes_positions[part] = pos
        out = self.stage.advance() if changed else Output()
        self._deliver({tp: recs for tp, recs in records.items() if tp.topic == self.topics.transitions})
        if self.commands is not None:
            self.commands.poll()  # new commands, and waiting ones whose alert arrived above
        return out

    # -- the checkpoint transaction --------------------------------------------------------------
    def checkpoint(self) -> tuple[float, Output, Output]:
        with self.lock:
            return self._checkpoint()

    def _checkpoint(self) -> tuple[float, Output, Output]:
        """One transaction (see the module doc); then the local copy. Returns its seconds,
        the stage-2 output it made durable, and the part of it stage 2 produced from the
        panes it took at the start (not yet returned by :meth:`poll` or :meth:`absorb`). A
        failed commit (fenced, or the broker refused) raises StateError: this process's
        state is no longer the committed one."""
        app = self.app
        t0 = time.perf_counter()
        produced = self.absorb()
        ckpt = new_checkpoint_id()
        pipeline = app.pipeline
        send = self.producer.send
        n_models = self.settings.model_partitions
        out = self.stage.drain()
        input_offsets = {tp: off for tp, off in app.positions.items() if tp[1] in self.restored_inputs}
        blobs: dict[str, bytes] = {}
        published: dict[tuple[str, int], tuple[float, bool]] = {}
        published_inputs: set[int] = set()
        direct: dict[str, list[tuple[int, tuple[float, bool], list]]] = {}
        written: dict[int, tuple] = {}
        panes_written: dict[int, int] = {}
        for part, off in self.panes_positions.items():
            if part in self.owned_panes and self._panes_written.get(part) != off:
                panes_written[part] = off
        self._advance_delivered()
        delivered = self._delivery_offsets()
        try:
            self.producer.begin_transaction()
            # stage 1: panes and progress first, then the snapshots they left behind
            for m in pipeline.models:
                name = m.cfg.name
                for p in sorted(self.restored_inputs):
                    key = (name, p)
                    entries = self._unpublished.pop((m.index, p), [])
                    status = self._progress(m.index, p)
                    if not entries and self._published.get(key) == status:
                        continue
                    if key in self._local and all(e[3] for e in entries):
                        direct.setdefault(name, []).append((p, status, entries))
                    else:
                        self._send_panes(name, p, entries, status)
                    published[key] = status
                    published_inputs.add(p)
            # Panes merged directly need no record: the model's snapshot, in this same
            # transaction as the partitions' snapshots, holds them and the sources'
            # progress, so no one would read their records (a later owner of the model
            # restores that snapshot; a roll-back re-merges them from _unpublished, which
            # kept them until now). Unless the models listener released the model
            # meanwhile (kafka-python's IO thread): then its next owner needs the records.
            direct_snapshots: dict[str, bytes] = {}
            for name, items in direct.items():
                try:
                    for p, status, _ in items:
                        self.stage.set_progress(name, p, *status)
                    direct_snapshots[name] = self.stage.to_bytes(name)
                except KeyError:
                    for p, status, entries in items:
                        self._send_panes(name, p, entries, status)
            for p in sorted(self.restored_inputs):
                offs = tuple(sorted((t, o) for (t, pp), o in input_offsets.items() if pp == p))
                if p not in published_inputs and self._written.get(p) == offs:
                    continue
                st = pipeline.partitions.get(p) or pipeline.new_partition_state(p)
                data = st.to_bytes()
                # the seq of each model's last panes record: the next owner numbers on from it
                seqs = {name: n for (name, pp), n in list(self._seq.items()) if pp == p}
                self.partition_writer.write(f"partition/{p}", p, data, ckpt, {"offsets": dict(offs), "seq": seqs})
                blobs[f"kpartition/{p}"] = data
                blobs[f"kseq/{p}"] = _pack.encode(seqs)
                blobs[f"kckpt/{p}"] = ckpt.encode()
                written[p] = offs
            # The offsets after the records: the broker checks the group generation (KIP-447
            # fencing) when they are sent, so late in the transaction leaves a paused process
            # the least time to commit after it. Each carries the id of the checkpoint that
            # wrote its partition's snapshot: a restart trusts its local copy only when the
            # committed offsets name the copy's checkpoint (equal offsets are not enough: a
            # snapshot can change without them, e.g. its panes-record seq).
            if input_offsets:
                self._await(self.producer._transaction_manager.send_offsets_to_transaction(
                    {TopicPartition(t, p): OffsetAndMetadata(o, ckpt if p in written else self._snap_ckpt.get(p, ""), -1)
                     for (t, p), o in input_offsets.items()},
                    app.consumer.group_metadata()), "the input offsets")
            # stage 2
            # one record per model and window: a JSON array of that window's evaluations,
            # each encoded once for it and for the local copy
            encoded = [json.dumps(e.record(), sort_keys=True) for e in out.evaluations]
            windows: dict[tuple[str, float], list[str]] = defaultdict(list)
            for e, text in zip(out.evaluations, encoded, strict=True):
                windows[(e.model, e.window_end)].append(text)
            for (model, _), records in windows.items():
                send(self.topics.evaluations, key=model.encode(), partition=model_partition(model, n_models),
                     value=("[" + ", ".join(records) + "]").encode())
            by_model: dict[str, dict[str, list]] = defaultdict(lambda: {"transitions": [], "retrains": []})
            for t in out.transitions:
                by_model[t.model]["transitions"].append(encode(t))
            for r in out.retrains:
                by_model[r["model"]]["retrains"].append({"alert": encode(r["alert"]),
                                                         "labels_since_last": r["labels_since_last"]})
            for model, items in by_model.items():
                send(self.topics.transitions, key=model.encode(), partition=model_partition(model, n_models),
                     value=_pack.encode({"kind": "outputs", "version": OUTPUTS_VERSION, "model": model,
                                         "at": time.time(), **items}))
            for name, data in direct_snapshots.items():
                self.model_writer.write(f"model/{name}", model_partition(name, n_models), data, ckpt, {})
            for name in sorted(self.stage.dirty - direct_snapshots.keys()):
                if name in self.stage.runtimes:
                    self.model_writer.write(f"model/{name}", model_partition(name, n_models),
                                            self.stage.to_bytes(name), ckpt, {})
            for part, off in panes_written.items():
                self.model_writer.write(f"panes-offset/{part}", part, _pack.encode(off), ckpt, {})
            models_offsets = {**{TopicPartition(self.topics.panes, part): OffsetAndMetadata(off, "", -1)
                                 for part, off in panes_written.items()}, **delivered}
            if models_offsets:
                self._await(self.producer._transaction_manager.send_offsets_to_transaction(
                    models_offsets, self.models_consumer.group_metadata()), "the models group's offsets")
            self._await(self.producer._transaction_manager.begin_commit(), "the commit")
        except Exception as exc:
            # a fenced producer cannot abort: the broker aborts its transaction itself
            with contextlib.suppress(Exception):
                self._await(self.producer._transaction_manager.begin_abort(), "the abort")
            raise StateError(f"checkpoint transaction {ckpt} failed ({type(exc).__name__}: {exc}); this process's "
                             "state is no longer the committed one: stopping so that a restart restores it from "
                             "the changelog (a zombie whose partitions moved ends here)") from exc
        self.stage.dirty.clear()
        self._local_dirty.clear()
        for tp, om in delivered.items():
            self._delivery_committed[tp.partition] = om.offset
        self._published.update(published)
        self._written.update(written)
        self._snap_ckpt.update(dict.fromkeys(written, ckpt))
        self._panes_written.update(panes_written)
        seconds = time.perf_counter() - t0
        # the local copy: the partitions' state with their offsets (restored from it when
        # they equal the group's committed ones) and the evaluations (what `driftline`
        # commands on this volume read); models always restore from the changelog
        try:
            app.store.checkpoint(input_offsets, blobs, lambda conn: write_evaluations(conn, out.evaluations, encoded))
        except StateError as exc:  # the local copy only: the committed state is in Kafka
            log.warning("local copy of checkpoint %s not written: %s", ckpt, exc)
        return seconds, out, produced

    def _await(self, result, what: str) -> None:
        """Wait for a transactional request as KafkaProducer.send_offsets_to_transaction and
        commit_transaction do, but not forever: kafka-python retries a retriable answer
        (REBALANCE_IN_PROGRESS to the offsets while a group rebalances) without limit, and
        past the transaction timeout the broker has aborted the transaction anyway. A
        timeout raises, and the checkpoint's caller stops the process, whose restart
        restores the last commit."""
        self.producer._sender.wakeup()
        limit_ms = self.settings.transaction_timeout_ms + 5000
        if not result.wait(timeout_ms=limit_ms):  # raises the request's error if it failed
            raise StateError(f"{what}: no answer from the broker in {limit_ms / 1000:.0f} s "
                             "(state.transaction_timeout_ms + 5 s)")

    def _send_panes(self, name: str, p: int, entries: list, status: tuple[float, bool]) -> None:
        """The records of a source's newly sealed panes of a model (or its progress alone),
        numbered on from the source's last seq, into the open transaction."""
        key = (name, p)
        part = model_partition(name, self.settings.model_partitions)
        for chunk, chunk_sealed in _pane_chunks(entries, status[0], self.settings.chunk_bytes):
            seq = self._seq[key] = self._seq.get(key, 0) + 1
            self.producer.send(self.topics.panes, key=name.encode(), partition=part,
                               value=pane_message(name, p, self.n_sources, chunk, chunk_sealed, status[1], seq),
                               headers=pane_headers(p, seq))

    # -- delivery -------------------------------------------------------------------------------
    def _deliver(self, records: dict) -> None:
        """Transitions records of the model partitions this process owns -> oversight tables
        and the local outbox (deduplicated by idempotency key)."""
        app = self.app
        for tp, recs in records.items():
            for r in recs:
                msg = _unpack.decode(r.value)
                if not isinstance(msg, dict) or msg.get("kind") != "outputs" or msg.get("version") != OUTPUTS_VERSION:
                    raise StateError(f"{tp.topic}[{tp.partition}]@{r.offset}: not a version-{OUTPUTS_VERSION} "
                                     "outputs record")
                transitions = [decode_alert(b) for b in msg["transitions"]]
                retrains = [{"model": msg["model"], "alert": decode_alert(x["alert"]),
                             "labels_since_last": x["labels_since_last"]} for x in msg["retrains"]]
                rebuild = r.offset < self._rebuild_until.get(tp.partition, 0)
                with app.store.transaction() as conn:
                    app._record_outputs(conn, transitions, retrains, float(msg["at"]), notify=not rebuild)
                    top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM outbox").fetchone()[0]
                if not rebuild:
                    self._delivery_marks[tp.partition].append((r.offset + 1, top))
            app.deliverer.wake()
        if records:
            app.oversight.flush_audit()
            app._refresh_alert_gauges()
        if self._advance_delivered():
            # commit the delivery progress soon: a pod lost between a send and that commit
            # leaves its next owner to send again (same idempotency key)
            app._checkpoint_due.set()

    def _advance_delivered(self) -> bool:
        """Move each transitions partition's delivered-through offset past the records whose
        notifications all reached a final state (delivered, failed, given up). True when one
        moved (the next checkpoint commits it)."""
        row = self.app.store.read().execute("SELECT MIN(id) FROM outbox WHERE status = 'pending'").fetchone()
        first_pending = row[0] if row and row[0] is not None else float("inf")
        moved = False
        for part in self.owned_panes:
            marks = self._delivery_marks.get(part, [])
            done = [off for off, top in marks if top < first_pending]
            if done:
                marks = self._delivery_marks[part] = [(o, t) for o, t in marks if o > max(done)]
            if marks:
                off = max(done) if done else None
            else:
                # all read records are final: the consumer's position, which also steps over
                # the transaction markers after them
                off = self._position(TopicPartition(self.topics.transitions, part))
            if off is not None and off > self._delivered_through.get(part, -1):
                self._delivered_through[part] = off
                moved = True
        return moved

    def _position(self, tp: TopicPartition) -> int | None:
        state = self.models_consumer._subscription.assignment.get(tp)
        if state is None or state.position is None or state.paused:
            return None
        return state.position.offset

    def _delivery_offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        out = {}
        for part, off in self._delivered_through.items():
            if self._delivery_committed.get(part) != off:
                out[TopicPartition(self.topics.transitions, part)] = OffsetAndMetadata(off, "", -1)
        return out

    # -- stop -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self.models_consumer is not None:
            try:
                self.models_consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                log.exception("closing the models consumer failed")
        if self.producer is not None:
            try:
                self.producer.close(timeout=10)
            except Exception:  # noqa: BLE001
                log.exception("closing the transactional producer failed")


def _poll_member(c: KafkaConsumer, max_records: int) -> dict:
    """Poll a group member from the loop without holding it up. kafka-python completes a
    join only inside a poll that may wait (``timeout_ms=0`` never joins): wait a little
    while joining or rejoining, else not at all. A member left without partitions (more
    replicas than partitions) waits only every ``_IDLE_MEMBER_POLL_SECONDS``."""
    co = getattr(c, "_coordinator", None)  # need_rejoin(): a rebalance is under way
    assigned = bool(c.assignment())
    if assigned and not (co is not None and co.need_rejoin()):
        return c.poll(timeout_ms=0, max_records=max_records)
    now = time.monotonic()
    last = getattr(c, "_driftline_idle_poll", 0.0)
    if not assigned and now - last < _IDLE_MEMBER_POLL_SECONDS:
        return {}
    c._driftline_idle_poll = now
    return c.poll(timeout_ms=_JOIN_POLL_MS, max_records=max_records)


def _pane_chunks(entries: list, final_sealed: float, limit: int):
    """Split a source's sealed panes (entries ``[start, encoded bytes, ...]`` in start order)
    into records of about ``limit`` bytes; yields (encoded panes, sealed). Each record's
    ``sealed`` promises only what it and the records before it hold: the start of the next
    record's first pane (its predecessors are complete), the final cutoff on the last."""
    if not entries:
        yield [], final_sealed
        return
    chunks: list[list] = [[]]
    size = 0
    for e in entries:
        n = len(e[1])
        if chunks[-1] and size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(e)
        size += n
    for i, chunk in enumerate(chunks):
        yield [e[1] for e in chunk], (final_sealed if i == len(chunks) - 1 else chunks[i + 1][0][0])
