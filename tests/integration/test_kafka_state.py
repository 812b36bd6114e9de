"""``state.backend = "kafka"`` against Apache Kafka: several ``driftline run`` processes with
their own empty state directories hand partitions and models over through the changelog
topics, a SIGKILLed one loses nothing, a paused one (a zombie) is fenced, and the model's
evaluations equal ``driftline replay`` of the same records whatever the number of replicas.

The input is keyed by prediction id over 6 partitions, so every replica reads a share of
every model: only stage 2 over the panes topic gives one model one view.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from monitor.changelog import InternalTopics
from monitor.synth import Change

from .daemon_harness import (
    RULES,
    START,
    Daemon,
    Producer,
    Topics,
    config_text,
    create_topics,
    evaluation_differences,
    make_case,
    servers,
    wait_until,
    write_jsonl,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6
ACCURACY_RULE = """
[[models.rules]]
name = "accuracy"
metric = "accuracy"
warn = 0.70
alert = 0.65
min_samples = 300
"""
SECRET = "whsec_" + "a2Fma2Etc3RhdGUtdGVzdC1zZWNyZXQtMzItYnl0ZXM="  # 32 bytes, base64


class Receiver:
    """A webhook receiver on loopback: every POST's ``webhook-id`` and body, in order."""

    def __init__(self):
        self.got: list[tuple[str, dict]] = []
        lock = threading.Lock()
        got = self.got

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    got.append((self.headers.get("webhook-id"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self) -> list[str]:
        return [i for i, _ in self.got]

    def close(self) -> None:
        self.server.shutdown()


def _config(case, bootstrap: str, topics: Topics, group: str, state_dir: Path, receiver: Receiver | None,
            path: Path, checkpoint_seconds: float = 0.5, client_id: str | None = None, **extra) -> Path:
    text = config_text(case, bootstrap=bootstrap, topics=topics, group_id=group, state_dir=state_dir,
                       window_panes=3, checkpoint_seconds=checkpoint_seconds, **extra)
    if client_id is not None:
        text = text.replace("[kafka]\n", f'[kafka]\nclient_id = "{client_id}"\n')
    text = text.replace("[state]\n", '[state]\nbackend = "kafka"\ntransaction_timeout_ms = 6000\n')
    hooks = "[alerting]\ngroup_by_model = false\n"
    if receiver is not None:
        # the secret through the environment, as the config requires (Daemon passes os.environ)
        os.environ["DRIFTLINE_TEST_WEBHOOK_SECRET"] = SECRET
        hooks += (f'[sinks.webhook]\nenabled = true\nurl = "{receiver.url}"\n'
                  'secret = "${DRIFTLINE_TEST_WEBHOOK_SECRET}"\n')
        text = text.replace("[delivery]\n", "[delivery]\nallow_insecure_loopback = true\n")
    path.write_text(text.replace("[audit]\n", hooks + "[audit]\n"))
    return path


def _topic_records(bootstrap: str, topic: str) -> list:
    """Every committed record of a topic (read_committed, to the end offsets at the start)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", auto_offset_reset="earliest",
                      enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning()
        end = c.end_offsets(tps)
        out = []
        deadline = time.monotonic() + 60
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} stalled"
            for recs in c.poll(timeout_ms=300).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def _evaluations(bootstrap: str, topic: str) -> tuple[dict[tuple, dict], int]:
    """(model, window_end, metric, scope) -> record, and how many keys came more than once."""
    out: dict[tuple, dict] = {}
    dup = 0
    for r in _topic_records(bootstrap, topic):
        for e in json.loads(r.value):  # one record per model and window
            k = (e["model"], e["window_end"], e["metric"], e["scope"])
            dup += k in out
            out[k] = e
    return out, dup


def _committed_all(bootstrap: str, group: str, ends: dict[TopicPartition, int]) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        got = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return all(ends[tp] == 0 or (tp in got and got[tp].offset >= ends[tp]) for tp in ends)


def _ends(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or ())]
        return c.end_offsets(tps)
    finally:
        c.close()


def _settled(bootstrap: str, group: str, inputs: list[str], internal: InternalTopics) -> bool:
    """Every input record and every published pane is consumed and committed, and every
    alert transition's notifications reached a final state (the delivery offsets, which
    move only then, are at the end of the transitions topic)."""
    if not _committed_all(bootstrap, group, _ends(bootstrap, inputs)):
        return False
    return _committed_all(bootstrap, f"{group}-models", _ends(bootstrap, [internal.panes, internal.transitions]))


def _replay(cfg: Path, case, tmp: Path) -> tuple[dict[tuple, dict], list[dict]]:
    import subprocess

    p = write_jsonl(tmp / "predictions.jsonl", case.preds)
    lab = write_jsonl(tmp / "labels.jsonl", case.labels)
    out = tmp / "replay.jsonl"
    subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--config", str(cfg), "--predictions", str(p),
                    "--labels", str(lab), "--out", str(out)], check=True, timeout=300, cwd=tmp)
    evals, alerts = {}, []
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "evaluation":
            evals[(r["model"], r["window_end"], r["metric"], r["scope"])] = r
        elif r["type"] == "alert":
            alerts.append(r)
    return evals, alerts


def _check_against_replay(got: dict, replayed: dict) -> None:
    ends = sorted({k[1] for k in got})
    assert len(ends) >= 10, f"only {len(ends)} windows evaluated"
    # every window replay has up to the last one the monitor reached, and only those
    want = {k for k in replayed if k[1] <= ends[-1]}
    missing = sorted({k[1] for k in want - got.keys()})
    assert got.keys() == want, (f"windows missing (some or all metrics): {missing}",
                                sorted(want - got.keys())[:5], sorted(got.keys() - want)[:5])
    diff = evaluation_differences(replayed, got, keys=want, rel=1e-9)
    assert not diff, diff[:5]


def _evaluations_equal_replay(bootstrap: str, internal: InternalTopics, cfg: Path, case,
                              tmp: Path) -> tuple[dict[tuple, dict], list[dict]]:
    """The evaluations topic holds replay's windows, none twice; returns them and replay's alerts."""
    got, dup = _evaluations(bootstrap, internal.evaluations)
    assert dup == 0, f"{dup} evaluations were written twice"
    replayed, alerts = _replay(cfg, case, tmp)
    _check_against_replay(got, replayed)
    return got, alerts


def _two_halves_case(bootstrap: str, tmp: Path, name: str, seed: int):
    """24 minutes of records, fresh 6-partition topics and group: (case, topics, group, internal)."""
    case = make_case(tmp, minutes=24, rate=12.0, seed=seed)
    topics = Topics.unique(name)
    create_topics(bootstrap, topics.all(), PARTITIONS)
    group = f"{name}-{time.time_ns()}"
    return case, topics, group, InternalTopics(group)


def _no_traceback(d: Daemon) -> None:
    assert "Traceback" not in d.text(), d.text()[-4000:]


def test_three_replicas_kill9_new_member_scale_down_equal_replay_and_deliver_once(kafka, tmp_path):
    """Three processes with empty state directories; SIGKILL one at a random point while it
    consumes; start a new one with an empty directory; stop one (scale to two). The
    evaluations on the evaluations topic equal replay's exactly (no window twice, none
    missing), and each alert transition reaches the webhook receiver once by its webhook-id
    (at most the killed member's in-flight one twice, with the same id and body)."""
    bootstrap = servers(kafka)
    rng = random.Random(90210)
    case = make_case(tmp_path, minutes=36, rate=12.0, seed=5,
                     changes=[Change("covariate_shift", 10 * 60.0, feature="num_01", shift=0.9),
                              Change("accuracy_drop", 22 * 60.0, flip=0.4)])
    case.rules = RULES + ACCURACY_RULE
    topics = Topics.unique("kstate")
    create_topics(bootstrap, topics.all(), PARTITIONS)
    group = f"kstate-{time.time_ns()}"
    internal = InternalTopics(group)
    receiver = Receiver()
    cfgs = [_config(case, bootstrap, topics, group, tmp_path / f"state-{n}", receiver, tmp_path / f"{n}.toml")
            for n in "abcd"]
    procs = {n: Daemon(cfg, tmp_path / f"{n}.log") for n, cfg in zip("abcd", cfgs, strict=True)}
    prod = Producer(bootstrap)
    thirds = [START + 12 * 60.0 * i for i in range(4)]

    def send(i: int) -> None:
        lo, hi = thirds[i], thirds[i + 1] if i < 2 else float("inf")
        prod.send(topics.predictions, [r for r in case.preds if lo <= r["timestamp"] < hi])
        prod.send(topics.labels, [r for r in case.labels if lo <= r["timestamp"] < hi])

    try:
        send(0)
        for n in "abc":
            procs[n].start()
        for n in "abc":
            procs[n].wait_http(90)
        wait_until(lambda: sum(procs[n].metric("driftline_consumer_assigned_partitions") for n in "abc")
                   == 2 * PARTITIONS and all(procs[n].metric("driftline_consumer_assigned_partitions") > 0
                                             for n in "abc"), 120, "three members sharing 12 input partitions")
        send(1)
        victim = rng.choice("abc")
        wait_until(lambda: procs[victim].metric("driftline_consumer_records_total") > 0, 60, "the victim to read")
        time.sleep(rng.uniform(0.0, 1.0))
        procs[victim].kill()
        procs["d"].start().wait_http(90)
        survivors = [n for n in "abc" if n != victim] + ["d"]
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "the group to take the killed member's partitions over and catch up")
        leaving = rng.choice(survivors[:-1])
        send(2)
        time.sleep(rng.uniform(0.5, 2.0))
        assert procs[leaving].terminate() == 0
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "the two remaining members to consume everything")
        staying = [n for n in survivors if n != leaving]
        for n in staying:
            assert procs[n].terminate() == 0
        for n in [*staying, leaving]:
            _no_traceback(procs[n])
    finally:
        prod.close()
        for d in procs.values():
            d.stop_quietly()
        receiver.close()

    got, alerts = _evaluations_equal_replay(bootstrap, internal, cfgs[0], case, tmp_path)

    last = max(k[1] for k in got)
    want = sorted(a["key"] for a in alerts if a["window_end"] <= last)
    assert want, "the covariate shift fired no alert"
    ids = receiver.ids()
    assert len(want) >= 2, want
    # Once per episode as a Standard Webhooks receiver sees it: it processes each webhook-id
    # (the idempotency key) once. The one repeat allowed is the killed member's: a process
    # lost between a POST and the commit of its delivery offset leaves its next owner to
    # send that notification again, with the same id and body; an HTTP receiver cannot be
    # told otherwise (README, "State in Kafka").
    assert sorted(set(ids)) == want, (sorted(set(ids) ^ set(want))[:5], len(ids), len(want))
    repeats = [i for i in set(ids) if ids.count(i) > 1]
    assert len(ids) - len(set(ids)) <= 1, f"notifications sent more than once: {repeats}"
    for i in repeats:
        assert len({json.dumps(body, sort_keys=True) for k, body in receiver.got if k == i}) == 1, i
    # the audit trail lives on its topic (one chain per process); every chain verifies and
    # every delivered transition is in it
    import subprocess

    res = subprocess.run([sys.executable, "-m", "monitor.cli", "audit", "verify", "--config", str(cfgs[0])],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    audited = {json.loads(r.value)["data"].get("key") for r in _topic_records(bootstrap, f"{group}-audit")
               if json.loads(r.value)["kind"] == "notification.delivered"}
    assert set(want) <= audited, sorted(set(want) - audited)[:5]
    print(f"{len(got)} evaluations over {len({k[1] for k in got})} windows equal replay's; "
          f"{len(ids)} alert transitions delivered once each")


def test_a_paused_member_whose_partitions_moved_is_fenced(kafka, tmp_path):
    """SIGSTOP a member past its session: the group gives its partitions to another; after
    SIGCONT its next checkpoint fails (its transaction's offsets carry a stale generation),
    none of its writes become visible, and it stops. The survivor's evaluations still equal
    replay's, with no window written twice."""
    bootstrap = servers(kafka)
    case, topics, group, internal = _two_halves_case(bootstrap, tmp_path, "zombie", seed=9)
    cfg_a = _config(case, bootstrap, topics, group, tmp_path / "state-a", None, tmp_path / "a.toml")
    cfg_b = _config(case, bootstrap, topics, group, tmp_path / "state-b", None, tmp_path / "b.toml")
    a, b = Daemon(cfg_a, tmp_path / "a.log"), Daemon(cfg_b, tmp_path / "b.log")
    prod = Producer(bootstrap)
    half = START + 12 * 60.0
    try:
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] < half])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] < half])
        a.start().wait_http(90)
        a.wait_assigned(2 * PARTITIONS, timeout=90)
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 120,
                   "the first member to consume the first half")
        a.proc.send_signal(signal.SIGSTOP)
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] >= half])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] >= half])
        b.start().wait_http(90)
        b.wait_assigned(2 * PARTITIONS, timeout=120)  # after A's 6 s session ran out
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "the new member to consume the second half")
        a.proc.send_signal(signal.SIGCONT)
        code = a.proc.wait(timeout=120)
        assert code != 0, "the zombie went on as if it still owned its partitions"
        log = a.text()
        assert "checkpoint transaction" in log and "stopping so that a restart restores it" in log, log[-3000:]
        assert b.terminate() == 0
        _no_traceback(b)
    finally:
        prod.close()
        a.stop_quietly()
        b.stop_quietly()
    _evaluations_equal_replay(bootstrap, internal, cfg_b, case, tmp_path)


