"""Shared input checks and proportion helpers for the histogram-based drift tests.

Scalar tests take two 1-D count vectors on the same bins; vectorised ("rows") tests take
two ``(features, bins)`` matrices whose padded bins are zero in both.
"""

from __future__ import annotations

import numpy as np

# evidently's zero-bin rule (legacy.calculations.stattests.utils.get_binned_data): a zero
# proportion becomes 1e-4, or min_nonzero / 1e6 when the smallest non-zero proportion is
# itself <= 1e-4, so the filler always stays far below every observed proportion.
SMOOTH_FLOOR = 1e-4
SMOOTH_DIVISOR = 1e6


def counts_pair(ref_counts, cur_counts) -> tuple[np.ndarray, np.ndarray]:
    """Validate two 1-D count vectors on the same bins; return them as float64."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    for name, a in (("ref_counts", ref), ("cur_counts", cur)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one count per bin), got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"{name} must have at least one bin")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"{name} must be finite and non-negative, got {a.tolist()}")
    if ref.shape != cur.shape:
        raise ValueError(
            f"ref_counts and cur_counts must share bins: {ref.size} vs {cur.size} bins"
        )
    return ref, cur


def counts_rows(ref_counts, cur_counts) -> tuple[np.ndarray, np.ndarray]:
    """Validate two ``(features, bins)`` count matrices; return them as float64."""
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    for name, a in (("ref_counts", ref), ("cur_counts", cur)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D (features x bins), got shape {a.shape}")
        if a.shape[1] == 0:
            raise ValueError(f"{name} must have at least one bin")
        # One reduction instead of two keeps validation cheap on the hot path.
        if not (a.min(initial=0.0) >= 0.0 and np.isfinite(a.sum())):
            raise ValueError(f"{name} must be finite and non-negative")
    if ref.shape != cur.shape:
        raise ValueError(f"ref_counts {ref.shape} and cur_counts {cur.shape} must have one shape")
    return ref, cur


def proportions(counts: np.ndarray) -> np.ndarray:
    """Counts divided by their total along the last axis (NaN where the total is zero)."""
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / total


def smoothed(p: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Replace zero proportions in ``used`` bins following evidently's rule.

    ``used`` marks bins non-empty on at least one side; like evidently, which only
    looks at values seen in either sample, bins empty on both sides (padding included)
    stay 0 and must be left out of the sums. Works on a vector or row-wise on a matrix.
    """
    nz_min = np.where(p > 0, p, np.inf).min(axis=-1, keepdims=True)
    fill = np.where(nz_min <= SMOOTH_FLOOR, nz_min / SMOOTH_DIVISOR, SMOOTH_FLOOR)
    return np.where((p == 0) & used, fill, p)


def distance_drifted(statistic: np.ndarray | float, threshold: float) -> np.ndarray | bool:
    """``statistic >= threshold``; NaN (an empty side) is never drift."""
    with np.errstate(invalid="ignore"):
        return np.asarray(statistic) >= threshold


def check_threshold(threshold: float, name: str = "threshold") -> float:
    t = float(threshold)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {threshold!r}")
    return t


def check_alpha(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold (a p-value level) must be in (0, 1), got {threshold!r}")
    return t


def homogeneity_expected(ref: np.ndarray, cur: np.ndarray):
    """Expected counts of the 2 x bins table [ref; cur] under "same distribution".

    Works on vectors or row-wise on matrices. Returns ``(e_ref, e_cur, used, dof)``:
    ``used`` marks bins non-empty on at least one side (empty ones, including padding,
    are dropped as scipy.stats.chi2_contingency requires), ``dof = used bins - 1``.
    """
    n_ref = ref.sum(axis=-1, keepdims=True)
    n_cur = cur.sum(axis=-1, keepdims=True)
    col = ref + cur
    total = n_ref + n_cur
    with np.errstate(invalid="ignore", divide="ignore"):
        e_ref = col * n_ref / total
        e_cur = col * n_cur / total
    used = col > 0
    dof = used.sum(axis=-1) - 1
    return e_ref, e_cur, used, dof
