"""Pearson chi-square test of a window's category counts against the reference's.

Formulation: the test of homogeneity on the 2 x k table ``[ref_counts; cur_counts]``
(``scipy.stats.chi2_contingency(table, correction=False)``): both sides are samples,
so an unseen category (reference count 0, the last bucket of
``CategoryCounts.with_unseen()``) gets a finite expected count and needs no smoothing,
and a small reference is not treated as the truth. Bins empty on both sides are dropped;
``dof = used bins - 1``. No Yates correction, so 2-category tables are treated like the
rest. The statistic grows with drift; drift is ``p_value < threshold`` (default 0.05).

(Evidently's ``chisquare`` stattest is the goodness-of-fit variant with the reference
proportions as fixed expectations; it diverges on an unseen category.)

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import CategoryCounts
>>> rng = np.random.default_rng(7)
>>> cats = ["a", "b", "c"]
>>> ref, cur = CategoryCounts(cats), CategoryCounts(cats)
>>> ref.update(rng.choice(cats, size=5000, p=[0.5, 0.3, 0.2]))
>>> cur.update(rng.choice(cats + ["d"], size=1000, p=[0.47, 0.3, 0.2, 0.03]))
>>> res = chi_square_drift(ref.with_unseen(), cur.with_unseen())
>>> round(res.statistic, 1), res.p_value < 0.05, res.drifted
(134.3, True, True)
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors._hist import check_alpha, counts_pair, counts_rows, homogeneity_expected
from detectors.result import DriftResult, DriftResults

__all__ = ["chi_square_drift", "chi_square_drift_rows"]

NAME = "chi_square"
DEFAULT_THRESHOLD = 0.05


def chi_square_drift(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResult:
    """Chi-square homogeneity test of one feature's window counts vs its reference counts."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        return DriftResult(NAME, float("nan"), float("nan"), threshold, False)
    e_ref, e_cur, used, dof = homogeneity_expected(ref, cur)
    stat = float(
        np.sum((ref[used] - e_ref[used]) ** 2 / e_ref[used])
        + np.sum((cur[used] - e_cur[used]) ** 2 / e_cur[used])
    )
    p = float(special.chdtrc(dof, stat)) if dof > 0 else 1.0
    return DriftResult(NAME, stat, p, threshold, p < threshold)


def chi_square_drift_rows(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResults:
    """Chi-square homogeneity test per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    e_ref, e_cur, used, dof = homogeneity_expected(ref, cur)
    with np.errstate(invalid="ignore", divide="ignore"):
        cells = np.where(used, (ref - e_ref) ** 2 / e_ref + (cur - e_cur) ** 2 / e_cur, 0.0)
        stat = cells.sum(axis=1)
        p = np.where(dof > 0, special.chdtrc(np.maximum(dof, 1), stat), 1.0)
    empty = (ref.sum(axis=1) == 0) | (cur.sum(axis=1) == 0)
    stat[empty] = np.nan
    p[empty] = np.nan
    with np.errstate(invalid="ignore"):
        drifted = p < threshold
    return DriftResults(NAME, stat, p, threshold, drifted)
