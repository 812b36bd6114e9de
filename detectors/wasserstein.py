"""Normalised 1-D Wasserstein (earth mover's) distance from two histograms on one grid.

Each bin is represented by one point ``x_k``; with cumulative proportions ``P``, ``Q``
the distance is ``W1 = sum_k |P_k - Q_k| * (x_{k+1} - x_k)``, divided by the reference
standard deviation (``max(std, 0.001)``), as evidently's ``wasserstein`` stattest does
on raw data (default threshold 0.1: the mean mass moved by a tenth of a reference std).

Bin points, in order of preference:

* ``points``: per-bin means (e.g. the reference's). When every bin holds one distinct
  value and the points are those values, W1 and the std are exactly the raw-sample ones.
* ``edges``: bin centres from :func:`bin_points`; the open outer bins get the point half
  an adjacent inner width beyond the outer edge (``e_0 - (e_1 - e_0) / 2`` and
  ``e_last + (e_last - e_prev) / 2``), so it needs at least two edges. Binning moves each
  value to its bin's point, so W1 changes by at most the mass-weighted distance of the
  values from their points (half a bin width inside the grid).

``ref_std`` overrides the std computed from the reference histogram (e.g. a
``Moments`` sketch of the raw reference values).

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(5000, 3)), rng.normal(size=(1000, 3))
>>> cur[:, 0] += 0.3
>>> edges = [quantile_edges(ref[:, k], 20) for k in range(3)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = wasserstein_drift_rows(r.counts, c.counts, points=bin_points(r.edges),
...                              ref_std=ref.std(axis=0))
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.348, 0.045, 0.021], [0])
"""

from __future__ import annotations

import numpy as np

from detectors._hist import check_threshold, counts_pair, counts_rows, distance_drifted, proportions
from detectors.result import DriftResult, DriftResults

__all__ = ["bin_points", "wasserstein_drift", "wasserstein_drift_rows"]

NAME = "wasserstein"
DEFAULT_THRESHOLD = 0.1
MIN_STD = 0.001  # evidently's floor, so a constant reference does not divide by zero


def bin_points(edges: np.ndarray) -> np.ndarray:
    """Bin centres for inner ``edges`` (1-D), or per row of ``+inf``-padded 2-D edges.

    Returns one point per bin (``len(edges) + 1`` per row). Padded bins of a 2-D row
    repeat the row's last point, so they span zero width.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim not in (1, 2):
        raise ValueError(f"edges must be 1-D or 2-D, got shape {e.shape}")
    rows = np.atleast_2d(e)
    n_real = np.isfinite(rows).sum(axis=1)
    for k, m in enumerate(n_real):
        if m < 2:
            where = "" if e.ndim == 1 else f" (feature row {k})"
            raise ValueError(
                f"edges{where} has {m} finite edge(s); bin centres need at least 2 - pass "
                f"points (per-bin means) instead"
            )
        real = rows[k, :m]
        if np.any(np.diff(real) <= 0) or np.any(np.isfinite(rows[k, m:])):
            raise ValueError(f"edges{'' if e.ndim == 1 else f' (feature row {k})'} must be strictly "
                             "increasing, padded with +inf only at the end")
    f = rows.shape[0]
    idx = np.arange(f)
    last_e = rows[idx, n_real - 1]
    prev_e = rows[idx, n_real - 2]
    with np.errstate(invalid="ignore"):
        mids = (rows[:, :-1] + rows[:, 1:]) / 2.0
    pts = np.empty((f, rows.shape[1] + 1))
    pts[:, 0] = rows[:, 0] - (rows[:, 1] - rows[:, 0]) / 2.0
    pts[:, 1:-1] = mids
    last_pt = last_e + (last_e - prev_e) / 2.0
    col = np.arange(pts.shape[1])[None, :]
    pts = np.where(col >= n_real[:, None], last_pt[:, None], pts)
    return pts[0] if e.ndim == 1 else pts


def _check_points(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(points, dtype=np.float64)
    if x.shape != shape:
        raise ValueError(f"points must have the counts' shape {shape}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("points must be finite (one representative value per bin)")
    if np.any(np.diff(x, axis=-1) < 0):
        raise ValueError("points must be non-decreasing along the bins")
    return x


def _resolve_points(points, edges, shape) -> np.ndarray:
    if points is not None:
        return _check_points(points, shape)
    if edges is None:
        raise ValueError("wasserstein needs bin positions: pass points= or edges=")
    return _check_points(bin_points(edges), shape)


def _ref_std(ref_std, shape: tuple[int, ...]) -> np.ndarray | None:
    if ref_std is None:
        return None
    s = np.broadcast_to(np.asarray(ref_std, dtype=np.float64), shape)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"ref_std must be finite and >= 0, got {ref_std!r}")
    return s


def wasserstein_drift(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    points: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    ref_std: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftResult:
    """Normalised W1 of one feature's window histogram from its reference histogram."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    x = _resolve_points(points, edges, ref.shape)
    std = _ref_std(ref_std, ())
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        p, q = ref / ref.sum(), cur / cur.sum()
        w1 = float(np.sum(np.abs(np.cumsum(p - q)[:-1]) * np.diff(x)))
        if std is None:
            mean = float(np.sum(p * x))
            std = np.sqrt(np.sum(p * (x - mean) ** 2))
        stat = w1 / max(float(std), MIN_STD)
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def wasserstein_drift_rows(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    points: np.ndarray | None = None,
    edges: np.ndarray | None = None,
    ref_std: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftResults:
    """Normalised W1 per row of two ``(features, bins)`` count matrices.

    ``points``/``edges`` are per row (``(F, B)`` points or ``(F, B - 1)`` padded edges,
    e.g. ``HistogramBank.edges``); ``ref_std`` is None or one value per row.
    """
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    x = _resolve_points(points, edges, ref.shape)
    std = _ref_std(ref_std, (ref.shape[0],))
    with np.errstate(invalid="ignore", divide="ignore"):
        p, q = proportions(ref), proportions(cur)
        w1 = np.einsum("ij,ij->i", np.abs(np.cumsum(p - q, axis=1)[:, :-1]), np.diff(x, axis=1))
        if std is None:
            mean = np.einsum("ij,ij->i", p, x)
            std = np.sqrt(np.einsum("ij,ij->i", p, (x - mean[:, None]) ** 2))
        stat = w1 / np.maximum(std, MIN_STD)
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
