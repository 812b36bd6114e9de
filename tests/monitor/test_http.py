"""The HTTP server with real requests on loopback: probes, metrics, auth (401), body
limit (413), rate limit (429), the oversight endpoints and report serving."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from monitor.audit import AuditLog
from monitor.events import AlertEvent
from monitor.http import HttpServer, report_link
from monitor.oversight import Oversight
from monitor.state import StateStore

TOKEN = "t0ps3cret-token"


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def app(tmp_path):
    store = StateStore(tmp_path / "s")
    audit = AuditLog(tmp_path / "audit.jsonl")
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0)
    registry = CollectorRegistry()
    Counter("driftline_test_things_total", "x", registry=registry).inc(3)
    state = {"live": True, "ready": (False, "partitions not assigned")}
    limiter_t = Clock(0.0)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "abc.html").write_text("<html>evidence</html>")
    (tmp_path / "secret.html").write_text("not for you")
    srv = HttpServer("127.0.0.1", 0, registry, lambda: state["live"], lambda: state["ready"], ov, TOKEN,
                     max_body_bytes=1024, rate_limit_per_minute=20, reports_dir=reports,
                     models=lambda: [{"name": "m", "task": "binary"}], limiter_clock=limiter_t)
    srv.start()
    client = httpx.Client(base_url=srv.url, timeout=5)
    yield srv, client, ov, store, state, limiter_t
    client.close()
    srv.stop()
    audit.close()
    store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_probes_and_metrics(app):
    srv, client, ov, store, state, _ = app
    r = client.get("/metrics")
    # Content negotiation as prometheus_client's own servers do: the classic text format
    # by default (every Prometheus parses it), OpenMetrics when the scraper asks for it.
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "driftline_test_things_total 3.0" in r.text
    r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text") and r.text.endswith("# EOF\n")
    assert client.get("/livez").status_code == 200 and client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and "partitions not assigned" in r.text
    state["ready"], state["live"] = (True, "ok"), False
    assert client.get("/readyz").status_code == 200 and client.get("/livez").status_code == 503
    assert client.get("/metrics/livez").status_code == 404  # health is not answered by /metrics


def test_auth_401(app):
    srv, client, *_ = app
    r = client.get("/api/alerts")
    assert r.status_code == 401 and r.json()["error"] == "missing bearer token"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/alerts", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/api/alerts", headers=AUTH).status_code == 200


def test_body_limit_413_without_reading_the_body(app):
    srv, client, *_ = app
    r = client.post("/api/alerts/x/ack", headers=AUTH, content=b"{" + b" " * 2000 + b"}")
    assert r.status_code == 413 and "limit of 1024" in r.json()["error"]
    # Raw socket: announce a huge body, send none; the server answers 413 at once.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(f"POST /api/alerts/x/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 100000000\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_rate_limit_429(app):
    srv, client, ov, store, state, limiter_t = app
    codes = [client.get("/api/alerts", headers=AUTH).status_code for _ in range(25)]
    assert codes == [200] * 20 + [429] * 5
    r = client.get("/api/alerts", headers=AUTH)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert client.get("/metrics").status_code == 200  # scrapes are not rate limited
    limiter_t.t += 3.0  # 20/min refills one token per 3 s
    assert client.get("/api/alerts", headers=AUTH).status_code == 200
    assert client.get("/api/alerts", headers=AUTH).status_code == 429


def test_oversight_endpoints(app):
    srv, client, ov, store, *_ = app
    ev = AlertEvent(id="a1", seq=1, state="firing", model="m", rule="r", metric="psi", scope="feature:x",
                    severity="warning", value=0.3, threshold=0.25, window_start=0, window_end=60, started_at=0)
    with store.transaction() as conn:
        ov.record_transitions(conn, [ev])
    alerts = client.get("/api/alerts", headers=AUTH).json()["alerts"]
    assert [a["id"] for a in alerts] == ["a1"] and alerts[0]["state"] == "firing"
    r = client.post("/api/alerts/a1/ack", headers=AUTH, json={"who": "ann", "reason": "on it"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    r = client.post("/api/alerts/a1/silence", headers=AUTH, json={"who": "ann", "reason": "noisy",
                                                                   "duration_seconds": 600})
    assert r.status_code == 200
    assert client.get("/api/alerts?state=silenced", headers=AUTH).json()["alerts"][0]["id"] == "a1"
    assert client.post("/api/alerts/a1/silence", headers=AUTH, json={"who": "ann"}).status_code == 400
    assert client.post("/api/alerts/zzz/ack", headers=AUTH, json={"who": "ann"}).status_code == 404
    r = client.post("/api/models/m/override", headers=AUTH, json={"who": "ann", "why": "rollback"})
    assert r.status_code == 200
    models = client.get("/api/models", headers=AUTH).json()["models"]
    assert models[0]["override"]["who"] == "ann"
    assert client.post("/api/retrains/nope/approve", headers=AUTH, json={"who": "a", "reason": "b"}).status_code == 404
    assert client.post("/api/alerts/a1/ack", headers=AUTH, content=b"not json").status_code == 400
    assert client.get("/api/nothing", headers=AUTH).status_code == 404
    assert client.put("/api/alerts", headers=AUTH).status_code == 405


def test_reports_served_without_traversal(app, tmp_path):
    srv, client, *_ = app
    r = client.get("/api/reports/abc.html", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "evidence" in r.text
    for bad in ("/api/reports/../secret.html", "/api/reports/%2e%2e%2fsecret.html", "/api/reports/..%2Fsecret.html",
                "/api/reports/missing.html"):
        assert client.get(bad, headers=AUTH).status_code in (401, 404), bad
    assert client.get("/api/reports/abc.html").status_code == 401
    link = report_link(srv.url, "abc.html", TOKEN, expires=int(srv.clock()) + 3600)
    assert httpx.get(link).status_code == 200  # signed link: no header needed
    assert httpx.get(link.replace("abc.html", "abd.html")).status_code == 401
    expired = report_link(srv.url, "abc.html", TOKEN, expires=1)
    assert httpx.get(expired).status_code == 401


def test_empty_token_disables_api(tmp_path):
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, ""), None, "")
    srv.start()
    try:
        r = httpx.get(f"{srv.url}/api/alerts", headers={"Authorization": "Bearer x"})
        assert r.status_code == 404 and "disabled" in r.json()["error"]
    finally:
        srv.stop()
