"""The daemon's one HTTP server: Prometheus ``/metrics``, ``/livez`` and ``/readyz`` probes,
and the authenticated oversight API under ``/api``.

Stdlib ``ThreadingHTTPServer``: the traffic is scrapes, probes and people, so a thread per
request is plenty and there is no framework to keep patched.

``/api`` rules, in this order: more than ``rate_limit_per_minute`` requests from one client
address -> 429 (token bucket, so short bursts up to the limit pass); no or wrong
``Authorization: Bearer <api_token>`` -> 401 (compared with ``hmac.compare_digest``); a
body over ``max_body_bytes`` -> 413 before anything is read. An empty ``api_token``
disables the API (404) rather than leaving it open. Errors are JSON ``{"error": ...}``.

Report links in notifications cannot carry a header, so ``GET /api/reports/<name>`` also
accepts ``?expires=<unix>&sig=<hex>`` made by :func:`sign_report_path` with the API token
(HMAC-SHA256 over the path and expiry): a link opens in a browser until it expires.

``GET /ui`` is a read-only HTML overview (:mod:`monitor.ui`) protected like the API: the
bearer token, or a signed expiring link (:func:`ui_link`, ``driftline ui-link``) for a
browser; its report links are signed with the same expiry. ``POST /slack/actions`` is Slack's
interactivity endpoint (:mod:`monitor.slack_actions`): authenticated by Slack's request
signature instead of the token, rate-limited like the API, 404 without
``sinks.slack.signing_secret``; each button becomes the POST below that a person would send.

Endpoints (JSON unless noted)::

    GET  /metrics  /livez (/healthz)  /readyz                     no token
    GET  /api/models  /api/alerts?model=&state=  /api/alerts/{id}
    GET  /api/retrains?status=&model=&kind=  /api/retrains/{id}  /api/silences
         (kind: retrain (default) | rollback | disable | all: serving actions share the gate)
    POST /api/alerts/{id}/ack        {"who", "reason"?}
    POST /api/alerts/{id}/silence    {"who", "reason", "until" (unix or ISO) | "duration_seconds"}
    POST /api/silences               {"who", "reason", "model", "rule"?, "until" | "duration_seconds"}
    POST /api/models/{name}/override {"who", "why", "active"? (default true), "until"?}
    POST /api/retrains/{id}/approve  {"who", "reason"}   (any kind of request)
    POST /api/retrains/{id}/reject   {"who", "reason"}
    POST /api/erasures               {"who", "prediction_id"}   (monitor.privacy)
    GET  /api/reports/{name}         text/html
    GET  /api/cards                  the model cards (monitor.cards), newest period first
    GET  /api/cards/{name}           a card: {name}.json (application/json) or {name}.md (text/markdown)
    GET  /ui                         text/html (token or signed link)
    POST /slack/actions              Slack block_actions (Slack signature)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from monitor.audit import parse_time
from monitor.errors import DriftlineError
from monitor.oversight import ConflictError, NotFoundError, Oversight, OversightError
from monitor.slack_actions import SlackActions, SlackAuthError, SlackPayloadError
from monitor.ui import CONTENT_SECURITY_POLICY, render_overview

__all__ = ["HttpServer", "RateLimiter", "sign_report_path", "report_link", "ui_link"]

log = logging.getLogger("driftline.http")

_REPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.html$")
_MAX_LIMITER_CLIENTS = 10000


class RateLimiter:
    """Token bucket per client: ``per_minute`` tokens of capacity, refilled continuously.

    >>> t = [0.0]
    >>> rl = RateLimiter(2, clock=lambda: t[0])
    >>> [rl.allow("a")[0] for _ in range(3)], rl.allow("b")[0]
    ([True, True, False], True)
    >>> t[0] = 30.0; rl.allow("a")[0]
    True
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        if not (isinstance(per_minute, int) and per_minute >= 1):
            raise ValueError(f"http.rate_limit_per_minute must be an integer >= 1, got {per_minute!r}")
        self.per_minute = per_minute
        self.clock = clock
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> tuple[bool, float]:
        """(allowed, seconds until the next token when refused)."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                allowed, wait = True, 0.0
            else:
                self._buckets[client] = (tokens, now)
                allowed, wait = False, (1.0 - tokens) / self._rate
            if len(self._buckets) > _MAX_LIMITER_CLIENTS:
                # Bound memory under many clients: drop buckets that have refilled anyway.
                full = [c for c, (tk, ts) in self._buckets.items()
                        if min(self.per_minute, tk + (now - ts) * self._rate) >= self.per_minute]
                for c in full:
                    del self._buckets[c]
        return allowed, wait


def sign_report_path(path: str, expires: int, api_token: str) -> str:
    """HMAC-SHA256 (hex) of ``path`` and ``expires`` with the API token as key."""
    msg = f"{path}\n{int(expires)}".encode()
    return hmac.new(api_token.encode(), msg, hashlib.sha256).hexdigest()


def report_link(base_url: str, name: str, api_token: str, expires: int) -> str:
    """A browser-openable link to a report that stops working at ``expires`` (Unix s)."""
    path = f"/api/reports/{quote(name)}"
    return f"{base_url.rstrip('/')}{path}?expires={int(expires)}&sig={sign_report_path(path, expires, api_token)}"


def ui_link(base_url: str, api_token: str, expires: int) -> str:
    """A browser-openable link to the ``/ui`` overview that stops working at ``expires``."""
    return f"{base_url.rstrip('/')}/ui?expires={int(expires)}&sig={sign_report_path('/ui', expires, api_token)}"


class _HttpError(Exception):
    """``close``: the request's body was left unread, so the connection cannot carry
    another request (its bytes would be parsed as one)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close


