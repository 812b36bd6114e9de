"""Append-only, hash-chained audit log (JSON Lines) and its `audit verify` / `audit export` CLI.

Every entry carries the hash of the previous one, so any edit, deletion, insertion or
reordering breaks the chain at a precise line, and :func:`verify` names it.

Entry shape (one JSON object per line)::

    {"seq": 0, "time": "2026-11-27T16:22:08.123456Z", "kind": "config.loaded",
     "model": "credit-risk", "actor": "alice", "ref": "...", "data": {...},
     "prev_hash": "<64 hex>", "hash": "<64 hex>"}

``model``, ``actor`` and ``ref`` are present only when set. ``seq`` counts from 0 and the
first entry's ``prev_hash`` is 64 zeros.

Canonicalisation: ``hash = sha256(canonical(entry without "hash"))`` where ``canonical``
is ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` encoded as UTF-8. Each line *is* the canonical JSON of the full entry
(hash included), and :func:`verify` also requires that, so even an edit that leaves the
parsed content unchanged (an added space, a reordered key) is reported. Non-finite floats
are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no NaN).

Payload retention (``audit.payload_retention_days`` > 0): entries then also carry
``data_sha256 = sha256(canonical(data))`` and their ``hash`` is taken over the entry
*without* ``data`` (its digest stands in for it). :meth:`AuditLog.redact` later replaces the
``data`` of entries older than the retention with ``null``: seq, time, kind, model, actor,
ref and both hashes stay, so the chain still verifies, and a payload that is present must
still match its digest (an edited one is reported). A redaction is visible (``data`` is
null) and recorded by an ``audit.redacted`` entry; it cannot alter what an entry said, only
drop it. Entries written without ``data_sha256`` cannot be redacted.

Tail truncation (dropping the newest entries) leaves a valid shorter chain; no chain alone
can detect it. :meth:`AuditLog.head` gives ``(seq, hash)`` to record elsewhere, and
``verify(..., expect_head=...)`` checks the log still reaches it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import sys
import threading
import time as _time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "AuditLog",
    "AuditError",
    "VerifyResult",
    "GENESIS_HASH",
    "canonical",
    "entry_hash",
    "make_entry",
    "prepare_entries",
    "check_record",
    "select_for_export",
    "verify",
    "export",
    "main",
    "main_verify",
    "main_export",
    "KINDS",
    "KEEP_PAYLOAD",
    "data_digest",
]

GENESIS_HASH = "0" * 64

# The closed set of entry kinds the daemon writes; append() refuses others so a typo in a
# caller cannot create a kind that exports and dashboards never look for.
KINDS = frozenset(
    {
        "config.loaded",
        "reference.version",
        "alert.transition",
        "alert.acknowledged",
        "alert.silenced",
        "notification.delivered",
        "notification.failed",
        "model.override",
        "retrain.created",
        "retrain.suppressed",
        "retrain.approved",
        "retrain.rejected",
        "trigger.sent",
        "trigger.attempt_failed",
        "trigger.failed",
        "serving.proposed",
        "serving.suppressed",
        "serving.approved",
        "serving.rejected",
        "serving.sent",
        "serving.attempt_failed",
        "serving.failed",
        "serving.dry_run",
        "report.written",
        "card.written",
        "audit.tail_repaired",
        "privacy.erased",
        "audit.redacted",
    }
)

# Entries that concern every model: an export for one model includes them as context.
_GLOBAL_KINDS = frozenset({"config.loaded", "audit.tail_repaired", "privacy.erased", "audit.redacted"})

# Payloads kept whatever the retention: versions, repairs and privacy records hold no
# personal data and are the evidence of what ran and what was erased or redacted.
KEEP_PAYLOAD = frozenset({"config.loaded", "reference.version", "audit.tail_repaired", "privacy.erased",
                          "audit.redacted"})


class AuditError(ValueError):
    """The audit log cannot be opened or appended to (path and cause in the message)."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    ``entries`` counts the entries that verified before the first bad one (all of them
    when ``ok``); ``first_bad_line`` is 1-based, ``None`` when ``ok``.
    """

    ok: bool
    entries: int
    first_bad_line: int | None
    reason: str
    head_seq: int | None = None
    head_hash: str | None = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def canonical(obj: Any) -> bytes:
    """The canonical UTF-8 JSON the hash is taken over (see the module docstring)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(entry: dict) -> str:
    """sha256 hex of the canonical JSON of ``entry`` without its ``hash`` key (and without
    ``data`` when ``data_sha256`` commits to it: see payload retention above)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    if "data_sha256" in body:
        body.pop("data", None)
    return hashlib.sha256(canonical(body)).hexdigest()


def data_digest(data: Any) -> str:
    return hashlib.sha256(canonical(data)).hexdigest()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """Unix seconds from an ISO 8601 date or date-time (naive means UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def prepare_entries(entries: list[dict]) -> list[tuple]:
    """Validate and normalise :meth:`AuditLog.append_many`'s dicts (kind, data, model, actor,
    ref, time) into ``(kind, data, model, actor, ref, ts)`` tuples, before any is written:
    an unknown kind anywhere in a batch writes nothing."""
    prepared = []
    for e in entries:
        kind = e["kind"]
        if kind not in KINDS:
            raise AuditError(f"unknown audit kind {kind!r}; known: {sorted(KINDS)}")
        data = e.get("data")
        payload = _json_safe(msgspec.to_builtins(data if data is not None else {}))
        ts = e.get("time")
        prepared.append((kind, payload, e.get("model"), e.get("actor"), e.get("ref"),
                         _time.time() if ts is None else ts))
    return prepared


def make_entry(
    seq: int, prev_hash: str, kind: str, data: Any, model: str | None, actor: str | None,
    ref: str | None, ts: float, chain: str | None = None, commit_data: bool = False,
) -> dict:
    """The entry that follows ``(seq - 1, prev_hash)``, its ``hash`` computed.

    ``chain`` is set only by the Kafka audit topic (:mod:`monitor.audit_topic`), where it
    names the chain the entry belongs to and is covered by the hash like every field.
    """
    entry: dict[str, Any] = {
        "seq": seq,
        "time": _iso(ts),
        "kind": kind,
        "data": data,
        "prev_hash": prev_hash,
    }
    if chain is not None:
        entry["chain"] = chain
    if commit_data:
        entry["data_sha256"] = data_digest(data)
    if model is not None:
        entry["model"] = model
    if actor is not None:
        entry["actor"] = actor
    if ref is not None:
        entry["ref"] = ref
    entry["hash"] = entry_hash(entry)
    return entry


_REQUIRED = frozenset({"seq", "time", "kind", "data", "prev_hash", "hash"})


def check_record(
    body: bytes, seq: int, prev_hash: str, kinds: frozenset[str] | None = None
) -> tuple[dict | None, str | None]:
    """Check one stored entry (its bytes, without a line's newline) as the ``seq``-th of a
    chain whose previous hash is ``prev_hash``: ``(entry, None)`` when it is good, else
    ``(entry or None, reason)``. With ``kinds``, an entry of another kind is bad too."""
    try:
        entry = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(entry, dict):
        return None, "entry is not a JSON object"
    missing = _REQUIRED - entry.keys()
    if missing:
        return entry, f"missing fields {sorted(missing)}"
    if type(entry["seq"]) is not int or entry["seq"] != seq:  # JSON true and 1.0 equal 1 in Python
        return entry, f"seq is {entry['seq']!r}, expected {seq} (entry deleted, inserted or moved)"
    if entry["prev_hash"] != prev_hash:
        return entry, "prev_hash does not match the previous entry's hash (entry deleted, inserted or moved)"
    try:
        recomputed = entry_hash(entry)
        canon = canonical(entry)
    except ValueError as exc:
        return entry, f"entry cannot be canonicalised: {exc}"
    if recomputed != entry["hash"]:
        return entry, "hash does not match the entry's content (entry edited)"
    if "data_sha256" in entry and entry["data"] is not None and data_digest(entry["data"]) != entry["data_sha256"]:
        return entry, "data does not match data_sha256 (payload edited)"
    if canon != body:
        return entry, "line is not in canonical form (entry edited)"
    if kinds is not None and (not isinstance(entry["kind"], str) or entry["kind"] not in kinds):
        return entry, f"unknown kind {entry['kind']!r}"
    return entry, None


def select_for_export(entry: Any, model: str, since_ts: float | None, until_ts: float | None) -> bool:
    """Whether ``entry`` is evidence for ``model`` in ``[since_ts, until_ts)``: the model's
    own entries and the global ones (config loads, tail repairs)."""
    if not isinstance(entry, dict):
        return False
    if entry.get("model") != model and entry.get("kind") not in _GLOBAL_KINDS:
        return False
    try:
        ts = _entry_time(entry)
    except (KeyError, ValueError, AttributeError):
        return False
    if since_ts is not None and ts < since_ts:
        return False
    return until_ts is None or ts < until_ts


class _Recorder:
    """The typed entries the daemon records, shared by the file log and the Kafka topic."""

    # Subclasses hold ``_lock``, ``_seq``, ``_hash`` (the newest entry's), ``_last`` and
    # implement ``append_many``.

    def append_many(self, entries: list[dict]) -> list[dict]:  # pragma: no cover
        raise NotImplementedError

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest entry; ``(-1, GENESIS_HASH)`` when there is none."""
        with self._lock:
            return self._seq, self._hash

    @property
    def last_entry(self) -> dict | None:
        with self._lock:
            return None if self._last is None else dict(self._last)

    def append(
        self,
        kind: str,
        data: Any = None,
        *,
        model: str | None = None,
        actor: str | None = None,
        ref: str | None = None,
        time: float | None = None,
    ) -> dict:
        """Append one entry and return it (with its seq and hash); durability as the log's
        ``append_many`` says.

        ``data`` may hold msgspec structs, tuples and non-finite floats; it is converted to
        plain JSON. ``ref`` is a caller's idempotency reference (see Oversight's audit
        outbox). ``time`` is Unix seconds (default: now).
        """
        return self.append_many(
            [{"kind": kind, "data": data, "model": model, "actor": actor, "ref": ref, "time": time}]
        )[0]

    def config_loaded(self, config: Any, source: str) -> dict:
        """Record a config load with its hash (secrets excluded from the hash)."""
        from monitor.config import config_hash  # lazy: the audit CLI must not need it

        return self.append(
            "config.loaded",
            {"source": str(source), "config_hash": config_hash(config), "models": [m.name for m in config.models]},
        )

    def reference_version(self, model: str, version: str, source: str, sha256: str) -> dict:
        """Record which reference profile a model is compared against from now on."""
        return self.append(
            "reference.version", {"version": version, "source": str(source), "sha256": sha256}, model=model
        )


class AuditLog(_Recorder):
    """Appends hash-chained entries to one JSON Lines file.

    Thread-safe (a lock) and safe against a second process appending to the same file
    (an exclusive ``flock`` around each append; the chain head is re-read when the file
    changed under us). Each append is flushed and fsynced before it returns.

    On open the chain resumes from the last line. A last line without its newline is a
    write torn by a crash before the append returned (so no caller ever saw it): it is cut
    off and an ``audit.tail_repaired`` entry records its length and sha256.
    """

    def __init__(self, path: str | Path, payload_retention_days: float = 0.0):
        if not (isinstance(payload_retention_days, int | float) and payload_retention_days >= 0):
            raise AuditError(f"audit.payload_retention_days must be >= 0, got {payload_retention_days!r}")
        self.path = Path(path)
        # > 0: entries commit to their payload by digest, and redact() drops old payloads
        self.payload_retention_days = float(payload_retention_days)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # "a+b": create if missing, never overwrite; reads are used to resume the chain.
            self._fh = open(self.path, "a+b")  # noqa: SIM115 - held open for the log's life
        except OSError as exc:
            raise AuditError(f"audit.path {str(self.path)!r} cannot be opened: {exc}") from exc
        self._lock = threading.Lock()
        self._seq = -1
        self._hash = GENESIS_HASH
        self._last: dict | None = None
        self._size = -1
        with self._lock, self._flocked():
            self._resume()

    @contextlib.contextmanager
    def _flocked(self):
        while True:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            try:
                replaced = os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
            except FileNotFoundError:
                replaced = False  # removed under us: keep appending where we are, as before
            if not replaced:
                break
            # redact() (here or in another process) replaced the file: follow it, and make
            # the next append re-read the head
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = open(self.path, "a+b")  # noqa: SIM115 - held open for the log's life
            self._size = -1
        try:
            yield
        finally:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)

    def _read_tail(self) -> tuple[bytes, int]:
        """The last line (possibly without newline) and the file size."""
        size = os.fstat(self._fh.fileno()).st_size
        if size == 0:
            return b"", 0
        chunk = 4096
        pos = size
        buf = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            self._fh.seek(pos)
            buf = self._fh.read(step) + buf
            # Skip the final newline itself when looking for the previous line's end.
            idx = buf.rfind(b"\n", 0, len(buf) - 1)
            if idx >= 0:
                return buf[idx + 1 :], size
            chunk *= 2
        return buf, size

    def _resume(self) -> None:
        tail, size = self._read_tail()
        repaired: tuple[int, str] | None = None
        if tail and not tail.endswith(b"\n"):
            # Torn write: cut it off (it was never acknowledged to any caller).
            repaired = (len(tail), hashlib.sha256(tail).hexdigest())
            os.ftruncate(self._fh.fileno(), size - len(tail))
            os.fsync(self._fh.fileno())
            tail, size = self._read_tail()
        if tail:
            try:
                last = json.loads(tail)
                self._seq = int(last["seq"])
                self._hash = str(last["hash"])
                self._last = last
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"audit log {str(self.path)!r}: last line is not a valid entry ({exc}); "
                    "run `driftline audit verify` before appending"
                ) from exc
        else:
            self._seq, self._hash, self._last = -1, GENESIS_HASH, None
        self._size = size
        if repaired is not None:
            self._append_locked(
                "audit.tail_repaired",
                {"removed_bytes": repaired[0], "removed_sha256": repaired[1]},
                None,
                None,
                None,
                _time.time(),
            )

    @classmethod
    def from_config(cls, config: Any) -> AuditLog:
        return cls(config.audit.path)

    def append_many(self, entries: list[dict]) -> list[dict]:
        """Append several entries (dicts with :meth:`append`'s arguments) with one fsync."""
        prepared = prepare_entries(entries)
        if not prepared:
            return []
        with self._lock, self._flocked():
            size = os.fstat(self._fh.fileno()).st_size
            if size != self._size:
                # Another writer appended (or the file was replaced): pick up its head.
                self._resume()
            out = [self._append_locked(*p, sync=False) for p in prepared]
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._size = os.fstat(self._fh.fileno()).st_size
            return out

    def _append_locked(
        self, kind: str, data: Any, model: str | None, actor: str | None, ref: str | None, ts: float,
        sync: bool = True,
    ) -> dict:
        entry = make_entry(self._seq + 1, self._hash, kind, data, model, actor, ref, ts,
                           commit_data=self.payload_retention_days > 0)
        line = canonical(entry) + b"\n"
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(line)
        if sync:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._size = os.fstat(self._fh.fileno()).st_size
        self._seq = entry["seq"]
        self._hash = entry["hash"]
        self._last = entry
        return entry

    def redact(self, now: float | None = None) -> int:
        """Drop the payloads (``data`` -> null) of entries older than the payload retention,
        except :data:`KEEP_PAYLOAD` kinds; returns how many, recorded by an ``audit.redacted``
        entry. The file is rewritten to a temporary file and renamed (a crash leaves either
        version whole); the chain verifies before and after."""
        if self.payload_retention_days <= 0:
            return 0
        cutoff = (_time.time() if now is None else now) - self.payload_retention_days * 86400.0
        tmp = self.path.with_name(f".{self.path.name}.redact.tmp")
        with self._lock, self._flocked():
            self._fh.seek(0)
            n = 0
            try:
                with open(tmp, "wb") as out:  # streamed: a long log is never all in memory
                    for lineno, raw in enumerate(self._fh, start=1):
                        try:
                            entry = json.loads(raw)
                        except ValueError as exc:
                            raise AuditError(f"audit log {str(self.path)!r} line {lineno} is not JSON ({exc}): "
                                             "run `driftline audit verify`; nothing was redacted") from exc
                        if ("data_sha256" in entry and entry.get("data") is not None
                                and entry.get("kind") not in KEEP_PAYLOAD and parse_time(entry["time"]) < cutoff):
                            entry["data"] = None
                            raw = canonical(entry) + b"\n"
                            n += 1
                        out.write(raw)
                    out.flush()
                    os.fsync(out.fileno())
                if n == 0:
                    tmp.unlink()
                    return 0
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, self.path)
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
            old = self._fh
            self._fh = open(self.path, "a+b")  # noqa: SIM115 - held open for the log's life
            # the lock on the old inode is released when it closes; writers waiting on it
            # follow the rename in _flocked
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
            old.close()
            self._size = os.fstat(self._fh.fileno()).st_size
            self._append_locked("audit.redacted", {"before": _iso(cutoff), "entries": n,
                                                   "payload_retention_days": self.payload_retention_days},
                                None, None, None, _time.time())
        return n

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iter_lines(path: Path):
    with open(path, "rb") as fh:
        yield from enumerate(fh, start=1)


