"""Review: partition state written before the float64 join score cannot be restored safely.

Commit "Join: the waiting prediction's score is kept in float64" moved the score out of the
waiting predictions' float32 payload ([model, score, predicted, scopes...] became [model,
predicted, scopes...]) but left ``partition_state``/``join_table`` at version 1, and
``JoinTable.from_bytes`` takes the column counts from the blob. A state directory from
before the change restores a table one float32 column wider than the code now writes: the
first prediction batch after the restart fails in ``JoinTable.put`` (reshape to the old
width), and a label joining an old row would read the score as the predicted class and the
predicted class as the first scope code.
"""

from __future__ import annotations

import io

import msgspec
import numpy as np
import orjson

from monitor.decode import RecordDecoder
from monitor.ingest import ingest
from monitor.join import JoinTable
from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles

from .conftest import build_case


def _as_old_layout(blob: bytes) -> bytes:
    """The partition blob as the code before the change wrote it: f32 [model, score,
    predicted, scopes...] and an unused zero f64 column."""
    s = msgspec.msgpack.decode(blob)
    z = np.load(io.BytesIO(s["preds"]), allow_pickle=False)
    f32 = np.insert(z["f32"], 1, z["f64"][:, 0].astype(np.float32), axis=1)
    old = JoinTable(1, f32.shape[1], int(z["max_pending"]))
    old.put(z["keys"], z["ts"], np.zeros((len(z["keys"]), 1)), f32)
    s["preds"] = old.to_bytes()
    s["version"] = 1  # what the code before the change wrote
    return msgspec.msgpack.encode(s)


def test_partition_state_from_before_the_f64_score_restores_and_joins(tmp_path, small_spec):
    config, _p, _l, _start, preds, labels = build_case(tmp_path, small_spec, hours=0.3)
    dec = RecordDecoder(config.fields, config.models)
    half = len(preds) // 2
    first = Pipeline(config, load_profiles(config))
    ingest(first, dec, "predictions", 0, [orjson.dumps(r) for r in preds[:half]])
    first.advance()
    blobs = {**first.partition_blobs(), **first.model_blobs()}
    assert len(first.partitions[0].preds), "predictions should be waiting for labels"

    restored = Pipeline(config, load_profiles(config))
    restored.restore_models(blobs)
    restored.restore_partition(0, _as_old_layout(blobs["partition/0"]))
    # the upgraded daemon's first poll: more predictions, then their labels
    ingest(restored, dec, "predictions", 0, [orjson.dumps(r) for r in preds[half:]])
    ingest(restored, dec, "labels", 0, [orjson.dumps(r) for r in labels])
    restored.flush_all()

    ingest(first, dec, "predictions", 0, [orjson.dumps(r) for r in preds[half:]])
    ingest(first, dec, "labels", 0, [orjson.dumps(r) for r in labels])
    first.flush_all()
    want = first.models[0].window.confusion.counts
    got = restored.models[0].window.confusion.counts
    np.testing.assert_array_equal(got, want)
