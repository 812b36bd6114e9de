"""The sink contract: what the outbox's deliverer hands a sink and what it gets back.

A sink turns one :class:`~monitor.outbox.Notification` into one external delivery (an
HTTP request, a Kafka record) and reports a :class:`DeliveryOutcome`; it never retries by
itself. Retries, backoff, ordering and durability belong to the outbox, so every sink gets
them the same way. HTTP sinks share :func:`make_http_client`: redirects are never
followed (a redirect could send a signed alert to a host nobody configured) and every
request has a timeout.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from monitor.outbox import Notification

__all__ = [
    "ALERT_KINDS",
    "ALL_KINDS",
    "DeliveryOutcome",
    "Sink",
    "make_http_client",
    "outcome_from_response",
    "outcome_from_transport_error",
    "parse_retry_after",
]

#: Notification kinds: one alert transition, several transitions of one model from one
#: evaluation, and a retrain request.
ALERT_KINDS = frozenset({"alert", "alert_group"})
ALL_KINDS = frozenset({"alert", "alert_group", "retrain"})

USER_AGENT = "driftline/0.1"
# An absurd Retry-After (or a misread date) must not park a sink for days.
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """Result of one delivery attempt.

    ``ok``: delivered. Otherwise ``retryable`` says whether the outbox tries again
    (network error, 5xx, 429) or marks the notification failed (other 4xx, a redirect,
    a payload the receiver rejects). ``retry_after`` is the receiver's own wait, in
    seconds, which overrides the outbox's backoff.
    """

    ok: bool
    retryable: bool = False
    retry_after: float | None = None
    status_code: int | None = None
    error: str | None = None

    @classmethod
    def success(cls, status_code: int | None = None) -> DeliveryOutcome:
        return cls(ok=True, status_code=status_code)

    @classmethod
    def retry(
        cls, error: str, *, retry_after: float | None = None, status_code: int | None = None
    ) -> DeliveryOutcome:
        return cls(
            ok=False, retryable=True, retry_after=retry_after, status_code=status_code, error=error
        )

    @classmethod
    def permanent(cls, error: str, *, status_code: int | None = None) -> DeliveryOutcome:
        return cls(ok=False, retryable=False, status_code=status_code, error=error)


class Sink(ABC):
    """One delivery target. Subclasses set the class attributes and implement :meth:`send`.

    ``name`` is the outbox's sink column, so it must stay stable across restarts (pending
    rows are matched to sinks by it). ``kinds`` are the notification kinds the sink takes;
    ``groupable`` says whether it gets one grouped notification per model and evaluation
    (human-facing sinks) or one notification per transition (machine-facing logs).
    ``repeat_interval_seconds`` > 0 asks the outbox for reminder notifications while an
    alert stays in one of ``remind_states``.
    """

    name: str = ""
    kinds: frozenset[str] = ALL_KINDS
    groupable: bool = True
    repeat_interval_seconds: float = 0.0
    remind_states: frozenset[str] = frozenset({"firing"})

    @abstractmethod
    def send(self, notification: Notification) -> DeliveryOutcome:
        """Deliver one notification once. Must not raise for delivery failures."""

    def close(self) -> None:  # noqa: B027 - optional hook, most sinks hold nothing
        """Release connections; the deliverer calls it on stop."""


def make_http_client(timeout_seconds: float, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """The HTTP client every HTTP sink uses: no redirects, bounded time per request.
    ``verify``: an SSL context for a private CA (the Kubernetes API server's), else True."""
    if not timeout_seconds > 0:
        raise ValueError(f"delivery.timeout_seconds must be > 0, got {timeout_seconds!r}")
    return httpx.Client(
        follow_redirects=False,
        timeout=httpx.Timeout(timeout_seconds),
        headers={"User-Agent": USER_AGENT},
        verify=verify,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None.

    >>> parse_retry_after("2")
    2.0
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon") is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def outcome_from_response(response: httpx.Response, sink: str) -> DeliveryOutcome:
    """Classify an HTTP response: 2xx ok; 429 and 5xx retried; 3xx and other 4xx permanent."""
    code = response.status_code
    if 200 <= code < 300:
        return DeliveryOutcome.success(code)
    body = response.text[:200] if response.content else ""
    detail = f"{sink}: HTTP {code} from {response.request.url.host}" + (f": {body}" if body else "")
    if code == 429 or code >= 500:
        return DeliveryOutcome.retry(
            detail,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            status_code=code,
        )
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        return DeliveryOutcome.permanent(
            f"{detail}: redirect to {location!r} not followed; configure the final URL",
            status_code=code,
        )
    return DeliveryOutcome.permanent(detail, status_code=code)


def outcome_from_transport_error(exc: httpx.HTTPError, sink: str) -> DeliveryOutcome:
    """Connection refused, DNS failure, timeout: the receiver may be back later."""
    return DeliveryOutcome.retry(f"{sink}: {type(exc).__name__}: {exc}")
