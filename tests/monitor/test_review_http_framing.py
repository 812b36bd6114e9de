"""Review: a request body the server does not read must not stay in the connection.

HTTP/1.1 keeps the connection open, so bytes of a body left unread are parsed as the next
request (request smuggling behind a proxy that forwards ``Transfer-Encoding: chunked``).
The server refuses chunked bodies (411 on ``/api``, ignored elsewhere) and malformed
``Content-Length`` (400); after any of these it must close the connection.
"""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from monitor.audit import AuditLog
from monitor.http import HttpServer
from monitor.oversight import Oversight
from monitor.state import StateStore

TOKEN = "t0ps3cret-token"
SMUGGLED = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def server(tmp_path):
    store = StateStore(tmp_path / "s")
    audit = AuditLog(tmp_path / "audit.jsonl")
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0)
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, "ok"), ov, TOKEN,
                     max_body_bytes=1024, rate_limit_per_minute=100)
    srv.start()
    yield srv
    srv.stop()
    audit.close()
    store.close()


def _exchange(port: int, request: bytes) -> bytes:
    """Send one request; read until the server closes (or goes quiet for a second)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        s.settimeout(1.0)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("path,headers", [
    ("/api/alerts/x/ack", f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n"),  # 411
    ("/nowhere", "Transfer-Encoding: chunked\r\n"),  # 404, body "drained"
])
def test_an_unread_chunked_body_is_not_parsed_as_a_second_request(server, path, headers):
    # The chunk body is the smuggled request itself: a server that leaves the chunked body
    # unread parses the chunk-size line, then the smuggled request line
    req = f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + SMUGGLED
    data = _exchange(server.port, req)
    assert data.count(b"HTTP/1.1 ") == 1, data.decode(errors="replace")


def test_a_malformed_content_length_closes_the_connection(server):
    req = (f"POST /api/alerts/x/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
           f"Content-Length: 1e3\r\n\r\n").encode() + SMUGGLED
    data = _exchange(server.port, req)
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1 ") == 1, data.decode(errors="replace")


@pytest.mark.parametrize("body", [b'{"who": "a", "reason": "r", "until": NaN}',
                                  b'{"who": "a", "reason": "r", "duration_seconds": Infinity}'])
def test_a_non_finite_silence_time_is_a_400_not_a_500(server, body):
    # json.loads accepts NaN/Infinity; NaN reached SQLite's NOT NULL column (IntegrityError, 500)
    req = (f"POST /api/silences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
           f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    data = _exchange(server.port, req + body.replace(b'"who"', b'"model": "m", "who"'))
    assert data.startswith(b"HTTP/1.1 400"), data.decode(errors="replace")
