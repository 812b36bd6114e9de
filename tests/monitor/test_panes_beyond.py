"""Pane extras (reconstruction-error moments, attribution sketch, slice counts): state round
trip, exact merge and subtract, older pane states, and independence of batch boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.config import load_config_text
from monitor.decode import hash_ids
from monitor.evaluate import layout_from_profile
from monitor.panes import RECON_CAP_FACTOR, Layout, Pane, recon_bounds
from monitor.synth import ModelSpec, config_models_toml, reference_profile

N = 2000
SPEC = ModelSpec("m", n_numeric=3, n_categorical=2, sensitive={"sex": ["F", "M"]}, attributions=True)


@pytest.fixture(scope="module")
def profile():
    return reference_profile(SPEC, n=3000)


def make_layout(profile, **tables) -> Layout:
    tables.setdefault("slices", {"min_size": 10})
    cfg = load_config_text(config_models_toml(SPEC, tables=tables), env={})
    return layout_from_profile(cfg.model("m"), profile, sample_per_pane=20)


@pytest.fixture(scope="module")
def layout(profile) -> Layout:
    L = make_layout(profile)
    assert L.reconstruction is not None and L.attribution_features and L.slicing is not None
    return L


def events(L: Layout, lo: int, hi: int, seed: int = 0) -> dict:
    """Rows ``lo..hi`` of one seeded stream of :data:`N` rows (a row is the same whichever
    range it is taken in): missing values, unseen categories and groups, outliers beyond
    the reconstruction-error cap, absent attributions."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 3))
    X[::17, 1] = np.nan
    X[::101] = 1e6
    cats = [rng.choice(["a", "b", "c", "d", "zz"], N).astype(object) for _ in range(2)]
    sex = rng.choice(["F", "M", "X"], N).astype(object)
    score = rng.random(N)
    score[::29] = np.nan
    A = rng.standard_normal((N, 5))
    A[::13, 2] = np.nan
    label = (rng.random(N) < np.nan_to_num(score, nan=0.5)).astype(np.float64)
    s = slice(lo, hi)
    X, cats, sex, score, A, label = X[s], [c[s] for c in cats], sex[s], score[s], A[s], label[s]
    groups = L.group_codes([sex])
    cc = L.category_codes(cats)
    return {
        "numeric": X, "score": score, "categorical": cats, "predicted": (score >= 0.5).astype(np.int64),
        "scope_codes": L.scope_codes(groups), "keys": hash_ids([f"p{i}" for i in range(lo, hi)]),
        "category_codes": cc, "attributions": A, "slice_codes": L.slicing.codes(X, cc, groups),
        "label": label, "n": hi - lo,
    }


def feed(p: Pane, e: dict, outcomes: bool = True) -> Pane:
    p.add_predictions(e["numeric"], e["score"], e["categorical"], e["predicted"], e["scope_codes"], keys=e["keys"],
                      category_codes=e["category_codes"], attributions=e["attributions"],
                      slice_codes=e["slice_codes"])
    if outcomes:
        n = e["n"]
        p.add_outcomes(e["keys"], np.full(n, 30.0), np.full(n, 10.0), e["score"], e["predicted"], e["label"],
                       e["scope_codes"], slice_codes=e["slice_codes"])
    return p


def pane_of(L: Layout, ranges, start: float = 0.0) -> Pane:
    p = Pane(L, start)
    for lo, hi in ranges:
        feed(p, events(L, lo, hi))
    return p


def extras(p: Pane) -> dict:
    return {k: s.to_dict() for k, s in p._extras().items()}


# --------------------------------------------------------------------------- state


def test_pane_with_extras_round_trips_exactly_through_json(layout):
    p = pane_of(layout, [(0, 600)])
    d = p.to_dict()
    assert set(d["extras"]) == {"recon", "attr", "slices", "dups"}
    assert d["extras"]["recon"]["count"] == [600] and d["extras"]["slices"]["total_out"] == 600
    # the extras are strict JSON although their inputs hold NaN (the row samples may hold
    # NaN values, so the whole state is compared as text: NaN != NaN)
    json.dumps(d["extras"], allow_nan=False)
    text = json.dumps(d)
    q = Pane.from_dict(layout, json.loads(text))
    assert json.dumps(q.to_dict()) == text
    assert extras(q) == d["extras"]
    # the restored pane continues exactly like the original
    feed(p, events(layout, 600, 900))
    feed(q, events(layout, 600, 900))
    assert json.dumps(q.to_dict()) == json.dumps(p.to_dict())


def test_state_written_before_the_extras_restores_them_empty(layout):
    p = pane_of(layout, [(0, 300)])
    old = p.to_dict()
    del old["extras"]  # the pane format before multivariate, attribution and slice sketches
    q = Pane.from_dict(layout, json.loads(json.dumps(old)))
    assert q.recon.count.tolist() == [0] and q.attr.n == 0 and q.slices.total_pred == q.slices.total_out == 0
    assert q.n_predictions == 300
    assert [s.to_dict() for s in q._sketches()] == [s.to_dict() for s in p._sketches()]
    # and it merges with a pane of the current format
    q.merge(pane_of(layout, [(300, 400)]))
    assert q.recon.count.tolist() == [100] and q.slices.total_pred == 100


def test_extras_of_a_state_are_ignored_when_the_layout_no_longer_watches_them(profile, layout):
    d = pane_of(layout, [(0, 200)]).to_dict()
    plain = make_layout(profile, multivariate={"enabled": False}, attributions={"enabled": False},
                        slices={"enabled": False}, security={"enabled": False})
    q = Pane.from_dict(plain, d)
    assert q.recon is None and q.attr is None and q.slices is None and q.dups is None
    assert q.to_dict()["extras"] == {} and q.n_predictions == 200


