"""Hellinger distance between a window's histogram and the reference's.

``H = sqrt(1 - sum(sqrt(p_ref * p_cur)))`` (the Bhattacharyya coefficient clipped to
[0, 1]), which lies in [0, 1] and needs no smoothing. It equals evidently's
``hellinger`` stattest on categories; evidently re-bins numeric data itself, so for
numeric features the bins here are the reference's. Default threshold 0.1, as evidently.

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(5000, 3)), rng.normal(size=(1000, 3))
>>> cur[:, 1] += 0.6
>>> edges = [quantile_edges(ref[:, k]) for k in range(3)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = hellinger_drift_rows(r.counts, c.counts)
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.044, 0.199, 0.029], [1])
"""

from __future__ import annotations

import numpy as np

from detectors._hist import check_threshold, counts_pair, counts_rows, distance_drifted, proportions
from detectors.result import DriftResult, DriftResults

__all__ = ["hellinger_drift", "hellinger_drift_rows"]

NAME = "hellinger"
DEFAULT_THRESHOLD = 0.1


def hellinger_drift(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResult:
    """Hellinger distance of one feature's window counts from its reference counts."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        bc = float(np.sum(np.sqrt(ref / ref.sum() * (cur / cur.sum()))))
        stat = float(np.sqrt(1.0 - min(max(bc, 0.0), 1.0)))
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def hellinger_drift_rows(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResults:
    """Hellinger distance per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    with np.errstate(invalid="ignore"):
        bc = np.sqrt(proportions(ref) * proportions(cur)).sum(axis=1)
        stat = np.sqrt(1.0 - np.clip(bc, 0.0, 1.0))
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
