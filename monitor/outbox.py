"""Durable outbox: alert transitions and retrain requests waiting for their sinks.

The pipeline writes notifications into the state database *in the same transaction* as
the state and offsets that produced them (:meth:`Outbox.enqueue` inside
``StateStore.checkpoint(..., extra=...)``), so a crash can never keep the state but lose
its alert, nor send an alert whose state was lost. A :class:`Deliverer` then sends each row
to its sink, with retries and capped exponential backoff with full jitter, and records
the outcome in the database, so a sink that is down (even across restarts) only delays
delivery.

Idempotency keys (the ``key`` column; sinks send it as Standard Webhooks ``webhook-id``,
CloudEvents ``id``, and in the Slack/Alertmanager payloads):

* one alert transition: ``AlertEvent.key`` = ``"<episode id>:<seq>:<state>"``; the episode id
  is a hash of model, rule, scope and start time, so a replay after a crash rebuilds it;
* transitions of one model from one evaluation, grouped (``alerting.group_by_model``):
  ``"group:<model>:<sha256 of the sorted member keys, 24 hex>"``;
* a reminder for a still-firing alert (``repeat_interval_seconds``): the transition's key
  plus ``":repeat:<n>"`` (grouped: the group formula over those member keys);
* a retrain request: ``"retrain:<request id>:<status>"``.

``UNIQUE(sink, key)`` makes re-enqueueing the same notification a no-op. Delivery is
at-least-once: a crash between a successful send and the ``delivered`` mark re-sends the
same key, which receivers de-duplicate.

Ordering: per sink, rows are delivered strictly in outbox order (``id``), and a sink is
blocked on its oldest pending row until that row is delivered or given up. So a later
transition of an alert never overtakes an earlier one for the same sink (a ``resolved``
never arrives before its ``firing``); sinks do not wait for each other.

Backoff is a small formula rather than tenacity's ``wait_random_exponential``: tenacity's
wait objects compute from a ``RetryCallState`` inside its own retry loop and draw from the
module-global RNG, while our attempts live in the database across restarts and tests
inject a seeded RNG; the formula is the same (AWS "full jitter").
"""

from __future__ import annotations

import hashlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from monitor.errors import StateError
from monitor.events import AlertEvent, RetrainRequest, decode_alert, decode_retrain, encode
from monitor.metrics import Metrics
from monitor.sinks.base import ALERT_KINDS, DeliveryOutcome, Sink
from monitor.state import StateStore

__all__ = [
    "Deliverer",
    "build_delivery",
    "Notification",
    "Outbox",
    "SinkStats",
    "backoff_delay",
    "ensure_schema",
    "group_key",
]

log = logging.getLogger("driftline.outbox")

NOTIFICATION_VERSION = 1
GROUP_PAYLOAD_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('alert', 'alert_group', 'retrain')),
    model TEXT NOT NULL,
    repeat INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    last_error TEXT,
    delivered_at REAL,
    UNIQUE (sink, key));
