"""Erasure of one prediction id from every store the daemon owns, recorded in the audit trail.

Where a prediction id can leave a trace (all keyed by its 64-bit hash, :func:`id_key`;
the id itself is never stored):

- the label join: a prediction waiting for its label, or a label waiting for its prediction
  (:class:`monitor.join.JoinTable` rows of each partition state);
- the row samples of panes (:class:`monitor.panes.RowSample`: the feature values, score and
  prediction of a sampled prediction, the label of a sampled outcome) in open, sealed,
  pending and windowed panes;
- the ordering keys of joined outcomes not yet sealed (an error indicator and its label
  time): the key is replaced by 0, so the indicator stays in the statistics but no longer
  points at the id;
- evidence reports: each report's manifest ``<alert id>.keys.json`` lists the keys of its
  sampled rows; a report holding the id is deleted with its manifest (its rows cannot be
  re-drawn without the id once the window has moved on).

The sketches (histograms, counts, sums) are aggregates without ids and stay as they are.
The daemon applies an erasure between two batches on its poll loop thread (the owner of
the state), then checkpoints, so the database (or the Kafka changelog's next snapshot)
holds the erased state; ``driftline erase`` does the same offline on a stopped daemon's
SQLite state.

The ``privacy.erased`` audit entry holds a salted HMAC of the id (``privacy.erasure_secret``
as the key, a random salt per entry), never the id, and what was removed where: whoever
holds the id (and the secret) can show it was erased, nobody can read the id back.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
from collections import Counter
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from monitor.decode import hash_ids

__all__ = [
    "id_key",
    "id_digest",
    "digest_matches",
    "scrub_pane",
    "erase_partition",
    "erase_runtime",
    "erase_reports",
    "report_manifest",
    "write_manifest",
    "erase_live",
    "erase_offline",
    "ErasureQueue",
    "main",
]

log = logging.getLogger("driftline.privacy")

MANIFEST_SUFFIX = ".keys.json"


def id_key(prediction_id: str) -> int:
    """The 64-bit key state holds for ``prediction_id`` (:func:`monitor.decode.hash_ids`)."""
    if not isinstance(prediction_id, str) or not prediction_id:
        raise ValueError(f"a prediction id must be a non-empty string, got {prediction_id!r}")
    return int(hash_ids([prediction_id])[0])


def id_digest(prediction_id: str, secret: str, salt: str | None = None) -> dict[str, str]:
    """``{"salt", "id_hmac"}``: HMAC-SHA256 keyed by ``secret`` over salt and id."""
    salt = salt if salt is not None else secrets.token_hex(16)
    mac = hmac.new(secret.encode(), bytes.fromhex(salt) + prediction_id.encode(), hashlib.sha256)
    return {"salt": salt, "id_hmac": mac.hexdigest()}


def digest_matches(entry_data: dict, prediction_id: str, secret: str) -> bool:
    """Whether a ``privacy.erased`` entry's data is the erasure of ``prediction_id``."""
    want = id_digest(prediction_id, secret, entry_data["salt"])["id_hmac"]
    return hmac.compare_digest(want, entry_data["id_hmac"])


# -- in-memory state --------------------------------------------------------------------------
def _drop_rows(sample, key: np.uint64) -> int:
    hit = sample.keys == key
    n = int(hit.sum())
    if n:
        keep = ~hit
        sample.keys = sample.keys[keep]
        sample.data = {c: v[keep] for c, v in sample.data.items()}
    return n


def scrub_pane(pane, key: int) -> Counter:
    """Remove ``key`` from a pane's row samples and unlink it from its unsealed outcomes."""
    k = np.uint64(key)
    out: Counter = Counter()
    out["pane_prediction_rows"] += _drop_rows(pane.psample, k)
    out["pane_outcome_rows"] += _drop_rows(pane.osample, k)
    for i, keys in enumerate(pane._err_key):
        hit = np.asarray(keys, dtype=np.uint64) == k
        if hit.any():
            # the error indicator is an aggregate's input; only its link to the id goes
            pane._err_key[i] = np.where(hit, np.uint64(0), keys).astype(np.uint64)
            out["pending_outcome_keys"] += int(hit.sum())
    return out


def erase_partition(st, key: int) -> Counter:
    """Remove ``key`` from one :class:`~monitor.pipeline.PartitionState`."""
    q = np.array([key], dtype=np.uint64)
    out: Counter = Counter()
    out["join_predictions"] += int(st.preds.take(q)[0].sum())
    out["join_labels"] += int(st.labels.take(q)[0].sum())
    for panes in st.open:
        for pane in panes.values():
            out += scrub_pane(pane, key)
    return out


def erase_runtime(m, key: int) -> Counter:
    """Remove ``key`` from a model's stage-2 panes (window, pending, running sum)."""
    out: Counter = Counter()
    panes = list(m.panes) + list(m.pending.values()) + ([m.window] if m.window is not None else [])
    for pane in panes:
        out += scrub_pane(pane, key)
    return out


