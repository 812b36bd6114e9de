"""Model cards from evidence (issue 11, part 1).

A seeded stream with a covariate shift and a selection-rate drop for one group goes
through ``driftline replay``; its alert transitions go through Oversight (as the daemon
records them), a person acknowledges an alert and approves a retrain. The card of a period
must then hold exactly the numbers of that period's evaluation records, computed here
independently with pandas, and the decisions with who and when.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from monitor import cli
from monitor.audit import AuditLog, verify
from monitor.cards import (
    SECTIONS,
    build_card,
    load_static,
    read_evaluations,
    write_card,
)
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.events import AlertEvent
from monitor.http import HttpServer
from monitor.oversight import Oversight
from monitor.policy import FAIRNESS_METRICS
from monitor.profiles import load_profiles
from monitor.replay import replay
from monitor.state import StateStore
from monitor.synth import (
    Change,
    ModelSpec,
    config_models_toml,
    default_rules,
    generate,
    reference_profile,
)

from .conftest import write_jsonl

START = 1_700_000_000.0
SINCE = START + 1.5 * 3600
UNTIL = START + 3.5 * 3600
TOKEN = "card-token-123"

STATIC = """\
[card]
owners = ["risk-ml@example.com", "alice"]
intended_use = "Ranking loan applications for manual review."
out_of_scope = ["Automated rejection without review"]
factors = ["Sex of the applicant, evaluated as a sensitive attribute"]
training_data = "Applications 2021-2023."
ethical_considerations = ["Selection rates differ by sex; reviewed monthly."]
caveats = ["Labels arrive after 60 s on average; the latest windows have fewer labels."]

[models.m]
model_version = "2.1.0"
"""


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Replay a 4-hour seeded stream once; record its transitions through Oversight with an
    acknowledgement, a retrain approval and a decision after the period."""
    tmp = tmp_path_factory.mktemp("cards")
    spec = ModelSpec("m", n_numeric=3, n_categorical=1, rate=3.0, label_delay=60.0, sensitive={"sex": ["F", "M"]},
                     changes=[Change("covariate_shift", at=2 * 3600.0, feature="num_00", shift=1.0),
                              Change("selection_drop", at=2 * 3600.0, attribute="sex", group="F", factor=0.4)])
    prof = reference_profile(spec)
    ref = tmp / "m.json"
    prof.save(ref)
    state_dir, audit_path, cards_dir = tmp / "state", tmp / "audit.jsonl", tmp / "cards"
    text = (f'[state]\ndir = "{state_dir.as_posix()}"\n[audit]\npath = "{audit_path.as_posix()}"\n'
            f'[cards]\ndir = "{cards_dir.as_posix()}"\n'
            + config_models_toml(spec, reference=ref.as_posix(), rules=default_rules(0.6, 0.55), pane_seconds=60.0,
                                 window_panes=15, allowed_lateness_seconds=30.0, high_risk=True))
    cfg_path = tmp / "config.toml"
    cfg_path.write_text(text)
    config = load_config(cfg_path)
    preds, labels = generate(spec, START, 4 * 3600.0, seed=3)
    p, lab = write_jsonl(tmp / "p.jsonl", preds), write_jsonl(tmp / "l.jsonl", labels)
    buf = io.StringIO()
    replay(config, p, lab, buf)
    out_path = tmp / "replay.jsonl"
    out_path.write_text(buf.getvalue())
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    evals = [x for x in lines if x["type"] == "evaluation"]
    alerts = [x for x in lines if x["type"] == "alert"]
    # the state database as the daemon's checkpoint fills it
    store = StateStore(state_dir)
    from monitor.app import EVALUATIONS_SCHEMA

    with store.transaction() as conn:
        conn.execute(EVALUATIONS_SCHEMA.strip().rstrip(";"))
        conn.executemany("INSERT INTO evaluations(model, window_end, metric, scope, record) VALUES (?,?,?,?,?)",
                         [(e["model"], e["window_end"], e["metric"], e["scope"], json.dumps(e, sort_keys=True))
                          for e in evals])
    audit = AuditLog(audit_path)
    clock = Clock(START)
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0, require_approval=None, clock=clock)
    audit.reference_version("m", "v1", str(ref), "0" * 64)
    events = [AlertEvent(**{k: v for k, v in a.items() if k not in ("type", "key")}) for a in alerts]
    for ev in events:  # the daemon audits a transition when the checkpoint after its window commits
        clock.t = ev.window_end + 5
        with store.transaction() as conn:
            ov.record_transitions(conn, [ev])
        ov.flush_audit()
    in_period = [e for e in events if e.state == "firing" and SINCE <= e.window_end + 5 < UNTIL - 600]
    assert in_period, "the seeded changes fire no alert in the period"
    acked = in_period[0]
    clock.t = acked.window_end + 300
    ov.acknowledge(acked.id, "alice", "looking at num_00")
    with store.transaction() as conn:
        req = ov.propose_retrain(conn, "m", f"{acked.rule}: {acked.metric}", (acked.window_start, acked.window_end),
                                 {}, 1000, True, clock.t)
    ov.flush_audit()
    clock.t += 120
    ov.approve(req.id, "carol", "shift confirmed by the data team")
    late = [e for e in events if e.state == "firing" and e.window_end + 5 >= UNTIL and e.id != acked.id]
    if late:
        clock.t = UNTIL + 1000
        ov.acknowledge(late[0].id, "mallory", "after the period")
    static = tmp / "card.toml"
    static.write_text(STATIC)
    yield {"tmp": tmp, "config": config, "cfg_path": cfg_path, "evals": evals, "events": events, "store": store,
           "audit": audit, "audit_path": audit_path, "acked": acked, "req": req, "static": static,
           "replay": out_path, "profile": load_profiles(config)["m"], "cards_dir": cards_dir}
    audit.close()
    store.close()


