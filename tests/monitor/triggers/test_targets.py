"""Each trigger template's request against a recording loopback server."""

from __future__ import annotations

import json

import httpx
import pytest

from monitor.events import RetrainRequest
from monitor.triggers import (
    TARGETS,
    AirflowTarget,
    ArgoTarget,
    GitHubTarget,
    HttpTarget,
    KubeflowTarget,
    make_target,
    target_from_config,
)

REQ = RetrainRequest(
    id="abc123def456abc123def456", model="credit-risk", reason="accuracy below 0.75",
    window_start=1_700_000_000.0, window_end=1_700_000_900.0, created_at=1_700_000_901.0,
    status="approved", model_version="v7", evidence={"accuracy": 0.71, "drifted": ["income"]},
    decided_by="alice", decision_reason="checked",
)
EXPECTED_FIELDS = {
    "request_id": REQ.id, "model": "credit-risk", "model_version": "v7", "reason": "accuracy below 0.75",
    "window_start": "2023-11-14T22:13:20Z", "window_end": "2023-11-14T22:28:20Z", "approved_by": "alice",
}


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as c:
        yield c


def _one(recorder):
    assert len(recorder.requests) == 1
    return recorder.requests[0]


def test_airflow(recorder, client):
    t = AirflowTarget(url=recorder.url, dag_id="retrain_credit", token="s3cret")
    res = t.send(REQ, client)
    assert res.outcome.ok
    r = _one(recorder)
    assert r["method"] == "POST" and r["path"] == "/api/v1/dags/retrain_credit/dagRuns"
    assert r["headers"]["authorization"] == "Bearer s3cret"
    assert r["json"]["dag_run_id"] == f"driftline-retrain-{REQ.id}"
    conf = r["json"]["conf"]
    assert {k: conf[k] for k in EXPECTED_FIELDS} == EXPECTED_FIELDS
    assert conf["evidence"] == REQ.evidence
    recorder.statuses = [409]  # already created by an earlier attempt: success
    assert t.send(REQ, client).outcome.ok


def test_argo(recorder, client):
    t = ArgoTarget(url=recorder.url, workflow_template="retrain", namespace="ml")
    assert t.send(REQ, client).outcome.ok
    r = _one(recorder)
    assert r["path"] == "/api/v1/workflows/ml/submit" and "authorization" not in r["headers"]
    body = r["json"]
    assert body["resourceKind"] == "WorkflowTemplate" and body["resourceName"] == "retrain"
    params = dict(p.split("=", 1) for p in body["submitOptions"]["parameters"])
    assert {k: params[k] for k in EXPECTED_FIELDS} == EXPECTED_FIELDS
    assert json.loads(params["evidence"]) == REQ.evidence
    assert body["submitOptions"]["name"] == f"driftline-retrain-{REQ.id}"


def test_kubeflow(recorder, client):
    t = KubeflowTarget(url=recorder.url, pipeline_id="p1", pipeline_version_id="v1", experiment_id="e1", token="k")
    assert t.send(REQ, client).outcome.ok
    r = _one(recorder)
    assert r["path"] == "/apis/v2beta1/runs"
    body = r["json"]
    assert body["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "v1"}
    assert body["experiment_id"] == "e1" and body["display_name"] == f"driftline-retrain-{REQ.id}"
    params = body["runtime_config"]["parameters"]
    assert {k: params[k] for k in EXPECTED_FIELDS} == EXPECTED_FIELDS
    assert json.loads(params["evidence"]) == REQ.evidence


def test_github(recorder, client):
    t = GitHubTarget(repository="acme/models", event_type="retrain", url=recorder.url, token="ghp")
    recorder.statuses = [204]
    assert t.send(REQ, client).outcome.ok
    r = _one(recorder)
    assert r["path"] == "/repos/acme/models/dispatches"
    assert r["headers"]["accept"] == "application/vnd.github+json"
    assert r["headers"]["x-github-api-version"] == "2022-11-28"
    body = r["json"]
    assert body["event_type"] == "retrain" and len(body["client_payload"]) <= 10
    assert {k: body["client_payload"][k] for k in EXPECTED_FIELDS} == EXPECTED_FIELDS
    with pytest.raises(ValueError, match="owner/name"):
        GitHubTarget(repository="acme")


def test_http_and_classification(recorder, client):
    t = HttpTarget(url=recorder.url + "/hooks/retrain", method="put", headers={"X-Team": "ml"})
    assert t.send(REQ, client).outcome.ok
    r = _one(recorder)
    assert r["method"] == "PUT" and r["path"] == "/hooks/retrain"
    assert r["headers"]["idempotency-key"] == REQ.id and r["headers"]["x-team"] == "ml"
    assert r["json"]["kind"] == "driftline.retrain_request" and r["json"]["version"] == 1
    assert {k: r["json"][k] for k in EXPECTED_FIELDS} == EXPECTED_FIELDS
    recorder.statuses = [503, 400, 409]
    a, b, c = (t.send(REQ, client).outcome for _ in range(3))
    assert (a.ok, a.retryable, a.status_code) == (False, True, 503)
    assert (b.ok, b.retryable) == (False, False)
    assert not c.ok  # 409 is success only for engines with unique run names
    recorder.body = b"x" * 5000
    assert len(t.send(REQ, client).response_excerpt) == 500


def test_connection_refused_is_retryable(client):
    t = HttpTarget(url="http://127.0.0.1:9")  # discard port: nothing listens
    out = t.send(REQ, client).outcome
    assert not out.ok and out.retryable


def test_make_target_and_config_errors():
    assert set(TARGETS) == {"airflow", "argo", "kubeflow", "github", "http"}
    with pytest.raises(ValueError, match="triggers.target.kind 'luigi' is unknown"):
        make_target("luigi", url="http://x")
    with pytest.raises(ValueError, match="triggers.target.dag_id is required"):
        make_target("airflow", url="http://x", dag_id="")
    with pytest.raises(ValueError, match="triggers.target.dag_id is not used by kind = 'argo'"):
        make_target("argo", url="http://x", workflow_template="w", namespace="n", dag_id="d")
    from monitor.config import TriggerTargetConfig

    cfg = TriggerTargetConfig(kind="airflow", url="http://127.0.0.1:1", dag_id="d", token="t")
    t = target_from_config(cfg)
    assert isinstance(t, AirflowTarget) and t.dag_id == "d" and t.token == "t"
