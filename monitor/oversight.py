"""Human oversight: the alert registry, acknowledgements, silences, model overrides and
retrain requests with their guardrails and approval lifecycle, all in the state database.

Audit outbox. Decisions the pipeline makes inside its checkpoint transaction (alert
transitions, retrain created/suppressed) must reach the audit log exactly when that
transaction commits: logging before the commit could record a transition that was rolled
back, logging after it could lose one in a crash. So they are written to an
``audit_pending`` table in the same transaction, and :meth:`Oversight.flush_audit` (called
after each checkpoint, after each API action and at start-up) moves them to the
:class:`~monitor.audit.AuditLog` in order. Each audit entry carries the row's ``ref``; a
crash between the append and the row's deletion is recognised at the next flush (the log's
last entry has that ref) and not appended twice.

Retrain lifecycle::

    pending --approve--> approved --sent--> sent
       |                    \\--gave up--> failed
       \\--reject--> rejected
    (no approval required: created directly as approved, decided_by = "policy")

Serving actions (``rollback``, ``disable``; :mod:`monitor.serving`) live in the same table
with their ``kind`` and follow the same lifecycle, with one more end state: ``dry_run``
(approved, and the exact request recorded instead of sent). Their guardrails and audit
kinds (``serving.*``) are their own; a retrain and a rollback never suppress each other.

Notification rules (:meth:`Oversight.should_notify`):

* a model under an active override: no notifications (alerts are still recorded);
* an active silence matching the alert (its id, or its model and optionally rule): none;
* an acknowledged alert: its ``resolved`` transition is still notified, but repeated
  ``firing`` notifications (re-fires of the same episode and reminders) are not; a person
  already knows it is firing, and wants to hear when it ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from monitor.audit import AuditLog
from monitor.errors import DriftlineError
from monitor.events import (
    SERVING_ACTIONS,
    AlertEvent,
    RetrainRequest,
    ServingRequest,
    decode_retrain,
    decode_serving,
    encode,
)

__all__ = [
    "Oversight",
    "OversightError",
    "NotFoundError",
    "ConflictError",
    "ensure_schema",
    "retrain_request_id",
    "serving_request_id",
    "OPEN_STATUSES",
    "REQUEST_KINDS",
]

log = logging.getLogger("driftline.oversight")

OPEN_STATUSES = ("pending", "approved")
RETRAIN_STATUSES = ("pending", "approved", "rejected", "sent", "failed", "dry_run")
#: Kinds of gated requests in the ``retrains`` table (a closed set, like audit kinds).
REQUEST_KINDS = ("retrain", *SERVING_ACTIONS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, rule TEXT NOT NULL, metric TEXT NOT NULL,
    scope TEXT NOT NULL, severity TEXT NOT NULL, state TEXT NOT NULL, seq INTEGER NOT NULL,
    started_at REAL NOT NULL, updated_at REAL NOT NULL, event BLOB NOT NULL,
    acknowledged_by TEXT, acknowledged_at REAL, ack_reason TEXT);
CREATE INDEX IF NOT EXISTS alerts_model ON alerts(model, state);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT, model TEXT, rule TEXT,
    until REAL NOT NULL, created_by TEXT NOT NULL, reason TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS overrides (
    model TEXT PRIMARY KEY, active INTEGER NOT NULL, who TEXT NOT NULL, why TEXT NOT NULL,
    since REAL NOT NULL, until REAL);
CREATE TABLE IF NOT EXISTS retrains (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, request BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT, response_status INTEGER,
    kind TEXT NOT NULL DEFAULT 'retrain');
CREATE INDEX IF NOT EXISTS retrains_model ON retrains(model, status, created_at);
CREATE TABLE IF NOT EXISTS audit_pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ref TEXT NOT NULL, kind TEXT NOT NULL,
    model TEXT, actor TEXT, data TEXT NOT NULL, at REAL NOT NULL);
"""


class OversightError(DriftlineError, ValueError):
    """An oversight action that cannot be carried out (the message says why)."""


class NotFoundError(OversightError):
    """No alert, retrain request or model with that id/name."""


