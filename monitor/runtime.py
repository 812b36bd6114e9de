"""Process-wide runtime settings for the daemon's processes."""

from __future__ import annotations

import gc
import logging

__all__ = ["tune_gc", "quiet_closed_socket_reads"]

#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Fewer, cheaper garbage collections once start-up is done.

    Each micro-batch allocates tens of thousands of short-lived container objects (decoded
    structs, record tuples), so CPython's default young-generation threshold of 700 runs a
    collection every few records, and the older generations (which grow with start-up
    state: configs, profiles, imported modules) are walked again and again. Pipeline
    state lives in numpy arrays, which the collector does not track, and the loop makes
    no reference cycles of note. ``gc.freeze()`` moves everything alive now into a
    permanent generation that is never scanned; the higher threshold makes young
    collections rarer (a few MB more garbage at most). Measured in memory on the
    bench stream: 175k -> 212k records/s end to end.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


class _ClosedSocketRead(logging.Filter):
    """Drops kafka-python's report of a read on a transport that its own close had already
    taken the socket from (3.0.12: ``_close`` sets ``_sock = None`` on one thread while the
    IO loop's read of that socket is under way on another, which logs ``Error receiving
    network data`` with an AttributeError traceback). The connection was closed on purpose;
    a real receive error (reset, timeout) has another exception and still gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, AttributeError) and "'NoneType' object has no attribute 'recv'" in str(exc))


_FILTER = _ClosedSocketRead()


def quiet_closed_socket_reads() -> None:
    """Install :class:`_ClosedSocketRead` on kafka-python's transport logger (idempotent)."""
    logger = logging.getLogger("kafka.net.transport")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