CREATE INDEX IF NOT EXISTS outbox_sink_status ON outbox (sink, status, id);
CREATE TABLE IF NOT EXISTS outbox_firing (
    sink TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    model TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    last_at REAL NOT NULL,
    repeats INTEGER NOT NULL,
    last_row INTEGER NOT NULL,
    PRIMARY KEY (sink, alert_id));
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the outbox tables in the state database if they are missing.

    ``outbox`` holds one row per (notification, sink); ``outbox_firing`` remembers, per
    sink, the alerts that are still firing and when each was last notified, for reminders.
    """
    # executescript would COMMIT the caller's transaction; run statement by statement.
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


class _GroupPayload(msgspec.Struct, kw_only=True):
    kind: str
    version: int
    model: str
    events: list[AlertEvent]


_group_enc = msgspec.json.Encoder()
_group_dec = msgspec.json.Decoder(_GroupPayload)


def group_key(model: str, member_keys: Iterable[str]) -> str:
    """Idempotency key of a grouped notification: stable for the same set of members.

    >>> group_key("m", ["b:1:firing", "a:1:firing"]) == group_key("m", ["a:1:firing", "b:1:firing"])
    True
    """
    digest = hashlib.sha256("\n".join(sorted(member_keys)).encode()).hexdigest()[:24]
    return f"group:{model}:{digest}"


def retrain_key(request: RetrainRequest) -> str:
    return f"retrain:{request.id}:{request.status}"


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds before retry number ``attempt`` (1 = after the first failure).

    Full jitter: uniform in [0, min(maximum, initial * 2**(attempt-1))], so many retrying
    notifications spread out instead of hitting a recovering receiver together.

    >>> rng = random.Random(0)
    >>> all(0 <= backoff_delay(a, 1.0, 30.0, rng) <= min(30.0, 2 ** (a - 1)) for a in range(1, 20))
    True
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    # Cap the exponent: 2**attempt overflows a float after ~1000 attempts (max_attempts=0).
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 60))
    return rng.uniform(0.0, ceiling)


@dataclass(frozen=True)
class Notification:
    """One outbox row as a sink sees it.

    ``kind``: ``alert`` (one transition in ``events``), ``alert_group`` (several
    transitions of one model from one evaluation, same state) or ``retrain`` (``retrain``
    set, ``events`` empty). ``repeat`` > 0 marks the n-th reminder of still-firing alerts.
    """

    id: int
    sink: str
    key: str
    kind: str
    model: str
    events: tuple[AlertEvent, ...] = ()
    retrain: RetrainRequest | None = None
    repeat: int = 0
    created_at: float = 0.0
    attempts: int = 0

    @property
    def state(self) -> str:
        """The transition's state (alerts) or the request's status (retrain)."""
        if self.retrain is not None:
            return self.retrain.status
        return self.events[0].state if self.events else ""

    def to_dict(self) -> dict:
        return {
            "kind": "notification",
            "version": NOTIFICATION_VERSION,
            "id": self.id,
            "sink": self.sink,
            "key": self.key,
            "notification_kind": self.kind,
            "model": self.model,
            "events": [msgspec.to_builtins(e) for e in self.events],
            "retrain": None if self.retrain is None else msgspec.to_builtins(self.retrain),
            "repeat": self.repeat,
            "created_at": self.created_at,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Notification:
        if d.get("kind") != "notification":
            raise ValueError(f"kind: expected 'notification', got {d.get('kind')!r}")
        if d.get("version") != NOTIFICATION_VERSION:
            raise ValueError(f"version: unsupported notification version {d.get('version')!r}")
        return cls(
            id=int(d["id"]),
            sink=str(d["sink"]),
            key=str(d["key"]),
            kind=str(d["notification_kind"]),
            model=str(d["model"]),
            events=tuple(msgspec.convert(e, AlertEvent) for e in d["events"]),
            retrain=None if d["retrain"] is None else msgspec.convert(d["retrain"], RetrainRequest),
            repeat=int(d["repeat"]),
            created_at=float(d["created_at"]),
            attempts=int(d["attempts"]),
        )


@dataclass(frozen=True)
class SinkStats:
    pending: int
    failed: int
    delivered: int
    oldest_pending_created_at: float | None


@dataclass
class _Unit:
    """One notification before it is fanned out to sinks."""

    kind: str
    model: str
    key: str
    payload: bytes
    events: list[AlertEvent] = field(default_factory=list)


def _decode_row(row: tuple) -> Notification:
    rid, sink, key, kind, model, repeat, payload, created_at, attempts = row
    payload = bytes(payload)
    if kind == "alert":
        return Notification(
            rid,
            sink,
            key,
            kind,
            model,
            (decode_alert(payload),),
            None,
            repeat,
            created_at,
            attempts,
        )
    if kind == "alert_group":
        group = _group_dec.decode(payload)
        if group.version != GROUP_PAYLOAD_VERSION:
            raise StateError(
                f"outbox row {rid}: unsupported alert_group payload version {group.version}"
            )
        return Notification(
            rid, sink, key, kind, model, tuple(group.events), None, repeat, created_at, attempts
        )
    if kind == "retrain":
        return Notification(
            rid, sink, key, kind, model, (), decode_retrain(payload), repeat, created_at, attempts
        )
    raise StateError(f"outbox row {rid}: unknown kind {kind!r}")


_ROW_COLUMNS = "id, sink, key, kind, model, repeat, payload, created_at, attempts"


class Outbox:
    """The outbox tables plus the routing of notifications to the configured sinks.

    ``sinks`` are the configured sink objects (their ``name``, ``kinds``, ``groupable``,
    ``repeat_interval_seconds`` and ``remind_states`` decide what each one receives).
    ``group_by_model`` is ``alerting.group_by_model``. ``reminder_filter(event, now)``, when
    given, is asked before each reminder (e.g. oversight: not while silenced or
    acknowledged); a refused reminder is asked again one interval later.
    """

    def __init__(
        self,
        store: StateStore,
        sinks: Sequence[Sink],
        *,
        group_by_model: bool = True,
        reminder_filter: Callable[[AlertEvent, float], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        names = [s.name for s in sinks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sinks: duplicate sink names {dupes}; each sink needs its own name")
        if any(not n for n in names):
            raise ValueError("sinks: every sink needs a non-empty name")
        self.store = store
        self.sinks: dict[str, Sink] = {s.name: s for s in sinks}
        self.group_by_model = group_by_model
        self.reminder_filter = reminder_filter
        self.clock = clock
        with store.transaction() as conn:
            ensure_schema(conn)

    # -- writing (inside the caller's transaction) -------------------------------------

    def _units(self, items: Iterable[AlertEvent | RetrainRequest], group: bool) -> list[_Unit]:
        units: list[_Unit] = []
        groups: dict[tuple[str, float, str], _Unit] = {}
        for item in items:
            if isinstance(item, RetrainRequest):
                units.append(_Unit("retrain", item.model, retrain_key(item), encode(item)))
            elif isinstance(item, AlertEvent):
                if item.actions and "notify" not in item.actions:
                    continue  # the rule asked for other actions only (e.g. retrain)
                gk = (item.model, item.window_end, item.state)
                if group and gk in groups:
                    groups[gk].events.append(item)
                    continue
                unit = _Unit("alert", item.model, item.key, b"", [item])
                units.append(unit)
                if group:
                    groups[gk] = unit
            else:
                raise TypeError(
                    f"outbox: cannot enqueue {type(item).__name__}; expected AlertEvent or RetrainRequest"
                )
        for unit in units:
            if unit.kind == "retrain":
                continue
            if len(unit.events) == 1:
                unit.payload = encode(unit.events[0])
            else:
                unit.kind = "alert_group"
                unit.key = group_key(unit.model, [e.key for e in unit.events])
                unit.payload = _group_enc.encode(
                    _GroupPayload(
                        kind="alert_group",
                        version=GROUP_PAYLOAD_VERSION,
                        model=unit.model,
                        events=unit.events,
                    )
                )
        return units

    def _insert(
        self, conn: sqlite3.Connection, sink: str, unit: _Unit, now: float, repeat: int = 0
    ) -> tuple[int, bool]:
        cur = conn.execute(
            "INSERT OR IGNORE INTO outbox (sink, key, kind, model, repeat, payload, created_at, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sink, unit.key, unit.kind, unit.model, repeat, unit.payload, now, now),
        )
        if cur.rowcount == 1:
            return int(cur.lastrowid), True
        row = conn.execute(
            "SELECT id FROM outbox WHERE sink=? AND key=?", (sink, unit.key)
        ).fetchone()
        return int(row[0]), False

    def enqueue(
        self,
        conn: sqlite3.Connection,
        notifications: Iterable[AlertEvent | RetrainRequest],
        sinks: Iterable[str] | None = None,
        *,
        now: float | None = None,
        transitions: Iterable[AlertEvent] | None = None,
    ) -> int:
        """Add notifications for delivery, inside the caller's open transaction.

        Call it from ``StateStore.checkpoint(..., extra=lambda conn: outbox.enqueue(conn,
        events))`` so the notifications commit with the state that produced them; it never
        commits by itself. ``sinks`` restricts delivery to some configured sink names
        (default: all that take the notification's kind). An AlertEvent whose ``actions``
        are set but lack ``"notify"`` is skipped. Returns the number of rows added
        (re-enqueueing an existing key adds none).

        ``transitions``: every alert transition of this checkpoint, including those the
        caller chose not to notify (silenced, acknowledged). Reminders follow the alert
        lifecycle from them, so an alert that resolved without a notification stops
        reminding; without it the notifications themselves are the lifecycle.
        """
        now = self.clock() if now is None else now
        items = list(notifications)
        targets = list(self.sinks) if sinks is None else list(sinks)
        unknown = [s for s in targets if s not in self.sinks]
        if unknown:
            raise ValueError(f"outbox: unknown sink(s) {unknown}; configured: {sorted(self.sinks)}")
        grouped = self._units(items, True) if self.group_by_model else None
        single = self._units(items, False)
        added = 0
        lifecycle = None if transitions is None else list(transitions)
        for name in targets:
            sink = self.sinks[name]
            units = grouped if (grouped is not None and sink.groupable) else single
            rows: dict[str, int | None] = {}  # transition key -> its new row (None: duplicate)
            for unit in units:
                if unit.kind not in sink.kinds and not (
                    unit.kind == "alert_group" and "alert" in sink.kinds
                ):
                    continue
                row_id, inserted = self._insert(conn, name, unit, now)
                added += inserted
                if unit.kind in ALERT_KINDS:
                    for ev in unit.events:
                        rows[ev.key] = row_id if inserted else None
            if sink.repeat_interval_seconds <= 0:
                continue
            for ev in lifecycle if lifecycle is not None else [e for u in units for e in u.events]:
                if ev.key in rows:
                    if rows[ev.key] is not None:  # a re-enqueue changes nothing
                        self._track(conn, sink, ev, rows[ev.key], now)
                elif "alert" in sink.kinds and (not ev.actions or "notify" in ev.actions):
                    self._track(
                        conn, sink, ev, None, now
                    )  # not notified, still part of the lifecycle
        return added

    def _track(
        self, conn: sqlite3.Connection, sink: Sink, ev: AlertEvent, row_id: int | None, now: float
    ) -> None:
        """Remember (or forget) a still-firing alert for this sink's reminders.

        ``row_id`` is the row that notified this transition (None: not notified)."""
        row = conn.execute(
            "SELECT seq FROM outbox_firing WHERE sink=? AND alert_id=?", (sink.name, ev.id)
        ).fetchone()
        if row is not None and row[0] > ev.seq:
            return  # an older transition arriving late must not revive or end the reminder
        if ev.state in sink.remind_states:
            conn.execute(
                "INSERT INTO outbox_firing (sink, alert_id, model, seq, event, last_at, repeats, last_row) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (sink, alert_id) DO UPDATE SET "
                "model=excluded.model, seq=excluded.seq, event=excluded.event, last_at=excluded.last_at, "
                "repeats=0, last_row=excluded.last_row",
                (sink.name, ev.id, ev.model, ev.seq, encode(ev), now, row_id or 0),
            )
        else:
            conn.execute(
                "DELETE FROM outbox_firing WHERE sink=? AND alert_id=?", (sink.name, ev.id)
            )

    def enqueue_reminders(
        self, conn: sqlite3.Connection, now: float | None = None, sinks: Iterable[str] | None = None
    ) -> int:
        """Add reminders for alerts still firing ``repeat_interval_seconds`` after their last
        notification, inside the caller's transaction. Returns rows added.

        The outbox tracks which alerts are firing from the transitions it was given (a
        ``resolved`` one ends the reminders), so callers pass no events. A reminder is
        skipped while the alert's previous notification to that sink is still pending (a
        sink that is down gets one reminder when it returns, not one per interval). Keys
        are ``<transition key>:repeat:<n>``: derived from the stored repeat count, so a
        transaction replayed after a crash produces the same keys. The Deliverer calls
        this itself before each delivery pass.
        """
        now = self.clock() if now is None else now
        added = 0
        for name in self.sinks if sinks is None else sinks:
            sink = self.sinks[name]
            interval = sink.repeat_interval_seconds
            if interval <= 0:
                continue
            due = conn.execute(
                "SELECT f.alert_id, f.model, f.event, f.repeats FROM outbox_firing f "
                "LEFT JOIN outbox o ON o.id = f.last_row "
                "WHERE f.sink=? AND f.last_at <= ? AND (o.status IS NULL OR o.status != 'pending') "
                "ORDER BY f.model, f.alert_id",
                (name, now - interval),
            ).fetchall()
            if not due:
                continue
            batches: dict[str, list[tuple[AlertEvent, int]]] = {}
            singles: list[list[tuple[AlertEvent, int]]] = []
            for alert, model, blob, repeats in due:
                entry = (decode_alert(bytes(blob)), repeats + 1)
                if self.reminder_filter is not None and not self.reminder_filter(entry[0], now):
                    conn.execute(
                        "UPDATE outbox_firing SET last_at=? WHERE sink=? AND alert_id=?",
                        (now, name, alert),
                    )
                    continue
                if self.group_by_model and sink.groupable:
                    batches.setdefault(model, []).append(entry)
                else:
                    singles.append([entry])
            for members in [*batches.values(), *singles]:
                member_keys = [f"{ev.key}:repeat:{n}" for ev, n in members]
                events = [ev for ev, _ in members]
                repeat = max(n for _, n in members)
                if len(members) == 1:
                    unit = _Unit(
                        "alert", events[0].model, member_keys[0], encode(events[0]), events
                    )
                else:
                    model = events[0].model
                    payload = _group_enc.encode(
                        _GroupPayload(
                            kind="alert_group",
                            version=GROUP_PAYLOAD_VERSION,
                            model=model,
                            events=events,
                        )
                    )
                    unit = _Unit(
                        "alert_group", model, group_key(model, member_keys), payload, events
                    )
                row_id, inserted = self._insert(conn, name, unit, now, repeat=repeat)
                added += inserted
                for ev, n in members:
                    conn.execute(
                        "UPDATE outbox_firing SET last_at=?, repeats=?, last_row=? WHERE sink=? AND alert_id=?",
                        (now, n, row_id, name, ev.id),
                    )
        return added

    # -- reading and marking (the deliverer's own transactions) ------------------------

    def next_pending(self, sink: str) -> tuple[Notification | None, float | None, int | None]:
        """The sink's oldest pending row: (notification, next_attempt_at, row id).

        The notification is None when the row cannot be decoded (the id is still given so
        the deliverer can mark it failed).
        """
        row = (
            self.store.read()
            .execute(
                f"SELECT {_ROW_COLUMNS}, next_attempt_at FROM outbox WHERE sink=? AND status='pending' "
                "ORDER BY id LIMIT 1",
                (sink,),
            )
            .fetchone()
        )
        if row is None:
            return None, None, None
        try:
            return _decode_row(row[:-1]), float(row[-1]), int(row[0])
        except (msgspec.DecodeError, msgspec.ValidationError, StateError) as exc:
            log.error("outbox row %s for sink %s cannot be decoded: %s", row[0], sink, exc)
            return None, float(row[-1]), int(row[0])

    def mark_delivered(self, row_id: int, now: float) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status='delivered', attempts=attempts+1, delivered_at=?, last_error=NULL "
                "WHERE id=? AND status='pending'",
                (now, row_id),
            )

    def mark_retry(self, row_id: int, next_attempt_at: float, error: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=? AND status='pending'",
                (next_attempt_at, error, row_id),
            )

    def mark_failed(self, row_id: int, error: str, *, attempted: bool = True) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET status='failed', attempts=attempts+?, last_error=? WHERE id=? AND status='pending'",
                (1 if attempted else 0, error, row_id),
            )

    def rows(
        self, sink: str | None = None, status: str | None = None, limit: int = 1000
    ) -> list[dict]:
        """Rows for inspection (API, CLI, tests), oldest first."""
        where, args = [], []
        if sink is not None:
            where.append("sink=?")
            args.append(sink)
        if status is not None:
            where.append("status=?")
            args.append(status)
        sql = (
            "SELECT id, sink, key, kind, model, repeat, created_at, attempts, next_attempt_at, status, "
            "last_error, delivered_at FROM outbox"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY id LIMIT ?"
        )
        cols = (
            "id",
            "sink",
            "key",
            "kind",
            "model",
            "repeat",
            "created_at",
            "attempts",
            "next_attempt_at",
            "status",
            "last_error",
            "delivered_at",
        )
        return [
            dict(zip(cols, r, strict=True)) for r in self.store.read().execute(sql, (*args, limit))
        ]

    def stats(self) -> dict[str, SinkStats]:
        """Per sink (configured ones always present): pending/failed/delivered counts and the
        creation time of the oldest pending row."""
        out = {name: SinkStats(0, 0, 0, None) for name in self.sinks}
        counts: dict[str, dict[str, int]] = {}
        for sink, status, n in self.store.read().execute(
            "SELECT sink, status, COUNT(*) FROM outbox GROUP BY sink, status"
        ):
            counts.setdefault(sink, {})[status] = n
        oldest = dict(
            self.store.read()
            .execute(
                "SELECT sink, MIN(created_at) FROM outbox WHERE status='pending' GROUP BY sink"
            )
            .fetchall()
        )
        for sink in set(counts) | set(out):
            c = counts.get(sink, {})
            out[sink] = SinkStats(
                c.get("pending", 0), c.get("failed", 0), c.get("delivered", 0), oldest.get(sink)
            )
        return out

    def update_metrics(self, metrics: Metrics, now: float | None = None) -> None:
        """Set the queue-depth and oldest-age gauges from :meth:`stats`."""
        now = self.clock() if now is None else now
        for sink, st in self.stats().items():
            metrics.outbox_pending.labels(sink=sink).set(st.pending)
            age = (
                0.0
                if st.oldest_pending_created_at is None
                else max(0.0, now - st.oldest_pending_created_at)
            )
            metrics.outbox_oldest_age.labels(sink=sink).set(age)

    def purge(self, conn: sqlite3.Connection, before: float) -> int:
        """Delete delivered and failed rows created before ``before``; returns rows deleted.

        Pending rows are never deleted, nor the row a firing alert's reminder waits on.
        Keep the retention longer than any crash-replay window: a purged key can be
        enqueued (and sent) again.
        """
        cur = conn.execute(
            "DELETE FROM outbox WHERE status != 'pending' AND created_at < ? "
            "AND id NOT IN (SELECT last_row FROM outbox_firing)",
            (before,),
        )
        return cur.rowcount


class Deliverer:
    """Sends due outbox rows to their sinks and records the outcome.

    ``run_once()`` does one pass over every sink (tests and the scheduler call it);
    ``start()`` runs one daemon thread per sink, so a slow or rate-limited sink never
    delays another; ``wake()`` after a checkpoint that enqueued something shortens the
    wait; ``stop()`` ends the threads and closes the sinks.

    Outcomes: success -> ``delivered``; retryable -> attempts+1 and next attempt after the
    receiver's Retry-After, else ``backoff_delay`` (full jitter, ``backoff_initial_seconds``
    doubling up to ``backoff_max_seconds``); permanent (e.g. a non-429 4xx) -> ``failed``,
    logged and counted, not retried; ``max_attempts`` > 0 gives up (``failed``) after that
    many attempts, 0 retries forever. Metric ``deliveries_total{sink,outcome}`` with outcome
    ``delivered``, ``retry``, ``failed``, ``gave_up``.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        metrics: Metrics | None = None,
        max_attempts: int = 0,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 300.0,
        poll_interval_seconds: float = 1.0,
        batch_size: int = 100,
        retention_seconds: float = 7 * 86400.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        on_outcome: Callable[[str, Notification, str, str | None], None] | None = None,
    ):
        if max_attempts < 0:
            raise ValueError(
                f"delivery.max_attempts must be >= 0 (0 = retry forever), got {max_attempts}"
            )
        if not backoff_initial_seconds > 0:
            raise ValueError(
                f"delivery.backoff_initial_seconds must be > 0, got {backoff_initial_seconds}"
            )
        if backoff_max_seconds < backoff_initial_seconds:
            raise ValueError(
                f"delivery.backoff_max_seconds ({backoff_max_seconds}) must be >= "
                f"backoff_initial_seconds ({backoff_initial_seconds})"
            )
        if not poll_interval_seconds > 0:
            raise ValueError(f"poll_interval_seconds must be > 0, got {poll_interval_seconds}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.outbox = outbox
        self.metrics = metrics
        self.max_attempts = max_attempts
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.batch_size = batch_size
        self.retention_seconds = retention_seconds
        self.rng = rng if rng is not None else random.Random()
        self.clock = clock if clock is not None else outbox.clock
        # final outcomes (delivered, failed, gave_up) are reported here, e.g. to the audit log
        self.on_outcome = on_outcome
        self._stop = threading.Event()
        self._wake: dict[str, threading.Event] = {name: threading.Event() for name in outbox.sinks}
        self._threads: list[threading.Thread] = []
        self._last_purge = 0.0

    # -- one pass ----------------------------------------------------------------------

    def run_once(self, now: float | None = None) -> dict[str, int]:
        """One pass over every sink: reminders, then due rows in order. Returns rows
        delivered per sink. With ``now`` given, that time is used throughout the pass."""
        done = {name: self.run_sink(name, now)[0] for name in self.outbox.sinks}
        self._maybe_purge(self.clock() if now is None else now)
        return done

    def run_sink(self, name: str, now: float | None = None) -> tuple[int, float | None]:
        """Deliver due rows of one sink, oldest first, stopping at the first row that is
        not due or must be retried. Returns (rows delivered, when the sink is next due or
        None when it has nothing pending)."""
        sink = self.outbox.sinks[name]
        fixed = now

        def now_() -> float:
            return self.clock() if fixed is None else fixed

        if sink.repeat_interval_seconds > 0:
            with self.outbox.store.transaction() as conn:
                self.outbox.enqueue_reminders(conn, now_(), sinks=[name])
        delivered = 0
        next_due: float | None = None
        for _ in range(self.batch_size):
            if self._stop.is_set():
                break
            notification, due_at, row_id = self.outbox.next_pending(name)
            if row_id is None:
                next_due = None
                break
            t = now_()
            if due_at > t:
                next_due = due_at
                break
            if notification is None:
                self.outbox.mark_failed(row_id, "payload cannot be decoded", attempted=False)
                self._count(name, "failed")
                continue
            try:
                outcome = sink.send(notification)
            except Exception as exc:  # a sink bug must not kill delivery; keep the row and retry
                log.exception("sink %s raised on outbox row %s", name, row_id)
                outcome = DeliveryOutcome.retry(f"{name}: {type(exc).__name__}: {exc}")
            t = now_()
            if outcome.ok:
                self.outbox.mark_delivered(row_id, t)
                self._count(name, "delivered")
                self._report(name, notification, "delivered", None)
                delivered += 1
                next_due = t
                continue
            error = outcome.error or "unknown error"
            attempts = notification.attempts + 1
            if not outcome.retryable:
                log.warning(
                    "sink %s: notification %s failed permanently: %s", name, notification.key, error
                )
                self.outbox.mark_failed(row_id, error)
                self._count(name, "failed")
                self._report(name, notification, "failed", error)
                next_due = t
                continue
            if self.max_attempts and attempts >= self.max_attempts:
                log.warning(
                    "sink %s: giving up on notification %s after %d attempts: %s",
                    name,
                    notification.key,
                    attempts,
                    error,
                )
                self.outbox.mark_failed(row_id, f"gave up after {attempts} attempts: {error}")
                self._count(name, "gave_up")
                self._report(name, notification, "gave_up", error)
                next_due = t
                continue
            if outcome.retry_after is not None:
                wait = outcome.retry_after
            else:
                wait = backoff_delay(
                    attempts, self.backoff_initial_seconds, self.backoff_max_seconds, self.rng
                )
            next_due = t + wait
            log.info(
                "sink %s: notification %s attempt %d failed (%s); retry in %.2fs",
                name,
                notification.key,
                attempts,
                error,
                wait,
            )
            self.outbox.mark_retry(row_id, next_due, error)
            self._count(name, "retry")
            break
        if self.metrics is not None:
            self.outbox.update_metrics(self.metrics, now_())
        return delivered, next_due

    def _report(self, sink: str, notification: Notification, outcome: str, error: str | None) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(sink, notification, outcome, error)
        except Exception:  # an audit hiccup must not stop delivery; the outbox row is the record
            log.exception("on_outcome hook failed for %s on sink %s", notification.key, sink)

    def _count(self, sink: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(sink=sink, outcome=outcome).inc()

    def _maybe_purge(self, now: float) -> None:
        if self.retention_seconds <= 0 or now - self._last_purge < 3600.0:
            return
        self._last_purge = now
        with self.outbox.store.transaction() as conn:
            n = self.outbox.purge(conn, now - self.retention_seconds)
        if n:
            log.info(
                "outbox: purged %d delivered/failed rows older than %.0fs",
                n,
                self.retention_seconds,
            )

    # -- threads -----------------------------------------------------------------------

    def start(self) -> None:
        """Start one delivery thread per sink (idempotent)."""
        if self._threads:
            return
        self._stop.clear()
        for name in self.outbox.sinks:
            t = threading.Thread(
                target=self._loop, args=(name,), name=f"driftline-deliver-{name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """Tell the threads new rows may be due (call after a checkpoint that enqueued)."""
        for ev in self._wake.values():
            ev.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads (a send in flight finishes or times out first), close sinks."""
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        for sink in self.outbox.sinks.values():
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s", sink.name)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _loop(self, name: str) -> None:
        wake = self._wake[name]
        first = next(iter(self.outbox.sinks)) == name
        while not self._stop.is_set():
            # Clear before the pass: a wake() during the pass then ends the next wait at once.
            wake.clear()
            try:
                _, next_due = self.run_sink(name)
                if first:
                    self._maybe_purge(self.clock())
            except Exception:
                log.exception("delivery loop for sink %s failed; retrying", name)
                next_due = None
            delay = self.poll_interval_seconds
            if next_due is not None:
                delay = min(delay, max(0.0, next_due - self.clock()))
            if delay > 0:
                wake.wait(delay)


def build_delivery(
    store: StateStore,
    config: Any,
    *,
    metrics: Metrics | None = None,
    sinks: Sequence[Sink] | None = None,
    bootstrap_servers: list[str] | None = None,
    reminder_filter: Callable[[AlertEvent, float], bool] | None = None,
) -> tuple[Outbox, Deliverer]:
    """The outbox and its deliverer as a loaded :class:`monitor.config.Config` describes
    them (``[alerting]``, ``[delivery]``, ``[sinks.*]``); ``sinks`` overrides the configured
    ones (tests, the demo). The deliverer is not started."""
    if sinks is None:
        from monitor.sinks import build_sinks

        sinks = build_sinks(config, bootstrap_servers=bootstrap_servers)
    d = config.delivery
    outbox = Outbox(
        store, sinks, group_by_model=config.alerting.group_by_model, reminder_filter=reminder_filter
    )
    deliverer = Deliverer(
        outbox,
        metrics=metrics,
        max_attempts=d.max_attempts,
        backoff_initial_seconds=d.backoff_initial_seconds,
        backoff_max_seconds=d.backoff_max_seconds,
        poll_interval_seconds=d.poll_interval_seconds,
    )
    return outbox, deliverer