def verify(path: str | Path, expect_head: tuple[int, str] | None = None) -> VerifyResult:
    """Check the whole chain; report the first bad line and why.

    Detects: a changed byte anywhere (hash or canonical-form mismatch, or unparsable line),
    a deleted or inserted entry (seq gap or prev_hash mismatch), reordering (the same),
    a torn last line (no newline). With ``expect_head=(seq, hash)`` it also detects a log
    truncated before that entry.
    """
    path = Path(path)
    if not path.exists():
        return VerifyResult(False, 0, None, f"audit log {str(path)!r} does not exist")
    prev_hash = GENESIS_HASH
    count = 0
    last_seq: int | None = None
    seen_head = expect_head is None
    for lineno, raw in _iter_lines(path):

        def bad(
            reason: str, lineno: int = lineno, count: int = count, last_seq: int | None = last_seq,
            prev_hash: str = prev_hash,
        ) -> VerifyResult:
            return VerifyResult(False, count, lineno, reason, last_seq, prev_hash if count else None)

        if not raw.endswith(b"\n"):
            return bad("last line has no newline (torn or truncated write)")
        entry, reason = check_record(raw[:-1], count, prev_hash)
        if reason is not None:
            return bad(reason)
        prev_hash = entry["hash"]
        last_seq = entry["seq"]
        count += 1
        if expect_head is not None and (entry["seq"], entry["hash"]) == tuple(expect_head):
            seen_head = True
    if not seen_head:
        return VerifyResult(
            False,
            count,
            None,
            f"expected head seq={expect_head[0]} not found: the log was truncated or replaced",
            last_seq,
            prev_hash if count else None,
        )
    return VerifyResult(True, count, None, "ok", last_seq, prev_hash if count else None)


