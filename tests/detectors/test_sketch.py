"""Property tests of the mergeable sketches in detectors/sketch.py.

Float fields (score sums, moments) are fed dyadic values (multiples of 1/64 or 1/8) so
every sum is exact and merge/subtract properties can be asserted with ``==``; with
general floats they hold up to rounding only.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sketch import (
    CategoryCounts,
    ConfusionCounts,
    Histogram,
    HistogramBank,
    Moments,
    ScoreHistogram,
    quantile_edges,
    sketch_from_dict,
)

SETTINGS = settings(max_examples=40, deadline=None)

HIST_EDGES = [-1.0, 0.0, 0.5, 2.0]
BANK_EDGES = [[-1.0, 0.0, 1.0], [0.5], [], [2.0, 3.0, 4.0, 5.0]]

_values = st.one_of(
    st.sampled_from([*HIST_EDGES, 3.0, 4.0, 5.0, np.nan, np.inf, -np.inf]),
    st.integers(-200, 200).map(lambda k: k / 8),
)


@dataclass
class Kind:
    """How to build one sketch type empty, draw a batch, and feed it."""

    make: Callable[[], Any]
    batch: st.SearchStrategy
    feed: Callable[[Any, Any], None]


def _hist_batch():
    return st.lists(_values, max_size=30).map(lambda v: np.array(v, dtype=float))


def _bank_batch():
    return st.integers(0, 12).flatmap(
        lambda n: st.lists(_values, min_size=4 * n, max_size=4 * n).map(
            lambda v: np.array(v, dtype=float).reshape(-1, 4)
        )
    )


def _cat_batch():
    return st.lists(st.sampled_from(["a", "b", "c", "zz", None, ""]), max_size=30).map(
        lambda v: np.array(v, dtype=object)
    )


def _score_batch():
    pair = st.tuples(
        st.one_of(st.integers(-16, 80).map(lambda k: k / 64), st.just(np.nan)),
        st.integers(-1, 2),
    )
    return st.lists(pair, max_size=30).map(
        lambda v: (np.array([a for a, _ in v], dtype=float), np.array([b for _, b in v], dtype=np.int64))
    )


def _confusion_batch():
    triple = st.tuples(st.integers(-1, 3), st.integers(-1, 3), st.integers(-1, 1))
    return st.lists(triple, max_size=30).map(lambda v: np.array(v, dtype=np.int64).reshape(-1, 3))


def _moments_batch():
    val = st.one_of(st.integers(-800, 800).map(lambda k: k / 8), st.just(np.nan))
    return st.integers(0, 12).flatmap(
        lambda n: st.lists(val, min_size=2 * n, max_size=2 * n).map(
            lambda v: np.array(v, dtype=float).reshape(-1, 2)
        )
    )


KINDS = {
    "histogram": Kind(lambda: Histogram(HIST_EDGES), _hist_batch(), lambda s, b: s.update(b)),
    "histogram_bank": Kind(lambda: HistogramBank(BANK_EDGES), _bank_batch(), lambda s, b: s.update(b)),
    "category_counts": Kind(lambda: CategoryCounts(["a", "b", "c"]), _cat_batch(), lambda s, b: s.update(b)),
    "score_histogram": Kind(lambda: ScoreHistogram(3, 8), _score_batch(), lambda s, b: s.update(*b)),
    "confusion_counts": Kind(
        lambda: ConfusionCounts(["g1", "g2"], 3), _confusion_batch(), lambda s, b: s.update(b[:, 0], b[:, 1], b[:, 2])
    ),
    "moments": Kind(lambda: Moments(2, shift=[0.5, -1.0]), _moments_batch(), lambda s, b: s.update(b)),
}


def _sketch(kind: Kind, *batches):
    s = kind.make()
    for b in batches:
        kind.feed(s, b)
    return s


@pytest.mark.parametrize("name", list(KINDS))
@SETTINGS
@given(data=st.data())
def test_merge_is_associative_commutative_and_equals_one_pass(name, data):
    kind = KINDS[name]
    a, b, c = (data.draw(kind.batch) for _ in range(3))
    sa, sb, sc = _sketch(kind, a), _sketch(kind, b), _sketch(kind, c)
    left = sa.copy().merge(sb).merge(sc)
    right = sa.copy().merge(sb.copy().merge(sc))
    assert left == right
    assert sa.copy().merge(sb) == sb.copy().merge(sa)
    # merging sketches is the same as one sketch fed all batches
    assert left == _sketch(kind, a, b, c)
    # the empty sketch is the identity
    assert sa.copy().merge(sa.empty_like()) == sa


@pytest.mark.parametrize("name", list(KINDS))
@SETTINGS
@given(data=st.data())
def test_sliding_window_by_add_and_subtract_equals_rebuild(name, data):
    kind = KINDS[name]
    panes = [_sketch(kind, data.draw(kind.batch)) for _ in range(data.draw(st.integers(1, 7)))]
    width = data.draw(st.integers(1, 3))
    window = kind.make()
    for i, pane in enumerate(panes):
        window.merge(pane)
        if i >= width:
            window.subtract(panes[i - width])
        rebuilt = kind.make()
        for p in panes[max(0, i - width + 1) : i + 1]:
            rebuilt.merge(p)
        assert window == rebuilt


@pytest.mark.parametrize("name", list(KINDS))
@SETTINGS
@given(data=st.data())
def test_round_trip_mid_stream(name, data):
    kind = KINDS[name]
    batches = [data.draw(kind.batch) for _ in range(data.draw(st.integers(2, 6)))]
    half = len(batches) // 2
    straight = _sketch(kind, *batches)
    first = _sketch(kind, *batches[:half])
    state = json.loads(json.dumps(first.to_dict(), allow_nan=False))
    resumed = type(first).from_dict(state)
    assert sketch_from_dict(state) == resumed
    for b in batches[half:]:
        kind.feed(resumed, b)
    assert resumed == straight
    assert resumed.to_dict() == straight.to_dict()


@SETTINGS
@given(
    edges=st.lists(
        st.lists(st.integers(-40, 40).map(lambda k: k / 4), max_size=6, unique=True).map(sorted),
        min_size=1,
        max_size=5,
    ),
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 60),
)
def test_histogram_bank_equals_one_histogram_per_feature(edges, seed, n):
    rng = np.random.default_rng(seed)
    x = rng.integers(-48, 48, size=(n, len(edges))) / 4.0  # lands on edges often
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.05] = np.inf
    bank = HistogramBank(edges)
    bank.update(x)
    for k, e in enumerate(edges):
        h = Histogram(e)
        h.update(x[:, k])
        assert bank.feature(k) == h
        # padded bins stay empty
        assert not bank.counts[k, len(e) + 1 :].any()


def test_histogram_bins_are_left_closed():
    h = Histogram([0.0, 1.0])
    h.update(np.array([-0.0, 0.0, 1.0, 0.999, np.inf, -np.inf]))
    assert h.counts.tolist() == [1, 3, 2]
    # 1.0 (75%) and 2.0 (25%) each hold over half a bin's share (12.5%): own bins
    assert quantile_edges(np.array([1.0, 1.0, 1.0, 2.0]), 4).tolist() == [
        1.0, np.nextafter(1.0, 2.0), 1.25, 2.0, np.nextafter(2.0, 3.0)]


@pytest.mark.parametrize(
    "edges, match",
    [
        ([1.0, 1.0], "strictly increasing"),
        ([2.0, 1.0], "strictly increasing"),
        ([0.0, np.nan], "finite"),
        ([0.0, np.inf], "finite"),
        ([[0.0, 1.0]], "1-D"),
    ],
)
def test_bad_histogram_edges(edges, match):
    with pytest.raises(ValueError, match=match):
        Histogram(edges)


def test_bad_bank_edges_name_the_feature():
    with pytest.raises(ValueError, match="feature 1"):
        HistogramBank([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="at least one feature"):
        HistogramBank([])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        HistogramBank([[0.0], [1.0]]).update(np.zeros((3, 3)))


@pytest.mark.parametrize(
    "a, b, field",
    [
        (Histogram([0.0, 1.0]), Histogram([0.0, 2.0]), "edges"),
        (Histogram([0.0, 1.0]), Histogram([0.0, 1.0, 2.0]), "edges"),
        (HistogramBank([[0.0], [1.0]]), HistogramBank([[0.0], [2.0]]), "edges"),
        (CategoryCounts(["a", "b"]), CategoryCounts(["b", "a"]), "categories"),
        (ScoreHistogram(2, 10), ScoreHistogram(2, 20), "n_bins"),
        (ConfusionCounts(["x", "y"]), ConfusionCounts(["x", "z"]), "groups"),
        (Moments(1, shift=0.0), Moments(1, shift=1.0), "shift"),
    ],
)
def test_merging_different_layouts_is_refused(a, b, field):
    # Found while writing these tests: counts over different bins, vocabularies or
    # shifts used to add up silently when their shapes matched.
    with pytest.raises(ValueError, match=field):
        a.merge(b)
    with pytest.raises(ValueError, match=field):
        a.subtract(b)
    with pytest.raises(TypeError):
        Histogram([0.0]).merge(CategoryCounts(["a"]))
