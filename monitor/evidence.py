"""``driftline audit export --bundle DIR``: the audit trail of a period as an evidence bundle,
organised under the EU AI Act's headings for post-market monitoring (Art. 72) and
record-keeping (Art. 12).

The bundle holds ``index.json`` and ``index.md`` (the same content for people) and
``entries.jsonl`` (the period's entries as stored, hashes included, so a reader can match
them against the full log). Every number in the index is counted from those entries; the
monitoring plan (the configured rules) comes from the config when one is given, and the
metrics over the period from the state database's evaluations table when it exists.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

__all__ = ["build_bundle", "write_bundle", "HUMAN_KINDS"]

#: Entries that record a person's decision (who: the entry's ``actor``).
HUMAN_KINDS = frozenset({
    "alert.acknowledged", "alert.silenced", "model.override", "retrain.approved", "retrain.rejected",
    "serving.approved", "serving.rejected", "privacy.erased",
})
_CORRECTIVE = ("retrain.", "serving.", "trigger.")


def _plan(config: Any) -> list[dict]:
    out = []
    for m in config.models:
        out.append({"model": m.name, "task": m.task, "high_risk": getattr(m, "high_risk", None),
                    "reference": m.reference or "warm-up",
                    "window": {"pane_seconds": m.pane_seconds, "window_panes": m.window_panes},
                    "rules": [{"name": r.name, "metric": r.metric, "scope": r.scope, "warn": r.warn,
                               "alert": r.alert, "min_samples": r.min_samples, "severity": r.severity,
                               "actions": list(r.actions)} for r in m.rules]})
    return out


def _metrics(db: Path, since: float | None, until: float | None) -> list[dict]:
    """Per model and metric over the period: windows evaluated, min, max and last value."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT model, metric, window_end, record FROM evaluations WHERE window_end >= ? AND window_end < ? "
            "ORDER BY model, metric, window_end",
            (-1e300 if since is None else since, 1e300 if until is None else until)).fetchall()
    except sqlite3.OperationalError:
        return []  # no evaluations table: the daemon never ran on this state
    finally:
        conn.close()
    acc: dict[tuple[str, str], dict] = {}
    for model, metric, _, record in rows:
        rec = json.loads(record)
        v = rec.get("value")
        a = acc.setdefault((model, metric), {"model": model, "metric": metric, "evaluations": 0, "min": None,
                                             "max": None, "last": None, "alert_windows": 0})
        a["evaluations"] += 1
        if rec.get("status") == "alert":
            a["alert_windows"] += 1
        if isinstance(v, int | float):
            a["min"] = v if a["min"] is None else min(a["min"], v)
            a["max"] = v if a["max"] is None else max(a["max"], v)
            a["last"] = v
    return list(acc.values())


def build_bundle(entries: list[dict], verification: dict, since: str | None, until: str | None,
                 config: Any = None, state_db: Path | None = None, since_ts: float | None = None,
                 until_ts: float | None = None) -> dict:
    """The index of an evidence bundle from the period's audit entries."""
    kinds = Counter(e["kind"] for e in entries)
    episodes: dict[str, dict] = {}
    redacted = Counter(e["kind"] for e in entries if e.get("data") is None)
    for e in entries:
        if e["kind"] != "alert.transition" or e.get("data") is None:
            continue  # a redacted transition counts in the logs, not as an episode
        ev = e["data"]["event"]
        ep = episodes.setdefault(ev["id"], {"alert_id": ev["id"], "model": ev["model"], "rule": ev["rule"],
                                            "metric": ev["metric"], "scope": ev["scope"],
                                            "severity": ev["severity"], "model_versions": [], "transitions": []})
        if ev.get("model_version") and ev["model_version"] not in ep["model_versions"]:
            ep["model_versions"].append(ev["model_version"])  # the serving model's versions seen
        ep["transitions"].append({"state": ev["state"], "time": e["time"], "value": ev["value"],
                                  "threshold": ev["threshold"], "seq": e["seq"]})
    for ep in episodes.values():
        ep["final_state"] = ep["transitions"][-1]["state"]
    by_model: dict[str, Counter] = defaultdict(Counter)
    for ep in episodes.values():
        by_model[ep["model"]][ep["final_state"]] += 1
    decisions = [{"time": e["time"], "who": e.get("actor"), "kind": e["kind"], "model": e.get("model"),
                  "ref": e.get("ref"), "seq": e["seq"],
                  "reason": (e["data"] or {}).get("reason") or (e["data"] or {}).get("why")}
                 for e in entries if e["kind"] in HUMAN_KINDS]
    models = sorted({e["model"] for e in entries if e.get("model")}
                    | {m for e in entries if e["kind"] == "config.loaded" for m in e["data"].get("models", [])})
    return {
        "kind": "driftline.evidence_bundle",
        "version": 1,
        "period": {"since": since, "until": until,
                   "first_entry": entries[0]["time"] if entries else None,
                   "last_entry": entries[-1]["time"] if entries else None},
        "models": models,
        "art_72_post_market_monitoring": {
            "monitoring_plan": _plan(config) if config is not None else None,
            "performance_data": _metrics(state_db, since_ts, until_ts) if state_db is not None else [],
            "alerts": {"episodes": len(episodes), "by_model_final_state": {m: dict(c) for m, c in sorted(by_model.items())},
                       "transitions": kinds.get("alert.transition", 0), "list": list(episodes.values())},
            "corrective_actions": [{"time": e["time"], "kind": e["kind"], "model": e.get("model"),
                                    "actor": e.get("actor"), "seq": e["seq"]}
                                   for e in entries if e["kind"].startswith(_CORRECTIVE)],
        },
        "art_12_record_keeping": {
            "logs": {"entries": len(entries), "by_kind": dict(sorted(kinds.items())), "chain": verification,
                     "payloads_redacted": dict(sorted(redacted.items()))},
            "reference_versions": [{"time": e["time"], "model": e.get("model"), **e["data"]}
                                   for e in entries if e["kind"] == "reference.version"],
            "config_versions": [{"time": e["time"], "config_hash": e["data"].get("config_hash"),
                                 "source": e["data"].get("source")}
                                for e in entries if e["kind"] == "config.loaded"],
            "human_decisions": decisions,
            "erasures": kinds.get("privacy.erased", 0),
        },
    }


