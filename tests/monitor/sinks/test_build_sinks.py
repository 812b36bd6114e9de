"""build_sinks: the configuration's enabled sinks, with secrets from the environment."""

from __future__ import annotations

import base64

from monitor.config import load_config_text
from monitor.metrics import Metrics
from monitor.outbox import build_delivery
from monitor.sinks import AlertmanagerSink, KafkaSink, SlackSink, WebhookSink, build_sinks
from monitor.state import StateStore

SECRET = "whsec_" + base64.b64encode(b"a" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"b" * 32).decode()

TEXT = """
[kafka]
bootstrap_servers = ["127.0.0.1:9092"]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "svc"
sasl_plain_password = "${KAFKA_PASSWORD}"
ssl_cafile = "/etc/ca.pem"

[topics]
alerts = "ml-alerts"

[alerting]
repeat_interval_seconds = 3600.0

[delivery]
timeout_seconds = 4.0

[sinks.slack]
enabled = true
webhook_url = "${SLACK_WEBHOOK_URL}"
dashboard_url = "https://grafana.example/d/driftline?var-model={model}"
max_per_second = 0.5

[sinks.webhook]
enabled = true
url = "https://hooks.example/driftline"
secret = "${HOOK_SECRET}"
previous_secret = "${HOOK_OLD}"

[sinks.alertmanager]
enabled = true
url = "https://alertmanager.example:9093"
resend_interval_seconds = 30.0
"""

MODEL = """
[[models]]
name = "credit-risk"
task = "binary"
sensitive = []

  [[models.features]]
  name = "income"
  type = "numeric"
"""

ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/xyz",
    "HOOK_SECRET": SECRET,
    "HOOK_OLD": OLD,
    "KAFKA_PASSWORD": "pw",
}


def test_enabled_sinks_are_built_from_config():
    sinks = build_sinks(load_config_text(TEXT + MODEL, env=ENV))
    slack, hook, am, kafka = sinks
    assert isinstance(slack, SlackSink) and slack.webhook_url == ENV["SLACK_WEBHOOK_URL"]
    assert (slack.max_per_second, slack.timeout_seconds, slack.repeat_interval_seconds) == (
        0.5,
        4.0,
        3600.0,
    )
    assert isinstance(hook, WebhookSink) and hook.url == "https://hooks.example/driftline"
    assert len(hook.headers("id", b"{}")["webhook-signature"].split(" ")) == 2  # both keys sign
    assert isinstance(am, AlertmanagerSink) and am.url == "https://alertmanager.example:9093"
    assert am.repeat_interval_seconds == 30.0
    assert isinstance(kafka, KafkaSink) and kafka.topic == "ml-alerts"
    assert kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert kafka.producer_config == {
        "client_id": "driftline-alerts",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
        "ssl_check_hostname": True,
        "ssl_cafile": "/etc/ca.pem",
    }
    assert len({s.name for s in sinks}) == 4
    for s in sinks:
        s.close()


def test_defaults_build_only_kafka_and_only_with_a_broker():
    cfg = load_config_text(MODEL, env={})
    assert build_sinks(cfg) == []  # no bootstrap servers configured: nothing to produce to
    (kafka,) = build_sinks(cfg, bootstrap_servers=["127.0.0.1:19092"])
    assert kafka.bootstrap_servers == ["127.0.0.1:19092"] and kafka.topic == "driftline-alerts"


def test_build_delivery_wires_alerting_and_delivery_settings(tmp_path):
    text = "[alerting]\ngroup_by_model = false\n[delivery]\nmax_attempts = 7\nbackoff_max_seconds = 60.0\n"
    cfg = load_config_text(text + MODEL, env={})
    store = StateStore(tmp_path)
    outbox, deliverer = build_delivery(
        store, cfg, metrics=Metrics(), bootstrap_servers=["127.0.0.1:1"]
    )
    assert outbox.group_by_model is False and list(outbox.sinks) == ["kafka"]
    assert (deliverer.max_attempts, deliverer.backoff_max_seconds) == (7, 60.0)
    assert not deliverer.running
    deliverer.stop()
    store.close()
