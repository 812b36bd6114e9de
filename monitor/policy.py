"""Policy: rules turn window evaluations into alert lifecycles (firing -> resolved).

Each (rule, scope) has a small state machine driven by event time, so a replay or a
restart reproduces every transition and every alert id exactly:

* the *judged value* is the statistic, except: p-value tests are judged on their
  (Benjamini-Hochberg adjusted, when ``fdr > 0``) p-value, lower is worse; a metric
  with a confidence interval (performance, fairness) is judged on the interval bound
  nearest to "no harm" (the lower bound when higher is worse, e.g. a parity difference;
  the upper bound when lower is worse, e.g. accuracy or the disparate impact ratio), so
  a breach fires only when the data support it; detector rules are judged on the
  detections in the new pane.
* a window with fewer than ``min_samples`` events (or a metric reporting insufficient
  data) gives no verdict and leaves the state as it was;
* ``for`` consecutive windows at warn level or worse fire an episode (not within
  ``cooldown_seconds`` of the last resolution); an escalation from warn to alert is a new
  transition of the same episode; the episode resolves when the judged value is back on
  the good side of ``resolve`` (hysteresis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.multiple_testing import benjamini_hochberg
from monitor.events import AlertEvent, alert_id

__all__ = ["Evaluation", "RulePolicy", "P_VALUE_TESTS", "FAIRNESS_METRICS"]

P_VALUE_TESTS = frozenset({"ks", "chi_square", "g_test"})
FAIRNESS_METRICS = frozenset(
    {
        "demographic_parity_difference",
        "disparate_impact_ratio",
        "equal_opportunity_difference",
        "equalized_odds_difference",
        "predictive_parity_difference",
    }
)


@dataclass
class Evaluation:
    """One statistic of one window (a line of the replay output, a gauge on /metrics)."""

    model: str
    metric: str
    scope: str
    value: float | None
    window_start: float
    window_end: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    status: str = "ok"  # ok | warn | alert | insufficient_data | undefined
    details: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        out = {
            "type": "evaluation",
            "window_start": self.window_start,
            "window_end": self.window_end,
            "model": self.model,
            "metric": self.metric,
            "scope": self.scope,
            "value": _clean(self.value),
            "ci_low": _clean(self.ci_low),
            "ci_high": _clean(self.ci_high),
            "p_value": _clean(self.p_value),
            "threshold": _clean(self.threshold),
            "status": self.status,
            "n": int(self.n),
        }
        if self.details:
            out["details"] = self.details
        return out


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if (v != v or v in (float("inf"), float("-inf"))) else v


class RulePolicy:
    """The lifecycle state of one model's rules; ``to_dict``/``from_dict`` for checkpoints."""

    kind = "rule_policy"
    version = 1

    def __init__(self, model: str, rules):
        self.model = model
        self.rules = list(rules)
        self._state: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _direction(rule) -> str:
        return "below" if (rule.metric in P_VALUE_TESTS or rule.metric == "disparate_impact_ratio") else rule.direction

    def judged(self, rule, ev: Evaluation) -> float | None:
        if rule.metric in P_VALUE_TESTS:
            if rule.fdr > 0 or not ev.details:
                return ev.p_value
            return ev.details.get("p_value_raw", ev.p_value)
        if ev.ci_low is not None and ev.ci_high is not None:
            return ev.ci_high if self._direction(rule) == "below" else ev.ci_low
        return ev.value

    def _level(self, rule, v: float) -> str:
        below = self._direction(rule) == "below"

        def worse(x: float | None) -> bool:
            return x is not None and (v <= x if below else v >= x)

        if worse(rule.alert):
            return "alert"
        if worse(rule.warn):
            return "warn"
        return "ok"

    def _resolved(self, rule, v: float) -> bool:
        r = rule.resolve if rule.resolve is not None else (rule.warn if rule.warn is not None else rule.alert)
        if r is None:
            return True
        return v > r if self._direction(rule) == "below" else v < r

    def apply(self, evaluations: list[Evaluation], window_start: float, window_end: float) -> list[AlertEvent]:
        """Judge this window's evaluations against every rule; returns the transitions."""
        by_metric: dict[str, list[Evaluation]] = {}
        for ev in evaluations:
            by_metric.setdefault(ev.metric, []).append(ev)
        for metric, evs in by_metric.items():
            # BH-adjusted p-values do not depend on the FDR level, so adjust each metric's
            # p-values once; a rule with fdr = 0 judges the raw ones (kept in details)
            if metric in P_VALUE_TESTS and any(r.metric == metric and r.fdr > 0 for r in self.rules):
                self._adjust(evs)
        out: list[AlertEvent] = []
        for rule in self.rules:
            evs = [e for e in by_metric.get(rule.metric, []) if self._scope_matches(rule, e)]
            for ev in evs:
                out.extend(self._step(rule, ev, window_start, window_end))
        return out

    @staticmethod
    def _scope_matches(rule, ev: Evaluation) -> bool:
        if rule.is_detector:  # one evaluation per detector rule, named in its details
            return bool(ev.details) and ev.details.get("rule") == rule.name
        if rule.scope == "group":
            return "=" not in ev.scope  # between-group metrics, not per-group rates
        return True

    @staticmethod
    def _adjust(evs: list[Evaluation]) -> None:
        tested = [e for e in evs if e.p_value is not None]
        if not tested:
            return
        p = np.array([e.p_value for e in tested], dtype=np.float64)
        _, adjusted = benjamini_hochberg(p, 0.05)  # the level only decides rejections
        for e, a in zip(tested, adjusted, strict=True):
            e.details = {**(e.details or {}), "p_value_raw": e.p_value}
            e.p_value = float(a)

    def _step(self, rule, ev: Evaluation, window_start: float, window_end: float) -> list[AlertEvent]:
        key = f"{rule.name}\x1f{ev.scope}"
        st = self._state.setdefault(key, {"firing": False, "streak": 0, "level": "ok", "start": None, "seq": 0, "resolved_at": None})
        thr = rule.alert if rule.alert is not None else rule.warn
        if ev.threshold is None or rule.metric not in P_VALUE_TESTS:
            ev.threshold = thr
        v = self.judged(rule, ev)
        if ev.n < rule.min_samples or v is None or ev.status in ("insufficient_data", "undefined") or v != v:
            if ev.status == "ok":
                ev.status = "insufficient_data" if ev.n < rule.min_samples else ev.status
            return []
        level = "alert" if rule.is_detector and v > 0 else ("ok" if rule.is_detector else self._level(rule, v))
        ev.status = level
        transitions: list[AlertEvent] = []
        if not st["firing"]:
            st["streak"] = st["streak"] + 1 if level != "ok" else 0
            cooling = st["resolved_at"] is not None and window_end - st["resolved_at"] < rule.cooldown_seconds
            if st["streak"] >= rule.for_ and not cooling:
                st.update(firing=True, start=window_end, seq=1, level=level)
                transitions.append(self._event(rule, ev, "firing", st, v, window_start, window_end))
        else:
            if not rule.is_detector and self._resolved(rule, v) or rule.is_detector and level == "ok":
                st.update(firing=False, streak=0, seq=st["seq"] + 1, resolved_at=window_end)
                transitions.append(self._event(rule, ev, "resolved", st, v, window_start, window_end))
                st["level"] = "ok"
            elif level == "alert" and st["level"] == "warn":
                st.update(seq=st["seq"] + 1, level="alert")
                transitions.append(self._event(rule, ev, "firing", st, v, window_start, window_end))
        return transitions

    def _event(self, rule, ev: Evaluation, state: str, st: dict, v: float, ws: float, we: float) -> AlertEvent:
        details = dict(ev.details or {})
        details["judged_value"] = _clean(v)
        return AlertEvent(
            id=alert_id(self.model, rule.name, ev.scope, st["start"]),
            seq=st["seq"],
            state=state,
            model=self.model,
            rule=rule.name,
            metric=rule.metric,
            scope=ev.scope,
            severity=rule.severity,
            value=_clean(ev.value),
            threshold=_clean(ev.threshold),
            window_start=ws,
            window_end=we,
            started_at=st["start"],
            level=st["level"] if state == "firing" else "ok",
            p_value=_clean(ev.p_value),
            ci_low=_clean(ev.ci_low),
            ci_high=_clean(ev.ci_high),
            details=details,
            actions=list(rule.actions),
        )

    def firing(self) -> list[tuple[str, str]]:
        """(rule, scope) pairs currently firing."""
        return [tuple(k.split("\x1f", 1)) for k, s in self._state.items() if s["firing"]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "state": self._state}

    def load(self, d: dict[str, Any]) -> None:
        if d.get("kind") != self.kind or d.get("version") != self.version:
            raise ValueError(f"not a version-{self.version} rule_policy state")
        self._state = {k: dict(v) for k, v in d["state"].items()}
