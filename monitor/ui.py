"""The read-only overview page served at ``/ui``: models, open alerts and pending approvals
with their evidence, for people without Slack.

Rendered on the server with every value passed through :func:`html.escape`; no script, so
the page's Content-Security-Policy forbids scripts altogether. Acting on what it shows goes
through Slack, the CLI or the API (the page has no forms: a GET link must never change state).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from monitor.sinks.render import fmt, iso

__all__ = ["render_overview", "CONTENT_SECURITY_POLICY"]

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d1d1f}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.8rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}.muted{color:#666}.firing{color:#b00020;font-weight:600}
.acknowledged,.silenced{color:#8a6d00}.pending{color:#0050a0;font-weight:600}
code{font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _t(ts: Any) -> str:
    if not isinstance(ts, int | float) or not math.isfinite(ts):
        return ""
    return _e(iso(float(ts))[:19].replace("T", " ") + " UTC")


def _n(x: Any) -> str:
    """A number as the sinks show it; anything else as text (escaped by the caller)."""
    return fmt(x) if isinstance(x, int | float) and not isinstance(x, bool) else str(x if x is not None else "n/a")


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _model_rows(models: list[dict]) -> list[list[str]]:
    rows = []
    for m in models:
        status = "ready" if m.get("ready") else "warming up"
        o = m.get("override")
        if o:
            status += f"; overridden by {o.get('who')}: {o.get('why')}"
        firing = m.get("firing") or []
        rows.append([
            f"<strong>{_e(m.get('name'))}</strong>",
            _e(m.get("task")),
            _e(status),
            _e(m.get("reference")),
            _e(m.get("window_events")),
            _e(", ".join(f"{f.get('rule')} ({f.get('scope')})" for f in firing)) or '<span class="muted">none</span>',
        ])
    return rows


def _alert_rows(alerts: list[dict], report_href: Callable[[str], str | None]) -> list[list[str]]:
    rows = []
    for a in alerts:
        state = a.get("state")
        note = ""
        if a.get("acknowledged"):
            note = f" by {a['acknowledged'].get('by')}"
        if a.get("silenced"):
            note = f" until {_t(a['silenced'].get('until'))} by {a['silenced'].get('by')}"
        href = report_href(a.get("id") or "")
        rows.append([
            _e(a.get("model")),
            f"<strong>{_e(a.get('rule'))}</strong>",
            _e(f"{a.get('metric')} {_n(a.get('value'))} vs {_n(a.get('threshold'))}"),
            f"<code>{_e(a.get('scope'))}</code>",
            _e(a.get("severity")),
            f'<span class="{_e(state)}">{_e(state)}</span>{_e(note)}',
            _t(a.get("started_at")),
            f'<a href="{_e(href)}">report</a>' if href else '<span class="muted">none</span>',
            f"<code>{_e(a.get('id'))}</code>",
        ])
    return rows


def _evidence(r: dict, report_href: Callable[[str], str | None]) -> str:
    """The alert that caused a request (its evidence record), with its report when one exists."""
    ev = r.get("evidence") or {}
    alert = ev.get("alert") if isinstance(ev.get("alert"), dict) else None
    if alert is None:
        extra = ", ".join(f"{k} = {v}" for k, v in sorted(ev.items()) if not isinstance(v, dict | list))
        return _e(extra) or '<span class="muted">none recorded</span>'
    parts = [
        f"alert <strong>{_e(alert.get('rule'))}</strong> "
        f"{_e(alert.get('metric'))} {_e(_n(alert.get('value')))} vs {_e(_n(alert.get('threshold')))} "
        f"on <code>{_e(alert.get('scope'))}</code>",
        f"alert id <code>{_e(alert.get('id'))}</code>",
    ]
    if alert.get("window_end") is not None:
        parts.insert(1, f"window {_t(alert.get('window_start'))} to {_t(alert.get('window_end'))}")
    href = report_href(alert.get("id") or "")
    if href:
        parts.append(f'<a href="{_e(href)}">evidence report</a>')
    return "<br>".join(parts)


def _pending_rows(pending: list[dict], report_href: Callable[[str], str | None]) -> list[list[str]]:
    return [
        [
            _e(r.get("model")),
            f'<span class="pending">{_e(r.get("kind") or "retrain")}</span>',
            _e(r.get("reason")),
            _t(r.get("created_at")),
            _evidence(r, report_href),
            f"<code>{_e(r.get('id'))}</code>",
        ]
        for r in pending
    ]


def render_overview(
    *,
    models: list[dict],
    alerts: list[dict],
    pending: list[dict],
    now: float,
    report_href: Callable[[str], str | None],
) -> str:
    """The page. ``alerts``: the open ones (firing, acknowledged, silenced); ``pending``:
    requests awaiting a decision; ``report_href(alert_id)``: a link to the alert's evidence
    report, or None when it has none."""
    sections = [
        "<h2>Models</h2>",
        _table(["Model", "Task", "Status", "Reference", "Window events", "Firing rules"], _model_rows(models),
               "No models have reported yet."),
        f"<h2>Open alerts ({len(alerts)})</h2>",
        _table(["Model", "Rule", "Statistic", "Scope", "Severity", "State", "Since", "Evidence", "Id"],
               _alert_rows(alerts, report_href), "No alert is firing."),
        f"<h2>Pending approvals ({len(pending)})</h2>",
        _table(["Model", "Action", "Reason", "Requested", "Evidence", "Request id"],
               _pending_rows(pending, report_href), "Nothing is waiting for a decision."),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Driftline overview</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Driftline overview</h1>"
        f'<p class="muted">Read-only, as of {_t(now)}. Acknowledge, silence, approve or reject in Slack, '
        "with <code>driftline ack</code> / <code>driftline approve</code>, or through the API.</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
