"""Where a model fails: error and selection counts per slice, and the slices that depart.

A slice is one level of one dimension (a numeric feature's reference bin, a category, a
sensitive group) or one combination of levels of a pair of dimensions. :class:`SliceCounts`
keeps, per slice, joined outcomes and errors and predictions and positive predictions; it
is a fixed array of cells set by the layout, so a pane costs the same memory whatever its
traffic, and panes merge and subtract exactly. :func:`rank_slices` orders the slices by
their share of a drop, ``(slice rate - rest-of-window rate) x slice share``, each with a
Newcombe interval, a two-proportion z-test and Benjamini-Hochberg q-value across the
slices; :func:`degraded_subgroup` is the standing rule's statistic, the interval bound of
the worst significant slice, which can fire while the global metric looks fine.

With each outcome's expected error (from calibrated scores: ``1 - p`` for a positive
prediction, ``p`` for a negative one), ``what="excess_error"`` judges a slice's errors
beyond what the model's own confidence predicts. Plain error rates differ by nature
between slices where the model is sure and slices near its threshold; the excess is
zero in every slice of a calibrated model, so a standing rule on it fires on a real
departure (a group the model is over-confident about), not on the score's spread.

Below, all the excess errors are in one region x channel cell, so that cell, its region
and its channel have nearly the same contribution; the pair comes first because the
region and the channel without it do not depart from the rest.

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> codes = np.column_stack([rng.integers(0, 3, 20000), rng.integers(0, 2, 20000)])
>>> bad = (codes[:, 0] == 2) & (codes[:, 1] == 1)
>>> errors = rng.random(20000) < np.where(bad, 0.3, 0.1)
>>> sc = SliceCounts(["region", "channel"], [["n", "s", "e"], ["web", "app"]], pairs=[(0, 1)])
>>> sc.n_cells, sc.names[-1]
(11, 'region=e&channel=app')
>>> sc.update_outcomes(codes, errors)
>>> for r in rank_slices(sc, top=3):
...     print(r.name, r.significant, round(r.difference, 3), round(r.contribution, 4))
region=e&channel=app True 0.193 0.0324
region=e True 0.095 0.0319
channel=app True 0.062 0.0313
>>> value, worst = degraded_subgroup(sc)
>>> worst.name, round(value, 3)
('region=e&channel=app', 0.177)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from scipy import special

from detectors._serde import check_state
from detectors.intervals import newcombe_difference_interval, z_value
from detectors.multiple_testing import benjamini_hochberg
from detectors.sketch import _Additive

__all__ = ["SliceCounts", "SliceResult", "rank_slices", "degraded_subgroup", "WHATS", "DIRECTIONS"]

#: What a slice's rate is of: joined outcomes' errors, those errors beyond the expected
#: (confidence-adjusted), or predictions' positives.
WHATS = ("error", "excess_error", "selection")
#: Which departures count as harm: higher rate, lower rate, or both.
DIRECTIONS = ("above", "below", "either")

_COUNT_FIELDS = ("n_out", "err", "n_pred", "sel", "exp_err")
#: Fixed-point unit of the expected-error sums: integers add exactly and associatively,
#: so a window does not depend on micro-batch boundaries (each event adds <= 2**24).
EXPECTED_QUANTUM = 2.0**-24


@numba.njit(cache=True, error_model="numpy")
def _accumulate(codes, flags, units, single_off, pi, pj, nlev_j, pair_off, n_out, x_out, w_out):
    """Add each event to its cell in every dimension and pair: ``n_out`` +1, ``x_out``
    +flag, and ``w_out`` +units when ``units`` is given (length > 0). One pass, in place,
    no per-batch index arrays (a pane sees hundreds of cells per event)."""
    n, d = codes.shape
    weigh = units.shape[0] > 0
    for r in range(n):
        f = flags[r]
        u = units[r] if weigh else 0
        # flags are 0/1 and most are 0 (errors, positive predictions): a row's x cells are
        # written only when its flag is set, and a row's weights only when it has any
        hit = f != 0
        w = weigh and u != 0
        for k in range(d):
            c = codes[r, k]
            if c >= 0:
                cell = single_off[k] + c
                n_out[cell] += 1
                if hit:
                    x_out[cell] += f
                if w:
                    w_out[cell] += u
        for q in range(pi.shape[0]):
            a = codes[r, pi[q]]
            b = codes[r, pj[q]]
            if a >= 0 and b >= 0:
                cell = pair_off[q] + a * nlev_j[q] + b
                n_out[cell] += 1
                if hit:
                    x_out[cell] += f
                if w:
                    w_out[cell] += u


_NO_UNITS = np.zeros(0, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _slice_index(dims: tuple[str, ...], levels: tuple[tuple[str, ...], ...],
                 pairs: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """The cell index of a slice layout (see :class:`SliceCounts`); arrays read-only."""
    nlev = np.array([len(lv) for lv in levels], dtype=np.int64)
    single_off = np.concatenate([[0], np.cumsum(nlev)[:-1]]).astype(np.int64)
    n_single = int(nlev.sum())
    pi = np.array([i for i, _ in pairs], dtype=np.int64)
    pj = np.array([j for _, j in pairs], dtype=np.int64)
    sizes = nlev[pi] * nlev[pj]
    pair_off = n_single + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    names = [f"{d}={v}" for d, lv in zip(dims, levels, strict=True) for v in lv]
    parents = [np.zeros((0, 2), dtype=np.int64)]
    for i, j in pairs:
        li, lj = levels[i], levels[j]
        names += [f"{dims[i]}={a}&{dims[j]}={c}" for a in li for c in lj]
        a = np.repeat(np.arange(len(li)), len(lj))
        c = np.tile(np.arange(len(lj)), len(li))
        parents.append(np.column_stack([single_off[i] + a, single_off[j] + c]))
    out = {"_nlev": nlev, "_single_off": single_off, "_n_single": n_single, "_pi": pi, "_pj": pj,
           "_nlev_pj": nlev[pj], "_pair_off": pair_off, "n_cells": n_single + int(sizes.sum()),
           # The two single cells each pair cell lies in, for telling a slice apart from a
           # more specific slice inside it (see rank_slices).
           "_parents": np.concatenate(parents).astype(np.int64), "names": tuple(names)}
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return out


class SliceCounts(_Additive):
    """Per-slice counts of outcomes, errors, predictions and positive predictions, and
    sums of the outcomes' expected errors (in units of :data:`EXPECTED_QUANTUM`).

    Cells are every level of every dimension, then for each pair ``(i, j)`` of dimension
    indices every ``(level_i, level_j)`` combination (level ``a`` of ``i`` and ``c`` of
    ``j`` at ``offset + a * len(levels[j]) + c``). A code of -1 (missing, unseen) is in
    no cell of its dimension but is in the totals, so the rest of a slice is everything
    else in the window.
    """

    kind = "slice_counts"
    version = 1
    _fields = (*_COUNT_FIELDS, "total_out", "total_err", "total_pred", "total_sel", "total_exp", "total_out_exp")
    _layout = ("dims", "levels", "pairs")

    def __init__(
        self,
        dims: Sequence[str],
        levels: Sequence[Sequence[str]],
        pairs: Sequence[tuple[int, int]] = (),
        max_cells: int = 20000,
    ):
        self.dims = [str(d) for d in dims]
        self.levels = [[str(v) for v in lv] for lv in levels]
        self.pairs = [(int(i), int(j)) for i, j in pairs]
        self.max_cells = max_cells
        if not self.dims:
            raise ValueError("dims must name at least one dimension, got []")
        if len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must be distinct, got {self.dims!r}")
        if len(self.levels) != len(self.dims):
            raise ValueError(
                f"levels must give one list per dimension: {len(self.dims)} dims, "
                f"{len(self.levels)} level lists"
            )
        for d, lv in zip(self.dims, self.levels, strict=True):
            if not lv or len(set(lv)) != len(lv):
                raise ValueError(f"levels of dimension {d!r} must be non-empty and distinct, got {lv!r}")
        n_dims = len(self.dims)
        seen: set[frozenset[int]] = set()
        for i, j in self.pairs:
            if not (0 <= i < n_dims and 0 <= j < n_dims) or i == j:
                raise ValueError(
                    f"pairs must be (i, j) with i != j indices into dims (0..{n_dims - 1}), got {(i, j)!r}"
                )
            if frozenset((i, j)) in seen:
                # (i, j) and (j, i) hold the same events under two names.
                raise ValueError(
                    f"pairs lists dimensions {self.dims[min(i, j)]!r} and {self.dims[max(i, j)]!r} twice"
                )
            seen.add(frozenset((i, j)))
        if isinstance(max_cells, bool) or not isinstance(max_cells, int | np.integer) or max_cells < 1:
            raise ValueError(f"max_cells must be an integer >= 1, got {max_cells!r}")
        self._build_index()
        if self.n_cells > max_cells:
            raise ValueError(
                f"slice layout has {self.n_cells} cells ({self._n_single} single levels + "
                f"{self.n_cells - self._n_single} pair combinations), more than "
                f"max_cells={max_cells}; drop pairs or dimensions, or raise max_cells"
            )
        self._reset()

    def _build_index(self) -> None:
        nlev = np.array([len(lv) for lv in self.levels], dtype=np.int64)
        sizes = nlev[[i for i, _ in self.pairs]] * nlev[[j for _, j in self.pairs]] if self.pairs else nlev[:0]
        n_cells = int(nlev.sum()) + int(sizes.sum())
        if n_cells > self.max_cells:
            self.n_cells, self._n_single = n_cells, int(nlev.sum())
            return  # __init__ refuses the layout; spare building a huge index first
        # Shared by every sketch of one layout (a window merges hundreds of panes restored
        # from their dicts): built once, read-only.
        self.__dict__.update(_slice_index(tuple(self.dims), tuple(tuple(lv) for lv in self.levels),
                                          tuple(self.pairs)))

    def _reset(self) -> None:
        for f in _COUNT_FIELDS:
            setattr(self, f, np.zeros(self.n_cells, dtype=np.int64))
        self.total_out = 0
        self.total_err = 0
        self.total_pred = 0
        self.total_sel = 0
        self.total_exp = 0  # sum of expected errors, in EXPECTED_QUANTUM units
        self.total_out_exp = 0  # outcomes that came with an expected error

    # -- updates --------------------------------------------------------------------------
    def _check_batch(self, codes: np.ndarray, flags: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(codes)
        f = np.asarray(flags)
        if c.ndim != 2 or c.shape[1] != len(self.dims):
            raise ValueError(f"codes must be an (n, {len(self.dims)}) array, got shape {c.shape}")
        if c.shape[0] and not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {c.dtype}")
        if f.shape != (c.shape[0],):
            raise ValueError(f"{what} must be an ({c.shape[0]},) array like codes' rows, got shape {f.shape}")
        c = np.ascontiguousarray(c, dtype=np.int64)
        bad = (c < -1) | (c >= self._nlev)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"codes of dimension {self.dims[col]!r} must be -1 (missing) or in "
                f"0..{self._nlev[col] - 1}, got {int(c[row, col])} at row {int(row)}"
            )
        fi = np.ascontiguousarray(f, dtype=np.int64)
        if np.any(fi != f) or np.any((fi != 0) & (fi != 1)):
            raise ValueError(f"{what} must be 0/1 (or bool), got values outside {{0, 1}}")
        return c, fi

    def update_outcomes(self, codes: np.ndarray, errors: np.ndarray, expected: np.ndarray | None = None) -> None:
        """Joined outcomes: ``codes`` (n, n_dims) per event, ``errors`` 1 if misclassified,
        and optionally ``expected`` (n,) each outcome's probability of error in [0, 1]
        (needed for ``what="excess_error"``, then for every outcome)."""
        c, e = self._check_batch(codes, errors, "errors")
        if c.shape[0] == 0:
            return
        units = _NO_UNITS
        if expected is not None:
            x = np.asarray(expected, dtype=np.float64)
            if x.shape != (c.shape[0],):
                raise ValueError(f"expected must be an ({c.shape[0]},) array like codes' rows, got shape {x.shape}")
            ok = (x >= 0.0) & (x <= 1.0)
            if not ok.all():
                row = int(np.flatnonzero(~ok)[0])
                raise ValueError(f"expected errors must be probabilities in [0, 1], got {float(x[row])!r} at row {row}")
            units = np.rint(x / EXPECTED_QUANTUM).astype(np.int64)
        _accumulate(c, e, units, self._single_off, self._pi, self._pj, self._nlev_pj, self._pair_off,
                    self.n_out, self.err, self.exp_err)
        self.total_out += int(c.shape[0])
        self.total_err += int(e.sum())
        if expected is not None:
            self.total_exp += int(units.sum())
            self.total_out_exp += int(c.shape[0])

    def update_predictions(self, codes: np.ndarray, selected: np.ndarray) -> None:
        """Every prediction: ``codes`` (n, n_dims), ``selected`` 1 if predicted positive."""
        c, s = self._check_batch(codes, selected, "selected")
        if c.shape[0] == 0:
            return
        _accumulate(c, s, _NO_UNITS, self._single_off, self._pi, self._pj, self._nlev_pj, self._pair_off,
                    self.n_pred, self.sel, self.exp_err)
        self.total_pred += int(c.shape[0])
        self.total_sel += int(s.sum())

    def zeros(self) -> SliceCounts:
        """Empty counts of the same layout, sharing its (immutable) index: a new pane's
        counts without rebuilding tens of thousands of slice names."""
        out = object.__new__(SliceCounts)
        out.__dict__.update(self.__dict__)
        out._reset()
        return out

    # -- state ----------------------------------------------------------------------------
    def copy(self) -> SliceCounts:
        # The layout is never mutated, so a copy shares it and duplicates only the counts
        # (a round trip through to_dict would rebuild tens of thousands of names).
        out = object.__new__(SliceCounts)
        out.__dict__.update(self.__dict__)
        for f in _COUNT_FIELDS:
            setattr(out, f, getattr(self, f).copy())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "dims": list(self.dims),
            "levels": [list(lv) for lv in self.levels],
            "pairs": [[i, j] for i, j in self.pairs],
            "max_cells": int(self.max_cells),
            **{f: getattr(self, f).tolist() for f in _COUNT_FIELDS},
            "total_out": int(self.total_out),
            "total_err": int(self.total_err),
            "total_pred": int(self.total_pred),
            "total_sel": int(self.total_sel),
            "total_exp": int(self.total_exp),
            "total_out_exp": int(self.total_out_exp),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SliceCounts:
        check_state(d, cls.kind)
        out = cls(d["dims"], d["levels"], [tuple(p) for p in d["pairs"]], max_cells=int(d["max_cells"]))
        for f in _COUNT_FIELDS:
            arr = np.asarray(d[f], dtype=np.int64)
            if arr.shape != (out.n_cells,):
                raise ValueError(f"slice_counts state: {f} has shape {arr.shape}, layout has {out.n_cells} cells")
            setattr(out, f, arr)
        for f in ("total_out", "total_err", "total_pred", "total_sel", "total_exp", "total_out_exp"):
            setattr(out, f, int(d[f]))
        return out

    def __repr__(self) -> str:
        return (
            f"SliceCounts(dims={self.dims!r}, pairs={self.pairs!r}, n_cells={self.n_cells}, "
            f"outcomes={self.total_out}, predictions={self.total_pred})"
        )


# ------------------------------------------------------------------------------ results


def _json_num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True)
class SliceResult:
    """One slice against the rest of the window.

    ``rate`` is the slice's error (or selection) rate, ``rest_rate`` that of every other
    event of the window; ``difference = rate - rest_rate`` with its Newcombe hybrid-score
    interval; ``contribution = difference * share`` is the slice's part of the gap
    between the window and what it would be at the rest's rate (``share = n / total``).
    ``p_value`` is the pooled two-proportion z-test, ``q_value`` its BH-adjusted value
    across the eligible slices, ``significant`` means ``q_value <= fdr``. For
    ``excess_error`` the rates are observed minus expected error rates, the interval is
    Wald (Agresti-Caffo) and the z-test uses the expected rates' binomial variance.
    """

    name: str
    n: int
    share: float
    rate: float
    rest_rate: float
    difference: float
    ci_low: float
    ci_high: float
    contribution: float
    p_value: float
    q_value: float
    significant: bool

    kind = "slice_result"
    version = 1
    _FLOATS = ("share", "rate", "rest_rate", "difference", "ci_low", "ci_high", "contribution",
               "p_value", "q_value")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "version": self.version, "name": self.name, "n": int(self.n)}
        out.update({f: _json_num(getattr(self, f)) for f in self._FLOATS})
        out["significant"] = bool(self.significant)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SliceResult:
        check_state(dict(d), cls.kind)
        return cls(
            name=str(d["name"]),
            n=int(d["n"]),
            **{f: _num(d[f]) for f in cls._FLOATS},
            significant=bool(d["significant"]),
        )


# ------------------------------------------------------------------------------ ranking


def _check_args(counts, what, min_size, confidence, fdr, direction) -> None:
    if not isinstance(counts, SliceCounts):
        raise TypeError(f"counts must be a SliceCounts, got {type(counts).__name__}")
    if what not in WHATS:
        raise ValueError(f"what must be one of {list(WHATS)}, got {what!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    z_value(confidence)  # validates confidence
    if not 0.0 < float(fdr) < 1.0:
        raise ValueError(f"fdr must be in (0, 1), got {fdr!r}")


def _difference_interval(what, x1, n1, e1, x2, n2, e2, confidence):
    """Interval of (rate 1 - rate 2): Newcombe's for error and selection rates; for excess
    errors (``e`` the expected errors) Wald with Agresti-Caffo's added successes, whose
    binomial variance at the observed rate bounds the Poisson-binomial one of errors with
    varying probabilities."""
    if what != "excess_error":
        return newcombe_difference_interval(x1, n1, x2, n2, confidence)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (x1 - e1) / n1 - (x2 - e2) / n2
        a1, a2 = (x1 + 1.0) / (n1 + 2.0), (x2 + 1.0) / (n2 + 2.0)
        half = z_value(confidence) * np.sqrt(a1 * (1.0 - a1) / (n1 + 2.0) + a2 * (1.0 - a2) / (n2 + 2.0))
    return diff - half, diff + half


def _significant_q(p: np.ndarray, fdr: float) -> np.ndarray:
    """The q-values of :func:`benjamini_hochberg` over ``p`` (NaN = no test), bit for bit
    where ``q <= fdr``; every other entry is NaN or above ``fdr``, so "significant" is the same.

    The standing rule runs every pane over thousands of cells, of which few can be
    significant, and sorting them all was most of its cost. Only ranks with
    ``p <= rank * fdr / m <= fdr`` are rejected, and a p-value above ``2 * fdr`` scales to
    more than ``fdr`` at any rank (``m / rank >= 1``, with room for rounding), so the
    step-up minimum of a rejected rank never reaches past the p-values <= ``2 * fdr``. Those
    sort first among all p-values (ties keep index order, as the stable sort does), so
    their ranks, scaled values and step-up minima are the full procedure's.
    """
    q = np.full(p.shape, np.nan)
    m = int(np.count_nonzero(~np.isnan(p)))
    with np.errstate(invalid="ignore"):
        cand = np.flatnonzero(p <= 2.0 * fdr)
    if cand.size == 0:
        return q
    pc = p[cand]
    order = np.argsort(pc, kind="stable")
    scaled = pc[order] * m / np.arange(1, cand.size + 1)
    q[cand[order]] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def _cells(counts: SliceCounts, what: str, min_size: int, confidence: float, fdr: float,
           every_q: bool = True) -> dict[str, Any]:
    """Every statistic of every cell as arrays; NaN (and not significant) where ineligible.
    Intervals are left to :func:`_bounds`, for the few cells a caller reports. With
    ``every_q=False`` q-values are exact only where significant (see :func:`_significant_q`)."""
    if what == "selection":
        x, n, total_x, total_n = counts.sel, counts.n_pred, counts.total_sel, counts.total_pred
    else:
        x, n, total_x, total_n = counts.err, counts.n_out, counts.total_err, counts.total_out
    if what == "excess_error":
        if counts.total_out_exp != counts.total_out:
            raise ValueError(
                f"excess_error needs an expected error for every outcome: {counts.total_out_exp} "
                f"of {counts.total_out} outcomes came with one"
            )
        e, total_e = counts.exp_err * EXPECTED_QUANTUM, counts.total_exp * EXPECTED_QUANTUM
    else:
        e, total_e = np.zeros(counts.n_cells), 0.0
    x = x.astype(np.float64)
    n = n.astype(np.float64)
    xr = total_x - x
    nr = total_n - n
    er = total_e - e
    eligible = (n >= min_size) & (nr >= min_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (x - e) / n
        rest = (xr - er) / nr
        diff = rate - rest
        if what == "excess_error":
            # under calibration errors - expected has mean 0 and a variance at most the
            # binomial one at the mean expected rate (Poisson-binomial <= binomial)
            es, ers = e / n, er / nr
            se = np.sqrt(es * (1.0 - es) / n + ers * (1.0 - ers) / nr)
        else:
            pooled = total_x / total_n if total_n else np.nan
            se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / nr))
        # A window with no errors (or only errors) has every rate equal: no evidence.
        p = np.where(se > 0, 2.0 * special.ndtr(-np.abs(diff) / se), 1.0)  # two-sided normal tail
    p = np.where(eligible, p, np.nan)
    if every_q:
        _, q = benjamini_hochberg(p[eligible], alpha=fdr)
        q_all = np.full(counts.n_cells, np.nan)
        q_all[eligible] = q
    else:
        q_all = _significant_q(p, fdr)  # NaN outside eligible: the same m as above
    return {
        "what": what, "confidence": confidence, "x": x, "n": n, "e": e, "xr": xr, "nr": nr, "er": er,
        "total_x": float(total_x), "total_n": float(total_n), "total_e": float(total_e),
        "eligible": eligible, "rate": rate, "rest": rest, "diff": diff,
        "share": n / total_n if total_n else np.full(counts.n_cells, np.nan),
        "p": p, "q": q_all, "significant": eligible & (q_all <= fdr),
    }


def _in_direction(diff: np.ndarray, direction: str) -> np.ndarray:
    if direction == "above":
        return diff > 0
    if direction == "below":
        return diff < 0
    return np.isfinite(diff)


def _explainer(
    counts: SliceCounts, s: dict[str, Any], candidate: np.ndarray, harm: np.ndarray, confidence: float
) -> np.ndarray:
    """Per cell, the pair cell inside it that explains its departure, or -1.

    The contribution of ``region=r`` equals that of ``region=r&channel=c`` when all of
    the region's excess errors are in that channel: contribution is excess events over
    the window, whatever the slice's size. Ranking on it alone would order the region and
    the pair by noise. A single slice is explained by a pair cell inside it when the pair
    departs the same way and is significant, and the single slice without that pair does
    not depart from the events outside the single slice (its Newcombe interval reaches
    no-harm). Of several such pairs the most harmful explains it.
    """
    out = np.full(counts.n_cells, -1, dtype=np.int64)
    parents = counts._parents
    if parents.size == 0:
        return out
    child = np.repeat(np.arange(counts._n_single, counts.n_cells), 2)
    parent = parents.ravel()
    sign = np.sign(s["diff"])
    keep = candidate[parent] & candidate[child] & (sign[parent] == sign[child])
    parent, child = parent[keep], child[keep]
    x, n, e = s["x"], s["n"], s["e"]
    rem_x, rem_n, rem_e = x[parent] - x[child], n[parent] - n[child], e[parent] - e[child]
    low, high = _difference_interval(
        s["what"], rem_x, rem_n, rem_e, s["total_x"] - x[parent], s["total_n"] - n[parent],
        s["total_e"] - e[parent], confidence,
    )
    bound = np.where(sign[parent] > 0, low, -high)
    with np.errstate(invalid="ignore"):
        still = bound > 0
    hit = (rem_n > 0) & ~still
    parent, child = parent[hit], child[hit]
    # Least harmful first, so that the assignment below leaves the most harmful pair.
    order = np.lexsort((-child, harm[child]))
    out[parent[order]] = child[order]
    return out


def _bounds(s: dict[str, Any], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The difference intervals of the cells ``idx`` (a window has thousands of cells; an
    alert reports a handful, and the subgroup rule needs only the significant ones)."""
    return _difference_interval(s["what"], s["x"][idx], s["n"][idx], s["e"][idx], s["xr"][idx], s["nr"][idx],
                                s["er"][idx], s["confidence"])


