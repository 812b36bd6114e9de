"""``driftline audit export --bundle``: the index's sections and numbers equal the audit
entries of the period (counted here from the log file itself), entries outside the period
are left out, and a tampered log exports with a failed verification and exit 1."""

from __future__ import annotations

import json
import sqlite3

import pytest

from monitor.audit import AuditLog, main_export
from monitor.events import AlertEvent
from monitor.synth import ModelSpec, config_models_toml, default_rules

T0 = 1_760_000_000.0  # 2025-10-09T08:53:20Z
DAY = 86400.0


def _event(i: int, state: str, seq: int, t: float) -> AlertEvent:
    return AlertEvent(id=f"a{i}", seq=seq, state=state, model="m", rule="accuracy-drop", metric="accuracy",
                      scope="model", severity="critical", value=0.5 + 0.01 * i, threshold=0.55,
                      window_start=t - 900, window_end=t, started_at=t, model_version=f"1.{i}.0")


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as a:
        a.append("config.loaded", {"source": "c.toml", "config_hash": "old", "models": ["m"]}, time=T0 - 2 * DAY)
        a.append("alert.transition", {"alert_id": "a0", "key": "a0:firing:1", "event": _event(0, "firing", 1, T0 - DAY)},
                 model="m", time=T0 - DAY)  # before the period
        a.append("config.loaded", {"source": "c.toml", "config_hash": "h1", "models": ["m", "n"]}, time=T0)
        a.append("reference.version", {"version": "v1", "source": "m.json", "sha256": "ab" * 32}, model="m", time=T0 + 1)
        a.append("alert.transition", {"alert_id": "a1", "key": "k1", "event": _event(1, "firing", 1, T0 + 100)},
                 model="m", time=T0 + 100)
        a.append("alert.acknowledged", {"alert_id": "a1", "reason": "looking"}, model="m", actor="alice",
                 time=T0 + 200)
        a.append("alert.transition", {"alert_id": "a1", "key": "k2", "event": _event(1, "resolved", 2, T0 + 900)},
                 model="m", time=T0 + 900)
        a.append("alert.transition", {"alert_id": "a2", "key": "k3", "event": _event(2, "firing", 1, T0 + 1000)},
                 model="m", time=T0 + 1000)
        a.append("retrain.created", {"id": "r1"}, model="m", time=T0 + 1001)
        a.append("retrain.approved", {"id": "r1", "reason": "drift confirmed"}, model="m", actor="bob", time=T0 + 1500)
        a.append("trigger.sent", {"id": "r1"}, model="m", time=T0 + 1501)
        a.append("privacy.erased", {"salt": "00", "id_hmac": "ff", "removed": {}}, actor="dpo", time=T0 + 2000)
        a.append("alert.transition", {"alert_id": "a3", "key": "k4", "event": _event(3, "firing", 1, T0 + 2 * DAY)},
                 model="m", time=T0 + 2 * DAY)  # after the period
    return path


def _period_entries(path, lo, hi):
    from monitor.audit import parse_time

    return [e for e in map(json.loads, path.read_text().splitlines()) if lo <= parse_time(e["time"]) < hi]