def _entry_time(entry: dict) -> float:
    return parse_time(entry["time"])


def export(
    path: str | Path,
    model: str,
    since: float | str | None = None,
    until: float | str | None = None,
) -> dict:
    """The evidence for one model: its entries (plus global ones such as config loads).

    Returns a JSON-safe document with the verification result of the whole chain, so a
    reader knows whether the entries come from an intact log. Entries keep their seq and
    hashes; they can be matched against the full log later.
    """
    since_ts = parse_time(since) if isinstance(since, str) else since
    until_ts = parse_time(until) if isinstance(until, str) else until
    result = verify(path)
    entries: list[dict] = []
    for _, raw in _iter_lines(Path(path)):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # reported by the verification result included below
        if select_for_export(entry, model, since_ts, until_ts):
            entries.append(entry)
    return {
        "kind": "driftline.audit_export",
        "version": 1,
        "model": model,
        "since": None if since_ts is None else _iso(since_ts),
        "until": None if until_ts is None else _iso(until_ts),
        "source": str(path),
        "verification": asdict(result),
        "entries": entries,
    }


# ---------------------------------------------------------------- CLI


def _load_config(path: str) -> Any:
    from monitor import config as config_mod  # lazy: the CLI must not load it for --path
    from monitor.errors import ConfigError

    try:
        return config_mod.load_config(path)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