def _card(case, source=None):
    from monitor.audit import export

    c = case
    evaluations = read_evaluations(source or c["store"], "m", SINCE, UNTIL)
    doc = export(c["audit_path"], "m", since=SINCE, until=UNTIL)
    return build_card(c["config"].model("m"), SINCE, UNTIL, evaluations=evaluations, audit=doc,
                      static=load_static(c["static"], "m"), profile=c["profile"], static_source=str(c["static"]))


def _frame(case) -> pd.DataFrame:
    df = pd.DataFrame(case["evals"])
    return df[(df.window_end >= SINCE) & (df.window_end < UNTIL)].sort_values("window_end")


def _all_series(card) -> dict[tuple[str, str], dict]:
    out = {}
    for s in card["metrics"]["performance"] + card["metrics"]["data_quality"] + \
            card["quantitative_analyses"]["drift"]["tests"]:
        out[(s["metric"], s["scope"])] = s
    for fa in card["quantitative_analyses"]["fairness"]:
        for s in fa["metrics"] + fa["groups"]:
            out[(s["metric"], s["scope"])] = s
    return out


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None
    return b == pytest.approx(a, rel=1e-12, abs=1e-15)


def test_card_numbers_equal_the_periods_evaluations(case):
    card = _card(case)
    df = _frame(case)
    series = _all_series(card)
    assert set(series) == set(zip(df.metric, df.scope, strict=True))  # every series, nothing else
    for (metric, scope), g in df.groupby(["metric", "scope"]):
        s = series[(metric, scope)]
        last = g.loc[g.window_end.idxmax()]
        for k in ("value", "ci_low", "ci_high"):
            assert _same(last[k], s["latest"][k]), (metric, scope, k)
        assert s["latest"]["n"] == last["n"] and s["latest"]["status"] == last["status"]
        assert s["latest"]["window_end"] == last["window_end"]
        vals = pd.to_numeric(g.value, errors="coerce").dropna()
        assert s["windows"] == len(g) and s["windows_with_value"] == len(vals)
        assert _same(vals.min() if len(vals) else None, s["min"])
        assert _same(vals.max() if len(vals) else None, s["max"])
        assert _same(vals.mean() if len(vals) else None, s["mean"])
        assert s["windows_warn"] == int((g.status == "warn").sum())
        assert s["windows_alert"] == int((g.status == "alert").sum())
    assert card["evaluation_data"]["windows"] == df.window_end.nunique()
    assert card["evaluation_data"]["evaluation_records"] == len(df)
    # the state database and the replay file are the same evidence
    assert _card(case, source=case["replay"])["quantitative_analyses"] == card["quantitative_analyses"]


