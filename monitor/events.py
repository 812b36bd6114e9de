"""Alert events and retrain requests: the records that flow from policy to the outbox.

They are msgspec structs so they encode to JSON fast and decode with validation, and
they carry everything a sink or a reviewer needs without looking anything else up.
"""

from __future__ import annotations

import hashlib

import msgspec

__all__ = [
    "AlertEvent",
    "RetrainRequest",
    "ServingRequest",
    "SERVING_ACTIONS",
    "alert_id",
    "encode",
    "decode_alert",
    "decode_retrain",
    "decode_serving",
]

#: Rule actions that change what serves a model (monitor/serving), gated like a retrain.
SERVING_ACTIONS = ("rollback", "disable")


def alert_id(model: str, rule: str, scope: str, started_at: float) -> str:
    """Stable id of one alert episode: the same inputs always give the same id.

    An episode starts when a rule first fires for a scope and ends when it resolves, so
    a replay or a restart after a crash reproduces the id (and the sinks' idempotency keys).
    """
    raw = f"{model}\x1f{rule}\x1f{scope}\x1f{started_at:.3f}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


class AlertEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One transition of one alert episode.

    ``id`` names the episode; ``key`` (id + state + seq) names this transition and is the
    idempotency key every sink sends. ``state`` is one of ``firing``, ``resolved``,
    ``acknowledged``, ``silenced``. Times are Unix seconds (event time of the window).
    """

    id: str
    seq: int
    state: str
    model: str
    rule: str
    metric: str
    scope: str
    severity: str
    value: float | None
    threshold: float | None
    window_start: float
    window_end: float
    started_at: float
    model_version: str | None = None
    level: str = "alert"
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict = msgspec.field(default_factory=dict)
    actions: list[str] = msgspec.field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.id}:{self.seq}:{self.state}"


class RetrainRequest(msgspec.Struct, kw_only=True):
    """A request to retrain a model, created by a rule with ``action = "retrain"``."""

    id: str
    model: str
    reason: str
    window_start: float
    window_end: float
    created_at: float
    status: str = "pending"  # pending | approved | rejected | sent | failed
    model_version: str | None = None
    evidence: dict = msgspec.field(default_factory=dict)
    decided_by: str | None = None
    decision_reason: str | None = None


class ServingRequest(RetrainRequest, kw_only=True):
    """A request to roll a model back or disable it (``action``), created by a rule with
    ``actions = ["rollback"]`` or ``["disable"]``. A subclass, so approval, listing and the
    audit trail treat it like a retrain request; stored retrain requests are unchanged."""

    action: str  # one of SERVING_ACTIONS


_enc = msgspec.json.Encoder()
_alert_dec = msgspec.json.Decoder(AlertEvent)
_retrain_dec = msgspec.json.Decoder(RetrainRequest)
_serving_dec = msgspec.json.Decoder(ServingRequest)


def encode(obj: AlertEvent | RetrainRequest) -> bytes:
    return _enc.encode(obj)


def decode_alert(data: bytes) -> AlertEvent:
    return _alert_dec.decode(data)


def decode_retrain(data: bytes) -> RetrainRequest:
    return _retrain_dec.decode(data)


def decode_serving(data: bytes) -> ServingRequest:
    return _serving_dec.decode(data)
