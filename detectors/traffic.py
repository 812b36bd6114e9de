"""Traffic-rate anomalies: a pane's event count against a seasonal baseline of past counts.

:class:`SeasonalBaseline` learns, per slot of a period (hour of day, hour of week), the
exponentially weighted mean and variance of per-pane event counts; the variance pooled
over slots gives the over-dispersion ``phi = variance / mean`` (1 for Poisson traffic).
:func:`traffic_anomaly` tests a count against a negative binomial of that mean and
``phi`` (Poisson when ``phi <= 1``) in both directions, beyond a tolerated ratio, and
scores ``-log10`` of the two-sided p-value: the score grows with a spike and with a drop.

>>> import numpy as np
>>> b = SeasonalBaseline(period_seconds=86400, slot_seconds=3600, half_life=100)
>>> rng = np.random.default_rng(1)
>>> starts = np.arange(0, 86400, 300.0)
>>> b.update(starts, rng.poisson(60, starts.size))
>>> mean, phi, w = b.expected(np.array([7200.0]))
>>> r = traffic_anomaly(300, float(mean[0]), phi, tolerance=1.5)
>>> r.direction, r.statistic > 10
('spike', True)
>>> traffic_anomaly(62, float(mean[0]), phi, tolerance=1.5).statistic
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from detectors._serde import check_state, floats, unfloats

__all__ = ["SeasonalBaseline", "TrafficResult", "traffic_anomaly", "count_tails"]


class SeasonalBaseline:
    """Exponentially weighted per-slot moments of per-pane event counts.

    A pane starting at ``t`` falls in slot ``floor((t mod period_seconds) / slot_seconds)``.
    Each slot forgets with ``half_life`` (in its own observations): a slot's weight halves
    after ``half_life`` more panes of it. State is three arrays (weight, sum, sum of squares
    per slot), so baselines merge by addition.
    """

    kind = "seasonal_baseline"
    version = 1

    def __init__(self, period_seconds: float = 86400.0, slot_seconds: float = 3600.0, half_life: float = 84.0):
        if not period_seconds > 0 or not slot_seconds > 0:
            raise ValueError(f"period_seconds and slot_seconds must be > 0, got {period_seconds}, {slot_seconds}")
        n_slots = period_seconds / slot_seconds
        if abs(n_slots - round(n_slots)) > 1e-9:
            raise ValueError(f"period_seconds ({period_seconds}) must be a whole multiple of slot_seconds ({slot_seconds})")
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        self.period_seconds = float(period_seconds)
        self.slot_seconds = float(slot_seconds)
        self.half_life = float(half_life)
        self.n_slots = int(round(n_slots))
        self._decay = 0.5 ** (1.0 / self.half_life)
        self._reset()

    def _reset(self) -> None:
        self.weight = np.zeros(self.n_slots)
        self.s1 = np.zeros(self.n_slots)
        self.s2 = np.zeros(self.n_slots)

    def slot_of(self, starts: np.ndarray) -> np.ndarray:
        t = np.asarray(starts, dtype=np.float64)
        return (np.floor(np.mod(t, self.period_seconds) / self.slot_seconds).astype(np.int64)) % self.n_slots

    def update(self, starts: np.ndarray, counts: np.ndarray) -> None:
        """Learn per-pane ``counts`` of panes starting at ``starts``, in the given order."""
        slots = self.slot_of(starts)
        c = np.asarray(counts, dtype=np.float64)
        if slots.shape != c.shape:
            raise ValueError(f"starts and counts differ in shape: {slots.shape} vs {c.shape}")
        if c.size == 0:
            return
        # the k-th of m observations of a slot in this call keeps decay**(m - 1 - k) of its
        # weight by the end of the call, and the state before the call keeps decay**m
        order = np.argsort(slots, kind="stable")
        s_sorted = slots[order]
        m = np.bincount(slots, minlength=self.n_slots)
        first = np.concatenate([[0], np.cumsum(m)[:-1]])
        rank = np.arange(c.size) - first[s_sorted]
        age = m[s_sorted] - 1 - rank
        w = np.empty(c.size)
        w[order] = self._decay ** age
        keep = self._decay ** m
        self.weight = self.weight * keep + np.bincount(slots, weights=w, minlength=self.n_slots)
        self.s1 = self.s1 * keep + np.bincount(slots, weights=w * c, minlength=self.n_slots)
        self.s2 = self.s2 * keep + np.bincount(slots, weights=w * c * c, minlength=self.n_slots)

    def update_one(self, start: float, count: float) -> None:
        """Per-pane convenience; equal to ``update`` of one-element arrays."""
        self.update(np.array([start]), np.array([count]))

    def dispersion(self) -> float:
        """Pooled variance-to-mean ratio of the slots with two or more panes' weight (>= 1)."""
        ok = self.weight >= 2.0
        if not ok.any():
            return 1.0
        w, s1, s2 = self.weight[ok], self.s1[ok], self.s2[ok]
        mean = s1 / w
        # weighted variance with the reliability-weights correction (unbiased for equal weights)
        var = np.maximum(s2 / w - mean * mean, 0.0) * w / np.maximum(w - 1.0, 1e-12)
        total_mean = float((w * mean).sum())
        if total_mean <= 0:
            return 1.0
        return max(1.0, float((w * var).sum()) / total_mean)

    def expected(self, starts: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """(mean count, pooled dispersion, learned weight) for panes starting at ``starts``."""
        slots = self.slot_of(starts)
        w = self.weight[slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(w > 0, self.s1[slots] / np.where(w > 0, w, 1.0), np.nan)
        return mean, self.dispersion(), w

    # -- algebra and state ------------------------------------------------------------------
    def _check_compatible(self, other: SeasonalBaseline) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot combine SeasonalBaseline with {type(other).__name__}")
        for name in ("period_seconds", "slot_seconds", "half_life"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(f"cannot combine seasonal baselines with different {name}: "
                                 f"{getattr(self, name)} vs {getattr(other, name)}")

    def merge(self, other: SeasonalBaseline) -> SeasonalBaseline:
        self._check_compatible(other)
        self.weight += other.weight
        self.s1 += other.s1
        self.s2 += other.s2
        return self

    def subtract(self, other: SeasonalBaseline) -> SeasonalBaseline:
        self._check_compatible(other)
        self.weight -= other.weight
        self.s1 -= other.s1
        self.s2 -= other.s2
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "period_seconds": self.period_seconds,
                "slot_seconds": self.slot_seconds, "half_life": self.half_life,
                "weight": floats(self.weight), "s1": floats(self.s1), "s2": floats(self.s2)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeasonalBaseline:
        check_state(d, cls.kind)
        b = cls(d["period_seconds"], d["slot_seconds"], d["half_life"])
        for name in ("weight", "s1", "s2"):
            v = unfloats(d[name])
            if v.shape != (b.n_slots,):
                raise ValueError(f"seasonal_baseline state: {name} has {v.size} slots, expected {b.n_slots}")
            setattr(b, name, v)
        return b


def count_tails(count: int, mean: float, dispersion: float) -> tuple[float, float]:
    """``(P(X <= count), P(X >= count))`` for X with ``mean`` and variance ``dispersion * mean``:
    negative binomial (``r = mean / (phi - 1)``, ``p = 1 / phi``) or Poisson when ``phi <= 1``."""
    k = int(count)
    if mean <= 0:
        return 1.0, (1.0 if k <= 0 else 0.0)
    if dispersion <= 1.0 + 1e-9:
        lower = float(special.pdtr(k, mean))
        upper = 1.0 if k <= 0 else float(special.pdtrc(k - 1, mean))
    else:
        r, p = mean / (dispersion - 1.0), 1.0 / dispersion
        # NB cdf as the regularised incomplete beta: P(X <= k) = I_p(r, k + 1)
        lower = float(special.betainc(r, k + 1, p))
        upper = 1.0 if k <= 0 else float(special.betainc(k, r, 1.0 - p))
    return lower, upper


@dataclass(frozen=True)
class TrafficResult:
    """A pane's count against its baseline: ``statistic = -log10(p_value)``, 0 when inside
    the tolerated band; ``ratio = count / expected``; ``direction`` "spike", "drop" or "none"."""

    statistic: float
    p_value: float
    count: int
    expected: float
    dispersion: float
    ratio: float
    direction: str


def traffic_anomaly(count: int, expected: float, dispersion: float = 1.0, tolerance: float = 1.5) -> TrafficResult:
    """Two-sided test of ``count`` beyond ``tolerance`` times the baseline either way.

    A spike is judged against ``expected * tolerance`` (P(X >= count)), a drop against
    ``expected / tolerance`` (P(X <= count)), both with the baseline's dispersion; the
    p-value is twice the smaller tail (capped at 1), so ordinary variation within the
    tolerated ratio scores near 0 however large the counts are.
    """
    if not tolerance >= 1:
        raise ValueError(f"tolerance must be >= 1, got {tolerance}")
    if not expected >= 0 or not dispersion > 0:
        raise ValueError(f"expected must be >= 0 and dispersion > 0, got {expected}, {dispersion}")
    count = int(count)
    if expected == 0:
        direction = "spike" if count > 0 else "none"
        p = 0.0 if count > 0 else 1.0
        return TrafficResult(_score(p), p, count, 0.0, dispersion, math.inf if count else 1.0, direction)
    _, upper = count_tails(count, expected * tolerance, dispersion)
    lower, _ = count_tails(count, expected / tolerance, dispersion)
    p = min(1.0, 2.0 * min(upper, lower))
    direction = "none" if p >= 1.0 else ("spike" if upper < lower else "drop")
    return TrafficResult(_score(p), p, count, float(expected), float(dispersion), count / expected, direction)


def _score(p: float) -> float:
    return float(-math.log10(max(p, 1e-300))) + 0.0  # + 0.0: no -0.0 at p = 1
