"""Benchmark: CBPE of one window from its score histogram vs NannyML's CBPE on the rows.

The monitor keeps a 100-bin :class:`ScoreHistogram` of each window's scores, so its
label-free performance estimate is a function of 100 bins, not of the rows. Figures
(seconds per window, median of 5 repeats; ``ratio`` = baseline / ours, > 1 is faster),
both on the same 5000-row window after checking they agree (within the discretisation
tolerance of tests/detectors/test_cbpe.py):

* ``cbpe_per_window``: :func:`estimate_performance` (accuracy, precision, recall, F1,
  ROC AUC with intervals) on the window's histogram vs ``nannyml.CBPE.estimate`` of the
  window as one chunk (fit on a 20k-row reference excluded from both).
* ``cbpe_per_window_from_rows``: the same, ours including building the histogram from
  the 5000 rows (what a window costs when it is not already a sum of panes).

Run: ``.venv/bin/python bench/detectors_cbpe.py`` (prints JSON); about 4 s.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script: import the package, not this directory
    HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(HERE.parent))

from detectors.cbpe import ScoreCalibrator, estimate_performance  # noqa: E402
from detectors.sketch import ScoreHistogram  # noqa: E402

N_REF = 20_000
WINDOW_ROWS = 5_000
N_BINS = 100
REPEATS = 5
SEED = 20260301
METRICS = ("roc_auc", "f1", "precision", "recall", "accuracy")


def _rows(n: int, mu: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # an under-confident model (score = sigmoid(logit(p) / 2)), so calibration matters
    logit = 1.5 * rng.normal(mu, 1.0, n) - 0.5
    p = 1.0 / (1.0 + np.exp(-logit))
    return 1.0 / (1.0 + np.exp(-0.5 * logit)), (rng.random(n) < p).astype(np.int64)


def _median_seconds(fn: Callable[[], object], repeats: int, inner: int) -> float:
    """Seconds per call: the median over ``repeats`` timings of ``inner`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def _entry(ours: float, baseline: float) -> dict:
    return {
        "value": ours,
        "unit": "s",
        "baseline": baseline,
        "baseline_name": "nannyml CBPE.estimate (one 5000-row chunk)",
        "ratio": round(baseline / ours, 1),
        "rows": WINDOW_ROWS,
        "bins": N_BINS,
    }


def run() -> dict:
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # before nannyml is imported; no network
    import nannyml as nml
    import pandas as pd

    rng = np.random.default_rng(SEED)
    ref_s, ref_y = _rows(N_REF, 0.0, rng)
    win_s, _ = _rows(WINDOW_ROWS, 0.5, rng)  # covariate shift

    ref_hist = ScoreHistogram(2, N_BINS)
    ref_hist.update(ref_s, ref_y)
    cal = ScoreCalibrator.fit(ref_hist)
    zeros = np.zeros(WINDOW_ROWS, dtype=np.int64)

    def window_hist() -> ScoreHistogram:
        h = ScoreHistogram(2, N_BINS)
        h.update(win_s, zeros)
        return h

    hist = window_hist()

    def ours():
        return estimate_performance(hist, cal)

    def ours_from_rows():
        return estimate_performance(window_hist(), cal)

    estimator = nml.CBPE(
        y_pred_proba="score",
        y_pred="pred",
        y_true="y",
        problem_type="classification_binary",
        metrics=list(METRICS),
        chunk_size=WINDOW_ROWS,
    )
    # the window arrives as a frame for nannyml: built beforehand, not timed
    frame = pd.DataFrame({"score": win_s, "pred": (win_s >= 0.5).astype(int)})

    def theirs():
        return estimator.estimate(frame)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(pd.DataFrame({"score": ref_s, "pred": (ref_s >= 0.5).astype(int), "y": ref_y}))
        # Same numbers first: a benchmark of two things that disagree is meaningless.
        got = ours()
        want = theirs().filter(period="analysis").to_df()
        for name in METRICS:
            diff = abs(got[f"estimated_{name}"].value - float(want[(name, "value")].iloc[0]))
            if diff > 0.01:
                raise AssertionError(f"estimated {name} differs from nannyml by {diff:.4f}")
        ours_s = _median_seconds(ours, REPEATS, inner=500)
        rows_s = _median_seconds(ours_from_rows, REPEATS, inner=100)
        baseline_s = _median_seconds(theirs, REPEATS, inner=1)

    return {
        "cbpe_per_window": _entry(ours_s, baseline_s),
        "cbpe_per_window_from_rows": _entry(rows_s, baseline_s),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