def _md(index: dict) -> str:
    a72, a12 = index["art_72_post_market_monitoring"], index["art_12_record_keeping"]
    p = index["period"]
    chain = a12["logs"]["chain"]
    lines = [
        "# Driftline evidence bundle", "",
        f"Period: {p['since'] or 'start'} to {p['until'] or 'now'} (entries {p['first_entry']} .. {p['last_entry']})",
        f"Models: {', '.join(index['models']) or 'none'}", "",
        "## Post-market monitoring (EU AI Act Art. 72)", "",
        "### Monitoring plan (Art. 72(3)): the rules configured", "",
    ]
    if a72["monitoring_plan"] is None:
        lines.append("Not included (export with --config to include the configured rules).")
    for m in a72["monitoring_plan"] or []:
        lines.append(f"- **{m['model']}** ({m['task']}, reference {m['reference']}):")
        lines += [f"  - {r['name']}: {r['metric']} ({r['scope']}) warn {r['warn']} alert {r['alert']}, "
                  f"min samples {r['min_samples']}, actions {', '.join(r['actions']) or 'none'}" for r in m["rules"]]
    lines += ["", "### Performance data collected and analysed (Art. 72(2))", ""]
    if a72["performance_data"]:
        lines += ["| model | metric | windows | in alert | min | max | last |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['metric']} | {r['evaluations']} | {r['alert_windows']} | {r['min']} | "
                  f"{r['max']} | {r['last']} |" for r in a72["performance_data"]]
    else:
        lines.append("No evaluations in the state database for this period.")
    al = a72["alerts"]
    lines += ["", f"### Alerts and their resolution: {al['episodes']} episodes, {al['transitions']} transitions", ""]
    lines += [f"- {ep['model']}/{ep['rule']} {ep['metric']} {ep['scope']}: "
              + " -> ".join(f"{t['state']} {t['time']}" for t in ep["transitions"]) for ep in al["list"]]
    lines += ["", f"### Corrective actions: {len(a72['corrective_actions'])}", ""]
    lines += [f"- {c['time']} {c['kind']} {c['model'] or ''} {c['actor'] or ''}" for c in a72["corrective_actions"]]
    lines += ["", "## Record-keeping (EU AI Act Art. 12)", "",
              f"### Logs (Art. 12(1)): {a12['logs']['entries']} entries in this period", "",
              f"Chain verification of the whole log: {'OK' if chain.get('ok') else 'FAILED: ' + str(chain.get('reason'))}"
              f", head seq {chain.get('head_seq')} hash {chain.get('head_hash')}", ""]
    lines += [f"- {k}: {n}" + (f" ({a12['logs']['payloads_redacted'][k]} payloads redacted by retention)"
                               if k in a12["logs"]["payloads_redacted"] else "")
              for k, n in a12["logs"]["by_kind"].items()]
    lines += ["", "### Reference versions", ""]
    lines += [f"- {r['time']} {r['model']}: {r.get('version')} sha256 {r.get('sha256')}" for r in a12["reference_versions"]]
    lines += ["", "### Config versions", ""]
    lines += [f"- {c['time']} {c['config_hash']} ({c['source']})" for c in a12["config_versions"]]
    lines += ["", "### Human decisions (who, when)", ""]
    lines += [f"- {d['time']} {d['who']}: {d['kind']} {d['model'] or ''} {d['ref'] or ''} {d['reason'] or ''}".rstrip()
              for d in a12["human_decisions"]]
    lines += ["", f"Erasures of prediction ids in the period: {a12['erasures']}", ""]
    return "\n".join(lines)


def write_bundle(out_dir: str | Path, entries: list[dict], index: dict) -> Path:
    """Write ``index.json``, ``index.md`` and ``entries.jsonl`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "index.md").write_text(_md(index), encoding="utf-8")
    with open(out / "entries.jsonl", "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
    return out
