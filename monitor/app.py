"""``driftline run``: wires the parts together and runs the poll loop.

The loop is plain (after Quix Streams): poll a micro-batch -> decode and process per
partition -> dead-letter bad records -> advance watermarks and evaluate -> checkpoint if
due. A checkpoint is ordered and documented in :meth:`App.checkpoint`: flush the
dead-letter producer -> write state, offsets, evaluations and outbox in one transaction ->
commit offsets to Kafka. SIGTERM only asks the loop to stop; it then finishes the batch
in hand, checkpoints, commits and exits 0. Periodic work (checkpoint due, idle pane close,
report purge) is scheduled by APScheduler, whose jobs only raise flags that the loop
acts on, so pipeline state is touched by one thread only.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from apscheduler.schedulers.background import BackgroundScheduler
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.audit import AuditLog
from monitor.cards import write_due_cards
from monitor.config import audit_topic
from monitor.decode import FAILURE_CODES, RecordDecoder
from monitor.errors import AuditTopicError, ConfigError, StateError
from monitor.fetcher import FetchProcess
from monitor.http import report_link
from monitor.ingest import ingest
from monitor.kstate import KafkaState, instance_id
from monitor.metrics import Metrics
from monitor.outbox import Deliverer, Outbox
from monitor.oversight import Oversight
from monitor.pipeline import Output, Pipeline
from monitor.privacy import ErasureQueue
from monitor.profiles import load_profiles
from monitor.replay import transition_record
from monitor.reports import ReportWriter
from monitor.runtime import quiet_closed_socket_reads, tune_gc
from monitor.serving.actions import ServingActions
from monitor.sinks import build_sinks
from monitor.state import StateStore, write_evaluations
from monitor.triggers.sender import RetrainSender

__all__ = ["App", "main", "kafka_security", "EVALUATIONS_SCHEMA"]

log = logging.getLogger("driftline.app")

#: With the fetch process, the App's consumer only keeps the group (heartbeats run on
#: kafka-python's own thread): polling it this often is enough, and a revocation waits
#: at most this long for its listener.
_GROUP_POLL_SECONDS = 0.1

EVALUATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    model TEXT NOT NULL, window_end REAL NOT NULL, metric TEXT NOT NULL, scope TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (model, window_end, metric, scope));
"""


def kafka_security(k) -> dict[str, Any]:
    """kafka-python client settings for TLS and SASL from ``[kafka]``."""
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        out.update(ssl_check_hostname=k.ssl_check_hostname)
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(k, key):
                out[key] = getattr(k, key)
    if k.security_protocol.startswith("SASL"):
        out.update(sasl_mechanism=k.sasl_mechanism, sasl_plain_username=k.sasl_plain_username,
                   sasl_plain_password=k.sasl_plain_password)
    return out


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, app: App):
        self.app = app

    def on_partitions_revoked(self, revoked):
        self.app._on_revoked(revoked)

    def on_partitions_assigned(self, assigned):
        self.app._on_assigned(assigned)

    def on_partitions_lost(self, lost):
        self.app._on_lost(lost)


