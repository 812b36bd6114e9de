"""Slice dimensions of one model: which columns slice a window, and each event's codes.

A slice dimension is a numeric feature (its bins on the reference edges), a categorical
feature (its reference vocabulary) or a sensitive attribute (its groups). Every event gets
one small code per dimension (-1: missing or outside the vocabulary). Outcomes are counted
when the label arrives, so a waiting prediction carries its codes through the label join,
each in the bits its level count needs, packed into float32 payload columns (float32 holds
integers exactly up to 2**24): a 10-bin numeric feature takes 4 bits of a waiting prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from detectors.slices import SliceCounts

__all__ = ["SliceLayout", "MAX_LEVELS"]

#: A dimension has at most 255 levels (its code + 1 then fits in 8 bits).
MAX_LEVELS = 255
_WORD_BITS = 24  # integers a float32 holds exactly


@numba.njit(cache=True)
def _bin_codes(numeric, cols, dims, edges, edge_off, edge_len, out):
    """``out[:, dims[t]]`` = the bin of ``numeric[:, cols[t]]`` on its edges, as
    ``np.searchsorted(edges, x, side="right")`` (the number of edges <= x), or -1 for NaN:
    every numeric dimension of a batch in one pass instead of three array ops each."""
    for r in range(numeric.shape[0]):
        for t in range(cols.shape[0]):
            x = numeric[r, cols[t]]
            if np.isnan(x):
                out[r, dims[t]] = -1
                continue
            lo, hi = edge_off[t], edge_off[t] + edge_len[t]
            if hi - lo <= 32:
                # a short sorted edge list: counting without branches beats a binary
                # search, whose branches on data mispredict
                c = 0
                for k in range(lo, hi):
                    c += edges[k] <= x
                out[r, dims[t]] = c
                continue
            base = lo
            while lo < hi:
                mid = (lo + hi) >> 1
                if edges[mid] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            out[r, dims[t]] = lo - base


@numba.njit(cache=True)
def _pack(codes, cols, shifts, out):
    """``out[r, cols[d]]`` |= (code + 1) << shifts[d], as float32 (words < 2**24: exact)."""
    for r in range(codes.shape[0]):
        for c in range(out.shape[1]):
            w = 0
            for d in range(codes.shape[1]):
                if cols[d] == c:
                    w |= (codes[r, d] + 1) << shifts[d]
            out[r, c] = np.float32(w)


@numba.njit(cache=True)
def _unpack(packed, cols, shifts, masks, out):
    """Inverse of :func:`_pack`: each dimension's bit field of its column, minus 1."""
    for r in range(packed.shape[0]):
        for d in range(out.shape[1]):
            w = np.int64(np.rint(packed[r, cols[d]]))
            out[r, d] = ((w >> shifts[d]) & masks[d]) - 1


def _bin_names(edges: np.ndarray) -> list[str]:
    e = [f"{float(x):.6g}" for x in edges]
    if not e:
        return ["all"]
    return [f"<{e[0]}"] + [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:], strict=True)] + [f">={e[-1]}"]


