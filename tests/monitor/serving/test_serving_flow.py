"""Serving actions end to end: a firing alert whose rule says rollback -> a pending request ->
approved through the API (via the CLI) -> exactly one KServe merge patch; cooldown, dry run,
rejection, retries with backoff, a restart after a crash, and the audit chain at the end."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest
from prometheus_client import CollectorRegistry

from monitor import oversight_cli
from monitor.audit import AuditLog, verify
from monitor.events import AlertEvent, alert_id
from monitor.http import HttpServer
from monitor.metrics import Metrics
from monitor.oversight import Oversight
from monitor.serving import KServeTarget, MlflowTarget, ModelServing
from monitor.serving.actions import ServingActions
from monitor.serving.sender import ServingSender
from monitor.state import StateStore

TOKEN = "api-token"
T0 = 1_700_000_000.0
WHERE = {"credit-risk": ModelServing(namespace="ml", rollback_version="7")}
ROLLBACK_PATCH = {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def _alert(started, actions=("notify", "rollback"), model="credit-risk", seq=1, state="firing"):
    return AlertEvent(
        id=alert_id(model, "accuracy-drop", "model", started), seq=seq, state=state, model=model,
        rule="accuracy-drop", metric="accuracy", scope="model", severity="critical", value=0.71,
        threshold=0.75, window_start=started - 900, window_end=started, started_at=started,
        model_version="v8", actions=list(actions),
    )


class World:
    """A state store, audit log, oversight and serving actions over one directory."""

    def __init__(self, tmp_path, target, *, dry_run=False, require_approval=True, cooldown=3600.0, metrics=None,
                 **sender_kw):
        self.store = StateStore(tmp_path / "state")
        self.audit_path = tmp_path / "audit.jsonl"
        self.audit = AuditLog(self.audit_path)
        self.ov = Oversight(self.store, self.audit, cooldown_seconds=86400, min_new_labels=0, metrics=metrics)
        self.sender = ServingSender(self.ov, target, dry_run=dry_run, rng=random.Random(3), **sender_kw)
        self.actions = ServingActions(self.ov, cooldown_seconds=cooldown, require_approval=require_approval,
                                      sender=self.sender)

    def checkpoint(self, events):
        """What App.checkpoint does with transitions: record them and propose, in one transaction."""
        with self.store.transaction() as conn:
            self.ov.record_transitions(conn, events)
            made = self.actions.propose(conn, events)
        self.ov.flush_audit()
        return made

    def entries(self):
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def close(self):
        self.actions.close()
        self.audit.close()
        self.store.close()


def test_rollback_approved_through_the_api_sends_one_merge_patch(tmp_path, kserve, sa_dir, monkeypatch, capsys):
    metrics = Metrics(CollectorRegistry())
    w = World(tmp_path, KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE), metrics=metrics)
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, "ok"), w.ov, TOKEN,
                     on_approve=lambda req: w.actions.send_due() if "action" in req else None)
    srv.start()
    try:
        (req,) = w.checkpoint([_alert(T0)])
        assert req.status == "pending" and req.action == "rollback"
        assert w.actions.send_due() == {"sent": 0, "retry": 0, "failed": 0, "dry_run": 0}
        assert kserve.requests == []

        monkeypatch.setenv("DRIFTLINE_API_TOKEN", TOKEN)
        base = ["--url", srv.url, "--config", str(tmp_path / "none.toml")]
        # retrain listings stay as they were; --kind shows the serving request
        assert oversight_cli.main(["retrains", *base, "--status", "pending", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["retrains"] == []
        assert oversight_cli.main(["retrains", *base, "--kind", "rollback", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["retrains"]
        assert [(r["id"], r["kind"], r["status"]) for r in listed] == [(req.id, "rollback", "pending")]
        assert oversight_cli.main(["approve", req.id, *base, "--by", "alice", "--reason", "v8 is worse"]) == 0

        (r,) = kserve.requests
        assert r["method"] == "PATCH"
        assert r["path"] == "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/credit-risk"
        assert r["headers"]["content-type"] == "application/merge-patch+json"
        assert r["json"]["spec"] == ROLLBACK_PATCH["spec"]
        assert kserve.isvcs[("ml", "credit-risk")]["spec"]["predictor"]["canaryTrafficPercent"] == 0
        got = w.ov.get_retrain(req.id)
        assert got["status"] == "sent" and got["decided_by"] == "alice" and got["response_status"] == 200
        # the scheduler's next pass sends nothing more
        assert w.actions.send_due()["sent"] == 0 and len(kserve.requests) == 1
        assert metrics.registry.get_sample_value(
            "driftline_serving_actions_total", {"model": "credit-risk", "action": "rollback", "outcome": "sent"}) == 1
    finally:
        srv.stop()
        w.close()
    entries = w.entries()
    assert [(e["kind"], e.get("actor")) for e in entries] == [
        ("alert.transition", None), ("serving.proposed", None), ("serving.approved", "alice"), ("serving.sent", None),
    ]
    sent = entries[3]["data"]
    assert sent["action"] == "rollback" and sent["target"] == "kserve" and sent["status_code"] == 200
    assert sent["request"]["method"] == "PATCH" and sent["request"]["body"] == r["json"]
    assert sent["request"]["headers"]["Authorization"] == "***"  # the token is not in the log
    assert "sa-token-1" not in w.audit_path.read_text()
    assert entries[1]["data"]["requires_approval"] is True and entries[1]["data"]["evidence"]["alert"]["value"] == 0.71
    assert verify(w.audit_path).ok


def test_cooldown_suppresses_a_second_action(tmp_path, kserve, sa_dir):
    w = World(tmp_path, KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE),
              require_approval=False, cooldown=3600.0)
    try:
        (first,) = w.checkpoint([_alert(T0)])
        assert first.status == "approved" and first.decided_by == "policy"
        assert w.actions.send_due(now=T0)["sent"] == 1
        # half an hour later the rule fires again, this time asking to disable: suppressed
        assert w.checkpoint([_alert(T0 + 1800, actions=("disable",))]) == []
        assert w.actions.send_due(now=T0 + 1800)["sent"] == 0 and len(kserve.requests) == 1
        # after the cooldown a new episode goes through again
        (third,) = w.checkpoint([_alert(T0 + 3600, actions=("disable",))])
        assert third.action == "disable"
        assert w.actions.send_due(now=T0 + 3600)["sent"] == 1 and len(kserve.requests) == 2
    finally:
        w.close()
    kinds = [e["kind"] for e in w.entries() if e["kind"].startswith("serving.")]
    assert kinds == ["serving.proposed", "serving.sent", "serving.suppressed", "serving.proposed", "serving.sent"]
    suppressed = next(e for e in w.entries() if e["kind"] == "serving.suppressed")["data"]
    assert suppressed["cause"] == "cooldown" and suppressed["action"] == "disable"
    assert suppressed["cooldown_until"] == T0 + 3600
    assert verify(w.audit_path).ok


def test_dry_run_sends_nothing_and_audits_the_exact_request(tmp_path, mlflow):
    target = MlflowTarget(url=mlflow.url, token="dapi-secret", models=WHERE)
    w = World(tmp_path, target, dry_run=True, require_approval=False)
    try:
        (req,) = w.checkpoint([_alert(T0)])
        assert w.actions.send_due(now=T0) == {"sent": 0, "retry": 0, "failed": 0, "dry_run": 1}
        assert mlflow.requests == [] and mlflow.models["credit-risk"]["aliases"] == {"champion": "8"}
        assert w.ov.get_retrain(req.id)["status"] == "dry_run"
        assert w.actions.send_due(now=T0 + 10)["dry_run"] == 0  # recorded once, not again
    finally:
        w.close()
    dry = [e for e in w.entries() if e["kind"] == "serving.dry_run"]
    assert len(dry) == 1
    call = dry[0]["data"]["request"]
    expected = target.build(req)
    assert call == {"method": "POST", "url": mlflow.url + "/api/2.0/mlflow/registered-models/alias",
                    "headers": {**expected.headers, "Authorization": "***"},
                    "body": {"name": "credit-risk", "alias": "champion", "version": "7"}}
    assert "dapi-secret" not in w.audit_path.read_text()
    assert verify(w.audit_path).ok


def test_rejected_request_never_sends(tmp_path, kserve, sa_dir):
    w = World(tmp_path, KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE))
    try:
        (req,) = w.checkpoint([_alert(T0)])
        w.ov.reject(req.id, "bob", "the drop is a labelling delay")
        for k in range(3):
            assert w.actions.send_due(now=T0 + 60 * k)["sent"] == 0
        assert kserve.requests == [] and w.ov.get_retrain(req.id)["status"] == "rejected"
        from monitor.oversight import ConflictError

        with pytest.raises(ConflictError, match="rollback request .* is rejected"):
            w.ov.approve(req.id, "carol", "changed my mind")
    finally:
        w.close()
    assert [e["kind"] for e in w.entries()] == ["alert.transition", "serving.proposed", "serving.rejected"]
    assert verify(w.audit_path).ok


def test_5xx_retries_with_backoff_then_succeeds(tmp_path, kserve, sa_dir):
    w = World(tmp_path, KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE),
              require_approval=False, max_attempts=5, initial_backoff_seconds=10, max_backoff_seconds=100)
    try:
        (req,) = w.checkpoint([_alert(T0)])
        kserve.statuses = [503, 500]
        assert w.actions.send_due(now=T0)["retry"] == 1
        r1 = w.ov.get_retrain(req.id)
        assert r1["status"] == "approved" and r1["attempts"] == 1 and T0 <= r1["next_attempt_at"] <= T0 + 10
        assert w.actions.send_due(now=r1["next_attempt_at"] - 0.001)["retry"] == 0  # not due yet
        assert w.actions.send_due(now=r1["next_attempt_at"])["retry"] == 1
        r2 = w.ov.get_retrain(req.id)
        # full jitter: the second wait is bounded by twice the first bound
        assert r1["next_attempt_at"] <= r2["next_attempt_at"] <= r1["next_attempt_at"] + 20
        assert w.actions.send_due(now=r2["next_attempt_at"])["sent"] == 1
        assert w.ov.get_retrain(req.id)["status"] == "sent" and len(kserve.requests) == 3
        assert kserve.requests[0]["json"] == kserve.requests[2]["json"]  # the same request each time
    finally:
        w.close()
    kinds = [e["kind"] for e in w.entries() if e["kind"].startswith("serving.")]
    assert kinds == ["serving.proposed", "serving.attempt_failed", "serving.attempt_failed", "serving.sent"]
    assert verify(w.audit_path).ok


def test_replay_and_restart_after_a_crash_send_once(tmp_path, kserve, sa_dir):
    target = KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE)
    w = World(tmp_path, target, require_approval=False)
    ev = _alert(T0)
    (req,) = w.checkpoint([ev])
    # the checkpoint is replayed after a crash: the same proposal has the same id, not a second row
    with w.store.transaction() as conn:
        again = w.ov.propose_serving(conn, "rollback", "credit-risk", req.reason, (ev.window_start, ev.window_end),
                                     {}, T0, cooldown_seconds=0.0, require_approval=False)
    assert again is None and len(w.ov.list_retrains(kind="all")) == 1
    assert w.actions.send_due(now=T0)["sent"] == 1
    w.close()
    # a restarted daemon over the same state sends nothing more
    w2 = World(tmp_path, target, require_approval=False)
    try:
        assert w2.actions.send_due(now=T0 + 100) == {"sent": 0, "retry": 0, "failed": 0, "dry_run": 0}
        assert len(kserve.requests) == 1 and w2.ov.get_retrain(req.id)["status"] == "sent"
    finally:
        w2.close()
    assert verify(w.audit_path).ok


def test_retrain_and_serving_requests_do_not_suppress_each_other(tmp_path, kserve, sa_dir):
    w = World(tmp_path, KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE))
    try:
        ev = _alert(T0, actions=("retrain", "rollback"))
        with w.store.transaction() as conn:
            w.ov.record_transitions(conn, [ev])
            retrain = w.ov.propose_retrain(conn, "credit-risk", "drop", (ev.window_start, ev.window_end), {}, 10,
                                           True, T0)
            (rollback,) = w.actions.propose(conn, [ev])
        w.ov.flush_audit()
        assert retrain is not None and rollback.id != retrain.id
        assert [r["id"] for r in w.ov.list_retrains()] == [retrain.id]
        assert [r["id"] for r in w.ov.list_retrains(kind="rollback")] == [rollback.id]
        assert {r["kind"] for r in w.ov.list_retrains(kind="all")} == {"retrain", "rollback"}
        # approving the retrain sends no serving call; approving the rollback does
        w.ov.approve(retrain.id, "alice", "ok")
        assert w.actions.send_due()["sent"] == 0
        assert [q.id for q, _ in w.ov.due_retrains(T0 + 1e9)] == [retrain.id]
        w.ov.approve(rollback.id, "alice", "ok")
        assert w.actions.send_due()["sent"] == 1 and len(kserve.requests) == 1
        assert [q.id for q, _ in w.ov.due_retrains(T0 + 1e9)] == [retrain.id]
    finally:
        w.close()
    kinds = [e["kind"] for e in w.entries()]
    assert kinds == ["alert.transition", "retrain.created", "serving.proposed", "retrain.approved",
                     "serving.approved", "serving.sent"]
    assert verify(w.audit_path).ok


def test_state_from_before_serving_actions_still_loads(tmp_path):
    """A state database written before the kind column existed: its rows are retrains."""
    store = StateStore(tmp_path / "state")
    with store.transaction() as conn:
        conn.execute(
            "CREATE TABLE retrains (id TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL, "
            "created_at REAL NOT NULL, updated_at REAL NOT NULL, request BLOB NOT NULL, attempts INTEGER NOT NULL "
            "DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, last_error TEXT, response_status INTEGER)"
        )
        old = {"id": "a" * 24, "model": "m", "reason": "r", "window_start": 0.0, "window_end": 1.0,
               "created_at": 2.0, "status": "pending", "model_version": None, "evidence": {}, "decided_by": None,
               "decision_reason": None}
        conn.execute("INSERT INTO retrains(id, model, status, created_at, updated_at, request) VALUES (?,?,?,?,?,?)",
                     (old["id"], "m", "pending", 2.0, 2.0, json.dumps(old).encode()))
    audit = AuditLog(tmp_path / "audit.jsonl")
    ov = Oversight(store, audit)
    try:
        (row,) = ov.list_retrains()
        assert row["id"] == old["id"] and row["kind"] == "retrain" and "action" not in row
        assert ov.approve(old["id"], "alice", "fine").status == "approved"
        assert [q.id for q, _ in ov.due_retrains(1e12)] == [old["id"]]
    finally:
        audit.close()
        store.close()
    cols = [r[1] for r in sqlite3.connect(store.path).execute("PRAGMA table_info(retrains)")]
    assert cols[-1] == "kind"
