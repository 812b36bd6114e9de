"""Every Prometheus metric Driftline exports, created on a registry the caller passes.

Names follow ``driftline_<subsystem>_<name>_<unit>``; counters end in ``_total``. Labels
come from bounded sets (model, feature or group scope, metric, rule, sink, topic,
partition) and never carry a prediction id. The Grafana dashboard and PrometheusRule in
``helm/driftline`` query exactly these names.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["Metrics"]


class Metrics:
    """The metric families, bound to one registry (tests build a fresh one each)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.build_info = Info("driftline_build", "Driftline version.", registry=r)
        # stream health
        self.records_consumed = Counter(
            "driftline_consumer_records_total", "Records read from Kafka.", ["topic"], registry=r
        )
        self.records_decoded = Counter(
            "driftline_decoder_records_total", "Records decoded successfully.", ["topic"], registry=r
        )
        self.dead_letters = Counter(
            "driftline_decoder_dead_letters_total",
            "Records that failed decoding and went to the dead-letter topic.",
            ["topic", "reason"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "driftline_consumer_lag_records",
            "High watermark minus position, per assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "driftline_consumer_assigned_partitions", "Partitions assigned to this process.", registry=r
        )
        self.poll_loop_heartbeat = Gauge(
            "driftline_consumer_last_poll_timestamp_seconds",
            "Unix time the poll loop last completed an iteration.",
            registry=r,
        )
        # label join
        self.joined = Counter(
            "driftline_join_matched_total", "Predictions joined with their label.", ["model"], registry=r
        )
        self.join_expired = Counter(
            "driftline_join_expired_total",
            "Join entries dropped by TTL or memory bound (kind: prediction or label).",
            ["model", "kind", "cause"],
            registry=r,
        )
        self.join_pending = Gauge(
            "driftline_join_pending_records",
            "Entries waiting in the join (kind: prediction or label).",
            ["model", "kind"],
            registry=r,
        )
        self.label_delay = Histogram(
            "driftline_join_label_delay_seconds",
            "Event-time delay from prediction to its label: one observation per micro-batch and "
            "model (the batch's median), so quantiles describe batch medians.",
            ["model"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
            registry=r,
        )
        self.label_coverage = Gauge(
            "driftline_join_label_coverage_ratio",
            "Share of predictions in the current window that have a label.",
            ["model"],
            registry=r,
        )
        # panes and evaluation
        self.panes_closed = Counter(
            "driftline_window_panes_closed_total", "Panes closed by the watermark or idle timer.", ["model"], registry=r
        )
        self.late_events = Counter(
            "driftline_window_late_events_total",
            "Events older than the watermark allowed; counted, not added to a pane.",
            ["model"],
            registry=r,
        )
        self.window_events = Gauge(
            "driftline_window_events", "Predictions in the current sliding window.", ["model"], registry=r
        )
        self.statistic = Gauge(
            "driftline_evaluation_value",
            "Latest value of each evaluated statistic (drift, performance, fairness, quality).",
            ["model", "metric", "scope"],
            registry=r,
        )
        self.statistic_ci = Gauge(
            "driftline_evaluation_ci",
            "Confidence bounds of the latest value (bound: low or high).",
            ["model", "metric", "scope", "bound"],
            registry=r,
        )
        self.statistic_p = Gauge(
            "driftline_evaluation_p_value", "p-value of the latest test, when it has one.", ["model", "metric", "scope"], registry=r
        )
        self.threshold = Gauge(
            "driftline_evaluation_threshold",
            "Threshold a rule compares the statistic with (level: warn or alert).",
            ["model", "metric", "scope", "level"],
            registry=r,
        )
        self.drifted_features = Gauge(
            "driftline_evaluation_drifted_features", "Features whose drift rule is at alert level.", ["model"], registry=r
        )
        self.evaluations = Counter(
            "driftline_evaluation_runs_total", "Window evaluations run.", ["model"], registry=r
        )
        # alerts
        self.alerts = Gauge(
            "driftline_alerts", "Alert episodes by current state.", ["model", "state"], registry=r
        )
        self.alert_transitions = Counter(
            "driftline_alert_transitions_total", "Alert lifecycle transitions.", ["model", "rule", "state"], registry=r
        )
        # checkpoints
        self.checkpoint_duration = Histogram(
            "driftline_checkpoint_duration_seconds",
            "Time to write state, offsets and outbox in one transaction.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.checkpoint_last = Gauge(
            "driftline_checkpoint_last_success_timestamp_seconds", "Unix time of the last checkpoint.", registry=r
        )
        self.checkpoint_age = Gauge(
            "driftline_checkpoint_age_seconds", "Seconds since the last checkpoint.", registry=r
        )
        self.checkpoint_age.set_function(self._checkpoint_age)
        self._last_checkpoint = time.time()
        # state.backend = "kafka": restores from the changelog topics
        self.state_restore_seconds = Histogram(
            "driftline_state_restore_seconds",
            "Time to restore an assigned partition's state (kind: partition = stage 1, model = stage 2).",
            ["kind"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120), registry=r,
        )
        self.state_restore_records = Gauge(
            "driftline_state_restore_records", "Changelog records read by the restore under way (or the last one).",
            ["kind"], registry=r,
        )
        # delivery
        self.deliveries = Counter(
            "driftline_sink_deliveries_total", "Delivery attempts by outcome.", ["sink", "outcome"], registry=r
        )
        self.outbox_pending = Gauge(
            "driftline_sink_outbox_pending", "Notifications waiting for delivery.", ["sink"], registry=r
        )
        self.outbox_oldest_age = Gauge(
            "driftline_sink_outbox_oldest_age_seconds", "Age of the oldest undelivered notification.", ["sink"], registry=r
        )
        self.retrain_requests = Counter(
            "driftline_trigger_retrain_requests_total", "Retrain requests by outcome.", ["model", "outcome"], registry=r
        )
        self.slack_actions = Counter(
            "driftline_slack_actions_total",
            "Requests to /slack/actions: refused (unsigned, bad_signature, stale, replayed, bad_payload) "
            "or, per alert/request a button named, carried_out, submitted (kafka backend) or failed.",
            ["action", "outcome"], registry=r,
        )
        self.serving_actions = Counter(
            "driftline_serving_actions_total", "Rollback / disable requests by action and outcome.",
            ["model", "action", "outcome"], registry=r,
        )

    def _checkpoint_age(self) -> float:
        return max(0.0, time.time() - self._last_checkpoint)

    def checkpoint_done(self, seconds: float) -> None:
        self._last_checkpoint = time.time()
        self.checkpoint_last.set(self._last_checkpoint)
        self.checkpoint_duration.observe(seconds)
