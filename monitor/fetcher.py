"""The fetch process: kafka-python's fetching and record parsing on a second core.

kafka-python parses record batches in pure Python (about 4 µs a record here), and the
monitor's own work (decode, join, panes, evaluation) needs the GIL too, so in one process
the two add up on one core. With ``kafka.fetch_process = true`` the App starts this
process, which owns a second ``KafkaConsumer`` with *manual* assignment and only fetches.
Everything that decides what is counted stays in the App's process: the group
membership, the rebalance listener, the state, the checkpoint and the offset commits. The
App's own consumer keeps its partitions paused, so it never fetches.

Protocol (pickled tuples over a socket pair framed by ``multiprocessing.connection``; both
ends are ours):

- App -> fetcher: ``("assign", {(topic, partition): (epoch, start)})`` where ``start``
  is an offset, ``None`` (the group's committed offset, else ``auto_offset_reset``), or
  ``"earliest"``/``"latest"``; ``("revoke", [(topic, partition), ...])``; ``("stop",)``.
- fetcher -> App: ``("records", topic, partition, epoch, offsets, values, keys, highwater)``
  per partition per poll, and ``("error", text)`` before it exits on a failure.

Every assignment of a partition carries a new *epoch*; the App drops chunks of an older
epoch, so records fetched before a revoke, a loss or a seek can never be counted after it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["FetchProcess", "Chunk", "fetcher_main"]


Chunk = tuple[str, int, int, list[int], list[bytes], list[bytes | None] | None, int | None]

# Chunks buffered on each side of the pipe. With 8, the App's loop waited for chunks ~6%
# of the time in bench/pipeline.py (the fetch process idles during each fetch's round
# trip); with 32, never. Memory stays bounded: a chunk is <= max_poll_records values, so
# with 1,000 records of 600 bytes this is at most ~20 MB on each side.
_QUEUE_CHUNKS = 32


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the App's process dies (even by SIGKILL),
    so a killed monitor never leaves a fetcher behind reading the topics."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def fetcher_main(conn: Connection) -> None:
    """The fetch process's body: runs until ``stop``, EOF on the pipe, or an error.

    The first message is ``(settings, max_records, poll_timeout_ms)``: the consumer's
    settings travel over the pipe, never on the command line, as they can hold secrets.
    """
    _die_with_parent()
    # The App decides when this process stops (its "stop", EOF on the pipe, or the parent
    # death signal): Ctrl-C or a SIGTERM sent to the whole process group must not end it
    # before the App's graceful stop has taken its last batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        settings, max_records, poll_timeout_ms = conn.recv()
    except EOFError:
        return
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from monitor.runtime import quiet_closed_socket_reads, tune_gc

    tune_gc()  # kafka-python allocates a few objects per record
    quiet_closed_socket_reads()

    out: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
    failed = threading.Event()

    def sender() -> None:
        # a thread, so a slow reader on the App's side blocks this write, not the fetching
        while (msg := out.get()) is not None:
            try:
                conn.send_bytes(msg)
            except OSError:
                failed.set()
                return

    tx = threading.Thread(target=sender, name="driftline-fetch-send", daemon=True)
    tx.start()
    consumer = None
    try:
        consumer = KafkaConsumer(**settings)
        epochs: dict[TopicPartition, int] = {}
        while not failed.is_set():
            # commands first: a revoke or seek must apply before the next records are sent
            while conn.poll(0 if epochs else 0.1):
                cmd = conn.recv()
                if cmd[0] == "stop":
                    return
                if cmd[0] == "revoke":
                    for t, p in cmd[1]:
                        epochs.pop(TopicPartition(t, p), None)
                    consumer.assign(list(epochs))
                elif cmd[0] == "assign":
                    new = {TopicPartition(t, p): v for (t, p), v in cmd[1].items()}
                    epochs.update({tp: ep for tp, (ep, _start) in new.items()})
                    consumer.assign(list(epochs))
                    for tp, (_ep, start) in new.items():
                        if isinstance(start, int):
                            consumer.seek(tp, start)
                        elif start == "earliest":
                            consumer.seek_to_beginning(tp)
                        elif start == "latest":
                            consumer.seek_to_end(tp)
                        # None: kafka-python resumes from the group's committed offset
            if not epochs:
                continue
            records = consumer.poll(timeout_ms=poll_timeout_ms, max_records=max_records)
            for tp, recs in records.items():
                ep = epochs.get(tp)
                if ep is None or not recs:
                    continue
                keys = [r.key for r in recs]
                chunk = ("records", tp.topic, tp.partition, ep, [r.offset for r in recs], [r.value for r in recs],
                         keys if any(k is not None for k in keys) else None, consumer.highwater(tp))
                msg = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
                # a full queue waits for the App; a gone App (the sender failed) ends the wait,
                # also where no parent-death signal exists (not Linux)
                while not failed.is_set():
                    try:
                        out.put(msg, timeout=0.5)
                        break
                    except queue.Full:
                        continue
    except EOFError:
        return  # the App is gone
    except BaseException as exc:  # noqa: BLE001 - reported to the App, which stops with it
        with contextlib.suppress(Exception):
            out.put(pickle.dumps(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")), timeout=5)
    finally:
        with contextlib.suppress(Exception):
            out.put(None, timeout=5)
            tx.join(timeout=5)
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False)


class FetchError(RuntimeError):
    """The fetch process failed or exited; the App stops (and is restarted by its supervisor)."""


class FetchProcess:
    """The App's handle on the fetch process: commands out, record chunks in."""

    def __init__(self, settings: dict[str, Any], max_records: int, poll_timeout_ms: int):
        self._args = (settings, max_records, poll_timeout_ms)
        self.proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._in: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._send_lock = threading.Lock()
        self._rx = threading.Thread(target=self._receive, name="driftline-fetch-receive", daemon=True)

    def start(self) -> None:
        # A plain ``python -m monitor.fetcher`` rather than multiprocessing's spawn, which
        # re-imports the parent's __main__ (a script without a main guard would start again);
        # fork is out too, with kafka-python's threads running in this process.
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with theirs:
            self.proc = subprocess.Popen([sys.executable, "-m", "monitor.fetcher", str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        self._conn = Connection(ours.detach())
        self._send(self._args)
        self._rx.start()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _receive(self) -> None:
        while True:
            try:
                msg = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                self._in.put(("eof",))
                return
            self._in.put(msg)
            if msg[0] == "error":
                return

    def _send(self, cmd: tuple) -> None:
        with self._send_lock:  # the rebalance listener (kafka-python's thread) sends too
            try:
                self._conn.send(cmd)
            except OSError as exc:
                raise FetchError(f"the fetch process is gone: {exc}") from exc

    def assign(self, starts: dict[tuple[str, int], tuple[int, int | str | None]]) -> None:
        if starts:
            self._send(("assign", starts))

    def revoke(self, tps: list[tuple[str, int]]) -> None:
        if tps:
            self._send(("revoke", tps))

    def take(self, timeout: float, max_records: int) -> list[Chunk]:
        """Chunks that arrived: waits up to ``timeout`` for the first, then takes what is
        there without waiting, up to about ``max_records`` records."""
        try:
            msg = self._in.get(timeout=timeout)
        except queue.Empty:
            return []
        out: list[Chunk] = []
        n = 0
        while True:
            if msg[0] == "records":
                out.append(msg[1:])
                n += len(msg[5])
            elif msg[0] == "error":
                raise FetchError(f"the fetch process failed: {msg[1]}")
            else:
                raise FetchError(f"the fetch process exited (exit code {self.proc.poll()})")
            if n >= max_records:
                break
            try:
                msg = self._in.get_nowait()
            except queue.Empty:
                break
        return out

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(FetchError):
            self._send(("stop",))
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            # keep reading, so a child blocked handing over a chunk gets to see "stop"
            with contextlib.suppress(queue.Empty):
                self._in.get(timeout=0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            self._conn.close()


if __name__ == "__main__":
    fetcher_main(Connection(int(sys.argv[1])))
