"""Benchmark: per-event PCA reconstruction errors vs NannyML and a scikit-learn pipeline.

The monitor computes :meth:`PCAReconstruction.errors` on every 1000-row micro-batch of
20 numeric features (5% missing) and folds them into a Moments sketch. Figures (events/s,
median of 5 repeats; ``ratio`` = ours / baseline, > 1 is faster), each baseline on the
same rows in the same run after checking it gives the same errors:

* ``reconstruction_error_per_event``: vs NannyML's ``DataReconstructionDriftCalculator``
  ``.calculate()`` on the batch as one chunk (its only per-batch entry point; it also
  builds its result frame and thresholds, which is part of what using it costs).
* ``reconstruction_error_per_event_sklearn``: vs ``SimpleImputer`` + ``StandardScaler`` +
  ``PCA.transform`` / ``inverse_transform`` + row norms, fitted once on the reference.

Run: ``.venv/bin/python bench/detectors_reconstruction.py`` (prints JSON); about 6 s.
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

from detectors.reconstruction import PCAReconstruction  # noqa: E402

N_FEATURES = 20
N_REF = 20_000
BATCH_ROWS = 1_000
N_BATCHES = 20
REPEATS = 5
SEED = 20260301


def _data():
    rng = np.random.default_rng(SEED)
    # a few latent factors plus noise: the usual correlated tabular features
    load = rng.normal(size=(4, N_FEATURES))
    scale = rng.uniform(0.5, 50.0, N_FEATURES)

    def rows(n, shift=0.0):
        x = (rng.normal(size=(n, 4)) @ load + rng.normal(size=(n, N_FEATURES)) + shift) * scale
        x[rng.random(x.shape) < 0.05] = np.nan
        return x

    ref = rows(N_REF)
    batches = [rows(BATCH_ROWS, shift=0.1 * (i % 3)) for i in range(N_BATCHES)]
    return ref, batches


def _median_rate(fn: Callable[[np.ndarray], object], batches: list[np.ndarray], repeats: int) -> float:
    """Events per second: the median over ``repeats`` passes through ``batches``."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        rates.append(sum(b.shape[0] for b in batches) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _entry(value: float, baseline: float, name: str) -> dict:
    return {
        "value": round(value, 1),
        "unit": "events/s",
        "baseline": round(baseline, 1),
        "baseline_name": name,
        "ratio": round(value / baseline, 2),
        "rows_per_batch": BATCH_ROWS,
        "features": N_FEATURES,
    }


def run() -> dict:
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # before nannyml is imported; no network
    import nannyml as nml
    import pandas as pd
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    ref, batches = _data()
    names = [f"x{i}" for i in range(N_FEATURES)]
    model = PCAReconstruction.fit(ref, names)

    imputer = SimpleImputer(strategy="mean").fit(ref)
    scaler = StandardScaler().fit(imputer.transform(ref))
    pca = PCA(n_components=0.65).fit(scaler.transform(imputer.transform(ref)))

    def sklearn_errors(x):
        z = scaler.transform(imputer.transform(x))
        return np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)

    calc = nml.DataReconstructionDriftCalculator(column_names=names, chunk_size=BATCH_ROWS)
    calc.fit(pd.DataFrame(ref, columns=names))
    frames = [pd.DataFrame(b, columns=names) for b in batches]

    def nannyml_mean(frame):
        return calc.calculate(frame).filter(period="analysis").to_df()[("reconstruction_error", "value")]

    # Same numbers first: a benchmark of two things that disagree is meaningless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, f in zip(batches[:3], frames[:3], strict=True):
            ours = model.errors(b)
            if not np.allclose(ours, sklearn_errors(b), rtol=1e-9, atol=0):
                raise AssertionError("errors differ from the scikit-learn pipeline")
            if not np.isclose(ours.mean(), float(nannyml_mean(f).iloc[0]), rtol=1e-9, atol=0):
                raise AssertionError("mean error differs from nannyml")

        ours_rate = _median_rate(model.errors, batches, REPEATS)
        sk_rate = _median_rate(sklearn_errors, batches, REPEATS)
        # nannyml takes a DataFrame: the frames are built beforehand, so not timed
        frame_of = {id(b): f for b, f in zip(batches, frames, strict=True)}
        few = batches[:5]
        nml_rate = _median_rate(lambda b: nannyml_mean(frame_of[id(b)]), few, REPEATS)

    return {
        "reconstruction_error_per_event": _entry(
            ours_rate, nml_rate, "nannyml DataReconstructionDriftCalculator.calculate (one chunk)"
        ),
        "reconstruction_error_per_event_sklearn": _entry(
            ours_rate, sk_rate, "sklearn SimpleImputer+StandardScaler+PCA transform/inverse_transform"
        ),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
