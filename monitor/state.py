"""Durable state: per-partition pipeline state, input offsets and the outbox in one SQLite file.

One database transaction writes the state blobs, the offsets they correspond to and the
notifications they produced, so after a crash the consumer seeks to offsets that match the
restored state exactly (nothing counted twice or lost), and every notification produced by
that state is delivered (the outbox shares the transaction). Offsets are committed to Kafka
only after this transaction; Kafka's committed offsets are a hint, these are the truth.

Other modules (outbox, oversight) keep their tables in the same file: they call
:meth:`StateStore.transaction` and create their tables with ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from monitor.errors import StateError

__all__ = ["StateStore", "DB_NAME", "write_evaluations"]

DB_NAME = "driftline.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS blobs (
    name TEXT PRIMARY KEY, data BLOB NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StateStore:
    """The state database. Thread-safe: one connection per thread, writes serialised.

    ``checkpoint`` refuses to move an offset backwards: a lower offset than the stored one
    would mean re-counting events that the stored state already holds.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"state.dir {str(self.directory)!r} cannot be created: {exc}") from exc
        self.path = self.directory / DB_NAME
        self._local = threading.local()
        self._write_lock = threading.RLock()
        # executescript COMMITs any open transaction itself, so it must not run inside
        # transaction() (whose COMMIT would then fail); the statements are idempotent.
        with self._write_lock:
            self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a checkpoint that returned is on disk even if the machine loses power.
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on error)."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        """A connection for reads outside a transaction (this thread's own)."""
        return self._conn()

    def checkpoint(
        self,
        offsets: dict[tuple[str, int], int],
        blobs: dict[str, bytes],
        extra: Callable[[sqlite3.Connection], None] | None = None,
        *,
        delete_blobs: tuple[str, ...] = (),
    ) -> float:
        """Write offsets, state blobs and whatever ``extra`` writes (the outbox) atomically.

        Returns the seconds it took. Raises StateError if an offset would go backwards.
        """
        t0 = time.perf_counter()
        now = time.time()
        with self.transaction() as conn:
            for (topic, partition), off in offsets.items():
                row = conn.execute(
                    "SELECT next_offset FROM offsets WHERE topic=? AND partition=?", (topic, partition)
                ).fetchone()
                if row is not None and off < row[0]:
                    raise StateError(
                        f"offset for {topic}[{partition}] would go backwards: stored {row[0]}, new {off}"
                    )
                conn.execute(
                    "INSERT INTO offsets(topic, partition, next_offset) VALUES(?,?,?) "
                    "ON CONFLICT(topic, partition) DO UPDATE SET next_offset=excluded.next_offset",
                    (topic, partition, off),
                )
            for name in delete_blobs:
                conn.execute("DELETE FROM blobs WHERE name=?", (name,))
            for name, data in blobs.items():
                conn.execute(
                    "INSERT INTO blobs(name, data, updated_at) VALUES(?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
                    (name, data, now),
                )
            if extra is not None:
                extra(conn)
        return time.perf_counter() - t0

    def offsets(self) -> dict[tuple[str, int], int]:
        rows = self.read().execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    def blob(self, name: str) -> bytes | None:
        row = self.read().execute("SELECT data FROM blobs WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def blobs(self, prefix: str = "") -> dict[str, bytes]:
        rows = self.read().execute(
            "SELECT name, data FROM blobs WHERE name >= ? AND name < ?", (prefix, prefix + "\uffff")
        ).fetchall()
        return {n: bytes(d) for n, d in rows}

    def get_meta(self, key: str) -> str | None:
        row = self.read().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def write_evaluations(conn: sqlite3.Connection, evaluations, encoded: list[str] | None = None) -> None:
    """Evaluation records into the ``evaluations`` table (monitor.app.EVALUATIONS_SCHEMA), in
    the caller's transaction; a window already stored keeps its first record. ``encoded``:
    each record's JSON when the caller made it already."""
    if encoded is None:
        encoded = [json.dumps(e.record(), sort_keys=True) for e in evaluations]
    conn.executemany(
        "INSERT OR IGNORE INTO evaluations(model, window_end, metric, scope, record) VALUES (?,?,?,?,?)",
        [(e.model, e.window_end, e.metric, e.scope, text) for e, text in zip(evaluations, encoded, strict=True)],
    )
