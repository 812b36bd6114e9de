"""Benchmark: group fairness evaluation from confusion counts vs fairlearn's MetricFrame.

The monitor keeps per-group confusion counts per pane, so evaluating fairness on a
window is a function of a (groups, 2, 2) array, not of the rows. This times that
evaluation (all group rates with Wilson intervals and all five between-group gaps with
their intervals) against fairlearn's MetricFrame (selection rate, TPR, FPR) on the same
100k-row window with 3 groups, and the ConfusionCounts update throughput that builds
the counts. Run: ``.venv/bin/python bench/detectors_fairness.py``; about 10 s.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np

from detectors.fairness import evaluate_fairness
from detectors.sketch import ConfusionCounts

N_ROWS = 100_000
GROUPS = ["a", "b", "c"]


def _window(seed: int = 0):
    rng = np.random.default_rng(seed)
    g = rng.choice(len(GROUPS), N_ROWS, p=[0.5, 0.3, 0.2])
    y = rng.integers(0, 2, N_ROWS)
    p = (rng.random(N_ROWS) < 0.3 + 0.1 * g + 0.3 * y).astype(np.int64)
    return y, p, g


def _best_per_call(fn, repeats: int, inner: int) -> float:
    """Seconds per call: the best of ``repeats`` timings of ``inner`` back-to-back calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def run() -> dict:
    from fairlearn.metrics import (
        MetricFrame,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    y, p, g = _window()
    counts = ConfusionCounts(GROUPS)
    counts.update(y, p, g)
    names = np.array(GROUPS)[g]

    def ours():
        return evaluate_fairness(counts, min_group_size=30)

    def theirs():
        return MetricFrame(
            metrics={
                "selection_rate": selection_rate,
                "tpr": true_positive_rate,
                "fpr": false_positive_rate,
            },
            y_true=y,
            y_pred=p,
            sensitive_features=names,
        ).by_group

    # Same numbers first: a benchmark of two things that disagree is meaningless.
    rates = ours().rates
    frame = theirs()
    for col, rate in (("selection_rate", "selection_rate"), ("tpr", "tpr"), ("fpr", "fpr")):
        for grp in GROUPS:
            if abs(rates.rate(rate)[grp] - frame.loc[grp, col]) > 1e-12:
                raise AssertionError(f"{rate} of group {grp} differs from fairlearn")

    ours_s = _best_per_call(ours, repeats=5, inner=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        baseline_s = _best_per_call(theirs, repeats=3, inner=1)

    def update():
        c = ConfusionCounts(GROUPS)
        c.update(y, p, g)

    update_s = _best_per_call(update, repeats=5, inner=5)
    return {
        "fairness_evaluation_from_counts": {
            "value": ours_s,
            "unit": "s",
            "baseline": baseline_s,
            "baseline_name": "fairlearn MetricFrame",
            "ratio": baseline_s / ours_s,
            "rows": N_ROWS,
            "groups": len(GROUPS),
        },
        "confusion_counts_update": {
            "value": N_ROWS / update_s,
            "unit": "events/s",
            "rows_per_batch": N_ROWS,
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
