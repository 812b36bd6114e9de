"""Driftline's configuration: ``config.toml`` -> typed, validated, frozen settings.

One frozen msgspec Struct per TOML table; attribute names equal the TOML keys (which equal
the constructor arguments of the code that uses them), except ``for`` (a Python keyword),
which is the attribute ``RuleConfig.for_``. Every problem is reported with the file line
and the dotted key, all problems of a file together in one :class:`ConfigError`.

Strings may reference environment variables, ``"${NAME}"`` (whole value or embedded;
``"$${"`` is a literal ``"${"``). Secret keys (names containing ``password``, ``token``,
``secret``, ``webhook_url``, and secret-looking HTTP header names) must be written as
``"${NAME}"`` and are masked by :func:`mask_secrets` / :func:`render_resolved`.

>>> cfg = load_config_text('''
... [[models]]
... name = "m"
... task = "binary"
... [[models.rules]]
... name = "acc"
... metric = "accuracy"
... direction = "below"
... warn = 0.8
... alert = 0.7
... ''')
>>> rule = cfg.model("m").rules[0]
>>> rule.scope, rule.resolve, rule.for_
('model', 0.8, 1)
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from monitor.errors import ConfigError

__all__ = [
    "AlertingConfig",
    "AlertmanagerSinkConfig",
    "AttributionsConfig",
    "AuditConfig",
    "CardsConfig",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "DETECTORS",
    "DRIFT_TESTS",
    "FAIRNESS_METRICS",
    "FeatureConfig",
    "FieldsConfig",
    "HttpConfig",
    "JoinConfig",
    "KafkaConfig",
    "KafkaSinkConfig",
    "LOWER_IS_WORSE",
    "P_VALUE_TESTS",
    "EITHER_DIRECTION",
    "metric_direction",
    "METRIC_SCOPES",
    "MODEL_METRICS",
    "ModelConfig",
    "MultivariateConfig",
    "SlicesConfig",
    "SecurityConfig",
    "ESTIMATED_METRICS",
    "MULTIVARIATE_METRICS",
    "ATTRIBUTION_METRICS",
    "SUBGROUP_METRICS",
    "SECURITY_METRICS",
    "ReportsConfig",
    "PrivacyConfig",
    "RuleConfig",
    "ModelServingConfig",
    "SERVING_PLACEHOLDERS",
    "ServingConfig",
    "ServingTargetConfig",
    "SchedulerConfig",
    "SinksConfig",
    "SlackSinkConfig",
    "StateConfig",
    "TopicsConfig",
    "TriggerTargetConfig",
    "TriggersConfig",
    "WebhookSinkConfig",
    "config_hash",
    "is_secret_key",
    "load_config",
    "load_config_text",
    "mask_secrets",
    "render_resolved",
    "url_problem",
]

# --------------------------------------------------------------------------- metrics

DRIFT_TESTS = (
    "psi", "jensen_shannon", "kl", "hellinger", "total_variation", "wasserstein", "ks",
    "chi_square", "g_test",
)  # fmt: skip
#: Confidence-based estimates from the score distribution alone (no labels needed).
ESTIMATED_METRICS = (
    "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1",
    "estimated_roc_auc",
)  # fmt: skip
CLASSIFICATION_METRICS = (
    "accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece",
    *ESTIMATED_METRICS,
)  # fmt: skip
REGRESSION_METRICS = ("mae", "rmse", "mape", "bias", "r2")
#: Multivariate drift: PCA reconstruction error of the numeric features (model scope).
MULTIVARIATE_METRICS = ("reconstruction_error", "reconstruction_error_change")
#: Attribution drift: 1 - NDCG@k of the feature-importance ranking, and its rank correlation.
ATTRIBUTION_METRICS = ("attribution_shift", "attribution_rank_correlation")
#: Degraded subgroup: the worst significant slice's gap to the rest of the window.
SUBGROUP_METRICS = ("subgroup_error_gap", "subgroup_selection_gap")
#: Security signals at ingress: traffic-rate anomaly score, shares of inputs outside the
#: reference's support, of near-duplicate queries and of dead-lettered records.
SECURITY_METRICS = ("traffic_rate_anomaly", "out_of_support_share", "near_duplicate_share", "schema_violation_rate")
MODEL_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS + (
    "label_coverage", "missing_rate", "unseen_rate", "score_psi",
    *MULTIVARIATE_METRICS, *ATTRIBUTION_METRICS, *SUBGROUP_METRICS, *SECURITY_METRICS,
)  # fmt: skip
DETECTORS = ("adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w", "cusum")
FAIRNESS_METRICS = (
    "demographic_parity_difference", "disparate_impact_ratio", "equal_opportunity_difference",
    "equalized_odds_difference", "predictive_parity_difference",
)  # fmt: skip
#: Metric name -> the only scope a rule on it may have.
METRIC_SCOPES: dict[str, str] = {
    **dict.fromkeys(DRIFT_TESTS, "feature"),
    **dict.fromkeys(MODEL_METRICS, "model"),
    **dict.fromkeys(DETECTORS, "model"),
    **dict.fromkeys(FAIRNESS_METRICS, "group"),
}
#: Drift tests whose rules are judged on the (FDR-adjusted) p-value, so their warn/alert
#: thresholds are p-levels and lower is worse.
P_VALUE_TESTS = frozenset({"ks", "chi_square", "g_test"})
#: Metrics where a lower value is worse: their rules have ``direction = "below"``.
LOWER_IS_WORSE = frozenset(
    {"accuracy", "precision", "recall", "f1", "roc_auc", *ESTIMATED_METRICS, "r2",
     "label_coverage", "disparate_impact_ratio", "attribution_rank_correlation"}
) | P_VALUE_TESTS  # fmt: skip
#: Metrics whose rules may look either way (bias is signed; detectors: up or down shifts).
EITHER_DIRECTION = frozenset({"bias", *DETECTORS})


def metric_direction(metric: str) -> str | None:
    """The direction in which ``metric`` gets worse: "above", "below", or None (either)."""
    if metric in EITHER_DIRECTION:
        return None
    return "below" if metric in LOWER_IS_WORSE else "above"


# --------------------------------------------------------------------------- settings


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of all settings tables (frozen: settings never change after load)."""


class KafkaConfig(_Section):
    bootstrap_servers: tuple[str, ...] = ()
    group_id: str = "driftline"
    client_id: str = "driftline"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    max_poll_records: int = 1000
    fetch_max_wait_ms: int = 500
    poll_timeout_ms: int = 500
    max_lag_ready: int = 100000
    fetch_process: bool = True


class TopicsConfig(_Section):
    predictions: str = "predictions"
    labels: str = "labels"
    dead_letter: str = "driftline-dead-letter"
    alerts: str = "driftline-alerts"


class FieldsConfig(_Section):
    prediction_id: str = "prediction_id"
    model: str = "model"
    model_version: str = "model_version"
    timestamp: str = "timestamp"
    label_timestamp: str = "timestamp"
    timestamp_unit: Literal["s", "ms", "iso"] = "s"
    features: str = "features"
    score: str = "score"
    predicted: str = "prediction"
    sensitive: str = "sensitive"
    label: str = "label"
    attributions: str = "attributions"


class JoinConfig(_Section):
    ttl_seconds: float = 86400.0
    max_pending: int = 1000000


class StateConfig(_Section):
    dir: str = "./state"
    checkpoint_interval_seconds: float = 10.0
    #: "sqlite": state, offsets and outbox in the local file only (one process, or replicas
    #: that each keep their own partitions' state). "kafka": the local file is a cache; state
    #: lives in compacted changelog topics, every checkpoint is one Kafka transaction, and
    #: panes travel over an internal topic to the model's one owner (monitor/kstate.py).
    backend: Literal["sqlite", "kafka"] = "sqlite"
    #: Prefix of the internal topics ("" = kafka.group_id).
    topic_prefix: str = ""
    #: Replication factor of internal topics created by `driftline run` (-1: the broker's default).
    replication_factor: int = -1
    #: Partitions of the panes and model-changelog topics: the most processes that share stage 2.
    model_partitions: int = 6
    #: A transaction left open by a dead process is aborted after this; a new owner's restore
    #: waits for it (Kafka Streams uses 10 s for exactly-once too).
    transaction_timeout_ms: int = 10000
    #: State snapshots are split into records of at most this size (the broker's default
    #: message.max.bytes is 1 MB).
    chunk_bytes: int = 512 * 1024


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 9108
    api_token: str = ""
    max_body_bytes: int = 65536
    rate_limit_per_minute: int = 120
    external_url: str = ""