def report_manifest(report_dir: str | Path, alert_id: str) -> Path:
    return Path(report_dir) / f"{alert_id}{MANIFEST_SUFFIX}"


def write_manifest(report_dir: str | Path, alert_id: str, keys) -> Path:
    """The keys of a report's sampled rows, so that an erasure finds the reports holding an id."""
    from monitor.reports import report_name  # lazy: reports imports pandas

    report_name(alert_id)  # the same names as the reports: never outside the directory
    path = report_manifest(report_dir, alert_id)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"kind": "report_keys", "version": 1,
                               "keys": [int(k) for k in keys if k is not None]}), encoding="utf-8")
    os.replace(tmp, path)
    return path


def erase_reports(report_dir: str | Path, key: int) -> list[str]:
    """Delete the reports (and manifests) whose sampled rows include ``key``; their alert ids."""
    d = Path(report_dir)
    if not d.is_dir():
        return []
    removed = []
    for manifest in sorted(d.glob(f"*{MANIFEST_SUFFIX}")):
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"report manifest {manifest} is unreadable ({exc}): cannot tell whether "
                             "its report holds the id") from exc
        if key in doc.get("keys", ()):
            alert_id = manifest.name[: -len(MANIFEST_SUFFIX)]
            (d / f"{alert_id}.html").unlink(missing_ok=True)
            manifest.unlink(missing_ok=True)
            removed.append(alert_id)
    return removed


def _record(audit, prediction_id: str, secret: str, removed: Counter, reports: list[str], where: dict,
            who: str | None, backend: str) -> dict:
    data = {**id_digest(prediction_id, secret),
            "removed": {k: int(v) for k, v in sorted(removed.items())},
            "reports_deleted": reports, "where": where, "backend": backend,
            "keyed": bool(secret)}
    return audit.append("privacy.erased", data, actor=who or None)


def erase_live(app, prediction_id: str, who: str | None = None) -> dict:
    """Erase ``prediction_id`` from a running App's state, on its poll loop thread.

    Checkpoints at once: with the SQLite backend every blob is rewritten (freed pages
    zeroed); with the Kafka backend the changed partitions and models are marked so that the
    transaction writes new snapshots to the changelog, which compaction then keeps instead
    of the old ones.
    """
    key = id_key(prediction_id)
    total: Counter = Counter()
    where: dict[str, dict[str, int]] = {}
    pipe = app.pipeline
    kst = getattr(app, "kstate", None)
    for p, st in sorted(pipe.partitions.items()):
        c = erase_partition(st, key)
        for panes in [v for (_, pp), v in pipe.sealed.items() if pp == p]:
            for pane in panes:
                c += scrub_pane(pane, key)
        if c:
            where[f"partition/{p}"] = dict(c)
            total += c
            if kst is not None:
                kst._written.pop(p, None)  # the next transaction writes this snapshot again
    for m in app._stage2_models():
        c = erase_runtime(m, key)
        if c:
            where[f"model/{m.cfg.name}"] = dict(c)
            total += c
            if kst is not None:
                kst.stage.dirty.add(m.cfg.name)
    pool = getattr(app, "report_pool", None)
    if pool is not None:
        # a report job queued before the erasure holds rows drawn before it: let it land
        # (one worker, in order), then delete what holds the id. Rare, so the loop may wait.
        pool.submit(lambda: None).result()
    reports = erase_reports(app.config.reports.dir, key)
    entry = _record(app.audit, prediction_id, app.config.privacy.erasure_secret, total, reports, where, who,
                    app.config.state.backend)
    _checkpoint_scrubbed(app)
    return {"audit_seq": entry["seq"], "id_hmac": entry["data"]["id_hmac"], "salt": entry["data"]["salt"],
            "removed": entry["data"]["removed"], "reports_deleted": reports}