def test_fairness_rows_with_intervals_and_drift_history(case):
    card = _card(case)
    df = _frame(case)
    fair = {fa["attribute"]: fa for fa in card["quantitative_analyses"]["fairness"]}
    assert set(fair) == {"sex"}
    assert {s["metric"] for s in fair["sex"]["metrics"]} == set(FAIRNESS_METRICS)
    dp = next(s for s in fair["sex"]["metrics"] if s["metric"] == "demographic_parity_difference")
    last = df[(df.metric == "demographic_parity_difference") & (df.scope == "sex")].iloc[-1]
    assert dp["latest"]["ci_low"] <= dp["latest"]["value"] <= dp["latest"]["ci_high"]
    assert (dp["latest"]["value"], dp["latest"]["ci_low"], dp["latest"]["ci_high"]) == \
        (last.value, last.ci_low, last.ci_high)
    groups = {(s["metric"], s["group"]) for s in fair["sex"]["groups"]}
    assert groups == {(m, g) for m in ("selection_rate", "tpr", "fpr") for g in ("F", "M")}
    # the planted selection drop for F is in the period: F's latest selection rate is lower
    sel = {s["group"]: s["latest"]["value"] for s in fair["sex"]["groups"] if s["metric"] == "selection_rate"}
    assert sel["F"] < sel["M"]
    # drift history: exactly the warn/alert windows of the drift tests
    hist = card["quantitative_analyses"]["drift"]["history"]
    want = df[df.metric.isin(["psi", "score_psi"]) & df.status.isin(["warn", "alert"])]
    assert sorted((h["window_end"], h["scope"], h["metric"], h["status"]) for h in hist) == \
        sorted(zip(want.window_end, want.scope, want.metric, want.status, strict=True))
    assert "num_00" in {b["feature"] for b in card["quantitative_analyses"]["drift"]["by_feature"]}
    counts = want.groupby("scope").status.value_counts().unstack(fill_value=0)
    for b in card["quantitative_analyses"]["drift"]["by_feature"]:
        assert b["windows_alert"] == int(counts.loc[b["feature"]].get("alert", 0))
        assert b["windows_warn"] == int(counts.loc[b["feature"]].get("warn", 0))


def test_alerts_acknowledgement_and_approval_with_who_and_when(case):
    card = _card(case)
    mon = card["monitoring"]
    acked = case["acked"]
    alert = next(a for a in mon["alerts"] if a["id"] == acked.id)
    assert alert["rule"] == acked.rule and alert["transitions"][0]["state"] == "firing"
    assert [(x["by"], x["reason"]) for x in alert["acknowledgements"]] == [("alice", "looking at num_00")]
    ack_time = alert["acknowledgements"][0]["time"]
    assert ack_time.startswith(_iso_prefix(acked.window_end + 300))
    req = next(r for r in mon["requests"] if r["id"] == case["req"].id)
    assert [(e["event"], e["by"]) for e in req["events"]] == [("created", None), ("approved", "carol")]
    assert req["events"][1]["reason"] == "shift confirmed by the data team"
    # every transition audited in the period, and none outside it
    want = {(e.id, e.seq) for e in case["events"] if SINCE <= e.window_end + 5 < UNTIL}
    got = {(a["id"], t["seq"]) for a in mon["alerts"] for t in a["transitions"]}
    assert got == want
    assert "mallory" not in json.dumps(card)
    assert mon["audit"]["verified"] is True


