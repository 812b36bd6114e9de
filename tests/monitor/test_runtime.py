"""monitor.runtime: the filter for kafka-python's report of a read on a socket its own
close had already taken."""

from __future__ import annotations

import logging
import sys

from monitor.runtime import quiet_closed_socket_reads


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:  # noqa: BLE001 - building exc_info as logging does
        info = sys.exc_info()
    return logging.LogRecord("kafka.net.transport", logging.ERROR, __file__, 1,
                             "%s: Error receiving network data closing socket", ("t",), info)


def test_only_the_read_after_close_is_dropped(caplog):
    quiet_closed_socket_reads()
    quiet_closed_socket_reads()  # idempotent
    logger = logging.getLogger("kafka.net.transport")
    assert len(logger.filters) == 1
    closed = None
    try:
        closed.recv(4096)  # what kafka-python does after _close() set _sock = None
    except AttributeError as e:
        after_close = e
    with caplog.at_level(logging.ERROR, logger="kafka.net.transport"):
        logger.handle(_record(after_close))
        logger.handle(_record(ConnectionResetError(104, "Connection reset by peer")))
        logger.handle(_record(AttributeError("'NoneType' object has no attribute 'send'")))
    got = [r.exc_info[1] for r in caplog.records]
    assert [type(e) for e in got] == [ConnectionResetError, AttributeError]
    assert "send" in str(got[1])
