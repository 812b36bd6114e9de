"""Webhook sink: Standard Webhooks signatures checked by the reference library, key
rotation, tampering, and the status-code classification."""

from __future__ import annotations

import base64
import socket
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from monitor.errors import ConfigError
from monitor.events import RetrainRequest
from monitor.outbox import Notification
from monitor.sinks.webhook import WebhookSink, decode_secret, webhook_body

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()


def note(ev, key=None):
    return Notification(
        7, "webhook", key or ev.key, "alert", ev.model, (ev,), None, 0, 1_700_000_000.0, 0
    )


def sent(receiver, i=-1):
    r = receiver.requests[i]
    return r.body, {k.lower(): v for k, v in r.headers.items()}


def test_signature_verifies_with_the_reference_library(receiver, make_event):
    sink = WebhookSink(receiver.url + "/in", NEW, timeout_seconds=5)
    ev = make_event()
    assert sink.send(note(ev)).ok
    body, headers = sent(receiver)
    assert headers["webhook-id"] == ev.key
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert (
        headers["webhook-signature"].startswith("v1,") and " " not in headers["webhook-signature"]
    )
    payload = Webhook(NEW).verify(body, headers)
    assert payload["type"] == "driftline.alert.firing"
    assert payload["data"]["idempotency_key"] == ev.key
    assert payload["data"]["events"][0]["scope"] == "feature:income"
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(body, headers)
    sink.close()


def test_rotation_both_secrets_verify_then_the_old_one_stops(receiver, make_event):
    rotating = WebhookSink(receiver.url, NEW, previous_secret=OLD, timeout_seconds=5)
    assert rotating.send(note(make_event())).ok
    body, headers = sent(receiver)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(NEW).verify(body, headers)
    Webhook(OLD).verify(body, headers)  # receivers not yet updated still verify
    done = WebhookSink(receiver.url, NEW, timeout_seconds=5)  # rotation finished
    assert done.send(note(make_event())).ok
    body, headers = sent(receiver)
    Webhook(NEW).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(body, headers)
    rotating.close()
    done.close()


@pytest.mark.parametrize("part", ["body", "id", "timestamp"])
def test_tampering_fails_verification(receiver, make_event, part):
    sink = WebhookSink(receiver.url, NEW, previous_secret=OLD, timeout_seconds=5)
    assert sink.send(note(make_event())).ok
    body, headers = sent(receiver)
    if part == "body":
        body = body.replace(b"0.31", b"0.01")
    elif part == "id":
        headers["webhook-id"] = headers["webhook-id"] + "x"
    else:
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    for secret in (NEW, OLD):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers)
    sink.close()


def test_body_is_identical_on_retry_and_timestamp_is_per_attempt(make_event):
    clock = [1_700_000_000.0]
    sink = WebhookSink("http://127.0.0.1:9/x", NEW, clock=lambda: clock[0])
    n = note(make_event())
    assert webhook_body(n) == webhook_body(n)
    h1 = sink.headers(n.key, webhook_body(n))
    clock[0] += 30
    h2 = sink.headers(n.key, webhook_body(n))
    assert (
        h1["webhook-id"] == h2["webhook-id"] and h1["webhook-timestamp"] != h2["webhook-timestamp"]
    )
    sink.close()


def test_retrain_body(receiver):
    r = RetrainRequest(
        id="r9", model="m", reason="drift", window_start=0, window_end=1, created_at=2
    )
    sink = WebhookSink(receiver.url, NEW, timeout_seconds=5)
    assert sink.send(
        Notification(1, "webhook", "retrain:r9:pending", "retrain", "m", (), r, 0, 2.0, 0)
    ).ok
    body, headers = sent(receiver)
    payload = Webhook(NEW).verify(body, headers)
    assert (
        payload["type"] == "driftline.retrain.pending" and payload["data"]["retrain"]["id"] == "r9"
    )
    sink.close()


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (500, {}, True, None),
        (503, {"Retry-After": "5"}, True, 5.0),
        (429, {"Retry-After": "3"}, True, 3.0),
        (400, {}, False, None),
        (401, {}, False, None),
        (410, {}, False, None),
        (307, {"Location": "http://127.0.0.1:1/evil"}, False, None),
    ],
)
def test_status_classification(receiver, make_event, status, headers, retryable, retry_after):
    receiver.script = [(status, headers)]
    sink = WebhookSink(receiver.url, NEW, timeout_seconds=5)
    out = sink.send(note(make_event()))
    assert (out.ok, out.retryable, out.retry_after, out.status_code) == (
        False,
        retryable,
        retry_after,
        status,
    )
    assert len(receiver.requests) == 1  # a redirect is not followed
    sink.close()


def test_connection_refused_is_retryable(make_event):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink(f"http://127.0.0.1:{port}/x", NEW, timeout_seconds=5)
    out = sink.send(note(make_event()))
    assert (out.ok, out.retryable) == (False, True) and "ConnectError" in out.error
    sink.close()


def test_secret_validation_names_the_key_not_the_secret():
    with pytest.raises(ConfigError, match="sinks.webhook.secret") as e:
        decode_secret("whsec_not*base64")
    assert "not*base64" not in str(e.value)
    with pytest.raises(ConfigError, match="at least 24"):
        decode_secret("whsec_" + base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="sinks.webhook.previous_secret"):
        WebhookSink("http://127.0.0.1:9/x", NEW, previous_secret="whsec_!!")
    with pytest.raises(ConfigError, match="sinks.webhook.url"):
        WebhookSink("", NEW)
    assert decode_secret(NEW.removeprefix("whsec_").rstrip("=")) == b"n" * 32  # unpadded, no prefix