class App:
    """The daemon. ``bootstrap_servers`` and ``state_dir`` override the config (demo, tests)."""

    def __init__(self, config, *, config_source: str = "<config>", bootstrap_servers: list[str] | None = None,
                 state_dir: str | None = None, http_port: int | None = None, http_host: str | None = None,
                 registry: CollectorRegistry | None = None, profile_base: Path | None = None,
                 consumer_overrides: dict[str, Any] | None = None, on_output=None):
        self.config = config
        self.bootstrap = list(bootstrap_servers or config.kafka.bootstrap_servers)
        if not self.bootstrap:
            raise ConfigError("kafka.bootstrap_servers is empty: `driftline run` needs a broker "
                              "(`driftline demo` starts an embedded one)", key="kafka.bootstrap_servers")
        self.metrics = Metrics(registry)
        self.metrics.build_info.info({"version": _version()})
        self.store = StateStore(state_dir or config.state.dir)
        with self.store.transaction() as conn:
            conn.execute(EVALUATIONS_SCHEMA.strip().rstrip(";"))
        audit_path = config.audit.path if state_dir is None else str(Path(state_dir) / "audit.jsonl")
        self.audit = self._topic_audit() if audit_topic(config) else AuditLog(
            audit_path, payload_retention_days=config.audit.payload_retention_days)
        self.audit.config_loaded(config, config_source)
        self.oversight = Oversight.from_config(config, self.store, self.audit, self.metrics)
        self.outbox = Outbox(self.store, build_sinks(config, bootstrap_servers=self.bootstrap),
                             group_by_model=config.alerting.group_by_model,
                             reminder_filter=lambda ev, now: self.oversight.should_notify(ev, now, reminder=True))
        d = config.delivery
        self.deliverer = Deliverer(self.outbox, metrics=self.metrics, max_attempts=d.max_attempts,
                                   backoff_initial_seconds=d.backoff_initial_seconds,
                                   backoff_max_seconds=d.backoff_max_seconds,
                                   poll_interval_seconds=d.poll_interval_seconds,
                                   on_outcome=self._audit_delivery)
        self.retrain_sender = RetrainSender.from_config(config, self.oversight)
        self.serving = ServingActions.from_config(config, self.oversight)  # rollback / disable actions
        self.profiles = load_profiles(config, profile_base)
        for name, prof in self.profiles.items():
            if prof is not None:
                raw = json.dumps(prof.to_dict(), sort_keys=True).encode()
                import hashlib

                self.audit.reference_version(name, f"v{prof.version}", config.model(name).reference,
                                             hashlib.sha256(raw).hexdigest())
        kafka_backend = config.state.backend == "kafka"
        self.pipeline = Pipeline(config, self.profiles, self.metrics, reports=config.reports.enabled,
                                 stage2=not kafka_backend)
        # state.backend = "kafka": stage 2, the changelogs and the transaction (monitor/kstate.py)
        self.kstate: KafkaState | None = KafkaState(self) if kafka_backend else None
        self.commands = None  # kafka backend: the oversight command bus (started in run())
        self._zero_series()
        self.reports = ReportWriter.from_config(config)
        # Evidently takes seconds per report: never on the poll loop
        self.report_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-report")
        if self.kstate is None:
            self.pipeline.restore_models(self.store.blobs("model/"))
        self._refresh_alert_gauges()  # alerts still firing in the restored state
        self.decoder = RecordDecoder(config.fields, config.models)
        self.consumer_overrides = consumer_overrides or {}
        self.on_output = on_output
        self.http_host = http_host if http_host is not None else config.http.host
        self.http_port = http_port if http_port is not None else config.http.port
        self.http = None
        self._emitted_keys: set[str] = set()  # transitions emitted since the last checkpoint
        self._stop = threading.Event()
        self._checkpoint_due = threading.Event()
        self._idle_due = threading.Event()
        self.erasures = ErasureQueue(self)  # POST /api/erasures, applied between batches
        self.positions: dict[tuple[str, int], int] = {}
        self.assigned: set[TopicPartition] = set()
        self._group_joined = False  # the input group gave this member an assignment (maybe empty)
        self.restored = False
        self.last_poll = 0.0
        self.consumer: KafkaConsumer | None = None
        # kafka.fetch_process: records come from the fetch process; each assignment of a
        # partition gets a new epoch, and chunks of an older epoch are dropped
        self.fetcher: FetchProcess | None = None
        self._epochs: dict[TopicPartition, int] = {}
        self._epoch = 0
        self._highwater: dict[TopicPartition, int] = {}
        self._group_polled = 0.0
        self._broken = False  # the loop raised mid-batch: never checkpoint again (poll_once)
        self._closing = False
        self.producer: KafkaProducer | None = None
        self.scheduler = BackgroundScheduler(daemon=True)

    def _stage2_models(self) -> list:
        """The model runtimes this process evaluates (kafka backend: the models it owns)."""
        if self.kstate is not None:
            return [self.kstate.stage.runtimes[n] for n in sorted(self.kstate.stage.runtimes)]
        return self.pipeline.models

    def _topic_audit(self):
        """The audit trail on its Kafka topic: this process appends to its own chain
        (``instance/<transactional id>``, one writer, so a replica can never fork another's
        chain); ``driftline audit export --model`` merges the chains by time."""
        from monitor.audit_topic import TopicAuditLog, ensure_audit_topic

        a = self.config.audit
        topic = audit_topic(self.config)
        try:
            ensure_audit_topic(self._client_common(), topic, a.partitions, a.replication_factor)
        except AuditTopicError as exc:
            if self.config.state.backend != "kafka":
                raise
            raise StateError(f'state.backend = "kafka" needs Apache Kafka (transactions, compacted and '
                             f"infinite-retention topics it can check): {exc}. The embedded broker of "
                             '`driftline demo` runs with state.backend = "sqlite"') from exc
        return TopicAuditLog.standalone(self._client_common(), topic, f"instance/{instance_id(self.config)}",
                                        read_timeout_seconds=a.read_timeout_seconds)

    def _refresh_alert_gauges(self) -> None:
        for m in self._stage2_models():
            self.metrics.alerts.labels(m.cfg.name, "firing").set(len(m.policy.firing()))
        self._summaries = self._build_summaries()

    def _zero_series(self) -> None:
        """Create every bounded label combination at 0, so a query for, say, dead letters or
        failed deliveries has a series (and rate() works) before the first event happens."""
        m, t = self.metrics, self.config.topics
        for topic in [x for x in (t.predictions, t.labels) if x]:
            m.records_consumed.labels(topic)
            m.records_decoded.labels(topic)
            for code in FAILURE_CODES:
                m.dead_letters.labels(topic, code)
        for sink in self.outbox.sinks:
            for outcome in ("delivered", "retry", "failed", "gave_up"):
                m.deliveries.labels(sink, outcome)
            m.outbox_pending.labels(sink)
            m.outbox_oldest_age.labels(sink)
        for kind in ("partition", "model"):
            m.state_restore_seconds.labels(kind)
            m.state_restore_records.labels(kind)
        for model in self.config.models:
            m.late_events.labels(model.name)
            m.panes_closed.labels(model.name)
            m.joined.labels(model.name)
            for state in ("firing",):
                m.alerts.labels(model.name, state)

    # -- wiring ------------------------------------------------------------------------------
    def _client_common(self) -> dict[str, Any]:
        k = self.config.kafka
        return {"bootstrap_servers": self.bootstrap, "client_id": k.client_id, **kafka_security(k)}

    def _consumer_settings(self) -> dict[str, Any]:
        k = self.config.kafka
        settings = dict(
            group_id=k.group_id, enable_auto_commit=False, auto_offset_reset=k.auto_offset_reset,
            session_timeout_ms=k.session_timeout_ms, heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_records=k.max_poll_records, fetch_max_wait_ms=k.fetch_max_wait_ms, **self._client_common(),
        )
        settings.update(self.consumer_overrides)
        return settings

    def _make_fetcher(self) -> FetchProcess:
        """The fetch process's consumer: manual assignment, no group membership (the group_id
        only finds committed offsets), nothing committed."""
        k = self.config.kafka
        settings = self._consumer_settings()
        settings["client_id"] = f"{settings.get('client_id') or k.client_id}-fetcher"
        return FetchProcess(settings, k.max_poll_records, k.poll_timeout_ms)

    def _make_consumer(self) -> KafkaConsumer:
        c = KafkaConsumer(**self._consumer_settings())
        topics = [self.config.topics.predictions] + ([self.config.topics.labels] if self.config.topics.labels else [])
        c.subscribe(topics, listener=_Rebalance(self))
        return c

    def _start_http(self) -> None:
        from monitor.http import HttpServer
        from monitor.slack_actions import SlackActions

        h = self.config.http
        self.http = HttpServer(
            self.http_host, self.http_port, self.metrics.registry, live=self.live, ready=self.ready,
            oversight=self.oversight, api_token=h.api_token, max_body_bytes=h.max_body_bytes,
            rate_limit_per_minute=h.rate_limit_per_minute, reports_dir=self.config.reports.dir,
            models=self.model_summaries,
            on_approve=self._on_approve,
            on_erase=self.erasures.submit,
            commands=self.commands, cards_dir=self.config.cards.dir,
            slack_actions=SlackActions.from_config(self.config, self.metrics),
        )
        self.http.start()
        log.info("serving /metrics /livez /readyz /api on http://%s:%s", self.http_host, self.http.port)

    def _on_approve(self, req: dict) -> None:
        """An approved request goes out now (the scheduler retries it otherwise)."""
        if "action" in req:
            self.serving.send_due()
        elif self.retrain_sender is not None:
            self.retrain_sender.send_due()

    # -- health ------------------------------------------------------------------------------
    def live(self) -> bool:
        """The poll loop completed an iteration recently (a hung loop fails liveness)."""
        bound = max(60.0, 4 * self.config.kafka.session_timeout_ms / 1000.0)
        return self.last_poll > 0 and time.time() - self.last_poll < bound

    def ready(self) -> tuple[bool, str]:
        if not self.assigned:
            if self.kstate is not None and self._group_joined and not self.kstate.restoring():
                # more replicas than input partitions: this one serves the API (commands go
                # to the topic) and owns models, or stands by to take partitions over
                return True, f"standby: no input partitions; {len(self.kstate.stage.runtimes)} models owned"
            return False, "no partitions assigned"
        if not self.restored:
            return False, "state not restored"
        if self.kstate is not None and self.kstate.restoring():
            return False, "restoring state from the changelog"
        lag = self._lag()
        if lag > self.config.kafka.max_lag_ready:
            return False, f"lagging: {lag} records behind (max_lag_ready={self.config.kafka.max_lag_ready})"
        return True, f"{len(self.assigned)} partitions assigned, lag {lag}"

    def _lag(self) -> int:
        total = 0
        c = self.consumer
        if c is None:
            return 0
        for tp in list(self.assigned):
            hw = self._highwater.get(tp) if self.fetcher is not None else c.highwater(tp)
            pos = self.positions.get((tp.topic, tp.partition))
            if hw is not None and pos is not None:
                lag = max(0, hw - pos)
                total += lag
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        return total

    def model_summaries(self) -> list[dict[str, Any]]:
        """For /api/models: the snapshot the poll loop last published (the HTTP thread must not
        walk pipeline state while the loop changes it)."""
        return self._summaries

    def _build_summaries(self) -> list[dict[str, Any]]:
        out = []
        for m in self._stage2_models():
            out.append({"name": m.cfg.name, "task": m.cfg.task, "ready": m.ready,
                        "reference": m.cfg.reference or ("warm-up" if m.ready else f"warming up {m.warmup_n}/{m.cfg.warmup_events}"),
                        "window_events": m.window.n_predictions if m.window is not None else 0,
                        "firing": [{"rule": r, "scope": s} for r, s in m.policy.firing()]})
        return out

    # -- rebalance -----------------------------------------------------------------------------
    def _on_revoked(self, revoked) -> None:
        if not revoked:
            return
        if self.kstate is not None:
            self._drop_inputs(revoked, "revoked")
            return
        log.info("partitions revoked: %s; checkpointing", sorted((tp.topic, tp.partition) for tp in revoked))
        # kafka-python runs listeners on its IO thread, where a blocking commit is refused;
        # the state DB holds these offsets, and the next owner's commit or seek uses them
        self.checkpoint(commit=False)
        self.assigned -= set(revoked)
        keep = {tp.partition for tp in self.assigned}
        for tp in revoked:
            if tp.partition not in keep:
                self.pipeline.drop_partition(tp.partition)
            self.positions.pop((tp.topic, tp.partition), None)
            self._epochs.pop(tp, None)
        if self.fetcher is not None and not self._closing:  # a stopped fetcher reads nothing
            self.fetcher.revoke([(tp.topic, tp.partition) for tp in revoked])

    def _on_lost(self, lost) -> None:
        """The group moved on without us. Panes of the lost partitions may already be merged
        into stage 2 since the last checkpoint, and their next owner re-reads those records:
        roll the whole pipeline back to the last checkpoint (and the kept partitions to its
        offsets), so nothing is counted twice. Output since that checkpoint is recomputed."""
        if self.kstate is not None:
            self._drop_inputs(lost, "lost")
            return
        log.warning("partitions lost: %s; rolling back to the last checkpoint",
                    sorted((tp.topic, tp.partition) for tp in lost))
        self.assigned -= set(lost)
        self.pipeline = Pipeline(self.config, self.profiles, self.metrics, reports=self.config.reports.enabled)
        self.pipeline.restore_models(self.store.blobs("model/"))
        stored = self.store.offsets()
        self.positions = {}
        for tp in lost:
            self._epochs.pop(tp, None)
        if self.fetcher is not None and not self._closing:
            self.fetcher.revoke([(tp.topic, tp.partition) for tp in lost])
        starts = {}
        for tp in sorted(self.assigned, key=lambda t: (t.topic, t.partition)):
            if tp.partition not in self.pipeline.partitions:
                self.pipeline.restore_partition(tp.partition, self.store.blob(f"partition/{tp.partition}"))
            off = stored.get((tp.topic, tp.partition))
            if off is not None:
                self.positions[(tp.topic, tp.partition)] = off
            starts[tp] = off if off is not None else self.config.kafka.auto_offset_reset
        self._seek(starts)
        self.metrics.assigned_partitions.set(len(self.assigned))
        self._refresh_alert_gauges()

    def _drop_inputs(self, tps, why: str) -> None:
        """Kafka backend: a revoked or lost partition's work since the last committed
        transaction is dropped; its next owner restores that transaction's snapshot."""
        with self.kstate.lock:  # after a checkpoint under way commits (monitor.kstate)
            self._drop_inputs_locked(tps, why)

    def _drop_inputs_locked(self, tps, why: str) -> None:
        log.info("partitions %s: %s; their work since the last checkpoint is left to the next owner",
                 why, sorted((tp.topic, tp.partition) for tp in tps))
        self.kstate.inputs_revoked(tps)
        self.assigned -= set(tps)
        keep = {tp.partition for tp in self.assigned}
        for tp in tps:
            if tp.partition not in keep:
                self.pipeline.drop_partition(tp.partition)
            self.positions.pop((tp.topic, tp.partition), None)
            self._epochs.pop(tp, None)
        if self.fetcher is not None and not self._closing:
            self.fetcher.revoke([(tp.topic, tp.partition) for tp in tps])
        self.metrics.assigned_partitions.set(len(self.assigned))

    def _on_assigned(self, assigned) -> None:
        self._group_joined = True
        if self.kstate is not None:
            # restored and seeked by the poll loop (no blocking calls on this thread)
            if assigned:
                self.consumer.pause(*assigned)
            self.kstate.inputs_assigned(assigned)
            self.assigned |= set(assigned)
            self.metrics.assigned_partitions.set(len(self.assigned))
            log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
            return
        stored = self.store.offsets()
        starts = {}
        for tp in sorted(assigned, key=lambda t: (t.topic, t.partition)):
            if tp.partition not in self.pipeline.partitions:
                self.pipeline.restore_partition(tp.partition, self.store.blob(f"partition/{tp.partition}"))
            off = stored.get((tp.topic, tp.partition))
            if off is not None:
                self.positions[(tp.topic, tp.partition)] = off
            starts[tp] = off  # None: the group's committed offset, else auto_offset_reset
        if self.fetcher is not None and assigned:
            self.consumer.pause(*assigned)  # the fetch process reads them; this consumer keeps the group
        self._seek(starts)
        self.assigned |= set(assigned)
        self.restored = True
        self.metrics.assigned_partitions.set(len(self.assigned))
        log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def _seek(self, starts: dict[TopicPartition, int | str | None]) -> None:
        """Start (or restart) reading partitions at offsets, "earliest"/"latest", or None
        (where the consumer stands: the group's committed offset, else auto_offset_reset)."""
        if self.fetcher is not None:
            if self._closing:
                return  # a stopped fetcher reads nothing
            cmd = {}
            for tp, start in starts.items():
                self._epoch += 1
                self._epochs[tp] = self._epoch
                cmd[(tp.topic, tp.partition)] = (self._epoch, start)
            self.fetcher.assign(cmd)
            return
        for tp, start in starts.items():
            if isinstance(start, int):
                self.consumer.seek(tp, start)
            elif start == "earliest":
                self.consumer.seek_to_beginning(tp)
            elif start == "latest":
                self.consumer.seek_to_end(tp)

    # -- the loop ---------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def run(self, duration: float | None = None) -> int:
        """Consume until stopped (SIGTERM/SIGINT, ``request_stop`` or ``duration`` seconds)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        quiet_closed_socket_reads()
        self.producer = KafkaProducer(linger_ms=20, acks="all", **self._client_common())
        if self.config.kafka.fetch_process:
            self.fetcher = self._make_fetcher()
            self.fetcher.start()
        self.consumer = self._make_consumer()
        if self.kstate is not None:
            self.kstate.start()
            self.commands = self.kstate.start_commands()
        self._start_http()
        self.deliverer.start()
        s = self.config
        self.scheduler.add_job(self._checkpoint_due.set, "interval", seconds=s.state.checkpoint_interval_seconds, id="checkpoint")
        self.scheduler.add_job(self._idle_due.set, "interval", seconds=max(1.0, s.scheduler.idle_close_seconds / 2), id="idle-close")
        self.scheduler.add_job(self.oversight.flush_audit, "interval", seconds=5, id="audit-flush")
        if s.cards.enabled:  # model cards over each interval (monitor/cards.py)
            self.scheduler.add_job(write_due_cards, "interval", args=(self,), hours=s.cards.interval_hours, id="cards")
        if self.reports.enabled:
            self.scheduler.add_job(self.reports.purge, "interval", hours=1, id="reports-purge")
        if s.audit.payload_retention_days > 0:  # file log only (config check)
            self.scheduler.add_job(self.audit.redact, "interval", hours=1, id="audit-redact")
        if self.retrain_sender is not None:
            # approved (or approval-free) retrain requests go out with retries from here
            self.scheduler.add_job(self.retrain_sender.send_due, "interval", seconds=5, id="retrain-send")
        if self.serving.sender is not None:
            self.scheduler.add_job(self.serving.send_due, "interval", seconds=5, id="serving-send")
        self.scheduler.start()
        tune_gc()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.poll_once()
            self.checkpoint()
        finally:
            self.close()
        return 0

    def poll_once(self) -> None:
        try:
            self._poll_once()
        except BaseException:
            # Part of a batch may be in the pipeline while its offset is not in positions:
            # that state must never be checkpointed (kafka-python's close() runs the revoke
            # listener, which would). The last checkpoint stands; a restart resumes from it.
            self._broken = True
            raise

    def _poll_once(self) -> None:
        k = self.config.kafka
        if self.fetcher is not None:
            # group membership and rebalance callbacks only (this consumer's partitions are
            # paused); it waits only while a join is under way and nothing is assigned
            wait = k.poll_timeout_ms if not self.assigned else 0
            now = time.monotonic()
            if wait or now - self._group_polled >= _GROUP_POLL_SECONDS:
                self.consumer.poll(timeout_ms=wait)
                self._group_polled = now
            chunks = self.fetcher.take((k.poll_timeout_ms - wait) / 1000.0, k.max_poll_records)
        else:
            records = self.consumer.poll(timeout_ms=k.poll_timeout_ms, max_records=k.max_poll_records)
            chunks = [(tp.topic, tp.partition, None, [r.offset for r in recs], [r.value for r in recs],
                       [r.key for r in recs], None) for tp, recs in records.items()]
        if self.kstate is not None:
            self._restore_inputs()
        self.last_poll = time.time()
        self.metrics.poll_loop_heartbeat.set(self.last_poll)
        took = False
        for topic, partition, epoch, offsets, values, keys, highwater in sorted(
                chunks, key=lambda c: (c[0] != self.config.topics.predictions, c[1])):
            tp = TopicPartition(topic, partition)
            if tp not in self.assigned or (epoch is not None and self._epochs.get(tp) != epoch):
                continue  # revoked, lost or re-seeked since it was fetched
            if self.kstate is not None and partition not in self.kstate.restored_inputs:
                continue  # assigned again since it was fetched: read after the restore
            took = True
            kind = "predictions" if topic == self.config.topics.predictions else "labels"
            failures = ingest(self.pipeline, self.decoder, kind, partition, values, self.metrics, topic)
            for f in failures:
                self._dead_letter(tp, offsets[f.index], None if keys is None else keys[f.index], values[f.index],
                                  f.reason, f.code)
            self.positions[(topic, partition)] = offsets[-1] + 1
            if highwater is not None:
                self._highwater[tp] = highwater
        if took:
            self._emit(self.pipeline.advance())
        if self._idle_due.is_set():
            self._idle_due.clear()
            self._emit(self.pipeline.close_idle(self.config.scheduler.idle_close_seconds))
        if self.kstate is not None:
            self._emit(self.kstate.poll())
        self.erasures.apply_pending()
        if self._checkpoint_due.is_set():
            self.checkpoint()

    def _restore_inputs(self) -> None:
        """Kafka backend: restore the partitions assigned since the last poll, then read them
        from the offsets their snapshot holds."""
        starts = self.kstate.restore_inputs(self.assigned)
        if not starts:
            return
        self._seek(starts)
        if self.fetcher is None:
            self.consumer.resume(*starts)
        self.restored = True

    def _dead_letter(self, tp: TopicPartition, offset: int, key: bytes | None, value, reason: str, code: str) -> None:
        headers = [
            ("driftline.source.topic", tp.topic.encode()),
            ("driftline.source.partition", str(tp.partition).encode()),
            ("driftline.source.offset", str(offset).encode()),
            ("driftline.error", reason.encode()[:1000]),
            ("driftline.error.code", code.encode()),
        ]
        value = value if isinstance(value, bytes) else (b"" if value is None else bytes(value))
        self.producer.send(self.config.topics.dead_letter, value=value, key=key, headers=headers)
        self.metrics.dead_letters.labels(tp.topic, code).inc()
        # the reason may quote the record's values (a bad label, timestamp or model): it stays
        # in the dead-letter header; the log names the code only (monitor.privacy)
        log.warning("dead-lettered %s[%d]@%d: %s (reason in the driftline.error header)", tp.topic, tp.partition,
                    offset, code)

    def _emit(self, out: Output) -> None:
        # After a rollback (partitions lost) the same transitions are computed again; they
        # were already counted, logged, reported and shown: keys seen since the last
        # checkpoint are skipped (the outbox dedupes its copy by key anyway).
        fresh = [t for t in out.transitions if t.key not in self._emitted_keys]
        if len(fresh) != len(out.transitions):
            ids = {t.id for t in fresh}
            out = Output(out.evaluations, fresh, [r for r in out.retrains if r["alert"].key not in self._emitted_keys],
                         [j for j in out.reports if j["alert"].id in ids])
        self._emitted_keys.update(t.key for t in fresh)
        # ``advance()`` returns only what that call produced (the pipeline also queues it for
        # the next checkpoint), so each transition is logged, counted and shown once.
        for t in out.transitions:
            self.metrics.alert_transitions.labels(t.model, t.rule, t.state).inc()
        if out.transitions:
            self._refresh_alert_gauges()
        for t in out.transitions:
            log.warning("ALERT %s %s/%s %s=%s (threshold %s) window %s..%s", t.state.upper(), t.model, t.rule,
                        t.scope, t.value, t.threshold, _iso(t.window_start), _iso(t.window_end))
        for job in out.reports:
            self.report_pool.submit(self._write_report, job)
        if self.on_output is not None:
            self.on_output(out)

    def _write_report(self, job: dict) -> None:
        try:
            import pandas as pd

            path = self.reports.write(pd.DataFrame(job["reference"]), pd.DataFrame(job["current"]),
                                      self.config.model(job["model"]), job["alert"], job.get("findings", ()))
            log.info("evidence report for alert %s: %s", job["alert"].id, path)
        except Exception:  # noqa: BLE001 - a report is evidence, never a reason to stop monitoring
            log.exception("evidence report for alert %s failed", job["alert"].id)

    # -- checkpoint --------------------------------------------------------------------------------
    def checkpoint(self, commit: bool = True) -> None:
        """flush dead letters -> one transaction (state, offsets, evaluations, outbox) -> commit."""
        self._checkpoint_due.clear()
        if self.consumer is None:
            return
        if self._broken:
            log.warning("not checkpointing: the poll loop failed part way through a batch; "
                        "the last checkpoint stands and a restart resumes from it")
            return
        if self.producer is not None:
            self.producer.flush(timeout=30)
        if self.kstate is not None:
            self._checkpoint_kafka()
            return
        out = self.pipeline.drain()
        offsets = {k: v for k, v in self.positions.items()}
        blobs = {**self.pipeline.partition_blobs(), **self.pipeline.model_blobs()}
        now = time.time()

        def extra(conn) -> None:
            write_evaluations(conn, out.evaluations)
            self._record_outputs(conn, out.transitions, out.retrains, now)

        try:
            seconds = self.store.checkpoint(offsets, blobs, extra)
        except StateError:
            log.exception("checkpoint refused")
            raise
        self.metrics.checkpoint_done(seconds)
        self._emitted_keys.clear()  # those transitions are durable now: never recomputed
        self._lag()  # refresh driftline_consumer_lag_records
        self.pipeline.update_gauges()
        self._summaries = self._build_summaries()
        self.oversight.flush_audit()
        if out.transitions:
            self.deliverer.wake()
        to_commit = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()
                     if TopicPartition(t, p) in self.assigned}
        if commit and to_commit:
            try:
                self.consumer.commit(to_commit)
            except Exception as exc:  # noqa: BLE001 - the state DB holds the truth; Kafka's is a hint
                log.warning("offset commit to Kafka failed (state is safe in the checkpoint): %s", exc)

    def _checkpoint_kafka(self) -> None:
        seconds, _, produced = self.kstate.checkpoint()
        self._emit(produced)
        self.metrics.checkpoint_done(seconds)
        self._emitted_keys.clear()
        self._lag()
        self.pipeline.update_gauges()
        self._summaries = self._build_summaries()

    def _record_outputs(self, conn, transitions, retrains, now: float, notify: bool = True) -> None:
        """Alert transitions and retrain requests into the oversight tables and the outbox
        (in the caller's state transaction). ``notify=False`` rebuilds the tables only, from
        transitions whose notifications a previous owner already handled."""
        if not notify:
            with self.oversight.quiet():
                self.oversight.record_transitions(conn, transitions)
                for r in retrains:
                    t = r["alert"]
                    self.oversight.propose_retrain(
                        conn, r["model"], f"{t.rule}: {t.metric} {t.scope} = {t.value}",
                        (t.window_start, t.window_end), {"alert": transition_record(t)}, r["labels_since_last"],
                        self.config.model(r["model"]).high_risk, t.window_end)
            return
        if transitions:
            self.oversight.record_transitions(conn, transitions)
            self.serving.propose(conn, transitions)
            notify = [self._linked(t, now) for t in transitions if self.oversight.should_notify(t, now)]
            self.outbox.enqueue(conn, notify, now=now, transitions=transitions)
        for r in retrains:
            t = r["alert"]
            cfg = self.config.model(r["model"])
            req = self.oversight.propose_retrain(
                conn, r["model"], f"{t.rule}: {t.metric} {t.scope} = {t.value}", (t.window_start, t.window_end),
                {"alert": transition_record(t)}, r["labels_since_last"], cfg.high_risk, t.window_end,
            )
            if req is not None:
                self.outbox.enqueue(conn, [req], now=now)

    def _audit_delivery(self, sink: str, n, outcome: str, error: str | None) -> None:
        """Deliveries are evidence: each final outcome goes to the audit log."""
        kind = "notification.delivered" if outcome == "delivered" else "notification.failed"
        self.audit.append(kind, {"sink": sink, "key": n.key, "kind": n.kind, "outcome": outcome,
                                 "error": error, "attempts": n.attempts + 1,
                                 "alerts": [e.key for e in n.events]}, model=n.model)
        if self.kstate is not None:
            # commit the delivery offset past it now, not at the next interval: a pod lost in
            # between leaves its next owner to send it again (same idempotency key)
            self._checkpoint_due.set()

    def _linked(self, t, now: float):
        """The notification's report link: signed and expiring when http.external_url is set
        (a browser cannot send the bearer token), else the API path."""
        path = t.details.get("report")
        if not path:
            return t
        h = self.config.http
        if h.external_url and h.api_token:
            expires = int(now + self.config.reports.retention_days * 86400)
            url = report_link(h.external_url, f"{t.id}.html", h.api_token, expires)
        else:
            url = (h.external_url.rstrip("/") + path) if h.external_url else path
        return msgspec.structs.replace(t, details={**t.details, "report_url": url})

    def close(self) -> None:
        """Stop everything, each step even when an earlier one failed (a failed step is
        logged): a dead fetch process must not leave the producer or the audit log open."""
        self._closing = True
        steps = [
            ("report pool", lambda: self.report_pool.shutdown(wait=True, cancel_futures=False)),
            # not started when run() failed early
            ("scheduler", lambda: self.scheduler.running and self.scheduler.shutdown(wait=False)),
            ("deliverer", self.deliverer.stop),
            ("HTTP server", lambda: self.http is not None and self.http.stop()),
            # before the consumer: kafka-python's close() runs the rebalance listener
            ("fetch process", lambda: self.fetcher is not None and self.fetcher.stop()),
            ("consumer", lambda: self.consumer is not None and self.consumer.close(autocommit=False)),
            ("command bus", lambda: self.commands is not None and self.commands.close()),
            ("Kafka state", lambda: self.kstate is not None and self.kstate.close()),
            ("producer", lambda: self.producer is not None and self.producer.close(timeout=10)),
            ("audit log", self.audit.close),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the remaining steps must still run
                log.exception("closing the %s failed", what)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("driftline")
    except Exception:  # noqa: BLE001
        return "0.0.0"


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the scheduler logs every job run and kafka-python every connection at INFO: noise
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck daemon waits on
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = load_config(args.config)
    try:
        app = App(config, config_source=str(args.config), profile_base=Path(args.config).resolve().parent)
        return app.run()
    except (StateError, AuditTopicError) as exc:
        # the state cannot be trusted or reached: say why and exit non-zero (a supervisor
        # restarts the process, which restores from the last committed checkpoint)
        log.error("driftline run stopped: %s", exc)
        return 1
