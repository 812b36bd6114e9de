"""Mergeable sketches: fixed-edge histograms, category counts, score histograms,
confusion counts per group and running moments.

Every sketch is a bag of counts or sums, so merging is addition and a sliding window is
a running sum (add the new pane, subtract the evicted one). Each has a vectorised
``update(array)``, ``merge``, ``subtract``, ``copy`` and versioned ``to_dict``/``from_dict``.

>>> import numpy as np
>>> h = Histogram(edges=[0.0, 1.0])
>>> h.update(np.array([-5.0, 0.5, 0.7, 3.0, np.nan]))
>>> h.counts.tolist(), h.missing
([1, 2, 1], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numba
import numpy as np

from detectors._serde import check_state, floats, unfloats

__all__ = [
    "Histogram",
    "HistogramBank",
    "CategoryCounts",
    "ScoreHistogram",
    "ConfusionCounts",
    "Moments",
    "quantile_edges",
    "sketch_from_dict",
]


def quantile_edges(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference quantiles; the outer bins are open-ended.

    Repeated quantiles (discrete or constant features) collapse, so a feature may get
    fewer than ``n_bins`` bins; the outer bins always catch values beyond the reference.
    A value holding more than half a bin's share of the sample (the 0 of a zero-inflated
    amount, the value of a constant feature) gets a bin of its own, ``[v, nextafter(v))``,
    and the other values are binned at their own quantiles: otherwise the atom shares the
    open top bin with every larger value and a shift of mass above it is invisible.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise ValueError("cannot take quantile edges of an empty or all-missing sample")
    probs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    edges = np.unique(np.quantile(x, probs))
    values, counts = np.unique(x, return_counts=True)  # once per reference build
    atoms = values[counts > 0.5 / n_bins * x.size]
    if atoms.size:
        rest = x[~np.isin(x, atoms)]
        parts = [edges, atoms, np.nextafter(atoms, np.inf)]
        if rest.size:
            parts.append(np.quantile(rest, probs))
        edges = np.unique(np.concatenate(parts))
    return edges


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


class _Additive:
    """Shared merge/subtract/equality over the named array fields of a sketch."""

    _fields: tuple[str, ...] = ()
    # Attributes that must be equal for counts to line up (bins, vocabulary, shift).
    _layout: tuple[str, ...] = ()

    def _check_compatible(self, other) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine {type(self).__name__} with {type(other).__name__}")
        # Same-shaped counts over different bins would add up silently into garbage.
        for name in self._layout:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, np.ndarray):
                same = mine.shape == theirs.shape and np.array_equal(mine, theirs)
            else:
                same = mine == theirs
            if not same:
                raise ValueError(
                    f"cannot combine {type(self).__name__} sketches with different {name}: {mine!r} vs {theirs!r}"
                )

    def merge(self, other):
        """Add ``other`` into this sketch in place and return self."""
        self._check_compatible(other)
        for f in self._fields:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        return self

    def subtract(self, other):
        """Remove ``other`` (previously merged) from this sketch in place and return self."""
        self._check_compatible(other)
        for f in self._fields:
            setattr(self, f, getattr(self, f) - getattr(other, f))
        return self

    def copy(self):
        return type(self).from_dict(self.to_dict())

    def empty_like(self):
        """A sketch with the same layout and zero counts."""
        out = self.copy()
        for f in self._fields:
            v = getattr(out, f)
            setattr(out, f, v * 0 if isinstance(v, np.ndarray) else type(v)(0))
        return out

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


@numba.njit(cache=True, nogil=True)
def _bin_matrix(x, edges, n_edges, counts, missing):  # pragma: no cover - compiled
    # Row-major over the (n, F) batch (its memory order). Few edges: a branch-free count of
    # edges <= v, which the compiler vectorises (~10x a binary search at 10 bins); many
    # edges: binary search. Both give searchsorted(edges, v, side="right").
    n, f = x.shape
    for i in range(n):
        for j in range(f):
            v = x[i, j]
            if v != v:
                missing[j] += 1
                continue
            m = n_edges[j]
            if m <= 32:
                c = 0
                for k in range(m):
                    c += edges[j, k] <= v
            else:
                c = 0
                hi = m
                while c < hi:
                    mid = (c + hi) >> 1
                    if edges[j, mid] <= v:
                        c = mid + 1
                    else:
                        hi = mid
            counts[j, c] += 1


class Histogram(_Additive):
    """Counts of one numeric feature on fixed inner edges; NaN counted apart.

    Bin ``k`` holds ``edges[k-1] <= x < edges[k]``; bin 0 and the last bin are open.
    """

    kind = "histogram"
    version = 1
    _fields = ("counts", "missing")
    _layout = ("edges",)

    def __init__(self, edges: Sequence[float] | np.ndarray):
        e = _as_float(edges)
        if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise ValueError("edges must be a 1-D, finite, strictly increasing sequence")
        self.edges = e
        self.counts = np.zeros(e.size + 1, dtype=np.int64)
        self.missing = 0

    @property
    def n(self) -> int:
        """Number of non-missing values counted."""
        return int(self.counts.sum())

    def update(self, values: np.ndarray) -> None:
        x = _as_float(values).ravel()
        nan = np.isnan(x)
        self.missing += int(nan.sum())
        idx = np.searchsorted(self.edges, x[~nan], side="right")
        self.counts += np.bincount(idx, minlength=self.counts.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "edges": floats(self.edges),
            "counts": self.counts.tolist(),
            "missing": int(self.missing),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        check_state(d, cls.kind)
        h = cls(unfloats(d["edges"]))
        h.counts = np.asarray(d["counts"], dtype=np.int64)
        h.missing = int(d["missing"])
        return h


class HistogramBank(_Additive):
    """Histograms of many numeric features updated from one ``(n, F)`` matrix at once.

    This is the hot path of the monitor: one compiled pass bins a whole micro-batch.
    Features with fewer edges are padded with ``+inf`` edges, so their trailing bins stay
    empty in both reference and window (and contribute nothing to any divergence).
    """

    kind = "histogram_bank"
    version = 1
    _fields = ("counts", "missing")
    _layout = ("edges",)

    def __init__(self, edges: Sequence[Sequence[float]]):
        rows = [_as_float(e) for e in edges]
        if not rows:
            raise ValueError("HistogramBank needs at least one feature")
        for k, e in enumerate(rows):
            if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ValueError(f"edges of feature {k} must be finite and strictly increasing")
        width = max(e.size for e in rows)
        self.n_edges = np.array([e.size for e in rows], dtype=np.int64)
        self.edges = np.full((len(rows), max(width, 1)), np.inf)
        for k, e in enumerate(rows):
            self.edges[k, : e.size] = e
        self.counts = np.zeros((len(rows), max(width, 1) + 1), dtype=np.int64)
        self.missing = np.zeros(len(rows), dtype=np.int64)

    @property
    def n_features(self) -> int:
        return int(self.counts.shape[0])

    def feature_edges(self, k: int) -> np.ndarray:
        return self.edges[k, : self.n_edges[k]].copy()

    def feature(self, k: int) -> Histogram:
        """Feature ``k`` as a stand-alone :class:`Histogram`."""
        h = Histogram(self.feature_edges(k))
        h.counts = self.counts[k, : self.n_edges[k] + 1].copy()
        h.missing = int(self.missing[k])
        return h

    def update(self, matrix: np.ndarray) -> None:
        x = np.ascontiguousarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected an (n, {self.n_features}) matrix, got shape {x.shape}")
        _bin_matrix(x, self.edges, self.n_edges, self.counts, self.missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "edges": [floats(self.feature_edges(k)) for k in range(self.n_features)],
            "counts": self.counts.tolist(),
            "missing": self.missing.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistogramBank:
        check_state(d, cls.kind)
        b = cls([unfloats(e) for e in d["edges"]])
        b.counts = np.asarray(d["counts"], dtype=np.int64).reshape(b.counts.shape)
        b.missing = np.asarray(d["missing"], dtype=np.int64)
        return b


class StrCodes:
    """Maps values to integer codes by their ``str()``, remembering the codes of str values.

    ``code_of(str(v))`` decides; a batch is coded by one C-level dict lookup per value
    (``map(dict.get, ...)``) once its strings have been seen. Only ``str`` values are
    remembered: 1, 1.0 and True hash alike but ``str()`` names them differently. At most
    ``limit`` strings are kept, so a high-cardinality stream cannot grow it without bound.
    """

    _MISS = np.iinfo(np.int64).min

    def __init__(self, code_of, limit: int = 4096):
        self._code_of = code_of
        self._limit = int(limit)
        self._known: dict[str, int] = {}

    def codes(self, values: np.ndarray) -> np.ndarray:
        arr = np.asarray(values, dtype=object).ravel()
        out = np.fromiter(map(self._known.get, arr, repeat(self._MISS, arr.size)), dtype=np.int64, count=arr.size)
        miss = out == self._MISS
        if miss.any():
            sub = arr[miss]
            uniq, inverse = np.unique(sub.astype(str), return_inverse=True)
            code = np.array([self._code_of(u) for u in uniq], dtype=np.int64)
            out[miss] = code[inverse]
            known = self._known
            for v, c in zip(sub.tolist(), out[miss].tolist(), strict=True):
                if type(v) is str and len(known) < self._limit:
                    known[v] = c
        return out


# One StrCodes per vocabulary, shared by every sketch over it (a pane's sketches are new
# each pane; the codes of a vocabulary's strings are not).
_VOCAB_CODES: dict[tuple[str, ...], StrCodes] = {}


class CategoryCounts(_Additive):
    """Counts over a fixed vocabulary plus an ``unseen`` bucket; None/NaN/"" are missing."""

    kind = "category_counts"
    version = 1
    _fields = ("counts", "unseen", "missing")
    _layout = ("categories",)

    def __init__(self, categories: Sequence[str]):
        cats = [str(c) for c in categories]
        if len(set(cats)) != len(cats):
            raise ValueError("categories must be unique")
        self.categories = cats
        self._index = {c: i for i, c in enumerate(cats)}
        self.counts = np.zeros(len(cats), dtype=np.int64)
        self.unseen = 0
        self.missing = 0

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + int(self.unseen)

    def index_of(self, values: np.ndarray) -> np.ndarray:
        """Vocabulary index per value: -1 unseen, -2 missing (by ``str(value)``)."""
        arr = np.asarray(values, dtype=object).ravel()
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        key = tuple(self.categories)
        codes = _VOCAB_CODES.get(key)
        if codes is None:
            index = self._index
            codes = _VOCAB_CODES[key] = StrCodes(lambda u: -2 if u in ("None", "nan", "") else index.get(u, -1))
        return codes.codes(arr)

    def update(self, values: np.ndarray) -> None:
        self.update_codes(self.index_of(values))

    def update_codes(self, codes: np.ndarray) -> None:
        """Update from codes produced by :meth:`index_of`."""
        c = np.asarray(codes, dtype=np.int64)
        self.missing += int(np.count_nonzero(c == -2))
        self.unseen += int(np.count_nonzero(c == -1))
        ok = c[c >= 0]
        self.counts += np.bincount(ok, minlength=self.counts.size)

    def with_unseen(self) -> np.ndarray:
        """Counts with the unseen bucket appended (the layout drift tests compare)."""
        return np.append(self.counts, self.unseen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "unseen": int(self.unseen),
            "missing": int(self.missing),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CategoryCounts:
        check_state(d, cls.kind)
        c = cls(d["categories"])
        c.counts = np.asarray(d["counts"], dtype=np.int64)
        c.unseen = int(d["unseen"])
        c.missing = int(d["missing"])
        return c


SCORE_QUANTUM = 2.0**-32  # fixed-point unit of ScoreHistogram's score sums


class ScoreHistogram(_Additive):
    """Histogram of a score in ``[0, 1]`` per true class, with per-bin score sums.

    For binary models the score is P(class 1). Counts are ``(n_classes, n_bins)``;
    ``score_sums`` holds the sum of scores in each cell, which makes calibration error
    exact within a bin. Scores outside [0, 1] or NaN count as ``invalid``.

    The sums are kept in fixed point (integer multiples of 2**-32, exact up to 2**31
    events per cell), so adding them is associative: a window's sums do not depend on
    how its events were split into micro-batches, and a restarted run reproduces an
    uninterrupted one bit for bit. ``score_sums`` reads them as floats.
    """

    kind = "score_histogram"
    version = 2
    _fields = ("counts", "score_fx", "invalid")
    _layout = ("n_classes", "n_bins")

    def __init__(self, n_classes: int = 2, n_bins: int = 100):
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.n_classes = int(n_classes)
        self.n_bins = int(n_bins)
        self.counts = np.zeros((self.n_classes, self.n_bins), dtype=np.int64)
        self.score_fx = np.zeros((self.n_classes, self.n_bins), dtype=np.int64)
        self.invalid = 0

    @property
    def score_sums(self) -> np.ndarray:
        return self.score_fx * SCORE_QUANTUM

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.n_bins + 1)

    def bin_of(self, scores: np.ndarray) -> np.ndarray:
        s = _as_float(scores)
        return np.minimum((s * self.n_bins).astype(np.int64), self.n_bins - 1)

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        s = _as_float(scores).ravel()
        y = np.asarray(labels, dtype=np.int64).ravel()
        if s.shape != y.shape:
            raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
        ok = (s >= 0.0) & (s <= 1.0) & (y >= 0) & (y < self.n_classes)
        self.invalid += int(s.size - np.count_nonzero(ok))
        s, y = s[ok], y[ok]
        cell = y * self.n_bins + self.bin_of(s)
        size = self.n_classes * self.n_bins
        self.counts += np.bincount(cell, minlength=size).reshape(self.counts.shape)
        fx = np.rint(s / SCORE_QUANTUM).astype(np.int64)
        sums = np.zeros(size, dtype=np.int64)
        np.add.at(sums, cell, fx)
        self.score_fx += sums.reshape(self.counts.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "n_classes": self.n_classes,
            "n_bins": self.n_bins,
            "counts": self.counts.tolist(),
            "score_fx": self.score_fx.tolist(),
            "invalid": int(self.invalid),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreHistogram:
        check_state(d, cls.kind, versions=(1, 2))
        h = cls(d["n_classes"], d["n_bins"])
        h.counts = np.asarray(d["counts"], dtype=np.int64)
        if d["version"] == 1:  # float sums: convert (exact to the quantum)
            h.score_fx = np.rint(np.asarray(d["score_sums"], dtype=np.float64) / SCORE_QUANTUM).astype(np.int64)
        else:
            h.score_fx = np.asarray(d["score_fx"], dtype=np.int64).reshape(h.counts.shape)
        h.invalid = int(d["invalid"])
        return h


class ConfusionCounts(_Additive):
    """Confusion matrices per group: ``counts[group, true, predicted]``.

    Group codes index ``groups`` (the sensitive attribute's values); -1 means a group
    outside the vocabulary and is counted in ``unseen``.
    """

    kind = "confusion_counts"
    version = 1
    _fields = ("counts", "unseen")
    _layout = ("groups", "n_classes")

    def __init__(self, groups: Sequence[str] = ("all",), n_classes: int = 2):
        g = [str(x) for x in groups]
        if not g or len(set(g)) != len(g):
            raise ValueError("groups must be a non-empty list of unique names")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.groups = g
        self.n_classes = int(n_classes)
        self.counts = np.zeros((len(g), self.n_classes, self.n_classes), dtype=np.int64)
        self.unseen = 0

    def update(self, y_true: np.ndarray, y_pred: np.ndarray, group_codes: np.ndarray | None = None) -> None:
        # asarray with a dtype copies only when the input is not int64 already
        t = np.asarray(y_true, dtype=np.int64).ravel()
        p = np.asarray(y_pred, dtype=np.int64).ravel()
        g = np.zeros_like(t) if group_codes is None else np.asarray(group_codes, dtype=np.int64).ravel()
        if not (t.shape == p.shape == g.shape):
            raise ValueError(f"y_true {t.shape}, y_pred {p.shape} and groups {g.shape} differ")
        k = self.n_classes
        ok = (t >= 0) & (t < k) & (p >= 0) & (p < k)
        seen = ok & (g >= 0)
        self.unseen += int(np.count_nonzero(ok & (g < 0)))
        cell = (g[seen] * k + t[seen]) * k + p[seen]
        self.counts += np.bincount(cell, minlength=self.counts.size).reshape(self.counts.shape)

    def total(self) -> np.ndarray:
        """The confusion matrix over all groups."""
        return self.counts.sum(axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "groups": list(self.groups),
            "n_classes": self.n_classes,
            "counts": self.counts.tolist(),
            "unseen": int(self.unseen),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfusionCounts:
        check_state(d, cls.kind)
        c = cls(d["groups"], d["n_classes"])
        c.counts = np.asarray(d["counts"], dtype=np.int64)
        c.unseen = int(d["unseen"])
        return c


class Moments(_Additive):
    """Count, sum and sum of squares of several columns, shifted for numerical stability.

    Sums are taken of ``x - shift`` (use a reference mean as ``shift``), which keeps the
    variance accurate when the mean is large. NaN values are skipped per column.

    With ``quantum`` (for bounded columns such as log loss and Brier score) each value and
    each square is rounded to an integer multiple of it and summed as integers, so merge
    and subtract are exact and associative and a window does not depend on micro-batch
    boundaries; keep ``|x - shift| / quantum`` and ``(x - shift)**2 / quantum`` well below
    2**62 / events. Without it the sums are floats (unbounded columns: regression errors).
    """

    kind = "moments"
    version = 2
    _fields = ("count", "sum", "sumsq")
    _layout = ("shift", "quantum")

    def __init__(self, n_columns: int = 1, shift: Sequence[float] | float | None = None,
                 quantum: float | None = None):
        if n_columns < 1:
            raise ValueError(f"n_columns must be >= 1, got {n_columns}")
        if quantum is not None and not (quantum > 0 and np.isfinite(quantum)):
            raise ValueError(f"quantum must be a positive finite number or None, got {quantum!r}")
        self.shift = np.zeros(n_columns) if shift is None else np.broadcast_to(_as_float(shift), (n_columns,)).copy()
        self.quantum = None if quantum is None else float(quantum)
        dtype = np.float64 if quantum is None else np.int64
        self.count = np.zeros(n_columns, dtype=np.int64)
        self.sum = np.zeros(n_columns, dtype=dtype)
        self.sumsq = np.zeros(n_columns, dtype=dtype)

    def update(self, values: np.ndarray) -> None:
        x = _as_float(values)
        if x.ndim == 1:
            x = x.reshape(-1, 1) if self.count.size == 1 else x.reshape(1, -1)
        d = x - self.shift
        ok = ~np.isnan(d)
        d = np.where(ok, d, 0.0)
        self.count += ok.sum(axis=0)
        if self.quantum is None:
            self.sum += d.sum(axis=0)
            self.sumsq += (d * d).sum(axis=0)
        else:
            q = self.quantum
            self.sum += np.rint(d / q).astype(np.int64).sum(axis=0)
            self.sumsq += np.rint(d * d / q).astype(np.int64).sum(axis=0)

    def _sums(self) -> tuple[np.ndarray, np.ndarray]:
        if self.quantum is None:
            return self.sum, self.sumsq
        return self.sum * self.quantum, self.sumsq * self.quantum

    @property
    def mean(self) -> np.ndarray:
        total, _ = self._sums()
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.shift + total / self.count

    @property
    def variance(self) -> np.ndarray:
        """Sample variance (ddof=1)."""
        total, squares = self._sums()
        with np.errstate(invalid="ignore", divide="ignore"):
            m = total / self.count
            return np.maximum(squares - self.count * m * m, 0.0) / (self.count - 1)

    def with_quantum(self, quantum: float) -> Moments:
        """These float sums in fixed point (to migrate state written before ``quantum``)."""
        out = Moments(self.count.size, self.shift, quantum)
        out.count = self.count.copy()
        total, squares = self._sums()
        out.sum = np.rint(total / quantum).astype(np.int64)
        out.sumsq = np.rint(squares / quantum).astype(np.int64)
        return out

    def to_dict(self) -> dict[str, Any]:
        exact = self.quantum is not None
        return {
            "kind": self.kind,
            "version": self.version,
            "shift": floats(self.shift),
            "quantum": self.quantum,
            "count": self.count.tolist(),
            "sum": self.sum.tolist() if exact else floats(self.sum),
            "sumsq": self.sumsq.tolist() if exact else floats(self.sumsq),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        check_state(d, cls.kind, versions=(1, 2))
        quantum = d.get("quantum") if d["version"] == 2 else None
        m = cls(len(d["count"]), unfloats(d["shift"]), quantum)
        m.count = np.asarray(d["count"], dtype=np.int64)
        if quantum is None:
            m.sum = unfloats(d["sum"])
            m.sumsq = unfloats(d["sumsq"])
        else:
            m.sum = np.asarray(d["sum"], dtype=np.int64)
            m.sumsq = np.asarray(d["sumsq"], dtype=np.int64)
        return m


_KINDS = {
    c.kind: c for c in (Histogram, HistogramBank, CategoryCounts, ScoreHistogram, ConfusionCounts, Moments)
}


def sketch_from_dict(d: dict[str, Any]):
    """Rebuild any sketch from its ``to_dict`` form (closed registry of kinds)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in _KINDS:
        raise ValueError(f"unknown sketch kind {kind!r}; known kinds: {sorted(_KINDS)}")
    return _KINDS[kind].from_dict(d)