def test_a_model_owner_losing_an_input_partition_before_its_checkpoint_rolls_the_model_back(kafka, tmp_path):
    """A process owning the model merges its own partitions' panes directly and evaluates
    them before its checkpoint commits them. When it loses input partitions but keeps the
    model (here a plain consumer joins the input group only, so the models group does not
    rebalance), the panes of the partitions it gave up were never committed: it rolls the
    model back to its last commit and re-reads its panes. When the partitions come back it
    restores them and reads them again. The evaluations still equal replay's, with no
    window written twice."""
    bootstrap = servers(kafka)
    case, topics, group, internal = _two_halves_case(bootstrap, tmp_path, "rollback", seed=13)
    # the first checkpoint comes well after the first half's windows and the rebalance
    cfg = _config(case, bootstrap, topics, group, tmp_path / "state-a", None, tmp_path / "a.toml",
                  checkpoint_seconds=30.0)
    a = Daemon(cfg, tmp_path / "a.log")
    prod = Producer(bootstrap)
    half = START + 12 * 60.0
    stop = threading.Event()

    def intruder() -> None:
        c = KafkaConsumer(topics.predictions, topics.labels, bootstrap_servers=bootstrap, group_id=group,
                          enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000)
        try:
            while not stop.is_set():
                c.poll(timeout_ms=200)
        finally:
            c.close(autocommit=False)

    thread = threading.Thread(target=intruder, daemon=True)
    try:
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] < half])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] < half])
        a.start().wait_http(90)
        wait_until(lambda: a.metric("driftline_window_panes_closed_total") >= 5, 60,
                   "the member to evaluate windows from its own partitions' panes")
        thread.start()
        wait_until(lambda: "rolled back to its last commit" in a.text(), 60, "the model's owner to roll it back")
        stop.set()
        thread.join(30)
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] >= half])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] >= half])
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "the member to take every partition back and consume everything")
        assert a.terminate() == 0
        _no_traceback(a)
    finally:
        stop.set()
        prod.close()
        a.stop_quietly()
    _evaluations_equal_replay(bootstrap, internal, cfg, case, tmp_path)


