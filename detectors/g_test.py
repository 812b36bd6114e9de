"""G-test (log-likelihood ratio) of a window's category counts against the reference's.

``G = 2 * sum(O * ln(O / E))`` over the 2 x k table ``[ref_counts; cur_counts]`` with
the homogeneity expectations, i.e. ``scipy.stats.chi2_contingency(table,
correction=False, lambda_="log-likelihood")``; cells with ``O = 0`` add nothing, bins
empty on both sides are dropped, ``dof = used bins - 1``, and the unseen bucket needs no
smoothing (see ``detectors.chi_square`` for why this table rather than a goodness-of-fit
against fixed reference proportions). Drift is ``p_value < threshold`` (default 0.05).

Examples
--------
>>> import numpy as np
>>> from detectors.sketch import CategoryCounts
>>> rng = np.random.default_rng(7)
>>> cats = ["a", "b", "c"]
>>> ref, cur = CategoryCounts(cats), CategoryCounts(cats)
>>> ref.update(rng.choice(cats, size=5000, p=[0.5, 0.3, 0.2]))
>>> cur.update(rng.choice(cats, size=1000, p=[0.44, 0.33, 0.23]))
>>> res = g_test_drift(ref.with_unseen(), cur.with_unseen())
>>> round(res.statistic, 1), round(res.p_value, 4), res.drifted
(13.2, 0.0013, True)
"""

from __future__ import annotations

import numpy as np
from scipy import special

from detectors._hist import check_alpha, counts_pair, counts_rows, homogeneity_expected
from detectors.result import DriftResult, DriftResults

__all__ = ["g_test_drift", "g_test_drift_rows"]

NAME = "g_test"
DEFAULT_THRESHOLD = 0.05


def _xlogy_ratio(o: np.ndarray, e: np.ndarray) -> np.ndarray:
    # O * ln(O / E) with 0 * ln(0) = 0 (and E > 0 wherever O > 0).
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(o > 0, o * np.log(o / e), 0.0)


def g_test_drift(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResult:
    """G-test of one feature's window counts against its reference counts (same bins)."""
    ref, cur = counts_pair(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    if ref.sum() == 0 or cur.sum() == 0:
        return DriftResult(NAME, float("nan"), float("nan"), threshold, False)
    e_ref, e_cur, used, dof = homogeneity_expected(ref, cur)
    stat = float(2.0 * (_xlogy_ratio(ref[used], e_ref[used]).sum() + _xlogy_ratio(cur[used], e_cur[used]).sum()))
    stat = max(stat, 0.0)  # rounding can leave -1e-16 on identical tables
    p = float(special.chdtrc(dof, stat)) if dof > 0 else 1.0
    return DriftResult(NAME, stat, p, threshold, p < threshold)


def g_test_drift_rows(
    ref_counts: np.ndarray, cur_counts: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD
) -> DriftResults:
    """G-test per row of two ``(features, bins)`` count matrices."""
    ref, cur = counts_rows(ref_counts, cur_counts)
    threshold = check_alpha(threshold)
    e_ref, e_cur, used, dof = homogeneity_expected(ref, cur)
    cells = np.where(used, _xlogy_ratio(ref, e_ref) + _xlogy_ratio(cur, e_cur), 0.0)
    stat = np.maximum(2.0 * cells.sum(axis=1), 0.0)
    with np.errstate(invalid="ignore"):
        p = np.where(dof > 0, special.chdtrc(np.maximum(dof, 1), stat), 1.0)
    empty = (ref.sum(axis=1) == 0) | (cur.sum(axis=1) == 0)
    stat[empty] = np.nan
    p[empty] = np.nan
    with np.errstate(invalid="ignore"):
        drifted = p < threshold
    return DriftResults(NAME, stat, p, threshold, drifted)