def _iso_prefix(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_written_card_hash_in_audit_and_markdown_sections(case, tmp_path):
    out = tmp_path / "cards"
    with AuditLog(case["tmp"] / "audit-write.jsonl") as log:
        jpath, mpath, card = write_card(_card(case), out, log)
    doc = json.loads(jpath.read_text())
    body = {k: v for k, v in doc.items() if k != "sha256"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                            .encode()).hexdigest()
    assert doc["sha256"] == digest == card["sha256"]
    assert doc["card_version"] == 1 and doc["model"] == "m" and doc["generated_at"]
    assert doc["reference"]["sha256"] == hashlib.sha256(
        json.dumps(case["profile"].to_dict(), sort_keys=True).encode()).hexdigest()
    entries = [json.loads(x) for x in (case["tmp"] / "audit-write.jsonl").read_text().splitlines()]
    written = [e for e in entries if e["kind"] == "card.written"]
    assert len(written) == 1 and written[0]["data"]["sha256"] == digest and written[0]["model"] == "m"
    assert written[0]["data"]["json"] == str(jpath)
    assert written[0]["data"]["markdown_sha256"] == hashlib.sha256(mpath.read_bytes()).hexdigest()
    assert verify(case["tmp"] / "audit-write.jsonl").ok
    md = mpath.read_text()
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads == list(SECTIONS)  # Mitchell et al.'s order, then the monitoring record
    assert digest in md and "carol" in md and "alice" in md and "2.1.0" in md
    acc = next(s for s in doc["metrics"]["performance"] if s["metric"] == "accuracy")
    assert f"| accuracy | model | {acc['latest']['value']:.4g} |" in md
    assert "Ranking loan applications" in md.split("## Intended use")[1].split("## Factors")[0]


def test_cli_writes_card_and_audit_verifies(case, capsys):
    code = cli.main(["card", "m", "--config", str(case["cfg_path"]), "--since", "2023-11-14T23:43:20Z",
                     "--until", "2023-11-15T01:43:20Z", "--static", str(case["static"])])
    out = capsys.readouterr()
    assert code == 0, out.err
    cards = sorted(case["cards_dir"].glob("*.json"))
    assert len(cards) == 1
    doc = json.loads(cards[0].read_text())
    assert (doc["period"]["since_unix"], doc["period"]["until_unix"]) == (SINCE, UNTIL)
    assert doc["quantitative_analyses"] == _card(case)["quantitative_analyses"]
    res = verify(case["audit_path"])
    assert res.ok, res.reason
    last = json.loads(case["audit_path"].read_text().splitlines()[-1])
    assert last["kind"] == "card.written" and last["data"]["sha256"] == doc["sha256"]
    assert cli.main(["audit", "verify", "--path", str(case["audit_path"])]) == 0
    # a bad period is a usage error naming the flags
    assert cli.main(["card", "m", "--config", str(case["cfg_path"]), "--since", "2024-01-02",
                     "--until", "2024-01-01"]) == 2
    assert "--since" in capsys.readouterr().err


def test_static_file_errors_name_key_and_line(tmp_path):
    f = tmp_path / "card.toml"
    f.write_text('[card]\nowners = "alice"\nintended_use = "x"\ncolour = "blue"\n\n[models.m]\n'
                 'caveats = [\n  "ok",\n  3,\n]\n[extra]\nx = 1\n')
    with pytest.raises(ConfigError) as info:
        load_static(f, "m")
    errs = {(e.key, e.line) for e in info.value.errors}
    assert errs == {("card.owners", 2), ("card.colour", 4), ("models.m.caveats", 7), ("extra", 11)}
    assert f"{f}:2: card.owners: must be a non-empty list" in str(info.value)
    f.write_text('[card]\nowners = ["a"]\n')
    with pytest.raises(ConfigError, match=r"card\.toml:1: card: \[card\] \(or \[models\.m\]\): intended_use required"):
        load_static(f, "m")
    f.write_text('[card]\nowners = ["a"]\nintended_use = = "x"\n')
    with pytest.raises(ConfigError, match=r"card\.toml:3: invalid TOML"):
        load_static(f, "m")


def test_api_lists_and_serves_cards(case, tmp_path):
    out = tmp_path / "cards"
    jpath, mpath, card = write_card(_card(case), out)
    (out / "notes.json").write_text('{"not": "a card"}')
    (tmp_path / "secret.md").write_text("no")
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, "ok"), None, TOKEN,
                     cards_dir=out)
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=5) as client:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert client.get("/api/cards").status_code == 401
            r = client.get("/api/cards", headers=auth)
            assert r.status_code == 200
            listed = r.json()["cards"]
            assert [c["name"] for c in listed] == [jpath.stem]
            assert listed[0]["sha256"] == card["sha256"] and listed[0]["model"] == "m"
            r = client.get(listed[0]["json"], headers=auth)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            assert r.json()["sha256"] == card["sha256"]
            r = client.get(listed[0]["markdown"], headers=auth)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
            assert r.text == mpath.read_text()
            assert client.get("/api/cards/..%2Fsecret.md", headers=auth).status_code == 404
            assert client.get("/api/cards/nope.md", headers=auth).status_code == 404
    finally:
        srv.stop()