@dataclass(frozen=True)
class _TopicSource:
    topic: str
    settings: dict
    read_timeout_seconds: float


def _log_source(ns: argparse.Namespace) -> Path | _TopicSource:
    """The file (``--path``, or the config's ``audit.path``) or the Kafka topic (``--topic``,
    or the config's ``audit.topic`` when set) that ``audit verify``/``export`` read."""
    path, config = getattr(ns, "path", None), getattr(ns, "config", None)
    topic, servers = getattr(ns, "topic", None), getattr(ns, "bootstrap_servers", None)
    if path and (topic or servers):
        raise SystemExit(
            "error: --path reads a file, --topic/--bootstrap-servers read a Kafka topic: give one"
        )
    if path:
        return Path(path)
    cfg = _load_config(config) if config else None
    if not topic and cfg is not None:
        from monitor.config import audit_topic

        topic = audit_topic(cfg) or None
    if not topic:
        if servers:
            raise SystemExit("error: --bootstrap-servers needs --topic (the Kafka audit topic)")
        if cfg is not None:
            return Path(cfg.audit.path)
        raise SystemExit(
            "error: give --path (the audit log file), --topic with --bootstrap-servers (the Kafka "
            "audit topic) or --config (its [audit] path, or topic when set)"
        )
    settings: dict[str, Any] = {}
    if cfg is not None:
        from monitor.app import kafka_security  # lazy: only the topic mode needs Kafka

        settings.update(kafka_security(cfg.kafka), client_id=cfg.kafka.client_id,
                        bootstrap_servers=list(cfg.kafka.bootstrap_servers))
    if servers:
        settings["bootstrap_servers"] = [s.strip() for s in servers.split(",") if s.strip()]
    if not settings.get("bootstrap_servers"):
        raise SystemExit(
            f"error: reading the audit topic {topic!r} needs --bootstrap-servers HOST:PORT "
            "(or kafka.bootstrap_servers in the config)"
        )
    timeout = cfg.audit.read_timeout_seconds if cfg is not None else 30.0
    return _TopicSource(topic, settings, timeout)


