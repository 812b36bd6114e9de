"""Slack incoming-webhook sink: one Block Kit message per notification, with text fallback.

Slack allows about one message per second per incoming webhook and answers 429 with a
``Retry-After`` header when pushed harder; the sink paces itself to ``max_per_second`` and
hands Slack's Retry-After to the outbox, which waits that long before the next attempt.
Slack's 4xx answers (``invalid_payload``, ``no_service``, ``channel_is_archived``) are
configuration problems: not retried, logged and counted as failed.

With ``buttons`` (set when ``sinks.slack.signing_secret`` is, i.e. the webhook belongs to a
Slack app whose interactivity points at ``/slack/actions``), firing alerts carry
Acknowledge / Silence 1 h buttons and pending requests Approve / Reject; each button's
``value`` names the alert ids or the request id it acts on (:mod:`monitor.slack_actions`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from monitor.errors import ConfigError
from monitor.sinks.base import (
    ALL_KINDS,
    DeliveryOutcome,
    Sink,
    make_http_client,
    outcome_from_response,
    outcome_from_transport_error,
)
from monitor.sinks.render import fmt, iso, link, ranked, slice_lines, statement, title

if TYPE_CHECKING:
    from monitor.outbox import Notification

__all__ = [
    "SlackSink",
    "Pacer",
    "slack_message",
    "ACTIONS_BLOCK_ID",
    "ACTION_ACK",
    "ACTION_SILENCE",
    "ACTION_APPROVE",
    "ACTION_REJECT",
    "SILENCE_SECONDS",
]

MAX_LISTED = 10  # drifted features / groups listed in one message; the rest are counted
_STATE_EMOJI = {
    "firing": ":rotating_light:",
    "resolved": ":white_check_mark:",
    "acknowledged": ":eyes:",
    "silenced": ":mute:",
}


# Block Kit interactive buttons: the action_ids /slack/actions understands (a closed set).
ACTIONS_BLOCK_ID = "driftline_actions"
ACTION_ACK = "driftline_ack"
ACTION_SILENCE = "driftline_silence_1h"
ACTION_APPROVE = "driftline_approve"
ACTION_REJECT = "driftline_reject"
SILENCE_SECONDS = 3600  # the Silence button's duration: long enough to investigate, short enough to come back
_VALUE_LIMIT = 2000  # Slack's limit on a button's value


def _esc(text: str) -> str:
    # Slack mrkdwn control characters; anything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Pacer:
    """At most ``rate`` calls per second: ``wait()`` sleeps until the next slot is free."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def _button(action_id: str, label: str, value: str, style: str | None = None,
            confirm: tuple[str, str] | None = None) -> dict:
    b: dict = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": value,
    }
    if style:
        b["style"] = style
    if confirm:
        # Slack's confirmation dialog: an approval sends a retrain or changes serving, so a
        # stray click must not be enough.
        b["confirm"] = {
            "title": {"type": "plain_text", "text": _cut(confirm[0], 100)},
            "text": {"type": "mrkdwn", "text": _cut(confirm[1], 300)},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return b


def _alert_ids_value(events: list) -> tuple[str, int]:
    """Space-separated ids of the firing alerts (one per episode) that fit in a button's
    value, and how many did not fit (a group of more than ~80 scopes)."""
    ids: list[str] = []
    for e in events:
        if e.state == "firing" and e.id not in ids:
            ids.append(e.id)
    value, kept = "", 0
    for i in ids:
        candidate = f"{value} {i}" if value else i
        if len(candidate) > _VALUE_LIMIT:
            break
        value, kept = candidate, kept + 1
    return value, len(ids) - kept


def _alert_blocks(n: Notification, dashboard_url: str, buttons: bool = False) -> tuple[str, list[dict]]:
    events = ranked(n.events)
    state = n.state
    head = title(n.model, state, events, n.repeat)
    first = events[0]
    version = f" (version {first.model_version})" if first.model_version else ""
    fields = [
        f"*Model*\n{_esc(n.model)}{_esc(version)}",
        f"*Rule*\n{_esc(', '.join(sorted({e.rule for e in events})))}",
        f"*Severity*\n{_esc(', '.join(sorted({e.severity for e in events})))}",
        f"*Window*\n{iso(first.window_start)} to {iso(first.window_end)}",
    ]
    if len(events) == 1:
        stat = f"{first.metric} {fmt(first.value)} vs threshold {fmt(first.threshold)}"
        if first.details.get("realised") is not None:
            stat += f" (realised {fmt(first.details['realised'])})"
        fields.append(f"*Statistic*\n{_esc(stat)}")
        fields.append(f"*Scope*\n{_esc(first.scope)}")
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{_STATE_EMOJI.get(state, '')} {head}".strip(), 150),
                "emoji": True,
            },
        },
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields]},
    ]
    if len(events) > 1:
        label = (
            "Affected groups"
            if all(e.scope.startswith("group") for e in events)
            else "Top drifted features / scopes"
        )
        lines = [
            f"• `{_esc(e.scope)}` {_esc(e.metric)} {fmt(e.value)} vs {fmt(e.threshold)}"
            for e in events[:MAX_LISTED]
        ]
        if len(events) > MAX_LISTED:
            lines.append(f"…and {len(events) - MAX_LISTED} more")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(f"*{label}*\n" + "\n".join(lines), 3000)},
            }
        )
    where = next((slice_lines(e) for e in events if e.details.get("slices")), [])
    if where:
        lines = [f"• {_esc(line)}" for line in where]
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut("*Where it fails*\n" + "\n".join(lines), 3000)},
            }
        )
    links = []
    dash = link(dashboard_url, n.model)
    if dash:
        links.append(f"<{dash}|Dashboard>")
    report = next(
        (e.details.get("report_url") for e in events if e.details.get("report_url")), None
    )
    if report:
        links.append(f"<{report}|Drift report>")
    context = [*links, f"started {iso(first.started_at)}", f"id `{_esc(n.key)}`"]
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(context), 3000)}],
        }
    )
    value, left_out = _alert_ids_value(events) if buttons and state == "firing" else ("", 0)
    if value:
        blocks.append(
            {
                "type": "actions",
                "block_id": ACTIONS_BLOCK_ID,
                "elements": [
                    _button(ACTION_ACK, "Acknowledge", value),
                    _button(ACTION_SILENCE, "Silence 1 h", value),
                ],
            }
        )
        if left_out:
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"The buttons act on the first alerts only; "
                                  f"{left_out} more through the API or /ui"}],
                }
            )
    # The fallback is what notifications, screen readers and old clients show.
    text = head + ": " + "; ".join(statement(e) for e in events[:3])
    if len(events) > 3:
        text += f"; and {len(events) - 3} more"
    if where:
        text += f". Where it fails: {where[0]}"
    return _cut(text, 3000), blocks


