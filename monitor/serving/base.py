"""The serving-control contract: a target turns an approved rollback / disable request into
one HTTP call to the system that serves the model (KServe, an MLflow registry, any HTTP API).

Built on the retrain triggers' :class:`~monitor.triggers.base.TriggerTarget`: the same call
shape, HTTP client (no redirects, bounded time) and outcome classification, so a 5xx or a
refused connection is retried and a 4xx is final in the same way. A target builds the call
(:meth:`ServingTarget.build`, pure but for reading a rotating token file) and never retries;
the :class:`~monitor.serving.sender.ServingSender` owns retries, dry runs and the audit trail.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx
import msgspec

from monitor.config import is_secret_key
from monitor.events import ServingRequest
from monitor.sinks.base import DeliveryOutcome, outcome_from_response
from monitor.triggers.base import TriggerCall, TriggerTarget, iso_utc

__all__ = ["ModelServing", "ServingTarget", "describe_call", "request_fields", "fill"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class ModelServing:
    """Where one model is served (the ``[models.serving]`` keys); empty names mean the
    model's own name."""

    inference_service: str = ""
    namespace: str = "default"
    registered_model: str = ""
    alias: str = "champion"
    rollback_version: str = ""

    def for_model(self, model: str) -> ModelServing:
        return replace(
            self,
            inference_service=self.inference_service or model,
            registered_model=self.registered_model or model,
        )


def _binding(value: Any) -> ModelServing:
    if isinstance(value, ModelServing):
        return value
    if isinstance(value, msgspec.Struct):
        value = msgspec.structs.asdict(value)
    return ModelServing(**dict(value))


def request_fields(request: ServingRequest, where: ModelServing) -> dict[str, str]:
    """The values a template's placeholders take (see ``SERVING_PLACEHOLDERS`` in the config)."""
    return {
        "action": request.action,
        "model": request.model,
        "model_version": request.model_version or "",
        "request_id": request.id,
        "reason": request.reason,
        "window_start": iso_utc(request.window_start),
        "window_end": iso_utc(request.window_end),
        "approved_by": request.decided_by or "",
        "decision_reason": request.decision_reason or "",
        "inference_service": where.inference_service,
        "namespace": where.namespace,
        "registered_model": where.registered_model,
        "alias": where.alias,
        "rollback_version": where.rollback_version,
    }


def fill(template: str, fields: Mapping[str, str], quote: Any = None) -> str:
    """Replace ``{name}`` placeholders; ``quote`` escapes each value (URL path segments).

    >>> fill("/m/{model}/{action}", {"model": "a b", "action": "rollback"})
    '/m/a b/rollback'
    """
    def value(m: re.Match) -> str:
        if m.group(1) not in fields:
            return m.group(0)  # the config refuses unknown names; leave anything else alone
        v = fields[m.group(1)]
        return quote(v) if quote is not None else v

    return _PLACEHOLDER.sub(value, template)


def describe_call(call: TriggerCall) -> dict:
    """The call as the audit log records it: exact method, URL and body; secret header
    values (Authorization, tokens, API keys) masked."""
    headers = {k: ("***" if is_secret_key(k) else v) for k, v in call.headers.items()}
    return {"method": call.method, "url": call.url, "headers": headers, "body": call.json}


class ServingTarget(TriggerTarget):
    """Base of the serving targets. ``models`` maps a model name to where it is served
    (:class:`ModelServing` or the ``[models.serving]`` table); ``ca_file`` names a PEM
    bundle to trust instead of the system's (a private CA)."""

    section = "serving.target"

    def __init__(
        self,
        url: str,
        token: str = "",
        headers: Mapping[str, str] | None = None,
        ca_file: str = "",
        models: Mapping[str, Any] | None = None,
    ):
        super().__init__(url, token, headers)
        self.ca_file = ca_file or ""
        self.models = {str(k): _binding(v) for k, v in (models or {}).items()}

    def where(self, request: ServingRequest) -> ModelServing:
        """Where the request's model is served."""
        return self.models.get(request.model, ModelServing()).for_model(request.model)

    @abstractmethod
    def build(self, request: ServingRequest) -> TriggerCall:
        """The HTTP call that carries out ``request.action`` (rollback or disable)."""

    def classify(self, response: httpx.Response) -> DeliveryOutcome:
        if response.status_code in self.already_exists:
            return DeliveryOutcome.success(response.status_code)
        return outcome_from_response(response, f"serving {self.kind}")
