"""Plain HTTP target: a JSON document describing the request, to any endpoint.

The body is versioned (``kind``/``version``) and carries an ``Idempotency-Key`` header equal
to the request id, so a receiver can drop a re-send.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.events import RetrainRequest
from monitor.triggers.base import TriggerCall, TriggerTarget, retrain_payload

__all__ = ["HttpTarget", "PAYLOAD_KIND", "PAYLOAD_VERSION"]

PAYLOAD_KIND = "driftline.retrain_request"
PAYLOAD_VERSION = 1


class HttpTarget(TriggerTarget):
    """``method``: POST (default), PUT or PATCH."""

    kind = "http"

    def __init__(self, url: str, method: str = "POST", token: str = "", headers: Mapping[str, str] | None = None):
        super().__init__(url, token, headers)
        method = (method or "POST").upper()
        if method not in ("POST", "PUT", "PATCH"):
            raise ValueError(f"triggers.target.method must be POST, PUT or PATCH, got {method!r}")
        self.method = method

    def build(self, request: RetrainRequest) -> TriggerCall:
        body = {"kind": PAYLOAD_KIND, "version": PAYLOAD_VERSION, **retrain_payload(request)}
        return TriggerCall(self.method, self.url, self._headers({"Idempotency-Key": request.id}), body)
