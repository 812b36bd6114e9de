"""Slack sink: Block Kit content, pacing, and 429 Retry-After honoured end to end."""

from __future__ import annotations

import json
import time

import pytest

from monitor.errors import ConfigError
from monitor.events import RetrainRequest
from monitor.metrics import Metrics
from monitor.outbox import Deliverer, Notification, Outbox
from monitor.sinks.slack import Pacer, SlackSink, slack_message
from monitor.state import StateStore


def group(events, key="k", repeat=0):
    return Notification(
        1,
        "slack",
        key,
        "alert_group" if len(events) > 1 else "alert",
        events[0].model,
        tuple(events),
        None,
        repeat,
        0.0,
        0,
    )


def test_block_kit_for_a_grouped_drift_event(make_event):
    # 12 features drift in one evaluation; "f11" breaches most, "f00" least.
    events = [
        make_event(f"f{i:02d}", value=0.26 + 0.01 * i, details={"report_url": "https://r/x.html"})
        for i in range(12)
    ]
    msg = slack_message(group(events), dashboard_url="https://grafana/d/drift?var-model={model}")
    blocks = msg["blocks"]
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    assert "FIRING credit-risk: feature-drift (12 scopes)" in blocks[0]["text"]["text"]
    fields = "\n".join(f["text"] for f in blocks[1]["fields"])
    assert "credit-risk (version v3)" in fields and "*Window*" in fields and "warning" in fields
    listing = blocks[2]["text"]["text"]
    lines = listing.splitlines()
    assert lines[0] == "*Top drifted features / scopes*"
    assert lines[1].startswith("• `feature:f11` psi 0.37 vs 0.25")  # worst first
    assert lines[-1] == "…and 2 more" and len(lines) == 12
    context = blocks[3]["elements"][0]["text"]
    assert "<https://grafana/d/drift?var-model=credit-risk|Dashboard>" in context
    assert "<https://r/x.html|Drift report>" in context
    assert msg["text"].startswith(
        "FIRING credit-risk: feature-drift (12 scopes): psi = 0.37 vs threshold 0.25"
    )
    assert msg["text"].endswith("and 9 more")
    json.dumps(msg)  # JSON-safe


def test_single_alert_message_shows_statistic_vs_threshold_and_escapes(make_event):
    ev = make_event("a<b>&c", state="resolved", seq=2, value=0.05)
    msg = slack_message(group([ev], repeat=0))
    fields = [f["text"] for f in msg["blocks"][1]["fields"]]
    assert "*Statistic*\npsi 0.05 vs threshold 0.25" in fields
    assert "*Scope*\nfeature:a&lt;b&gt;&amp;c" in fields
    assert msg["blocks"][0]["text"]["text"].startswith(":white_check_mark: RESOLVED")


def test_reminder_and_retrain_messages(make_event):
    msg = slack_message(group([make_event()], repeat=2))
    assert "still firing (reminder 2)" in msg["text"]
    r = RetrainRequest(
        id="r1",
        model="credit-risk",
        reason="accuracy 0.71 < 0.75",
        window_start=0,
        window_end=60,
        created_at=60,
        status="approved",
        decided_by="ana",
    )
    n = Notification(2, "slack", "retrain:r1:approved", "retrain", "credit-risk", (), r, 0, 60.0, 0)
    msg = slack_message(n)
    assert msg["text"] == "Retrain approved: credit-risk: accuracy 0.71 < 0.75"
    assert any(f["text"] == "*Decided by*\nana" for f in msg["blocks"][1]["fields"])


def test_pacer_spaces_calls():
    t = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        t[0] += s

    p = Pacer(2.0, clock=lambda: t[0], sleep=sleep)
    for _ in range(3):
        p.wait()
    assert slept == [0.5, 0.5]
    t[0] += 10
    p.wait()
    assert slept == [0.5, 0.5]
    with pytest.raises(ValueError, match="rate"):
        Pacer(0)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="sinks.slack.webhook_url"):
        SlackSink("")
    with pytest.raises(ConfigError, match="sinks.slack.max_per_second"):
        SlackSink("http://127.0.0.1:1/x", max_per_second=0)


def test_4xx_is_permanent_and_redirects_are_not_followed(receiver, make_event):
    sink = SlackSink(receiver.url + "/hook", max_per_second=1000, timeout_seconds=5)
    receiver.script = [(404, {}), (302, {"location": receiver.url + "/elsewhere"})]
    out = sink.send(group([make_event()]))
    assert (out.ok, out.retryable, out.status_code) == (False, False, 404)
    out = sink.send(group([make_event()]))
    assert (out.ok, out.retryable, out.status_code) == (False, False, 302)
    assert "not followed" in out.error
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]
    sink.close()


def test_429_retry_after_is_honoured_and_one_message_is_delivered(receiver, make_event, tmp_path):
    receiver.script = [(429, {"Retry-After": "2"}), (500, {})]
    metrics = Metrics()
    store = StateStore(tmp_path)
    sink = SlackSink(receiver.url + "/services/T/B/X", timeout_seconds=5)
    outbox = Outbox(store, [sink])
    deliverer = Deliverer(
        outbox,
        metrics=metrics,
        backoff_initial_seconds=0.05,
        backoff_max_seconds=0.1,
        poll_interval_seconds=0.1,
    )
    deliverer.start()
    try:
        store.checkpoint({}, {}, extra=lambda conn: outbox.enqueue(conn, [make_event()]))
        deliverer.wake()
        receiver.wait_for(3)
        deadline = time.monotonic() + 5
        while outbox.rows()[0]["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        deliverer.stop()
    reqs = receiver.requests
    assert [r.status for r in reqs] == [429, 500, 200]
    assert reqs[1].at - reqs[0].at >= 2.0  # no retry before Slack's Retry-After
    assert len(receiver.accepted) == 1
    body = json.loads(reqs[2].body)
    assert body["text"].startswith("FIRING credit-risk") and body["blocks"][0]["type"] == "header"
    assert reqs[0].body == reqs[2].body
    (row,) = outbox.rows()
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    get = metrics.registry.get_sample_value
    assert get("driftline_sink_deliveries_total", {"sink": "slack", "outcome": "retry"}) == 2
    assert get("driftline_sink_deliveries_total", {"sink": "slack", "outcome": "delivered"}) == 1
    assert get("driftline_sink_outbox_pending", {"sink": "slack"}) == 0
    store.close()
