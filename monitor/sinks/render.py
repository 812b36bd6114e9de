"""Text pieces several sinks share: times, one-line statements of an alert, ranking.

Kept apart from the sinks so Slack, Alertmanager and the webhook say the same thing in the
same words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from monitor.events import AlertEvent

__all__ = ["iso", "fmt", "statement", "ranked", "title", "link", "slice_lines", "pct"]


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds, as Alertmanager and CloudEvents expect.

    >>> iso(0.0)
    '1970-01-01T00:00:00.000Z'
    """
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def fmt(x: float | None) -> str:
    """Four significant digits, or "n/a".

    >>> fmt(0.312345), fmt(None), fmt(float("nan"))
    ('0.3123', 'n/a', 'n/a')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def statement(ev: AlertEvent) -> str:
    """``psi = 0.3123 vs threshold 0.25 on feature:income``: what broke, and where."""
    text = f"{ev.metric} = {fmt(ev.value)} vs threshold {fmt(ev.threshold)}"
    if ev.p_value is not None:
        text += f" (p = {fmt(ev.p_value)})"
    if ev.ci_low is not None and ev.ci_high is not None:
        text += f" [CI {fmt(ev.ci_low)}, {fmt(ev.ci_high)}]"
    if ev.details.get("realised") is not None:
        text += f" (realised {fmt(ev.details['realised'])} on {ev.details.get('realised_n', 0)} labels)"
    if ev.details.get("direction") in ("spike", "drop"):  # traffic_rate_anomaly: what the pane saw
        text += (f" ({ev.details.get('count')} events vs {fmt(ev.details.get('expected'))} expected: "
                 f"{ev.details['direction']} x{fmt(ev.details.get('ratio'))})")
    return f"{text} on {ev.scope}" if ev.scope else text


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal.

    >>> pct(0.1234), pct(None)
    ('12.3%', 'n/a')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}%"


#: How a slice's rate reads, by what the slices were ranked on (detectors.slices.WHATS).
SLICE_RATE = {"error": "error", "excess_error": "errors beyond expected", "selection": "selection"}


def slice_lines(ev: AlertEvent, limit: int = 5) -> list[str]:
    """Where it fails: one line per top slice in the alert's details.

    >>> e = AlertEvent(id="a", seq=1, state="firing", model="m", rule="r", metric="accuracy",
    ...     scope="model", severity="warning", value=0.7, threshold=0.75, window_start=0.0,
    ...     window_end=60.0, started_at=60.0, details={"slices_by": "error", "slices": [
    ...     {"name": "region=n&channel=web", "rate": 0.2, "rest_rate": 0.1, "difference": 0.1,
    ...      "ci_low": 0.08, "ci_high": 0.12, "share": 0.03, "q_value": 0.001, "n": 900}]})
    >>> slice_lines(e)
    ['region=n&channel=web: error 20.0% vs 10.0% elsewhere (+10.0 pts, CI +8.0 to +12.0), 3.0% of traffic, q = 0.001']
    """
    what = SLICE_RATE.get(ev.details.get("slices_by", "error"), "rate")
    out = []
    for s in (ev.details.get("slices") or [])[:limit]:
        d, lo, hi = (100 * float(s[k]) for k in ("difference", "ci_low", "ci_high"))
        out.append(f"{s['name']}: {what} {pct(s['rate'])} vs {pct(s['rest_rate'])} elsewhere "
                   f"({d:+.1f} pts, CI {lo:+.1f} to {hi:+.1f}), {pct(s['share'])} of traffic, "
                   f"q = {fmt(s['q_value'])}")
    return out


def _exceedance(ev: AlertEvent) -> float:
    # How far past its threshold, relative to it; "below" rules (accuracy) breach downwards.
    if ev.value is None or ev.threshold is None:
        return 0.0
    diff = ev.value - ev.threshold
    if ev.details.get("direction") == "below":
        diff = -diff
    return diff / abs(ev.threshold) if ev.threshold else diff


def ranked(events: Sequence[AlertEvent]) -> list[AlertEvent]:
    """Most severe breach first (largest relative exceedance), then by scope for stability."""
    return sorted(events, key=lambda e: (-_exceedance(e), e.scope, e.rule))


def title(model: str, state: str, events: Sequence[AlertEvent], repeat: int = 0) -> str:
    """``FIRING credit-risk: feature-drift (12 scopes)``."""
    rules = sorted({e.rule for e in events})
    what = ", ".join(rules[:3]) + (f" +{len(rules) - 3}" if len(rules) > 3 else "")
    text = f"{state.upper()} {model}: {what}"
    if len(events) > 1:
        text += f" ({len(events)} scopes)"
    if repeat:
        text += f" - still {state} (reminder {repeat})"
    return text


def link(template: str, model: str) -> str:
    """A configured URL with ``{model}`` replaced, URL-quoted (``""`` stays ``""``).

    >>> link("https://grafana/d/x?var-model={model}", "credit-risk")
    'https://grafana/d/x?var-model=credit-risk'
    """
    return template.replace("{model}", quote(model, safe="")) if template else ""
