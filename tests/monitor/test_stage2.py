"""Stage 2 over the panes topic (``state.backend = "kafka"``), without a broker.

The same partitioned stream goes through the one-process pipeline and through stage 1 with
its sealed panes carried as panes-topic records (:func:`pane_message` bytes, sources
interleaved at random as a shared topic would, each source in its own order) into a
:class:`ModelStage` that is serialised and restored half-way, as on a hand-over. One source
is merged directly (as a process owning both the source and the model does; it publishes
no records then), and the new owner re-reads records from before its snapshot, which must
be skipped by seq. Both must give the same evaluations and alert transitions.
"""

from __future__ import annotations

import math
import random
import zlib

import orjson
import pytest

from monitor.changelog import InternalTopics, SnapshotWriter, model_partition
from monitor.decode import RecordDecoder
from monitor.ingest import ingest
from monitor.kstate import _pane_chunks
from monitor.pipeline import Output, Pipeline
from monitor.profiles import load_profiles
from monitor.stage2 import ModelStage, encode_pane, pane_headers, pane_message
from monitor.synth import Change, ModelSpec

from .conftest import build_case

PARTITIONS = 3


def _batches(rows: list[dict], size: int = 400):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _feed(config, preds, labels, step):
    """Route records by prediction id to PARTITIONS partitions, in time-ordered chunks; call
    ``step(pipeline_input)`` for each chunk with (kind, partition, values)."""
    rows = sorted([(r["timestamp"], 0, r) for r in preds] + [(r["timestamp"], 1, r) for r in labels],
                  key=lambda x: (x[0], x[1]))
    for chunk in _batches(rows):
        for kind in (0, 1):
            for p in range(PARTITIONS):
                vals = [orjson.dumps(r) for _, k, r in chunk
                        if k == kind and zlib.crc32(r["prediction_id"].encode()) % PARTITIONS == p]
                if vals:
                    step(("predictions", "labels")[kind], p, vals)
        yield


def _keyed(out: Output) -> tuple[dict, list]:
    evals = {(e.model, e.window_end, e.metric, e.scope): e.record() for e in out.evaluations}
    return evals, sorted(t.key for t in out.transitions)


@pytest.fixture
def case(tmp_path):
    spec = ModelSpec("m", n_numeric=4, n_categorical=2, rate=6.0, label_delay=45.0, sensitive={"sex": ["F", "M"]},
                     changes=[Change("covariate_shift", 40 * 60.0, feature="num_01", shift=0.8),
                              Change("accuracy_drop", 70 * 60.0, flip=0.4)])
    config, _, _, _, preds, labels = build_case(tmp_path, spec, hours=2.0, seed=4, window_panes=5)
    return config, preds, labels


def test_stage2_over_pane_records_equals_the_one_process_pipeline(case):
    config, preds, labels = case
    profiles = load_profiles(config)
    decoder = RecordDecoder(config.fields, config.models)

    one = Pipeline(config, profiles)
    for _ in _feed(config, preds, labels, lambda kind, p, vals: ingest(one, decoder, kind, p, vals)):
        one.advance()
    expected = _keyed(one.drain())

    s1 = Pipeline(config, profiles, stage2=False)
    stage = ModelStage(config, profiles)
    stage.own("m", None)
    rng = random.Random(7)
    produced = Output()
    restored_once = False
    seqs = dict.fromkeys(range(PARTITIONS), 0)
    history: list[list] = []  # each step's records, per source
    skipped = 0
    local = 0  # this source's panes are merged directly, as by a process owning it and the model
    for steps, _ in enumerate(_feed(config, preds, labels, lambda kind, p, vals: ingest(s1, decoder, kind, p, vals)),
                              start=1):
        s1.advance()
        sealed = s1.take_sealed()
        queues = []
        m = s1.models[0]
        for p in range(PARTITIONS):
            status = s1.progress(m.index, p)
            if p not in s1.partitions:
                status = (-math.inf, True)  # no data yet: holds stage 2 back (monitor.kstate)
            panes = sorted(sealed.get((m.index, p), []), key=lambda x: x.start)
            entries = [[x.start, encode_pane(x)] for x in panes]  # encoded before the stage takes them
            msgs = []
            if p == local:  # merged directly: the model's snapshot holds them, no record
                stage.merge_local("m", p, panes, PARTITIONS)
                stage.set_progress("m", p, *status)
            else:
                for chunk, chunk_sealed in _pane_chunks(entries, status[0], 20_000):
                    seqs[p] += 1
                    msgs.append((pane_message("m", p, PARTITIONS, chunk, chunk_sealed, status[1], seqs[p]),
                                 pane_headers(p, seqs[p])))
            queues.append(msgs)
        history.append([list(q) for q in queues])
        # a shared topic interleaves the sources; each keeps its own order
        while any(queues):
            q = rng.choice([q for q in queues if q])
            value, headers = q.pop(0)
            if stage.accept(value, "test", headers, b"m") is None:
                skipped += 1
        out = stage.advance()
        produced.evaluations += out.evaluations
        produced.transitions += out.transitions
        if steps == 40 and not restored_once:
            # a hand-over: the next owner restores the snapshot, and reads from an older
            # panes offset (three steps back): those records were merged, and are skipped
            data = stage.to_bytes("m")
            stage.drain()
            stage = ModelStage(config, profiles)
            stage.own("m", data)
            re_read = [r for step in history[-3:] for q in step for r in q]
            assert len(re_read) > 3
            for value, headers in re_read:
                assert stage.accept(value, "test", headers, b"m") is None
                skipped += 1
            restored_once = True
    assert restored_once
    assert skipped == len(re_read)  # in the stream itself every record was new
    got = _keyed(produced)
    # both evaluate every pane that all partitions sealed (neither flushes the open tail)
    assert got[0].keys() == expected[0].keys() and len({k[1] for k in got[0]}) >= 100
    for k in expected[0]:
        assert got[0][k] == expected[0][k], k
    assert got[1] == expected[1] and len(got[1]) >= 2, got[1]


