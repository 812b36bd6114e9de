"""A loopback HTTP server that records requests and answers with scripted statuses."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Recorder:
    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # consumed in order; 200 when empty
        self.body = b'{"ok": true}'
        self.seen_ids: set[str] = set()
        self.airflow_unique = False  # 409 on a repeated dag_run_id, as Airflow does
        self.lock = threading.Lock()


@pytest.fixture
def recorder():
    rec = Recorder()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _handle(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            with rec.lock:
                rec.requests.append({"method": self.command, "path": self.path,
                                     "headers": {k.lower(): v for k, v in self.headers.items()}, "json": body})
                status = rec.statuses.pop(0) if rec.statuses else 200
                if rec.airflow_unique and isinstance(body, dict) and "dag_run_id" in body:
                    if body["dag_run_id"] in rec.seen_ids:
                        status = 409
                    elif status < 300:
                        rec.seen_ids.add(body["dag_run_id"])
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(rec.body)))
            self.end_headers()
            self.wfile.write(rec.body)

        do_POST = do_PUT = do_PATCH = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rec
    server.shutdown()
    server.server_close()
