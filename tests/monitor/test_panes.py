"""Panes: row samples for evidence reports (bottom-k by id hash) and pane state round trip."""

from __future__ import annotations

import numpy as np

from monitor.decode import hash_ids
from monitor.panes import Layout, Pane, RowSample, window_sample


def _layout(k=50):
    return Layout(model="m", task="binary", n_classes=2, numeric=["x"], numeric_edges=[np.array([0.0])],
                  categorical=["c"], vocabularies=[["a", "b"]], sensitive=["sex"], groups=[["F", "M"]],
                  sample_per_pane=k)


def _batch(lo, hi):
    ids = [f"p{i}" for i in range(lo, hi)]
    n = hi - lo
    x = np.arange(lo, hi, dtype=float).reshape(-1, 1)
    return hash_ids(ids), x, np.full(n, 0.7), [np.array(["a"] * n, dtype=object)], np.ones(n, dtype=np.int64)


def test_bottom_k_does_not_depend_on_batch_boundaries_and_merges_exactly():
    keys, x, *_ = _batch(0, 1000)
    one = RowSample(40, ["x"])
    one.add(keys, {"x": x[:, 0]})
    split = RowSample(40, ["x"])
    for s in range(0, 1000, 97):
        split.add(keys[s : s + 97], {"x": x[s : s + 97, 0]})
    a, b = RowSample(40, ["x"]), RowSample(40, ["x"])
    a.add(keys[::2], {"x": x[::2, 0]})
    b.add(keys[1::2], {"x": x[1::2, 0]})
    merged = a.merge(b)
    for s in (split, merged):
        np.testing.assert_array_equal(s.keys, one.keys)
        assert s.data["x"].tolist() == one.data["x"].tolist()
    assert len(one.keys) == 40 and np.all(np.diff(one.keys.astype(float)) > 0)


def test_window_sample_attaches_labels_of_sampled_predictions():
    L = _layout(k=100)
    p1, p2 = Pane(L, 0.0), Pane(L, 60.0)
    keys, x, score, cats, pred = _batch(0, 500)
    p1.add_predictions(x, score, cats, pred, [np.zeros(500, dtype=np.int64)], keys=keys)
    # labels for every prediction arrive in the next pane (label event time)
    p2.add_outcomes(keys, np.full(500, 70.0), np.full(500, 10.0), score, pred,
                    (np.arange(500) % 2).astype(float), [np.zeros(500, dtype=np.int64)])
    rows = window_sample([p1, p2], 80)
    assert len(rows["x"]) == 80
    labelled = [v for v in rows["__label"] if v is not None]
    assert len(labelled) == 80  # coordinated samples: every sampled prediction found its label
    for xv, lab in zip(rows["x"], rows["__label"], strict=True):
        assert lab == float(int(xv) % 2)  # the label belongs to that very prediction
    assert set(rows) == {"x", "c", "__score", "__prediction", "__label"}  # no ids


def test_pane_state_round_trip_keeps_samples_and_sketches():
    L = _layout()
    p = Pane(L, 0.0)
    keys, x, score, cats, pred = _batch(0, 300)
    p.add_predictions(x, score, cats, pred, [np.zeros(300, dtype=np.int64)], keys=keys)
    q = Pane.from_dict(L, p.to_dict())
    assert q.to_dict() == p.to_dict()
