"""Benchmark of the drift path: binning micro-batches into sketches and testing windows.

``run()`` returns three entries, each ``{"value", "unit", "baseline", "baseline_name",
"ratio"}`` where ``ratio`` is how many times better ours is than the baseline (> 1 is
faster), measured in the same run on the same data:

* ``histogram_bank_update``: HistogramBank.update on 1000 x 50 micro-batches (events/s)
  vs per-feature ``np.searchsorted`` + ``np.bincount``.
* ``psi_ks_js_per_feature``: PSI + KS + Jensen-Shannon for 50 features from sketches
  (10k-value reference, 1k-value window; microseconds per feature, all three tests
  together) vs ``scipy.stats.ks_2samp`` recomputed on the raw samples per feature.
* ``evidently_data_drift``: evidently 0.7's ``Report([DataDriftPreset()])`` on a
  10k x 50 reference and a 10k x 50 current frame vs ours on the same frames: binning the
  current frame into a HistogramBank plus PSI + KS + JS for the 50 features (the
  reference sketch is built once, when a reference profile is made, so it is not timed).

Run: ``.venv/bin/python -m bench.detectors_drift`` (prints JSON). Total well under 60 s.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable

import numpy as np

from detectors.jensen_shannon import jensen_shannon_drift_rows
from detectors.ks import ks_drift_rows
from detectors.psi import psi_drift_rows
from detectors.sketch import HistogramBank, quantile_edges

N_FEATURES = 50
N_REF = 10_000
N_WINDOW = 1_000
BATCH_ROWS = 1_000
N_BINS = 10
SEED = 20261127


def _entry(value: float, unit: str, baseline: float, baseline_name: str, higher_is_better: bool) -> dict:
    ratio = value / baseline if higher_is_better else baseline / value
    return {
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3),
        "baseline_name": baseline_name,
        "ratio": round(ratio, 2),
    }


def _best_seconds(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    """Best of ``repeats`` timings of ``inner`` calls, per call (robust to noisy neighbours)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def _data(rng: np.random.Generator, n_window: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    ref = rng.normal(size=(N_REF, N_FEATURES))
    cur = rng.normal(size=(n_window, N_FEATURES))
    # a fifth of the features drift, so the small-p-value branches are exercised too
    cur[:, ::5] += 0.3
    edges = [quantile_edges(ref[:, k], N_BINS) for k in range(N_FEATURES)]
    return ref, cur, edges


def _evaluate(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple:
    return (
        psi_drift_rows(ref_counts, cur_counts),
        ks_drift_rows(ref_counts, cur_counts),
        jensen_shannon_drift_rows(ref_counts, cur_counts),
    )


def bench_update(rng: np.random.Generator) -> dict:
    _, _, edges = _data(rng, 10)
    batches = [rng.normal(size=(BATCH_ROWS, N_FEATURES)) for _ in range(20)]
    for b in batches:
        b[rng.random(b.shape) < 0.01] = np.nan
    bank = HistogramBank(edges)
    bank.update(batches[0])  # compile outside the timing

    def ours():
        for b in batches:
            bank.update(b)

    counts = [np.zeros(e.size + 1, dtype=np.int64) for e in edges]

    def numpy_baseline():
        for b in batches:
            for k, e in enumerate(edges):
                col = b[:, k]
                col = col[~np.isnan(col)]
                counts[k] += np.bincount(np.searchsorted(e, col, side="right"), minlength=e.size + 1)

    events = len(batches) * BATCH_ROWS
    ours_rate = events / _best_seconds(ours, 5)
    base_rate = events / _best_seconds(numpy_baseline, 5)
    # the two must agree, or the comparison means nothing
    check = HistogramBank(edges)
    ref_counts = [np.zeros(e.size + 1, dtype=np.int64) for e in edges]
    for b in batches:
        check.update(b)
        for k, e in enumerate(edges):
            col = b[:, k][~np.isnan(b[:, k])]
            ref_counts[k] += np.bincount(np.searchsorted(e, col, side="right"), minlength=e.size + 1)
    assert all(np.array_equal(check.feature(k).counts, ref_counts[k]) for k in range(N_FEATURES))
    return _entry(ours_rate, "events/s", base_rate, "numpy searchsorted+bincount per feature", True)


def bench_tests(rng: np.random.Generator) -> dict:
    from scipy import stats

    ref, cur, edges = _data(rng, N_WINDOW)
    r, c = HistogramBank(edges), HistogramBank(edges)
    r.update(ref)
    c.update(cur)
    ref_counts, cur_counts = r.counts.copy(), c.counts.copy()
    _evaluate(ref_counts, cur_counts)  # warm caches / compiled kernels
    ours = _best_seconds(lambda: _evaluate(ref_counts, cur_counts), 7, inner=20) / N_FEATURES

    def scipy_baseline():
        for k in range(N_FEATURES):
            stats.ks_2samp(ref[:, k], cur[:, k])

    base = _best_seconds(scipy_baseline, 2) / N_FEATURES
    return _entry(ours * 1e6, "us/feature", base * 1e6, "scipy.stats.ks_2samp on raw 10k/1k samples (KS only)", False)


def bench_evidently(rng: np.random.Generator) -> dict:
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import Report
        from evidently.presets import DataDriftPreset

    ref, cur, edges = _data(rng, N_REF)
    cols = [f"f{k}" for k in range(N_FEATURES)]
    ref_df, cur_df = pd.DataFrame(ref, columns=cols), pd.DataFrame(cur, columns=cols)
    r = HistogramBank(edges)
    r.update(ref)

    def ours():
        c = HistogramBank(edges)
        c.update(cur)
        return _evaluate(r.counts, c.counts)

    ours()
    ours_s = _best_seconds(ours, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current_data=cur_df, reference_data=ref_df)
        base_s = time.perf_counter() - t0
    assert snapshot.dict()["metrics"], "evidently produced no metrics"
    return _entry(ours_s * 1e3, "ms/report", base_s * 1e3, "evidently 0.7 Report([DataDriftPreset()])", False)


def run() -> dict:
    """Measure the three drift-path figures; see the module docstring."""
    rng = np.random.default_rng(SEED)
    return {
        "histogram_bank_update": bench_update(rng),
        "psi_ks_js_per_feature": bench_tests(rng),
        "evidently_data_drift": bench_evidently(rng),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
