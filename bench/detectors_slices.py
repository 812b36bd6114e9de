"""Benchmark of "where it fails": slice counting per micro-batch and slice ranking per alert.

The monitor counts outcomes per slice cell in every pane (a fixed array of cells), so an
alert ranks slices from counts, not from the window's rows. ``run()`` returns, median of
5 repeats, both measured in the same run on the same data:

* ``slice_counts_update``: ``SliceCounts.update_outcomes`` on 1000-event micro-batches
  with 25 dimensions (20 numeric features binned to 10 codes, 5 categorical of 3-6
  levels, two of them sensitive) and 50 pairs (every dimension x the 2 sensitive
  attributes, and the pairs among the categorical ones), in events/s, vs a pandas
  ``groupby(...).agg(["size", "sum"])`` of the same batch per dimension and pair.
* ``slice_ranking_per_alert``: ``rank_slices`` (every eligible cell's rate, Newcombe
  interval, z-test, Benjamini-Hochberg, order) from the window's counts, in ms, vs what
  one does without counts: pandas groupbys of the 100k raw window rows, statsmodels'
  ``proportions_ztest`` and ``confint_proportions_2indep(method="newcomb")`` per cell and
  ``multipletests(method="fdr_bh")``.

Run: ``.venv/bin/python -m bench.detectors_slices`` (prints JSON); about 40 s. The
baselines are slower in proportion to the number of cells; ours costs one bincount per
batch and one vectorised pass per alert.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from detectors.slices import SliceCounts, rank_slices

N_NUMERIC = 20
CAT_LEVELS = (6, 4, 3, 2, 3)  # the last two are the sensitive attributes
BATCH = 1_000
N_BATCHES = 30
WINDOW = 100_000
REPEATS = 5
SEED = 20261204


def _layout() -> tuple[list[str], list[list[str]], list[tuple[int, int]]]:
    dims = [f"num_{k:02d}" for k in range(N_NUMERIC)] + [f"cat_{k}" for k in range(len(CAT_LEVELS))]
    levels = [[f"b{b}" for b in range(10)] for _ in range(N_NUMERIC)]
    levels += [[f"v{v}" for v in range(n)] for n in CAT_LEVELS]
    sensitive = [len(dims) - 2, len(dims) - 1]
    pairs = {(i, s) for s in sensitive for i in range(len(dims)) if i != s}
    cats = range(N_NUMERIC, len(dims))
    pairs |= {(i, j) for i in cats for j in cats if i < j}
    # One name per unordered pair: (i, s) and (s, i) are the same cells.
    unique = sorted({tuple(sorted(p)) for p in pairs})
    return dims, levels, [(int(i), int(j)) for i, j in unique]


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = np.column_stack(
        [rng.integers(0, 10, n) for _ in range(N_NUMERIC)] + [rng.integers(0, k, n) for k in CAT_LEVELS]
    ).astype(np.int64)
    bad = (codes[:, N_NUMERIC] == 2) & (codes[:, -1] == 1)
    errors = (rng.random(n) < np.where(bad, 0.25, 0.1)).astype(np.int64)
    return codes, errors


def _median_time(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _pandas_counts(df, dims, pairs) -> list:
    out = [df.groupby(d)["err"].agg(["size", "sum"]) for d in dims]
    out += [df.groupby([dims[i], dims[j]])["err"].agg(["size", "sum"]) for i, j in pairs]
    return out


def _statsmodels_ranking(df, dims, pairs, min_size: int) -> list[tuple[str, float]]:
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    total_n, total_x = len(df), int(df["err"].sum())
    cells = []
    for g in _pandas_counts(df, dims, pairs):
        for key, (n, x) in zip(g.index, g.to_numpy(), strict=True):
            if n >= min_size and total_n - n >= min_size:
                cells.append((str(key), int(x), int(n)))
    p, ci, contribution = [], [], []
    for _, x, n in cells:
        xr, nr = total_x - x, total_n - n
        p.append(proportions_ztest([x, xr], [n, nr])[1])
        ci.append(confint_proportions_2indep(x, n, xr, nr, method="newcomb", compare="diff"))
        contribution.append((x / n - xr / nr) * n / total_n)
    _, q, _, _ = multipletests(p, method="fdr_bh")
    order = sorted(range(len(cells)), key=lambda k: (q[k] > 0.05, -contribution[k]))
    return [(cells[k][0], contribution[k]) for k in order[:10]]


def run() -> dict:
    import pandas as pd

    dims, levels, pairs = _layout()
    codes, errors = _rows(BATCH * N_BATCHES, SEED)
    batches = [(codes[s : s + BATCH], errors[s : s + BATCH]) for s in range(0, len(codes), BATCH)]
    frames = [pd.DataFrame(c, columns=dims).assign(err=e) for c, e in batches]
    sc = SliceCounts(dims, levels, pairs)

    # Same counts first: a benchmark of two things that disagree is meaningless.
    one = SliceCounts(dims, levels, pairs)
    one.update_outcomes(*batches[0])
    first = _pandas_counts(frames[0], dims, pairs)[N_NUMERIC]  # cat_0 alone
    for code, (n, x) in zip(first.index, first.to_numpy(), strict=True):
        k = one.names.index(f"cat_0=v{code}")
        if (one.n_out[k], one.err[k]) != (n, x):
            raise AssertionError(f"cell cat_0=v{code} differs from pandas")

    def ours_update():
        for c, e in batches:
            sc.update_outcomes(c, e)

    def pandas_update():
        for df in frames:
            _pandas_counts(df, dims, pairs)

    update_s = _median_time(ours_update)
    pandas_s = _median_time(pandas_update, repeats=3)
    n_events = BATCH * N_BATCHES

    wcodes, werrors = _rows(WINDOW, SEED + 1)
    window = SliceCounts(dims, levels, pairs)
    window.update_outcomes(wcodes, werrors)
    wdf = pd.DataFrame(wcodes, columns=dims).assign(err=werrors)
    ours_top = rank_slices(window, min_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_top = _statsmodels_ranking(wdf, dims, pairs, min_size=100)
    # Ours may put a pair ahead of the single slice it explains (see rank_slices); the
    # largest contribution must still be the same number.
    if abs(max(r.contribution for r in ours_top) - theirs_top[0][1]) > 1e-12:
        raise AssertionError(f"largest contribution differs: {ours_top} vs {theirs_top[0]}")
    rank_s = _median_time(lambda: rank_slices(window, min_size=100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base_rank_s = _median_time(lambda: _statsmodels_ranking(wdf, dims, pairs, min_size=100), repeats=3)
    return {
        "slice_counts_update": {
            "value": n_events / update_s,
            "unit": "events/s",
            "baseline": n_events / pandas_s,
            "baseline_name": "pandas groupby size+sum per dimension and pair, per batch",
            "ratio": pandas_s / update_s,
            "cells": sc.n_cells,
            "dims": len(dims),
            "pairs": len(pairs),
            "batch": BATCH,
        },
        "slice_ranking_per_alert": {
            "value": rank_s * 1e3,
            "unit": "ms",
            "baseline": base_rank_s * 1e3,
            "baseline_name": "pandas groupby of 100k window rows + statsmodels z-test, Newcombe CI, BH",
            "ratio": base_rank_s / rank_s,
            "cells": window.n_cells,
            "window_rows": WINDOW,
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
