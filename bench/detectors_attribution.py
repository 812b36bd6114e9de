"""Benchmark of attribution drift: the per-event sketch path and the per-window evaluation.

``run()`` returns, each measured in the same run on the same data, median of 5 repeats:

* ``attribution_sketch_update``: a sliding window of 10 micro-batches of 1000 x 20
  attributions kept as a running sum (per batch: ``AttributionSketch.update`` of the new
  pane, merge it into the window, subtract the evicted pane), in events/s, vs numpy
  recomputing ``np.abs(window).mean(axis=0)`` over the 10k-event window each batch. The
  ratio grows with the window; ``numpy_batch_only`` is ``np.abs(batch).mean(axis=0)`` of
  the batch alone (no window, no NaN handling, no second moment) for scale.
* ``attribution_drift_per_window``: ``attribution_drift`` of a 20-feature window (k=5,
  with its 200-draw bootstrap interval), in microseconds, vs scikit-learn's ``ndcg_score``
  plus scipy's ``spearmanr`` on the same arrays (point values only, no interval).
* ``attribution_drift_interval``: the same call vs the same interval done with the
  baseline libraries: ``ndcg_score`` on each of the 200 normal draws, then the quantiles.

Run: ``.venv/bin/python -m bench.detectors_attribution`` (prints JSON); about 10 s.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from detectors.attribution import AttributionSketch, attribution_drift, reference_importance

N_FEATURES = 20
BATCH_ROWS = 1_000
WINDOW_BATCHES = 10
N_BATCHES = 60
N_DRAWS = 200
K = 5
REPEATS = 5
SEED = 20261127


def _entry(value: float, unit: str, baseline: float, baseline_name: str, higher_is_better: bool, **extra) -> dict:
    ratio = value / baseline if higher_is_better else baseline / value
    return {
        "value": round(value, 3),
        "unit": unit,
        "baseline": round(baseline, 3),
        "baseline_name": baseline_name,
        "ratio": round(ratio, 2),
        **extra,
    }


def _median_seconds(fn: Callable[[], object], inner: int) -> float:
    """Median over ``REPEATS`` timings of ``inner`` back-to-back calls, per call."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def _attributions(rng: np.random.Generator, n: int) -> np.ndarray:
    # heavy-tailed like SHAP values, with a clear importance order over the features
    scale = np.geomspace(3.0, 0.05, N_FEATURES)
    return rng.standard_t(4, size=(n, N_FEATURES)) * scale


def _update_figures(rng: np.random.Generator) -> dict:
    names = [f"f{i}" for i in range(N_FEATURES)]
    batches = [_attributions(rng, BATCH_ROWS) for _ in range(N_BATCHES)]

    def ours():
        window, panes = AttributionSketch(names), []
        for b in batches:
            pane = AttributionSketch(names)
            pane.update(b)
            window.merge(pane)
            panes.append(pane)
            if len(panes) > WINDOW_BATCHES:
                window.subtract(panes.pop(0))
        return window

    def numpy_window():
        ring = np.empty((WINDOW_BATCHES * BATCH_ROWS, N_FEATURES))
        for i, b in enumerate(batches):
            slot = i % WINDOW_BATCHES
            ring[slot * BATCH_ROWS : (slot + 1) * BATCH_ROWS] = b
            filled = min(i + 1, WINDOW_BATCHES) * BATCH_ROWS
            mean = np.abs(ring[:filled]).mean(axis=0)
        return mean

    def numpy_batches():
        for b in batches:
            np.abs(b).mean(axis=0)

    # Same numbers first: a benchmark of two things that disagree is meaningless.
    window_mean = ours().mean_abs()
    if not np.allclose(window_mean, numpy_window(), rtol=1e-12, atol=0):
        raise AssertionError("the sketch's window mean |a| differs from numpy's")

    events = N_BATCHES * BATCH_ROWS
    ours_eps = events / _median_seconds(ours, inner=3)
    base_eps = events / _median_seconds(numpy_window, inner=1)
    batch_eps = events / _median_seconds(numpy_batches, inner=3)
    return {
        "attribution_sketch_update": _entry(
            ours_eps, "events/s", base_eps, "numpy np.abs(window).mean(axis=0) per batch", True,
            rows_per_batch=BATCH_ROWS, features=N_FEATURES, window_events=WINDOW_BATCHES * BATCH_ROWS,
            numpy_batch_only=round(batch_eps, 3),
        )
    }


def _evaluation_figures(rng: np.random.Generator) -> dict:
    from scipy import stats
    from sklearn.metrics import ndcg_score

    names = [f"f{i}" for i in range(N_FEATURES)]
    reference = reference_importance(_attributions(rng, 20_000))
    window = AttributionSketch(names)
    cur = _attributions(rng, 5_000)
    cur[:, [3, 12]] *= [0.3, 6.0]  # some drift, so the ranking and the draws move
    window.update(cur)
    mean, se = window.mean_abs(), window.std_error()

    def ours():
        return attribution_drift(reference, window, k=K, n_draws=N_DRAWS)

    def point_baseline():
        return ndcg_score([reference], [window.mean_abs()], k=K), stats.spearmanr(reference, window.mean_abs())

    def interval_baseline():
        draws = np.random.default_rng(0).normal(window.mean_abs(), window.std_error(), size=(N_DRAWS, N_FEATURES))
        per_draw = [1.0 - ndcg_score([reference], [row], k=K) for row in draws]
        return np.quantile(np.maximum(per_draw, 0.0), [0.025, 0.975]), point_baseline()

    r = ours()
    ndcg, rho = point_baseline()
    (low, high), _ = interval_baseline()
    if abs(r.ndcg - ndcg) > 1e-12 or abs(r.spearman - rho.statistic) > 1e-12:
        raise AssertionError("attribution_drift differs from ndcg_score / spearmanr")
    if abs(r.ci_low - low) > 1e-12 or abs(r.ci_high - high) > 1e-12:
        raise AssertionError("attribution_drift's interval differs from the per-draw ndcg_score one")
    assert np.array_equal(mean, window.mean_abs()) and np.array_equal(se, window.std_error())

    ours_us = _median_seconds(ours, inner=200) * 1e6
    point_us = _median_seconds(point_baseline, inner=100) * 1e6
    interval_us = _median_seconds(interval_baseline, inner=3) * 1e6
    return {
        "attribution_drift_per_window": _entry(
            ours_us, "us", point_us, "sklearn ndcg_score + scipy spearmanr (no interval)", False,
            features=N_FEATURES, k=K, n_draws=N_DRAWS,
        ),
        "attribution_drift_interval": _entry(
            ours_us, "us", interval_us, "sklearn ndcg_score per bootstrap draw + spearmanr", False,
            features=N_FEATURES, k=K, n_draws=N_DRAWS,
        ),
    }


def run() -> dict:
    rng = np.random.default_rng(SEED)
    return {**_update_figures(rng), **_evaluation_figures(rng)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
