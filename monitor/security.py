"""Security signals at ingress: what a pane counts for them and how a window is judged.

Per model: the share of inputs outside the reference's support, near-duplicate query
bursts (a count-min sketch over hashes of rounded feature vectors), the rate of records
dead-lettered for the schema, and per-pane traffic against a seasonal baseline learned
online. Panes keep counts and hashes only, never an input value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from detectors.count_min import (
    CellGrid,
    CountMinSketch,
    collision_probability,
    near_duplicate_share,
)
from detectors.intervals import wilson_interval
from detectors.reference import ReferenceProfile
from detectors.traffic import SeasonalBaseline, traffic_anomaly

__all__ = ["SecurityLayout", "TrafficWatch", "add_violations", "security_evaluations"]

log = logging.getLogger("driftline.security")

# a pane this far past its baseline teaches it only the tolerated band (p < 1e-3)
_LEARN_LIMIT = 3.0


@dataclass
class SecurityLayout:
    """Per-model constants of the security sketches, fixed by the reference profile."""

    low: np.ndarray  # numeric support per feature (NaN: unknown, never out of support)
    high: np.ndarray
    grid: CellGrid  # where near-duplicate inputs meet
    width: int
    depth: int
    baseline_collision: float = 0.0  # the reference rows' own cell-collision probability

    @classmethod
    def build(cls, cfg, profile: ReferenceProfile, numeric: list[str], categorical: list[str]) -> SecurityLayout:
        """From ``[models.security]`` (``cfg``) and the profile's numeric supports, spreads and sample."""
        low = np.array([profile.numeric[n].low for n in numeric], dtype=np.float64)
        high = np.array([profile.numeric[n].high for n in numeric], dtype=np.float64)
        if numeric and np.isnan(low).any():
            log.warning("reference profile has no support (min/max) for %s (written by an older version): "
                        "out_of_support_share counts only their categories; rebuild it to count them",
                        [n for n, v in zip(numeric, low, strict=True) if math.isnan(v)])
        std = np.array([math.sqrt(max(float(profile.numeric[n].moments.variance[0]), 0.0)) for n in numeric])
        mean = np.array([float(profile.numeric[n].moments.mean[0]) for n in numeric], dtype=np.float64)
        grid = CellGrid(mean, std, cfg.resolution, cfg.projections)
        layout = cls(low, high, grid, cfg.width, cfg.depth)
        sample = _reference_rows(profile, numeric, categorical)
        if sample is not None:
            X, C = sample
            grid.fit_scale(X)
            layout.baseline_collision = collision_probability(layout.keys(X, C))
        return layout

    def codes(self, category_codes: list[np.ndarray], n: int) -> np.ndarray:
        return np.column_stack(category_codes).astype(np.int64) if category_codes else np.zeros((n, 0), np.int64)

    def outside(self, numeric: np.ndarray, codes: np.ndarray) -> tuple[int, np.ndarray]:
        """(rows with a value beyond the reference's min/max or an unseen category, such
        values per feature: numeric then categorical)."""
        with np.errstate(invalid="ignore"):
            out = (numeric < self.low) | (numeric > self.high)
        if codes.shape[1]:
            out = np.hstack([out, codes == -1])
        return int(out.any(axis=1).sum()), out.sum(axis=0).astype(np.int64)

    def keys(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.grid.keys(numeric, codes)

    def sketch(self) -> CountMinSketch:
        return CountMinSketch(self.width, self.depth)


def _reference_rows(profile: ReferenceProfile, numeric: list[str], categorical: list[str]):
    """(numeric matrix, category codes) of the profile's row sample, or None without one."""
    sample = profile.sample or {}
    if not (numeric or categorical) or not all(f in sample for f in numeric + categorical):
        return None
    m = len(sample[(numeric + categorical)[0]])
    cols = [np.array([np.nan if v is None else v for v in sample[f]], dtype=np.float64) for f in numeric]
    X = np.column_stack(cols) if cols else np.zeros((m, 0))
    codes = []
    for f in categorical:
        vocab = {c: k for k, c in enumerate(profile.categorical[f].categories)}
        codes.append([-2 if v is None else vocab.get(str(v), -1) for v in sample[f]])
    return X, np.array(codes, dtype=np.int64).T.reshape(m, len(categorical))


class TrafficWatch:
    """A model's seasonal traffic baseline, learned online from its evaluated panes in order."""

    def __init__(self, cfg, pane_seconds: float):
        panes_per_slot = cfg.slot_seconds / pane_seconds
        self.baseline = SeasonalBaseline(cfg.period_seconds, cfg.slot_seconds,
                                         half_life=cfg.half_life_periods * panes_per_slot)
        self.tolerance = cfg.tolerance
        # the weight a slot holds after min_periods periods of panes (with forgetting)
        m = round(cfg.min_periods * panes_per_slot)
        lam = 0.5 ** (1.0 / self.baseline.half_life)
        self.min_weight = (1.0 - lam**m) / (1.0 - lam) - 1e-9 if m else 0.0

    def judge(self, start: float, count: int):
        """The pane's :class:`~detectors.traffic.TrafficResult` (None while its slot is
        still learning); then the pane is learned, an anomalous one only up to the band."""
        mean, phi, w = self.baseline.expected(np.array([start]))
        result = None
        learn = float(count)
        if w[0] > 0 and w[0] >= self.min_weight and mean[0] == mean[0]:
            result = traffic_anomaly(count, float(mean[0]), phi, self.tolerance)
            if result.statistic >= _LEARN_LIMIT:
                # an attack must not become the normal it is judged against
                learn = min(max(learn, mean[0] / self.tolerance), mean[0] * self.tolerance)
        self.baseline.update_one(start, learn)
        return result

    def to_dict(self) -> dict:
        return self.baseline.to_dict()

    def load(self, d: dict) -> None:
        stored = SeasonalBaseline.from_dict(d)
        try:
            self.baseline._check_compatible(stored)
        except ValueError as e:
            log.warning("traffic baseline not restored, [models.security] changed (%s): it learns afresh", e)
            return
        self.baseline = stored


def security_evaluations(window, pane, watch: TrafficWatch | None, layout: SecurityLayout,
                         confidence: float, ev: Callable) -> None:
    """The window's security evaluations (``ev(metric, scope, value, n, **kw)``)."""
    n = window.n_predictions
    names = window.layout.numeric + window.layout.categorical
    if n:
        lo, hi = wilson_interval(window.n_outside, n, confidence)
        # the features most often outside, for the alert (names only, never values)
        top = np.argsort(-window.outside_by, kind="stable")[:3]
        by = {names[k]: round(float(window.outside_by[k]) / n, 6) for k in top if window.outside_by[k] > 0}
        ev("out_of_support_share", "model", window.n_outside / n, n, ci_low=float(lo), ci_high=float(hi),
           details={"features": by} if by else None)
    if window.dups is not None and window.dups.n >= 2:
        r = near_duplicate_share(window.dups, layout.baseline_collision, confidence)
        ev("near_duplicate_share", "model", r.value, r.n, ci_low=r.ci_low, ci_high=r.ci_high,
           details={"collision": r.collision, "reference_collision": layout.baseline_collision})
    total = n + window.n_invalid
    if total:
        lo, hi = wilson_interval(window.n_invalid, total, confidence)
        ev("schema_violation_rate", "model", window.n_invalid / total, total, ci_low=float(lo), ci_high=float(hi),
           details={"violations": int(window.n_invalid)})
    if watch is not None and pane is not None:
        r = watch.judge(pane.start, pane.n_predictions)
        if r is not None:
            # n is the traffic the verdict is about, the expected count: a drop to 0 is judged,
            # and min_samples keeps quiet slots (a few events per pane) out of it
            ev("traffic_rate_anomaly", "model", r.statistic, round(r.expected), p_value=r.p_value,
               details={"count": r.count, "expected": round(r.expected, 3), "ratio": round(r.ratio, 4) if math.isfinite(r.ratio) else None,
                        "direction": r.direction, "dispersion": round(r.dispersion, 4),
                        "pane_start": pane.start})


def add_violations(pipeline, partition: int, failures: Iterable) -> None:
    """Count dead-lettered predictions of known models in their pane (by their event time).

    A failure without a decoded event time (bad timestamp, missing id) counts at the
    partition's latest prediction time; one without a known model (bad JSON, unknown
    model) belongs to no model and is only in the dead-letter metric. Panes already sealed
    and models still in warm-up do not count them.
    """
    from monitor.panes import Pane

    by_model: dict[str, list[float]] = {}
    st = pipeline.partition(partition)
    for f in failures:
        if f.model is None or f.model not in pipeline.by_name:
            continue
        t = f.ts if f.ts is not None else st.pred_max
        if t is None or not math.isfinite(t):
            continue
        by_model.setdefault(f.model, []).append(t)
    for model, times in by_model.items():
        m = pipeline.by_name[model]
        if not m.ready or m.layout.security is None:
            continue
        starts = m.pane_start(np.asarray(times, dtype=np.float64))
        starts = starts[starts >= st.sealed[m.index]]
        for s, c in zip(*np.unique(starts, return_counts=True), strict=True):
            pane = st.open[m.index].get(float(s))
            if pane is None:
                pane = st.open[m.index][float(s)] = Pane(m.layout, float(s))
            pane.n_invalid += int(c)
