"""Each serving target's request against a loopback fake of the real API."""

from __future__ import annotations

import httpx
import pytest

from monitor.config import load_config_text
from monitor.events import ServingRequest
from monitor.serving import (
    TARGETS,
    HttpServingTarget,
    KServeTarget,
    MlflowTarget,
    ModelServing,
    describe_call,
    make_target,
    target_from_config,
)


def _req(action="rollback", model="credit-risk", **kw):
    base = dict(
        id="0123456789abcdef01234567", action=action, model=model, reason='accuracy-drop: "accuracy" model = 0.71',
        window_start=1_700_000_000.0, window_end=1_700_000_900.0, created_at=1_700_000_900.0, status="approved",
        model_version="v8", evidence={"accuracy": 0.71}, decided_by="alice", decision_reason="checked the report",
    )
    base.update(kw)
    return ServingRequest(**base)


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as c:
        yield c


WHERE = {"credit-risk": ModelServing(namespace="ml", alias="champion", rollback_version="7")}


def test_kserve_rollback_is_a_merge_patch_sending_all_traffic_back(kserve, sa_dir, client):
    t = KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE)
    res = t.send(_req("rollback"), client)
    assert res.outcome.ok and res.outcome.status_code == 200
    (r,) = kserve.requests
    assert r["method"] == "PATCH"
    assert r["path"] == "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/credit-risk"
    assert r["headers"]["content-type"] == "application/merge-patch+json"
    assert r["headers"]["authorization"] == "Bearer sa-token-1"
    assert r["json"] == {
        "metadata": {"annotations": {"driftline.io/serving-request": "0123456789abcdef01234567"}},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    isvc = kserve.isvcs[("ml", "credit-risk")]
    # only the canary share changed: the model spec and other annotations are untouched
    assert isvc["spec"]["predictor"] == {"canaryTrafficPercent": 0,
                                         "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://m/v8"}}
    assert isvc["metadata"]["annotations"]["team"] == "risk"
    # a re-send (lost response) leaves the same object
    before = dict(isvc)
    assert t.send(_req("rollback"), client).outcome.ok
    assert kserve.isvcs[("ml", "credit-risk")] == before


def test_kserve_disable_sets_the_stop_annotation(kserve, sa_dir, client):
    t = KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE)
    assert t.send(_req("disable"), client).outcome.ok
    (r,) = kserve.requests
    assert r["method"] == "PATCH" and r["headers"]["content-type"] == "application/merge-patch+json"
    assert r["json"] == {"metadata": {"annotations": {"driftline.io/serving-request": "0123456789abcdef01234567",
                                                      "serving.kserve.io/stop": "true"}}}
    isvc = kserve.isvcs[("ml", "credit-risk")]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/stop"] == "true"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_kserve_token_is_reread_and_errors_are_classified(kserve, sa_dir, client):
    t = KServeTarget(url=kserve.url, service_account_dir=str(sa_dir), models=WHERE)
    kserve.token = "sa-token-2"  # the kubelet rotated the projected token
    out = t.send(_req(), client).outcome
    assert (out.ok, out.retryable, out.status_code) == (False, False, 401)
    (sa_dir / "token").write_text("sa-token-2")
    assert t.send(_req(), client).outcome.ok
    # an InferenceService that does not exist (the model's name by default) is a final 404
    out = KServeTarget(url=kserve.url, service_account_dir=str(sa_dir)).send(_req(model="fraud"), client).outcome
    assert (out.ok, out.retryable, out.status_code) == (False, False, 404)
    assert kserve.requests[-1]["path"].endswith("/namespaces/default/inferenceservices/fraud")
    (sa_dir / "token").unlink()
    with pytest.raises(OSError, match="service-account token"):
        t.build(_req())
    with pytest.raises(ValueError, match="needs token or service_account_dir"):
        KServeTarget(url=kserve.url)


def test_mlflow_rollback_points_the_alias_back(mlflow, client):
    t = MlflowTarget(url=mlflow.url, token="dapi", models=WHERE)
    assert t.send(_req("rollback"), client).outcome.ok
    (r,) = mlflow.requests
    assert r["method"] == "POST" and r["path"] == "/api/2.0/mlflow/registered-models/alias"
    assert r["headers"]["content-type"] == "application/json" and r["headers"]["authorization"] == "Bearer dapi"
    assert r["json"] == {"name": "credit-risk", "alias": "champion", "version": "7"}
    assert mlflow.models["credit-risk"]["aliases"] == {"champion": "7"}
    with pytest.raises(ValueError, match="rollback_version is not set for model 'fraud'"):
        t.build(_req(model="fraud"))