@dataclass
class SliceLayout:
    """Dimensions, their levels and the pairs counted for one model."""

    dims: list[str]
    kinds: list[str]  # "numeric" | "categorical" | "sensitive"
    index: list[int]  # column of that kind in a batch (numeric column, categorical list, attribute)
    levels: list[list[str]]
    edges: list[np.ndarray | None]
    pairs: list[tuple[int, int]]
    max_cells: int
    # empty counts built once: a pane copies it instead of rebuilding the slice names
    _template: SliceCounts | None = field(default=None, init=False, repr=False, compare=False)
    _packing: list[tuple[int, int, int]] | None = field(default=None, init=False, repr=False, compare=False)
    _binning: tuple[np.ndarray, ...] | None = field(default=None, init=False, repr=False, compare=False)
    _plan_np: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False,
                                                                       compare=False)

    @classmethod
    def build(cls, slices_cfg, numeric: list[str], numeric_edges: list[np.ndarray], categorical: list[str],
              vocabularies: list[list[str]], sensitive: list[str], groups: list[list[str]]) -> SliceLayout:
        wanted = list(slices_cfg.dimensions) or [*numeric, *categorical, *sensitive]
        dims, kinds, index, levels, edges = [], [], [], [], []
        for name in wanted:
            if name in numeric:
                j = numeric.index(name)
                kinds.append("numeric")
                e = np.asarray(numeric_edges[j], dtype=np.float64)
                levels.append(_bin_names(e))
                edges.append(e)
            elif name in categorical:
                j = categorical.index(name)
                kinds.append("categorical")
                levels.append([f"{v}" for v in vocabularies[j]])
                edges.append(None)
            else:
                j = sensitive.index(name)
                kinds.append("sensitive")
                levels.append([f"{v}" for v in groups[j]])
                edges.append(None)
            if len(levels[-1]) > MAX_LEVELS:
                raise ValueError(f"slice dimension {name!r} has {len(levels[-1])} levels; at most {MAX_LEVELS}")
            dims.append(name)
            index.append(j)
        partner = set(slices_cfg.pair_with)
        pairs = [
            (i, j)
            for i in range(len(dims))
            for j in range(i + 1, len(dims))
            if kinds[j] in partner or kinds[i] in partner
            if not (kinds[i] == kinds[j] == "numeric" and "numeric" not in partner)
        ]
        out = cls(dims, kinds, index, levels, edges, pairs, slices_cfg.max_cells)
        out.counts()  # builds the index now: a layout over max_cells fails at start-up
        return out

    @property
    def n_columns(self) -> int:
        """float32 join payload columns the packed codes need."""
        return max((col for col, _, _ in self._plan()), default=-1) + 1

    def _plan(self) -> list[tuple[int, int, int]]:
        """Per dimension (column, shift, bits): each code + 1 (0 = missing) takes the bits its
        level count needs, packed first-fit into the 24 bits a float32 holds exactly; a
        waiting prediction carries this in the join table, so bits are bytes of memory."""
        if self._packing is None:
            plan, used = [], []
            for lv in self.levels:
                bits = max(1, (len(lv)).bit_length())  # code + 1 ranges over 0..len(lv)
                col = next((c for c, u in enumerate(used) if u + bits <= _WORD_BITS), len(used))
                if col == len(used):
                    used.append(0)
                plan.append((col, used[col], bits))
                used[col] += bits
            self._packing = plan
        return self._packing

    def counts(self) -> SliceCounts:
        """Empty counts for a new pane; the layout's index is built once and shared."""
        if self._template is None:
            self._template = SliceCounts(self.dims, self.levels, self.pairs, max_cells=self.max_cells)
        return self._template.zeros()

    def codes(self, numeric: np.ndarray, categorical_codes: list[np.ndarray], group_codes: np.ndarray) -> np.ndarray:
        """(n, n_dims) int64 codes of a batch; categorical codes come precomputed (-1: unseen)."""
        n = numeric.shape[0] if numeric.ndim == 2 else len(group_codes)
        out = np.full((n, len(self.dims)), -1, dtype=np.int64)
        bins = self._bins()
        if bins is not None and n:
            _bin_codes(np.asarray(numeric, dtype=np.float64), *bins, out)
        for d, (kind, j) in enumerate(zip(self.kinds, self.index, strict=True)):
            if kind == "categorical":
                out[:, d] = categorical_codes[j]
            elif kind == "sensitive":
                out[:, d] = group_codes[:, j]
        return out

    def _bins(self) -> tuple[np.ndarray, ...] | None:
        """The numeric dimensions' (columns, dimensions, edges end to end, offsets, lengths)
        for :func:`_bin_codes`, built once; None when no dimension is numeric."""
        if self._binning is None:
            num = [d for d, kind in enumerate(self.kinds) if kind == "numeric"]
            if not num:
                self._binning = ()
            else:
                lens = np.array([len(self.edges[d]) for d in num], dtype=np.int64)
                self._binning = (
                    np.array([self.index[d] for d in num], dtype=np.int64),
                    np.array(num, dtype=np.int64),
                    np.concatenate([np.asarray(self.edges[d], dtype=np.float64) for d in num]),
                    np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64),
                    lens,
                )
        return self._binning or None

    def _plan_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_plan` as (columns, shifts, masks) arrays for the compiled passes."""
        if self._plan_np is None:
            plan = self._plan()
            self._plan_np = (np.array([c for c, _, _ in plan], dtype=np.int64),
                             np.array([s for _, s, _ in plan], dtype=np.int64),
                             np.array([(1 << b) - 1 for _, _, b in plan], dtype=np.int64))
        return self._plan_np

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Codes as float32 columns (code + 1, 0 = missing), packed as :meth:`_plan` says."""
        out = np.zeros((codes.shape[0], self.n_columns), dtype=np.float32)
        cols, shifts, _ = self._plan_arrays()
        _pack(np.ascontiguousarray(codes, dtype=np.int64), cols, shifts, out)
        return out

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`pack`; all-zero (or pre-upgrade) payloads read as missing."""
        n = packed.shape[0]
        if packed.shape[1] < self.n_columns:
            return np.full((n, len(self.dims)), -1, dtype=np.int64)
        out = np.empty((n, len(self.dims)), dtype=np.int64)
        _unpack(np.asarray(packed), *self._plan_arrays(), out)
        return out
