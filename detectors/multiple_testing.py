"""Benjamini-Hochberg false discovery rate control across the features of one model.

With many features tested every window, some p-values fall below 0.05 by chance; BH
keeps the expected share of false alarms among the flagged features at ``alpha``.

>>> rejected, adjusted = benjamini_hochberg([0.001, 0.04, 0.03, None, 0.5], alpha=0.05)
>>> rejected.tolist()
[True, False, False, False, False]
>>> [round(a, 3) for a in adjusted.tolist()]
[0.004, 0.053, 0.053, nan, 0.5]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["benjamini_hochberg"]


def benjamini_hochberg(
    p_values: Sequence[float | None] | np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Step-up BH procedure. Returns ``(rejected, adjusted_p_values)``.

    None or NaN entries (a test that could not run, e.g. an empty window) do not count
    towards the number of tests; they get adjusted p-value NaN and are never rejected.
    A hypothesis is rejected when its adjusted p-value is ``<= alpha``.
    """
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if isinstance(p_values, np.ndarray) and p_values.dtype.kind == "f":
        p = np.ravel(p_values).astype(np.float64)  # NaN already marks a missing test
    else:
        flat = np.ravel(np.asarray(p_values, dtype=object))
        p = np.array([np.nan if v is None else float(v) for v in flat], dtype=np.float64)
    ok = ~np.isnan(p)
    bad = p[ok][(p[ok] < 0) | (p[ok] > 1)]
    if bad.size:
        raise ValueError(f"p-values must lie in [0, 1], got {bad[:5].tolist()}")
    adjusted = np.full(p.shape, np.nan)
    valid = p[ok]
    m = valid.size
    if m:
        order = np.argsort(valid, kind="stable")
        scaled = valid[order] * m / np.arange(1, m + 1)
        # the step-up: each adjusted value is the smallest scaled value at or above its rank
        adj_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        adj = np.empty(m)
        adj[order] = adj_sorted
        adjusted[ok] = adj
    with np.errstate(invalid="ignore"):
        rejected = adjusted <= a
    return rejected, adjusted
