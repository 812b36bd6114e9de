"""``driftline run`` as a process against a real broker (the ``broker`` fixture: the embedded
Tansu broker, and Apache Kafka 4.x in KRaft mode, required under CI=true).

Each test produces a synthetic stream (monitor.synth; its event time is fixed and
independent of wall time) to its own topics, runs the monitor as a subprocess on a config
written into ``tmp_path`` (short group timeouts, HTTP on port 0, state in ``tmp_path``)
and waits on conditions with deadlines: "the checkpointed offsets reached the end of the
input" is the signal that every evaluation those records produced is in the state
database, because offsets and evaluations are written in one transaction.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.synth import Change

from .daemon_harness import (
    PANE,
    START,
    Daemon,
    Producer,
    Topics,
    caught_up,
    config_text,
    create_topics,
    evaluation_differences,
    evaluations,
    make_case,
    read_topic,
    servers,
    stored_offsets,
    wait_until,
    write_jsonl,
)

pytestmark = pytest.mark.integration


def _setup(broker, tmp_path: Path, case, name: str, partitions: int = 1, state: str = "state", **cfg):
    bootstrap = servers(broker)
    topics = Topics.unique(name)
    create_topics(bootstrap, topics.all(), partitions)
    state_dir = tmp_path / state
    path = tmp_path / f"{state}.toml"
    path.write_text(config_text(case, bootstrap=bootstrap, topics=topics, group_id=f"{name}-{time.time_ns()}",
                                state_dir=state_dir, **cfg))
    return bootstrap, topics, state_dir, path


def _inputs(prod: Producer, topics: Topics) -> dict[tuple[str, int], int]:
    return {k: v for k, v in prod.ends.items() if k[0] in (topics.predictions, topics.labels)}


def _no_crash(d: Daemon) -> None:
    assert "Traceback" not in d.text(), d.text()[-6000:]


# -- 1. end to end ---------------------------------------------------------------------------------
def test_end_to_end_alert_on_the_alerts_topic_health_and_graceful_stop(broker, tmp_path):
    """Produced records -> the matching CloudEvent on the alerts topic; /metrics, /livez and
    /readyz answer; SIGTERM exits 0 after a final checkpoint at the end of the input."""
    shift_at = 8 * 60.0
    case = make_case(tmp_path, minutes=20, rate=3.0, seed=11, label_share=0.5,
                     changes=[Change("covariate_shift", shift_at, feature="num_02", shift=1.0)])
    bootstrap, topics, state_dir, cfg = _setup(broker, tmp_path, case, "e2e")
    prod = Producer(bootstrap)
    prod.send(topics.predictions, case.preds)
    prod.send(topics.labels, case.labels)
    prod.close()
    ends = _inputs(prod, topics)

    d = Daemon(cfg, tmp_path / "driftline.log").start()
    try:
        d.wait_http()
        assert d.get("/livez")[0] in (200, 503)  # alive once the first poll returned
        d.wait_assigned(2)  # predictions[0] and labels[0]; /readyz 200
        wait_until(lambda: d.get("/livez")[0] == 200, 30, "/livez 200")
        status, body = d.get("/readyz")
        assert status == 200 and "assigned" in body

        def firing(records) -> list[dict]:
            out = []
            for r in records:
                ev = json.loads(r.value)
                if ev["type"] == "io.driftline.alert.firing" and ev["data"]["rule"] == "feature-drift":
                    out.append(ev)
            return out

        records = read_topic(bootstrap, topics.alerts, lambda rs: firing(rs), timeout=90)
        fired = firing(records)
        assert {ev["data"]["scope"] for ev in fired} == {"num_02"}, fired
        ev = fired[0]
        assert ev["specversion"] == "1.0" and ev["source"] == "driftline/m" and ev["subject"] == "feature-drift/num_02"
        assert ev["data"]["metric"] == "psi" and ev["data"]["value"] >= 0.25
        # it fired on a window that holds shifted data, within two windows of the change
        assert START + shift_at < ev["data"]["window_end"] <= START + shift_at + 2 * 5 * PANE
        headers = dict(records[0].headers)
        assert headers["content-type"].startswith(b"application/cloudevents+json")

        wait_until(lambda: caught_up(state_dir, ends), 90, "the monitor to consume the whole input")
        assert d.metric("driftline_consumer_records_total") == sum(ends.values())
        assert d.metric("driftline_window_panes_closed_total", model="m") > 10
        assert d.metric("driftline_evaluation_value", model="m", metric="psi", scope="num_02") > 0
        assert d.metric("driftline_alert_transitions_total", rule="feature-drift", state="firing") >= 1

        d_fired = int(d.metric("driftline_alert_transitions_total", rule="feature-drift", state="firing"))
        t_stop = time.time()
        assert d.terminate() == 0
        _no_crash(d)
        assert stored_offsets(state_dir) == ends
        # each transition logged once (not on every poll until the next checkpoint)
        logged = [x for x in d.text().splitlines() if "ALERT FIRING m/feature-drift" in x]
        assert len(logged) == d_fired, logged
        conn = sqlite3.connect(state_dir / "driftline.db")
        (last,) = conn.execute("SELECT max(updated_at) FROM blobs").fetchone()
        conn.close()
        assert last >= t_stop, "no checkpoint after SIGTERM"
    finally:
        d.stop_quietly()


# -- 2. poison records -----------------------------------------------------------------------------
@pytest.mark.parametrize("fetch_process", [True, False], ids=["fetch-process", "one-process"])
def test_poison_records_reach_the_dead_letter_topic_and_the_stream_goes_on(broker, tmp_path, fetch_process):
    # both ways of reading Kafka: the fetch process (default) and kafka.fetch_process = false
    case = make_case(tmp_path, minutes=16, rate=3.0, seed=5, label_share=0.5)
    bootstrap, topics, state_dir, cfg = _setup(broker, tmp_path, case, "poison", fetch_process=fetch_process)
    cut = 8 * 60.0
    prod = Producer(bootstrap)
    prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] < START + cut])
    prod.send(topics.labels, [r for r in case.labels if r["timestamp"] < START + cut])
    first = _inputs(prod, topics)

    d = Daemon(cfg, tmp_path / "driftline.log").start()
    try:
        d.wait_http()
        d.wait_assigned(2)
        wait_until(lambda: caught_up(state_dir, first), 90, "the first half to be consumed")
        assert d.metric("driftline_decoder_dead_letters_total") == 0
        evals_before = evaluations(state_dir)
        last_before = max(k[1] for k in evals_before)

        bad_json = b'{"prediction_id": "poison-1", "model": "m", "timestamp": 17'
        bad_type = json.dumps({"prediction_id": "poison-2", "model": "m", "timestamp": START + cut + 1,
                               "features": {"num_00": "high", "num_01": 0.1}, "score": 0.3}).encode()
        p1 = prod.send_raw(topics.predictions, b"poison-1", bad_json)
        p2 = prod.send_raw(topics.predictions, b"poison-2", bad_type)
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] >= START + cut])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] >= START + cut])
        prod.close()
        ends = _inputs(prod, topics)

        dlq = read_topic(bootstrap, topics.dead_letter, lambda rs: len(rs) >= 2, timeout=60)
        assert len(dlq) == 2
        by_key = {r.key: r for r in dlq}
        for key, (part, off), value, why in ((b"poison-1", p1, bad_json, "JSON"),
                                            (b"poison-2", p2, bad_type, "$.features.num_00")):
            rec = by_key[key]
            h = {k: v.decode() for k, v in rec.headers}
            assert rec.value == value
            assert h["driftline.source.topic"] == topics.predictions
            assert (h["driftline.source.partition"], h["driftline.source.offset"]) == (str(part), str(off))
            assert why in h["driftline.error"], h
        # the stream went on: the rest is consumed and later windows are evaluated
        wait_until(lambda: caught_up(state_dir, ends), 90, "the rest of the input to be consumed")
        assert d.metric("driftline_decoder_dead_letters_total") == 2
        assert d.alive()
        after = evaluations(state_dir)
        assert max(k[1] for k in after) >= last_before + 6 * PANE
        assert d.terminate() == 0
        _no_crash(d)
    finally:
        d.stop_quietly()


# -- 3. rebalance ----------------------------------------------------------------------------------
def test_rebalance_between_two_processes_hands_partition_state_over(broker, tmp_path):
    """Two ``driftline run`` processes in one group, topics with 2 partitions, predictions
    and labels keyed by prediction id (so a prediction and its label share the partition
    number that the per-partition join needs).

    What moves on a rebalance, read from monitor/app.py: on revoke a process checkpoints
    (partition state blobs = open panes, join buffer, watermarks; and the offsets they
    belong to) and drops the revoked partitions; on assign it restores a partition's blob
    from *its own* state database and seeks to the offset stored there. Stage 2 (windows,
    detectors, alert policy) is per process and never moves.

    - Separate state dirs: the new owner finds no blob and no offset, so it starts from
      Kafka's committed offset with an empty partition: the old owner's open panes and the
      predictions waiting in its join buffer are lost (their labels wait until the TTL).
    - One shared state dir (this test; SQLite serialises the two writers): the blob and
      offsets written by the old owner's revoke checkpoint are what the new owner restores,
      so stage 1 moves losslessly. Still per process: each evaluates windows of the
      partitions it holds, and the ``evaluations`` table keeps the first writer's row for
      a window both evaluated (INSERT OR IGNORE on (model, window_end, metric, scope)).

    So: while both run, each window row counts one partition's events; after the
    survivor took over, every window counts both partitions' events exactly, including
    the pane that was open at the hand-over and the labels joined to predictions the
    stopped process had read. The first half ends at the same event time on both
    partitions, so their watermarks stand at the same pane when A stops; were the moved
    partition's behind, the survivor's stage 2 would strand its panes
    (tests/monitor/test_stage2_handover.py).
    """
    case = make_case(tmp_path, minutes=20, rate=3.0, seed=7)
    bootstrap, topics, state_dir, cfg = _setup(broker, tmp_path, case, "rebalance", partitions=2, window_panes=1)
    a = Daemon(cfg, tmp_path / "a.log")
    b = Daemon(cfg, tmp_path / "b.log")
    prod = Producer(bootstrap)
    try:
        a.start().wait_http()
        a.wait_assigned(4)
        b.start().wait_http()
        wait_until(lambda: a.metric("driftline_consumer_assigned_partitions") == 2, 60, "A to give up 2 partitions")
        b.wait_assigned(2)
        a.wait_assigned(2)

        split = START + 10 * 60.0
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] < split])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] < split])
        first = _inputs(prod, topics)
        wait_until(lambda: caught_up(state_dir, first), 90, "both processes to consume the first half")
        assert a.metric("driftline_consumer_records_total") > 0
        assert b.metric("driftline_consumer_records_total") > 0

        assert a.terminate() == 0
        b.wait_assigned(4)
        prod.send(topics.predictions, [r for r in case.preds if r["timestamp"] >= split])
        prod.send(topics.labels, [r for r in case.labels if r["timestamp"] >= split])
        ends = _inputs(prod, topics)
        wait_until(lambda: caught_up(state_dir, ends), 90, "the survivor to consume the rest")
        assert b.terminate() == 0
        _no_crash(a)
        _no_crash(b)
    finally:
        prod.close()
        a.stop_quietly()
        b.stop_quietly()

    by_partition = _pane_counts_by_partition(bootstrap, topics, case)
    total = {k: sum(v.values()) for k, v in by_partition.items()}
    rows = evaluations(state_dir)
    cov = {k[1]: r for k, r in rows.items() if k[2] == "label_coverage"}
    ends_seen = sorted(cov)
    assert ends_seen == [ends_seen[0] + PANE * i for i in range(len(ends_seen))], "a window is missing"
    assert ends_seen[0] == min(total) and ends_seen[-1] >= START + 18 * PANE
    handover = max(k for k in ends_seen if k <= split - PANE)  # last pane sealed before A stopped
    shared, alone = 0, 0
    for we in ends_seen:
        n = cov[we]["n"]
        if we <= handover:
            assert n in set(by_partition[we].values()), (we, n, by_partition[we])
            shared += 1
        else:
            assert n == total[we], (we, n, total[we])
            alone += 1
    assert shared >= 5 and alone >= 5
    # joined labels per window after the hand-over: every label found its prediction
    labels_per_pane: dict[float, int] = {}
    for r in case.labels:
        we = (r["timestamp"] // PANE) * PANE + PANE
        labels_per_pane[we] = labels_per_pane.get(we, 0) + 1
    acc = {k[1]: r for k, r in rows.items() if k[2] == "accuracy" and k[3] == "model"}
    for we in ends_seen:
        if we > handover:
            assert acc[we]["n"] == labels_per_pane.get(we, 0), we


def _pane_counts_by_partition(bootstrap, topics: Topics, case) -> dict[float, dict[int, int]]:
    """Predictions per (pane end, partition), read back from the topic."""
    recs = read_topic(bootstrap, topics.predictions, lambda rs: len(rs) >= len(case.preds), timeout=60)
    out: dict[float, dict[int, int]] = {}
    for r in recs:
        we = (json.loads(r.value)["timestamp"] // PANE) * PANE + PANE
        out.setdefault(we, {0: 0, 1: 0})[r.partition] += 1
    return out


# -- 4. kill -9 ------------------------------------------------------------------------------------
def test_kill9_at_random_points_ends_with_the_evaluations_of_an_uninterrupted_run(broker, tmp_path):
    """SIGKILL at >= 5 seeded random points while consuming, restart on the same state dir
    each time: the evaluations table ends exactly equal to an uninterrupted run's (no event
    counted twice or lost), and ``driftline replay`` of the same input agrees on the
    windows both have."""
    # large enough that the monitor (~50-100k records/s here) is still reading at >= 5 kills
    case = make_case(tmp_path, minutes=40, rate=30.0, seed=3,
                     changes=[Change("covariate_shift", 20 * 60.0, feature="num_01", shift=0.7)])
    bootstrap, topics, straight_dir, straight_cfg = _setup(broker, tmp_path, case, "kill-straight",
                                                           checkpoint_seconds=0.2, max_poll_records=200)
    prod = Producer(bootstrap)
    prod.send(topics.predictions, case.preds)
    prod.send(topics.labels, case.labels)
    prod.close()
    ends = _inputs(prod, topics)
    total = sum(ends.values())

    straight = Daemon(straight_cfg, tmp_path / "straight.log").start()
    try:
        straight.wait_http()
        straight.wait_assigned(2)
        t0 = time.monotonic()
        wait_until(lambda: caught_up(straight_dir, ends), 120, "the uninterrupted run to consume the input")
        print(f"uninterrupted run: {total} records in {time.monotonic() - t0:.1f}s after assignment")
        assert straight.terminate() == 0
    finally:
        straight.stop_quietly()
    expected = evaluations(straight_dir)
    assert len({k[1] for k in expected}) >= 20

    # the same topics, a new group and state dir: killed and restarted
    killed_dir = tmp_path / "killed"
    killed_cfg = tmp_path / "killed.toml"
    killed_cfg.write_text(straight_cfg.read_text().replace(str(straight_dir), str(killed_dir))
                          .replace('group_id = "kill-straight', 'group_id = "kill-restarted'))
    rng = random.Random(20240607)
    d = Daemon(killed_cfg, tmp_path / "killed.log")
    kills: list[tuple[float, float]] = []  # (records read in that life, share of the input checkpointed)

    def progress() -> float:
        return sum(stored_offsets(killed_dir).values()) / total

    base_cfg = killed_cfg.read_text()
    try:
        for life in range(25):
            if len(kills) >= 5:
                break
            # Lives 0 and 1 share a group: the restart after a SIGKILL waits out the dead
            # member's session (about 6 s on Kafka, 11 s on Tansu) and resumes from the
            # checkpoint. Later lives join fresh groups only to keep the test short: the
            # offsets come from the state DB either way (seek on assignment).
            group = "" if life < 2 else f"-life{life}"
            killed_cfg.write_text(base_cfg.replace('group_id = "kill-restarted', f'group_id = "kill-restarted{group}'))
            d.start().wait_http()
            d.wait_assigned(2, timeout=90)
            # a random moment once it consumes: mid-batch, mid-checkpoint or in between. Timed
            # from the first record read, not from the assignment: a broker that delivers the
            # first fetch late (Tansu, ~3 s) would otherwise leave only a few lives mid-stream.
            wait_until(lambda: (d.metric("driftline_consumer_records_total") or 0) > 0, 60,
                       "the restarted monitor to read its first records")
            time.sleep(rng.uniform(0.0, 0.05))
            read = d.metric("driftline_consumer_records_total")
            d.kill()
            done = progress()
            if done >= 1.0:
                break
            if read > 0:  # killed while consuming (not before its first batch)
                kills.append((read, done))
        print(f"SIGKILLs (records read in that life, input share checkpointed): {kills}")
        assert len(kills) >= 5, kills
        d.start()
        wait_until(lambda: caught_up(killed_dir, ends), 120, "the restarted run to consume the input")
        assert d.terminate() == 0
    finally:
        d.stop_quietly()
    got = evaluations(killed_dir)
    assert got.keys() == expected.keys()
    diff = evaluation_differences(expected, got)
    assert not diff, diff[:5]

    # replay of the same input: the same records for the windows both have
    p = write_jsonl(tmp_path / "predictions.jsonl", case.preds)
    lab = write_jsonl(tmp_path / "labels.jsonl", case.labels)
    out = tmp_path / "replay.jsonl"
    subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--config", str(straight_cfg),
                    "--predictions", str(p), "--labels", str(lab), "--out", str(out)],
                   check=True, timeout=120, cwd=tmp_path)
    replayed = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "evaluation":
            replayed[(r["model"], r["window_end"], r["metric"], r["scope"])] = r
    common = expected.keys() & replayed.keys()
    assert len(common) >= 0.9 * len(expected)
    diff = evaluation_differences(expected, replayed, keys=common)
    assert not diff, diff[:5]
