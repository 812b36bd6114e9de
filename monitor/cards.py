"""Model cards from evidence: ``driftline card MODEL`` and the daemon's periodic ``[cards]`` job.

A card follows the sections of Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019),
in their order: model details, intended use, factors, metrics, evaluation data, training
data, quantitative analyses, ethical considerations, caveats and recommendations; then the
monitoring record (alerts and human decisions). The numbers are not written by a person:

* metrics, per-group fairness with intervals and drift history come from the evaluation
  records of the period (the ``evaluations`` table of the state database, or the JSON Lines
  of ``driftline replay``), selected by ``window_end`` in ``[since, until)``;
* alerts with their transitions, acknowledgements, silences, overrides, retrain and serving
  requests with who decided and when come from the audit trail, selected as ``driftline
  audit export`` selects them (the entry's time in ``[since, until)``);
* the reference (version, sha256, rows) from the model's reference profile;
* static fields (owners, intended use, caveats...) from a user TOML file.

A card is written as ``<name>.json`` (the machine copy) and ``<name>.md`` (rendered from
it). Both carry ``card_version`` (this schema), the model, period, ``generated_at``, the
reference and the sha256 of the canonical JSON (:func:`monitor.audit.canonical` of the card
without its ``sha256`` key); a ``card.written`` audit entry records that hash and the paths.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import re
import sys
import time
import tomllib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from monitor.audit import canonical, export, parse_time
from monitor.errors import ConfigError

__all__ = [
    "CARD_KIND",
    "CARD_VERSION",
    "STATIC_FIELDS",
    "SECTIONS",
    "load_static",
    "read_evaluations",
    "read_evaluations_topic",
    "build_card",
    "card_hash",
    "render_markdown",
    "write_card",
    "list_cards",
    "card_file",
    "write_due_cards",
    "main",
]

log = logging.getLogger("driftline.cards")

CARD_KIND = "driftline.model_card"
CARD_VERSION = 1

#: Static fields of a card: key -> (type, required). ``str`` fields are prose; ``list``
#: fields are lists of strings (one bullet each).
STATIC_FIELDS: dict[str, tuple[type, bool]] = {
    "owners": (list, True),
    "description": (str, False),
    "model_version": (str, False),
    "license": (str, False),
    "intended_use": (str, True),
    "intended_users": (list, False),
    "out_of_scope": (list, False),
    "factors": (list, False),
    "training_data": (str, False),
    "evaluation_data": (str, False),
    "ethical_considerations": (list, False),
    "caveats": (list, False),
}

#: Markdown sections in Mitchell et al.'s order, then the monitoring record.
SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
    "Monitoring record",
)

#: Drift statistics besides the per-feature two-sample tests (whose names come from
#: detectors.registry): their warn/alert windows are drift history too.
_OTHER_DRIFT = frozenset({"score_psi", "reconstruction_error", "reconstruction_error_change", "attribution_shift"})
#: Per-group rates evaluated beside the between-group fairness metrics (scope ``attr=group``).
_GROUP_RATES = ("selection_rate", "tpr", "fpr")
_QUALITY = frozenset({"missing_rate", "unseen_rate"})
_BREACH = ("warn", "alert")
_CARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.(json|md)$")


# --------------------------------------------------------------------------- static fields


def _check_fields(table: Any, where: tuple, lines: Any, path: str) -> list[ConfigError]:
    """Unknown keys and wrong types of one table (required keys are checked on the merged
    view: they may come from ``[card]`` or the model's table)."""
    from monitor.config import _fmt_key  # the config's own key spelling in messages

    errors: list[ConfigError] = []

    def err(key: tuple, message: str) -> None:
        errors.append(ConfigError(message, key=_fmt_key(key), line=lines.line(key), path=path))

    if not isinstance(table, dict):
        err(where, "must be a table")
        return errors
    for key, value in table.items():
        spec = STATIC_FIELDS.get(key)
        if spec is None:
            err(where + (key,), f"unknown key; known: {', '.join(sorted(STATIC_FIELDS))}")
            continue
        kind = spec[0]
        if kind is str and (not isinstance(value, str) or not value.strip()):
            err(where + (key,), f"must be a non-empty string, got {value!r}")
        elif kind is list and (not isinstance(value, list) or not value
                               or not all(isinstance(v, str) and v.strip() for v in value)):
            err(where + (key,), f"must be a non-empty list of non-empty strings, got {value!r}")
    return errors


def load_static(path: str | Path, model: str | None = None) -> dict[str, Any]:
    """The static fields for ``model`` from a TOML file: ``[card]`` for every model, and
    ``[models.<name>]`` tables whose keys override it for one model. Raises ConfigError
    naming the file, line and key of every problem."""
    from monitor.config import _LineMap  # tomllib gives no positions; the config's scanner does

    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the card's static file: {exc.strerror or exc}", path=name) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"invalid TOML: {msg}", line=int(m.group(1)) if m else None, path=name) from None
    lines = _LineMap(text)
    errors: list[ConfigError] = []
    for key in data:
        if key not in ("card", "models"):
            errors.append(ConfigError("unknown table; known: card, models", key=key, line=lines.line((key,)),
                                      path=name))
    per_model = data.get("models", {})
    if not isinstance(per_model, dict):
        errors.append(ConfigError("must be a table of [models.<name>] tables", key="models",
                                  line=lines.line(("models",)), path=name))
        per_model = {}
    for m, table in per_model.items():
        errors += _check_fields(table, ("models", m), lines, name)
    base = data.get("card")
    if base is None:
        errors.append(ConfigError("a [card] table is required", path=name))
        base = {}
    else:
        errors += _check_fields(base, ("card",), lines, name)
    if errors:
        raise ConfigError.combine(errors)
    merged = {**base, **(per_model.get(model, {}) if model is not None else {})}
    missing = [k for k, (_, req) in STATIC_FIELDS.items() if req and k not in merged]
    if missing:
        where = f"[card] (or [models.{model}])" if model else "[card]"
        raise ConfigError(f"{where}: {', '.join(missing)} required", key="card", line=lines.line(("card",)),
                          path=name)
    return merged


# --------------------------------------------------------------------------- evidence


def read_evaluations(source: Any, model: str, since: float, until: float) -> list[dict]:
    """The model's evaluation records with ``window_end`` in ``[since, until)``, ordered by
    (window_end, metric, scope). ``source``: a :class:`~monitor.state.StateStore`, a state
    directory, or a ``driftline replay`` output file (JSON Lines; alert lines are skipped)."""
    if isinstance(source, str | Path) and Path(source).is_file():
        out = []
        with open(source, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{source}:{n}: not a JSON line: {exc}") from None
                if (rec.get("type") == "evaluation" and rec.get("model") == model
                        and since <= rec["window_end"] < until):
                    out.append(rec)
        return sorted(out, key=lambda r: (r["window_end"], r["metric"], r["scope"]))
    from monitor.state import StateStore

    store = source if isinstance(source, StateStore) else StateStore(source)
    conn = store.read()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='evaluations'").fetchone() is None:
        return []  # a daemon that never checkpointed an evaluation
    rows = conn.execute(
        "SELECT record FROM evaluations WHERE model=? AND window_end >= ? AND window_end < ? "
        "ORDER BY window_end, metric, scope", (model, since, until)).fetchall()
    return [json.loads(r[0]) for r in rows]


def read_evaluations_topic(consumer_settings: Mapping[str, Any], topic: str, model: str, since: float,
                           until: float, *, read_timeout_seconds: float = 30.0) -> list[dict]:
    """The model's evaluation records in ``[since, until)`` from the ``<prefix>-evaluations``
    topic of ``state.backend = "kafka"``, ordered as :func:`read_evaluations` orders them.

    Only committed records count (``read_committed``): a checkpoint transaction that was
    aborted or fenced never judged anything. The model's partition is the one stage 2 writes
    it to (:func:`monitor.changelog.model_partition` over the topic's partition count); the
    first record of a (window_end, metric, scope) wins, as the state database keeps it.
    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from monitor.changelog import model_partition
    from monitor.errors import StateError

    settings = dict(consumer_settings)
    settings.update(isolation_level="read_committed", group_id=None, enable_auto_commit=False)
    consumer = KafkaConsumer(**settings)
    key = model.encode("utf-8")
    kept: dict[tuple, dict] = {}
    try:
        # a topic created a moment ago may not be in every broker's metadata yet
        grace = time.monotonic() + min(read_timeout_seconds, 5.0)
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < grace:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise StateError(f"evaluations topic {topic!r} does not exist or is not visible to this principal "
                             f"(Describe and Read on it are needed)")
        tp = TopicPartition(topic, model_partition(model, len(parts)))
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + read_timeout_seconds
        while consumer.position(tp) < end:
            batch = consumer.poll(timeout_ms=500)
            for rec in batch.get(tp, []):
                if rec.offset >= end or rec.key != key:
                    continue  # newer than the end taken at the start, or another model here
                try:
                    value = json.loads(rec.value)
                except ValueError as exc:
                    raise StateError(f"{topic}[{tp.partition}]@{rec.offset}: not an evaluation record: {exc}") from None
                # stage 2 writes a window's evaluations as one array; a single record is read too
                for r in value if isinstance(value, list) else [value]:
                    if since <= r["window_end"] < until:
                        kept.setdefault((r["window_end"], r["metric"], r["scope"]), r)
            if batch:
                deadline = time.monotonic() + read_timeout_seconds
            elif time.monotonic() > deadline:
                raise StateError(f"evaluations topic {topic!r}: reading partition {tp.partition} stalled for "
                                 f"{read_timeout_seconds:g} s at offset {consumer.position(tp)} of {end}")
    finally:
        consumer.close()
    return [kept[k] for k in sorted(kept)]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _summary(recs: list[dict]) -> dict:
    """One series (metric, scope) over the period: the latest window with its interval,
    and min / max / mean of the windows' values (windows without a value left out)."""
    latest = recs[-1]  # recs are in window_end order
    values = [r["value"] for r in recs if _finite(r.get("value"))]
    return {
        "metric": latest["metric"],
        "scope": latest["scope"],
        "latest": {k: latest.get(k) for k in ("value", "ci_low", "ci_high", "n", "status", "window_start",
                                               "window_end", "p_value", "threshold")},
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "mean": math.fsum(values) / len(values) if values else None,
        "windows": len(recs),
        "windows_with_value": len(values),
        "windows_warn": sum(1 for r in recs if r.get("status") == "warn"),
        "windows_alert": sum(1 for r in recs if r.get("status") == "alert"),
    }


def _series(records: Iterable[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        out[(r["metric"], r["scope"])].append(r)
    for recs in out.values():
        recs.sort(key=lambda r: r["window_end"])
    return dict(sorted(out.items()))


def _drift_tests() -> frozenset[str]:
    from detectors.registry import TESTS

    return frozenset(TESTS) | _OTHER_DRIFT


def _quantitative(records: list[dict]) -> dict:
    """Evaluation records -> metrics, fairness, drift and data-quality sections."""
    from monitor.policy import FAIRNESS_METRICS

    drift_names = _drift_tests()
    metrics, drift, quality = [], [], []
    fairness: dict[str, dict] = {}
    history = []
    for (metric, scope), recs in _series(records).items():
        s = _summary(recs)
        if metric in FAIRNESS_METRICS:
            fairness.setdefault(scope, {"attribute": scope, "metrics": [], "groups": []})["metrics"].append(s)
        elif metric in _GROUP_RATES and "=" in scope:
            attr, _, group = scope.partition("=")
            s["group"] = group
            fairness.setdefault(attr, {"attribute": attr, "metrics": [], "groups": []})["groups"].append(s)
        elif metric in drift_names:
            drift.append(s)
            history += [{k: r.get(k) for k in ("window_start", "window_end", "metric", "scope", "value", "p_value",
                                                 "threshold", "status", "n")}
                        for r in recs if r.get("status") in _BREACH]
        elif metric in _QUALITY:
            quality.append(s)
        else:
            metrics.append(s)
    history.sort(key=lambda h: (h["window_end"], h["scope"], h["metric"]))
    by_feature: dict[str, dict] = {}
    for h in history:
        f = by_feature.setdefault(h["scope"], {"feature": h["scope"], "windows_warn": 0, "windows_alert": 0,
                                               "first": h["window_end"], "last": h["window_end"]})
        f["windows_" + h["status"]] += 1
        f["last"] = h["window_end"]
    windows = sorted({r["window_end"] for r in records})
    return {
        "windows": len(windows),
        "first_window_end": windows[0] if windows else None,
        "last_window_end": windows[-1] if windows else None,
        "metrics": metrics,
        "fairness": [fairness[a] for a in sorted(fairness)],
        "drift": {"tests": drift, "history": history, "by_feature": [by_feature[f] for f in sorted(by_feature)]},
        "data_quality": quality,
    }


def _oversight(entries: list[dict]) -> dict:
    """Audit entries of the period -> alerts (transitions, acknowledgements, silences),
    model-wide silences, overrides and gated requests with who decided and when."""
    alerts: dict[str, dict] = {}
    silences, overrides, cards = [], [], []
    requests: dict[str, dict] = {}
    for e in entries:
        kind, data, who, when = e["kind"], e.get("data") or {}, e.get("actor"), e["time"]
        if kind == "alert.transition":
            ev = data.get("event") or {}
            a = alerts.setdefault(data["alert_id"], {
                "id": data["alert_id"], "rule": ev.get("rule"), "metric": ev.get("metric"), "scope": ev.get("scope"),
                "severity": ev.get("severity"), "transitions": [], "acknowledgements": [], "silences": []})
            a["transitions"].append({"time": when, "state": ev.get("state"), "level": ev.get("level"),
                                     "seq": ev.get("seq"), "value": ev.get("value"), "threshold": ev.get("threshold"),
                                     "window_start": ev.get("window_start"), "window_end": ev.get("window_end")})
        elif kind == "alert.acknowledged":
            a = alerts.setdefault(data["alert_id"], _bare_alert(data["alert_id"]))
            a["acknowledgements"].append({"by": who, "time": when, "reason": data.get("reason", "")})
        elif kind == "alert.silenced":
            s = {"by": who, "time": when, "until": data.get("until"), "reason": data.get("reason"),
                 "rule": data.get("rule"), "silence_id": data.get("silence_id")}
            if data.get("alert_id"):
                alerts.setdefault(data["alert_id"], _bare_alert(data["alert_id"]))["silences"].append(s)
            else:
                silences.append(s)
        elif kind == "model.override":
            overrides.append({"by": who, "time": when, "active": data.get("active"), "why": data.get("why"),
                              "until": data.get("until")})
        elif kind.startswith(("retrain.", "trigger.", "serving.")) and data.get("request_id"):
            r = requests.setdefault(data["request_id"], {
                "id": data["request_id"], "kind": "retrain" if not kind.startswith("serving.") else data.get("action"),
                "reason": data.get("reason"), "events": []})
            if r["kind"] is None and data.get("action"):
                r["kind"] = data["action"]
            r["events"].append({"event": kind.split(".", 1)[1], "by": who, "time": when,
                                "reason": data.get("reason") if who else None})
            if kind.endswith((".created", ".proposed")):
                r["reason"] = data.get("reason")
        elif kind in ("retrain.suppressed", "serving.suppressed"):
            requests.setdefault(f"suppressed:{e['seq']}:{e.get('chain', '')}", {
                "id": None, "kind": "retrain" if kind.startswith("retrain") else data.get("action"),
                "reason": data.get("reason"),
                "events": [{"event": "suppressed", "by": None, "time": when, "reason": data.get("cause")}]})
        elif kind == "card.written":
            cards.append({"time": when, "sha256": data.get("sha256"), "json": data.get("json")})
    return {
        "alerts": sorted(alerts.values(), key=lambda a: (a["transitions"][0]["time"] if a["transitions"] else "", a["id"])),
        "silences": silences,
        "overrides": overrides,
        "requests": list(requests.values()),
        "cards": cards,
    }


def _bare_alert(aid: str) -> dict:
    """An alert whose transitions fell before the period (only decisions in it)."""
    return {"id": aid, "rule": None, "metric": None, "scope": None, "severity": None, "transitions": [],
            "acknowledgements": [], "silences": []}


def _reference(profile: Any, source: str | None, entries: list[dict]) -> dict | None:
    """The reference compared against: from the profile (hashed as the daemon hashes it for
    its ``reference.version`` entry), else the newest such entry of the period."""
    if profile is not None:
        raw = json.dumps(profile.to_dict(), sort_keys=True).encode()
        return {"version": f"v{profile.version}", "source": source, "sha256": hashlib.sha256(raw).hexdigest(),
                "rows": profile.n_rows, "task": profile.task,
                "numeric_features": sorted(profile.numeric), "categorical_features": sorted(profile.categorical),
                "sensitive": {a: list(p.groups.categories) for a, p in sorted(profile.sensitive.items())}}
    refs = [e for e in entries if e["kind"] == "reference.version"]
    if refs:
        d = refs[-1]["data"]
        return {"version": d.get("version"), "source": d.get("source"), "sha256": d.get("sha256")}
    return None


# --------------------------------------------------------------------------- the card


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None (canonical JSON refuses NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def card_hash(card: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``card`` without its ``sha256`` key."""
    return hashlib.sha256(canonical({k: v for k, v in card.items() if k != "sha256"})).hexdigest()


def build_card(model_cfg: Any, since: float, until: float, *, evaluations: list[dict], audit: Mapping[str, Any],
               static: Mapping[str, Any] | None = None, profile: Any = None, static_source: str | None = None,
               generated_at: float | None = None) -> dict:
    """The card of ``model_cfg`` (a ``[[models]]`` entry) for ``[since, until)``.

    ``evaluations``: the period's records (:func:`read_evaluations`); ``audit``: an audit
    export document (:func:`monitor.audit.export` or ``export_topic``) of the same period.
    """
    if not until > since:
        raise ValueError(f"the period is empty: since {_iso(since)} is not before until {_iso(until)}")
    static = dict(static or {})
    entries = list(audit.get("entries", []))
    model_entries = [e for e in entries if e.get("model") == model_cfg.name]
    configs = [e for e in entries if e["kind"] == "config.loaded"]
    quant = _quantitative(evaluations)
    n_pred = [r for r in evaluations if r["metric"] == "label_coverage" and r["scope"] == "model"]
    card = {
        "kind": CARD_KIND,
        "card_version": CARD_VERSION,
        "model": model_cfg.name,
        "period": {"since": _iso(since), "until": _iso(until), "since_unix": since, "until_unix": until},
        "generated_at": _iso(time.time() if generated_at is None else generated_at),
        "model_details": {
            "name": model_cfg.name, "task": model_cfg.task, "version": static.get("model_version"),
            "owners": static.get("owners", []), "description": static.get("description"),
            "license": static.get("license"), "high_risk": bool(getattr(model_cfg, "high_risk", False)),
            "config_hash": configs[-1]["data"].get("config_hash") if configs else None,
        },
        "intended_use": {"primary_uses": static.get("intended_use"), "primary_users": static.get("intended_users", []),
                         "out_of_scope": static.get("out_of_scope", [])},
        "factors": {"relevant": static.get("factors", []),
                    "sensitive_attributes": list(getattr(model_cfg, "sensitive", ())),
                    "intersections": [list(x) for x in getattr(model_cfg, "intersections", ())],
                    "features": [{"name": f.name, "type": f.type} for f in getattr(model_cfg, "features", ())]},
        "metrics": {"performance": quant["metrics"], "data_quality": quant["data_quality"],
                    "min_group_size": getattr(model_cfg, "min_group_size", None), "confidence": 0.95},
        "evaluation_data": {
            "description": static.get("evaluation_data")
            or "The production windows the monitor evaluated in the period (sliding windows of "
               f"{getattr(model_cfg, 'window_panes', '?')} panes of {getattr(model_cfg, 'pane_seconds', '?')} s).",
            "windows": quant["windows"],
            "first_window_end": quant["first_window_end"], "last_window_end": quant["last_window_end"],
            "evaluation_records": len(evaluations),
            "max_window_predictions": max((r["n"] for r in n_pred), default=None),
        },
        "training_data": {"description": static.get("training_data"),
                          "reference": _reference(profile, getattr(model_cfg, "reference", None) or None,
                                                  model_entries)},
        "quantitative_analyses": {"fairness": quant["fairness"], "drift": quant["drift"]},
        "ethical_considerations": static.get("ethical_considerations", []),
        "caveats": static.get("caveats", []),
        "monitoring": {
            **_oversight(model_entries),
            "audit": {"source": audit.get("source"), "verified": bool((audit.get("verification") or {}).get("ok")),
                      "reason": (audit.get("verification") or {}).get("reason"), "entries": len(model_entries)},
        },
        "sources": {"evaluations": None, "static": static_source},
    }
    card["reference"] = card["training_data"]["reference"]
    return card


def _finish(card: dict) -> dict:
    card = _clean(card)
    card["sha256"] = card_hash(card)
    return card


# --------------------------------------------------------------------------- Markdown


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ci(d: Mapping[str, Any]) -> str:
    if d.get("ci_low") is None or d.get("ci_high") is None:
        return "n/a"
    return f"[{_num(d['ci_low'])}, {_num(d['ci_high'])}]"


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["_None in this period._", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def _bullets(items: Iterable[str], empty: str = "_Not provided in the card's static file._") -> list[str]:
    items = list(items)
    return ([f"- {_cell(i)}" for i in items] if items else [empty]) + [""]


def _series_rows(series: list[dict], label: str = "scope") -> list[list[Any]]:
    return [[s["metric"], s.get(label, s["scope"]), _num(s["latest"]["value"]), _ci(s["latest"]), _num(s["latest"]["n"]),
             s["latest"]["status"], _num(s["min"]), _num(s["max"]), _num(s["mean"]), s["windows"]] for s in series]


_SERIES_HEADER = ["metric", "scope", "latest", "95% CI", "n", "status", "min", "max", "mean", "windows"]


def render_markdown(card: Mapping[str, Any]) -> str:
    """The human copy of a card (every number is the JSON's, formatted to 4 significant digits)."""
    md: list[str] = []
    p, d = card["period"], card["model_details"]
    md += [f"# Model card: {card['model']}", "",
           f"Period {p['since']} to {p['until']} (exclusive) · generated {card['generated_at']} · "
           f"card_version {card['card_version']}", "",
           f"JSON sha256 `{card['sha256']}` (recorded in the audit trail as `card.written`)", ""]
    md += ["## Model details", ""]
    ref = card.get("reference") or {}
    md += _bullets([f"Name: {d['name']}", f"Task: {d['task']}", f"Version: {_num(d['version'])}",
                    f"Owners: {', '.join(d['owners']) or 'n/a'}", f"License: {_num(d['license'])}",
                    f"High risk: {_num(d['high_risk'])}", f"Config hash: {_num(d['config_hash'])}",
                    f"Reference: {_num(ref.get('version'))} sha256 {_num(ref.get('sha256'))}"])
    if d.get("description"):
        md += [d["description"], ""]
    iu = card["intended_use"]
    md += ["## Intended use", "", iu["primary_uses"] or "_Not provided in the card's static file._", ""]
    if iu["primary_users"]:
        md += ["Primary users:", ""] + _bullets(iu["primary_users"])
    md += ["Out of scope:", ""] + _bullets(iu["out_of_scope"])
    f = card["factors"]
    md += ["## Factors", ""] + _bullets(f["relevant"])
    md += [f"Sensitive attributes evaluated: {', '.join(f['sensitive_attributes']) or 'none'}"
           + (f"; intersections: {', '.join('&'.join(x) for x in f['intersections'])}" if f["intersections"] else ""),
           ""]
    m = card["metrics"]
    md += ["## Metrics", "",
           f"Every window in the period evaluated by the monitor; intervals at {int(m['confidence'] * 100)}%; "
           "min / max / mean over the windows' values (windows overlap when a window spans several panes).", ""]
    md += _table(_SERIES_HEADER, _series_rows(m["performance"]))
    if m["data_quality"]:
        md += ["Data quality:", ""] + _table(_SERIES_HEADER, _series_rows(m["data_quality"]))
    e = card["evaluation_data"]
    md += ["## Evaluation data", "", e["description"], "",
           f"{e['windows']} windows ({e['evaluation_records']} evaluation records), window ends "
           f"{_iso(e['first_window_end']) if e['first_window_end'] is not None else 'n/a'} to "
           f"{_iso(e['last_window_end']) if e['last_window_end'] is not None else 'n/a'}.", ""]
    t = card["training_data"]
    md += ["## Training data", "", t["description"] or "_Not provided in the card's static file._", ""]
    if ref:
        md += [f"Reference profile {_num(ref.get('version'))} from `{_num(ref.get('source'))}`, sha256 "
               f"`{_num(ref.get('sha256'))}`" + (f", {ref['rows']} rows" if ref.get("rows") is not None else "") + ".",
               ""]
    q = card["quantitative_analyses"]
    md += ["## Quantitative analyses", "", "### Fairness", ""]
    if not q["fairness"]:
        md += ["_No fairness evaluations in this period._", ""]
    for fa in q["fairness"]:
        md += [f"#### {fa['attribute']}", ""] + _table(_SERIES_HEADER, _series_rows(fa["metrics"]))
        md += _table(["rate", "group", "latest", "95% CI", "n", "status", "min", "max", "mean", "windows"],
                     _series_rows(fa["groups"], label="group"))
    dr = q["drift"]
    md += ["### Drift", "", "Windows in warn or alert, per feature:", ""]
    md += _table(["feature", "warn windows", "alert windows", "first", "last"],
                 [[b["feature"], b["windows_warn"], b["windows_alert"], _iso(b["first"]), _iso(b["last"])]
                  for b in dr["by_feature"]])
    md += ["Drift tests over the period:", ""] + _table(_SERIES_HEADER, _series_rows(dr["tests"]))
    md += ["## Ethical considerations", ""] + _bullets(card["ethical_considerations"])
    md += ["## Caveats and recommendations", ""] + _bullets(card["caveats"])
    mon = card["monitoring"]
    md += ["## Monitoring record", "",
           f"From the audit trail `{_num(mon['audit']['source'])}` ({mon['audit']['entries']} entries for the model, "
           f"chain {'verified' if mon['audit']['verified'] else 'NOT verified: ' + _num(mon['audit']['reason'])}).", ""]
    md += ["### Alerts", ""]
    rows = []
    for a in mon["alerts"]:
        # an alert that fired before the period shows up through its decisions only
        a = {**a, "rule": _num(a["rule"]), "scope": _num(a["scope"])}
        for tr in a["transitions"]:
            rows.append([a["id"], a["rule"], a["scope"], f"{tr['state']} ({tr['level']})", _num(tr["value"]), tr["time"], ""])
        for ack in a["acknowledgements"]:
            rows.append([a["id"], a["rule"], a["scope"], "acknowledged", "", ack["time"], f"{ack['by']}: {ack['reason']}"])
        for s in a["silences"]:
            rows.append([a["id"], a["rule"], a["scope"], f"silenced until {_iso(s['until'])}", "", s["time"],
                         f"{s['by']}: {s['reason']}"])
    md += _table(["alert", "rule", "scope", "event", "value", "when", "who"], rows)
    md += ["### Human decisions and requests", ""]
    rows = [[r["kind"], r["id"] or "", ev["event"], ev["time"], ev["by"] or "monitor", ev["reason"] or ""]
            for r in mon["requests"] for ev in r["events"]]
    rows += [["override", "", "on" if o["active"] else "lifted", o["time"], o["by"], o["why"]] for o in mon["overrides"]]
    rows += [["silence (model)", s["rule"] or "", f"until {_iso(s['until'])}", s["time"], s["by"], s["reason"]]
             for s in mon["silences"]]
    md += _table(["kind", "request", "event", "when", "who", "reason"], rows)
    return "\n".join(md).rstrip() + "\n"


# --------------------------------------------------------------------------- files and audit


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def write_card(card: dict, out_dir: str | Path, audit_log: Any = None) -> tuple[Path, Path, dict]:
    """Hash ``card``, write ``<model>_<since>_<until>_<sha12>.json`` and ``.md`` into
    ``out_dir`` (each via a temporary file and rename), and append a ``card.written`` entry
    to ``audit_log`` when given. Returns (json path, markdown path, the hashed card)."""
    card = _finish(card)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = card["period"]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", card["model"])
    stem = f"{safe}_{_stamp(p['since_unix'])}_{_stamp(p['until_unix'])}_{card['sha256'][:12]}"
    jpath, mpath = out / f"{stem}.json", out / f"{stem}.md"
    text = json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    markdown = render_markdown(card)
    for path, body in ((jpath, text), (mpath, markdown)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(path)
    if audit_log is not None:
        audit_log.append("card.written", {
            "json": str(jpath), "markdown": str(mpath), "sha256": card["sha256"],
            "markdown_sha256": hashlib.sha256(markdown.encode("utf-8")).hexdigest(),
            "card_version": CARD_VERSION, "since": p["since"], "until": p["until"],
        }, model=card["model"])
    return jpath, mpath, card


def list_cards(out_dir: str | Path) -> list[dict]:
    """The cards in ``out_dir`` (newest period first) as the API lists them."""
    out = []
    d = Path(out_dir)
    if not d.is_dir():
        return out
    for path in d.glob("*.json"):
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a foreign file: not a card
        if not isinstance(card, dict) or card.get("kind") != CARD_KIND:
            continue
        out.append({"name": path.stem, "model": card.get("model"), "period": card.get("period"),
                    "generated_at": card.get("generated_at"), "card_version": card.get("card_version"),
                    "sha256": card.get("sha256"), "json": f"/api/cards/{path.name}",
                    "markdown": f"/api/cards/{path.stem}.md"})
    out.sort(key=lambda c: ((c["period"] or {}).get("until") or "", c["name"]), reverse=True)
    return out


def card_file(out_dir: str | Path, name: str) -> Path | None:
    """The card file ``name`` (``.json`` or ``.md``) inside ``out_dir``, None if there is none
    (names outside the directory never resolve)."""
    if not _CARD_NAME.match(name) or ".." in name:
        return None
    base = Path(out_dir).resolve()
    path = (base / name).resolve()
    return path if path.parent == base and path.is_file() else None


# --------------------------------------------------------------------------- periodic job and CLI


def write_due_cards(app: Any, now: float | None = None) -> list[Path]:
    """The daemon's ``[cards]`` job: a card per model this process evaluates, over the
    ``interval_hours`` just ended. A failure is logged and never stops the monitor."""
    cfg = app.config
    c = cfg.cards
    until = time.time() if now is None else now
    since = until - c.interval_hours * 3600.0
    written = []
    # the summaries the poll loop published: this thread must not walk pipeline state
    for name in [m["name"] for m in app.model_summaries()]:
        try:
            static = load_static(c.static, name) if c.static else {}
            card = build_card(cfg.model(name), since, until, evaluations=_job_evaluations(app, name, since, until),
                              audit=_audit_export(cfg, name, since, until, audit_path=getattr(app.audit, "path", None),
                                                  bootstrap=getattr(app, "bootstrap", None)),
                              static=static, profile=app.profiles.get(name), static_source=c.static or None)
            card["sources"]["evaluations"] = (_evaluations_topic(cfg) if cfg.state.backend == "kafka"
                                              else str(app.store.path))
            jpath, _, _ = write_card(card, c.dir, app.audit)
            written.append(jpath)
            log.info("model card for %s: %s", name, jpath)
        except Exception:  # noqa: BLE001 - a card is documentation, never a reason to stop monitoring
            log.exception("model card for %s failed", name)
    return written


def _evaluations_topic(config: Any) -> str:
    from monitor.changelog import InternalTopics
    from monitor.config import internal_topic_prefix

    return InternalTopics(internal_topic_prefix(config)).evaluations


def _job_evaluations(app: Any, model: str, since: float, until: float) -> list[dict]:
    """The daemon's evidence: the state database, or with ``state.backend = "kafka"`` the
    evaluations topic (the local copy holds only what this replica evaluated)."""
    cfg = app.config
    if cfg.state.backend != "kafka":
        return read_evaluations(app.store, model, since, until)
    settings = _kafka_settings(cfg)
    settings["bootstrap_servers"] = list(getattr(app, "bootstrap", None) or settings["bootstrap_servers"])
    return read_evaluations_topic(settings, _evaluations_topic(cfg), model, since, until,
                                  read_timeout_seconds=cfg.audit.read_timeout_seconds)


def _audit_export(config: Any, model: str, since: float, until: float, audit_path: Any = None,
                  bootstrap: list[str] | None = None) -> dict:
    """The audit export of the period from the configured trail (file, or Kafka topic)."""
    from monitor.config import audit_topic

    topic = audit_topic(config)
    if topic:
        from monitor.audit_topic import export_topic

        settings = _kafka_settings(config)
        if bootstrap:
            settings["bootstrap_servers"] = list(bootstrap)
        return export_topic(settings, topic, model, since, until,
                            read_timeout_seconds=config.audit.read_timeout_seconds)
    return export(audit_path or config.audit.path, model, since=since, until=until)


def _kafka_settings(config: Any, servers: str | None = None) -> dict[str, Any]:
    """Client settings for the Kafka backend's topics: the config's, ``servers`` overriding
    its bootstrap servers."""
    from monitor.app import kafka_security  # lazy: Kafka only for a Kafka backend

    k = config.kafka
    boot = [x.strip() for x in servers.split(",") if x.strip()] if servers else list(k.bootstrap_servers)
    return {"bootstrap_servers": boot, "client_id": k.client_id, **kafka_security(k)}


def _card_audit_log(config: Any, settings: dict[str, Any], topic: str) -> Any:
    """Where ``driftline card`` records ``card.written``: the audit file, or on the audit
    topic a chain of this process's own (``instance/card-<prefix>-<host>-<pid>``: a chain
    has one writer, so the CLI never appends to a daemon's chain)."""
    from monitor.audit import AuditLog

    if not topic:
        return AuditLog(config.audit.path)
    from monitor.audit_topic import TopicAuditLog, instance_chain
    from monitor.kstate import instance_id

    return TopicAuditLog.standalone(settings, topic, instance_chain(f"card-{instance_id(config)}"),
                                    read_timeout_seconds=config.audit.read_timeout_seconds)


def main(args: argparse.Namespace) -> int:
    """``driftline card MODEL``: write the card of MODEL for ``[--since, --until)``."""
    from monitor.audit import AuditError
    from monitor.config import audit_topic, load_config
    from monitor.errors import AuditTopicError, StateError
    from monitor.profiles import load_profiles

    try:
        config = load_config(args.config)
        model_cfg = config.model(args.model)
        static = load_static(args.static, args.model) if args.static else {}
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    try:
        until = parse_time(args.until) if args.until else time.time()
        since = parse_time(args.since) if args.since else until - 30 * 86400.0
    except ValueError as exc:
        print(f"error: --since/--until: {exc}", file=sys.stderr)
        return 2
    if not until > since:
        print(f"error: --since {_iso(since)} must be before --until {_iso(until)}", file=sys.stderr)
        return 2
    topic = audit_topic(config)
    kafka_needed = bool(topic) or (config.state.backend == "kafka" and not args.evaluations)
    settings = _kafka_settings(config, args.bootstrap_servers) if kafka_needed else {"bootstrap_servers": None}
    try:
        if args.evaluations:
            if not Path(args.evaluations).exists():
                print(f"error: --evaluations {args.evaluations!r} does not exist (a state dir or a `driftline "
                      "replay` output)", file=sys.stderr)
                return 2
            source = str(args.evaluations)
            evaluations = read_evaluations(args.evaluations, args.model, since, until)
        elif config.state.backend == "kafka":
            evals_topic = _evaluations_topic(config)
            source = f"kafka:{evals_topic}"
            evaluations = read_evaluations_topic(settings, evals_topic, args.model, since, until,
                                                 read_timeout_seconds=config.audit.read_timeout_seconds)
        else:
            if not Path(config.state.dir).exists():
                print(f"error: state.dir {config.state.dir!r} does not exist: no evaluations to card "
                      "(give --evaluations with a `driftline replay` output)", file=sys.stderr)
                return 2
            source = str(config.state.dir)
            evaluations = read_evaluations(config.state.dir, args.model, since, until)
        doc = _audit_export(config, args.model, since, until, bootstrap=settings["bootstrap_servers"])
    except (StateError, AuditTopicError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad replay file
        print(f"error: --evaluations: {exc}", file=sys.stderr)
        return 2
    profile = load_profiles(config, Path(args.config).resolve().parent).get(args.model)
    card = build_card(model_cfg, since, until, evaluations=evaluations, audit=doc, static=static,
                      profile=profile, static_source=args.static)
    card["sources"]["evaluations"] = source
    try:
        with _card_audit_log(config, settings, topic) as audit:
            jpath, mpath, card = write_card(card, args.out or config.cards.dir, audit)
    except (AuditError, AuditTopicError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {jpath} and {mpath} (sha256 {card['sha256']}): {card['evaluation_data']['windows']} windows, "
          f"{len(card['monitoring']['alerts'])} alerts")
    if not doc["verification"]["ok"]:
        print(f"warning: the audit chain does not verify: {doc['verification']['reason']}", file=sys.stderr)
        return 1
    return 0
