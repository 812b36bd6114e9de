"""The retrain-trigger contract: a target turns an approved RetrainRequest into one HTTP call.

A target builds the request (:meth:`TriggerTarget.build`, pure, so tests check bodies
without a network) and classifies the response. It never retries by itself: the
:class:`~monitor.triggers.sender.RetrainSender` owns retries, backoff and the audit trail.
Outcomes reuse the sinks' :class:`~monitor.sinks.base.DeliveryOutcome` and HTTP client
(no redirects, bounded time), so alerts and triggers classify failures the same way.
"""

from __future__ import annotations

import datetime as dt
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from monitor.events import RetrainRequest
from monitor.sinks.base import DeliveryOutcome, outcome_from_response, outcome_from_transport_error

__all__ = [
    "TriggerCall",
    "TriggerResult",
    "TriggerTarget",
    "retrain_payload",
    "iso_utc",
    "run_id",
    "EXCERPT_CHARS",
]

# Responses are audit-logged; an excerpt is enough to explain a failure and keeps the log small.
EXCERPT_CHARS = 500


def iso_utc(ts: float) -> str:
    """RFC 3339 UTC time with seconds, as workflow engines parse it.

    >>> iso_utc(0.0)
    '1970-01-01T00:00:00Z'
    """
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_id(request: RetrainRequest) -> str:
    """Deterministic run name for a request: a re-send after a timeout names the same run,
    so engines that enforce unique names (Airflow, Argo) create it once."""
    return f"driftline-retrain-{request.id}"


def retrain_payload(request: RetrainRequest) -> dict[str, Any]:
    """The fields every template fills in: model, version, reason, window, evidence, who."""
    return {
        "request_id": request.id,
        "model": request.model,
        "model_version": request.model_version,
        "reason": request.reason,
        "window_start": iso_utc(request.window_start),
        "window_end": iso_utc(request.window_end),
        "approved_by": request.decided_by,
        "decision_reason": request.decision_reason,
        "evidence": request.evidence,
    }


@dataclass(frozen=True)
class TriggerCall:
    """One HTTP request, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any


@dataclass(frozen=True)
class TriggerResult:
    outcome: DeliveryOutcome
    response_excerpt: str = ""
    call: TriggerCall | None = field(default=None, repr=False)


def _need(kind: str, key: str, value: Any, section: str = "triggers.target") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{section}.{key} is required for kind = {kind!r}, got {value!r}")
    return value.strip()


class TriggerTarget(ABC):
    """Base of the targets. Subclasses set ``kind`` and implement :meth:`build`.

    ``token`` becomes ``Authorization: Bearer <token>`` unless ``headers`` sets its own
    Authorization (e.g. Basic for an Airflow with the basic-auth backend).
    """

    kind: str = ""
    #: The config table the target is built from, named in error messages.
    section: str = "triggers.target"
    #: HTTP statuses that mean "this run already exists": a re-send after a lost response.
    already_exists: frozenset[int] = frozenset()

    def __init__(self, url: str, token: str = "", headers: Mapping[str, str] | None = None):
        url = _need(self.kind, "url", url, self.section)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{self.section}.url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.token = token or ""
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}

    def _bearer(self) -> str:
        """The bearer token sent with each call ("" for none)."""
        return self.token

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if extra:
            h.update(extra)
        token = self._bearer()
        if token and not any(k.lower() == "authorization" for k in self.headers):
            h["Authorization"] = f"Bearer {token}"
        h.update(self.headers)
        return h

    @abstractmethod
    def build(self, request: RetrainRequest) -> TriggerCall:
        """The HTTP call for one request (no I/O)."""

    def classify(self, response: httpx.Response) -> DeliveryOutcome:
        if response.status_code in self.already_exists:
            return DeliveryOutcome.success(response.status_code)
        return outcome_from_response(response, f"trigger {self.kind}")

    def send(self, request: RetrainRequest, client: httpx.Client) -> TriggerResult:
        """Send once; never raises for delivery failures."""
        return self.send_call(self.build(request), client)

    def send_call(self, call: TriggerCall, client: httpx.Client) -> TriggerResult:
        """Send one built call once; never raises for delivery failures."""
        try:
            response = client.request(
                call.method, call.url, headers=call.headers, content=json.dumps(call.json).encode()
            )
        except httpx.HTTPError as exc:
            return TriggerResult(outcome_from_transport_error(exc, f"trigger {self.kind}"), "", call)
        return TriggerResult(self.classify(response), response.text[:EXCERPT_CHARS], call)
