"""SliceLayout: dimensions and pairs from the config, codes per event, packing through the join."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.config import SlicesConfig
from monitor.slicing import MAX_LEVELS, SliceLayout


def _layout(**kw) -> SliceLayout:
    return SliceLayout.build(
        SlicesConfig(**kw), numeric=["x", "y"], numeric_edges=[np.array([0.0, 1.0]), np.array([5.0])],
        categorical=["region", "channel"], vocabularies=[["n", "s", "e"], ["web", "app"]],
        sensitive=["sex"], groups=[["F", "M"]],
    )


def test_dimensions_levels_and_default_pairs():
    sl = _layout()
    assert sl.dims == ["x", "y", "region", "channel", "sex"]
    assert sl.levels[0] == ["<0", "[0, 1)", ">=1"] and sl.levels[1] == ["<5", ">=5"]
    # every dimension with every categorical feature and sensitive attribute, no numeric x numeric
    assert (0, 1) not in sl.pairs
    assert {(0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (2, 4), (3, 4)} <= set(sl.pairs)
    only = _layout(dimensions=("region", "sex"), pair_with=("sensitive",))
    assert only.dims == ["region", "sex"] and only.pairs == [(0, 1)]
    assert _layout(pair_with=()).pairs == []


def test_codes_follow_the_reference_bins_and_vocabularies():
    sl = _layout()
    numeric = np.array([[-1.0, 7.0], [0.5, np.nan], [1.0, 5.0]])
    cat = [np.array([0, 2, -1]), np.array([1, -1, 0])]
    groups = np.array([[1], [0], [-1]])
    codes = sl.codes(numeric, cat, groups)
    assert codes.tolist() == [[0, 1, 0, 1, 1], [1, -1, 2, -1, 0], [2, 1, -1, 0, -1]]


@pytest.mark.parametrize("n_dims", [1, 3, 4, 7])
def test_pack_unpack_round_trip(n_dims):
    rng = np.random.default_rng(n_dims)
    sl = SliceLayout([f"d{i}" for i in range(n_dims)], ["categorical"] * n_dims, list(range(n_dims)),
                     [[str(k) for k in range(MAX_LEVELS)]] * n_dims, [None] * n_dims, [], 20000)
    codes = rng.integers(-1, MAX_LEVELS, size=(500, n_dims))
    packed = sl.pack(codes)
    assert packed.dtype == np.float32 and packed.shape == (500, sl.n_columns)
    assert (sl.unpack(packed) == codes).all()
    # a payload from before slice codes (too narrow) reads as missing everywhere
    assert (sl.unpack(packed[:, :0]) == -1).all()


def test_codes_take_the_bits_their_levels_need():
    # 20 ten-bin numeric features (4 bits each), a 255-level category (8 bits) and a
    # 2-group attribute (2 bits): 90 bits, so 4 float32 columns, not one per 3 dimensions
    levels = [[str(k) for k in range(10)]] * 20 + [[str(k) for k in range(255)], ["F", "M"]]
    n = len(levels)
    sl = SliceLayout([f"d{i}" for i in range(n)], ["categorical"] * n, list(range(n)), levels, [None] * n, [], 20000)
    assert sl.n_columns == 4
    rng = np.random.default_rng(1)
    codes = np.column_stack([rng.integers(-1, len(lv), 2000) for lv in levels])
    codes[:5] = [len(lv) - 1 for lv in levels]  # every field at its largest code
    packed = sl.pack(codes)
    assert packed.max() < 2**24 and (sl.unpack(packed) == codes).all()


def test_too_many_levels_is_refused():
    with pytest.raises(ValueError, match="at most 255"):
        SliceLayout.build(SlicesConfig(), numeric=[], numeric_edges=[], categorical=["c"],
                          vocabularies=[[str(i) for i in range(300)]], sensitive=[], groups=[])


@pytest.mark.parametrize("n_edges", [1, 9, 32, 33, 200])
def test_compiled_bin_codes_equal_numpy_searchsorted(n_edges):
    # short edge lists are counted, long ones binary-searched: both must be numpy's
    # searchsorted(side="right"), at the edges themselves, at +-inf and with NaN as -1
    rng = np.random.default_rng(n_edges)
    edges = [np.unique(np.round(rng.standard_normal(n_edges), 2)) for _ in range(3)]
    sl = SliceLayout.build(
        SlicesConfig(pair_with=()), numeric=["a", "b", "c"], numeric_edges=edges, categorical=[],
        vocabularies=[], sensitive=["sex"], groups=[["F", "M"]],
    )
    numeric = np.round(rng.standard_normal((3000, 3)) * 1.5, 2)  # many values on an edge
    numeric[rng.random(numeric.shape) < 0.05] = np.nan
    numeric[:3] = [[np.inf, -np.inf, edges[2][0]], [-np.inf, np.inf, edges[2][-1]], [-0.0, 0.0, np.nan]]
    groups = rng.integers(-1, 2, (3000, 1))
    codes = sl.codes(numeric, [], groups)
    for d in range(3):
        want = np.where(np.isnan(numeric[:, d]), -1, np.searchsorted(edges[d], numeric[:, d], side="right"))
        np.testing.assert_array_equal(codes[:, d], want)
    np.testing.assert_array_equal(codes[:, 3], groups[:, 0])
    # a non-contiguous column view codes the same
    np.testing.assert_array_equal(sl.codes(np.asfortranarray(numeric), [], groups), codes)


def test_packed_words_are_the_planned_bit_fields():
    # a checkpoint's waiting predictions carry packed codes: the compiled pack and unpack
    # must keep the layout of _plan, (code + 1) * 2**shift summed per float32 column
    levels = [10] * 20 + [255, 2, 5, 3]
    n = len(levels)
    sl = SliceLayout([f"d{i}" for i in range(n)], ["categorical"] * n, list(range(n)),
                     [[str(k) for k in range(v)] for v in levels], [None] * n, [], 20000)
    rng = np.random.default_rng(3)
    codes = np.column_stack([rng.integers(-1, v, 300) for v in levels])
    want = np.zeros((300, sl.n_columns))
    for d, (col, shift, bits) in enumerate(sl._plan()):
        assert shift + bits <= 24
        want[:, col] += (codes[:, d] + 1) * 2.0**shift
    packed = sl.pack(codes)
    np.testing.assert_array_equal(packed, want.astype(np.float32))
    np.testing.assert_array_equal(sl.unpack(want), codes)  # float64 payload columns read the same
    np.testing.assert_array_equal(sl.unpack(np.asfortranarray(packed)[::3]), codes[::3])
