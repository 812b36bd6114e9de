"""A model card from the Kafka backend's evidence on a real Apache Kafka: evaluations on the
``<prefix>-evaluations`` topic (committed transactions only; another model sharing the
partition left out), the audit trail on its topic, and ``card.written`` on a chain of the
CLI's own that verifies with the daemon's chains."""

from __future__ import annotations

import io
import json

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from monitor import cli
from monitor.audit_topic import TopicAuditLog, ensure_audit_topic, model_chain, verify_topic
from monitor.cards import build_card, read_evaluations
from monitor.changelog import model_partition
from monitor.config import load_config
from monitor.events import AlertEvent
from monitor.oversight import Oversight
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

pytestmark = pytest.mark.integration

START = 1_700_000_000.0
SINCE, UNTIL = START + 1800.0, START + 3 * 3600.0
PREFIX = "cardtest"
PARTITIONS = 3


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_card_from_the_kafka_backend(kafka, tmp_path, capsys):
    spec = ModelSpec("m", n_numeric=2, n_categorical=1, rate=2.0, label_delay=60.0, sensitive={"sex": ["F", "M"]},
                     changes=[Change("covariate_shift", at=3600.0, feature="num_00", shift=1.0)])
    ref = tmp_path / "m.json"
    reference_profile(spec).save(ref)
    text = (f'[kafka]\nbootstrap_servers = ["{kafka.bootstrap}"]\n'
            f'[state]\nbackend = "kafka"\ntopic_prefix = "{PREFIX}"\nmodel_partitions = {PARTITIONS}\n'
            f'dir = "{(tmp_path / "state").as_posix()}"\n'
            f'[audit]\nread_timeout_seconds = 20.0\n[cards]\ndir = "{(tmp_path / "cards").as_posix()}"\n'
            + config_models_toml(spec, reference=ref.as_posix(), rules=default_rules(0.6, 0.55), pane_seconds=60.0,
                                 window_panes=15, allowed_lateness_seconds=30.0))
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(text)
    config = load_config(cfg_path)
    preds, labels = generate(spec, START, 3.5 * 3600.0, seed=5)
    p, lab = tmp_path / "p.jsonl", tmp_path / "l.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in preds))
    lab.write_text("".join(json.dumps(r) + "\n" for r in labels))
    buf = io.StringIO()
    replay(config, p, lab, buf)
    (tmp_path / "replay.jsonl").write_text(buf.getvalue())
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    evals = [x for x in lines if x["type"] == "evaluation"]
    events = [AlertEvent(**{k: v for k, v in x.items() if k not in ("type", "key")})
              for x in lines if x["type"] == "alert"]

    # the evaluations topic as stage 2 writes it: committed transactions, keyed by model
    topic = f"{PREFIX}-evaluations"
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    part = model_partition("m", PARTITIONS)
    other = next(f"o{i}" for i in range(100) if model_partition(f"o{i}", PARTITIONS) == part)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id="card-test", acks="all")
    producer.init_transactions()
    producer.begin_transaction()
    windows: dict[float, list[dict]] = {}
    for e in evals:  # one record per window, a JSON array, as stage 2 writes them
        windows.setdefault(e["window_end"], []).append(e)
    for recs in windows.values():
        producer.send(topic, key=b"m", value=json.dumps(recs, sort_keys=True).encode(), partition=part)
        acc = [{**e, "model": other, "value": 0.01} for e in recs if e["metric"] == "accuracy"]
        if acc:  # another model on the same partition
            producer.send(topic, key=other.encode(), value=json.dumps(acc).encode(), partition=part)
    producer.commit_transaction()
    producer.begin_transaction()  # an aborted checkpoint judged nothing
    producer.send(topic, key=b"m", value=json.dumps({**evals[-1], "window_end": SINCE + 7.0, "metric": "accuracy",
                                                     "value": 999.0}).encode(), partition=part)
    producer.flush()
    producer.abort_transaction()
    producer.close()

    # the audit trail on its topic: transitions and an acknowledgement on the model's chain
    settings = {"bootstrap_servers": [kafka.bootstrap]}
    audit_topic = f"{PREFIX}-audit"
    ensure_audit_topic(settings, audit_topic, 1, 1)
    store = StateStore(tmp_path / "ov")
    clock = Clock(START)
    with TopicAuditLog.standalone(settings, audit_topic, model_chain("m"), read_timeout_seconds=20.0) as alog:
        ov = Oversight(store, alog, cooldown_seconds=0, min_new_labels=0, clock=clock)
        for ev in events:
            clock.t = ev.window_end + 5
            with store.transaction() as conn:
                ov.record_transitions(conn, [ev])
            ov.flush_audit()
        firing = next(e for e in events if e.state == "firing" and SINCE <= e.window_end < UNTIL - 600)
        clock.t = firing.window_end + 60
        ov.acknowledge(firing.id, "alice", "checking the feed")
    store.close()

    code = cli.main(["card", "m", "--config", str(cfg_path), "--since", "2023-11-14T22:43:20Z",
                     "--until", "2023-11-15T01:13:20Z"])
    out = capsys.readouterr()
    assert code == 0, out.err
    (card_path,) = (tmp_path / "cards").glob("*.json")
    card = json.loads(card_path.read_text())
    assert card["sources"]["evaluations"] == f"kafka:{topic}"
    # the same numbers as the replay's records of the period
    want = build_card(config.model("m"), SINCE, UNTIL, audit={"entries": []},
                      evaluations=read_evaluations(tmp_path / "replay.jsonl", "m", SINCE, UNTIL))
    assert card["quantitative_analyses"] == json.loads(json.dumps(want["quantitative_analyses"]))
    assert card["metrics"]["performance"] == json.loads(json.dumps(want["metrics"]["performance"]))
    assert card["evaluation_data"]["evaluation_records"] == sum(SINCE <= e["window_end"] < UNTIL for e in evals)
    # neither the aborted record (999) nor the other model's (0.01) reached the card
    acc = next(s for s in card["metrics"]["performance"] if s["metric"] == "accuracy")
    assert 0.5 < acc["min"] <= acc["max"] <= 1.0
    alert = next(a for a in card["monitoring"]["alerts"] if a["id"] == firing.id)
    assert [(a["by"], a["reason"]) for a in alert["acknowledgements"]] == [("alice", "checking the feed")]
    assert card["monitoring"]["audit"]["verified"] is True
    # card.written on the CLI's own chain; every chain verifies
    results = verify_topic(settings, audit_topic, read_timeout_seconds=20.0)
    assert all(r.ok for r in results.values()), results
    card_chains = [c for c in results if c.startswith("instance/card-")]
    assert len(card_chains) == 1 and model_chain("m") in results
    from monitor.audit_topic import export_topic

    doc = export_topic(settings, audit_topic, "m", read_timeout_seconds=20.0)
    written = [e for e in doc["entries"] if e["kind"] == "card.written"]
    assert len(written) == 1 and written[0]["data"]["sha256"] == card["sha256"]
    assert written[0]["chain"] == card_chains[0]
