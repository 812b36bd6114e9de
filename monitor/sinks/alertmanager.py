"""Prometheus Alertmanager sink: alert transitions as ``POST {url}/api/v2/alerts``.

Alertmanager then routes, groups, silences and inhibits them like any Prometheus alert.
It forgets an alert that is not re-posted (``resolve_timeout``), so the outbox re-posts
each alert every ``resend_interval_seconds`` while it is firing (acknowledged and silenced
alerts are still active conditions, so they are re-posted too), and each firing post
carries ``endsAt = now + 4 x resend_interval`` (what Prometheus does): if Driftline
stops, its alerts expire instead of firing forever. A resolved transition posts the
alert with ``endsAt`` at the resolve time, which Alertmanager shows as resolved.

Labels identify the alert (``alertname`` = rule, ``model``, ``rule``, ``metric``,
``scope``, ``severity``); everything that changes between posts (value, state) is an
annotation, because a changed label would make Alertmanager see a different alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from monitor.errors import ConfigError
from monitor.events import AlertEvent
from monitor.sinks.base import (
    ALERT_KINDS,
    DeliveryOutcome,
    Sink,
    make_http_client,
    outcome_from_response,
    outcome_from_transport_error,
)
from monitor.sinks.render import fmt, iso, link, slice_lines, statement

if TYPE_CHECKING:
    from monitor.outbox import Notification

__all__ = ["AlertmanagerSink", "am_alert"]


def am_alert(
    ev: AlertEvent, now: float, resend_interval_seconds: float, dashboard_url: str = ""
) -> dict:
    """One element of the ``/api/v2/alerts`` array (the ``postableAlert`` schema)."""
    labels = {
        "alertname": ev.rule,
        "model": ev.model,
        "rule": ev.rule,
        "metric": ev.metric,
        "scope": ev.scope,
        "severity": ev.severity,
    }
    annotations = {
        "summary": f"{ev.model}: {ev.rule} {ev.state}",
        "description": statement(ev),
        "value": fmt(ev.value),
        "threshold": fmt(ev.threshold),
        "driftline_state": ev.state,
        "driftline_id": ev.id,
        "window": f"{iso(ev.window_start)}/{iso(ev.window_end)}",
    }
    report = ev.details.get("report_url")
    if report:
        annotations["report"] = str(report)
    where = slice_lines(ev, limit=3)
    if where:
        annotations["where"] = "; ".join(where)
    dash = link(dashboard_url, ev.model)
    if dash:
        annotations["dashboard"] = dash
    alert: dict = {"labels": labels, "annotations": annotations, "startsAt": iso(ev.started_at)}
    if dash:
        alert["generatorURL"] = dash
    if ev.state == "resolved":
        # The resolve happened at the window's end; never in the future (Alertmanager would
        # keep it active until then) and never before the start (it rejects that).
        alert["endsAt"] = iso(max(ev.started_at, min(ev.window_end, now)))
    elif resend_interval_seconds > 0:
        alert["endsAt"] = iso(max(ev.started_at, now) + 4 * resend_interval_seconds)
    return alert


class AlertmanagerSink(Sink):
    """Posts alerts to one Alertmanager (or a load balancer in front of an HA pair)."""

    kinds = ALERT_KINDS
    groupable = True  # one POST carries all alerts of a group; Alertmanager groups its own way
    remind_states = frozenset({"firing", "acknowledged", "silenced"})

    def __init__(
        self,
        url: str,
        *,
        name: str = "alertmanager",
        resend_interval_seconds: float = 60.0,
        dashboard_url: str = "",
        timeout_seconds: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not url:
            raise ConfigError(
                "is empty; set Alertmanager's base URL or disable the sink",
                key="sinks.alertmanager.url",
            )
        if resend_interval_seconds < 0:
            raise ConfigError(
                f"must be >= 0, got {resend_interval_seconds!r}",
                key="sinks.alertmanager.resend_interval_seconds",
            )
        self.name = name
        self.url = url.rstrip("/")
        self.resend_interval_seconds = resend_interval_seconds
        self.repeat_interval_seconds = resend_interval_seconds
        self.dashboard_url = dashboard_url
        self.timeout_seconds = timeout_seconds
        self._client = client if client is not None else make_http_client(timeout_seconds)
        self._clock = clock

    def payload(self, notification: Notification) -> list[dict]:
        now = self._clock()
        return [
            am_alert(ev, now, self.resend_interval_seconds, self.dashboard_url)
            for ev in notification.events
        ]

    def send(self, notification: Notification) -> DeliveryOutcome:
        if not notification.events:
            return DeliveryOutcome.permanent(
                f"{self.name}: {notification.kind} notification has no alerts"
            )
        try:
            response = self._client.post(
                f"{self.url}/api/v2/alerts", json=self.payload(notification)
            )
        except httpx.HTTPError as exc:
            return outcome_from_transport_error(exc, self.name)
        return outcome_from_response(response, self.name)

    def close(self) -> None:
        self._client.close()
