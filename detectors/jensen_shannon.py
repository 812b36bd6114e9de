"""Jensen-Shannon distance between a window's histogram and the reference's.

The distance is ``sqrt(JSD)`` with ``JSD = (KL(p || m) + KL(q || m)) / 2`` and
``m = (p + q) / 2``, natural logarithm by default (``base=2`` bounds it by 1). Zero bins
need no smoothing. This is what scipy.spatial.distance.jensenshannon and evidently's
``jensenshannon`` stattest compute, with the same default threshold 0.1.

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import HistogramBank, quantile_edges
>>> rng = np.random.default_rng(7)
>>> ref, cur = rng.normal(size=(5000, 3)), rng.normal(size=(1000, 3))
>>> cur[:, 2] *= 1.8
>>> edges = [quantile_edges(ref[:, k]) for k in range(3)]
>>> r, c = HistogramBank(edges), HistogramBank(edges)
>>> r.update(ref); c.update(cur)
>>> res = jensen_shannon_drift_rows(r.counts, c.counts)
>>> np.round(res.statistic, 3).tolist(), np.flatnonzero(res.drifted).tolist()
([0.044, 0.042, 0.221], [2])
"""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr

from detectors._hist import check_threshold, counts_pair, counts_rows, distance_drifted, proportions
from detectors.result import DriftResult, DriftResults

__all__ = ["jensen_shannon_drift", "jensen_shannon_drift_rows"]

NAME = "jensen_shannon"
DEFAULT_THRESHOLD = 0.1


def _log_base(base: float | None) -> float:
    if base is None:
        return 1.0
    b = float(base)
    if not b > 0 or b == 1.0:
        raise ValueError(f"base must be > 0 and != 1, got {base!r}")
    return float(np.log(b))


def jensen_shannon_drift(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    base: float | None = None,
) -> DriftResult:
    """Jensen-Shannon distance of one feature's window counts from its reference counts."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    log_base = _log_base(base)
    if ref.sum() == 0 or cur.sum() == 0:
        stat = float("nan")
    else:
        p, q = ref / ref.sum(), cur / cur.sum()
        m = (p + q) / 2.0
        jsd = (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / 2.0 / log_base
        stat = float(np.sqrt(max(jsd, 0.0)))
    return DriftResult(NAME, stat, None, threshold, bool(distance_drifted(stat, threshold)))


def jensen_shannon_drift_rows(
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    base: float | None = None,
) -> DriftResults:
    """Jensen-Shannon distance per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_threshold(threshold)
    log_base = _log_base(base)
    with np.errstate(invalid="ignore", divide="ignore"):
        p, q = proportions(ref), proportions(cur)
        m = (p + q) * 0.5
        jsd = (rel_entr(p, m) + rel_entr(q, m)).sum(axis=1) * (0.5 / log_base)
        stat = np.sqrt(np.maximum(jsd, 0.0))
    stat[np.isnan(jsd)] = np.nan
    return DriftResults(NAME, stat, None, threshold, distance_drifted(stat, threshold))
