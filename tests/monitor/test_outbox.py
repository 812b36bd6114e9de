"""Outbox: enqueue inside the checkpoint, grouping, idempotency, ordering, retries, reminders.

Sinks here are in-memory fakes that play scripted outcomes; times are passed explicitly to
``run_once(now)``, so nothing depends on the wall clock.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from monitor.events import AlertEvent, RetrainRequest, alert_id
from monitor.metrics import Metrics
from monitor.outbox import Deliverer, Notification, Outbox, backoff_delay, group_key
from monitor.sinks.base import ALERT_KINDS, ALL_KINDS, DeliveryOutcome, Sink
from monitor.state import StateStore

T0 = 1_700_000_000.0


class FakeSink(Sink):
    """Records what it was sent; plays ``script`` outcomes first, then succeeds."""

    def __init__(
        self,
        name: str,
        *,
        groupable: bool = True,
        kinds: frozenset[str] = ALL_KINDS,
        repeat: float = 0.0,
        script: list[DeliveryOutcome] | None = None,
        remind_states: frozenset[str] = frozenset({"firing"}),
    ):
        self.name = name
        self.groupable = groupable
        self.kinds = kinds
        self.repeat_interval_seconds = repeat
        self.remind_states = remind_states
        self.script = list(script or [])
        self.calls: list[Notification] = []
        self.delivered: list[Notification] = []

    def send(self, notification: Notification) -> DeliveryOutcome:
        self.calls.append(notification)
        outcome = self.script.pop(0) if self.script else DeliveryOutcome.success(200)
        if outcome.ok:
            self.delivered.append(notification)
        return outcome


def event(
    feature: str = "income",
    state: str = "firing",
    seq: int = 1,
    model: str = "credit-risk",
    window_end: float = T0,
    started_at: float = T0,
    rule: str = "feature-drift",
    actions: list[str] | None = None,
) -> AlertEvent:
    scope = f"feature:{feature}"
    return AlertEvent(
        id=alert_id(model, rule, scope, started_at),
        seq=seq,
        state=state,
        model=model,
        rule=rule,
        metric="psi",
        scope=scope,
        severity="warning",
        value=0.3 if state == "firing" else 0.05,
        threshold=0.25,
        window_start=window_end - 900,
        window_end=window_end,
        started_at=started_at,
        actions=actions or [],
    )


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state")
    yield s
    s.close()


def make(store, *sinks, group=True):
    return Outbox(store, list(sinks), group_by_model=group, clock=lambda: T0)


def enqueue(store, outbox, items, now=T0):
    store.checkpoint({}, {}, extra=lambda conn: outbox.enqueue(conn, items, now=now))


def test_enqueue_commits_with_the_checkpoint_and_rolls_back_with_it(store):
    sink = FakeSink("a")
    outbox = make(store, sink)
    store.checkpoint(
        {("p", 0): 10}, {"s": b"x"}, extra=lambda conn: outbox.enqueue(conn, [event()])
    )
    assert [r["key"] for r in outbox.rows()] == [event().key]

    def boom(conn):
        outbox.enqueue(conn, [event("debt_ratio")])
        raise RuntimeError("crash inside the checkpoint")

    with pytest.raises(RuntimeError):
        store.checkpoint({("p", 0): 20}, {"s": b"y"}, extra=boom)
    # Neither the state, the offset nor the notification of the failed checkpoint exist.
    assert store.offsets() == {("p", 0): 10}
    assert [r["key"] for r in outbox.rows()] == [event().key]


def test_re_enqueue_of_the_same_transition_is_a_no_op(store):
    sink = FakeSink("a")
    outbox = make(store, sink)
    with store.transaction() as conn:
        assert outbox.enqueue(conn, [event()]) == 1
    with store.transaction() as conn:
        assert outbox.enqueue(conn, [event()]) == 0
    assert len(outbox.rows()) == 1


def test_grouping_one_drift_event_over_12_features_is_one_message(store):
    human = FakeSink("slack")
    machine = FakeSink("kafka", groupable=False)
    outbox = make(store, human, machine)
    feats = [f"f{i:02d}" for i in range(12)]
    enqueue(store, outbox, [event(f) for f in feats])
    rows = outbox.rows(sink="slack")
    assert len(rows) == 1 and rows[0]["kind"] == "alert_group"
    assert rows[0]["key"] == group_key("credit-risk", [event(f).key for f in feats])
    assert len(outbox.rows(sink="kafka")) == 12
    Deliverer(outbox).run_once(T0)
    (n,) = human.delivered
    assert sorted(e.scope for e in n.events) == [f"feature:{f}" for f in feats]
    assert [m.key for m in machine.delivered] == [event(f).key for f in feats]


def test_grouping_splits_by_model_window_and_state(store):
    sink = FakeSink("a")
    outbox = make(store, sink)
    items = [
        event("x"),
        event("y"),
        event("x", model="other"),
        event("z", window_end=T0 + 60),
        event("w", state="resolved", seq=2),
        RetrainRequest(
            id="r1",
            model="credit-risk",
            reason="accuracy",
            window_start=0,
            window_end=T0,
            created_at=T0,
        ),
    ]
    enqueue(store, outbox, items)
    rows = outbox.rows()
    assert [(r["kind"], r["model"]) for r in rows] == [
        ("alert_group", "credit-risk"),
        ("alert", "other"),
        ("alert", "credit-risk"),
        ("alert", "credit-risk"),
        ("retrain", "credit-risk"),
    ]
    assert rows[-1]["key"] == "retrain:r1:pending"


def test_group_by_model_false_sends_one_per_transition(store):
    sink = FakeSink("a")
    outbox = make(store, sink, group=False)
    enqueue(store, outbox, [event(f) for f in "abc"])
    assert [r["kind"] for r in outbox.rows()] == ["alert"] * 3


def test_sink_kinds_and_notify_action_filter(store):
    am = FakeSink("alertmanager", kinds=ALERT_KINDS)
    hook = FakeSink("webhook")
    outbox = make(store, am, hook)
    retrain = RetrainRequest(
        id="r", model="m", reason="x", window_start=0, window_end=1, created_at=1
    )
    enqueue(
        store,
        outbox,
        [retrain, event(actions=["retrain"]), event("b", actions=["notify", "retrain"])],
    )
    assert [r["kind"] for r in outbox.rows(sink="alertmanager")] == ["alert"]
    assert [r["kind"] for r in outbox.rows(sink="webhook")] == ["retrain", "alert"]
    with store.transaction() as conn, pytest.raises(ValueError, match="unknown sink"):
        outbox.enqueue(conn, [event()], sinks=["pagerduty"])


def test_later_transition_never_overtakes_an_earlier_one(store):
    down = [DeliveryOutcome.retry("503") for _ in range(3)]
    sink = FakeSink("a", script=down)
    outbox = make(store, sink, group=False)
    enqueue(store, outbox, [event()])
    enqueue(store, outbox, [event(state="resolved", seq=2)])
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=4, rng=random.Random(1))
    now = T0
    for _ in range(10):
        d.run_once(now)
        now += 10
    assert [n.state for n in sink.calls] == ["firing"] * 4 + ["resolved"]
    assert [n.state for n in sink.delivered] == ["firing", "resolved"]


def test_retry_backoff_respects_retry_after_and_the_cap(store):
    sink = FakeSink(
        "a",
        script=[
            DeliveryOutcome.retry("429", retry_after=7.0),
            DeliveryOutcome.retry("500"),
            DeliveryOutcome.retry("500"),
        ],
    )
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    d = Deliverer(outbox, backoff_initial_seconds=2, backoff_max_seconds=3, rng=random.Random(3))
    d.run_once(T0)
    (row,) = outbox.rows()
    assert row["next_attempt_at"] == T0 + 7.0 and row["attempts"] == 1
    assert d.run_once(T0 + 6.9) == {"a": 0} and len(sink.calls) == 1  # not before Retry-After
    d.run_once(T0 + 7.0)
    (row,) = outbox.rows()
    assert (
        T0 + 7.0 <= row["next_attempt_at"] <= T0 + 7.0 + 2.0
    )  # attempt 2: <= initial * 2**1, capped at 3
    t = row["next_attempt_at"]
    d.run_once(t)
    (row,) = outbox.rows()
    assert t <= row["next_attempt_at"] <= t + 3.0
    d.run_once(row["next_attempt_at"])
    (row,) = outbox.rows()
    assert row["status"] == "delivered" and row["attempts"] == 4


def test_backoff_delay_is_full_jitter_capped():
    rng = random.Random(42)
    draws = [backoff_delay(5, 1.0, 10.0, rng) for _ in range(2000)]
    assert min(draws) >= 0.0 and max(draws) <= 10.0
    assert max(draws) > 9.0 and min(draws) < 1.0  # the whole [0, cap] range is used
    assert all(backoff_delay(a, 0.5, 1e9, rng) <= 0.5 * 2 ** (a - 1) for a in range(1, 30))
    assert backoff_delay(5000, 1.0, 60.0, rng) <= 60.0  # no overflow when retrying forever
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(0, 1.0, 2.0, rng)


def test_permanent_failure_is_marked_counted_and_does_not_block(store, caplog):
    metrics = Metrics()
    sink = FakeSink(
        "a", script=[DeliveryOutcome.permanent("HTTP 400 invalid_payload", status_code=400)]
    )
    outbox = make(store, sink, group=False)
    enqueue(store, outbox, [event("x"), event("y")])
    with caplog.at_level("WARNING", logger="driftline.outbox"):
        Deliverer(outbox, metrics=metrics).run_once(T0)
    rows = outbox.rows()
    assert [r["status"] for r in rows] == ["failed", "delivered"]
    assert "invalid_payload" in rows[0]["last_error"] and "invalid_payload" in caplog.text
    get = metrics.registry.get_sample_value
    assert get("driftline_sink_deliveries_total", {"sink": "a", "outcome": "failed"}) == 1
    assert get("driftline_sink_deliveries_total", {"sink": "a", "outcome": "delivered"}) == 1


def test_max_attempts_gives_up(store):
    sink = FakeSink("a", script=[DeliveryOutcome.retry("503")] * 5)
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    metrics = Metrics()
    d = Deliverer(
        outbox, metrics=metrics, max_attempts=3, backoff_initial_seconds=1, backoff_max_seconds=1
    )
    for i in range(5):
        d.run_once(T0 + 10 * i)
    (row,) = outbox.rows()
    assert (
        row["status"] == "failed"
        and row["attempts"] == 3
        and "gave up after 3" in row["last_error"]
    )
    assert len(sink.calls) == 3
    get = metrics.registry.get_sample_value
    assert get("driftline_sink_deliveries_total", {"sink": "a", "outcome": "retry"}) == 2
    assert get("driftline_sink_deliveries_total", {"sink": "a", "outcome": "gave_up"}) == 1


def test_a_raising_sink_is_retried_not_fatal(store):
    class Broken(FakeSink):
        def send(self, notification):
            self.calls.append(notification)
            if len(self.calls) == 1:
                raise KeyError("bug")
            return DeliveryOutcome.success()

    sink = Broken("a")
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=1)
    d.run_once(T0)
    assert "KeyError" in outbox.rows()[0]["last_error"]
    d.run_once(T0 + 5)
    assert outbox.rows()[0]["status"] == "delivered"


def test_queue_metrics(store):
    metrics = Metrics()
    sink = FakeSink("a", script=[DeliveryOutcome.retry("down")] * 100)
    idle = FakeSink("b", kinds=frozenset({"retrain"}))
    outbox = make(store, sink, idle, group=False)
    enqueue(store, outbox, [event("x")], now=T0)
    enqueue(store, outbox, [event("y")], now=T0 + 30)
    d = Deliverer(outbox, metrics=metrics, backoff_initial_seconds=1, backoff_max_seconds=1)
    d.run_once(T0 + 100)
    get = metrics.registry.get_sample_value
    assert get("driftline_sink_outbox_pending", {"sink": "a"}) == 2
    assert get("driftline_sink_outbox_oldest_age_seconds", {"sink": "a"}) == 100
    assert get("driftline_sink_outbox_pending", {"sink": "b"}) == 0
    assert get("driftline_sink_outbox_oldest_age_seconds", {"sink": "b"}) == 0
    st = outbox.stats()
    assert (st["a"].pending, st["a"].oldest_pending_created_at) == (2, T0)


def test_reminders_repeat_while_firing_and_stop_when_resolved(store):
    sink = FakeSink("slack", repeat=3600)
    log_sink = FakeSink("kafka", groupable=False)  # no repeat interval: never reminded
    outbox = make(store, sink, log_sink)
    first = [event("x"), event("y")]
    enqueue(store, outbox, first, now=T0)
    d = Deliverer(outbox)
    d.run_once(T0)
    d.run_once(T0 + 3599)
    assert len(sink.delivered) == 1
    d.run_once(T0 + 3600)
    assert [n.repeat for n in sink.delivered] == [0, 1]
    reminder = sink.delivered[-1]
    assert reminder.kind == "alert_group" and reminder.state == "firing"
    assert reminder.key == group_key("credit-risk", [f"{e.key}:repeat:1" for e in first])
    d.run_once(T0 + 3600 + 1800)
    assert len(sink.delivered) == 2  # the interval counts from the last reminder
    # y resolves: only x keeps reminding, alone now.
    enqueue(
        store, outbox, [event("y", state="resolved", seq=2, window_end=T0 + 5000)], now=T0 + 5000
    )
    d.run_once(T0 + 7200)
    assert [(n.kind, n.state, n.repeat) for n in sink.delivered[2:]] == [
        ("alert", "resolved", 0),
        ("alert", "firing", 2),
    ]
    assert sink.delivered[-1].key == f"{event('x').key}:repeat:2"
    assert all(n.repeat == 0 for n in log_sink.delivered)


def test_reminder_keys_are_deterministic_across_a_rolled_back_transaction(store):
    sink = FakeSink("a", repeat=60)
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    Deliverer(outbox).run_once(T0)

    def attempt():
        with store.transaction() as conn:
            outbox.enqueue_reminders(conn, T0 + 61)
            keys = [r["key"] for r in outbox.rows() if r["repeat"]]
            raise RuntimeError(keys)

    with pytest.raises(RuntimeError) as first:
        attempt()
    with pytest.raises(RuntimeError) as second:
        attempt()
    assert first.value.args == second.value.args == ([f"{event().key}:repeat:1"],)


def test_no_reminder_piles_up_while_the_sink_is_down(store):
    sink = FakeSink("a", repeat=60, script=[DeliveryOutcome.retry("down")] * 50)
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    d = Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=1)
    for i in range(50):
        d.run_once(T0 + 30 * i)
    # The firing notification is still retrying: no reminder was queued behind it.
    assert len(outbox.rows()) == 1
    d.run_once(T0 + 30 * 50)
    d.run_once(T0 + 30 * 52)
    assert [n.repeat for n in sink.delivered] == [0, 1]


def test_acknowledged_stops_slack_reminders_but_alertmanager_keeps_reposting(store):
    slack = FakeSink("slack", repeat=60)
    am = FakeSink("am", repeat=60, remind_states=frozenset({"firing", "acknowledged", "silenced"}))
    outbox = make(store, slack, am)
    enqueue(store, outbox, [event()])
    d = Deliverer(outbox)
    d.run_once(T0)
    enqueue(store, outbox, [event(state="acknowledged", seq=2)], now=T0 + 10)
    d.run_once(T0 + 10)
    d.run_once(T0 + 100)
    assert [(n.state, n.repeat) for n in slack.delivered] == [("firing", 0), ("acknowledged", 0)]
    assert [(n.state, n.repeat) for n in am.delivered] == [
        ("firing", 0),
        ("acknowledged", 0),
        ("acknowledged", 1),
    ]


def test_stale_transition_does_not_revive_reminders(store):
    sink = FakeSink("a", repeat=60)
    outbox = make(store, sink, group=False)
    enqueue(store, outbox, [event(state="resolved", seq=2)])
    enqueue(store, outbox, [event(state="firing", seq=1)])  # arrives late
    Deliverer(outbox).run_once(T0 + 1000)
    assert not [n for n in sink.delivered if n.repeat]


def test_purge_keeps_pending_and_reminder_anchors(store):
    sink = FakeSink("a", repeat=60)
    outbox = make(store, sink, group=False)
    enqueue(store, outbox, [event("x"), event("y", state="resolved", seq=2)])
    Deliverer(outbox).run_once(T0)
    enqueue(store, outbox, [event("z")], now=T0 + 10)  # pending, not delivered
    with store.transaction() as conn:
        assert outbox.purge(conn, T0 + 1000) == 1  # y; x anchors a reminder, z is pending
    assert sorted(r["key"] for r in outbox.rows()) == sorted([event("x").key, event("z").key])


def test_notification_round_trips_through_json(store):
    sink = FakeSink("a")
    outbox = make(store, sink)
    retrain = RetrainRequest(
        id="r", model="credit-risk", reason="acc", window_start=0, window_end=1, created_at=2
    )
    enqueue(store, outbox, [event("x"), event("y"), retrain])
    Deliverer(outbox).run_once(T0)
    assert len(sink.delivered) == 2
    for n in sink.delivered:
        again = Notification.from_dict(json.loads(json.dumps(n.to_dict())))
        assert again == n
    with pytest.raises(ValueError, match="version"):
        Notification.from_dict({**sink.delivered[0].to_dict(), "version": 99})


def test_outbox_survives_restart_and_duplicate_sink_names_are_refused(store, tmp_path):
    sink = FakeSink("a", script=[DeliveryOutcome.retry("down")])
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    Deliverer(outbox, backoff_initial_seconds=1, backoff_max_seconds=1).run_once(T0)
    store.close()
    again = StateStore(tmp_path / "state")
    sink2 = FakeSink("a")
    Deliverer(make(again, sink2)).run_once(T0 + 10)
    assert Counter(n.key for n in sink2.delivered) == {event().key: 1}
    with pytest.raises(ValueError, match="duplicate sink names"):
        make(again, FakeSink("a"), FakeSink("a"))
    again.close()


def test_a_resolve_that_was_not_notified_still_ends_the_reminders(store):
    sink = FakeSink("a", repeat=60)
    outbox = make(store, sink)
    enqueue(store, outbox, [event()])
    d = Deliverer(outbox)
    d.run_once(T0)
    resolved = event(state="resolved", seq=2)
    # The caller suppressed the resolved notification (e.g. a silence) but reports the transition.
    store.checkpoint(
        {}, {}, extra=lambda conn: outbox.enqueue(conn, [], now=T0 + 10, transitions=[resolved])
    )
    for i in range(1, 5):
        d.run_once(T0 + 100 * i)
    assert [(n.state, n.repeat) for n in sink.delivered] == [("firing", 0)]


def test_reminder_filter_defers_reminders_and_tracks_unnotified_firing(store):
    sink = FakeSink("a", repeat=60)
    allowed = {"now": False}
    outbox = Outbox(store, [sink], reminder_filter=lambda ev, now: allowed["now"], clock=lambda: T0)
    # Fired while silenced: nothing sent, but the alert is firing and will be reminded.
    store.checkpoint(
        {}, {}, extra=lambda conn: outbox.enqueue(conn, [], now=T0, transitions=[event()])
    )
    d = Deliverer(outbox)
    d.run_once(T0 + 61)
    d.run_once(T0 + 200)
    assert sink.delivered == []
    allowed["now"] = True  # silence over
    d.run_once(T0 + 230)
    assert sink.delivered == []  # refused at T0 + 200: asked again one interval later
    d.run_once(T0 + 261)
    assert [(n.state, n.repeat, n.key) for n in sink.delivered] == [
        ("firing", 1, f"{event().key}:repeat:1")
    ]


def test_final_outcomes_are_reported_for_the_audit_log(store):
    ok = FakeSink("ok")
    bad = FakeSink("bad", script=[DeliveryOutcome.permanent("HTTP 400", status_code=400)])
    outbox = make(store, ok, bad)
    enqueue(store, outbox, [event()])
    seen = []
    d = Deliverer(outbox, clock=lambda: T0, on_outcome=lambda sink, n, outcome, err: seen.append((sink, n.key, outcome, err)))
    d.run_once(T0)
    assert sorted(s[0] for s in seen) == ["bad", "ok"]
    assert ("ok", event().key, "delivered", None) in seen
    assert any(s[0] == "bad" and s[2] == "failed" and "400" in s[3] for s in seen)