class ConflictError(OversightError):
    """The action does not fit the current state (approving a rejected request, ...)."""


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the oversight tables if missing (statement by statement: executescript
    would commit the caller's transaction)."""
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    # A state database from before serving actions has no kind column: every row in it is
    # a retrain request, which is what the column's default says.
    cols = {r[1] for r in conn.execute("PRAGMA table_info(retrains)")}
    if "kind" not in cols:
        conn.execute("ALTER TABLE retrains ADD COLUMN kind TEXT NOT NULL DEFAULT 'retrain'")
    conn.execute("CREATE INDEX IF NOT EXISTS retrains_kind ON retrains(model, kind, created_at)")


def retrain_request_id(model: str, reason: str, window_start: float, window_end: float) -> str:
    """Deterministic id: a replay after a crash proposes the same request with the same id,
    and the Airflow ``dag_run_id`` derived from it stays the same."""
    raw = f"{model}\x1f{reason}\x1f{window_start:.3f}\x1f{window_end:.3f}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def serving_request_id(action: str, model: str, reason: str, window_start: float, window_end: float) -> str:
    """Deterministic id of a serving action, as :func:`retrain_request_id` (a replay
    proposes the same id, so the same alert never yields two rollbacks)."""
    raw = f"serving\x1f{action}\x1f{model}\x1f{reason}\x1f{window_start:.3f}\x1f{window_end:.3f}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def _audit_prefix(kind: str) -> str:
    return "retrain" if kind == "retrain" else "serving"


def _require_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OversightError(f"{name} is required (a non-empty string), got {value!r}")
    if len(value) > 2000:
        raise OversightError(f"{name} is too long ({len(value)} characters, at most 2000)")
    return value.strip()


class Oversight:
    """Alert registry, silences, overrides and retrain requests over one StateStore.

    Configuration arguments equal the ``[triggers]`` keys: ``cooldown_seconds`` (no new
    request for a model within this time of its last one, whatever became of it),
    ``min_new_labels`` (labelled events needed since the last retrain was sent),
    ``require_approval`` (True/False for every model; None: only high-risk models).
    """

    def __init__(
        self,
        store: Any,
        audit: AuditLog,
        *,
        cooldown_seconds: float = 86400.0,
        min_new_labels: int = 0,
        require_approval: bool | None = None,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ):
        if not cooldown_seconds >= 0:
            raise ValueError(f"triggers.cooldown_seconds must be >= 0, got {cooldown_seconds!r}")
        if not (isinstance(min_new_labels, int) and min_new_labels >= 0):
            raise ValueError(f"triggers.min_new_labels must be an integer >= 0, got {min_new_labels!r}")
        if require_approval not in (True, False, None):
            raise ValueError(f"triggers.require_approval must be true, false or unset, got {require_approval!r}")
        self.store = store
        self.audit = audit
        self.cooldown_seconds = float(cooldown_seconds)
        self.min_new_labels = min_new_labels
        self.require_approval = require_approval
        self.metrics = metrics
        self.clock = clock
        self._flush_lock = threading.Lock()
        self._quiet = False
        with store.transaction() as conn:
            ensure_schema(conn)
        self.flush_audit()

    @classmethod
    def from_config(cls, config: Any, store: Any, audit: AuditLog, metrics: Any = None) -> Oversight:
        t = config.triggers
        return cls(
            store,
            audit,
            cooldown_seconds=t.cooldown_seconds,
            min_new_labels=t.min_new_labels,
            require_approval=t.require_approval,
            metrics=metrics,
        )

    # ------------------------------------------------------------ audit outbox

    def _audit_later(
        self,
        conn: sqlite3.Connection,
        kind: str,
        data: Any,
        *,
        model: str | None = None,
        actor: str | None = None,
        ref: str | None = None,
        now: float | None = None,
    ) -> None:
        if self._quiet:
            return
        # The entry's time is the decision's wall-clock time so the log reads in order;
        # event times (windows) live in the data.
        at = self.clock()
        if now is not None and "at" not in data:
            data = {**data, "at": now}
        ref = ref or hashlib.sha256(f"{kind}\x1f{time.time_ns()}\x1f{id(conn)}".encode()).hexdigest()[:24]
        payload = json.dumps(msgspec.to_builtins(data), allow_nan=True)
        conn.execute(
            "INSERT INTO audit_pending(ref, kind, model, actor, data, at) VALUES (?,?,?,?,?,?)",
            (ref, kind, model, actor, payload, at),
        )

    @contextlib.contextmanager
    def quiet(self):
        """Rebuild tables from records already audited (a new owner replaying the transitions
        topic, state.backend = "kafka") without auditing them a second time."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def flush_audit(self) -> int:
        """Move committed audit_pending rows to the audit log, in order. Returns entries written.

        Rows are appended in id order and deleted together afterwards; after a crash in
        between, the log's last entry names (by ref) the last row that made it, and the rows
        up to it are not appended again.
        """
        with self._flush_lock:
            rows = self.store.read().execute(
                "SELECT id, ref, kind, model, actor, data, at FROM audit_pending ORDER BY id"
            ).fetchall()
            if not rows:
                return 0
            last = self.audit.last_entry
            last_ref = None if last is None else last.get("ref")
            refs = [r[1] for r in rows]
            start = 0
            if last_ref is not None and last_ref in refs:
                start = len(refs) - refs[::-1].index(last_ref)
            batch = [
                {"kind": kind, "data": json.loads(data), "model": model, "actor": actor, "ref": ref, "time": at}
                for _, ref, kind, model, actor, data, at in rows[start:]
            ]
            self.audit.append_many(batch)
            with self.store.transaction() as conn:
                conn.execute("DELETE FROM audit_pending WHERE id <= ?", (rows[-1][0],))
        return len(batch)

    def _count(self, model: str, outcome: str, kind: str = "retrain") -> None:
        if self.metrics is None:
            return
        if kind == "retrain":
            self.metrics.retrain_requests.labels(model=model, outcome=outcome).inc()
        else:
            self.metrics.serving_actions.labels(model=model, action=kind, outcome=outcome).inc()

    # ------------------------------------------------------------ alerts

    def record_transitions(self, conn: sqlite3.Connection, events: Iterable[AlertEvent]) -> None:
        """Register alert transitions inside the pipeline's checkpoint transaction.

        A new ``firing`` of an episode clears an acknowledgement of a *previous* episode
        only by being a different id; within one episode an acknowledgement stays.
        An older transition (lower seq) arriving late never overwrites a newer one.
        """
        for ev in events:
            conn.execute(
                "INSERT INTO alerts(id, model, rule, metric, scope, severity, state, seq, started_at, "
                "updated_at, event) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "state=excluded.state, seq=excluded.seq, updated_at=excluded.updated_at, "
                "event=excluded.event, severity=excluded.severity WHERE excluded.seq >= alerts.seq",
                (
                    ev.id, ev.model, ev.rule, ev.metric, ev.scope, ev.severity, ev.state, ev.seq,
                    ev.started_at, ev.window_end, encode(ev),
                ),
            )
            self._audit_later(
                conn,
                "alert.transition",
                {"alert_id": ev.id, "key": ev.key, "event": ev},
                model=ev.model,
                ref=f"alert:{ev.key}",
            )

    def _active_silence(self, conn: sqlite3.Connection, alert_id: str, model: str, rule: str, now: float):
        return conn.execute(
            "SELECT id, until, created_by, reason FROM silences WHERE until > ? AND ("
            "alert_id = ? OR (alert_id IS NULL AND model = ? AND (rule IS NULL OR rule = ?))) "
            "ORDER BY until DESC LIMIT 1",
            (now, alert_id, model, rule),
        ).fetchone()

    def _active_override(self, conn: sqlite3.Connection, model: str, now: float | None = None):
        now = self.clock() if now is None else now
        return conn.execute(
            "SELECT who, why, since FROM overrides WHERE model=? AND active=1 AND (until IS NULL OR until > ?)",
            (model, now),
        ).fetchone()

    def should_notify(self, event: AlertEvent, now: float | None = None, *, reminder: bool = False) -> bool:
        """Whether a transition (or, with ``reminder=True``, a reminder) goes to the sinks.

        See the module docstring for the rules. Reads through this thread's connection,
        so inside the checkpoint transaction it sees that transaction's writes.
        """
        now = self.clock() if now is None else now
        conn = self.store.read()
        if self._active_override(conn, event.model, now) is not None:
            return False
        if self._active_silence(conn, event.id, event.model, event.rule, now) is not None:
            return False
        if event.state == "resolved" and not reminder:
            return True
        row = conn.execute("SELECT acknowledged_at FROM alerts WHERE id=?", (event.id,)).fetchone()
        return not (row is not None and row[0] is not None)

    def _alert_row(self, row: tuple, now: float, conn: sqlite3.Connection) -> dict:
        (aid, model, rule, metric, scope, severity, state, seq, started_at, updated_at, event,
         ack_by, ack_at, ack_reason) = row
        silence = self._active_silence(conn, aid, model, rule, now) if state != "resolved" else None
        shown = state
        if state != "resolved":
            if silence is not None:
                shown = "silenced"
            elif ack_at is not None:
                shown = "acknowledged"
        ev = json.loads(bytes(event))
        return {
            "id": aid,
            "model": model,
            "rule": rule,
            "metric": metric,
            "scope": scope,
            "severity": severity,
            "state": shown,
            "raw_state": state,
            "seq": seq,
            "started_at": started_at,
            "updated_at": updated_at,
            "value": ev.get("value"),
            "threshold": ev.get("threshold"),
            "window_start": ev.get("window_start"),
            "window_end": ev.get("window_end"),
            "acknowledged": None if ack_at is None else {"by": ack_by, "at": ack_at, "reason": ack_reason},
            "silenced": None if silence is None else {"id": silence[0], "until": silence[1], "by": silence[2], "reason": silence[3]},
        }

    _ALERT_COLS = ("id, model, rule, metric, scope, severity, state, seq, started_at, updated_at, "
                   "event, acknowledged_by, acknowledged_at, ack_reason")

    def list_alerts(
        self, *, model: str | None = None, state: str | None = None, limit: int = 500, now: float | None = None
    ) -> list[dict]:
        """Alerts, newest first; ``state`` filters on the shown state (firing, acknowledged,
        silenced, resolved)."""
        now = self.clock() if now is None else now
        conn = self.store.read()
        sql = f"SELECT {self._ALERT_COLS} FROM alerts"
        args: list[Any] = []
        if model is not None:
            sql += " WHERE model=?"
            args.append(model)
        sql += " ORDER BY updated_at DESC, id"
        out = [self._alert_row(r, now, conn) for r in conn.execute(sql, args).fetchall()]
        if state is not None:
            out = [a for a in out if a["state"] == state]
        return out[:limit]

    def get_alert(self, alert_id: str, now: float | None = None) -> dict:
        now = self.clock() if now is None else now
        conn = self.store.read()
        row = conn.execute(f"SELECT {self._ALERT_COLS} FROM alerts WHERE id=?", (alert_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no alert with id {alert_id!r}")
        return self._alert_row(row, now, conn)

    def acknowledge(self, alert_id: str, who: str, reason: str = "", now: float | None = None) -> dict:
        """Acknowledge a firing alert (409 for a resolved one)."""
        who = _require_text("who", who)
        now = self.clock() if now is None else now
        with self.store.transaction() as conn:
            row = conn.execute("SELECT model, state FROM alerts WHERE id=?", (alert_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no alert with id {alert_id!r}")
            model, state = row
            if state == "resolved":
                raise ConflictError(f"alert {alert_id!r} is resolved; nothing to acknowledge")
            conn.execute(
                "UPDATE alerts SET acknowledged_by=?, acknowledged_at=?, ack_reason=? WHERE id=?",
                (who, now, reason or "", alert_id),
            )
            self._audit_later(
                conn, "alert.acknowledged", {"alert_id": alert_id, "reason": reason or ""},
                model=model, actor=who, now=now,
            )
        self.flush_audit()
        return self.get_alert(alert_id, now)

    def silence(
        self,
        *,
        who: str,
        reason: str,
        until: float,
        alert_id: str | None = None,
        model: str | None = None,
        rule: str | None = None,
        now: float | None = None,
    ) -> dict:
        """Silence one alert (``alert_id``) or a model's alerts (``model``, optionally one
        ``rule``) until ``until`` (Unix seconds, in the future)."""
        who = _require_text("who", who)
        reason = _require_text("reason", reason)
        now = self.clock() if now is None else now
        if not isinstance(until, int | float) or until <= now:
            raise OversightError(f"until must be a time in the future, got {until!r}")
        if (alert_id is None) == (model is None):
            raise OversightError("give either alert_id or model (optionally with rule), not both or neither")
        if rule is not None and model is None:
            raise OversightError("rule needs model")
        with self.store.transaction() as conn:
            if alert_id is not None:
                row = conn.execute("SELECT model FROM alerts WHERE id=?", (alert_id,)).fetchone()
                if row is None:
                    raise NotFoundError(f"no alert with id {alert_id!r}")
                audit_model = row[0]
            else:
                audit_model = model
            cur = conn.execute(
                "INSERT INTO silences(alert_id, model, rule, until, created_by, reason, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (alert_id, None if alert_id else model, rule, float(until), who, reason, now),
            )
            sid = cur.lastrowid
            self._audit_later(
                conn, "alert.silenced",
                {"silence_id": sid, "alert_id": alert_id, "rule": rule, "until": float(until), "reason": reason},
                model=audit_model, actor=who, now=now,
            )
        self.flush_audit()
        return {"id": sid, "alert_id": alert_id, "model": audit_model, "rule": rule, "until": float(until),
                "by": who, "reason": reason, "created_at": now}

    def list_silences(self, now: float | None = None, include_expired: bool = False) -> list[dict]:
        now = self.clock() if now is None else now
        sql = "SELECT id, alert_id, model, rule, until, created_by, reason, created_at FROM silences"
        args: tuple = ()
        if not include_expired:
            sql += " WHERE until > ?"
            args = (now,)
        rows = self.store.read().execute(sql + " ORDER BY id", args).fetchall()
        keys = ("id", "alert_id", "model", "rule", "until", "by", "reason", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ------------------------------------------------------------ overrides

    def override(
        self,
        model: str,
        who: str,
        why: str,
        active: bool = True,
        until: float | None = None,
        now: float | None = None,
    ) -> dict:
        """Mark a model as overridden (a person has taken over: alerts are still recorded,
        notifications and automatic retrain requests are paused), optionally until a time,
        or lift the override (``active=False``)."""
        model = _require_text("model", model)
        who = _require_text("who", who)
        why = _require_text("why", why)
        now = self.clock() if now is None else now
        if until is not None and until <= now:
            raise OversightError(f"until must be a time in the future, got {until!r}")
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO overrides(model, active, who, why, since, until) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(model) DO UPDATE SET active=excluded.active, who=excluded.who, "
                "why=excluded.why, since=excluded.since, until=excluded.until",
                (model, int(bool(active)), who, why, now, until),
            )
            self._audit_later(conn, "model.override", {"active": bool(active), "why": why, "until": until},
                              model=model, actor=who, now=now)
        self.flush_audit()
        return {"model": model, "active": bool(active), "who": who, "why": why, "since": now, "until": until}

    def overrides(self) -> dict[str, dict]:
        rows = self.store.read().execute("SELECT model, active, who, why, since, until FROM overrides").fetchall()
        return {m: {"active": bool(a), "who": w, "why": y, "since": s, "until": u} for m, a, w, y, s, u in rows}

    # ------------------------------------------------------------ retrain requests

    def needs_approval(self, high_risk: bool) -> bool:
        return bool(high_risk) if self.require_approval is None else self.require_approval

    def last_retrain_time(self, model: str, conn: sqlite3.Connection | None = None) -> float | None:
        """When the model's last retrain was sent (the start of "new labels since"), or None."""
        conn = self.store.read() if conn is None else conn
        row = conn.execute(
            "SELECT MAX(updated_at) FROM retrains WHERE model=? AND kind='retrain' AND status='sent'", (model,)
        ).fetchone()
        return row[0]

    def propose_retrain(
        self,
        conn: sqlite3.Connection,
        model: str,
        reason: str,
        window: tuple[float, float],
        evidence: dict,
        labels_since_last: int,
        high_risk: bool,
        now: float,
        *,
        model_version: str | None = None,
    ) -> RetrainRequest | None:
        """Apply the guardrails and create a request, inside the caller's transaction.

        Guardrails in order (the first that holds suppresses): the model is overridden;
        an open (pending/approved) request exists; the last request was created less than
        ``cooldown_seconds`` before ``now`` (rejected ones count: a rejection should not be
        re-asked at once); fewer than ``min_new_labels`` labelled events since the last
        retrain. Both decisions are audit-logged with the evidence. ``now`` is the
        pipeline's clock for the decision (window end or wall time, consistently).
        """
        window_start, window_end = float(window[0]), float(window[1])
        suppressed: dict | None = None
        if self._active_override(conn, model, now) is not None:
            suppressed = {"cause": "overridden"}
        if suppressed is None:
            row = conn.execute(
                "SELECT id, status FROM retrains WHERE model=? AND kind='retrain' "
                "AND status IN ('pending','approved') ORDER BY created_at DESC LIMIT 1",
                (model,),
            ).fetchone()
            if row is not None:
                suppressed = {"cause": "open_request", "open_request": row[0], "open_status": row[1]}
        if suppressed is None:
            row = conn.execute(
                "SELECT id, MAX(created_at) FROM retrains WHERE model=? AND kind='retrain'", (model,)
            ).fetchone()
            if row is not None and row[1] is not None and now - row[1] < self.cooldown_seconds:
                suppressed = {
                    "cause": "cooldown",
                    "last_request": row[0],
                    "cooldown_until": row[1] + self.cooldown_seconds,
                }
        if suppressed is None and labels_since_last < self.min_new_labels:
            suppressed = {"cause": "insufficient_labels", "labels_since_last": int(labels_since_last),
                          "min_new_labels": self.min_new_labels}
        base = {"reason": reason, "window_start": window_start, "window_end": window_end,
                "labels_since_last": int(labels_since_last), "evidence": evidence}
        if suppressed is not None:
            self._audit_later(conn, "retrain.suppressed", {**base, **suppressed}, model=model, now=now)
            self._count(model, f"suppressed_{suppressed['cause']}")
            return None
        approval = self.needs_approval(high_risk)
        req = RetrainRequest(
            id=retrain_request_id(model, reason, window_start, window_end),
            model=model,
            reason=reason,
            window_start=window_start,
            window_end=window_end,
            created_at=now,
            status="pending" if approval else "approved",
            model_version=model_version,
            evidence=evidence,
            decided_by=None if approval else "policy",
            decision_reason=None if approval else "approval not required",
        )
        cur = conn.execute(
            "INSERT OR IGNORE INTO retrains(id, model, status, created_at, updated_at, request) "
            "VALUES (?,?,?,?,?,?)",
            (req.id, model, req.status, now, now, encode(req)),
        )
        if cur.rowcount == 0:
            return None  # the same proposal replayed after a crash: already recorded
        self._audit_later(
            conn, "retrain.created",
            {**base, "request_id": req.id, "status": req.status, "requires_approval": approval,
             "high_risk": bool(high_risk), "model_version": model_version},
            model=model, ref=f"retrain:{req.id}:created", now=now,
        )
        self._count(model, "created")
        return req

    def propose_serving(
        self,
        conn: sqlite3.Connection,
        action: str,
        model: str,
        reason: str,
        window: tuple[float, float],
        evidence: dict,
        now: float,
        *,
        cooldown_seconds: float,
        require_approval: bool,
        model_version: str | None = None,
    ) -> ServingRequest | None:
        """Apply a serving action's guardrails and create its request, inside the caller's
        transaction (the ``[serving]`` settings come from :class:`monitor.serving.ServingActions`).

        Guardrails in order (the first that holds suppresses, audit-logged as
        ``serving.suppressed``): the model is overridden (a person has taken over); an open
        (pending/approved) serving request exists for the model; the model's last serving
        request, of either action and whatever became of it, was created less than
        ``cooldown_seconds`` before ``now``: what serves a model changes at most once per
        cooldown, so a flapping rule cannot bounce it between versions.
        """
        if action not in SERVING_ACTIONS:
            raise ValueError(f"action must be one of {list(SERVING_ACTIONS)}, got {action!r}")
        window_start, window_end = float(window[0]), float(window[1])
        serving = tuple(SERVING_ACTIONS)
        marks = ",".join("?" * len(serving))
        suppressed: dict | None = None
        if self._active_override(conn, model, now) is not None:
            suppressed = {"cause": "overridden"}
        if suppressed is None:
            row = conn.execute(
                f"SELECT id, status, kind FROM retrains WHERE model=? AND kind IN ({marks}) "
                "AND status IN ('pending','approved') ORDER BY created_at DESC LIMIT 1",
                (model, *serving),
            ).fetchone()
            if row is not None:
                suppressed = {"cause": "open_request", "open_request": row[0], "open_status": row[1],
                              "open_action": row[2]}
        if suppressed is None:
            row = conn.execute(
                f"SELECT id, MAX(created_at) FROM retrains WHERE model=? AND kind IN ({marks})", (model, *serving)
            ).fetchone()
            if row is not None and row[1] is not None and now - row[1] < cooldown_seconds:
                suppressed = {"cause": "cooldown", "last_request": row[0],
                              "cooldown_until": row[1] + cooldown_seconds}
        base = {"action": action, "reason": reason, "window_start": window_start, "window_end": window_end,
                "evidence": evidence}
        if suppressed is not None:
            self._audit_later(conn, "serving.suppressed", {**base, **suppressed}, model=model, now=now)
            self._count(model, f"suppressed_{suppressed['cause']}", action)
            return None
        req = ServingRequest(
            id=serving_request_id(action, model, reason, window_start, window_end),
            action=action,
            model=model,
            reason=reason,
            window_start=window_start,
            window_end=window_end,
            created_at=now,
            status="pending" if require_approval else "approved",
            model_version=model_version,
            evidence=evidence,
            decided_by=None if require_approval else "policy",
            decision_reason=None if require_approval else "approval not required",
        )
        cur = conn.execute(
            "INSERT OR IGNORE INTO retrains(id, model, status, created_at, updated_at, request, kind) "
            "VALUES (?,?,?,?,?,?,?)",
            (req.id, model, req.status, now, now, encode(req), action),
        )
        if cur.rowcount == 0:
            return None  # the same proposal replayed after a crash: already recorded
        self._audit_later(
            conn, "serving.proposed",
            {**base, "request_id": req.id, "status": req.status, "requires_approval": bool(require_approval),
             "model_version": model_version},
            model=model, ref=f"serving:{req.id}:proposed", now=now,
        )
        self._count(model, "created", action)
        return req

    def _load_request(self, conn: sqlite3.Connection, request_id: str) -> RetrainRequest:
        row = conn.execute("SELECT request, kind FROM retrains WHERE id=?", (request_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no retrain request with id {request_id!r}")
        return _decode(bytes(row[0]), row[1])

    def _save_request(self, conn: sqlite3.Connection, req: RetrainRequest, now: float, **cols: Any) -> None:
        sets = ", ".join(f"{k}=?" for k in cols)
        conn.execute(
            f"UPDATE retrains SET status=?, updated_at=?, request=?{', ' + sets if sets else ''} WHERE id=?",
            (req.status, now, encode(req), *cols.values(), req.id),
        )

    def _decide(self, request_id: str, who: str, reason: str, status: str, now: float | None) -> RetrainRequest:
        who = _require_text("who", who)
        reason = _require_text("reason", reason)
        now = self.clock() if now is None else now
        with self.store.transaction() as conn:
            req = self._load_request(conn, request_id)
            kind = _kind_of(req)
            if req.status != "pending":
                raise ConflictError(
                    f"{kind} request {request_id!r} is {req.status}, only a pending request can be "
                    f"{'approved' if status == 'approved' else 'rejected'}"
                )
            req.status = status
            req.decided_by = who
            req.decision_reason = reason
            self._save_request(conn, req, now, next_attempt_at=now)
            data = {"request_id": req.id, "reason": reason}
            if kind != "retrain":
                data["action"] = kind
            self._audit_later(
                conn, f"{_audit_prefix(kind)}.{status}", data, model=req.model, actor=who, now=now,
            )
        self.flush_audit()
        self._count(req.model, status, kind)
        return req

    def approve(self, request_id: str, who: str, reason: str, now: float | None = None) -> RetrainRequest:
        return self._decide(request_id, who, reason, "approved", now)

    def reject(self, request_id: str, who: str, reason: str, now: float | None = None) -> RetrainRequest:
        return self._decide(request_id, who, reason, "rejected", now)

    def _retrain_dict(self, row: tuple) -> dict:
        request, attempts, next_at, last_error, response_status, updated_at, kind = row
        d = msgspec.to_builtins(_decode(bytes(request), kind))
        d.update(kind=kind, attempts=attempts, next_attempt_at=next_at, last_error=last_error,
                 response_status=response_status, updated_at=updated_at)
        return d

    def list_retrains(
        self, *, status: str | None = None, model: str | None = None, limit: int = 500, kind: str | None = "retrain"
    ) -> list[dict]:
        """Requests, newest first. ``kind``: retrain (default, as before serving actions
        existed), rollback, disable, or None / "all" for every gated request."""
        if status is not None and status not in RETRAIN_STATUSES:
            raise OversightError(f"status must be one of {list(RETRAIN_STATUSES)}, got {status!r}")
        if kind == "all":
            kind = None
        if kind is not None and kind not in REQUEST_KINDS:
            raise OversightError(f"kind must be one of {[*REQUEST_KINDS, 'all']}, got {kind!r}")
        sql = "SELECT request, attempts, next_attempt_at, last_error, response_status, updated_at, kind FROM retrains"
        conds, args = [], []
        if kind is not None:
            conds.append("kind=?")
            args.append(kind)
        if status is not None:
            conds.append("status=?")
            args.append(status)
        if model is not None:
            conds.append("model=?")
            args.append(model)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        args.append(limit)
        return [self._retrain_dict(r) for r in self.store.read().execute(sql, args).fetchall()]

    def get_retrain(self, request_id: str) -> dict:
        row = self.store.read().execute(
            "SELECT request, attempts, next_attempt_at, last_error, response_status, updated_at, kind "
            "FROM retrains WHERE id=?", (request_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no retrain request with id {request_id!r}")
        return self._retrain_dict(row)

    # ---- used by the trigger sender

    def due_retrains(
        self, now: float, limit: int = 50, kinds: tuple[str, ...] = ("retrain",)
    ) -> list[tuple[RetrainRequest, int]]:
        """Approved requests of ``kinds`` whose next attempt is due: (request, attempts so far)."""
        marks = ",".join("?" * len(kinds))
        rows = self.store.read().execute(
            f"SELECT request, attempts, kind FROM retrains WHERE status='approved' AND kind IN ({marks}) "
            "AND next_attempt_at <= ? ORDER BY created_at, id LIMIT ?",
            (*kinds, now, limit),
        ).fetchall()
        return [(_decode(bytes(r), k), a) for r, a, k in rows]

    def record_attempt(
        self,
        request_id: str,
        *,
        outcome: str,
        target: str,
        status_code: int | None,
        response_excerpt: str,
        error: str | None,
        next_attempt_at: float | None,
        now: float,
        call: dict | None = None,
    ) -> RetrainRequest:
        """Record one attempt. ``outcome``: ``sent``, ``retry`` or ``failed``; for a serving
        action also ``dry_run`` (nothing was sent). ``call``: the request as sent (secrets
        masked), recorded in the audit entry."""
        if outcome not in ("sent", "retry", "failed", "dry_run"):
            raise ValueError(f"outcome must be sent, retry, failed or dry_run, got {outcome!r}")
        with self.store.transaction() as conn:
            req = self._load_request(conn, request_id)
            kind = _kind_of(req)
            if req.status != "approved":
                raise ConflictError(f"{kind} request {request_id!r} is {req.status}, not approved")
            if outcome == "dry_run" and kind == "retrain":
                raise ValueError("dry_run is an outcome of serving actions only")
            if outcome != "retry":
                req.status = outcome
            attempts = conn.execute("SELECT attempts FROM retrains WHERE id=?", (request_id,)).fetchone()[0] + 1
            self._save_request(
                conn, req, now, attempts=attempts,
                next_attempt_at=next_attempt_at if next_attempt_at is not None else now,
                last_error=error, response_status=status_code,
            )
            prefix = "trigger" if kind == "retrain" else "serving"
            audit_kind = {"retry": f"{prefix}.attempt_failed"}.get(outcome, f"{prefix}.{outcome}")
            data = {"request_id": req.id, "target": target, "attempt": attempts, "status_code": status_code,
                    "response": response_excerpt, "error": error, "next_attempt_at": next_attempt_at}
            if kind != "retrain":
                data["action"] = kind
            if call is not None:
                data["request"] = call
            self._audit_later(conn, audit_kind, data, model=req.model, now=now)
        self.flush_audit()
        if outcome != "retry":
            self._count(req.model, outcome, kind)
        return req


def _decode(blob: bytes, kind: str) -> RetrainRequest:
    return decode_retrain(blob) if kind == "retrain" else decode_serving(blob)


def _kind_of(req: RetrainRequest) -> str:
    return req.action if isinstance(req, ServingRequest) else "retrain"
