"""The daemon's wiring: App.checkpoint turns a firing transition of a rule with
``actions = ["rollback"]`` into a serving request in the same transaction, and the App's
serving sender patches the InferenceService once."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry

from monitor.app import App
from monitor.audit import verify
from monitor.events import AlertEvent, alert_id
from tests.monitor.conftest import FakeConsumer, build_case

RULES = """
  [[models.rules]]
  name = "acc"
  metric = "accuracy"
  alert = 0.55
  actions = ["notify", "rollback"]
"""


def test_checkpoint_routes_rollback_to_the_serving_target(tmp_path, small_spec, kserve, monkeypatch):
    monkeypatch.setenv("KSERVE_TOKEN", "sa-token-1")
    extra = f"""
[delivery]
allow_insecure_loopback = true
[sinks.kafka]
enabled = false
[serving]
dry_run = false
require_approval = false
[serving.target]
kind = "kserve"
url = "{kserve.url}"
token = "${{KSERVE_TOKEN}}"
"""
    config, *_ = build_case(tmp_path, small_spec, hours=0.1, extra_toml=extra, rules=RULES)
    kserve.isvcs[("default", "m")] = {"metadata": {"name": "m"}, "spec": {"predictor": {"canaryTrafficPercent": 20}}}
    state_dir = tmp_path / "state"
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(state_dir), registry=CollectorRegistry())
    try:
        app.consumer = FakeConsumer()
        t0 = 1_700_000_900.0
        ev = AlertEvent(id=alert_id("m", "acc", "model", t0), seq=1, state="firing", model="m", rule="acc",
                        metric="accuracy", scope="model", severity="warning", value=0.5, threshold=0.55,
                        window_start=t0 - 900, window_end=t0, started_at=t0, actions=["notify", "rollback"])
        app.pipeline.out.transitions.append(ev)
        app.checkpoint(commit=False)
        (req,) = app.oversight.list_retrains(kind="rollback")
        assert req["status"] == "approved" and req["decided_by"] == "policy"
        assert app.serving.send_due()["sent"] == 1
        (r,) = kserve.requests
        assert r["method"] == "PATCH" and r["path"].endswith("/namespaces/default/inferenceservices/m")
        assert kserve.isvcs[("default", "m")]["spec"]["predictor"]["canaryTrafficPercent"] == 0
    finally:
        app.close()
    audit = state_dir / "audit.jsonl"
    kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
    assert kinds[-3:] == ["alert.transition", "serving.proposed", "serving.sent"]
    assert verify(audit).ok
