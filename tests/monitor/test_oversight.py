"""Oversight: retrain guardrails, approval lifecycle, notification rules, and the audit
outbox (entries reach the log only when their transaction commits)."""

from __future__ import annotations

import pytest

from monitor.audit import AuditLog, verify
from monitor.events import AlertEvent
from monitor.oversight import ConflictError, NotFoundError, Oversight, OversightError
from monitor.state import StateStore


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path):
    store = StateStore(tmp_path / "state")
    audit = AuditLog(tmp_path / "audit.jsonl")
    clock = Clock()
    ov = Oversight(store, audit, cooldown_seconds=3600, min_new_labels=100, require_approval=None, clock=clock)
    yield store, audit, ov, clock
    audit.close()
    store.close()


def _propose(store, ov, now, model="m", labels=500, high_risk=False, window=(0.0, 900.0)):
    with store.transaction() as conn:
        req = ov.propose_retrain(conn, model, "accuracy below 0.75", window, {"accuracy": 0.7},
                                 labels, high_risk, now)
    ov.flush_audit()
    return req


def _kinds(audit_path):
    import json

    return [json.loads(line)["kind"] for line in audit_path.read_text().splitlines()]


def _event(state="firing", seq=1, model="m", rule="r", aid="a1"):
    return AlertEvent(id=aid, seq=seq, state=state, model=model, rule=rule, metric="psi", scope="feature:x",
                      severity="warning", value=0.3, threshold=0.25, window_start=0.0, window_end=60.0,
                      started_at=0.0)


def test_high_risk_needs_approval_and_lifecycle(env, tmp_path):
    store, audit, ov, clock = env
    req = _propose(store, ov, clock.t, high_risk=True)
    assert req is not None and req.status == "pending"
    assert [r["id"] for r in ov.list_retrains(status="pending")] == [req.id]
    assert ov.due_retrains(clock.t) == []  # pending is never sent
    with pytest.raises(OversightError, match="reason"):
        ov.approve(req.id, "alice", "")
    approved = ov.approve(req.id, "alice", "looked at the report")
    assert approved.status == "approved" and approved.decided_by == "alice"
    with pytest.raises(ConflictError):
        ov.reject(req.id, "bob", "too late")
    assert [r.id for r, _ in ov.due_retrains(clock.t)] == [req.id]
    assert _kinds(tmp_path / "audit.jsonl") == ["retrain.created", "retrain.approved"]


def test_low_risk_is_auto_approved_unless_config_requires(env, tmp_path):
    store, audit, ov, clock = env
    req = _propose(store, ov, clock.t, high_risk=False)
    assert req.status == "approved" and req.decided_by == "policy"
    ov2 = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=True, clock=clock)
    assert _propose(store, ov2, clock.t, model="other").status == "pending"
    ov3 = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=False, clock=clock)
    assert _propose(store, ov3, clock.t, model="third", high_risk=True).status == "approved"


def test_guardrails_one_open_cooldown_min_labels(env, tmp_path):
    store, audit, ov, clock = env
    first = _propose(store, ov, clock.t, high_risk=True)
    # One open request per model.
    assert _propose(store, ov, clock.t + 7200, high_risk=True, window=(900.0, 1800.0)) is None
    ov.reject(first.id, "alice", "false alarm")
    # Cooldown counts from the last request, rejected or not.
    assert _propose(store, ov, clock.t + 60, window=(900.0, 1800.0)) is None
    # Too few new labels.
    assert _propose(store, ov, clock.t + 3700, labels=99, window=(1800.0, 2700.0)) is None
    ok = _propose(store, ov, clock.t + 3700, labels=100, window=(1800.0, 2700.0))
    assert ok is not None
    # Another model is independent.
    assert _propose(store, ov, clock.t + 61, model="other") is not None
    import json

    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    causes = [e["data"].get("cause") for e in entries if e["kind"] == "retrain.suppressed"]
    assert causes == ["open_request", "cooldown", "insufficient_labels"]
    assert verify(tmp_path / "audit.jsonl").ok