def _checkpoint_scrubbed(app) -> None:
    """Checkpoint now (this is the loop thread) with SQLite zeroing the pages the old blobs
    free, then fold the write-ahead log in and truncate it: the erased rows' bytes leave the
    database files, not only its current rows. secure_delete doubles a checkpoint's writes,
    so it is on for this one only."""
    conn = app.store.read()
    conn.execute("PRAGMA secure_delete=ON")
    try:
        app.checkpoint()
    finally:
        conn.execute("PRAGMA secure_delete=OFF")
    # best effort: with a reader (the HTTP thread) in the way SQLite reports busy, and the
    # old frames are overwritten as the log is reused
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def erase_offline(config, prediction_id: str, who: str | None = None, state_dir: str | None = None,
                  profile_base: Path | None = None, audit=None) -> dict:
    """``driftline erase``: the same erasure on a stopped daemon's SQLite state."""
    from monitor.audit import AuditLog
    from monitor.errors import StateError
    from monitor.pipeline import Pipeline
    from monitor.profiles import load_profiles
    from monitor.state import StateStore

    if config.state.backend != "sqlite":
        raise StateError('state.backend = "kafka": the state lives in the changelog topics of the running '
                         "replicas; erase through their API (POST /api/erasures on every replica)")
    running = _daemon_answering(config)
    if running:
        # its next checkpoint would write its in-memory state, with the id, over ours
        raise StateError(f"a daemon answers on {running} (http.host, http.port of this config): erase through "
                         "its API, POST /api/erasures, or stop it first")
    key = id_key(prediction_id)
    store = StateStore(state_dir or config.state.dir)
    try:
        pipe = Pipeline(config, load_profiles(config, profile_base), reports=config.reports.enabled)
        pipe.restore_models(store.blobs("model/"))
        blobs: dict[str, bytes] = {}
        total: Counter = Counter()
        where: dict[str, dict[str, int]] = {}
        for name, data in sorted(store.blobs("partition/").items()):
            p = int(name.split("/", 1)[1])
            pipe.restore_partition(p, data)
            c = erase_partition(pipe.partitions[p], key)
            if c:
                where[name] = dict(c)
                total += c
                blobs[name] = pipe.partitions[p].to_bytes()
        for m in pipe.models:
            c = erase_runtime(m, key)
            if c:
                where[f"model/{m.cfg.name}"] = dict(c)
                total += c
                blobs[f"model/{m.cfg.name}"] = m.to_bytes()
        if blobs:
            conn = store.read()
            # freed pages are zeroed, and the log's frames are folded in and truncated: the
            # old blobs' bytes do not linger in the database files
            conn.execute("PRAGMA secure_delete=ON")
            store.checkpoint({}, blobs)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        reports = erase_reports(config.reports.dir, key)
        own = audit is None
        audit = audit if audit is not None else AuditLog(config.audit.path if state_dir is None
                                                          else str(Path(state_dir) / "audit.jsonl"))
        try:
            entry = _record(audit, prediction_id, config.privacy.erasure_secret, total, reports, where, who, "sqlite")
        finally:
            if own:
                audit.close()
    finally:
        store.close()
    return {"audit_seq": entry["seq"], "id_hmac": entry["data"]["id_hmac"], "salt": entry["data"]["salt"],
            "removed": entry["data"]["removed"], "reports_deleted": reports}


def _daemon_answering(config) -> str | None:
    """``host:port`` when a daemon with this config's HTTP address answers ``/livez``."""
    import urllib.error
    import urllib.request

    h = config.http
    if not h.port:
        return None  # an ephemeral port: nothing to ask
    host = "127.0.0.1" if h.host in ("0.0.0.0", "::", "") else h.host
    try:
        with urllib.request.urlopen(f"http://{host}:{h.port}/livez", timeout=1.0):
            pass
    except urllib.error.HTTPError:
        pass  # answered (e.g. 503 while its loop is stuck): running
    except OSError:
        return None  # nothing listening
    return f"{host}:{h.port}"


class ErasureQueue:
    """Erasure requests from the HTTP thread, applied by the poll loop between batches."""

    def __init__(self, app, wait_seconds: float = 30.0):
        self.app = app
        self.wait_seconds = wait_seconds
        self._q: queue.Queue[tuple[str, str | None, Future]] = queue.Queue()

    def submit(self, prediction_id: str, who: str | None) -> tuple[int, dict]:
        """Queue an erasure and wait for the loop to apply it: (200, result), or 202 when the
        loop has not reached it yet (it still will)."""
        id_key(prediction_id)  # refuse a bad id here, with a 400
        fut: Future = Future()
        self._q.put((prediction_id, who, fut))
        try:
            return 200, fut.result(timeout=self.wait_seconds)
        except TimeoutError:
            return 202, {"status": "queued"}

    def apply_pending(self) -> None:
        """On the poll loop thread."""
        while True:
            try:
                prediction_id, who, fut = self._q.get_nowait()
            except queue.Empty:
                return
            try:
                result = erase_live(self.app, prediction_id, who)
            except Exception as exc:  # noqa: BLE001 - reported to the requester, the loop goes on
                log.exception("erasure failed")
                fut.set_exception(exc)
            else:
                log.info("erasure applied (audit seq %s)", result["audit_seq"])
                fut.set_result(result)


def main(args: argparse.Namespace) -> int:
    """``driftline erase --config C PREDICTION_ID``: offline, on a stopped daemon's state."""
    from monitor.config import load_config
    from monitor.errors import StateError

    config = load_config(args.config)
    try:
        result = erase_offline(config, args.prediction_id, who=args.by or None,
                               profile_base=Path(args.config).resolve().parent)
    except (StateError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(result, indent=2))
    return 0
