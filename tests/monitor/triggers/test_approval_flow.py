"""The approval flow end to end: drift -> pending retrain -> approve via the API (through
the CLI) -> the Airflow-shaped endpoint receives exactly one dagRun with the expected conf;
a second drift during cooldown creates no second request; every step is in the audit log,
`audit verify` passes, and changing one byte of the log makes it fail."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from monitor import oversight_cli
from monitor.audit import AuditLog, main_verify, verify
from monitor.events import AlertEvent, alert_id
from monitor.http import HttpServer
from monitor.oversight import Oversight
from monitor.state import StateStore
from monitor.triggers import AirflowTarget
from monitor.triggers.sender import RetrainSender

TOKEN = "flow-token"


def _drift(model, started, seq=1):
    return AlertEvent(
        id=alert_id(model, "accuracy-drop", "model", started), seq=seq, state="firing", model=model,
        rule="accuracy-drop", metric="accuracy", scope="model", severity="critical", value=0.71,
        threshold=0.75, window_start=started - 900, window_end=started, started_at=started,
        model_version="v3", actions=["notify", "retrain"],
    )


def test_approval_flow_end_to_end(tmp_path, recorder, monkeypatch, capsys):
    recorder.airflow_unique = True
    store = StateStore(tmp_path / "state")
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(audit_path)
    ov = Oversight(store, audit, cooldown_seconds=3600, min_new_labels=100, require_approval=None)
    sender = RetrainSender(ov, AirflowTarget(url=recorder.url, dag_id="retrain_credit", token="af-token"))
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, "ok"), ov, TOKEN,
                     on_approve=lambda req: sender.send_due())
    srv.start()
    try:
        t0 = 1_700_000_000.0
        # 1. Drift: the pipeline records the transition and proposes a retrain in one checkpoint.
        ev = _drift("credit-risk", t0)
        with store.transaction() as conn:
            ov.record_transitions(conn, [ev])
            req = ov.propose_retrain(conn, "credit-risk", "accuracy-drop: accuracy 0.71 < 0.75",
                                     (ev.window_start, ev.window_end), {"accuracy": 0.71, "alert_id": ev.id},
                                     labels_since_last=5000, high_risk=True, now=t0, model_version="v3")
        ov.flush_audit()
        assert req is not None and req.status == "pending"
        # Pending: the scheduler's sender pass sends nothing.
        assert sender.send_due() == {"sent": 0, "retry": 0, "failed": 0}
        assert recorder.requests == []

        # 2. A person lists and approves through the CLI, which calls the API.
        monkeypatch.setenv("DRIFTLINE_API_TOKEN", TOKEN)
        base = ["--url", srv.url, "--config", str(tmp_path / "none.toml")]
        assert oversight_cli.main(["retrains", *base, "--status", "pending", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)["retrains"]
        assert [r["id"] for r in listed] == [req.id]
        assert oversight_cli.main(["approve", req.id, *base, "--by", "alice", "--reason", "report checked"]) == 0

        # 3. Exactly one dagRun with the expected conf.
        assert len(recorder.requests) == 1
        call = recorder.requests[0]
        assert call["method"] == "POST" and call["path"] == "/api/v1/dags/retrain_credit/dagRuns"
        assert call["headers"]["authorization"] == "Bearer af-token"
        assert call["json"]["dag_run_id"] == f"driftline-retrain-{req.id}"
        conf = call["json"]["conf"]
        assert conf["model"] == "credit-risk" and conf["model_version"] == "v3"
        assert conf["reason"] == "accuracy-drop: accuracy 0.71 < 0.75"
        assert conf["window_start"] == "2023-11-14T21:58:20Z" and conf["window_end"] == "2023-11-14T22:13:20Z"
        assert conf["approved_by"] == "alice" and conf["decision_reason"] == "report checked"
        assert conf["evidence"] == {"accuracy": 0.71, "alert_id": ev.id}
        assert ov.get_retrain(req.id)["status"] == "sent"

        # 4. A second drift during the cooldown: no second request, nothing more sent.
        ev2 = _drift("credit-risk", t0 + 1800)
        with store.transaction() as conn:
            ov.record_transitions(conn, [ev2])
            again = ov.propose_retrain(conn, "credit-risk", "accuracy-drop again",
                                       (ev2.window_start, ev2.window_end), {"accuracy": 0.7},
                                       labels_since_last=5000, high_risk=True, now=t0 + 1800)
        ov.flush_audit()
        assert again is None
        assert sender.send_due() == {"sent": 0, "retry": 0, "failed": 0}
        assert len(recorder.requests) == 1 and len(ov.list_retrains()) == 1
    finally:
        srv.stop()
        sender.close()
        audit.close()
        store.close()

    # 5. Every step is in the audit log, and the chain verifies.
    entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
    steps = [(e["kind"], e.get("actor")) for e in entries]
    assert steps == [
        ("alert.transition", None),
        ("retrain.created", None),
        ("retrain.approved", "alice"),
        ("trigger.sent", None),
        ("alert.transition", None),
        ("retrain.suppressed", None),
    ]
    assert entries[3]["data"]["status_code"] == 200 and entries[3]["data"]["target"] == "airflow"
    assert entries[5]["data"]["cause"] == "cooldown"
    assert all(e["model"] == "credit-risk" for e in entries)
    assert verify(audit_path).ok
    assert main_verify(["--path", str(audit_path)]) == 0

    # 6. One changed byte (the approver's name) and verification fails at that entry.
    raw = bytearray(audit_path.read_bytes())
    pos = raw.index(b'"actor":"alice"') + len('"actor":"a')
    raw[pos] = ord("x")
    audit_path.write_bytes(bytes(raw))
    res = verify(audit_path)
    assert not res.ok and res.first_bad_line == 3 and res.entries == 2
    assert main_verify(["--path", str(audit_path)]) == 1
    assert "FAILED at line 3" in capsys.readouterr().err


@pytest.mark.parametrize("status", [409])
def test_resend_after_lost_response_is_one_dag_run(tmp_path, recorder, status):
    """Airflow refuses a repeated dag_run_id with 409; the sender counts it as sent."""
    recorder.airflow_unique = True
    store = StateStore(tmp_path / "s")
    audit = AuditLog(tmp_path / "a.jsonl")
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=False)
    target = AirflowTarget(url=recorder.url, dag_id="d")
    sender = RetrainSender(ov, target)
    with store.transaction() as conn:
        req = ov.propose_retrain(conn, "m", "r", (0.0, 1.0), {}, 0, False, 10.0)
    ov.flush_audit()
    import httpx

    with httpx.Client() as c:
        assert target.send(req, c).outcome.ok  # the first send whose response was "lost"
    assert sender.send_due() == {"sent": 1, "retry": 0, "failed": 0}
    assert [r["json"]["dag_run_id"] for r in recorder.requests] == [f"driftline-retrain-{req.id}"] * 2
    assert len(recorder.seen_ids) == 1 and ov.get_retrain(req.id)["response_status"] == status
    sender.close()
    audit.close()
    store.close()