def _result(counts: SliceCounts, s: dict[str, Any], k: int, low: float, high: float) -> SliceResult:
    return SliceResult(
        name=counts.names[k],
        n=int(s["n"][k]),
        share=float(s["share"][k]),
        rate=float(s["rate"][k]),
        rest_rate=float(s["rest"][k]),
        difference=float(s["diff"][k]),
        ci_low=float(low),
        ci_high=float(high),
        contribution=float(s["diff"][k] * s["share"][k]),
        p_value=float(s["p"][k]),
        q_value=float(s["q"][k]),
        significant=bool(s["significant"][k]),
    )


def rank_slices(
    counts: SliceCounts,
    what: str = "error",
    min_size: int = 30,
    confidence: float = 0.95,
    fdr: float = 0.05,
    top: int = 10,
    direction: str = "above",
) -> list[SliceResult]:
    """The slices that depart most from the rest of the window, worst first.

    ``what="error"`` ranks the error rate of joined outcomes, ``"excess_error"`` their
    errors beyond the expected (outcomes updated with ``expected``), ``"selection"`` the
    positive-prediction rate of all predictions. A slice is eligible when it and its rest
    both have at least ``min_size`` events; q-values are BH across all eligible slices.
    ``direction`` keeps slices above the rest (``"above"``, higher error), below it
    (``"below"``, e.g. a selection-rate drop) or both (``"either"``, ranked by
    ``|contribution|``). Order: significant slices first, largest harm first, except
    that a single slice explained by a more specific significant pair inside it (see
    :func:`_explainer`) comes right after that pair; then the rest.
    """
    _check_args(counts, what, min_size, confidence, fdr, direction)
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    s = _cells(counts, what, min_size, confidence, fdr)
    keep = s["eligible"] & _in_direction(s["diff"], direction)
    if not keep.any():
        return []
    contribution = s["diff"] * s["share"]
    harm = {"above": contribution, "below": -contribution, "either": np.abs(contribution)}[direction]
    explainer = _explainer(counts, s, keep & s["significant"], harm, confidence)
    explained = explainer >= 0
    # An explained single slice is listed right after the pair that explains it, so the
    # alert reads "this pair, and its region and channel only through it", instead of
    # sinking below pairs that overlap the same cell by chance.
    sort_harm = np.where(explained, harm[np.maximum(explainer, 0)], harm)
    tier = np.where(s["significant"], 0, 1)
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((idx, s["p"][idx], explained[idx], -sort_harm[idx], tier[idx]))]
    shown = order[:top]
    low, high = _bounds(s, shown)
    return [_result(counts, s, int(k), lo, hi) for k, lo, hi in zip(shown, low, high, strict=True)]