class SchedulerConfig(_Section):
    idle_close_seconds: float = 30.0


class FeatureConfig(_Section):
    name: str
    type: Literal["numeric", "categorical"]


class RuleConfig(_Section):
    """One alert rule. ``for_`` is the TOML key ``for`` (a Python keyword).

    The loader fills ``scope`` and ``direction`` from the metric when absent (see
    :data:`METRIC_SCOPES`, :func:`metric_direction`) and ``resolve`` from ``warn`` (or
    ``alert`` when there is no warn level); detector rules have no thresholds. Rules on
    :data:`P_VALUE_TESTS` compare the p-value: their thresholds are p-levels.
    """

    name: str
    metric: str
    scope: Literal["feature", "model", "group"] = "model"
    direction: Literal["above", "below"] = "above"  # loader: from the metric when absent
    warn: float | None = None
    alert: float | None = None
    resolve: float | None = None
    min_samples: int = 100
    for_: int = msgspec.field(default=1, name="for")
    cooldown_seconds: float = 900.0
    severity: str = "warning"
    fdr: float = 0.05
    actions: tuple[Literal["notify", "retrain", "rollback", "disable"], ...] = ("notify",)

    @property
    def is_detector(self) -> bool:
        """Detector rules fire on a detection, not on thresholds."""
        return self.metric in DETECTORS


class MultivariateConfig(_Section):
    """PCA reconstruction error of the numeric features (needs two or more)."""

    enabled: bool = True
    n_components: float = 0.65  # < 1: share of variance kept; >= 1: number of components


class AttributionsConfig(_Section):
    """Feature-importance drift from per-prediction attributions (e.g. SHAP values)."""

    enabled: bool = False
    k: int = 5  # NDCG@k: how many top features the ranking compares


class SlicesConfig(_Section):
    """Slices ("where it fails"): a feature's bins or categories, a group, and pairs of them."""

    enabled: bool = True
    dimensions: tuple[str, ...] = ()  # features and sensitive attributes to slice by; () = all
    pair_with: tuple[Literal["sensitive", "categorical", "numeric"], ...] = ("sensitive", "categorical")
    max_cells: int = 20000
    min_size: int = 100
    fdr: float = 0.05
    top: int = 5


class ModelServingConfig(_Section):
    """Where a model is served, for rules with ``actions = ["rollback"]`` or ``["disable"]``.
    Empty names default to the model's own name."""

    inference_service: str = ""  # kserve: the InferenceService (default: the model's name)
    namespace: str = "default"  # kserve: its namespace
    registered_model: str = ""  # mlflow: the registered model (default: the model's name)
    alias: str = "champion"  # mlflow: the alias serving reads
    rollback_version: str = ""  # mlflow: the version a rollback points the alias back to
class SecurityConfig(_Section):
    """Security signals at ingress: traffic rate, out-of-support inputs, near-duplicate
    query bursts, schema violations. Counts and hashes only, never raw inputs."""

    enabled: bool = True
    resolution: float = 0.1  # near-duplicate grid cell, in reference standard deviations
    projections: int = 4  # random directions inputs are rounded on (fewer features: the features); 0 = none
    width: int = 1024  # count-min counters per row (a power of two)
    depth: int = 4  # count-min rows
    period_seconds: float = 86400.0  # traffic seasonality: 86400 = hour of day, 604800 = hour of week
    slot_seconds: float = 3600.0
    half_life_periods: float = 7.0  # the baseline forgets a slot's panes with this half-life, in periods
    min_periods: float = 1.0  # periods of a slot's history before its traffic is judged
    tolerance: float = 1.5  # traffic within [expected / tolerance, expected * tolerance] scores 0


class ModelConfig(_Section):
    name: str
    task: Literal["binary", "multiclass", "regression"]
    classes: tuple[str, ...] = ()
    decision_threshold: float = 0.5
    reference: str = ""
    warmup_events: int = 5000
    n_bins: int = 10
    pane_seconds: float = 60.0
    window_panes: int = 15
    allowed_lateness_seconds: float = 30.0
    high_risk: bool = False
    sensitive: tuple[str, ...] = ()
    intersections: tuple[tuple[str, ...], ...] = ()
    min_group_size: int = 30
    features: tuple[FeatureConfig, ...] = ()
    rules: tuple[RuleConfig, ...] = ()
    multivariate: MultivariateConfig = msgspec.field(default_factory=MultivariateConfig)
    attributions: AttributionsConfig = msgspec.field(default_factory=AttributionsConfig)
    slices: SlicesConfig = msgspec.field(default_factory=SlicesConfig)
    serving: ModelServingConfig = msgspec.field(default_factory=ModelServingConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)

    def feature(self, name: str) -> FeatureConfig:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"model {self.name!r} has no feature {name!r}")


class AlertingConfig(_Section):
    group_by_model: bool = True
    repeat_interval_seconds: float = 14400.0


class DeliveryConfig(_Section):
    timeout_seconds: float = 10.0
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    max_attempts: int = 0  # 0 = retry forever
    allow_insecure_loopback: bool = False
    poll_interval_seconds: float = 1.0


class SlackSinkConfig(_Section):
    enabled: bool = False
    webhook_url: str = ""
    dashboard_url: str = ""
    max_per_second: float = 1.0
    signing_secret: str = ""  # the Slack app's signing secret: buttons on, /slack/actions served


class WebhookSinkConfig(_Section):
    enabled: bool = False
    url: str = ""
    secret: str = ""
    previous_secret: str = ""


class AlertmanagerSinkConfig(_Section):
    enabled: bool = False
    url: str = ""
    resend_interval_seconds: float = 60.0


class KafkaSinkConfig(_Section):
    enabled: bool = True


class SinksConfig(_Section):
    slack: SlackSinkConfig = msgspec.field(default_factory=SlackSinkConfig)
    webhook: WebhookSinkConfig = msgspec.field(default_factory=WebhookSinkConfig)
    alertmanager: AlertmanagerSinkConfig = msgspec.field(default_factory=AlertmanagerSinkConfig)
    kafka: KafkaSinkConfig = msgspec.field(default_factory=KafkaSinkConfig)


class TriggerTargetConfig(_Section):
    """Where retrain requests go. ``kind = ""``: requests are recorded (API, audit), not sent."""

    kind: Literal["", "airflow", "argo", "kubeflow", "github", "http"] = ""
    url: str = ""
    token: str = ""
    dag_id: str = ""
    workflow_template: str = ""
    namespace: str = ""
    pipeline_id: str = ""
    pipeline_version_id: str = ""
    experiment_id: str = ""
    repository: str = ""
    event_type: str = "driftline-retrain"
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class TriggersConfig(_Section):
    cooldown_seconds: float = 86400.0
    min_new_labels: int = 1000
    require_approval: bool | None = None  # None: models with high_risk = true need approval
    target: TriggerTargetConfig = msgspec.field(default_factory=TriggerTargetConfig)

    def approval_required(self, model: ModelConfig) -> bool:
        """Whether a retrain of ``model`` waits for a person's approval."""
        return model.high_risk if self.require_approval is None else self.require_approval


#: Placeholders a generic HTTP serving template may use in its url and body.
SERVING_PLACEHOLDERS = (
    "action", "model", "model_version", "request_id", "reason", "window_start", "window_end",
    "approved_by", "decision_reason", "inference_service", "namespace", "registered_model", "alias",
    "rollback_version",
)  # fmt: skip
#: In-cluster Kubernetes API server and service-account mount, the kserve target's defaults.
KUBERNETES_URL = "https://kubernetes.default.svc"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ServingTargetConfig(_Section):
    """The serving control endpoint rollback / disable requests go to (``monitor.serving``).
    ``kind = ""``: no target (a rule with a serving action is then a config error)."""

    kind: Literal["", "http", "kserve", "mlflow"] = ""
    url: str = ""
    token: str = ""
    ca_file: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: str = ""
    service_account_dir: str = ""


