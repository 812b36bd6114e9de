"""Evaluator: drift tests over the window's histogram bank, against the reference profile."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.reference import ReferenceProfile
from monitor.config import load_config_text
from monitor.evaluate import Evaluator, layout_from_profile
from monitor.panes import Pane

CONFIG = """
[[models]]
name = "m"
task = "binary"
[[models.features]]
name = "x"
type = "numeric"
[[models.features]]
name = "k"
type = "numeric"
[[models.rules]]
name = "w"
metric = "wasserstein"
scope = "feature"
warn = 0.1
"""


@pytest.mark.parametrize("k_value", [-5.0, 3.0])
def test_wasserstein_sees_a_constant_feature_move(k_value):
    rng = np.random.default_rng(0)
    n = 2000
    ref = {"x": rng.normal(size=n), "k": np.full(n, k_value)}
    cfg = load_config_text(CONFIG).model("m")
    prof = ReferenceProfile.build(ref, numeric=["x", "k"], task="binary")
    layout = layout_from_profile(cfg, prof)
    ev = Evaluator(cfg, prof, layout)
    pane = Pane(layout, 0.0)
    cur = np.column_stack([rng.normal(size=500), np.full(500, k_value + 2.0)])
    pane.add_predictions(cur, np.full(500, np.nan), [], np.zeros(500, dtype=np.int64), [])
    out = {(e.metric, e.scope): e for e in ev.evaluate(pane, 0.0, 60.0)}
    assert out[("wasserstein", "k")].value > 0.0  # the constant moved: not hidden
    assert out[("wasserstein", "x")].value < 0.1  # the stationary feature stays quiet
    assert out[("psi", "k")].value > 0.25
