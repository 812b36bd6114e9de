"""Alertmanager sink: the postableAlert payload and the HTTP exchange (a local receiver
here; tests/integration/test_alertmanager_sink.py runs a real Alertmanager)."""

from __future__ import annotations

import json

import pytest

from monitor.errors import ConfigError
from monitor.outbox import Notification
from monitor.sinks.alertmanager import AlertmanagerSink, am_alert
from monitor.sinks.base import ALERT_KINDS

NOW = 1_700_000_100.0


def test_firing_alert_labels_annotations_and_expiry(make_event):
    ev = make_event(details={"report_url": "https://r/report.html"})
    a = am_alert(ev, NOW, 60.0, "https://grafana/d/x?var-model={model}")
    assert a["labels"] == {
        "alertname": "feature-drift",
        "model": "credit-risk",
        "rule": "feature-drift",
        "metric": "psi",
        "scope": "feature:income",
        "severity": "warning",
    }
    ann = a["annotations"]
    assert ann["summary"] == "credit-risk: feature-drift firing"
    assert ann["description"] == "psi = 0.31 vs threshold 0.25 on feature:income"
    assert (ann["value"], ann["threshold"], ann["report"]) == (
        "0.31",
        "0.25",
        "https://r/report.html",
    )
    assert a["generatorURL"] == "https://grafana/d/x?var-model=credit-risk"
    assert a["startsAt"] == "2023-11-14T22:03:20.000Z"  # started_at = T0 - 600
    assert a["endsAt"] == "2023-11-14T22:19:00.000Z"  # NOW + 4 x 60 s: expires if Driftline dies


def test_resolved_alert_ends_at_the_resolve_time_never_in_the_future(make_event):
    ev = make_event(state="resolved", seq=2, window_end=NOW - 50)
    assert am_alert(ev, NOW, 60.0)["endsAt"] == "2023-11-14T22:14:10.000Z"  # window_end
    future = make_event(state="resolved", seq=2, window_end=NOW + 500)
    assert am_alert(future, NOW, 60.0)["endsAt"] == "2023-11-14T22:15:00.000Z"  # clamped to now
    assert "endsAt" not in am_alert(make_event(), NOW, 0.0)


def test_posts_all_alerts_of_a_group_in_one_request(receiver, make_event):
    sink = AlertmanagerSink(receiver.url + "/", resend_interval_seconds=30, timeout_seconds=5)
    assert sink.kinds == ALERT_KINDS and "acknowledged" in sink.remind_states
    assert sink.repeat_interval_seconds == 30
    events = (make_event("a"), make_event("b"))
    n = Notification(
        1, "alertmanager", "group:x", "alert_group", "credit-risk", events, None, 0, 0.0, 0
    )
    assert sink.send(n).ok
    (req,) = receiver.requests
    assert req.path == "/api/v2/alerts" and req.headers["Content-Type"] == "application/json"
    assert [a["labels"]["scope"] for a in json.loads(req.body)] == ["feature:a", "feature:b"]
    receiver.script = [(400, {})]
    out = sink.send(n)
    assert (out.ok, out.retryable) == (False, False)
    sink.close()


def test_config_errors():
    with pytest.raises(ConfigError, match="sinks.alertmanager.url"):
        AlertmanagerSink("")
    with pytest.raises(ConfigError, match="resend_interval_seconds"):
        AlertmanagerSink("http://127.0.0.1:9093", resend_interval_seconds=-1)
