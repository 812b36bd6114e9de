"""Kafka alerts-topic sink: each alert transition (and retrain request) as a CloudEvent.

Records use the CloudEvents 1.0 Kafka binding in structured mode: the value is the JSON
event (``specversion``, ``id``, ``source``, ``type``, ``time``, ``datacontenttype``,
``subject``, ``data``), the ``content-type`` header says so, and the record key is the
model, so one model's events keep their order in one partition. ``id`` is the outbox
idempotency key, identical on every retry: a consumer that keeps the ids it has seen
drops the duplicates an at-least-once retry may produce.

This sink is not grouped: a topic is read by programs, which want one event per
transition, and it gets no reminders (a log of transitions, not a pager).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from kafka.errors import KafkaError

from monitor.errors import ConfigError
from monitor.sinks.base import ALL_KINDS, DeliveryOutcome, Sink
from monitor.sinks.render import iso

if TYPE_CHECKING:
    from monitor.outbox import Notification

__all__ = ["KafkaSink", "cloudevents"]

log = logging.getLogger("driftline.sinks.kafka")
CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
_enc = msgspec.json.Encoder()


def cloudevents(n: Notification) -> list[tuple[str, dict]]:
    """(record key, CloudEvent) pairs for one notification; one per alert transition."""
    if n.retrain is not None:
        r = n.retrain
        return [
            (
                r.model,
                {
                    "specversion": "1.0",
                    "id": n.key,
                    "source": f"driftline/{r.model}",
                    "type": f"io.driftline.retrain.{r.status}",
                    "time": iso(r.created_at),
                    "datacontenttype": "application/json",
                    "subject": r.id,
                    "data": msgspec.to_builtins(r),
                },
            )
        ]
    out = []
    for ev in n.events:
        # A lone transition's id is the notification key; inside a group each keeps its own.
        ce_id = (
            n.key if len(n.events) == 1 else ev.key + (f":repeat:{n.repeat}" if n.repeat else "")
        )
        out.append(
            (
                ev.model,
                {
                    "specversion": "1.0",
                    "id": ce_id,
                    "source": f"driftline/{ev.model}",
                    "type": f"io.driftline.alert.{ev.state}",
                    "time": iso(ev.window_end),
                    "datacontenttype": "application/json",
                    "subject": f"{ev.rule}/{ev.scope}",
                    "data": msgspec.to_builtins(ev),
                },
            )
        )
    return out


class KafkaSink(Sink):
    """Produces CloudEvents to ``topic`` with ``acks=all`` and waits for the broker's ack.

    ``producer_config`` carries the connection settings of the ``[kafka]`` section
    (security protocol, SASL, TLS) as kafka-python ``KafkaProducer`` arguments. The
    producer is created on first use, so a broker that is down at start-up delays alerts
    instead of stopping the daemon.
    """

    kinds = ALL_KINDS
    groupable = False
    repeat_interval_seconds = 0.0

    def __init__(
        self,
        topic: str,
        bootstrap_servers: list[str] | str,
        *,
        name: str = "kafka",
        timeout_seconds: float = 10.0,
        producer_config: dict[str, Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
    ):
        if not topic:
            raise ConfigError(
                "is empty; name the alerts topic or disable the Kafka sink", key="topics.alerts"
            )
        if not bootstrap_servers:
            raise ConfigError(
                "is empty; the Kafka alerts sink needs a broker", key="kafka.bootstrap_servers"
            )
        if not timeout_seconds > 0:
            raise ConfigError(
                f"must be > 0, got {timeout_seconds!r}", key="delivery.timeout_seconds"
            )
        self.name = name
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.timeout_seconds = timeout_seconds
        self.producer_config = dict(producer_config or {})
        if producer_factory is None:
            from kafka import KafkaProducer

            producer_factory = KafkaProducer
        self._factory = producer_factory
        self._producer: Any = None

    def _make_producer(self) -> Any:
        ms = int(self.timeout_seconds * 1000)
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "acks": "all",
            "max_block_ms": ms,
            "request_timeout_ms": ms,
            # The outbox owns retries; the producer's own must end before it gives up.
            "delivery_timeout_ms": 2 * ms,
            "key_serializer": str.encode,
        }
        known = getattr(self._factory, "DEFAULT_CONFIG", None)
        if known is None or "bootstrap_timeout_ms" in known:
            # kafka-python 3 waits 30 s for a first broker by default, whatever max_block_ms says.
            cfg["bootstrap_timeout_ms"] = ms
        cfg.update(self.producer_config)
        return self._factory(**cfg)

    def send(self, notification: Notification) -> DeliveryOutcome:
        try:
            if self._producer is None:
                self._producer = self._make_producer()
            futures = [
                self._producer.send(
                    self.topic,
                    key=key,
                    value=_enc.encode(ce),
                    headers=[("content-type", CONTENT_TYPE)],
                )
                for key, ce in cloudevents(notification)
            ]
            self._producer.flush(timeout=self.timeout_seconds)
            for f in futures:
                f.get(timeout=self.timeout_seconds)
        except KafkaError as exc:
            return DeliveryOutcome.retry(f"{self.name}: {type(exc).__name__}: {exc}")
        return DeliveryOutcome.success()

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=self.timeout_seconds)
            except Exception:  # closing a producer to a dead broker may raise; nothing to save
                log.debug("closing Kafka producer", exc_info=True)
            self._producer = None
