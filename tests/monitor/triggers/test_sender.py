"""RetrainSender: sends approved requests once, retries with backoff, gives up after
max_attempts, and records every attempt in the audit log."""

from __future__ import annotations

import json
import random

import pytest

from monitor.audit import AuditLog, verify
from monitor.oversight import Oversight
from monitor.state import StateStore
from monitor.triggers import HttpTarget
from monitor.triggers.sender import RetrainSender


@pytest.fixture
def setup(tmp_path, recorder):
    store = StateStore(tmp_path / "s")
    audit = AuditLog(tmp_path / "audit.jsonl")
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=False)
    sender = RetrainSender(ov, HttpTarget(url=recorder.url), max_attempts=3, initial_backoff_seconds=10,
                           max_backoff_seconds=100, rng=random.Random(1))
    yield store, ov, sender, tmp_path / "audit.jsonl"
    sender.close()
    audit.close()
    store.close()


def _propose(store, ov, now, model="m"):
    with store.transaction() as conn:
        req = ov.propose_retrain(conn, model, "drift", (0.0, 60.0), {}, 0, False, now)
    ov.flush_audit()
    return req


def test_send_retry_then_success(setup, recorder):
    store, ov, sender, audit_path = setup
    req = _propose(store, ov, 1000.0)
    recorder.statuses = [503]
    assert sender.send_due(now=1000.0) == {"sent": 0, "retry": 1, "failed": 0}
    r = ov.get_retrain(req.id)
    assert r["status"] == "approved" and r["attempts"] == 1 and 1000.0 <= r["next_attempt_at"] <= 1010.0
    assert sender.send_due(now=r["next_attempt_at"] - 0.001) == {"sent": 0, "retry": 0, "failed": 0}
    assert sender.send_due(now=r["next_attempt_at"]) == {"sent": 1, "retry": 0, "failed": 0}
    assert ov.get_retrain(req.id)["status"] == "sent"
    assert sender.send_due(now=5000.0) == {"sent": 0, "retry": 0, "failed": 0}
    assert len(recorder.requests) == 2
    kinds = [json.loads(line)["kind"] for line in audit_path.read_text().splitlines()]
    assert kinds == ["retrain.created", "trigger.attempt_failed", "trigger.sent"]
    assert verify(audit_path).ok


def test_gives_up_after_max_attempts_and_on_permanent(setup, recorder):
    store, ov, sender, audit_path = setup
    a = _propose(store, ov, 0.0, model="a")
    recorder.statuses = [500, 500, 500]
    now = 0.0
    for _ in range(3):
        sender.send_due(now=now)
        now += 1000.0
    assert ov.get_retrain(a.id)["status"] == "failed" and len(recorder.requests) == 3
    b = _propose(store, ov, 0.0, model="b")
    recorder.statuses = [400]
    assert sender.send_due(now=now)["failed"] == 1
    assert ov.get_retrain(b.id)["status"] == "failed" and ov.get_retrain(b.id)["response_status"] == 400
    last = [json.loads(line) for line in audit_path.read_text().splitlines()][-1]
    assert last["kind"] == "trigger.failed" and last["data"]["status_code"] == 400