def test_the_embedded_broker_runs_the_sqlite_backend_and_refuses_the_kafka_one(tansu, tmp_path):
    """Tansu (`driftline demo`'s broker) has transactions but no DescribeConfigs, so the
    monitor cannot check that its changelog is compacted and its audit topic kept forever:
    `driftline run` with state.backend = "kafka" stops at once and says why (the demo and
    the daemon tests on Tansu use the SQLite backend)."""
    bootstrap = servers(tansu)
    case = make_case(tmp_path, minutes=3, rate=2.0, seed=1)
    topics = Topics.unique("tansu-kstate")
    create_topics(bootstrap, topics.all(), 2)
    cfg = _config(case, bootstrap, topics, f"tansu-{time.time_ns()}", tmp_path / "state", None, tmp_path / "c.toml")
    d = Daemon(cfg, tmp_path / "d.log").start()
    try:
        assert d.proc.wait(timeout=120) == 1
    finally:
        d.stop_quietly()
    log = d.text()
    assert 'state.backend = "kafka" needs Apache Kafka' in log and "DescribeConfigs" in log, log[-3000:]
    assert "Traceback" not in log


def _api(d: Daemon, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    import urllib.request

    req = urllib.request.Request(d.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {os.environ['DRIFTLINE_TEST_API_TOKEN']}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_an_acknowledgement_through_any_replica_reaches_the_owner_and_survives_it(kafka, tmp_path):
    """Two replicas; an alert fires on the model's owner; a person acknowledges it through
    the *other* replica's API (202: a command on the commands topic); the owner applies it.
    Then the owner is killed: the survivor takes the model over, rebuilds its alerts from
    the transitions topic, applies the same command, and shows the alert acknowledged."""
    bootstrap = servers(kafka)
    case = make_case(tmp_path, minutes=20, rate=8.0, seed=2,
                     changes=[Change("covariate_shift", 6 * 60.0, feature="num_01", shift=1.0)])
    topics = Topics.unique("commands")
    create_topics(bootstrap, topics.all(), 2)
    group = f"commands-{time.time_ns()}"
    internal = InternalTopics(group)
    os.environ["DRIFTLINE_TEST_API_TOKEN"] = "t0ken-for-the-commands-test"
    procs = {}
    for n in "ab":
        cfg = _config(case, bootstrap, topics, group, tmp_path / f"state-{n}", None, tmp_path / f"{n}.toml")
        cfg.write_text(cfg.read_text().replace("[http]\n", '[http]\napi_token = "${DRIFTLINE_TEST_API_TOKEN}"\n'))
        procs[n] = Daemon(cfg, tmp_path / f"{n}.log")
    prod = Producer(bootstrap)
    try:
        for d in procs.values():
            d.start()
        for d in procs.values():
            d.wait_http(90)
        prod.send(topics.predictions, case.preds)
        prod.send(topics.labels, case.labels)
        wait_until(lambda: _settled(bootstrap, group, [topics.predictions, topics.labels], internal), 180,
                   "both replicas to consume everything")

        def owner():
            for n, d in procs.items():
                if any(m["name"] == "m" for m in _api(d, "GET", "/api/models")[1].get("models", [])):
                    alerts = _api(d, "GET", "/api/alerts?model=m")[1]["alerts"]
                    if alerts:
                        return n, alerts
            return None

        own, alerts = wait_until(owner, 60, "the owner to list the fired alert")
        other = next(n for n in procs if n != own)
        alert = next(a for a in alerts if a["state"] == "firing")
        # the other replica does not hold the alert, yet accepts the acknowledgement
        assert _api(procs[other], "GET", f"/api/alerts/{alert['id']}")[0] == 404
        status, body = _api(procs[other], "POST", f"/api/alerts/{alert['id']}/ack",
                            {"who": "alice", "reason": "known shift"})
        assert status == 202 and body["status"] == "accepted", body
        assert _api(procs[other], "POST", f"/api/alerts/{alert['id']}/ack", {"who": ""})[0] == 400

        def acked(d):
            st, a = _api(d, "GET", f"/api/alerts/{alert['id']}")
            return st == 200 and (a.get("acknowledged") or {}).get("by") == "alice" and a

        wait_until(lambda: acked(procs[own]), 30, "the owner to apply the acknowledgement")
        procs[own].kill()
        wait_until(lambda: acked(procs[other]), 120, "the survivor to take the model over and apply it")
        assert procs[other].terminate() == 0
        _no_traceback(procs[other])
    finally:
        prod.close()
        for d in procs.values():
            d.stop_quietly()
