"""Default rules are sound: silent on 24 stationary hours, prompt and specific on changes.

The rules are config.toml's documented defaults (PSI 0.1/0.25 for two windows, parity
difference 0.1/0.2 judged on its interval's lower bound) plus an accuracy rule at warn
0.70 / alert 0.65, about 0.06 below the synthetic model's reference accuracy (0.758).
The stream has 20 numeric and 5 categorical features and two sensitive attributes (sex:
2 groups, age_band: 3 groups).
For scale: river's PageHinkley with default settings raises about 64 false alarms per
100,000 stationary values and KSWIN about 126; these rules must raise none.
"""

from __future__ import annotations

import io
import json

import pytest

from monitor.replay import replay
from monitor.synth import Change, ModelSpec

from .conftest import build_case

HOURS = 24.0
WINDOW = 15 * 60.0
CHANGES = [
    Change("covariate_shift", 6 * 3600.0, feature="num_07", shift=0.5),
    Change("selection_drop", 12 * 3600.0, attribute="sex", group="F", factor=0.5),
    Change("accuracy_drop", 18 * 3600.0, flip=0.3),
]
EXPECT = {  # change kind -> (rule, scope)
    "covariate_shift": ("feature-drift", "num_07"),
    "selection_drop": ("selection-rate-parity", "sex"),
    "accuracy_drop": ("accuracy-drop", "model"),
}


def _alerts(tmp_path, changes):
    spec = ModelSpec("credit-risk", rate=2.0, label_delay=120.0, changes=changes)
    config, p, lab, start, *_ = build_case(tmp_path, spec, hours=HOURS, seed=7, acc_warn=0.70, acc_alert=0.65)
    buf = io.StringIO()
    replay(config, p, lab, buf)
    rows = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert sum(r["type"] == "evaluation" for r in rows) > 1000
    return start, [r for r in rows if r["type"] == "alert" and r["state"] == "firing"]


@pytest.mark.slow
def test_stationary_day_fires_no_alert(tmp_path):
    _, firing = _alerts(tmp_path, [])
    assert firing == [], [(a["rule"], a["scope"], a["value"]) for a in firing]


@pytest.mark.slow
def test_each_injected_change_fires_its_alert_within_two_windows(tmp_path):
    start, firing = _alerts(tmp_path, CHANGES)
    for change in CHANGES:
        rule, scope = EXPECT[change.kind]
        t0 = start + change.at
        hits = [a for a in firing if a["rule"] == rule and a["scope"] == scope]
        assert hits, f"{change.kind}: no {rule} alert on {scope}; got {[(a['rule'], a['scope']) for a in firing]}"
        first = min(a["window_end"] for a in hits)
        assert t0 < first <= t0 + 2 * WINDOW, f"{change.kind}: first alert {(first - t0) / 60:.1f} min after the change"
    # nothing fires before the first change, and every alert names an expected rule and scope
    assert all(a["window_end"] > start + CHANGES[0].at for a in firing)
    allowed = set(EXPECT.values())
    stray = [(a["rule"], a["scope"]) for a in firing if (a["rule"], a["scope"]) not in allowed]
    assert not stray, stray
    # the parity alert names the group that lost selection rate
    parity = next(a for a in firing if a["rule"] == "selection-rate-parity")
    assert parity["details"]["groups"][1] == "F"
