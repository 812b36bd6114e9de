"""Alert sinks: Slack, Standard Webhooks, Prometheus Alertmanager and a Kafka topic.

Each sink delivers one outbox notification once (:mod:`monitor.sinks.base`); retries,
backoff, ordering and durability live in :mod:`monitor.outbox`. :func:`build_sinks` makes
the sinks the configuration enables.
"""

from __future__ import annotations

from typing import Any

from monitor.sinks.alertmanager import AlertmanagerSink
from monitor.sinks.base import DeliveryOutcome, Sink, make_http_client
from monitor.sinks.kafka import KafkaSink
from monitor.sinks.slack import SlackSink
from monitor.sinks.webhook import WebhookSink

__all__ = [
    "AlertmanagerSink",
    "DeliveryOutcome",
    "KafkaSink",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "build_sinks",
    "kafka_producer_config",
    "make_http_client",
]


def kafka_producer_config(kafka: Any) -> dict[str, Any]:
    """kafka-python producer arguments for the ``[kafka]`` section's connection settings."""
    cfg: dict[str, Any] = {
        "client_id": f"{kafka.client_id}-alerts",
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        cfg["sasl_mechanism"] = kafka.sasl_mechanism
        cfg["sasl_plain_username"] = kafka.sasl_plain_username
        cfg["sasl_plain_password"] = kafka.sasl_plain_password
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        cfg["ssl_check_hostname"] = kafka.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(kafka, key):
                cfg[key] = getattr(kafka, key)
    return cfg


def build_sinks(config: Any, *, bootstrap_servers: list[str] | None = None) -> list[Sink]:
    """The enabled sinks of a loaded :class:`monitor.config.Config`, in a fixed order.

    ``bootstrap_servers`` overrides ``kafka.bootstrap_servers`` (the demo's embedded
    broker). The Kafka sink is skipped, not an error, when no broker is configured at all
    (``driftline demo`` before its broker starts passes the address here).
    """
    d = config.delivery
    a = config.alerting
    s = config.sinks
    sinks: list[Sink] = []
    if s.slack.enabled:
        sinks.append(
            SlackSink(
                s.slack.webhook_url,
                dashboard_url=s.slack.dashboard_url,
                max_per_second=s.slack.max_per_second,
                timeout_seconds=d.timeout_seconds,
                repeat_interval_seconds=a.repeat_interval_seconds,
                # buttons only where a click can be verified and carried out (/slack/actions)
                buttons=bool(s.slack.signing_secret),
            )
        )
    if s.webhook.enabled:
        sinks.append(
            WebhookSink(
                s.webhook.url,
                s.webhook.secret,
                previous_secret=s.webhook.previous_secret,
                timeout_seconds=d.timeout_seconds,
                repeat_interval_seconds=a.repeat_interval_seconds,
            )
        )
    if s.alertmanager.enabled:
        sinks.append(
            AlertmanagerSink(
                s.alertmanager.url,
                resend_interval_seconds=s.alertmanager.resend_interval_seconds,
                dashboard_url=s.slack.dashboard_url,
                timeout_seconds=d.timeout_seconds,
            )
        )
    servers = (
        list(bootstrap_servers)
        if bootstrap_servers is not None
        else list(config.kafka.bootstrap_servers)
    )
    if s.kafka.enabled and servers:
        sinks.append(
            KafkaSink(
                config.topics.alerts,
                servers,
                timeout_seconds=d.timeout_seconds,
                producer_config=kafka_producer_config(config.kafka),
            )
        )
    return sinks
