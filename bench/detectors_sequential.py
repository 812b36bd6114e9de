"""Benchmark: compiled sequential change detectors vs river 0.26 fed per event.

For each detector, ``update_many`` runs over 1e6 values (after a JIT warm-up) and is
compared with river's detector fed the same values one by one from Python in this
process (the way river is used), checking ``drift_detected`` after each value. River's
slow detectors are timed on a prefix (KSWIN: 20k values) and reported as a rate. CUSUM
has no river counterpart; its baseline is a plain-Python per-event tabular CUSUM.
Values: Gaussian with mean shifts (ADWIN, Page-Hinkley, KSWIN, CUSUM) or a Bernoulli
error indicator with rate shifts (DDM, EDDM, HDDM-A/W). Alarm positions of the timed
runs are compared on the common prefix, so a fast wrong detector cannot pass.
Run: ``.venv/bin/python bench/detectors_sequential.py``; about 30-60 s.
"""

from __future__ import annotations

import json
import time

import numpy as np
from river import drift

from detectors.adwin import ADWIN
from detectors.change_detector import ChangeDetector
from detectors.cusum import CUSUM
from detectors.ddm import DDM
from detectors.eddm import EDDM
from detectors.hddm_a import HDDM_A
from detectors.hddm_w import HDDM_W
from detectors.kswin import KSWIN
from detectors.page_hinkley import PageHinkley

N = 1_000_000


def _gaussian(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.choice([0.0, 0.5, 1.0, 2.0], size=n // 20_000 + 1)
    return (rng.normal(size=n) + np.repeat(means, 20_000)[:n]).astype(np.float64)


def _errors(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = rng.choice([0.05, 0.1, 0.2, 0.4], size=n // 20_000 + 1)
    return (rng.random(n) < np.repeat(rates, 20_000)[:n]).astype(np.float64)


class _PyCUSUM:
    """Plain-Python two-sided tabular CUSUM with fixed parameters (the baseline)."""

    def __init__(self, target: float, sigma: float, k: float, h: float):
        self.mu, self.kk, self.hh = target, k * sigma, h * sigma
        self.hi = self.lo = 0.0
        self.drift_detected = False

    def update(self, x: float) -> None:
        if self.drift_detected:
            self.hi = self.lo = 0.0
        self.hi = max(0.0, self.hi + (x - (self.mu + self.kk)))
        self.lo = max(0.0, self.lo + ((self.mu - self.kk) - x))
        self.drift_detected = self.hi > self.hh or self.lo > self.hh


# name -> (our factory, river factory, baseline name, values, river prefix length)
CASES = {
    "adwin": (ADWIN, drift.ADWIN, "river.drift.ADWIN per event", "gaussian", N),
    "page_hinkley": (
        PageHinkley,
        drift.PageHinkley,
        "river.drift.PageHinkley per event",
        "gaussian",
        200_000,
    ),
    "cusum": (
        lambda: CUSUM(target=0.0, sigma=1.0, k=0.5, h=8.0),
        lambda: _PyCUSUM(0.0, 1.0, 0.5, 8.0),
        "plain-Python tabular CUSUM per event (river has none)",
        "gaussian",
        200_000,
    ),
    "kswin": (
        lambda: KSWIN(alpha=0.005, seed=42),
        lambda: drift.KSWIN(alpha=0.005, seed=42),
        "river.drift.KSWIN per event",
        "gaussian",
        20_000,
    ),
    "ddm": (DDM, drift.binary.DDM, "river.drift.binary.DDM per event", "errors", 200_000),
    "eddm": (EDDM, drift.binary.EDDM, "river.drift.binary.EDDM per event", "errors", 200_000),
    "hddm_a": (
        HDDM_A,
        drift.binary.HDDMA,
        "river.drift.binary.HDDMA per event",
        "errors",
        200_000,
    ),
    "hddm_w": (
        HDDM_W,
        drift.binary.HDDMW,
        "river.drift.binary.HDDMW per event",
        "errors",
        200_000,
    ),
}


def _time_ours(factory, x: np.ndarray, repeats: int = 2) -> tuple[float, list[int]]:
    factory().update_many(x[:20_000])  # JIT compile or load from cache
    best, alarms = float("inf"), []
    for _ in range(repeats):
        det: ChangeDetector = factory()
        t0 = time.perf_counter()
        alarms = det.update_many(x).tolist()
        best = min(best, time.perf_counter() - t0)
    return x.size / best, alarms


def _time_river(factory, values: list[float]) -> tuple[float, list[int]]:
    det = factory()
    alarms = []
    t0 = time.perf_counter()
    for t, v in enumerate(values):
        det.update(v)
        if det.drift_detected:
            alarms.append(t)
    return len(values) / (time.perf_counter() - t0), alarms


def run() -> dict:
    """Throughput of each detector's ``update_many`` and of its per-event baseline."""
    data = {"gaussian": _gaussian(N), "errors": _errors(N)}
    results: dict = {}
    for name, (ours, theirs, baseline_name, kind, prefix) in CASES.items():
        x = data[kind]
        rate, alarms = _time_ours(ours, x)
        base_rate, base_alarms = _time_river(theirs, x[:prefix].tolist())
        same = [a for a in alarms if a < prefix] == base_alarms
        if not same:
            raise AssertionError(f"{name}: alarm positions differ from the baseline's")
        results[name] = {
            "value": round(rate),
            "unit": "events/s",
            "baseline": round(base_rate),
            "baseline_name": baseline_name,
            "ratio": round(rate / base_rate, 2),
            "n_values": int(x.size),
            "baseline_n_values": prefix,
            "alarms_in_common_prefix": len(base_alarms),
        }
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
