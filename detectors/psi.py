"""Population Stability Index of a window's histogram against the reference's.

``PSI = sum((p_ref - p_cur) * ln(p_ref / p_cur))`` over the bins, after the zero-bin
smoothing evidently uses (a zero proportion becomes ``1e-4``, or ``min_nonzero / 1e6``
when the smallest non-zero proportion is below that), so values match evidently's
``psi`` stattest on the same bins. Bins empty on both sides (and padding) are left out,
as evidently only sees values present in either sample. PSI equals the symmetric KL divergence.

Common practice reads PSI < 0.1 as stable, 0.1-0.25 as a moderate shift and > 0.25 as a
major one. The default threshold is the warning level 0.1 (evidently's default too);
``PSI_ALERT`` is the customary alert level for a policy's ``alert`` rule.

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(5000, 3)), rng.normal(size=(1000, 3))
>>> cur[:, 1] += 0.5
>>> edges = [quantile_edges(ref[:, k]) for k in range(3)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = psi_drift_rows(r.counts, c.counts)
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.015, 0.206, 0.007], [1])
>>> psi_drift(r.counts[1], c.counts[1]).drifted
True
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

__all__ = ["PSI_WARN", "PSI_ALERT", "psi_drift", "psi_drift_rows"]

PSI_WARN = 0.1
PSI_ALERT = 0.25
NAME = "psi"


def psi_drift(ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = PSI_WARN) -> DriftResult:
    """PSI of one feature's window counts against its reference counts (same bins)."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        used = (ref + cur) > 0
        p = smoothed(ref / ref.sum(), used)[used]
        q = smoothed(cur / cur.sum(), used)[used]
        stat = float(np.sum((p - q) * np.log(p / q)))
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def psi_drift_rows(ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = PSI_WARN) -> DriftResults:
    """PSI per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        used = (ref + cur) > 0
        p = smoothed(proportions(ref), used)
        q = smoothed(proportions(cur), used)
        stat = np.where(used, (p - q) * np.log(p / q), 0.0).sum(axis=1)
        stat[~used.any(axis=1) | np.isnan(p[:, 0]) | np.isnan(q[:, 0])] = np.nan
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
