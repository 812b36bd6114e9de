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

__all__ = ["iso", "fmt", "statement", "ranked", "title", "link"]


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
    return f"{text} on {ev.scope}" if ev.scope else text


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
