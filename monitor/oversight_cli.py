"""CLI for people overseeing a running daemon: approve, reject, ack, silence, override, and
list alerts or retrain requests. Every command calls the daemon's HTTP API (so the daemon
stays the only writer of its state and audit log).

Where the API is: ``--url``, else ``$DRIFTLINE_URL``, else the config's ``[http]`` host
and port. The token: ``--token-file``, else ``$DRIFTLINE_API_TOKEN``, else the config's
``http.api_token``. Who decides: ``--by`` (default ``$USER``).

Works with the ``monitor.cli`` parser (``main(args)`` dispatches on ``args.command``) and
stand-alone: ``python -m monitor.oversight_cli approve <id> --reason ...``.

``ui-link`` calls nothing: it signs a link to the daemon's read-only ``/ui`` page with the
token (base URL: ``--url``, ``$DRIFTLINE_URL``, the config's ``http.external_url``, then
``[http]``), valid for ``--hours``, for someone to open in a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["main", "build_parser", "ApiClient", "ApiError"]

DEFAULT_URL = "http://127.0.0.1:9108"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class ApiError(Exception):
    """A request the daemon refused or could not be reached for; the message says which."""


class ApiClient:
    """Thin httpx client for the oversight API."""

    def __init__(self, url: str, token: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
        )

    def request(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> Any:
        try:
            resp = self._client.request(method, path, json=body, params={k: v for k, v in (params or {}).items() if v})
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot reach the Driftline API at {self.url}: {exc} "
                "(is the daemon running? set --url or $DRIFTLINE_URL)"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.url}{path} failed: {type(exc).__name__}: {exc}") from None
        try:
            payload = resp.json()
        except ValueError:
            payload = {"error": resp.text[:300]}
        if resp.status_code == 401:
            raise ApiError(
                f"the API at {self.url} refused the token (401: {payload.get('error', '')}); "
                "check $DRIFTLINE_API_TOKEN or --token-file against the daemon's http.api_token"
            )
        if resp.status_code == 404:
            raise ApiError(f"not found (404): {payload.get('error', resp.text[:300])}")
        if resp.status_code == 409:
            raise ApiError(f"conflict (409): {payload.get('error', '')}")
        if resp.status_code == 429:
            raise ApiError(f"rate limited (429); retry in {resp.headers.get('retry-after', '?')} s")
        if resp.status_code >= 400:
            raise ApiError(f"HTTP {resp.status_code}: {payload.get('error', resp.text[:300])}")
        return payload

    def close(self) -> None:
        self._client.close()


def _config(ns: argparse.Namespace) -> Any | None:
    path = getattr(ns, "config", None)
    if not path or not Path(path).exists():
        return None
    from monitor.config import load_config  # lazy: --url and a token need no config
    from monitor.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as exc:
        raise ApiError(f"cannot read {path}: {exc}") from None


def _resolve_url(ns: argparse.Namespace, external: bool = False) -> str:
    if getattr(ns, "url", None):
        return ns.url
    if os.environ.get("DRIFTLINE_URL"):
        return os.environ["DRIFTLINE_URL"]
    cfg = _config(ns)
    if cfg is not None and external and cfg.http.external_url:
        return cfg.http.external_url
    if cfg is not None:
        host = cfg.http.host
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"http://{host}:{cfg.http.port}"
    return DEFAULT_URL


def _resolve_token(ns: argparse.Namespace) -> str:
    token_file = getattr(ns, "token_file", None)
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(f"cannot read --token-file {token_file!r}: {exc}") from None
        if not token:
            raise ApiError(f"--token-file {token_file!r} is empty")
        return token
    if os.environ.get("DRIFTLINE_API_TOKEN"):
        return os.environ["DRIFTLINE_API_TOKEN"]
    cfg = _config(ns)
    if cfg is not None and cfg.http.api_token:
        return cfg.http.api_token
    raise ApiError("no API token: set $DRIFTLINE_API_TOKEN or pass --token-file")


def _who(ns: argparse.Namespace) -> str:
    who = getattr(ns, "by", None) or os.environ.get("USER", "")
    if not who:
        raise ApiError("who decides is unknown: pass --by NAME")
    return who


def _until(ns: argparse.Namespace) -> dict:
    duration = getattr(ns, "duration", None)
    if duration is None:
        return {}
    if not duration > 0:
        raise ApiError(f"--duration must be > 0 seconds, got {duration!r}")
    return {"until": time.time() + float(duration)}


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2))
        return
    if isinstance(obj, dict) and "alerts" in obj:
        rows = obj["alerts"]
        print(f"{'ID':24}  {'STATE':12}  {'MODEL':16}  {'RULE':20}  SEVERITY")
        for a in rows:
            print(f"{a['id']:24}  {a['state']:12}  {a['model'][:16]:16}  {a['rule'][:20]:20}  {a['severity']}")
        print(f"{len(rows)} alert(s)")
    elif isinstance(obj, dict) and "retrains" in obj:
        rows = obj["retrains"]
        print(f"{'ID':24}  {'KIND':8}  {'STATUS':9}  {'MODEL':16}  REASON")
        for r in rows:
            print(f"{r['id']:24}  {r.get('kind', 'retrain'):8}  {r['status']:9}  {r['model'][:16]:16}  {r['reason']}")
        print(f"{len(rows)} request(s)")
    else:
        print(json.dumps(obj, indent=2))


def _run(ns: argparse.Namespace, api: ApiClient) -> Any:
    cmd = ns.command
    reason = getattr(ns, "reason", "") or ""
    if cmd in ("approve", "reject"):
        if not reason:
            raise ApiError(f"{cmd} needs --reason (it goes into the audit log)")
        return api.request("POST", f"/api/retrains/{quote(ns.id, safe='')}/{cmd}", {"who": _who(ns), "reason": reason})
    if cmd == "ack":
        return api.request("POST", f"/api/alerts/{quote(ns.id, safe='')}/ack", {"who": _who(ns), "reason": reason})
    if cmd == "silence":
        if not reason:
            raise ApiError("silence needs --reason")
        body = {"who": _who(ns), "reason": reason, **_until(ns)}
        if "until" not in body:
            raise ApiError("silence needs --duration SECONDS")
        if getattr(ns, "model_wide", False):
            return api.request("POST", "/api/silences", {**body, "model": ns.id, "rule": getattr(ns, "rule", None)})
        return api.request("POST", f"/api/alerts/{quote(ns.id, safe='')}/silence", body)
    if cmd == "override":
        if not reason:
            raise ApiError("override needs --reason (why a person takes over)")
        body = {"who": _who(ns), "why": reason, "active": not getattr(ns, "lift", False), **_until(ns)}
        return api.request("POST", f"/api/models/{quote(ns.id, safe='')}/override", body)
    if cmd == "alerts":
        return api.request("GET", "/api/alerts", params={"model": getattr(ns, "model", None), "state": getattr(ns, "state", None)})
    if cmd == "retrains":
        return api.request("GET", "/api/retrains", params={"model": getattr(ns, "model", None), "status": getattr(ns, "status", None),
                                                            "kind": getattr(ns, "kind", None)})
    raise ApiError(f"monitor.oversight_cli does not serve the command {cmd!r}")


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run one oversight command; returns the exit code (0 ok, 1 refused/unreachable)."""
    ns = args if isinstance(args, argparse.Namespace) else build_parser().parse_args(args)
    if ns.command == "ui-link":
        return _ui_link(ns)
    try:
        api = ApiClient(_resolve_url(ns), _resolve_token(ns))
        try:
            result = _run(ns, api)
        finally:
            api.close()
    except ApiError as exc:
        print(f"driftline {ns.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    _print(result, getattr(ns, "json", False))
    return EXIT_OK


def _ui_link(ns: argparse.Namespace) -> int:
    from monitor.http import ui_link  # lazy: the other commands need no server code

    hours = getattr(ns, "hours", 24.0)
    try:
        if not (isinstance(hours, int | float) and 0 < hours <= 24 * 31):
            raise ApiError(f"--hours must be in (0, 744] (a link is a bearer credential until it expires), got {hours!r}")
        link = ui_link(_resolve_url(ns, external=True), _resolve_token(ns), int(time.time() + hours * 3600))
    except ApiError as exc:
        print(f"driftline ui-link: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(link)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The stand-alone parser (``monitor.cli`` declares the same arguments in its table)."""
    p = argparse.ArgumentParser(prog="driftline", description="oversee a running Driftline daemon")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", "-c", default=os.environ.get("DRIFTLINE_CONFIG", "config.toml"))
        sp.add_argument("--url", help="API base URL (default: $DRIFTLINE_URL or the config's [http])")
        sp.add_argument("--token-file", help="file holding the API token (default: $DRIFTLINE_API_TOKEN)")
        sp.add_argument("--json", action="store_true", help="print the raw JSON response")

    for name, what in (("approve", "retrain, rollback or disable request"),
                      ("reject", "retrain, rollback or disable request"), ("ack", "alert")):
        sp = sub.add_parser(name)
        common(sp)
        sp.add_argument("id", help=f"id of the {what}")
        sp.add_argument("--by", default=os.environ.get("USER", ""))
        sp.add_argument("--reason", default="")
    sp = sub.add_parser("silence")
    common(sp)
    sp.add_argument("id", help="alert id (or a model name with --model-wide)")
    sp.add_argument("--model-wide", action="store_true", help="silence every alert of the model ID")
    sp.add_argument("--rule", help="with --model-wide: only this rule")
    sp.add_argument("--by", default=os.environ.get("USER", ""))
    sp.add_argument("--reason", default="")
    sp.add_argument("--duration", type=float, required=True, help="seconds")
    sp = sub.add_parser("override")
    common(sp)
    sp.add_argument("id", help="model name")
    sp.add_argument("--by", default=os.environ.get("USER", ""))
    sp.add_argument("--reason", default="", help="why a person takes over")
    sp.add_argument("--duration", type=float, default=None, help="seconds (default: until lifted)")
    sp.add_argument("--lift", action="store_true", help="end the override")
    sp = sub.add_parser("alerts")
    common(sp)
    sp.add_argument("--model")
    sp.add_argument("--state", choices=("firing", "acknowledged", "silenced", "resolved"))
    sp = sub.add_parser("retrains")
    common(sp)
    sp.add_argument("--model")
    sp.add_argument("--status", choices=("pending", "approved", "rejected", "sent", "failed", "dry_run"))
    sp.add_argument("--kind", choices=("retrain", "rollback", "disable", "all"),
                    help="which gated requests (default: retrain)")
    sp = sub.add_parser("ui-link")
    common(sp)
    sp.add_argument("--hours", type=float, default=24.0, help="how long the link works (default 24)")
    return p


if __name__ == "__main__":
    sys.exit(main())
