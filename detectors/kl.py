"""Kullback-Leibler divergence of the window's histogram from the reference's.

Directional on purpose: ``KL(cur || ref) = sum(p_cur * ln(p_cur / p_ref))``, the
information lost when the reference describes the current window, so mass appearing
where the reference had almost none weighs heavily. (The sum of both directions is
PSI, up to smoothing; use ``psi`` for that.) Zero bins are smoothed as in evidently (see
``detectors.psi``) and the result renormalised to sum 1, as scipy.stats.entropy does
inside evidently's ``kl_div``; that computes ``KL(ref || cur)``, i.e. the same number
with its arguments swapped. Default threshold 0.1, as evidently.

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(5000, 3)), rng.normal(size=(1000, 3))
>>> cur[:, 0] -= 0.6
>>> edges = [quantile_edges(ref[:, k]) for k in range(3)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = kl_drift_rows(r.counts, c.counts)
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.139, 0.007, 0.003], [0])
"""

from __future__ import annotations

import numpy as np

from detectors._hist import (
    check_threshold,
    counts_pair,
    counts_rows,
    distance_drifted,
    proportions,
    smoothed,
)
from detectors.result import DriftResult, DriftResults

__all__ = ["kl_drift", "kl_drift_rows"]

NAME = "kl"
DEFAULT_THRESHOLD = 0.1


def kl_drift(ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> DriftResult:
    """``KL(cur || ref)`` of one feature's window counts against its reference counts."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        used = (ref + cur) > 0
        p = smoothed(ref / ref.sum(), used)[used]
        q = smoothed(cur / cur.sum(), used)[used]
        p, q = p / p.sum(), q / q.sum()
        stat = float(np.sum(q * np.log(q / p)))
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def kl_drift_rows(ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD) -> DriftResults:
    """``KL(cur || ref)`` per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        used = (ref + cur) > 0
        p = smoothed(proportions(ref), used)
        q = smoothed(proportions(cur), used)
        p = p / p.sum(axis=1, keepdims=True)
        q = q / q.sum(axis=1, keepdims=True)
        stat = np.where(used, q * np.log(q / p), 0.0).sum(axis=1)
        stat[~used.any(axis=1) | np.isnan(p[:, 0]) | np.isnan(q[:, 0])] = np.nan
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
