"""Slack interactivity: a click on a message's button, verified and turned into the API call
a person would have made.

Slack POSTs ``application/x-www-form-urlencoded`` with a ``payload`` JSON field to the app's
Request URL (``/slack/actions``), signed with the app's signing secret: ``X-Slack-Signature:
v0=HMAC-SHA256(secret, "v0:<timestamp>:<body>")`` and ``X-Slack-Request-Timestamp``. A
request is refused (401) when either header is missing, the timestamp is more than five
minutes from now (an old request replayed), the signature does not match
(``slack_sdk.signature.SignatureVerifier``), or the same signature was already accepted
within those five minutes (a fresh request replayed).

A verified click becomes the same POST the API serves (:meth:`monitor.http.HttpServer.handle_api`),
so it works in both state backends (sqlite: carried out here; kafka: published as a command,
applied by the model's owner). The person is ``slack:<user id>`` (the audit entry's actor);
the reason names them (``Approved in Slack by alice (U123)``), so the audit data carries
the user name too. Slack is answered 200 at once with an empty body (its documented
acknowledgement of ``block_actions``); the outcome goes to the payload's ``response_url``:
the original message with its buttons replaced by who did what, or an ephemeral text to the
person when nothing was done.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from slack_sdk.signature import SignatureVerifier

from monitor.sinks.render import iso
from monitor.sinks.slack import (
    ACTION_ACK,
    ACTION_APPROVE,
    ACTION_REJECT,
    ACTION_SILENCE,
    ACTIONS_BLOCK_ID,
    SILENCE_SECONDS,
)

__all__ = ["SlackActions", "SlackAuthError", "SlackPayloadError", "Click", "MAX_AGE_SECONDS"]

log = logging.getLogger("driftline.slack")

#: Slack's documented bound on a request's age; older ones are refused as replays.
MAX_AGE_SECONDS = 300
_MAX_SEEN = 10_000  # signatures remembered for replay refusal (5 minutes of clicks is far fewer)
# Slack's response URLs; a payload naming another host is not followed (no request forgery
# through a leaked signing secret).
_RESPONSE_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_USER = re.compile(r"^[A-Za-z0-9]{1,64}$")

# action_id -> (what it acts on, API verb, past tense for people)
_ACTIONS = {
    ACTION_ACK: ("alerts", "ack", "Acknowledged"),
    ACTION_SILENCE: ("alerts", "silence", "Silenced for 1 h"),
    ACTION_APPROVE: ("retrains", "approve", "Approved"),
    ACTION_REJECT: ("retrains", "reject", "Rejected"),
}


class SlackAuthError(Exception):
    """The request is not a fresh request signed by Slack (answered 401); ``reason`` is the
    metric's outcome: unsigned, bad_signature, stale or replayed."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class SlackPayloadError(Exception):
    """A signed request this endpoint cannot act on (answered 400)."""


@dataclass(frozen=True)
class Click:
    """One button press: who pressed which action on which alert ids / request id."""

    action_id: str
    targets: tuple[str, ...]
    user_id: str
    user_name: str
    response_url: str | None
    message: dict | None  # the message the button was on (to rewrite it), when Slack sent it

    @property
    def actor(self) -> str:
        return f"slack:{self.user_id}"

    @property
    def verb(self) -> str:
        return _ACTIONS[self.action_id][2]

    def api_calls(self) -> list[tuple[str, dict]]:
        """The ``(path, body)`` of the API POST for each target."""
        collection, op, verb = _ACTIONS[self.action_id]
        body: dict[str, Any] = {"who": self.actor, "reason": f"{verb} in Slack by {self.user_name} ({self.user_id})"}
        if op == "silence":
            body["duration_seconds"] = SILENCE_SECONDS
        return [(f"/api/{collection}/{quote(t, safe='')}/{op}", body) for t in self.targets]