def _parser(prog: str, export_cmd: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--path", help="audit log file (JSON Lines)")
    src.add_argument("--config", help="config.toml; the log is its audit.topic if set, else audit.path")
    p.add_argument("--topic", help="Kafka audit topic (instead of a file)")
    p.add_argument("--bootstrap-servers", help="HOST:PORT[,HOST:PORT] of the broker holding --topic")
    if export_cmd:
        p.add_argument("--model", help="model name (with --bundle: default every model)")
        p.add_argument("--bundle", help="write an evidence bundle (index.json, index.md, entries.jsonl) into DIR")
        p.add_argument("--since", help="ISO 8601 date or date-time (UTC if no zone)")
        p.add_argument("--until", help="ISO 8601 date or date-time, exclusive")
        p.add_argument("-o", "--output", "--out", dest="output", default="-", help="output file (default: stdout)")
    else:
        p.add_argument("--expect-head", action="append",
                       help="SEQ:HASH the log must still contain; with a topic CHAIN=SEQ:HASH, repeatable")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _namespace(args: Any, prog: str, export_cmd: bool) -> argparse.Namespace:
    if isinstance(args, argparse.Namespace):
        return args
    return _parser(prog, export_cmd).parse_args(None if args is None else list(args))


def main_verify(args: argparse.Namespace | list[str] | None = None) -> int:
    """`driftline audit verify`: exit 0 when the chain is intact, 1 otherwise."""
    ns = _namespace(args, "driftline audit verify", export_cmd=False)
    source = _log_source(ns)
    if isinstance(source, _TopicSource):
        from monitor.audit_topic import main_verify_topic  # lazy: kafka only for a topic

        return main_verify_topic(ns, source.topic, source.settings, source.read_timeout_seconds)
    head = None
    given = getattr(ns, "expect_head", None)
    if isinstance(given, list):
        if len(given) > 1:
            raise SystemExit("error: a file log has one chain: give --expect-head once")
        given = given[0] if given else None
    if given:
        seq, _, h = given.partition(":")
        try:
            head = (int(seq), h)
        except ValueError:
            raise SystemExit(f"error: --expect-head must be SEQ:HASH, got {given!r}") from None
    res = verify(source, expect_head=head)
    if getattr(ns, "json", False):
        print(json.dumps(asdict(res)))
    elif res.ok:
        print(f"OK: {res.entries} entries, head seq={res.head_seq} hash={res.head_hash}")
    else:
        where = f"line {res.first_bad_line}" if res.first_bad_line else "end of log"
        print(f"FAILED at {where} (after {res.entries} good entries): {res.reason}", file=sys.stderr)
    return 0 if res.ok else 1


def main_export(args: argparse.Namespace | list[str] | None = None) -> int:
    """`driftline audit export --model M [--since ...] [-o FILE]`: exit 1 if the chain is broken."""
    ns = _namespace(args, "driftline audit export", export_cmd=True)
    if getattr(ns, "bundle", None):
        return _export_bundle(ns)
    if not getattr(ns, "model", None):
        raise SystemExit("error: audit export needs --model NAME (the model whose evidence to export)")
    source = _log_source(ns)
    if isinstance(source, _TopicSource):
        from monitor.audit_topic import main_export_topic  # lazy: kafka only for a topic

        return main_export_topic(ns, source.topic, source.settings, source.read_timeout_seconds)
    try:
        doc = export(source, ns.model, since=ns.since, until=getattr(ns, "until", None))
    except ValueError as exc:
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


def _export_bundle(ns: argparse.Namespace) -> int:
    """``audit export --bundle DIR``: the period's entries (of ``--model``, else of every model)
    as an evidence bundle (:mod:`monitor.evidence`); exit 1 if the chain is broken."""
    from monitor.evidence import build_bundle, write_bundle

    source = _log_source(ns)
    if isinstance(source, _TopicSource):
        raise SystemExit("error: --bundle reads a file log (audit.path); for the Kafka audit topic, export the "
                         "entries with `audit export --model M -o FILE` first")
    try:
        since_ts = parse_time(ns.since) if ns.since else None
        until_ts = parse_time(ns.until) if getattr(ns, "until", None) else None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    result = verify(source)
    entries = []
    for _, raw in _iter_lines(source):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue  # reported by the verification result
        if ns.model:
            keep = select_for_export(entry, ns.model, since_ts, until_ts)
        else:
            keep = isinstance(entry, dict) and _in_period(entry, since_ts, until_ts)
        if keep:
            entries.append(entry)
    config = _load_config(ns.config) if getattr(ns, "config", None) else None
    db = None
    if config is not None:
        from monitor.state import DB_NAME

        db = Path(config.state.dir) / DB_NAME
    index = build_bundle(entries, asdict(result), ns.since, getattr(ns, "until", None), config=config, state_db=db,
                         since_ts=since_ts, until_ts=until_ts)
    out = write_bundle(ns.bundle, entries, index)
    print(f"wrote an evidence bundle of {len(entries)} entries to {out}", file=sys.stderr)
    if not result.ok:
        print(f"warning: audit chain is broken: {result.reason}", file=sys.stderr)
        return 1
    return 0


def _in_period(entry: dict, since_ts: float | None, until_ts: float | None) -> bool:
    try:
        ts = _entry_time(entry)
    except (KeyError, ValueError, AttributeError):
        return False
    return (since_ts is None or ts >= since_ts) and (until_ts is None or ts < until_ts)


def main_redact(ns: argparse.Namespace) -> int:
    """`driftline audit redact`: drop payloads older than the retention now (the daemon does
    it hourly); for a stopped daemon's log or a one-off with ``--days``."""
    cfg = _load_config(ns.config) if getattr(ns, "config", None) else None
    path = Path(ns.path) if getattr(ns, "path", None) else (Path(cfg.audit.path) if cfg is not None else None)
    days = ns.days if getattr(ns, "days", None) is not None else (cfg.audit.payload_retention_days if cfg else 0.0)
    if path is None:
        raise SystemExit("error: give --path (the audit log file) or --config (its audit.path)")
    if not days > 0:
        raise SystemExit("error: no payload retention: set audit.payload_retention_days in the config or give --days")
    try:
        with AuditLog(path, payload_retention_days=days) as log:
            n = log.redact()
    except AuditError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"redacted the payloads of {n} entries older than {days:g} days in {path}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point of ``monitor.cli`` for ``audit verify``, ``export`` and ``redact`` (by ``args.command``)."""
    command = getattr(args, "command", "")
    if command == "audit redact":
        return main_redact(args)
    if command == "audit verify":
        return main_verify(args)
    if command == "audit export":
        return main_export(args)
    raise SystemExit(f"error: monitor.audit does not serve the command {command!r}")
