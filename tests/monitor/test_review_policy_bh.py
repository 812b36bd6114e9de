"""Review: two rules on the same p-value metric must each judge the window's BH-adjusted
p-values once. ``RulePolicy._adjust`` rewrites ``Evaluation.p_value`` in place, so the
second rule on the metric adjusts already-adjusted p-values again (and records the first
adjustment as ``p_value_raw``)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.multiple_testing import benjamini_hochberg
from monitor.config import load_config_text
from monitor.policy import Evaluation, RulePolicy

CONFIG = '''
[[models]]
name = "m"
task = "binary"
[[models.features]]
name = "a"
type = "numeric"
[[models.features]]
name = "b"
type = "numeric"
[[models.features]]
name = "c"
type = "numeric"
[[models.rules]]
name = "ks-notify"
metric = "ks"
alert = 0.05
min_samples = 1
[[models.rules]]
name = "ks-retrain"
metric = "ks"
alert = 0.05
min_samples = 1
actions = ["retrain"]
'''


def test_second_rule_on_a_p_value_metric_does_not_adjust_twice():
    cfg = load_config_text(CONFIG).model("m")
    raw = [0.01, 0.04, 0.5]
    evs = [Evaluation("m", "ks", s, 0.3, 0.0, 60.0, 1000, p_value=p) for s, p in zip("abc", raw, strict=True)]
    transitions = RulePolicy("m", cfg.rules).apply(evs, 0.0, 60.0)
    _, once = benjamini_hochberg(np.array(raw), 0.05)  # [0.03, 0.06, 0.5]
    by_rule: dict[str, list] = {}
    for t in transitions:
        by_rule.setdefault(t.rule, []).append(t)
    # feature "a": BH-adjusted p = 0.03 <= 0.05, so both identical rules fire on it
    assert sorted(t.scope for t in by_rule.get("ks-notify", [])) == ["a"]
    assert sorted(t.scope for t in by_rule.get("ks-retrain", [])) == ["a"], "second rule judged twice-adjusted p-values"
    assert [e.p_value for e in evs] == pytest.approx(list(once))
    assert [e.details["p_value_raw"] for e in evs] == pytest.approx(raw)
