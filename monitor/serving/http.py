"""Generic HTTP target: any serving control API, from a URL and a JSON body template.

``url`` and the string values of ``body`` (JSON text) may hold placeholders such as
``{model}``, ``{action}``, ``{request_id}``, ``{rollback_version}`` (the full list is
``SERVING_PLACEHOLDERS`` in :mod:`monitor.config`); in the URL each value is
percent-encoded, in the body it is inserted into the JSON string, so no value can break
out of either. With no ``body``, a versioned JSON document describing the request is sent.
Every call carries ``Idempotency-Key: {request_id}`` so a receiver can drop a re-send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from monitor.events import ServingRequest
from monitor.serving.base import ServingTarget, fill, request_fields
from monitor.triggers.base import TriggerCall, iso_utc

__all__ = ["HttpServingTarget", "PAYLOAD_KIND", "PAYLOAD_VERSION"]

PAYLOAD_KIND = "driftline.serving_action"
PAYLOAD_VERSION = 1


def _fill_json(node: Any, fields: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return fill(node, fields)
    if isinstance(node, list):
        return [_fill_json(v, fields) for v in node]
    if isinstance(node, dict):
        return {k: _fill_json(v, fields) for k, v in node.items()}
    return node


class HttpServingTarget(ServingTarget):
    """``method``: POST (default), PUT, PATCH or DELETE; ``body``: a JSON template or ""."""

    kind = "http"

    def __init__(
        self,
        url: str,
        method: str = "POST",
        body: str = "",
        token: str = "",
        headers: Mapping[str, str] | None = None,
        ca_file: str = "",
        models: Mapping[str, Any] | None = None,
    ):
        super().__init__(url, token, headers, ca_file, models)
        method = (method or "POST").upper()
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            raise ValueError(f"serving.target.method must be POST, PUT, PATCH or DELETE, got {method!r}")
        self.method = method
        self.body = body or ""
        self._template = None
        if self.body:
            try:
                self._template = json.loads(self.body)
            except ValueError as exc:
                raise ValueError(f"serving.target.body is not JSON: {exc}") from None

    def build(self, request: ServingRequest) -> TriggerCall:
        fields = request_fields(request, self.where(request))
        url = fill(self.url, fields, lambda v: quote(v, safe=""))
        if self._template is not None:
            body = _fill_json(self._template, fields)
        else:
            body = {
                "kind": PAYLOAD_KIND,
                "version": PAYLOAD_VERSION,
                **{k: fields[k] for k in ("action", "request_id", "model", "model_version", "reason")},
                "window_start": iso_utc(request.window_start),
                "window_end": iso_utc(request.window_end),
                "approved_by": request.decided_by,
                "decision_reason": request.decision_reason,
                "evidence": request.evidence,
            }
        return TriggerCall(self.method, url, self._headers({"Idempotency-Key": request.id}), body)