def test_periodic_job_writes_a_card_per_model(case, tmp_path):
    from types import SimpleNamespace

    from monitor.cards import write_due_cards

    config = case["config"]
    cards_cfg = type(config.cards)(enabled=True, interval_hours=2.0, static=str(case["static"]), dir=str(tmp_path))
    import msgspec

    cfg = msgspec.structs.replace(config, cards=cards_cfg)
    with AuditLog(tmp_path / "audit.jsonl") as log:
        app = SimpleNamespace(config=cfg, store=case["store"], audit=log, profiles={"m": case["profile"]},
                              model_summaries=lambda: [{"name": "m"}])
        written = write_due_cards(app, now=UNTIL)
    assert len(written) == 1
    doc = json.loads(Path(written[0]).read_text())
    assert (doc["period"]["since_unix"], doc["period"]["until_unix"]) == (UNTIL - 7200.0, UNTIL)
    assert doc["quantitative_analyses"]["fairness"] == _card(case)["quantitative_analyses"]["fairness"]


def test_monitoring_record_silences_overrides_suppressions_and_rollbacks(tmp_path):
    """Every kind of decision the audit trail holds lands in the card with who and when."""
    from monitor.audit import export

    t0 = 1_800_000_000.0
    store = StateStore(tmp_path / "s")
    clock = Clock(t0)
    with AuditLog(tmp_path / "audit.jsonl") as log:
        ov = Oversight(store, log, cooldown_seconds=3600, min_new_labels=0, require_approval=None, clock=clock)
        ev = AlertEvent(id="a1", seq=1, state="firing", model="m", rule="acc", metric="accuracy", scope="model",
                        severity="critical", value=0.5, threshold=0.6, window_start=t0 - 900, window_end=t0,
                        started_at=t0)
        with store.transaction() as conn:
            ov.record_transitions(conn, [ev])
        ov.flush_audit()
        clock.t = t0 + 10
        ov.silence(who="bob", reason="known outage", until=t0 + 3600, alert_id="a1")
        clock.t = t0 + 20
        ov.silence(who="bob", reason="maintenance", until=t0 + 7200, model="m", rule="acc")
        clock.t = t0 + 30
        ov.override("m", "dana", "manual review this week", until=t0 + 86400)
        with store.transaction() as conn:  # overridden: the request is suppressed
            assert ov.propose_retrain(conn, "m", "acc: accuracy", (t0 - 900, t0), {}, 10, False, clock.t) is None
        ov.flush_audit()
        clock.t = t0 + 40
        ov.override("m", "dana", "done", active=False)
        with store.transaction() as conn:
            rb = ov.propose_serving(conn, "rollback", "m", "acc: accuracy", (t0 - 900, t0), {}, clock.t,
                                    cooldown_seconds=0, require_approval=True)
        ov.flush_audit()
        clock.t = t0 + 50
        ov.reject(rb.id, "erin", "the new version is fine")
        doc = export(tmp_path / "audit.jsonl", "m", since=t0, until=t0 + 60)
    cfg = load_config_text_model()
    card = build_card(cfg, t0, t0 + 60, evaluations=[], audit=doc)
    mon = card["monitoring"]
    (alert,) = mon["alerts"]
    assert [(s["by"], s["reason"], s["until"]) for s in alert["silences"]] == [("bob", "known outage", t0 + 3600)]
    assert [(s["by"], s["rule"], s["until"]) for s in mon["silences"]] == [("bob", "acc", t0 + 7200)]
    assert [(o["by"], o["active"], o["why"]) for o in mon["overrides"]] == \
        [("dana", True, "manual review this week"), ("dana", False, "done")]
    kinds = [(r["kind"], r["id"], [(e["event"], e["by"], e["reason"]) for e in r["events"]]) for r in mon["requests"]]
    assert kinds == [("retrain", None, [("suppressed", None, "overridden")]),
                     ("rollback", rb.id, [("proposed", None, None),
                                          ("rejected", "erin", "the new version is fine")])]
    assert mon["requests"][1]["events"][1]["time"].startswith(_iso_prefix(t0 + 50))
    md = write_card(card, tmp_path / "cards")[1].read_text()
    assert "| rollback | " + rb.id + " | rejected |" in md and "dana" in md and "maintenance" in md
    store.close()


def load_config_text_model():
    from monitor.config import load_config_text

    return load_config_text('[[models]]\nname = "m"\ntask = "binary"\n').model("m")


def test_cards_config_keys_are_checked():
    from monitor.config import load_config_text

    text = '[[models]]\nname = "m"\ntask = "binary"\n[cards]\nenabled = true\ninterval_hours = 0  # X\ndir = ""\n'
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path="c.toml", env={})
    got = {(e.key, e.line) for e in info.value.errors}
    assert got == {("cards.interval_hours", 6), ("cards.dir", 7)}
    assert "must be greater than 0" in str(info.value) and "must not be empty" in str(info.value)
