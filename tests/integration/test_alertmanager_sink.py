"""The Alertmanager sink against a real Prometheus Alertmanager (``alertmanager`` fixture):
a firing alert shows up active with our labels, a reminder re-post extends it, and the
resolved transition resolves it."""

from __future__ import annotations

import time

import httpx
import pytest

from monitor.events import AlertEvent, alert_id
from monitor.outbox import Deliverer, Outbox
from monitor.sinks.alertmanager import AlertmanagerSink
from monitor.state import StateStore

pytestmark = pytest.mark.integration


def transition(
    state: str, seq: int, started_at: float, window_end: float, scope: str
) -> AlertEvent:
    return AlertEvent(
        id=alert_id("credit-risk", "feature-drift", scope, started_at),
        seq=seq,
        state=state,
        model="credit-risk",
        rule="feature-drift",
        metric="psi",
        scope=scope,
        severity="warning",
        value=0.31 if state == "firing" else 0.04,
        threshold=0.25,
        window_start=window_end - 900,
        window_end=window_end,
        started_at=started_at,
    )


def ours(base_url: str, scope: str, **params) -> list[dict]:
    r = httpx.get(
        f"{base_url}/api/v2/alerts", params={"filter": f'scope="{scope}"', **params}, timeout=5
    )
    r.raise_for_status()
    return r.json()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_firing_reposted_then_resolved(alertmanager, tmp_path):
    scope = f"feature:income-{time.time_ns()}"  # unique: the fixture may be shared
    # The test's clock runs 200 s behind Alertmanager's, so the minutes it skips stay in
    # Alertmanager's past: firing posts end in its future, the resolve in its past.
    clock = [time.time() - 200]
    sink = AlertmanagerSink(
        alertmanager, resend_interval_seconds=60, timeout_seconds=5, clock=lambda: clock[0]
    )
    store = StateStore(tmp_path)
    outbox = Outbox(store, [sink], clock=lambda: clock[0])
    deliverer = Deliverer(outbox)
    started = clock[0] - 120
    store.checkpoint(
        {},
        {},
        extra=lambda c: outbox.enqueue(c, [transition("firing", 1, started, clock[0], scope)]),
    )
    deliverer.run_once(clock[0])
    assert outbox.rows()[0]["status"] == "delivered"

    alerts = wait_for(
        lambda: [a for a in ours(alertmanager, scope) if a["status"]["state"] == "active"]
    )
    assert len(alerts) == 1, ours(alertmanager, scope)
    (a,) = alerts
    assert a["labels"] == {
        "alertname": "feature-drift",
        "model": "credit-risk",
        "rule": "feature-drift",
        "metric": "psi",
        "scope": scope,
        "severity": "warning",
    }
    assert a["annotations"]["value"] == "0.31" and a["annotations"]["threshold"] == "0.25"
    first_end = a["endsAt"]

    # Still firing a resend interval later: the reminder re-posts and extends endsAt.
    clock[0] += 61
    deliverer.run_once(clock[0])
    assert [r["repeat"] for r in outbox.rows()] == [0, 1]
    (a,) = wait_for(lambda: [x for x in ours(alertmanager, scope) if x["endsAt"] != first_end])
    assert a["endsAt"] > first_end and a["status"]["state"] == "active"

    clock[0] += 5
    resolved = transition("resolved", 2, started, clock[0] - 1, scope)
    store.checkpoint({}, {}, extra=lambda c: outbox.enqueue(c, [resolved]))
    deliverer.run_once(clock[0])
    assert all(r["status"] == "delivered" for r in outbox.rows())
    # endsAt in the past: Alertmanager resolves it and lists it in no state at all.
    assert wait_for(lambda: not ours(alertmanager, scope))
    assert ours(alertmanager, scope, silenced="true", inhibited="true", unprocessed="true") == []
    # No reminder for a resolved alert.
    clock[0] += 600
    deliverer.run_once(clock[0])
    assert len(outbox.rows()) == 3
    store.close()