def _time_arg(body: dict, now: float) -> float:
    if "until" in body and body["until"] is not None:
        v = body["until"]
        if isinstance(v, int | float) and not isinstance(v, bool):
            if not math.isfinite(v):  # json.loads accepts NaN/Infinity; SQLite stores NaN as NULL
                raise _HttpError(400, f"until must be a finite Unix time, got {v!r}")
            return float(v)
        if isinstance(v, str):
            try:
                return parse_time(v)
            except ValueError as exc:
                raise _HttpError(400, f"until: {exc}") from None
        raise _HttpError(400, f"until must be Unix seconds or an ISO 8601 time, got {v!r}")
    d = body.get("duration_seconds")
    if isinstance(d, int | float) and not isinstance(d, bool) and d > 0 and math.isfinite(d):
        return now + float(d)
    raise _HttpError(400, "give until (Unix seconds or ISO 8601) or duration_seconds (> 0)")


class HttpServer:
    """Serves metrics, probes and the oversight API on ``host:port`` (port 0: any free port;
    read :attr:`port` after :meth:`start`).

    ``live()`` says the poll loop is alive; ``ready()`` returns ``(ready, reason)``
    (partitions assigned, state restored, lag within bound). ``models()`` lists the
    configured models as dicts with at least ``name``. ``on_approve(request_dict)`` runs
    after an approval (the app wakes the trigger sender with it).
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        live: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
        oversight: Oversight | None,
        api_token: str,
        max_body_bytes: int = 65536,
        rate_limit_per_minute: int = 120,
        reports_dir: str | Path | None = None,
        models: Callable[[], list[dict]] = list,
        *,
        on_approve: Callable[[dict], None] | None = None,
        on_erase: Callable[[str, str | None], tuple[int, dict]] | None = None,
        commands: Any = None,
        cards_dir: str | Path | None = None,
        slack_actions: SlackActions | None = None,
        clock: Callable[[], float] = time.time,
        limiter_clock: Callable[[], float] = time.monotonic,
    ):
        if not (isinstance(max_body_bytes, int) and max_body_bytes >= 1):
            raise ValueError(f"http.max_body_bytes must be an integer >= 1, got {max_body_bytes!r}")
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise ValueError(f"http.port must be 0..65535, got {port!r}")
        self.host = host
        self.port = port
        self.registry = registry
        self.live = live
        self.ready = ready
        self.oversight = oversight
        self.api_token = api_token or ""
        self.max_body_bytes = max_body_bytes
        self.rate_limit_per_minute = rate_limit_per_minute
        self.limiter = RateLimiter(rate_limit_per_minute, clock=limiter_clock)
        self.reports_dir = Path(reports_dir) if reports_dir else None
        self.models = models
        self.on_approve = on_approve
        # POST /api/erasures: the app's ErasureQueue.submit (monitor.privacy)
        self.on_erase = on_erase
        # state.backend = "kafka": actions become commands on the commands topic, applied by
        # the replica that owns the model (monitor.commands); answered 202
        self.commands = commands
        self.cards_dir = Path(cards_dir) if cards_dir else None
        self.slack_actions = slack_actions  # None: /slack/actions answers 404
        self.clock = clock
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Any, registry: CollectorRegistry, live: Callable[[], bool],
                    ready: Callable[[], tuple[bool, str]], oversight: Oversight | None,
                    models: Callable[[], list[dict]], **kwargs: Any) -> HttpServer:
        h = config.http
        if "slack_actions" not in kwargs:
            kwargs["slack_actions"] = SlackActions.from_config(config)
        return cls(h.host, h.port, registry, live, ready, oversight, h.api_token,
                   max_body_bytes=h.max_body_bytes, rate_limit_per_minute=h.rate_limit_per_minute,
                   reports_dir=config.reports.dir, models=models, cards_dir=config.cards.dir, **kwargs)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="driftline-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.slack_actions is not None:
            self.slack_actions.close()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- API logic

    def _check_auth(self, header: str | None, path: str, query: dict) -> None:
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_token.encode()):
                return
            raise _HttpError(401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if (path.startswith("/api/reports/") or path == "/ui") and "sig" in query and "expires" in query:
            what = "overview" if path == "/ui" else "report"
            try:
                expires = int(query["expires"][0])
            except ValueError:
                raise _HttpError(401, f"invalid {what} link") from None
            good = sign_report_path(path, expires, self.api_token)
            if hmac.compare_digest(good.encode(), query["sig"][0].encode()) and expires > self.clock():
                return
            raise _HttpError(401, f"{what} link invalid or expired")
        raise _HttpError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})

    def _require_oversight(self) -> Oversight:
        if self.oversight is None:
            raise _HttpError(503, "oversight is not configured in this process")
        return self.oversight

    def handle_api(self, method: str, path: str, query: dict, body: dict | None, *,
                   hooks_in_background: bool = False) -> tuple[int, Any]:
        """One API call; ``hooks_in_background`` runs ``on_approve`` (which may send the
        retrain, a slow call) on its own thread, for a caller that must answer within seconds."""
        parts = [unquote(p) for p in path.split("/")[2:] if p != ""]
        ov = self._require_oversight()
        q = {k: v[0] for k, v in query.items()}
        if method == "GET":
            if parts == ["models"]:
                overrides = ov.overrides()
                now = self.clock()
                out = []
                for m in self.models():
                    d = dict(m)
                    o = overrides.get(d.get("name"))
                    d["override"] = o if o and o["active"] and (o.get("until") is None or o["until"] > now) else None
                    out.append(d)
                return 200, {"models": out}
            if parts == ["alerts"]:
                return 200, {"alerts": ov.list_alerts(model=q.get("model"), state=q.get("state"))}
            if len(parts) == 2 and parts[0] == "alerts":
                return 200, ov.get_alert(parts[1])
            if parts == ["retrains"]:
                return 200, {"retrains": ov.list_retrains(status=q.get("status"), model=q.get("model"),
                                                          kind=q.get("kind", "retrain"))}
            if len(parts) == 2 and parts[0] == "retrains":
                return 200, ov.get_retrain(parts[1])
            if parts == ["silences"]:
                return 200, {"silences": ov.list_silences()}
            raise _HttpError(404, f"no such endpoint: GET {path}")
        if method != "POST":
            raise _HttpError(405, f"method {method} not allowed on {path}")
        body = body or {}
        who = body.get("who")
        now = self.clock()
        if parts == ["erasures"]:
            return self._erase(body, who)
        if self.commands is not None:
            return self._command(parts, path, body, who, now)
        if len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack":
            return 200, ov.acknowledge(parts[1], who, body.get("reason") or "")
        if len(parts) == 3 and parts[0] == "alerts" and parts[2] == "silence":
            return 200, ov.silence(who=who, reason=body.get("reason"), until=_time_arg(body, now), alert_id=parts[1])
        if parts == ["silences"]:
            return 200, ov.silence(who=who, reason=body.get("reason"), until=_time_arg(body, now),
                                   model=body.get("model"), rule=body.get("rule"))
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "override":
            active = body.get("active", True)
            if not isinstance(active, bool):
                raise _HttpError(400, f"active must be true or false, got {active!r}")
            until = _time_arg(body, now) if ("until" in body or "duration_seconds" in body) else None
            return 200, ov.override(parts[1], who, body.get("why"), active=active, until=until)
        if len(parts) == 3 and parts[0] == "retrains" and parts[2] in ("approve", "reject"):
            fn = ov.approve if parts[2] == "approve" else ov.reject
            req = msgspec.to_builtins(fn(parts[1], who, body.get("reason")))
            if parts[2] == "approve" and self.on_approve is not None:
                if hooks_in_background:
                    threading.Thread(target=self._run_on_approve, args=(req,), name="driftline-on-approve",
                                     daemon=True).start()
                else:
                    self._run_on_approve(req)
            return 200, req
        raise _HttpError(404, f"no such endpoint: POST {path}")

    def _run_on_approve(self, req: dict) -> None:
        try:
            self.on_approve(req)
        except Exception:  # the approval is recorded; sending is retried by the scheduler
            log.exception("on_approve hook failed for retrain %s", req.get("id"))

    def _erase(self, body: dict, who: Any) -> tuple[int, Any]:
        """``POST /api/erasures {"prediction_id", "who"}``: this process's stores only (with
        state.backend = "kafka", every replica must be asked)."""
        if self.on_erase is None:
            raise _HttpError(503, "erasure is not available in this process")
        pid = body.get("prediction_id")
        if not isinstance(pid, str) or not pid:
            raise _HttpError(400, "prediction_id must be a non-empty string")
        if not isinstance(who, str) or not who.strip():
            raise _HttpError(400, "who is required (the person requesting the erasure, for the audit trail)")
        return self.on_erase(pid, who.strip())

    def _command(self, parts: list[str], path: str, body: dict, who: Any, now: float) -> tuple[int, Any]:
        """The POST endpoints as commands: the same arguments, checked here as far as a
        replica can without the target; 202 once the command is on the topic."""
        submit = self.commands.submit
        if len(parts) == 3 and parts[0] == "alerts" and parts[2] == "ack":
            return 202, submit("ack", parts[1], {"reason": body.get("reason") or ""}, who)
        if len(parts) == 3 and parts[0] == "alerts" and parts[2] == "silence":
            return 202, submit("silence", parts[1], {"reason": body.get("reason"), "until": _time_arg(body, now)}, who)
        if parts == ["silences"]:
            if not isinstance(body.get("model"), str) or not body["model"]:
                raise _HttpError(400, "model is required (a silence by model, optionally with rule)")
            return 202, submit("silence", "", {"reason": body.get("reason"), "until": _time_arg(body, now),
                                               "model": body["model"], "rule": body.get("rule")}, who)
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "override":
            active = body.get("active", True)
            if not isinstance(active, bool):
                raise _HttpError(400, f"active must be true or false, got {active!r}")
            until = _time_arg(body, now) if ("until" in body or "duration_seconds" in body) else None
            return 202, submit("override", parts[1], {"why": body.get("why"), "active": active, "until": until}, who)
        if len(parts) == 3 and parts[0] == "retrains" and parts[2] in ("approve", "reject"):
            return 202, submit(parts[2], parts[1], {"reason": body.get("reason")}, who)
        raise _HttpError(404, f"no such endpoint: POST {path}")

    def handle_slack(self, body: bytes, headers: Any) -> None:
        """A Slack button press: verified, carried out as the API POST it stands for, and
        answered on the payload's response_url (see :mod:`monitor.slack_actions`)."""
        sa = self.slack_actions
        try:
            sa.verify(body, headers)
        except SlackAuthError as exc:
            sa.count("unknown", exc.reason)
            log.warning("/slack/actions refused (%s): %s", exc.reason, exc)
            raise _HttpError(401, str(exc)) from None
        try:
            click = sa.parse(body)
        except SlackPayloadError as exc:
            sa.count("unknown", "bad_payload")
            raise _HttpError(400, str(exc)) from None
        outcomes: list[tuple[str, int | None, str | None]] = []
        for target, (path, api_body) in zip(click.targets, click.api_calls(), strict=True):
            try:
                # Slack shows an error after 3 s: sending the approved retrain must not hold the answer.
                status, _ = self.handle_api("POST", path, {}, dict(api_body), hooks_in_background=True)
                outcomes.append((target, status, None))
            except _HttpError as exc:
                outcomes.append((target, None, exc.message))
            except DriftlineError as exc:  # oversight refusals; a command that was not published
                outcomes.append((target, None, str(exc)))
        for _, status, _ in outcomes:
            sa.count(click.action_id, {200: "carried_out", 202: "submitted"}.get(status, "failed"))
        log.info("Slack action %s on %s by %s: %s", click.action_id, ",".join(click.targets), click.actor,
                 ", ".join(f"{t}={s or e}" for t, s, e in outcomes))
        sa.respond(click.response_url, sa.reply(click, outcomes, self.clock()))

    def overview(self, query: dict) -> str:
        """The /ui page. Report links carry the page link's expiry (or an hour with the token),
        signed, so they open in the same browser."""
        ov = self._require_oversight()
        now = self.clock()
        try:
            expires = int(query["expires"][0]) if "expires" in query else int(now + 3600)
        except ValueError:
            expires = int(now + 3600)

        def report_href(alert_id: str) -> str | None:
            name = f"{alert_id}.html"
            try:
                self.report_file(name)
            except _HttpError:
                return None
            return report_link("", name, self.api_token, expires)

        models = self.handle_api("GET", "/api/models", {}, None)[1]["models"]
        alerts = [a for a in ov.list_alerts(now=now) if a["state"] != "resolved"]
        pending = ov.list_retrains(status="pending", kind="all")
        return render_overview(models=models, alerts=alerts, pending=pending, now=now, report_href=report_href)

    def report_file(self, name: str) -> Path:
        if self.reports_dir is None:
            raise _HttpError(404, "reports are not enabled")
        if not _REPORT_NAME.match(name) or ".." in name:
            raise _HttpError(404, f"no report named {name!r}")
        base = self.reports_dir.resolve()
        path = (base / name).resolve()
        if path.parent != base or not path.is_file():
            raise _HttpError(404, f"no report named {name!r}")
        return path