def test_bundle_sections_and_numbers_equal_the_entries_of_the_period(tmp_path, log):
    out = tmp_path / "bundle"
    since, until = "2025-10-09T08:00:00Z", "2025-10-10T08:00:00Z"
    assert main_export(["--path", str(log), "--bundle", str(out), "--since", since, "--until", until]) == 0
    index = json.loads((out / "index.json").read_text())
    mine = _period_entries(log, T0 - 3200, T0 - 3200 + DAY)
    assert [json.loads(x) for x in (out / "entries.jsonl").read_text().splitlines()] == mine
    assert index["period"]["since"] == since and index["period"]["until"] == until
    assert index["models"] == ["m", "n"]
    a72, a12 = index["art_72_post_market_monitoring"], index["art_12_record_keeping"]
    transitions = [e for e in mine if e["kind"] == "alert.transition"]
    assert a72["alerts"]["transitions"] == len(transitions) == 3
    assert a72["alerts"]["episodes"] == len({e["data"]["alert_id"] for e in transitions}) == 2
    assert a72["alerts"]["by_model_final_state"] == {"m": {"resolved": 1, "firing": 1}}
    a1 = next(ep for ep in a72["alerts"]["list"] if ep["alert_id"] == "a1")
    assert [t["state"] for t in a1["transitions"]] == ["firing", "resolved"] and a1["model_versions"] == ["1.1.0"]
    assert [c["kind"] for c in a72["corrective_actions"]] == ["retrain.created", "retrain.approved", "trigger.sent"]
    assert a12["logs"]["entries"] == len(mine)
    assert a12["logs"]["by_kind"] == {k: sum(e["kind"] == k for e in mine) for k in {e["kind"] for e in mine}}
    assert a12["logs"]["chain"]["ok"] is True
    last = json.loads(log.read_text().splitlines()[-1])
    assert a12["logs"]["chain"]["head_hash"] == last["hash"]
    assert [c["config_hash"] for c in a12["config_versions"]] == ["h1"]
    assert a12["reference_versions"][0]["sha256"] == "ab" * 32
    assert [(d["who"], d["kind"]) for d in a12["human_decisions"]] == [
        ("alice", "alert.acknowledged"), ("bob", "retrain.approved"), ("dpo", "privacy.erased")]
    assert a12["erasures"] == 1
    md = (out / "index.md").read_text()
    for heading in ("## Post-market monitoring (EU AI Act Art. 72)", "### Monitoring plan (Art. 72(3))",
                    "## Record-keeping (EU AI Act Art. 12)", "### Human decisions (who, when)"):
        assert heading in md
    assert "alice: alert.acknowledged" in md and "Chain verification of the whole log: OK" in md


def test_bundle_with_config_has_the_monitoring_plan_and_the_metrics(tmp_path, log):
    spec = ModelSpec("m", n_numeric=2, n_categorical=0, sensitive={"sex": ["F", "M"]})
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[state]\ndir = "{state.as_posix()}"\n[audit]\npath = "{log.as_posix()}"\n'
                   + config_models_toml(spec, rules=default_rules(0.6, 0.55)))
    conn = sqlite3.connect(state / "driftline.db")
    conn.execute("CREATE TABLE evaluations (model TEXT, window_end REAL, metric TEXT, scope TEXT, record TEXT)")
    values = [(T0 + 60 * i, 0.9 - 0.1 * i) for i in range(4)] + [(T0 + 3 * DAY, 0.1)]  # the last one outside
    conn.executemany("INSERT INTO evaluations VALUES ('m', ?, 'accuracy', 'model', ?)",
                     [(t, json.dumps({"value": v, "status": "alert" if v < 0.65 else "ok"})) for t, v in values])
    conn.commit()
    conn.close()
    out = tmp_path / "bundle"
    assert main_export(["--config", str(cfg), "--bundle", str(out), "--model", "m",
                        "--since", "2025-10-09T08:00:00Z", "--until", "2025-10-10T08:00:00Z"]) == 0
    index = json.loads((out / "index.json").read_text())
    plan = index["art_72_post_market_monitoring"]["monitoring_plan"]
    assert [m["model"] for m in plan] == ["m"]
    assert {r["metric"] for r in plan[0]["rules"]} >= {"accuracy"}
    perf = index["art_72_post_market_monitoring"]["performance_data"]
    assert perf == [{"model": "m", "metric": "accuracy", "evaluations": 4, "alert_windows": 1,
                     "min": pytest.approx(0.6), "max": 0.9, "last": pytest.approx(0.6)}]


def test_bundle_of_a_tampered_log_says_so_and_exits_1(tmp_path, log):
    lines = log.read_text().splitlines()
    lines[4] = lines[4].replace('"k1"', '"kX"')
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "bundle"
    assert main_export(["--path", str(log), "--bundle", str(out)]) == 1
    chain = json.loads((out / "index.json").read_text())["art_12_record_keeping"]["logs"]["chain"]
    assert chain["ok"] is False and chain["first_bad_line"] == 5