def test_unknown_pane_version_is_refused_clearly(layout):
    d = pane_of(layout, [(0, 10)]).to_dict()
    with pytest.raises(ValueError, match="not a version-1 pane: kind='pane' version=2"):
        Pane.from_dict(layout, {**d, "version": 2})


def test_state_with_another_slice_layout_restores_the_pane_without_its_slice_counts(profile, layout, caplog):
    # [models.slices] changed between checkpoint and restart: the pane comes back with
    # everything else, its slice counts start empty in the configured layout, and a warning
    # says so; it then merges into a window of the new layout.
    old = pane_of(layout, [(0, 100)])
    narrower = make_layout(profile, slices={"dimensions": ["cat_0", "sex"], "min_size": 10})
    with caplog.at_level("WARNING", logger="driftline.panes"):
        q = Pane.from_dict(narrower, json.loads(json.dumps(old.to_dict())))
    assert q.slices.dims == narrower.slicing.dims and q.slices.total_out == 0 and q.slices.total_pred == 0
    assert q.n_predictions == old.n_predictions and q.recon == old.recon
    assert "keeps no slices counts" in caplog.text and "dims" in caplog.text
    Pane(narrower, 60.0).merge(q)


# --------------------------------------------------------------------------- algebra


def test_merge_of_panes_equals_one_pane_of_all_events(layout):
    whole = pane_of(layout, [(0, 900)])
    merged = Pane(layout, 0.0).merge(pane_of(layout, [(0, 250)])).merge(pane_of(layout, [(250, 900)]))
    mine, theirs = extras(merged), extras(whole)
    assert mine["recon"] == theirs["recon"]  # fixed point: exact
    assert mine["slices"] == theirs["slices"]  # integer counts: exact
    a, b = merged.attr, whole.attr
    assert a.count.tolist() == b.count.tolist()  # float sums: equal to rounding
    np.testing.assert_allclose(a.sum_abs, b.sum_abs, rtol=1e-12)
    np.testing.assert_allclose(a.sum_sq, b.sum_sq, rtol=1e-12)


def test_subtract_removes_a_merged_pane_exactly(layout):
    first, second = pane_of(layout, [(0, 400)]), pane_of(layout, [(400, 700)], start=60.0)
    window = Pane(layout, 0.0).merge(first).merge(second)
    window.subtract(first)
    alone = pane_of(layout, [(400, 700)])
    assert extras(window)["recon"] == extras(alone)["recon"]
    assert extras(window)["slices"] == extras(alone)["slices"]
    np.testing.assert_allclose(window.attr.sum_abs, alone.attr.sum_abs, rtol=1e-9)
    window.subtract(second)
    assert window.recon.count.tolist() == [0] and window.recon.sum.tolist() == [0]
    assert window.recon.sumsq.tolist() == [0]
    assert window.slices.total_out == window.slices.total_pred == 0
    assert not window.slices.n_out.any() and not window.slices.sel.any()


def test_window_recon_and_slices_do_not_depend_on_micro_batch_boundaries(layout):
    whole = pane_of(layout, [(0, 1000)])
    cuts = [0, 1, 2, 5, 17, 101, 102, 350, 351, 777, 1000]
    split = pane_of(layout, list(zip(cuts[:-1], cuts[1:], strict=True)))
    assert extras(split)["recon"] == extras(whole)["recon"]
    assert extras(split)["slices"] == extras(whole)["slices"]
    assert split.recon.count.tolist() == [1000]


def test_reconstruction_errors_are_clipped_at_the_cap(layout):
    rec = layout.reconstruction
    cap, quantum = recon_bounds(rec.ref_mean_error)
    assert cap == RECON_CAP_FACTOR * rec.ref_mean_error
    p = Pane(layout, 0.0)
    outlier = np.full((1, 3), 1e6)
    assert rec.errors(outlier)[0] > cap
    p.add_predictions(outlier, np.array([0.7]), [np.array(["a"], dtype=object)] * 2, np.array([1]),
                      [np.array([0])], attributions=np.zeros((1, 5)),
                      slice_codes=layout.slicing.codes(outlier, [np.array([0])] * 2, np.array([[0]])))
    assert abs(p.recon.mean[0] - cap) <= quantum
    # a typical row is not clipped: its error is kept to the quantum
    q = Pane(layout, 0.0)
    row = np.array([[0.3, -0.2, 0.1]])
    q.add_predictions(row, np.array([0.4]), [np.array(["a"], dtype=object)] * 2, np.array([0]), [np.array([0])])
    assert abs(q.recon.mean[0] - rec.errors(row)[0]) <= quantum


def test_slice_outcomes_only_for_labelled_predictions_and_selection_for_all(layout):
    p = Pane(layout, 0.0)
    e = events(layout, 0, 300)
    feed(p, e, outcomes=False)
    assert p.slices.total_pred == 300 and p.slices.total_out == 0
    assert p.slices.total_sel == int(e["predicted"].sum())
    n = e["n"]
    p.add_outcomes(e["keys"][:100], np.full(100, 30.0), np.full(100, 10.0), e["score"][:100],
                   e["predicted"][:100], e["label"][:100], [c[:100] for c in e["scope_codes"]],
                   slice_codes=e["slice_codes"][:100])
    errors = int((e["predicted"][:100] != e["label"][:100]).sum())
    assert p.slices.total_out == 100 and p.slices.total_err == errors and n == 300
