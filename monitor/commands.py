"""Oversight commands on a compacted Kafka topic (``state.backend = "kafka"``).

With several replicas an alert or a retrain request lives on the replica that owns its
model (the one that delivers the model's notifications and sends its triggers), while a
person's request reaches whichever replica the Service picked. So any replica's API
accepts an acknowledgement, a silence, an override, an approval or a rejection and
publishes it as a command on ``<prefix>-commands``: one partition, so every replica sees
every command in one order; compacted, keyed by operation and target, so it stays as small
as the set of standing decisions.

Every replica reads the whole topic and applies each command to its oversight tables once
the target is there. A command whose alert or request is not on this replica waits in
memory: after a hand-over the model's next owner rebuilds its tables from the transitions
topic and applies the command then. Applied command ids are kept in the local database, so
a restart on the same volume applies (and audits) none twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.changelog import ensure_topics
from monitor.errors import StateError
from monitor.oversight import NotFoundError, Oversight, OversightError

__all__ = ["CommandBus", "COMMAND_OPS", "COMMANDS_VERSION"]

log = logging.getLogger("driftline.commands")

COMMANDS_VERSION = 1
#: op -> the Oversight method that carries it out
COMMAND_OPS = ("ack", "silence", "override", "approve", "reject")

_SCHEMA = "CREATE TABLE IF NOT EXISTS commands_applied (id TEXT PRIMARY KEY, outcome TEXT NOT NULL, at REAL NOT NULL)"


class Command(msgspec.Struct, frozen=True, kw_only=True):
    kind: str = "command"
    version: int = COMMANDS_VERSION
    id: str
    op: str
    target: str  # alert id, request id, model name, or "" for a silence by model/rule
    args: dict
    who: str
    at: float


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Command)


class CommandBus:
    """Publishes oversight commands and applies the ones whose target is on this replica."""

    def __init__(self, client_settings: dict[str, Any], topic: str, oversight: Oversight, store,
                 replication_factor: int = -1, on_applied: Callable[[Command, Any], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = dict(client_settings)
        self.topic = topic
        self.oversight = oversight
        self.store = store
        self.on_applied = on_applied
        self.clock = clock
        with store.transaction() as conn:
            conn.execute(_SCHEMA)
        ensure_topics(self.settings, {topic: (1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})},
                      replication_factor)
        self.producer = KafkaProducer(acks="all", enable_idempotence=True, **self.settings)
        self.consumer = KafkaConsumer(**self.settings, group_id=None, enable_auto_commit=False,
                                      isolation_level="read_committed", auto_offset_reset="earliest")
        self._tp = TopicPartition(topic, 0)
        self.consumer.assign([self._tp])
        self.consumer.seek_to_beginning(self._tp)
        self.pending: dict[str, Command] = {}  # id -> command waiting for its target, in topic order

    # -- the API side --------------------------------------------------------------------------
    def submit(self, op: str, target: str, args: dict, who: Any) -> dict:
        """Publish a command (validated as far as this replica can: the person and the op);
        returns what the API answers (202: accepted, applied by the target's owner)."""
        if op not in COMMAND_OPS:
            raise OversightError(f"unknown command {op!r}; one of {list(COMMAND_OPS)}")
        if not isinstance(who, str) or not who.strip():
            raise OversightError(f"who is required (a non-empty string), got {who!r}")
        cmd = Command(id=uuid.uuid4().hex, op=op, target=target, args=args, who=who, at=self.clock())
        key = f"{op}/{target or args.get('model', '')}/{args.get('rule') or ''}".encode()
        try:
            self.producer.send(self.topic, key=key, value=_enc.encode(cmd), partition=0).get(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the person must hear that it did not go through
            raise StateError(f"command {op} {target!r} not published to {self.topic}: {exc}") from exc
        return {"command": cmd.id, "op": op, "target": target, "status": "accepted",
                "note": "applied by the replica that owns the model (see GET /api/alerts there)"}

    # -- the owner side ------------------------------------------------------------------------
    def poll(self) -> int:
        """Read new commands and apply what can be applied here; returns commands applied."""
        for recs in self.consumer.poll(timeout_ms=0, max_records=500).values():
            for r in recs:
                if r.value is None:
                    continue
                try:
                    cmd = _dec.decode(r.value)
                except msgspec.DecodeError as exc:
                    log.warning("%s[0]@%d: not a command (%s); skipped", self.topic, r.offset, exc)
                    continue
                if cmd.version != COMMANDS_VERSION or cmd.op not in COMMAND_OPS:
                    log.warning("%s[0]@%d: command version %s op %r not understood; skipped", self.topic,
                                r.offset, cmd.version, cmd.op)
                    continue
                self.pending[cmd.id] = cmd
        return self.apply_pending()

    def apply_pending(self) -> int:
        if not self.pending:
            return 0
        done = {row[0] for row in self.store.read().execute(
            f"SELECT id FROM commands_applied WHERE id IN ({','.join('?' * len(self.pending))})",
            list(self.pending)).fetchall()}
        applied = 0
        for cid, cmd in list(self.pending.items()):
            if cid in done:
                del self.pending[cid]
                continue
            try:
                result = self._apply(cmd)
                outcome = "applied"
            except NotFoundError:
                continue  # not on this replica (yet): the owner applies it
            except OversightError as exc:
                # refused where it applies (e.g. approving a rejected request): recorded, not retried
                log.warning("command %s %s %r by %s refused: %s", cmd.id, cmd.op, cmd.target, cmd.who, exc)
                result, outcome = None, f"refused: {exc}"
            with self.store.transaction() as conn:
                conn.execute("INSERT OR IGNORE INTO commands_applied(id, outcome, at) VALUES (?,?,?)",
                             (cid, outcome, self.clock()))
            del self.pending[cid]
            applied += outcome == "applied"
            if outcome == "applied" and self.on_applied is not None:
                self.on_applied(cmd, result)
        return applied

    def _apply(self, cmd: Command) -> Any:
        ov, a = self.oversight, cmd.args
        if cmd.op == "ack":
            return ov.acknowledge(cmd.target, cmd.who, a.get("reason") or "")
        if cmd.op == "silence":
            if cmd.target:
                return ov.silence(who=cmd.who, reason=a.get("reason"), until=a["until"], alert_id=cmd.target)
            if a.get("model") not in {m for m in self.owned_models()}:
                raise NotFoundError(f"model {a.get('model')!r} is not owned here")
            return ov.silence(who=cmd.who, reason=a.get("reason"), until=a["until"], model=a.get("model"),
                              rule=a.get("rule"))
        if cmd.op == "override":
            if cmd.target not in self.owned_models():
                raise NotFoundError(f"model {cmd.target!r} is not owned here")
            return ov.override(cmd.target, cmd.who, a.get("why"), active=a.get("active", True), until=a.get("until"))
        fn = ov.approve if cmd.op == "approve" else ov.reject
        return fn(cmd.target, cmd.who, a.get("reason"))

    #: set by the App: the models whose stage 2 this replica owns
    owned_models: Callable[[], set[str]] = staticmethod(lambda: set())

    def close(self) -> None:
        for c in (self.consumer, self.producer):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the command bus failed")