def test_mlflow_disable_deletes_the_alias_once(mlflow, client):
    t = MlflowTarget(url=mlflow.url, models={"credit-risk": {"registered_model": "credit-risk", "alias": "champion"}})
    first = t.send(_req("disable"), client).outcome
    assert first.ok and first.status_code == 200
    assert mlflow.models["credit-risk"]["aliases"] == {}
    r = mlflow.requests[0]
    assert r["method"] == "DELETE" and r["path"] == "/api/2.0/mlflow/registered-models/alias"
    assert r["json"] == {"name": "credit-risk", "alias": "champion"}
    again = t.send(_req("disable"), client).outcome  # re-send after a lost response
    assert again.ok and again.status_code == 404
    # a 404 on the set is not "done": the version is missing
    bad = MlflowTarget(url=mlflow.url, models={"credit-risk": ModelServing(rollback_version="99")})
    out = bad.send(_req("rollback"), client).outcome
    assert (out.ok, out.retryable, out.status_code) == (False, False, 404)


def test_http_template_fills_url_and_body_safely(recorder, client):
    t = HttpServingTarget(
        url=recorder.url + "/v1/models/{model}/{action}",
        method="delete",
        body='{"reason": "{reason}", "to": "{rollback_version}", "meta": {"by": "{approved_by}", "n": 3}}',
        headers={"X-Team": "ml", "Authorization": "Bearer s3cret"},
        models={"fraud/eu": ModelServing(rollback_version="7")},
    )
    req = _req(model="fraud/eu")
    call = t.build(req)
    assert t.send(req, client).outcome.ok
    (r,) = recorder.requests
    assert r["method"] == "DELETE" and r["path"] == "/v1/models/fraud%2Feu/rollback"
    assert r["headers"]["idempotency-key"] == req.id and r["headers"]["x-team"] == "ml"
    assert r["headers"]["authorization"] == "Bearer s3cret"
    # the quotes in the reason stay inside the JSON string
    assert r["json"] == {"reason": 'accuracy-drop: "accuracy" model = 0.71', "to": "7",
                         "meta": {"by": "alice", "n": 3}}
    d = describe_call(call)
    assert d["headers"]["Authorization"] == "***" and d["headers"]["X-Team"] == "ml"
    assert d["method"] == "DELETE" and d["url"].endswith("/v1/models/fraud%2Feu/rollback") and d["body"] == r["json"]


def test_http_default_body_is_a_versioned_document(recorder, client):
    t = HttpServingTarget(url=recorder.url + "/hooks/serving")
    assert t.send(_req("disable"), client).outcome.ok
    body = recorder.requests[0]["json"]
    assert body["kind"] == "driftline.serving_action" and body["version"] == 1
    assert {k: body[k] for k in ("action", "request_id", "model", "model_version", "approved_by")} == {
        "action": "disable", "request_id": "0123456789abcdef01234567", "model": "credit-risk",
        "model_version": "v8", "approved_by": "alice"}
    assert body["window_start"] == "2023-11-14T22:13:20Z" and body["evidence"] == {"accuracy": 0.71}
    recorder.statuses = [503, 400]
    a, b = (t.send(_req(), client).outcome for _ in range(2))
    assert (a.ok, a.retryable, a.status_code) == (False, True, 503)
    assert (b.ok, b.retryable, b.status_code) == (False, False, 400)


def test_registry_and_config(tmp_path):
    assert set(TARGETS) == {"http", "kserve", "mlflow"}
    with pytest.raises(ValueError, match="serving.target.kind 'seldon' is unknown"):
        make_target("seldon", url="http://x")
    with pytest.raises(ValueError, match="serving.target.url is required for kind = 'mlflow'"):
        make_target("mlflow", url="")
    with pytest.raises(ValueError, match="serving.target.body is not used by kind = 'mlflow'"):
        make_target("mlflow", url="http://x", body="{}")
    cfg = load_config_text(f"""
[delivery]
allow_insecure_loopback = true
[serving.target]
kind = "kserve"
url = "http://127.0.0.1:1"
service_account_dir = "{tmp_path}"
[[models]]
name = "credit-risk"
task = "binary"
[models.serving]
inference_service = "credit-risk-isvc"
namespace = "ml"
[[models]]
name = "fraud"
task = "binary"
""")
    t = target_from_config(cfg)
    assert isinstance(t, KServeTarget) and t.service_account_dir == str(tmp_path)
    assert t.where(_req()).inference_service == "credit-risk-isvc" and t.where(_req()).namespace == "ml"
    assert t.where(_req(model="fraud")).inference_service == "fraud"
