"""Slice codes ride the join payload; its width is the exact packing once the reference is
read and a bound (three codes per column) before. A state written at one width restores at
the other, and the outcomes land in the same slices as an uninterrupted run."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import orjson
import pytest

from monitor.decode import RecordDecoder
from monitor.ingest import ingest
from monitor.join import JoinTable
from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles

from .conftest import build_case


def _rewidth(blob: bytes, width: int) -> bytes:
    """The partition blob with its waiting predictions' float32 payload cut or zero-padded."""
    s = msgspec.msgpack.decode(blob)
    z = np.load(io.BytesIO(s["preds"]), allow_pickle=False)
    f32 = z["f32"]
    f32 = f32[:, :width] if width <= f32.shape[1] else np.hstack(
        [f32, np.zeros((len(f32), width - f32.shape[1]), dtype=np.float32)])
    t = JoinTable(z["f64"].shape[1], width, int(z["max_pending"]))
    t.put(z["keys"], z["ts"], z["f64"], np.ascontiguousarray(f32))
    s["preds"] = t.to_bytes()
    return msgspec.msgpack.encode(s)


@pytest.mark.parametrize("extra", [3, 0])
def test_state_at_another_payload_width_restores_and_counts_the_same_slices(tmp_path, small_spec, extra):
    config, _p, _l, _start, preds, labels = build_case(tmp_path, small_spec, hours=0.3)
    dec = RecordDecoder(config.fields, config.models)
    half = len(preds) // 2
    first = Pipeline(config, load_profiles(config))
    exact = first.models[0].layout.slicing.n_columns
    assert first.n_slice_cols == exact  # the reference is read: no bound needed
    ingest(first, dec, "predictions", 0, [orjson.dumps(r) for r in preds[:half]])
    first.advance()
    blobs = {**first.partition_blobs(), **first.model_blobs()}
    waiting = first.partitions[0].preds.f32.shape[1]
    assert len(first.partitions[0].preds)

    restored = Pipeline(config, load_profiles(config))
    restored.restore_models(blobs)
    restored.restore_partition(0, _rewidth(blobs["partition/0"], waiting + extra))
    assert restored.partitions[0].preds.f32.shape[1] == waiting
    for p in (first, restored):
        ingest(p, dec, "predictions", 0, [orjson.dumps(r) for r in preds[half:]])
        ingest(p, dec, "labels", 0, [orjson.dumps(r) for r in labels])
        p.flush_all()
    want, got = first.models[0].window.slices, restored.models[0].window.slices
    assert want.total_out > 0
    np.testing.assert_array_equal(got.n_out, want.n_out)
    np.testing.assert_array_equal(got.err, want.err)