def degraded_subgroup(
    counts: SliceCounts,
    what: str = "error",
    min_size: int = 30,
    confidence: float = 0.95,
    fdr: float = 0.05,
    direction: str = "above",
) -> tuple[float, SliceResult | None]:
    """The standing degraded-subgroup statistic and the slice behind it.

    Among significant slices departing in ``direction``, the largest bound of the
    difference interval nearest to no harm: ``ci_low`` above the rest, ``-ci_high``
    below it (so the value grows with the harm either way), clipped at 0. Returns
    ``(0.0, None)`` when no slice is significant. Unlike the contribution, the bound
    favours the most concentrated slice, which is what a subgroup rule is after.
    """
    _check_args(counts, what, min_size, confidence, fdr, direction)
    # only significant slices are reported, so only their q-values are needed
    s = _cells(counts, what, min_size, confidence, fdr, every_q=False)
    keep = s["significant"] & _in_direction(s["diff"], direction)
    if not keep.any():
        return 0.0, None
    idx = np.flatnonzero(keep)
    low, high = _bounds(s, idx)
    bound = np.where(s["diff"][idx] > 0, low, -high)
    j = int(np.lexsort((idx, s["p"][idx], -bound))[0])
    return max(float(bound[j]), 0.0), _result(counts, s, int(idx[j]), low[j], high[j])
