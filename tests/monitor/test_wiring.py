"""The from_config factories of the oversight parts, fed by the real config loader."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from monitor.audit import AuditLog, verify
from monitor.config import config_hash, load_config_text
from monitor.http import HttpServer
from monitor.oversight import Oversight
from monitor.reports import QUALITY_COLUMNS, ReportWriter
from monitor.state import StateStore
from monitor.triggers import ArgoTarget
from monitor.triggers.sender import RetrainSender


def _config(tmp_path):
    return load_config_text(
        f"""
[http]
host = "127.0.0.1"
port = 0
api_token = "${{TOK}}"
max_body_bytes = 2048
rate_limit_per_minute = 30

[[models]]
name = "m"
task = "binary"
  [[models.features]]
  name = "income"
  type = "numeric"

[triggers]
cooldown_seconds = 60.0
min_new_labels = 10
require_approval = true
[triggers.target]
kind = "argo"
url = "https://argo.example"
workflow_template = "retrain"
namespace = "ml"

[audit]
path = "{tmp_path / 'audit.jsonl'}"

[reports]
dir = "{tmp_path / 'reports'}"
sample_size = 123
retention_days = 7.0
""",
        env={"TOK": "from-env"},
    )


def test_from_config(tmp_path):
    cfg = _config(tmp_path)
    store = StateStore(tmp_path / "s")
    audit = AuditLog.from_config(cfg)
    entry = audit.config_loaded(cfg, "config.toml")
    assert entry["data"]["config_hash"] == config_hash(cfg) and "from-env" not in str(entry)
    ov = Oversight.from_config(cfg, store, audit)
    assert (ov.cooldown_seconds, ov.min_new_labels, ov.require_approval) == (60.0, 10, True)
    sender = RetrainSender.from_config(cfg, ov)
    assert isinstance(sender.target, ArgoTarget) and sender.target.namespace == "ml"
    assert sender.max_attempts == cfg.delivery.max_attempts
    rw = ReportWriter.from_config(cfg)
    res = rw.reservoir(cfg.model("m"))
    assert res.size == 123 and res.columns == ("income", *QUALITY_COLUMNS)
    srv = HttpServer.from_config(cfg, CollectorRegistry(), lambda: True, lambda: (True, ""), ov,
                                 models=lambda: [{"name": m.name} for m in cfg.models])
    srv.start()
    try:
        r = httpx.get(f"{srv.url}/api/models", headers={"Authorization": "Bearer from-env"})
        assert r.status_code == 200 and r.json()["models"][0]["name"] == "m"
        assert srv.max_body_bytes == 2048 and srv.limiter.per_minute == 30
    finally:
        srv.stop()
        sender.close()
    audit.close()
    assert verify(tmp_path / "audit.jsonl").ok
    store.close()
