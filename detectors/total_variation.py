"""Total variation distance between a window's histogram and the reference's.

``TV = sum(|p_ref - p_cur|) / 2``: the largest difference in probability the two
distributions give to any set of bins, in [0, 1]. It is the statistic evidently's
``TVD`` stattest permutes (evidently reports the permutation p-value; here the distance
itself is the statistic). Default threshold 0.1: a tenth of the mass has moved.

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import CategoryCounts
>>> rng = np.random.default_rng(7)
>>> ref, cur = CategoryCounts(["a", "b", "c"]), CategoryCounts(["a", "b", "c"])
>>> ref.update(rng.choice(["a", "b", "c"], size=5000, p=[0.5, 0.3, 0.2]))
>>> cur.update(rng.choice(["a", "b", "c", "d"], size=1000, p=[0.35, 0.3, 0.2, 0.15]))
>>> res = total_variation_drift(ref.with_unseen(), cur.with_unseen())
>>> round(res.statistic, 3), res.drifted
(0.151, True)
"""

from __future__ import annotations

import numpy as np

from detectors._hist import check_threshold, counts_pair, counts_rows, distance_drifted, proportions
from detectors.result import DriftResult, DriftResults

__all__ = ["total_variation_drift", "total_variation_drift_rows"]

NAME = "total_variation"
DEFAULT_THRESHOLD = 0.1


def total_variation_drift(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResult:
    """Total variation distance of one feature's window counts from its reference counts."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        stat = float(0.5 * np.abs(ref / ref.sum() - cur / cur.sum()).sum())
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def total_variation_drift_rows(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResults:
    """Total variation distance per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    stat = 0.5 * np.abs(proportions(ref) - proportions(cur)).sum(axis=1)
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