def test_override_suppresses_retrain_and_notifications(env):
    store, audit, ov, clock = env
    with store.transaction() as conn:
        ov.record_transitions(conn, [_event()])
    assert ov.should_notify(_event(), clock.t)
    ov.override("m", "carol", "manual rollback in progress")
    assert not ov.should_notify(_event(), clock.t)
    assert _propose(store, ov, clock.t) is None
    assert ov.list_alerts()[0]["id"] == "a1"  # still recorded
    ov.override("m", "carol", "done", active=False)
    assert ov.should_notify(_event(), clock.t)


def test_silence_and_ack_rules(env):
    store, audit, ov, clock = env
    with store.transaction() as conn:
        ov.record_transitions(conn, [_event(), _event(aid="a2", rule="r2")])
    ov.silence(who="dan", reason="maintenance", until=clock.t + 600, model="m", rule="r")
    assert not ov.should_notify(_event(), clock.t)
    assert ov.should_notify(_event(aid="a2", rule="r2"), clock.t)  # other rule
    assert not ov.should_notify(_event(), clock.t + 599)
    assert ov.should_notify(_event(), clock.t + 600)  # expired
    assert {a["id"]: a["state"] for a in ov.list_alerts(now=clock.t)} == {"a1": "silenced", "a2": "firing"}
    ov.acknowledge("a2", "erin", "looking")
    assert not ov.should_notify(_event(aid="a2", rule="r2", seq=2), clock.t)  # re-fire
    assert not ov.should_notify(_event(aid="a2", rule="r2"), clock.t, reminder=True)
    assert ov.should_notify(_event(aid="a2", rule="r2", state="resolved", seq=3), clock.t)  # resolve
    with pytest.raises(NotFoundError):
        ov.acknowledge("nope", "erin")
    with pytest.raises(OversightError, match="future"):
        ov.silence(who="dan", reason="x", until=clock.t - 1, alert_id="a1")
    with store.transaction() as conn:
        ov.record_transitions(conn, [_event(aid="a2", rule="r2", state="resolved", seq=3)])
        ov.record_transitions(conn, [_event(aid="a2", rule="r2", state="firing", seq=2)])  # late, older
    assert ov.get_alert("a2")["state"] == "resolved"
    with pytest.raises(ConflictError):
        ov.acknowledge("a2", "erin")


def test_audit_pending_is_written_only_on_commit(env, tmp_path):
    store, audit, ov, clock = env
    with pytest.raises(RuntimeError), store.transaction() as conn:
        ov.record_transitions(conn, [_event()])
        raise RuntimeError("checkpoint failed")
    ov.flush_audit()
    assert not (tmp_path / "audit.jsonl").read_text()
    with store.transaction() as conn:
        ov.record_transitions(conn, [_event()])
    assert ov.flush_audit() == 1
    assert _kinds(tmp_path / "audit.jsonl") == ["alert.transition"]


def test_flush_after_crash_between_append_and_delete_is_not_duplicated(env, tmp_path):
    store, audit, ov, clock = env
    with store.transaction() as conn:
        ov.record_transitions(conn, [_event(), _event(seq=2, state="resolved"), _event(aid="b", seq=1)])
    # Simulate the crash: two rows reached the log, their deletion did not.
    import json

    rows = store.read().execute("SELECT ref, kind, model, data FROM audit_pending ORDER BY id").fetchall()
    for ref, kind, model, data in rows[:2]:
        audit.append(kind, json.loads(data), model=model, ref=ref)
    Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, clock=clock)  # flushes on start
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["ref"] for e in entries] == [r[0] for r in rows]
    assert ov.flush_audit() == 0
    assert verify(tmp_path / "audit.jsonl").ok


def test_replayed_proposal_is_idempotent(env):
    store, audit, ov, clock = env
    ov_free = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=False, clock=clock)
    a = _propose(store, ov_free, clock.t)
    ov_free.record_attempt(a.id, outcome="sent", target="airflow", status_code=200, response_excerpt="",
                           error=None, next_attempt_at=None, now=clock.t)
    assert _propose(store, ov_free, clock.t) is None  # same window replayed: same id, not re-created
    assert len(ov_free.list_retrains()) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="triggers.cooldown_seconds"):
        Oversight(None, None, cooldown_seconds=-1)
    with pytest.raises(ValueError, match="triggers.min_new_labels"):
        Oversight(None, None, min_new_labels=1.5)
