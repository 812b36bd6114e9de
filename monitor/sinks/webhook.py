"""Generic webhook sink: JSON body signed per the Standard Webhooks specification.

Headers: ``webhook-id`` (the outbox idempotency key, identical on every retry, so receivers
de-duplicate on it), ``webhook-timestamp`` (Unix seconds of this attempt; receivers reject
stale ones) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>``
where the key is the base64-decoded secret without its ``whsec_`` prefix. During key
rotation both the new ``secret`` and the ``previous_secret`` sign, space-separated, so
receivers holding either key verify. 2xx is success; 429 and 5xx are retried (Retry-After
honoured); other 4xx and redirects are permanent failures.

Body: ``{"type": "driftline.<kind>.<state>", "timestamp": <RFC 3339 of enqueue>, "data":
{...}}``, the envelope the spec recommends; the body bytes are the same on every retry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import msgspec

from monitor.errors import ConfigError
from monitor.sinks.base import (
    ALL_KINDS,
    DeliveryOutcome,
    Sink,
    make_http_client,
    outcome_from_response,
    outcome_from_transport_error,
)
from monitor.sinks.render import iso

if TYPE_CHECKING:
    from monitor.outbox import Notification

__all__ = ["WebhookSink", "decode_secret", "sign", "webhook_body"]

_SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec's lower bound for a signing key
_enc = msgspec.json.Encoder()


def decode_secret(secret: str, key: str = "sinks.webhook.secret") -> bytes:
    """The HMAC key from a ``whsec_<base64>`` secret (prefix optional).

    Errors name the config key, never the secret.
    """
    raw = secret[len(_SECRET_PREFIX) :] if secret.startswith(_SECRET_PREFIX) else secret
    raw = raw.strip()
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "is not base64 (expected whsec_<base64 of 24-64 random bytes>)", key=key
        ) from None
    if len(decoded) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"decodes to {len(decoded)} bytes; Standard Webhooks needs at least {MIN_SECRET_BYTES}. "
            "Generate one: python -c \"import base64,secrets; print('whsec_' + "
            'base64.b64encode(secrets.token_bytes(32)).decode())"',
            key=key,
        )
    return decoded


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<sig>`` per key, space-separated.

    >>> sign([b"k" * 24], "msg_1", 1700000000, b"{}")
    'v1,E3sCg9uS8x43RKlJqcda1EcaYZxNkN+l2u7RBZBSZQQ='
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )


def webhook_body(n: Notification) -> bytes:
    """The JSON body for one notification (deterministic: same bytes on every retry)."""
    data = {
        "idempotency_key": n.key,
        "kind": n.kind,
        "model": n.model,
        "state": n.state,
        "repeat": n.repeat,
        "events": [msgspec.to_builtins(e) for e in n.events],
        "retrain": None if n.retrain is None else msgspec.to_builtins(n.retrain),
    }
    return _enc.encode(
        {"type": f"driftline.{n.kind}.{n.state}", "timestamp": iso(n.created_at), "data": data}
    )


class WebhookSink(Sink):
    """POSTs signed JSON to ``url``. ``secret`` and ``previous_secret`` come from env vars."""

    kinds = ALL_KINDS
    groupable = True

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        name: str = "webhook",
        previous_secret: str = "",
        timeout_seconds: float = 10.0,
        repeat_interval_seconds: float = 0.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not url:
            raise ConfigError(
                "is empty; set the receiver's URL or disable the sink", key="sinks.webhook.url"
            )
        if not secret:
            raise ConfigError(
                "is empty; signed webhooks need a secret, e.g. ${DRIFTLINE_WEBHOOK_SECRET}",
                key="sinks.webhook.secret",
            )
        if repeat_interval_seconds < 0:
            raise ConfigError(
                f"must be >= 0, got {repeat_interval_seconds!r}",
                key="alerting.repeat_interval_seconds",
            )
        self.name = name
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.repeat_interval_seconds = repeat_interval_seconds
        # The new key first: receivers that stop at the first match do less work.
        self._keys = [decode_secret(secret)]
        if previous_secret:
            self._keys.append(decode_secret(previous_secret, key="sinks.webhook.previous_secret"))
        self._client = client if client is not None else make_http_client(timeout_seconds)
        self._clock = clock

    def headers(self, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(self._clock()) if timestamp is None else timestamp
        return {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self._keys, msg_id, ts, body),
        }

    def send(self, notification: Notification) -> DeliveryOutcome:
        body = webhook_body(notification)
        try:
            response = self._client.post(
                self.url, content=body, headers=self.headers(notification.key, body)
            )
        except httpx.HTTPError as exc:
            return outcome_from_transport_error(exc, self.name)
        return outcome_from_response(response, self.name)

    def close(self) -> None:
        self._client.close()