class SlackActions:
    """Verifies Slack's interaction requests and replies to them.

    ``signing_secret`` is the Slack app's (``[sinks.slack] signing_secret``, from the
    environment). ``respond(url, message)`` posts a reply to a response URL (default: an
    HTTP POST off the request thread, so Slack gets its 200 at once). ``metrics``: the
    :class:`monitor.metrics.Metrics` whose ``driftline_slack_actions_total`` it counts in.
    """

    def __init__(
        self,
        signing_secret: str,
        *,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        respond: Callable[[str, dict], None] | None = None,
        metrics: Any = None,
    ):
        if not isinstance(signing_secret, str) or not signing_secret.strip():
            raise ValueError("sinks.slack.signing_secret must be a non-empty string to serve /slack/actions")
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self._verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self._seen: dict[str, float] = {}  # signature -> request timestamp, for replay refusal
        self._lock = threading.Lock()
        self._respond = respond
        self.metrics = metrics
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    @classmethod
    def from_config(cls, config: Any, metrics: Any = None) -> SlackActions | None:
        """None when no signing secret is configured (``/slack/actions`` then answers 404)."""
        secret = config.sinks.slack.signing_secret
        return cls(secret, timeout_seconds=config.delivery.timeout_seconds, metrics=metrics) if secret else None

    def count(self, action: str, outcome: str) -> None:
        """``action``: one of the button action_ids, or ``unknown`` before the payload is read."""
        if self.metrics is not None:
            self.metrics.slack_actions.labels(action=action if action in _ACTIONS else "unknown",
                                              outcome=outcome).inc()

    # ------------------------------------------------------------------ verification

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise :class:`SlackAuthError` unless ``body`` is a fresh request signed by Slack."""
        h = {k.lower(): v for k, v in headers.items()}
        timestamp, signature = h.get("x-slack-request-timestamp"), h.get("x-slack-signature")
        if not timestamp or not signature:
            raise SlackAuthError("missing X-Slack-Signature or X-Slack-Request-Timestamp: not signed by Slack",
                                 "unsigned")
        try:
            ts = int(timestamp)
        except ValueError:
            raise SlackAuthError(f"X-Slack-Request-Timestamp is not Unix seconds: {timestamp[:40]!r}",
                                 "bad_signature") from None
        now = self.clock()
        if abs(now - ts) > MAX_AGE_SECONDS:
            raise SlackAuthError(
                f"X-Slack-Request-Timestamp is {int(now - ts)} s from now, more than {MAX_AGE_SECONDS} s: "
                "refused as a replay (or the clocks disagree)",
                "stale",
            )
        if not self._verifier.is_valid(body, timestamp, signature):
            raise SlackAuthError("X-Slack-Signature does not match the body signed with sinks.slack.signing_secret",
                                 "bad_signature")
        with self._lock:
            # Within the five minutes, the same signature means the same request sent again.
            horizon = now - MAX_AGE_SECONDS
            if signature in self._seen:
                raise SlackAuthError("this signed request was already received: refused as a replay", "replayed")
            if len(self._seen) >= _MAX_SEEN:
                for s in [s for s, t in self._seen.items() if t < horizon]:
                    del self._seen[s]
                while len(self._seen) >= _MAX_SEEN:  # still full: forget the oldest
                    del self._seen[next(iter(self._seen))]
            self._seen[signature] = ts

    # ------------------------------------------------------------------ payload

    def parse(self, body: bytes) -> Click:
        """The button press in a verified body (:class:`SlackPayloadError` when there is none)."""
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
            payload = json.loads(form["payload"][0])
        except (UnicodeDecodeError, ValueError, KeyError) as exc:
            raise SlackPayloadError(f"body is not a form with a JSON payload field: {exc}") from None
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            kind = payload.get("type") if isinstance(payload, dict) else type(payload).__name__
            raise SlackPayloadError(f"payload type {kind!r} is not handled (only block_actions)")
        user = payload.get("user") or {}
        user_id = user.get("id")
        if not isinstance(user_id, str) or not _USER.match(user_id):
            raise SlackPayloadError(f"payload.user.id is not a Slack user id: {user_id!r}")
        name = user.get("username") or user.get("name") or user_id
        actions = payload.get("actions") or []
        ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in _ACTIONS]
        if not ours:
            got = [a.get("action_id") for a in actions if isinstance(a, dict)]
            raise SlackPayloadError(f"no Driftline action in payload.actions (got {got}); one of {sorted(_ACTIONS)}")
        action = ours[0]
        targets = tuple(str(action.get("value") or "").split())
        bad = [t for t in targets if not _ID.match(t)]
        if not targets or bad:
            raise SlackPayloadError(f"action {action['action_id']} value names no valid id: {action.get('value')!r}")
        response_url = payload.get("response_url")
        message = payload.get("message")
        return Click(
            action_id=action["action_id"],
            targets=targets,
            user_id=user_id,
            user_name=str(name)[:80],
            response_url=response_url if isinstance(response_url, str) else None,
            message=message if isinstance(message, dict) else None,
        )

    # ------------------------------------------------------------------ replies

    def reply(self, click: Click, outcomes: list[tuple[str, int | None, str | None]], now: float) -> dict:
        """The message for ``response_url`` from each target's ``(target, status, error)``:
        200 carried out, 202 submitted as a command, or None with the error."""
        done = [t for t, status, _ in outcomes if status == 200]
        queued = [t for t, status, _ in outcomes if status == 202]
        failed = [(t, e) for t, status, e in outcomes if status not in (200, 202)]
        who = f"<@{click.user_id}> ({_esc(click.user_name)})"
        lines = []
        if done:
            lines.append(f"{click.verb} by {who} at {iso(now)}" + (f": {len(done)} alerts" if len(done) > 1 else ""))
        if queued:
            lines.append(f"{click.verb} by {who}: submitted to the replica that owns the model "
                         f"({len(queued)} {'command' if len(queued) == 1 else 'commands'})")
        lines += [f"Could not {_ACTIONS[click.action_id][1]} `{_esc(t)}`: {_esc(e or '')}" for t, e in failed]
        text = "\n".join(lines)
        if done and click.message is not None:
            # The buttons have done their job: the message now says who did what instead.
            blocks = [b for b in click.message.get("blocks") or [] if b.get("block_id") != ACTIONS_BLOCK_ID]
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]})
            return {"replace_original": True, "text": click.message.get("text") or text, "blocks": blocks}
        return {"response_type": "ephemeral", "replace_original": False, "text": text}

    def respond(self, url: str | None, message: dict) -> None:
        """Post ``message`` to a Slack response URL, off the caller's thread."""
        if not url:
            log.info("Slack action without a response_url; nothing to reply to")
            return
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.hostname not in _RESPONSE_HOSTS:
            log.warning("Slack response_url host %r is not Slack's; not followed", parts.hostname)
            return
        if self._respond is not None:
            self._respond(url, message)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="driftline-slack-reply")
                self._client = httpx.Client(timeout=self.timeout_seconds)
        self._pool.submit(self._post, url, message)

    def _post(self, url: str, message: dict) -> None:
        try:
            r = self._client.post(url, json=message)
            if r.status_code >= 300:
                log.warning("Slack response_url answered %s: %s", r.status_code, r.text[:200])
        except httpx.HTTPError as exc:
            log.warning("Slack response_url not reached: %s", exc)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()


class _Clock:
    """slack_sdk's clock interface over our injectable clock."""

    def __init__(self, now: Callable[[], float]):
        self._now = now

    def now(self) -> float:
        return self._now()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
