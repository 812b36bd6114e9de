"""Review: a pane restored from a checkpoint written before Moments v2 cannot take new panes.

Moments v1 state (float sums, no ``quantum``) is still accepted by ``Moments.from_dict``, and
``Pane.from_dict`` (pane version unchanged at 1) copies it in as-is, so the restored loss
sketch has ``quantum=None`` while every new pane's has ``LOSS_QUANTUM``. The first merge
into the restored window (``ModelRuntime._add_pane``) then raises "different quantum": a
daemon upgraded over an existing state directory stops at its first evaluation, for every
classification model with a score. ScoreHistogram v1 is converted to fixed point; the loss
Moments are not.
"""

from __future__ import annotations

import json

import numpy as np

from monitor.decode import hash_ids
from monitor.panes import LOSS_QUANTUM, Layout, Pane


def _layout():
    return Layout(model="m", task="binary", n_classes=2, numeric=["x"], numeric_edges=[np.array([0.0])],
                  categorical=["c"], vocabularies=[["a", "b"]], sensitive=["sex"], groups=[["F", "M"]])


def _pane(L, start, lo, hi):
    p = Pane(L, start)
    ids = [f"p{i}" for i in range(lo, hi)]
    n = hi - lo
    keys = hash_ids(ids)
    score = np.linspace(0.05, 0.95, n)
    pred = (score > 0.5).astype(np.int64)
    label = (np.arange(n) % 2).astype(float)
    p.add_outcomes(keys, np.full(n, start + 1.0), np.full(n, start), score, pred, label,
                   [np.zeros(n, dtype=np.int64)])
    p.seal()
    return p


def _as_v1(d: dict) -> dict:
    """The pane's state as the code before Moments v2 wrote it (float loss sums, no quantum)."""
    d = json.loads(json.dumps(d))
    for s in d["sketches"]:
        if s["kind"] == "moments":
            q = s.pop("quantum")
            s["version"] = 1
            s["sum"] = [v * q for v in s["sum"]]
            s["sumsq"] = [v * q for v in s["sumsq"]]
        if s["kind"] == "score_histogram":
            s["version"] = 1
            s["score_sums"] = (np.asarray(s.pop("score_fx")) * 2.0**-32).tolist()
    return d


def test_window_restored_from_pre_v2_state_accepts_new_panes():
    L = _layout()
    window = _pane(L, 0.0, 0, 200)
    old = Pane.from_dict(L, _as_v1(window.to_dict()))
    new = _pane(L, 60.0, 200, 400)
    old.merge(new, samples=False)  # raises ValueError: different quantum (None vs 2**-24)
    expect = _pane(L, 0.0, 0, 200).merge(_pane(L, 60.0, 200, 400), samples=False)
    np.testing.assert_allclose(old.loss.mean, expect.loss.mean, rtol=0, atol=LOSS_QUANTUM)