def _retrain_blocks(n: Notification, dashboard_url: str, buttons: bool = False) -> tuple[str, list[dict]]:
    r = n.retrain
    assert r is not None
    what = (getattr(r, "action", None) or "retrain").capitalize()  # a serving request names its action
    head = f"{what} {r.status}: {r.model}"
    fields = [
        f"*Model*\n{_esc(r.model)}"
        + (f" (version {_esc(r.model_version)})" if r.model_version else ""),
        f"*Status*\n{_esc(r.status)}",
        f"*Reason*\n{_esc(r.reason)}",
        f"*Window*\n{iso(r.window_start)} to {iso(r.window_end)}",
    ]
    if r.decided_by:
        fields.append(
            f"*Decided by*\n{_esc(r.decided_by)}"
            + (f": {_esc(r.decision_reason)}" if r.decision_reason else "")
        )
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(head, 150)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields]},
    ]
    dash = link(dashboard_url, n.model)
    context = ([f"<{dash}|Dashboard>"] if dash else []) + [f"request `{_esc(r.id)}`"]
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    if buttons and r.status == "pending":
        subject = f"{what.lower()} of *{_esc(r.model)}*"
        blocks.append(
            {
                "type": "actions",
                "block_id": ACTIONS_BLOCK_ID,
                "elements": [
                    _button(ACTION_APPROVE, "Approve", r.id, "primary",
                            (f"Approve the {what.lower()}?", f"Approve the {subject}: it is sent at once.")),
                    _button(ACTION_REJECT, "Reject", r.id, "danger",
                            (f"Reject the {what.lower()}?", f"Reject the {subject}.")),
                ],
            }
        )
    return _cut(f"{head}: {r.reason}", 3000), blocks


def slack_message(n: Notification, dashboard_url: str = "", buttons: bool = False) -> dict:
    """The JSON body posted to the webhook: ``text`` fallback plus Block Kit ``blocks``;
    ``buttons`` adds the interactive actions block (see the module docstring)."""
    if n.kind == "retrain":
        text, blocks = _retrain_blocks(n, dashboard_url, buttons)
    else:
        text, blocks = _alert_blocks(n, dashboard_url, buttons)
    return {"text": text, "blocks": blocks}


class SlackSink(Sink):
    """Posts notifications to one Slack incoming webhook.

    ``webhook_url`` comes from the environment (``${SLACK_WEBHOOK_URL}``); ``dashboard_url``
    may contain ``{model}``; ``max_per_second`` paces this webhook (Slack's limit is 1);
    ``buttons`` adds the interactive buttons (only useful when the webhook's Slack app sends
    its interactions to ``/slack/actions``, i.e. ``signing_secret`` is configured).
    """

    kinds = ALL_KINDS
    groupable = True

    def __init__(
        self,
        webhook_url: str,
        *,
        name: str = "slack",
        dashboard_url: str = "",
        max_per_second: float = 1.0,
        timeout_seconds: float = 10.0,
        repeat_interval_seconds: float = 0.0,
        buttons: bool = False,
        client: httpx.Client | None = None,
        pacer: Pacer | None = None,
    ):
        if not webhook_url:
            raise ConfigError(
                "is empty; set it to ${SLACK_WEBHOOK_URL} or disable the sink",
                key="sinks.slack.webhook_url",
            )
        if not max_per_second > 0:
            raise ConfigError(
                f"must be > 0, got {max_per_second!r}", key="sinks.slack.max_per_second"
            )
        if repeat_interval_seconds < 0:
            raise ConfigError(
                f"must be >= 0, got {repeat_interval_seconds!r}",
                key="alerting.repeat_interval_seconds",
            )
        self.name = name
        self.webhook_url = webhook_url
        self.dashboard_url = dashboard_url
        self.max_per_second = max_per_second
        self.timeout_seconds = timeout_seconds
        self.repeat_interval_seconds = repeat_interval_seconds
        self.buttons = bool(buttons)
        self._client = client if client is not None else make_http_client(timeout_seconds)
        self._pacer = pacer if pacer is not None else Pacer(max_per_second)

    def send(self, notification: Notification) -> DeliveryOutcome:
        body = slack_message(notification, self.dashboard_url, self.buttons)
        self._pacer.wait()
        try:
            response = self._client.post(self.webhook_url, json=body)
        except httpx.HTTPError as exc:
            return outcome_from_transport_error(exc, self.name)
        return outcome_from_response(response, self.name)

    def close(self) -> None:
        self._client.close()