class ServingConfig(_Section):
    cooldown_seconds: float = 3600.0
    dry_run: bool = True
    require_approval: bool = True
    target: ServingTargetConfig = msgspec.field(default_factory=ServingTargetConfig)


class AuditConfig(_Section):
    """The audit trail: a JSON Lines file (``topic = ""``) or a Kafka topic (monitor.audit_topic)."""

    path: str = "./state/audit.jsonl"
    topic: str = ""
    partitions: int = 1
    replication_factor: int = -1  # -1: the broker's default.replication.factor
    read_timeout_seconds: float = 30.0
    payload_retention_days: float = 0.0  # 0: payloads kept for the life of the log


class ReportsConfig(_Section):
    enabled: bool = True
    dir: str = "./state/reports"
    sample_size: int = 2000
    retention_days: float = 30.0


class CardsConfig(_Section):
    """Periodic model cards (monitor.cards): every ``interval_hours``, one card per model over
    the interval just ended, from the static fields in ``static`` ("": none)."""

    enabled: bool = False
    interval_hours: float = 24.0
    static: str = ""
    dir: str = "./state/cards"
class PrivacyConfig(_Section):
    erasure_secret: str = ""


class Config(_Section):
    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    topics: TopicsConfig = msgspec.field(default_factory=TopicsConfig)
    fields: FieldsConfig = msgspec.field(default_factory=FieldsConfig)
    join: JoinConfig = msgspec.field(default_factory=JoinConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    models: tuple[ModelConfig, ...] = ()
    alerting: AlertingConfig = msgspec.field(default_factory=AlertingConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    sinks: SinksConfig = msgspec.field(default_factory=SinksConfig)
    triggers: TriggersConfig = msgspec.field(default_factory=TriggersConfig)
    serving: ServingConfig = msgspec.field(default_factory=ServingConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    reports: ReportsConfig = msgspec.field(default_factory=ReportsConfig)
    cards: CardsConfig = msgspec.field(default_factory=CardsConfig)
    privacy: PrivacyConfig = msgspec.field(default_factory=PrivacyConfig)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(repr(m.name) for m in self.models) or "none"
        raise KeyError(f"no model named {name!r} in the config (models: {known})")


# --------------------------------------------------------------------------- secrets

_SECRET_KEY = re.compile(r"password|token|secret|webhook_url|authorization|api[-_]?key", re.I)


def is_secret_key(key: str) -> bool:
    """Whether a key (or HTTP header name) holds a secret: must come from ${ENV}, masked."""
    return bool(_SECRET_KEY.search(key))


_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANY_REF = re.compile(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*\}")

# --------------------------------------------------------------------------- line map


def _parse_key(s: str, pos: int) -> tuple[list[str] | None, int]:
    """Parse a (dotted, maybe quoted) TOML key at ``pos``; (None, pos) if there is none."""
    segs: list[str] = []
    n = len(s)
    while True:
        while pos < n and s[pos] in " \t":
            pos += 1
        if pos >= n:
            return None, pos
        c = s[pos]
        if c == '"':
            end = pos + 1
            while end < n and s[end] != '"':
                end += 2 if s[end] == "\\" else 1
            if end >= n:
                return None, pos
            try:
                segs.append(tomllib.loads(f"k = {s[pos : end + 1]}")["k"])
            except tomllib.TOMLDecodeError:
                return None, pos
            pos = end + 1
        elif c == "'":
            end = s.find("'", pos + 1)
            if end < 0:
                return None, pos
            segs.append(s[pos + 1 : end])
            pos = end + 1
        else:
            m = re.compile(r"[A-Za-z0-9_-]+").match(s, pos)
            if not m:
                return None, pos
            segs.append(m.group())
            pos = m.end()
        while pos < n and s[pos] in " \t":
            pos += 1
        if pos < n and s[pos] == ".":
            pos += 1
            continue
        return segs, pos


class _LineMap:
    """Maps key paths (``("models", 1, "rules", 2, "warn")``) to 1-based file lines.

    tomllib reports no positions, so this scans the text: table headers (counting
    ``[[array]]`` occurrences per parent element, as TOML appends them), ``key =`` lines,
    and the elements of arrays (which may span lines). Strings and comments are skipped so
    that text inside them is never taken for a key.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple, int] = {}
        self._aot: dict[tuple, int] = {}
        self._stack: list[list] = []  # open [ / { : [char, path, index, expecting]
        self._mls: str | None = None  # open multi-line string delimiter
        self._scan(text)

    def line(self, path: tuple) -> int | None:
        """The line of ``path`` or of its nearest enclosing key/table."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def _resolve(self, segs: list[str]) -> tuple:
        out: tuple = ()
        for seg in segs:
            out += (seg,)
            if out in self._aot:
                out += (self._aot[out] - 1,)
        return out

    def _scan(self, text: str) -> None:
        table: tuple = ()
        for lineno, raw in enumerate(text.splitlines(), 1):
            if self._stack or self._mls:
                self._feed(raw, 0, lineno)
                continue
            s = raw.lstrip(" \t")
            if not s or s[0] == "#":
                continue
            if s[0] == "[":
                aot = s.startswith("[[")
                segs, _ = _parse_key(s, 2 if aot else 1)
                if not segs:
                    continue
                if aot:
                    base = self._resolve(segs[:-1]) + (segs[-1],)
                    idx = self._aot.get(base, 0)
                    self._aot[base] = idx + 1
                    table = base + (idx,)
                else:
                    table = self._resolve(segs)
                for k in range(1, len(table) + 1):
                    self.lines.setdefault(table[:k], lineno)
                self.lines[table] = lineno
                continue
            segs, pos = _parse_key(s, 0)
            if not segs or pos >= len(s) or s[pos] != "=":
                continue  # not TOML we understand; tomllib reports it
            path = table + tuple(segs)
            for k in range(len(table) + 1, len(path)):
                self.lines.setdefault(path[:k], lineno)
            self.lines[path] = lineno
            self._value_path = path
            self._feed(s, pos + 1, lineno)

    def _element(self, lineno: int) -> tuple | None:
        """Record the start of a value; return its path if it is an array element."""
        if not self._stack:
            return self._value_path
        top = self._stack[-1]
        if top[0] != "[" or top[1] is None:
            return None
        if top[3]:
            top[3] = False
            p = top[1] + (top[2],)
            self.lines[p] = lineno
            return p
        return None

    def _feed(self, s: str, i: int, lineno: int) -> None:
        n = len(s)
        while i < n:
            if self._mls:
                if self._mls == '"""' and s[i] == "\\":
                    i += 2
                elif s.startswith(self._mls, i):
                    i += 3
                    while i < n and s[i] == self._mls[0]:  # up to two quotes may end it
                        i += 1
                    self._mls = None
                else:
                    i += 1
                continue
            c = s[i]
            if c in " \t":
                i += 1
            elif c == "#":
                return
            elif c in "\"'":
                self._element(lineno)
                if s.startswith(c * 3, i):
                    self._mls = c * 3
                    i += 3
                    continue
                i += 1
                while i < n and s[i] != c:
                    i += 2 if (c == '"' and s[i] == "\\") else 1
                i += 1
            elif c in "[{":
                p = self._element(lineno)
                self._stack.append([c, p, 0, True])
                i += 1
            elif c in "]}":
                if self._stack:
                    self._stack.pop()
                i += 1
            elif c == ",":
                if self._stack and self._stack[-1][0] == "[":
                    self._stack[-1][2] += 1
                    self._stack[-1][3] = True
                i += 1
            else:
                self._element(lineno)
                i += 1


# --------------------------------------------------------------------------- conversion

_INVALID = object()


def _fmt_key(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            seg = p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p)
            out += f".{seg}" if out else seg
    return out


def _show(value: Any) -> str:
    """A value as TOML would write it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "an array of tables"
        return "an array" if len(str(value)) > 60 else "[" + ", ".join(map(_show, value)) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    lower = {c.lower(): c for c in choices}
    if word.lower() in lower:
        return f'; did you mean "{lower[word.lower()]}"?'
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and len(word) >= 3:
        close = [c for c in choices if c.startswith(word)][:1]
    return f'; did you mean "{close[0]}"?' if close else ""


def _path_is_secret(path: tuple) -> bool:
    names = [p for p in path if isinstance(p, str)]
    return bool(names) and is_secret_key(names[-1])


@dataclass
class _Ctx:
    file: str
    lines: _LineMap
    env: Mapping[str, str]
    allow_insecure_loopback: bool = False
    errors: list[ConfigError] = field(default_factory=list)
    env_refs: dict[tuple, list[str]] = field(default_factory=dict)

    def error(self, path: tuple, message: str, at: tuple | None = None) -> None:
        line = self.lines.line(at if at is not None else path)
        self.errors.append(ConfigError(message, key=_fmt_key(path), line=line, path=self.file))


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str or origin is Literal:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) or origin is dict:
        return "a table"
    if origin is tuple:
        inner = _type_name(typing.get_args(tp)[0]).split(" ", 1)[1]
        plural = {"boolean (true or false)": "booleans (true or false)"}.get(inner)
        if plural is None:
            head, _, tail = inner.partition(" ")
            plural = f"{head}s {tail}".rstrip()
        return "an array of " + plural
    return str(tp)


def _substitute(raw: str, path: tuple, ctx: _Ctx) -> str | object:
    secret = _path_is_secret(path)
    if secret and raw and not _ANY_REF.search(raw):
        ctx.error(
            path,
            'secrets cannot be written in the config file; write "${VARIABLE_NAME}" and '
            "put the value in that environment variable",
        )
        return _INVALID
    ok = True
    refs: list[str] = []

    def repl(m: re.Match) -> str:
        nonlocal ok
        token = m.group(0)
        if token == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            ctx.error(path, 'unterminated "${" (write "$${" for a literal "${")')
            ok = False
            return token
        if not _ENV_NAME.fullmatch(name):
            ctx.error(path, f'invalid environment variable name "{name}" in "${{{name}}}"')
            ok = False
            return token
        refs.append(name)
        if name not in ctx.env:
            ctx.error(path, f"environment variable {name} is not set")
            ok = False
            return token
        return ctx.env[name]

    out = _ENV_REF.sub(repl, raw)
    if refs:
        ctx.env_refs[path] = refs
    return out if ok else _INVALID


def _convert(tp: Any, value: Any, path: tuple, ctx: _Ctx) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value, path, ctx)  # TOML has no null: only Optional unions
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(value, dict):
            return _wrong(tp, value, path, ctx)
        return _build(tp, value, path, ctx)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if not isinstance(value, str):
            return _wrong(tp, value, path, ctx)
        if value in allowed:
            return value
        listed = ", ".join(json.dumps(a) for a in allowed)
        ctx.error(
            path,
            f"unknown value {_show(value)}; expected one of {listed}"
            + _suggest(value, [a for a in allowed if a]),
        )
        return _INVALID
    if origin is tuple:
        if not isinstance(value, list):
            return _wrong(tp, value, path, ctx)
        inner = typing.get_args(tp)[0]
        items = [_convert(inner, v, path + (i,), ctx) for i, v in enumerate(value)]
        return _INVALID if any(v is _INVALID for v in items) else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            return _wrong(tp, value, path, ctx)
        inner = typing.get_args(tp)[1]
        items = {k: _convert(inner, v, path + (k,), ctx) for k, v in value.items()}
        return _INVALID if any(v is _INVALID for v in items.values()) else items
    if tp is bool:
        return value if isinstance(value, bool) else _wrong(tp, value, path, ctx)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _wrong(tp, value, path, ctx)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return _wrong(tp, value, path, ctx)
    if tp is str:
        if not isinstance(value, str):
            return _wrong(tp, value, path, ctx)
        return _substitute(value, path, ctx)
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {_fmt_key(path)}")


def _wrong(tp: Any, value: Any, path: tuple, ctx: _Ctx) -> object:
    got = "a value (hidden: secret)" if _path_is_secret(path) else _show(value)
    expected = _type_name(tp)
    hint = ""
    name = _fmt_key(path)
    if expected == "an array of tables" and isinstance(value, dict):
        hint = f"; write [[{name}]] (double brackets) once per entry"
    elif expected == "a table" and isinstance(value, list) and value and isinstance(value[0], dict):
        hint = f"; write [{name}] (single brackets) once"
    ctx.error(path, f"expected {expected}, got {got}{hint}")
    return _INVALID


def _build(cls: type, raw: dict, path: tuple, ctx: _Ctx) -> Any:
    before = len(ctx.errors)
    fields = msgspec.structs.fields(cls)
    keys = [f.encode_name for f in fields]
    for key in raw:
        if key not in keys:
            hint = _suggest(key, keys) or f"; valid keys here: {', '.join(keys)}"
            ctx.error(path + (key,), f"unknown key{hint}")
    kw: dict[str, Any] = {}
    given: set[str] = set()
    for f in fields:
        if f.encode_name in raw:
            v = _convert(f.type, raw[f.encode_name], path + (f.encode_name,), ctx)
            if v is not _INVALID:
                kw[f.name] = v
                given.add(f.name)
        elif f.required:
            what = "table" if _type_name(f.type) == "a table" else "key"
            ctx.error(path + (f.encode_name,), f"missing required {what}", at=path)
        elif f.default_factory is not msgspec.NODEFAULT:
            kw[f.name] = f.default_factory()
        else:
            kw[f.name] = f.default
    hook = _HOOKS.get(cls)
    if hook is not None:
        hook(_Check(kw, given, path, ctx, raw))
    if len(ctx.errors) > before:
        return _INVALID
    return cls(**kw)


# --------------------------------------------------------------------------- validation


@dataclass
class _Check:
    """What a validation hook sees: converted values (failed ones absent) and helpers."""

    kw: dict[str, Any]
    given: set[str]
    path: tuple
    ctx: _Ctx
    raw: dict

    def key(self, name: str) -> tuple:
        return self.path + ("for" if name == "for_" else name,)

    def error(self, name: str, message: str, at: str | None = None) -> None:
        """Report on key ``name``; ``at`` names another key whose line is more telling."""
        self.ctx.error(self.key(name), message, at=self.key(at) if at else None)

    def at_least(self, name: str, lo: float, strict: bool = False) -> None:
        v = self.kw.get(name)
        if v is None:
            return
        if (v <= lo) if strict else (v < lo):
            bound = f"greater than {lo:g}" if strict else f"at least {lo:g}"
            self.error(name, f"must be {bound}, got {_show(v)}")
        elif isinstance(v, float) and not math.isfinite(v):
            self.error(name, f"must be finite, got {v}")

    def positive(self, *names: str) -> None:
        for n in names:
            self.at_least(n, 0, strict=True)

    def non_negative(self, *names: str) -> None:
        for n in names:
            self.at_least(n, 0)

    def non_empty(self, *names: str) -> None:
        for n in names:
            if self.kw.get(n) == "":
                self.error(n, "must not be empty")

    def required_when(self, name: str, condition: str) -> None:
        if self.kw.get(name, None) != "":
            return
        refs = self.ctx.env_refs.get(self.key(name))
        why = f" (environment variable {refs[0]} is empty)" if refs else ""
        self.error(name, f"required when {condition}{why}")

    def url(self, name: str) -> None:
        v = self.kw.get(name)
        if v:
            problem = url_problem(v, self.ctx.allow_insecure_loopback, secret=is_secret_key(name))
            if problem:
                self.error(name, problem)


_BLOCKED_HOSTS = {"metadata.google.internal", "metadata"}  # "metadata": GCE short name
_BLOCKED_NETS = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]
_BLOCKED_IPS = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("169.254.169.254")}


def _literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        # inet_aton accepts the shorthand forms clients also accept ("2852039166",
        # "0xa9.0xfe.0xa9.0xfe", "169.254.43518"); none of them is a DNS lookup.
        if not re.fullmatch(r"[0-9a-fA-FxX.]+", host) or not re.match(r"[0-9]", host):
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def url_problem(url: str, allow_insecure_loopback: bool, secret: bool = False) -> str | None:
    """Why ``url`` may not be used as a sink/trigger endpoint, or None when it may.

    https is required; http only to a loopback host when ``allow_insecure_loopback``.
    Link-local and cloud-metadata addresses are refused (a classic SSRF target). Only
    literal IPs and well-known names are judged: no DNS lookups happen here.
    """
    shown = "the URL" if secret else f'"{url}"'
    try:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        _ = parts.port
    except ValueError as e:
        return f"{shown} is not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"{shown} must be an https:// URL"
    if not host:
        return f"{shown} has no host"
    if parts.password is not None and not secret:
        return f"{shown} carries credentials; put them in the token/secret key, from ${{ENV}}"
    ip = _literal_ip(host)
    if host in _BLOCKED_HOSTS or (
        ip is not None and (ip in _BLOCKED_IPS or any(ip in n for n in _BLOCKED_NETS))
    ):
        return f"{shown} points at a link-local or cloud metadata address, which is refused"
    if ip is not None and ip.is_unspecified:
        return f"{shown} points at an unspecified address ({ip})"
    if scheme == "http":
        loopback = (
            host == "localhost"
            or host.endswith(".localhost")
            or (ip is not None and ip.is_loopback)
        )
        if not loopback:
            return f"{shown} must use https:// (http:// is allowed only to a loopback host)"
        if not allow_insecure_loopback:
            return (
                f"{shown} uses http://; set delivery.allow_insecure_loopback = true to allow "
                "plain http to a loopback host, or use https://"
            )
    return None


def _check_kafka(c: _Check) -> None:
    kw = c.kw
    for i, server in enumerate(kw.get("bootstrap_servers", ())):
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            c.ctx.error(
                c.key("bootstrap_servers") + (i,),
                f'expected "host:port", got {_show(server)}',
            )
    proto, mech = kw.get("security_protocol"), kw.get("sasl_mechanism")
    if proto is not None and mech is not None:
        if mech and not proto.startswith("SASL_"):
            c.error(
                "sasl_mechanism",
                f'is set to "{mech}" but security_protocol is "{proto}"; use SASL_SSL '
                'or SASL_PLAINTEXT, or set sasl_mechanism = ""',
            )
        if proto.startswith("SASL_"):
            if not mech:
                c.error(
                    "sasl_mechanism",
                    f'required when security_protocol = "{proto}"',
                    at=None if "sasl_mechanism" in c.given else "security_protocol",
                )
            else:
                c.required_when("sasl_plain_username", f'sasl_mechanism = "{mech}"')
                c.required_when("sasl_plain_password", f'sasl_mechanism = "{mech}"')
    c.positive("session_timeout_ms", "heartbeat_interval_ms", "max_poll_records")
    c.positive("poll_timeout_ms", "max_lag_ready", "fetch_max_wait_ms")
    c.non_empty("group_id", "client_id")
    hb, st = kw.get("heartbeat_interval_ms"), kw.get("session_timeout_ms")
    if hb is not None and st is not None and hb > 0 and st > 0 and hb >= st:
        c.error("heartbeat_interval_ms", f"must be below session_timeout_ms ({st}), got {hb}")


def _check_topics(c: _Check) -> None:
    c.non_empty("predictions", "dead_letter")


def _check_fields(c: _Check) -> None:
    c.non_empty("prediction_id", "model", "timestamp", "label_timestamp", "features", "label")


def _check_join(c: _Check) -> None:
    c.positive("ttl_seconds", "max_pending")


def _check_state(c: _Check) -> None:
    c.non_empty("dir")
    c.positive("checkpoint_interval_seconds", "model_partitions", "transaction_timeout_ms")
    rf = c.kw.get("replication_factor")
    if rf is not None and rf != -1 and rf < 1:
        c.error("replication_factor", f"must be -1 (the broker's default) or at least 1, got {rf}")
    cb = c.kw.get("chunk_bytes")
    if cb is not None and not 1024 <= cb <= 8 * 1024 * 1024:
        c.error("chunk_bytes", f"must be between 1024 and 8388608 (the broker's message.max.bytes bounds a record), got {cb}")
    prefix = c.kw.get("topic_prefix")
    if prefix and not re.fullmatch(r"[A-Za-z0-9._-]{1,200}", prefix):
        c.error("topic_prefix", f"must be a Kafka topic name prefix (letters, digits, '.', '_', '-'), got {_show(prefix)}")


def _check_http(c: _Check) -> None:
    c.non_empty("host")
    port = c.kw.get("port")
    if port is not None and not 0 <= port <= 65535:
        c.error("port", f"must be between 0 and 65535, got {port}")
    c.positive("max_body_bytes", "rate_limit_per_minute")
    url = c.kw.get("external_url")
    if url and not url.startswith(("http://", "https://")):
        c.error("external_url", f"must be an http(s) URL such as https://driftline.example, got {url!r}")


def _check_scheduler(c: _Check) -> None:
    c.positive("idle_close_seconds")


def _check_feature(c: _Check) -> None:
    c.non_empty("name")


def _check_rule(c: _Check) -> None:
    kw, given = c.kw, c.given
    c.non_empty("name")
    metric = kw.get("metric")
    if metric is None:
        return
    if metric not in METRIC_SCOPES:
        c.error(
            "metric",
            f"unknown metric {_show(metric)}"
            + (_suggest(metric, METRIC_SCOPES) or f"; known metrics: {', '.join(METRIC_SCOPES)}"),
        )
        return
    want = METRIC_SCOPES[metric]
    if "scope" not in given:
        kw["scope"] = want
    elif kw.get("scope") is not None and kw["scope"] != want:
        kind = {"feature": "a drift test", "group": "a fairness metric"}.get(want, "a model metric")
        c.error("scope", f'must be "{want}" for metric "{metric}" ({kind}), got "{kw["scope"]}"')
    c.at_least("min_samples", 1)
    c.at_least("for_", 1)
    c.non_negative("cooldown_seconds")
    fdr = kw.get("fdr")
    if fdr is not None and not 0 <= fdr < 1:
        c.error("fdr", f"must be in [0, 1) (0 turns it off), got {fdr}")
    actions = kw.get("actions", ())
    if len(set(actions)) != len(actions):
        c.error("actions", "lists an action twice")
    elif "rollback" in actions and "disable" in actions:
        c.error("actions", 'lists both "rollback" and "disable"; a rule changes serving one way: choose one')
    natural = metric_direction(metric)
    if "direction" not in given:
        kw["direction"] = natural or "above"
    elif natural and kw.get("direction") not in (None, natural):
        why = "its thresholds are p-values" if metric in P_VALUE_TESTS else "that is the bad side"
        c.error(
            "direction",
            f'must be "{natural}" for metric "{metric}" ({why}), got "{kw["direction"]}"; '
            "it may be left out",
        )
        return
    if metric in DETECTORS:
        unused = [n for n in ("warn", "alert", "resolve") if n in given]
        for n in unused:
            c.error(n, f'not used: detector rules ("{metric}") fire on a detection')
        return
    warn, alert = kw.get("warn"), kw.get("alert")
    if "warn" not in given and "alert" not in given and not {"warn", "alert"} & set(c.raw):
        c.error("alert", f'rule on "{metric}" needs warn and/or alert thresholds')
        return
    direction = kw.get("direction")
    if direction is None:
        return
    worse = (lambda a, b: a > b) if direction == "above" else (lambda a, b: a < b)
    if warn is not None and alert is not None and worse(warn, alert):
        rel = "above" if direction == "above" else "below"
        c.error(
            "alert",
            f'must be beyond warn in the direction "{direction}": warn {warn:g} is {rel} '
            f"alert {alert:g}",
        )
        return
    first = warn if warn is not None else alert
    if "resolve" not in given:
        if first is not None:
            kw["resolve"] = first
    elif kw.get("resolve") is not None and first is not None and worse(kw["resolve"], first):
        which = "warn" if warn is not None else "alert"
        side = "at or below" if direction == "above" else "at or above"
        c.error(
            "resolve",
            f"must be {side} {which} ({first:g}) for hysteresis, got {kw['resolve']:g}",
        )


def _check_model(c: _Check) -> None:
    kw = c.kw
    c.non_empty("name")
    task = kw.get("task")
    classes = kw.get("classes")
    if task is not None and classes is not None:
        if task == "multiclass" and len(classes) < 2:
            c.error("classes", 'task "multiclass" needs at least two class names')
        elif task == "binary" and len(classes) not in (0, 2):
            c.error("classes", 'task "binary" takes [] (0/1) or exactly two class names')
        elif task == "regression" and classes:
            c.error("classes", 'must be [] for task "regression"')
        if len(set(classes)) != len(classes):
            c.error("classes", "lists a class twice")
    thr = kw.get("decision_threshold")
    if thr is not None and not 0 <= thr <= 1:
        c.error("decision_threshold", f"must be in [0, 1], got {thr}")
    c.at_least("warmup_events", 1)
    c.at_least("n_bins", 2)
    c.positive("pane_seconds")
    c.at_least("window_panes", 1)
    c.non_negative("allowed_lateness_seconds")
    c.at_least("min_group_size", 1)
    sensitive = kw.get("sensitive")
    if sensitive is not None:
        if len(set(sensitive)) != len(sensitive):
            c.error("sensitive", "lists an attribute twice")
        for i, combo in enumerate(kw.get("intersections", ())):
            ipath = c.key("intersections") + (i,)
            if len(combo) < 2 or len(set(combo)) != len(combo):
                c.ctx.error(ipath, "an intersection names two or more distinct attributes")
            for j, attr in enumerate(combo):
                if attr not in sensitive:
                    c.ctx.error(
                        ipath + (j,),
                        f'"{attr}" is not listed in sensitive ({", ".join(sensitive) or "empty"})',
                    )
    _unique(c, "features", "feature")
    _unique(c, "rules", "rule")
    for j, rule in enumerate(kw.get("rules", ())):
        rpath = c.key("rules") + (j,)
        if task == "regression" and rule.metric in CLASSIFICATION_METRICS + FAIRNESS_METRICS:
            c.ctx.error(
                rpath + ("metric",),
                f'"{rule.metric}" needs a classification task, this model is "regression"',
            )
        if task == "regression" and rule.metric in ("ddm", "eddm", "hddm_a", "hddm_w"):
            c.ctx.error(
                rpath + ("metric",),
                f'"{rule.metric}" watches a 0/1 error stream; a regression model\'s errors are '
                "|label - prediction|: use adwin, page_hinkley, kswin or cusum",
            )
        if task in ("binary", "multiclass") and rule.metric in REGRESSION_METRICS:
            c.ctx.error(
                rpath + ("metric",),
                f'"{rule.metric}" needs task "regression", this model is "{task}"',
            )
        if rule.metric in FAIRNESS_METRICS and sensitive is not None and not sensitive:
            c.ctx.error(
                rpath + ("metric",),
                f'fairness metric "{rule.metric}" needs sensitive attributes: set sensitive = [...] on this model',
            )
    _model_extras(c, task)


def _model_extras(c: _Check, task: str | None) -> None:
    """Checks of the multivariate, attributions and slices tables against the model."""
    kw = c.kw
    feats = kw.get("features", ())
    numeric = [f.name for f in feats if f.type == "numeric"]
    mv = kw.get("multivariate")  # on by default; off by itself below two numeric features
    sl = kw.get("slices")
    if sl is not None:
        known = [f.name for f in feats] + list(kw.get("sensitive", ()))
        for j, d in enumerate(sl.dimensions):
            if d not in known:
                c.ctx.error(c.key("slices") + ("dimensions", j),
                            f'"{d}" is not a feature or sensitive attribute of this model'
                            + (_suggest(d, known) or f" (known: {', '.join(known) or 'none'})"))
        if len(set(sl.dimensions)) != len(sl.dimensions):
            c.ctx.error(c.key("slices") + ("dimensions",), "lists a dimension twice")
    for j, rule in enumerate(kw.get("rules", ())):
        rpath = c.key("rules") + (j, "metric")
        m = rule.metric
        if m in MULTIVARIATE_METRICS and (mv is None or not mv.enabled or len(numeric) < 2):
            c.ctx.error(rpath, f'"{m}" needs multivariate.enabled = true and two or more numeric features')
        at = kw.get("attributions")
        if m in ATTRIBUTION_METRICS and (at is None or not at.enabled):
            c.ctx.error(rpath, f'"{m}" needs attributions.enabled = true on this model')
        if m in SUBGROUP_METRICS and (sl is None or not sl.enabled):
            c.ctx.error(rpath, f'"{m}" needs slices.enabled = true on this model')
        sec = kw.get("security")
        if m in SECURITY_METRICS and (sec is None or not sec.enabled):
            c.ctx.error(rpath, f'"{m}" needs security.enabled = true on this model')
        # (estimates on a regression model already get "needs a classification task")
        wrong_task = (m in SUBGROUP_METRICS and task not in (None, "binary")
                      and not (m == "subgroup_error_gap" and task == "multiclass")) or \
                     (m in ESTIMATED_METRICS[1:] and task == "multiclass")
        if wrong_task:
            c.ctx.error(rpath, f'"{m}" needs task "binary", this model is "{task}"')
    sec = kw.get("security")
    pane = kw.get("pane_seconds")
    if sec is not None and sec.enabled and pane is not None and pane > 0 and not _whole(sec.slot_seconds / pane):
        c.ctx.error(c.key("security") + ("slot_seconds",),
                    f"must be a whole multiple of pane_seconds ({_show(pane)}), got {_show(sec.slot_seconds)}: "
                    "a pane must fall in one slot of the traffic baseline")
    k = getattr(mv, "n_components", None)
    if mv is not None and mv.enabled and len(numeric) >= 2 and k is not None and k >= 1 and k >= len(numeric):
        c.ctx.error(c.key("multivariate") + ("n_components",),
                    f"{_show(k)} components of {len(numeric)} numeric features reconstruct every event "
                    f"exactly: nothing is left to measure; give fewer than the numeric features "
                    f"({len(numeric) - 1} at most) or a share of variance below 1")


def _check_multivariate(c: _Check) -> None:
    v = c.kw.get("n_components")
    if v is not None and not (0 < v < 1 or (v >= 1 and float(v).is_integer())):
        c.error("n_components", f"must be a share of variance in (0, 1) or a whole number of components >= 1, got {_show(v)}")


def _check_attributions(c: _Check) -> None:
    c.at_least("k", 1)


def _check_slices(c: _Check) -> None:
    c.at_least("max_cells", 1)
    c.at_least("min_size", 1)
    c.at_least("top", 1)
    v = c.kw.get("fdr")
    if v is not None and not 0 < v < 1:
        c.error("fdr", f"must be in (0, 1), got {_show(v)}")


def _whole(ratio: float) -> bool:
    """A ratio of two durations that is a whole number (up to float rounding: 3600 / 0.1)."""
    return math.isfinite(ratio) and abs(ratio - round(ratio)) <= 1e-9 * max(1.0, abs(ratio))


def _check_security(c: _Check) -> None:
    kw = c.kw
    v = kw.get("resolution")
    if v is not None and not v > 0:
        c.error("resolution", f"must be > 0 (a fraction of each feature's reference std), got {_show(v)}")
    c.non_negative("projections")
    w = kw.get("width")
    if w is not None and (w < 2 or w & (w - 1)):
        c.error("width", f"must be a power of two >= 2, got {_show(w)}")
    d = kw.get("depth")
    if d is not None and not 1 <= d <= 16:
        c.error("depth", f"must be in [1, 16], got {_show(d)}")
    c.positive("period_seconds")
    c.positive("slot_seconds")
    c.positive("half_life_periods")
    c.non_negative("min_periods")
    p, s = kw.get("period_seconds"), kw.get("slot_seconds")
    if p is not None and s is not None and p > 0 and s > 0 and (not _whole(p / s) or s > p):
        c.error("period_seconds", f"must be a whole multiple of slot_seconds ({_show(s)}), got {_show(p)}")
    t = kw.get("tolerance")
    if t is not None and not t >= 1:
        c.error("tolerance", f"must be >= 1 (a ratio of traffic to its baseline), got {_show(t)}")


def _unique(c: _Check, name: str, what: str) -> None:
    # Checked on the raw tables, so a duplicate is reported even when an entry is invalid.
    items = c.raw.get(name)
    if not isinstance(items, list):
        return
    seen: dict[str, int] = {}
    for j, item in enumerate(items):
        item_name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(item_name, str):
            continue
        if item_name in seen:
            first = c.ctx.lines.line(c.key(name) + (seen[item_name], "name"))
            c.ctx.error(
                c.key(name) + (j, "name"),
                f'duplicate {what} name "{item_name}" (first defined at line {first})',
            )
        else:
            seen[item_name] = j


def _check_delivery(c: _Check) -> None:
    c.positive("timeout_seconds", "backoff_initial_seconds", "poll_interval_seconds")
    c.non_negative("max_attempts")
    lo, hi = c.kw.get("backoff_initial_seconds"), c.kw.get("backoff_max_seconds")
    if lo is not None and hi is not None and hi < lo:
        c.error(
            "backoff_max_seconds", f"must be at least backoff_initial_seconds ({lo:g}), got {hi:g}"
        )


def _check_alerting(c: _Check) -> None:
    c.positive("repeat_interval_seconds")


def _check_slack(c: _Check) -> None:
    if c.kw.get("enabled"):
        c.required_when("webhook_url", "sinks.slack.enabled = true")
    c.url("webhook_url")
    dash = c.kw.get("dashboard_url")
    if dash and urllib.parse.urlsplit(dash).scheme not in ("http", "https"):
        c.error("dashboard_url", f"must be an http(s) URL, got {_show(dash)}")
    c.positive("max_per_second")


def _check_webhook(c: _Check) -> None:
    if c.kw.get("enabled"):
        c.required_when("url", "sinks.webhook.enabled = true")
        c.required_when("secret", "sinks.webhook.enabled = true")
    c.url("url")
    for name in ("secret", "previous_secret"):
        v = c.kw.get(name)
        if v and not _valid_whsec(v):
            c.error(name, 'must be a Standard Webhooks key: "whsec_" followed by base64 of at least 24 bytes')


def _valid_whsec(v: str) -> bool:
    import base64
    import binascii

    body = v.removeprefix("whsec_")
    try:
        # the Standard Webhooks spec asks for 24 to 64 random bytes; the sink refuses fewer
        return len(base64.b64decode(body, validate=True)) >= 24
    except (binascii.Error, ValueError):
        return False


def _check_alertmanager(c: _Check) -> None:
    if c.kw.get("enabled"):
        c.required_when("url", "sinks.alertmanager.enabled = true")
    c.url("url")
    c.positive("resend_interval_seconds")


_KIND_KEYS = {
    "airflow": {"dag_id"},
    "argo": {"workflow_template", "namespace"},
    "kubeflow": {"pipeline_id", "pipeline_version_id", "experiment_id"},
    "github": {"repository", "event_type"},
    "http": {"method", "headers"},
}
_KIND_REQUIRED = {
    "airflow": ("dag_id",),
    "argo": ("workflow_template", "namespace"),
    "kubeflow": ("pipeline_id",),
    "github": ("repository", "event_type"),
    "http": (),
}


def _check_target(c: _Check) -> None:
    kind = c.kw.get("kind")
    if kind is None:
        return
    defaults = TriggerTargetConfig()
    for k, names in _KIND_KEYS.items():
        if k == kind:
            continue
        for n in sorted(names & c.given):
            if c.kw[n] != getattr(defaults, n):
                now = f'kind is "{kind}"' if kind else 'kind is "", no target'
                c.error(n, f'is used only with kind = "{k}" ({now})')
    if not kind:
        for n in ("url", "token"):
            if n in c.given and c.raw.get(n):
                c.error(
                    n,
                    "is set but kind is empty; set kind (airflow | argo | kubeflow | github | http)",
                )
        return
    c.required_when("url", f'triggers.target.kind = "{kind}"')
    for n in _KIND_REQUIRED[kind]:
        c.required_when(n, f'triggers.target.kind = "{kind}"')
    repo = c.kw.get("repository")
    if kind == "github" and repo and not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        c.error("repository", f'expected "owner/name", got {_show(repo)}')
    c.url("url")


_SERVING_KIND_KEYS = {
    "http": {"method", "body"},
    "kserve": {"service_account_dir"},
    "mlflow": set(),
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _template_problem(text: str) -> str | None:
    for m in _PLACEHOLDER.finditer(text):
        if m.group(1) not in SERVING_PLACEHOLDERS:
            return (f"unknown placeholder {{{m.group(1)}}}" + _suggest(m.group(1), SERVING_PLACEHOLDERS)
                    + f"; known: {', '.join('{' + p + '}' for p in SERVING_PLACEHOLDERS)}")
    return None


def _check_serving_target(c: _Check) -> None:
    kind = c.kw.get("kind")
    if kind is None:
        return
    defaults = ServingTargetConfig()
    for k, names in _SERVING_KIND_KEYS.items():
        for n in sorted((names - _SERVING_KIND_KEYS.get(kind, set())) & c.given):
            if c.kw[n] != getattr(defaults, n):
                c.error(n, f'is used only with kind = "{k}" (kind is "{kind}")')
    if not kind:
        for n in ("url", "token"):
            if n in c.given and c.raw.get(n):
                c.error(n, "is set but kind is empty; set kind (http | kserve | mlflow)")
        return
    if kind == "kserve":
        # In a pod: the API server and the service account's token and CA, as client-go does.
        if "url" not in c.given:
            c.kw["url"] = KUBERNETES_URL
        if "service_account_dir" not in c.given and "token" not in c.given:
            c.kw["service_account_dir"] = SERVICE_ACCOUNT_DIR
    c.required_when("url", f'serving.target.kind = "{kind}"')
    url = c.kw.get("url")
    if kind == "http" and url:
        problem = _template_problem(url)
        if problem:
            c.error("url", problem)
            return
        # judge the URL with its placeholders filled by a neutral value
        c.kw["url"], checked = _PLACEHOLDER.sub("x", url), url
        c.url("url")
        c.kw["url"] = checked
    else:
        c.url("url")
    body = c.kw.get("body")
    if body:
        try:
            doc = json.loads(body)
        except ValueError as e:
            c.error("body", f"must be a JSON document (a template whose strings may hold placeholders): {e}")
            return
        if not isinstance(doc, dict):
            c.error("body", "must be a JSON object")
            return
        problem = _template_problem(body)
        if problem:
            c.error("body", problem)


def _check_serving(c: _Check) -> None:
    c.non_negative("cooldown_seconds")


def _check_serving_rules(c: _Check) -> None:
    """Rules with a serving action need a target and, per target, the model's coordinates."""
    serving = c.kw.get("serving")
    if serving is None:
        return
    kind = serving.target.kind
    for i, m in enumerate(c.kw.get("models") or ()):
        for j, rule in enumerate(m.rules):
            action = next((a for a in rule.actions if a in ("rollback", "disable")), None)
            if action is None:
                continue
            at = ("models", i, "rules", j, "actions")
            if not kind:
                c.ctx.error(at, f'action "{action}" needs a serving control endpoint: set [serving.target] '
                                "kind (http | kserve | mlflow)")
            elif kind == "mlflow" and action == "rollback" and not m.serving.rollback_version:
                c.ctx.error(at, f'action "rollback" with serving.target.kind = "mlflow" needs '
                                f"models.serving.rollback_version on model \"{m.name}\" (the version "
                                f"alias \"{m.serving.alias}\" goes back to)")


def _check_model_serving(c: _Check) -> None:
    c.non_empty("namespace", "alias")
    v = c.kw.get("rollback_version")
    if v and not v.isdigit():
        c.error("rollback_version", f"must be an MLflow model version number such as \"3\", got {_show(v)}")


def _check_triggers(c: _Check) -> None:
    c.non_negative("cooldown_seconds", "min_new_labels")


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _check_audit(c: _Check) -> None:
    c.non_empty("path")
    topic = c.kw.get("topic")
    if topic and (not _TOPIC_NAME.fullmatch(topic) or topic in (".", "..")):
        c.error(
            "topic",
            f"{_show(topic)} is not a Kafka topic name (1-249 of the characters a-z A-Z 0-9 . _ -)",
        )
    c.positive("partitions", "read_timeout_seconds")
    c.non_negative("payload_retention_days")
    rf = c.kw.get("replication_factor")
    if rf is not None and rf != -1 and rf < 1:
        c.error(
            "replication_factor",
            f"must be -1 (the broker's default.replication.factor) or at least 1, got {rf}",
        )


def _check_reports(c: _Check) -> None:
    c.non_empty("dir")
    c.positive("sample_size", "retention_days")


def _check_cards(c: _Check) -> None:
    c.non_empty("dir")
    c.positive("interval_hours")


def _check_config(c: _Check) -> None:
    models = c.kw.get("models")
    if models is not None and not models:
        c.ctx.error(("models",), "at least one [[models]] table is required")
    _unique(c, "models", "model")
    sinks, topics = c.kw.get("sinks"), c.kw.get("topics")
    if sinks is not None and topics is not None and sinks.kafka.enabled and not topics.alerts:
        c.ctx.error(("topics", "alerts"), "must not be empty while sinks.kafka.enabled = true")
    state = c.kw.get("state")
    if state is not None and state.backend == "kafka" and models:
        # a warm-up reference is built from the first events one process sees: replicas would
        # build different bin edges, and panes with different edges do not add up
        missing = [m.name for m in models if not m.reference]
        if missing:
            c.ctx.error(("state", "backend"), '"kafka" needs a reference file for every model '
                        f"(models without `reference`: {', '.join(missing)}); build one with "
                        "`driftline reference build`")
    _check_serving_rules(c)
    audit = c.kw.get("audit")
    if audit is not None and audit.payload_retention_days > 0 and (audit.topic or (state and state.backend == "kafka")):
        # a Kafka topic cannot be rewritten: its payloads live as long as the topic
        c.ctx.error(("audit", "payload_retention_days"), "needs the file audit log: the audit trail is on a Kafka "
                    "topic here (audit.topic, or state.backend = \"kafka\"), whose records cannot be redacted")


_HOOKS: dict[type, Callable[[_Check], None]] = {
    KafkaConfig: _check_kafka,
    TopicsConfig: _check_topics,
    FieldsConfig: _check_fields,
    JoinConfig: _check_join,
    StateConfig: _check_state,
    HttpConfig: _check_http,
    SchedulerConfig: _check_scheduler,
    FeatureConfig: _check_feature,
    RuleConfig: _check_rule,
    ModelConfig: _check_model,
    MultivariateConfig: _check_multivariate,
    AttributionsConfig: _check_attributions,
    SlicesConfig: _check_slices,
    SecurityConfig: _check_security,
    AlertingConfig: _check_alerting,
    DeliveryConfig: _check_delivery,
    SlackSinkConfig: _check_slack,
    WebhookSinkConfig: _check_webhook,
    AlertmanagerSinkConfig: _check_alertmanager,
    TriggerTargetConfig: _check_target,
    TriggersConfig: _check_triggers,
    ServingTargetConfig: _check_serving_target,
    ServingConfig: _check_serving,
    ModelServingConfig: _check_model_serving,
    AuditConfig: _check_audit,
    ReportsConfig: _check_reports,
    CardsConfig: _check_cards,
    Config: _check_config,
}

# --------------------------------------------------------------------------- public API


def internal_topic_prefix(config: Config) -> str:
    """The prefix of the internal topics of ``state.backend = "kafka"``."""
    return config.state.topic_prefix or config.kafka.group_id


def audit_topic(config: Config) -> str:
    """The Kafka topic of the audit trail, "" for the file: ``audit.topic``, else with
    ``state.backend = "kafka"`` ``<prefix>-audit`` (a pod's file would not survive it)."""
    if config.audit.topic:
        return config.audit.topic
    return f"{internal_topic_prefix(config)}-audit" if config.state.backend == "kafka" else ""



def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` listing every problem."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file: {e.strerror or e}", path=name) from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"the config file is not UTF-8 ({e.reason})", path=name) from e
    return load_config_text(text, path=name, env=os.environ if env is None else env)


def load_config_text(
    text: str, path: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate TOML text; ``path`` only names the source in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise ConfigError(
            f"invalid TOML: {msg}", line=int(m.group(1)) if m else None, path=path
        ) from None
    ctx = _Ctx(path, _LineMap(text), os.environ if env is None else env)
    delivery = data.get("delivery")
    ctx.allow_insecure_loopback = (
        isinstance(delivery, dict) and delivery.get("allow_insecure_loopback") is True
    )
    cfg = _build(Config, data, (), ctx)
    if ctx.errors:
        raise ConfigError.combine(ctx.errors)
    assert isinstance(cfg, Config)
    return cfg


def _masked(key: str, value: Any, mask: bool) -> Any:
    if mask and isinstance(value, str) and value and is_secret_key(key):
        return "***"
    return value


def _to_data(obj: Any, mask: bool, drop_secrets: bool = False) -> Any:
    if isinstance(obj, msgspec.Struct):
        out = {}
        for f in msgspec.structs.fields(obj):
            if drop_secrets and is_secret_key(f.encode_name):
                continue
            out[f.encode_name] = _masked(
                f.encode_name, _to_data(getattr(obj, f.name), mask, drop_secrets), mask
            )
        return out
    if isinstance(obj, dict):
        return {
            k: _masked(k, _to_data(v, mask, drop_secrets), mask)
            for k, v in obj.items()
            if not (drop_secrets and is_secret_key(k))
        }
    if isinstance(obj, tuple | list):
        return [_to_data(v, mask, drop_secrets) for v in obj]
    return obj


def mask_secrets(config: Config) -> dict:
    """The resolved config as plain data (TOML key names), non-empty secrets as ``"***"``."""
    return _to_data(config, mask=True)


def config_hash(config: Config) -> str:
    """sha256 of the canonical resolved config without its secrets (for the audit log)."""
    canon = json.dumps(
        _to_data(config, mask=False, drop_secrets=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items())
        return "{" + inner + "}" if inner else "{}"
    raise TypeError(f"cannot render {v!r} as TOML")


def _render_table(obj: msgspec.Struct, data: dict, name: str, out: list[str], aot: bool) -> None:
    start = len(out)
    if name:
        out.append("")
        out.append(f"[[{name}]]" if aot else f"[{name}]")
    subs: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(obj):
        value, d = getattr(obj, f.name), data[f.encode_name]
        is_aot = isinstance(value, tuple) and value and isinstance(value[0], msgspec.Struct)
        if isinstance(value, msgspec.Struct) or is_aot:
            subs.append((f.encode_name, value, d))
        elif d is None:
            out.append(f"# {_toml_key(f.encode_name)}: not set")
        else:
            out.append(f"{_toml_key(f.encode_name)} = {_toml_value(d)}")
    if name and not aot and len(out) == start + 2 and subs:
        del out[start:]  # a table holding only sub-tables needs no header of its own
    for key, value, d in subs:
        full = f"{name}.{key}" if name else key
        if isinstance(value, msgspec.Struct):
            _render_table(value, d, full, out, aot=False)
        else:
            for item, item_d in zip(value, d, strict=True):
                _render_table(item, item_d, full, out, aot=True)


def render_resolved(config: Config, fmt: Literal["toml", "json"] = "toml") -> str:
    """The resolved config as TOML (loadable again) or JSON text, secrets as ``"***"``."""
    data = mask_secrets(config)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    out: list[str] = []
    _render_table(config, data, "", out, aot=False)
    return "\n".join(out).lstrip("\n") + "\n"