def _make_handler(app: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "driftline"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = 30  # a client that stops sending does not hold a thread forever

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s %s", self.address_string(), format % args)

        # -------------------------------------------------------- responses

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None,
                  close: bool = False) -> None:
            try:
                self._send_unguarded(status, body, content_type, headers, close)
            except (BrokenPipeError, ConnectionResetError):
                # The client went away (a refused upload often does): nothing left to tell it.
                self.close_connection = True

        def _send_unguarded(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None,
                            close: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None, close: bool = False) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", headers, close)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False) -> None:
            self._json(status, {"error": message, "status": status}, headers, close)

        # -------------------------------------------------------- dispatch

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            path = split.path
            try:
                if path == "/metrics" and method == "GET":
                    encoder, ctype = choose_encoder(self.headers.get("Accept"))
                    self._send(200, encoder(app.registry), ctype)
                elif path in ("/livez", "/healthz") and method == "GET":
                    ok = bool(app.live())
                    self._send(200 if ok else 503, b"ok\n" if ok else b"poll loop stalled\n", "text/plain; charset=utf-8")
                elif path == "/readyz" and method == "GET":
                    ok, reason = app.ready()
                    self._send(200 if ok else 503, f"{reason or ('ready' if ok else 'not ready')}\n".encode(),
                               "text/plain; charset=utf-8")
                elif path == "/api" or path.startswith("/api/"):
                    self._api(method, path, parse_qs(split.query))
                elif path == "/ui":
                    self._ui(method, parse_qs(split.query))
                elif path == "/slack/actions":
                    self._slack(method)
                else:
                    self._drain()
                    self._error(404, f"no such path: {path}", close=self.close_connection)
            except _HttpError as exc:
                close = exc.close or exc.status == 413 or self.close_connection
                self._error(exc.status, exc.message, exc.headers, close=close)
            except Exception:
                log.exception("HTTP handler failed for %s %s", method, path)
                self._error(500, "internal error (see the daemon's log)", close=True)

        def _drain(self) -> None:
            """Read a small body we do not use, so the connection stays in sync; any other
            body (chunked, oversized, malformed length) ends the connection after the reply."""
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
            elif length and length.isdigit() and 0 < int(length) <= app.max_body_bytes:
                self.rfile.read(int(length))
            elif length and length != "0":
                self.close_connection = True

        def _rate_limit(self) -> None:
            allowed, wait = app.limiter.allow(self.client_address[0])
            if not allowed:
                self._drain()
                raise _HttpError(429, f"rate limit of {app.rate_limit_per_minute} requests per minute exceeded",
                                 {"Retry-After": str(max(1, int(wait + 0.999)))})

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise _HttpError(411, "chunked bodies are not accepted; send Content-Length", close=True)
            length_text = self.headers.get("Content-Length") or "0"
            if not length_text.isdigit():
                raise _HttpError(400, f"bad Content-Length {length_text!r}", close=True)
            length = int(length_text)
            if length > app.max_body_bytes:
                raise _HttpError(413, f"request body of {length} bytes exceeds the limit of {app.max_body_bytes}")
            return self.rfile.read(length) if length else b""

        def _ui(self, method: str, query: dict) -> None:
            self._rate_limit()
            self._drain()
            if method != "GET":
                raise _HttpError(405, f"method {method} not allowed on /ui (it is read-only)", {"Allow": "GET, HEAD"})
            if not app.api_token:
                raise _HttpError(404, "the overview is disabled (http.api_token is empty)")
            app._check_auth(self.headers.get("Authorization"), "/ui", query)
            page = app.overview(query).encode()
            self._send(200, page, "text/html; charset=utf-8",
                       {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer",
                        "X-Frame-Options": "DENY"})

        def _slack(self, method: str) -> None:
            self._rate_limit()
            if method != "POST":
                self._drain()
                raise _HttpError(405, f"method {method} not allowed on /slack/actions", {"Allow": "POST"})
            if app.slack_actions is None:
                self._drain()
                raise _HttpError(404, "Slack actions are disabled (sinks.slack.signing_secret is empty)")
            app.handle_slack(self._read_body(), self.headers)
            # Slack's acknowledgement: 200 with no body; the outcome went to the response_url.
            self._send(200, b"", "text/plain; charset=utf-8")

        def _api(self, method: str, path: str, query: dict) -> None:
            self._rate_limit()
            if not app.api_token:
                self._drain()
                raise _HttpError(404, "the API is disabled (http.api_token is empty)")
            try:
                app._check_auth(self.headers.get("Authorization"), path, query)
            except _HttpError:
                self._drain()
                raise
            raw = self._read_body()
            body = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise _HttpError(400, f"body is not valid JSON: {exc}") from None
                if not isinstance(body, dict):
                    raise _HttpError(400, "body must be a JSON object")
            if path.startswith("/api/reports/") and method == "GET":
                self._report(unquote(path[len("/api/reports/"):]))
                return
            if (path == "/api/cards" or path.startswith("/api/cards/")) and method == "GET":
                self._card(unquote(path[len("/api/cards"):].lstrip("/")))
                return
            try:
                status, payload = app.handle_api(method, path, query, body)
            except NotFoundError as exc:
                raise _HttpError(404, str(exc)) from None
            except ConflictError as exc:
                raise _HttpError(409, str(exc)) from None
            except OversightError as exc:
                raise _HttpError(400, str(exc)) from None
            self._json(status, payload)

        def _report(self, name: str) -> None:
            path = app.report_file(name)
            data = path.read_bytes()
            self._send(200, data, "text/html; charset=utf-8")

        def _card(self, name: str) -> None:
            from monitor.cards import card_file, list_cards  # lazy: the module is only for cards

            if app.cards_dir is None:
                raise _HttpError(404, "model cards are not enabled")
            if not name:
                self._json(200, {"cards": list_cards(app.cards_dir)})
                return
            path = card_file(app.cards_dir, name)
            if path is None:
                raise _HttpError(404, f"no card named {name!r}")
            ctype = "application/json" if path.suffix == ".json" else "text/markdown; charset=utf-8"
            self._send(200, path.read_bytes(), ctype)

    return Handler
