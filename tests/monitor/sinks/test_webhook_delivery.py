"""Outbox + webhook sink against a de-duplicating receiver: a crash between delivery and
the delivered mark, and a receiver that is down for a whole stream (with a restart)."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3

from standardwebhooks.webhooks import Webhook

from monitor.outbox import Deliverer, Outbox
from monitor.sinks.webhook import WebhookSink
from monitor.state import DB_NAME, StateStore

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def open_outbox(directory, url):
    store = StateStore(directory)
    outbox = Outbox(store, [WebhookSink(url, SECRET, timeout_seconds=5)])
    return store, outbox


def checkpoint(store, outbox, offset, events):
    return store.checkpoint(
        {("predictions", 0): offset},
        {"state": str(offset).encode()},
        extra=lambda conn: outbox.enqueue(conn, events),
    )


def snapshot(store, target):
    """A consistent copy of the state database (WAL included), as a crash would leave it."""
    target.mkdir()
    src = sqlite3.connect(store.path)
    dst = sqlite3.connect(target / DB_NAME)
    src.backup(dst)
    src.close()
    dst.close()


def test_crash_between_delivery_and_mark_resends_the_same_key_once(receiver, make_event, tmp_path):
    state = tmp_path / "state"
    store, outbox = open_outbox(state, receiver.url)
    ev = make_event()
    checkpoint(store, outbox, 100, [ev])
    snapshot(store, tmp_path / "before-mark")
    Deliverer(outbox).run_once()
    assert outbox.rows()[0]["status"] == "delivered"
    store.close()
    # The process "crashed" after the POST, before the delivered mark reached the disk.
    for f in state.iterdir():
        f.unlink()
    shutil.copy(tmp_path / "before-mark" / DB_NAME, state / DB_NAME)

    store, outbox = open_outbox(state, receiver.url)
    assert [r["status"] for r in outbox.rows()] == ["pending"]
    Deliverer(outbox).run_once()
    assert [r["status"] for r in outbox.rows()] == ["delivered"]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [ev.key, ev.key]  # re-sent with the same idempotency key
    for r in receiver.requests:
        Webhook(SECRET).verify(r.body, r.headers)
    assert list(receiver.accepted) == [ev.key] and receiver.duplicates == [ev.key]

    # A crash-replay that produces the same transition again enqueues nothing new.
    checkpoint(store, outbox, 101, [ev])
    Deliverer(outbox).run_once()
    assert len(receiver.requests) == 2
    store.close()


def transitions(make_event):
    """20 transitions of 10 alerts, interleaved: f0 fires, f1 fires, f0 resolves, ..."""
    out = []
    for i in range(10):
        out.append(make_event(f"f{i}", window_end=1e9 + 60 * len(out)))
        if i:
            out.append(
                make_event(f"f{i - 1}", state="resolved", seq=2, window_end=1e9 + 60 * len(out))
            )
    out.append(make_event("f9", state="resolved", seq=2, window_end=1e9 + 60 * len(out)))
    return out


def test_sink_down_for_the_whole_stream_then_back_loses_nothing(receiver, make_event, tmp_path):
    events = transitions(make_event)
    assert len(events) == 20
    state = tmp_path / "state"
    receiver.stop()  # connection refused
    store, outbox = open_outbox(state, receiver.url)
    now = 1_800_000_000.0
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=30)
    for i, ev in enumerate(events[:12]):
        checkpoint(store, outbox, i, [ev])
        d.run_once(now)
        now += 40  # later than any backoff: every pass retries the oldest row
    rows = outbox.rows()
    assert [r["status"] for r in rows] == ["pending"] * 12
    assert rows[0]["attempts"] == 12 and all(
        r["attempts"] == 0 for r in rows[1:]
    )  # blocked in order
    assert "ConnectError" in rows[0]["last_error"]
    store.close()

    # Restart while the receiver is still down (now answering 503).
    receiver.default = (503, {})
    receiver.start()
    store, outbox = open_outbox(state, receiver.url)
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=30)
    for i, ev in enumerate(events[12:], start=12):
        checkpoint(store, outbox, i, [ev])
        d.run_once(now)
        now += 40
    assert len(receiver.requests) == 8 and receiver.accepted == {}
    assert [r["status"] for r in outbox.rows()] == ["pending"] * 20

    receiver.default = (200, {})
    for _ in range(5):
        d.run_once(now)
        now += 40
    assert [r["status"] for r in outbox.rows()] == ["delivered"] * 20
    assert list(receiver.accepted) == [ev.key for ev in events]  # all 20, in order
    assert receiver.duplicates == []
    seen: dict[str, list[str]] = {}
    for body in receiver.accepted.values():
        (e,) = json.loads(body)["data"]["events"]
        seen.setdefault(e["id"], []).append(e["state"])
    assert len(seen) == 10 and all(states == ["firing", "resolved"] for states in seen.values())
    for r in receiver.requests:
        Webhook(SECRET).verify(r.body, r.headers)
    store.close()
