"""Determinism under checkpoints and topic interleaving: failures found by the daemon
integration tests (tests/integration/test_daemon.py), reduced to the unit that is wrong.

A Kafka run checkpoints open panes every few seconds and reads the predictions and labels
topics in whatever chunks the fetcher returns; monitor.pipeline promises the evaluations
do not depend on either.
"""

from __future__ import annotations

import io
import json

import numpy as np
import orjson

from monitor.decode import RecordDecoder
from monitor.ingest import ingest
from monitor.panes import Layout, Pane
from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles
from monitor.replay import replay, write_output

from .conftest import build_case, write_jsonl


def _layout() -> Layout:
    return Layout(model="m", task="binary", n_classes=2, numeric=["x"], numeric_edges=[np.array([-1.0, 0.0, 1.0])],
                  categorical=[], vocabularies=[], sensitive=[], groups=[])


def _outcome(p: Pane, key: int, label_ts: float, predicted: int, label: int) -> None:
    p.add_outcomes(np.array([key], dtype=np.uint64), np.array([label_ts]), np.array([label_ts - 5.0]),
                   np.array([0.5]), np.array([predicted]), np.array([label]), [])


def test_checkpointing_an_open_pane_keeps_the_error_order_of_an_uninterrupted_run():
    """Pane.to_dict() seals the open pane: outcomes that arrive after a checkpoint are sorted
    on their own and appended, instead of by (label time, id) with the earlier ones. A label
    that waited for its prediction joins late in processing order, so this happens in a
    Kafka run whenever a checkpoint falls between the two; the sequential detectors
    (``pane.errors``) then see another order than in a run without that checkpoint."""
    straight = Pane(_layout(), 0.0)
    _outcome(straight, 1, 30.0, 1, 0)  # error
    _outcome(straight, 2, 20.0, 1, 1)  # correct, earlier label time, joined later
    straight.seal()

    before = Pane(_layout(), 0.0)
    _outcome(before, 1, 30.0, 1, 0)
    resumed = Pane.from_dict(_layout(), json.loads(json.dumps(before.to_dict())))
    _outcome(resumed, 2, 20.0, 1, 1)
    resumed.seal()

    assert straight.errors.tolist() == [0.0, 1.0]
    assert resumed.errors.tolist() == straight.errors.tolist()


def test_predictions_read_before_the_first_label_do_not_make_labels_late(tmp_path, small_spec):
    """A Kafka consumer drains one partition's fetched records before the next: its first
    polls can return minutes of predictions and no label. The partition's watermark then
    follows the predictions alone (the label side "counts once labels were seen"), panes
    are sealed, and the labels of those panes arrive late and are dropped. The same input
    in event-time order (replay) keeps them: the result depends on the interleaving of the
    two topics, which monitor.pipeline's docstring rules out."""
    config, p, lab, start, preds, labels = build_case(tmp_path, small_spec, hours=0.5)
    whole = io.StringIO()
    replay(config, p, lab, whole)

    head = [r for r in preds if r["timestamp"] < start + 300.0]
    pipe = Pipeline(config, load_profiles(config))
    failures = ingest(pipe, RecordDecoder(config.fields, config.models), "predictions", 0,
                      [orjson.dumps(r) for r in head])
    assert not failures
    pipe.advance()  # what the daemon does after that poll
    rest = write_jsonl(tmp_path / "rest.jsonl", preds[len(head):])
    got = io.StringIO()
    write_output(pipe.drain(), got)
    replay(config, rest, lab, got, pipeline=pipe)
    assert got.getvalue().splitlines() == whole.getvalue().splitlines()
