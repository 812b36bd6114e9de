"""Benchmarks of the statistics core, each against the obvious alternative in the same run.

Sections (each a module in bench/ with ``run() -> dict``):
  * detectors_drift: sketch updates of 50 features from 1000-event micro-batches vs
    straightforward numpy binning; PSI+KS+JS for 50 features from sketches vs
    ``scipy.stats.ks_2samp`` on raw 10k/1k samples; vs evidently's drift preset.
  * detectors_sequential: each change detector's ``update_many`` on 1e6 values vs river's
    detector fed per event.
  * detectors_fairness: group fairness from counts vs fairlearn's MetricFrame.
  * detectors_cbpe: label-free performance of one window's score histogram vs nannyml's
    CBPE on the same rows.
  * detectors_reconstruction: PCA reconstruction error per event vs nannyml's
    DataReconstructionDriftCalculator.
  * detectors_attribution: attribution sketch updates and 1 - NDCG vs pandas + sklearn.
  * detectors_slices: slice-count updates and slice ranking per alert vs pandas + statsmodels.

Ends by printing one JSON object: {figure: {value, unit, baseline, baseline_name, ratio}}.
Run: ``.venv/bin/python bench/detectors.py [--only drift,sequential,fairness,cbpe,reconstruction,attribution,slices]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file is named like the package it measures: keep bench/ off the import path so
# ``import detectors`` finds the package, and load the sections by file path instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))


def _section(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_detectors_{name}", HERE / f"detectors_{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

SECTIONS = ("drift", "sequential", "fairness", "cbpe", "reconstruction", "attribution", "slices")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    args = ap.parse_args()
    results: dict = {}
    for name in args.only.split(","):
        mod = _section(name)
        t0 = time.perf_counter()
        part = mod.run()
        print(f"# {name}: {len(part)} figures in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        results.update(part)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