def test_release_drops_the_output_of_a_model_given_up(case):
    config, preds, labels = case
    profiles = load_profiles(config)
    stage = ModelStage(config, profiles)
    stage.own("m", None)
    from monitor.policy import Evaluation

    stage.out.evaluations.append(Evaluation("m", "psi", "num_00", 0.1, 0.0, 60.0, 10))
    stage.release("m")
    assert stage.out.evaluations == [] and "m" not in stage.runtimes


def test_pane_records_split_promise_only_what_they_hold():
    entries = [[s, b"%d" % s + b"x" * 900] for s in (0, 60, 120, 180)]
    chunks = list(_pane_chunks(entries, 240.0, 2000))
    assert [[b[:3] for b in c] for c, _ in chunks] == [[b"0xx", b"60x"], [b"120", b"180"]]
    # the first record promises only up to the next one's first pane
    assert [s for _, s in chunks] == [120, 240.0]
    assert list(_pane_chunks([], 300.0, 2000)) == [([], 300.0)]


def test_a_panes_record_is_skipped_by_seq_without_being_decoded(case):
    config, _, _ = case
    stage = ModelStage(config, load_profiles(config))
    stage.own("m", None)
    assert stage.accept(pane_message("m", 1, 2, [], 60.0, True, seq=1), "t", pane_headers(1, 1), b"m") == "m"
    assert stage.sources["m"][1] == (60.0, True, 1)
    # the same seq again: skipped on its headers alone (these bytes are not a record at all)
    assert stage.accept(b"\xc1 not msgpack", "t", pane_headers(1, 1), b"m") is None
    # a version-1 record (no seq) is merged whatever came before
    assert stage.accept(pane_message("m", 0, 2, [], 120.0, False, seq=0), "t") == "m"
    with pytest.raises(ValueError, match=r"t: panes of model 'other'"):
        stage.accept(b"", "t", pane_headers(0, 5), b"other")


def test_snapshot_writer_chunks_and_tombstones_shorter_snapshots():
    sent = []
    w = SnapshotWriter(lambda topic, key, partition, value: sent.append((key, partition, value)), "t", 1024)
    w.write("partition/2", 2, b"a" * 2500, "c1", {"offsets": {"x": 5}})
    assert [k for k, _, _ in sent] == [b"partition/2/0", b"partition/2/1", b"partition/2/2", b"partition/2"]
    sent.clear()
    w.write("partition/2", 2, b"b" * 10, "c2", {})
    assert [(k, v is None) for k, _, v in sent] == [(b"partition/2/0", False), (b"partition/2/1", True),
                                                     (b"partition/2/2", True), (b"partition/2", False)]
    assert {p for _, p, _ in sent} == {2}


def test_internal_topics_and_model_partition_are_stable():
    t = InternalTopics("g")
    specs = t.specs(6, 4)
    assert specs[t.partition_changelog] == (6, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                                                  "segment.ms": "3600000"})
    assert specs[t.panes][0] == specs[t.model_changelog][0] == specs[t.transitions][0] == 4
    # CRC-32 of the name: the same on every replica, run and version (Python's str hash is
    # salted per process and would move models between owners); literals pin it
    assert [model_partition(n, 6) for n in ("credit-risk", "churn", "m")] == [1, 0, 2]
    assert {model_partition(f"m{i}", 4) for i in range(40)} == {0, 1, 2, 3}
