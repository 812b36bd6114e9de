"""Review: ``quantile_edges`` finds atoms only among the quantile values themselves.

The docstring promises that a value holding more than half a bin's share of the sample
gets a bin of its own, but the atom test runs only on values that some reference quantile
landed on. A zero-inflated amount with 8% zeros (over the 5% threshold at 10 bins) has no
quantile at 0 (the 10% quantile is already among the positive amounts), so the zeros share
the open bottom bin with the smallest amounts: zeros turning into small positive values
(a unit or encoding change) move no count between bins and every histogram test misses it.
"""

from __future__ import annotations

import numpy as np

from detectors.sketch import quantile_edges


def test_an_atom_between_quantile_points_gets_its_own_bin():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(800), rng.uniform(1.0, 2.0, 9200)])  # 8% zeros > 0.5/10
    edges = quantile_edges(x, 10)
    zero_bin = np.searchsorted(edges, 0.0, side="right")
    near_bin = np.searchsorted(edges, 0.5, side="right")
    assert zero_bin != near_bin, f"0 shares its bin with (0, {edges[0]}): edges {edges}"
