"""A scriptable HTTP receiver on 127.0.0.1 standing in for Slack, webhook endpoints and
Alertmanager: it records every request, answers from a script, and de-duplicates by
``webhook-id`` the way a careful receiver does."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """``script``: (status, headers) answers used in order, then ``default`` forever.
    ``accepted`` maps webhook-id -> body for requests answered 2xx, first one wins."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: tuple[int, dict[str, str]] = (200, {})
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, bytes] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    status, headers = (
                        receiver.script.pop(0) if receiver.script else receiver.default
                    )
                    headers = dict(headers)
                    if 200 <= status < 300:
                        msg_id = self.headers.get("webhook-id") or f"#{len(receiver.requests)}"
                        if msg_id in receiver.accepted:
                            receiver.duplicates.append(msg_id)
                        else:
                            receiver.accepted[msg_id] = body
                    receiver.requests.append(
                        Received(
                            time.monotonic(),
                            "POST",
                            self.path,
                            dict(self.headers.items()),
                            body,
                            status,
                        )
                    )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                payload = b"ok" if 200 <= status < 300 else b"error"
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the socket: clients now get connection refused, until ``start()``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


T0 = 1_700_000_000.0


def _event(
    feature: str = "income",
    state: str = "firing",
    seq: int = 1,
    model: str = "credit-risk",
    window_end: float = T0,
    started_at: float = T0 - 600,
    rule: str = "feature-drift",
    value: float = 0.31,
    details: dict | None = None,
):
    from monitor.events import AlertEvent, alert_id

    scope = f"feature:{feature}"
    return AlertEvent(
        id=alert_id(model, rule, scope, started_at),
        seq=seq,
        state=state,
        model=model,
        rule=rule,
        metric="psi",
        scope=scope,
        severity="warning",
        value=value,
        threshold=0.25,
        window_start=window_end - 900,
        window_end=window_end,
        started_at=started_at,
        model_version="v3",
        details=details or {},
    )


@pytest.fixture
def make_event():
    """Factory of AlertEvents: ``make_event("income", state="resolved", seq=2)``."""
    return _event
