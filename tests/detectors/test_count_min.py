"""Count-min sketch and near-duplicate share against exact counting of the same keys."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from detectors._serde import StateVersionError
from detectors.count_min import (
    CellGrid,
    CountMinSketch,
    cell_keys,
    collision_probability,
    near_duplicate_share,
)


def _stream(seed: int = 0, n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Zipf-like: a few heavy keys, many rare ones
    return rng.zipf(1.3, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def test_point_estimates_never_undercount_and_respect_the_error_bound():
    keys = _stream()
    cms = CountMinSketch(width=512, depth=4)
    cms.update(keys)
    exact = Counter(keys.tolist())
    uniq = np.array(list(exact), dtype=np.uint64)
    truth = np.array([exact[k] for k in uniq.tolist()])
    est = cms.estimate(uniq)
    assert (est >= truth).all()
    # P(error > e n / w) <= exp(-depth) per key: the share of keys beyond it stays near that
    eps = math.e * keys.size / cms.width
    assert np.mean(est - truth > eps) <= 2 * math.exp(-cms.depth)
    assert cms.n == keys.size


def test_row_squares_bound_f2_from_above_and_the_mean_overcount_is_at_most_n2_over_w():
    keys = _stream(1)
    _, counts = np.unique(keys, return_counts=True)
    f2 = float((counts.astype(np.float64) ** 2).sum())
    over = []
    for seed in range(20):
        cms = CountMinSketch(width=256, depth=1, seed=seed)
        cms.update(keys)
        s = float(cms.row_squares()[0])
        assert s >= f2
        over.append(s - f2)
    n = keys.size
    # E[row - F2] = (n**2 - F2) / w for a universal hash: the 20-seed mean stays near it
    assert np.mean(over) <= 1.5 * (n * n - f2) / 256


def test_vectorised_update_equals_per_event_updates():
    keys = _stream(2, 500)
    a, b = CountMinSketch(64, 3), CountMinSketch(64, 3)
    a.update(keys)
    for k in keys.tolist():
        b.update_one(k)
    assert a == b


def test_merge_and_subtract_are_exact_and_check_the_layout():
    keys = _stream(3, 4000)
    whole, p1, p2 = CountMinSketch(128, 4), CountMinSketch(128, 4), CountMinSketch(128, 4)
    whole.update(keys)
    p1.update(keys[:1500])
    p2.update(keys[1500:])
    assert p1.copy().merge(p2) == whole
    assert whole.copy().subtract(p2) == p1
    with pytest.raises(ValueError, match="width"):
        p1.merge(CountMinSketch(256, 4))
    with pytest.raises(ValueError, match="seed"):
        p1.merge(CountMinSketch(128, 4, seed=1))


def test_round_trip_mid_stream_continues_identically():
    keys = _stream(4, 6000)
    straight = CountMinSketch(256, 4)
    straight.update(keys)
    half = CountMinSketch(256, 4)
    half.update(keys[:2500])
    restored = CountMinSketch.from_dict(json.loads(json.dumps(half.to_dict())))
    restored.update(keys[2500:])
    assert restored == straight
    with pytest.raises(StateVersionError):
        CountMinSketch.from_dict({**half.to_dict(), "version": 9})


def test_bad_parameters_name_the_allowed_range():
    with pytest.raises(ValueError, match="power of two"):
        CountMinSketch(width=1000)
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        CountMinSketch(depth=0)


def test_cell_keys_equal_exactly_for_rows_in_one_cell():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((3000, 3))
    res = np.array([0.5, 0.25, 1.0])
    assert cell_keys(np.zeros((0, 3)), res).size == 0
    # oracle: tuples of the rounded coordinates and the code
    cells = [tuple(np.floor(x / res).astype(int)) for x in X]
    c = rng.integers(0, 3, (3000, 1))
    keys = cell_keys(X, res, codes=c)
    tuples = [cell + (int(k),) for cell, k in zip(cells, c[:, 0], strict=True)]
    by_tuple: dict = {}
    for t, k in zip(tuples, keys.tolist(), strict=True):
        by_tuple.setdefault(t, set()).add(k)
    assert all(len(v) == 1 for v in by_tuple.values())
    assert len({next(iter(v)) for v in by_tuple.values()}) == len(by_tuple)  # no 64-bit collision here
    # NaN is a cell of its own, never the cell of 0
    a = cell_keys(np.array([[np.nan], [0.01]]), np.array([1.0]))
    assert a[0] != a[1]
    with pytest.raises(ValueError, match="positive"):
        cell_keys(X, np.array([1.0, 0.0, 1.0]))


def test_collision_probability_equals_pair_counting():
    rng = np.random.default_rng(6)
    keys = rng.integers(0, 50, 400).astype(np.uint64)
    ks = keys.tolist()
    pairs = sum(ks[i] == ks[j] for i in range(len(ks)) for j in range(len(ks)) if i != j)
    assert collision_probability(keys) == pytest.approx(pairs / (400 * 399), rel=1e-12)


@pytest.mark.parametrize("burst", [0, 100, 400])
def test_near_duplicate_share_interval_covers_the_exact_value(burst):
    rng = np.random.default_rng(7 + burst)
    n = 2000
    X = rng.standard_normal((n, 4))
    X[:burst] = 0.35 + 0.001 * rng.standard_normal((burst, 4))
    res = np.full(4, 0.1)
    keys = cell_keys(X, res)
    cms = CountMinSketch(1024, 4)
    cms.update(keys)
    base = 1e-5
    exact = math.sqrt(max(collision_probability(keys) - base, 0.0))
    r = near_duplicate_share(cms, baseline=base)
    assert r.ci_low - 1e-12 <= exact <= r.ci_high + 1e-12
    assert r.value == pytest.approx(exact, abs=0.03)
    assert r.value == pytest.approx(burst / n, abs=0.03)
    assert r.n == n


def test_near_duplicate_share_of_too_few_queries_is_nan():
    cms = CountMinSketch(64, 2)
    cms.update(np.array([1], dtype=np.uint64))
    assert math.isnan(near_duplicate_share(cms).value)
    with pytest.raises(ValueError, match="confidence"):
        near_duplicate_share(cms, confidence=1.0)


def _burst(d: int, n: int = 3000, b: int = 600, spread: float = 0.01, seed: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 2.0 + 5.0  # reference spread 2, mean 5
    X[:b] = X[n - 1] + spread * 2.0 * rng.standard_normal((b, d))
    return X


def test_projection_keeps_a_high_dimensional_burst_in_few_cells():
    d, b, n = 30, 600, 3000
    X = _burst(d)
    grid = CellGrid(np.full(d, 5.0), np.full(d, 2.0), resolution=0.1, projections=4).fit_scale(X[b:])
    # rounding every one of 30 features splits the burst over many cells; 4 directions do not
    per_feature = CellGrid(np.full(d, 5.0), np.full(d, 2.0), resolution=0.1, projections=0)
    _, c_proj = np.unique(grid.keys(X[:b]), return_counts=True)
    _, c_feat = np.unique(per_feature.keys(X[:b]), return_counts=True)
    assert c_proj.max() >= 0.5 * b and c_feat.max() < 0.2 * b
    cms = CountMinSketch(1024, 4)
    cms.update(grid.keys(X))
    base = collision_probability(grid.keys(X[b:]))
    assert base < 1e-3  # ordinary rows rarely meet in every direction
    assert near_duplicate_share(cms, baseline=base).value == pytest.approx(
        math.sqrt((c_proj.astype(float) ** 2).sum()) / n, abs=0.02)
    # the fitted scale is the reference rows' spread along each direction (about 1)
    z = (X[b:] - 5.0) / 2.0 @ grid.directions
    np.testing.assert_allclose(grid.projection_scale, z.std(axis=0, ddof=1))
    assert np.allclose(np.linalg.norm(grid.directions, axis=0), 1.0)


def test_grid_keys_hash_the_missing_pattern_apart_and_round_trip():
    d = 10
    grid = CellGrid(np.zeros(d), np.ones(d), resolution=0.5, projections=3, seed=2)
    x = np.zeros((3, d))
    x[1, 4] = np.nan  # a missing value sits at the mean but is not the mean
    x[2, 5] = np.nan
    k = grid.keys(x, np.array([[1], [1], [1]]))
    assert len(set(k.tolist())) == 3
    again = CellGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert (again.keys(x, np.array([[1], [1], [1]])) == k).all()
    assert (grid.keys(x[:1]) == grid.keys(np.vstack([x[:1], x[:1]]))[:1]).all()  # independent of the batch
    with pytest.raises(ValueError, match="scale must have 10"):
        CellGrid(np.zeros(d), np.ones(3))


def _python_cell_key(row, res, codes):
    # the documented key in plain Python integers: floor(x / resolution) clipped to
    # +-2**60 (NaN: -2**62), then each code, xor-multiplied by the golden ratio and
    # MurmurHash3-finalised in turn from a seed of the column count
    mask = 2**64 - 1
    gold, m1, m2 = 0x9E3779B97F4A7C15, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53

    def fmix(h):
        h ^= h >> 33
        h = (h * m1) & mask
        h ^= h >> 33
        h = (h * m2) & mask
        return h ^ (h >> 33)

    h = (len(row) * gold) & mask
    for x, r in zip(row, res, strict=True):
        g = x / r
        cell = -(2**62) if math.isnan(g) else math.floor(min(max(g, -(2.0**60)), 2.0**60))
        h = fmix(h ^ (((cell & mask) * gold) & mask))
    for c in codes:
        h = fmix(h ^ (((int(c) & mask) * gold) & mask))
    return h


@pytest.mark.parametrize("seed", range(4))
def test_cell_keys_equal_a_plain_python_hash_of_the_rounded_row(seed):
    rng = np.random.default_rng(seed)
    d, k = 1 + seed, 2 * seed
    X = rng.standard_normal((400, d)) * 10.0 ** rng.uniform(-3, 22, (400, 1))  # beyond the clip too
    X[rng.random(X.shape) < 0.05] = np.nan
    X[rng.random(X.shape) < 0.02] = np.inf
    X[rng.random(X.shape) < 0.02] = -np.inf
    res = rng.uniform(0.01, 2.0, d)
    codes = rng.integers(-2, 300, (400, k))
    keys = cell_keys(X, res, codes=codes if k else None)
    assert keys.dtype == np.uint64
    assert keys.tolist() == [_python_cell_key(x, res, c) for x, c in zip(X.tolist(), codes.tolist(), strict=True)]
