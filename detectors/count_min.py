"""Count-min sketch over hashed cells of rounded feature vectors, and the near-duplicate share.

Queries are rounded onto a grid (:class:`CellGrid`: standardised by the reference, projected
on a few random directions, cells a fraction of the reference spread), a cell is a 64-bit
hash of the rounded vector, and the sketch counts cells: near-duplicate queries (a probing
or model-extraction burst that perturbs one input slightly) land in one cell. Only hashes and counts are kept, never a feature value. The sketch is a matrix of
counts, so panes merge and a window subtracts exactly.

The burst statistic is the second frequency moment ``F2 = sum_c count_c**2`` of the cells:
``(F2 - n) / (n (n - 1))`` is the probability that two queries of the window share a cell,
and its square root above the reference's own collision level is about the share of the
window held by one burst cell. Each row of the sketch over-counts F2 only by hash
collisions, whose mean is at most ``2 n**2 / width`` for multiply-shift hashing (a
2-approximately universal family; Cormode & Muthukrishnan 2005 for the sketch), which
gives the interval.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((900, 4))
>>> X[:300] = 0.35 + 0.001 * rng.standard_normal((300, 4))  # a probing burst, one point
>>> cms = CountMinSketch(width=1024, depth=4)
>>> cms.update(cell_keys(X, resolution=np.full(4, 0.1)))
>>> r = near_duplicate_share(cms)
>>> round(r.value, 2), r.ci_low <= 1 / 3 <= r.ci_high
(0.33, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from detectors._serde import check_state

__all__ = ["CellGrid", "CountMinSketch", "NearDuplicateResult", "cell_keys", "collision_probability",
           "near_duplicate_share"]

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
# rounded coordinate of a missing value: far outside any grid a real value reaches
_MISSING_CELL = np.int64(-(2**62))


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * _M1
    h = h ^ (h >> np.uint64(33))
    h = h * _M2
    return h ^ (h >> np.uint64(33))


_S33 = np.uint64(33)
_CLIP = 2.0**60


@numba.njit(cache=True)
def _fmix1(h):
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    return h ^ (h >> _S33)


@numba.njit(cache=True)
def _hash_rows(x, res, codes, seed, out):
    """:func:`cell_keys` row by row in one compiled pass (the numpy form takes a dozen
    array operations per column): the same floor, clip, missing cell and mixing, in the
    same order, so the keys are equal bit for bit."""
    for r in range(x.shape[0]):
        h = seed
        for j in range(x.shape[1]):
            g = x[r, j] / res[j]
            cell = _MISSING_CELL if np.isnan(g) else np.int64(np.floor(min(max(g, -_CLIP), _CLIP)))
            h = _fmix1(h ^ np.uint64(cell) * _GOLD)
        for j in range(codes.shape[1]):
            h = _fmix1(h ^ np.uint64(codes[r, j]) * _GOLD)
        out[r] = h


def cell_keys(numeric: np.ndarray, resolution: np.ndarray, codes: np.ndarray | None = None,
              origin: np.ndarray | None = None) -> np.ndarray:
    """64-bit hash per row of its grid cell: ``floor((x - origin) / resolution)`` per numeric
    column (NaN is a cell of its own) and the integer ``codes`` (category indices) as they are.

    Rows equal after rounding get the same key; which rows they were cannot be read back.
    """
    x = np.asarray(numeric, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"numeric must be a 2-D (rows, features) array, got shape {x.shape}")
    res = np.asarray(resolution, dtype=np.float64)
    if res.shape != (x.shape[1],) or not np.all(res > 0):
        raise ValueError(f"resolution must be {x.shape[1]} positive numbers, got {res.tolist()}")
    if origin is not None:
        x = x - np.asarray(origin, dtype=np.float64)
    n = x.shape[0]
    # each row's cells, NaN a cell of its own and inf and huge values clipped to the
    # edge cells (so they stay in int64), then its integer codes, mixed in turn into a
    # hash seeded by the number of numeric columns
    c = np.zeros((n, 0), dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64).reshape(n, -1)
    out = np.empty(n, dtype=np.uint64)
    _hash_rows(x, res, c, np.uint64((x.shape[1] * int(_GOLD)) % 2**64), out)
    return out


class CellGrid:
    """Where near-duplicates meet: standardise, project, round, hash.

    With more numeric features than ``projections``, inputs standardised by the reference
    (``origin``, ``scale``; a missing value at the mean, its position hashed apart) are
    projected on ``projections`` seeded random unit directions and rounded there, as
    E2LSH does (Datar et al. 2004): a perturbation of spread ``e`` moves each projection by
    about ``e`` whatever the number of features, so a burst splits over few cells, while
    far-apart inputs rarely meet in every direction. With fewer features the standardised
    features are rounded themselves. ``resolution`` is the cell per rounded coordinate in
    standard deviations of the reference's projection (``projection_scale``).
    """

    kind = "cell_grid"
    version = 1

    def __init__(self, origin: np.ndarray, scale: np.ndarray, resolution: float = 0.1, projections: int = 4,
                 seed: int = 0, projection_scale: np.ndarray | None = None):
        self.origin = np.asarray(origin, dtype=np.float64)
        d = self.origin.size
        sc = np.asarray(scale, dtype=np.float64)
        if sc.shape != (d,):
            raise ValueError(f"scale must have {d} values (one per feature), got {sc.size}")
        self.scale = np.where(sc > 0, sc, 1.0)  # a constant feature: its own unit
        if not resolution > 0:
            raise ValueError(f"resolution must be > 0, got {resolution}")
        if projections < 0:
            raise ValueError(f"projections must be >= 0 (0: no projection), got {projections}")
        self.resolution = float(resolution)
        self.projections = int(projections)
        self.seed = int(seed)
        self.projects = 0 < self.projections < d
        if self.projects:
            a = np.random.default_rng(self.seed).standard_normal((d, self.projections))
            self.directions = a / np.linalg.norm(a, axis=0)
        else:
            self.directions = None
        k = self.projections if self.projects else d
        ps = np.ones(k) if projection_scale is None else np.asarray(projection_scale, dtype=np.float64)
        if ps.shape != (k,):
            raise ValueError(f"projection_scale must have {k} values, got {ps.size}")
        self.projection_scale = np.where(ps > 0, ps, 1.0)

    def coordinates(self, numeric: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(coordinates to round, packed missing-value pattern or None)."""
        z = (np.asarray(numeric, dtype=np.float64) - self.origin) / self.scale
        if not self.projects:
            return z, None  # cell_keys gives NaN a cell of its own
        miss = np.isnan(z)
        return np.where(miss, 0.0, z) @ self.directions, np.packbits(miss, axis=1)

    def fit_scale(self, reference: np.ndarray) -> CellGrid:
        """Set ``projection_scale`` to the standard deviation of reference rows' coordinates."""
        c, _ = self.coordinates(reference)
        if c.shape[0] >= 2:
            with np.errstate(invalid="ignore"):
                sd = np.nanstd(c, axis=0, ddof=1)
            self.projection_scale = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        return self

    def keys(self, numeric: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """The 64-bit cell of each row (``codes``: integer columns hashed as they are)."""
        c, miss = self.coordinates(numeric)
        n = c.shape[0]
        extra = [] if codes is None else [np.asarray(codes, dtype=np.int64).reshape(n, -1)]
        if miss is not None:
            extra.append(miss.astype(np.int64))
        allc = np.column_stack(extra) if extra else None
        return cell_keys(c, self.resolution * self.projection_scale, allc)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "origin": self.origin.tolist(),
                "scale": self.scale.tolist(), "resolution": self.resolution, "projections": self.projections,
                "seed": self.seed, "projection_scale": self.projection_scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellGrid:
        check_state(d, cls.kind)
        return cls(d["origin"], d["scale"], d["resolution"], d["projections"], d["seed"], d["projection_scale"])


def collision_probability(keys: np.ndarray) -> float:
    """Exact probability that two distinct rows share a key: ``sum c(c-1) / (n(n-1))``."""
    _, counts = np.unique(np.asarray(keys, dtype=np.uint64), return_counts=True)
    n = int(counts.sum())
    if n < 2:
        return 0.0
    c = counts.astype(np.float64)
    return float((c * (c - 1)).sum() / (n * (n - 1.0)))


class CountMinSketch:
    """``depth`` rows of ``width`` counters; row ``r`` counts ``key`` at a multiply-shift hash.

    ``estimate(key)`` never under-counts and over-counts by at most ``2 e n / width`` with
    probability ``1 - exp(-depth)`` (``e n / width`` for a fully universal hash; the
    multiply-shift family collides with probability at most ``2 / width``). ``width`` is a power of two; the hash multipliers come
    from ``seed``, so sketches merge only with equal ``width``, ``depth`` and ``seed``.
    """

    kind = "count_min"
    version = 1

    def __init__(self, width: int = 1024, depth: int = 4, seed: int = 0):
        if width < 2 or width & (width - 1):
            raise ValueError(f"width must be a power of two >= 2, got {width}")
        if not 1 <= depth <= 16:
            raise ValueError(f"depth must be in [1, 16], got {depth}")
        self.width = int(width)
        self.depth = int(depth)
        self.seed = int(seed)
        # odd multipliers: multiply-shift is a universal family for power-of-two widths
        rng = np.random.default_rng(self.seed)
        self._mult = rng.integers(1, 2**63, size=self.depth, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._shift = np.uint64(64 - self.width.bit_length() + 1)
        self._reset()

    def _reset(self) -> None:
        self.counts = np.zeros((self.depth, self.width), dtype=np.int64)
        self.n = 0

    def _index(self, keys: np.ndarray) -> np.ndarray:
        """(depth, n) counter index per row and key."""
        k = _fmix(np.asarray(keys, dtype=np.uint64))
        return ((k[None, :] * self._mult[:, None]) >> self._shift).astype(np.int64)

    def update(self, keys: np.ndarray) -> None:
        """Count each key once (vectorised)."""
        keys = np.asarray(keys, dtype=np.uint64).ravel()
        if keys.size == 0:
            return
        flat = self._index(keys) + (np.arange(self.depth, dtype=np.int64) * self.width)[:, None]
        self.counts += np.bincount(flat.ravel(), minlength=self.depth * self.width).reshape(self.depth, self.width)
        self.n += int(keys.size)

    def update_one(self, key: int) -> None:
        """Per-event convenience; equal to ``update`` of a one-element array."""
        self.update(np.array([key], dtype=np.uint64))

    def estimate(self, keys: np.ndarray) -> np.ndarray:
        """Upper-biased count of each key: the smallest of its ``depth`` counters."""
        idx = self._index(np.asarray(keys, dtype=np.uint64).ravel())
        return self.counts[np.arange(self.depth)[:, None], idx].min(axis=0)

    def row_squares(self) -> np.ndarray:
        """``sum_j counts[r, j]**2`` per row (exact integers as float64 up to 2**53)."""
        c = self.counts.astype(np.float64)
        return (c * c).sum(axis=1)

    # -- algebra ----------------------------------------------------------------------------
    def _check_compatible(self, other: CountMinSketch) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine CountMinSketch with {type(other).__name__}")
        for name in ("width", "depth", "seed"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot combine count-min sketches with different {name}: "
                                 f"{getattr(self, name)} vs {getattr(other, name)}")

    def merge(self, other: CountMinSketch) -> CountMinSketch:
        self._check_compatible(other)
        self.counts += other.counts
        self.n += other.n
        return self

    def subtract(self, other: CountMinSketch) -> CountMinSketch:
        self._check_compatible(other)
        self.counts -= other.counts
        self.n -= other.n
        return self

    def copy(self) -> CountMinSketch:
        return type(self).from_dict(self.to_dict())

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # -- state ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # sparse: a pane holds far fewer queries than counters
        flat = self.counts.ravel()
        nz = np.flatnonzero(flat)
        return {"kind": self.kind, "version": self.version, "width": self.width, "depth": self.depth,
                "seed": self.seed, "n": self.n, "index": nz.tolist(), "count": flat[nz].tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CountMinSketch:
        check_state(d, cls.kind)
        s = cls(int(d["width"]), int(d["depth"]), int(d["seed"]))
        flat = s.counts.ravel()
        flat[np.asarray(d["index"], dtype=np.int64)] = np.asarray(d["count"], dtype=np.int64)
        s.n = int(d["n"])
        return s


@dataclass(frozen=True)
class NearDuplicateResult:
    """Near-duplicate share of a sketch's queries: ``value`` in [0, 1] and its interval.

    ``collision`` is the estimated probability that two queries share a cell and
    ``collision_low``/``collision_high`` its bounds from the sketch's error guarantee.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    collision: float
    collision_low: float
    collision_high: float


def near_duplicate_share(sketch: CountMinSketch, baseline: float = 0.0, confidence: float = 0.95) -> NearDuplicateResult:
    """``sqrt(max(0, P(two queries share a cell) - baseline))`` from the sketch's F2 bounds.

    ``baseline`` is the collision probability of ordinary traffic (the reference's, from
    :func:`collision_probability` of its rows' keys). A burst of ``b`` near-duplicates among
    ``n`` queries adds about ``(b / n)**2``, so the value reads as the burst's share.
    Bounds: every row's sum of squares is at least F2; each exceeds F2 by more than
    ``2 n**2 / (width * delta)`` with probability below ``delta`` (Markov, with the hash's
    collision probability at most ``2 / width``), so the smallest row exceeds F2 + eps with
    ``eps = 2 n**2 / (width * (1 - confidence)**(1 / depth))`` with probability below
    ``1 - confidence``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = float(sketch.n)
    if n < 2:
        return NearDuplicateResult(math.nan, math.nan, math.nan, int(n), math.nan, math.nan, math.nan)
    w = float(sketch.width)
    s = float(sketch.row_squares().min())
    eps = 2.0 * n * n / (w * (1.0 - confidence) ** (1.0 / sketch.depth))
    # a row's mean hash over-count is about (n**2 - F2) / w (the multiply-shift family
    # collides at about 1 / w in practice, 2 / w at worst): remove it for the point value
    point = (w * s - n * n) / (w - 1.0)
    lo_f2 = max(n, s - eps)
    f2 = min(max(point, lo_f2), s)
    pairs = n * (n - 1.0)

    def p(x: float) -> float:
        return min(max((x - n) / pairs, 0.0), 1.0)

    def share(q: float) -> float:
        return math.sqrt(max(q - baseline, 0.0))

    return NearDuplicateResult(share(p(f2)), share(p(lo_f2)), share(p(s)), int(n), p(f2), p(lo_f2), p(s))
