"""Review finding: a regression model's error stream is |label - prediction|, but the
config accepts DDM, EDDM and HDDM rules on regression models. Those detectors take 0/1
errors (HDDM: values in [0, 1]) and raise ValueError on the first pane with outcomes, so
stage 2 stops, and does so again after every restart. Either the config must reject
these rules for task "regression" or the pipeline must feed them something valid.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.reference import ReferenceProfile
from monitor.config import load_config_text
from monitor.decode import LabelBatch, PredictionBatch, hash_ids
from monitor.pipeline import Pipeline

TOML = """
[[models]]
name = "price"
task = "regression"
pane_seconds = 60.0
window_panes = 1
allowed_lateness_seconds = 0.0
features = [{{name = "x", type = "numeric"}}]
[[models.rules]]
name = "error-drift"
metric = "{metric}"
"""


@pytest.mark.parametrize("metric", ["ddm", "eddm", "hddm_a", "hddm_w"])
def test_binary_error_detector_on_regression_is_rejected_or_runs(metric):
    try:
        cfg = load_config_text(TOML.format(metric=metric))
    except ValueError:
        return  # rejected at load time with a clear error: fine
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=n)
    prof = ReferenceProfile.build({"x": x}, numeric=["x"], task="regression")
    pipe = Pipeline(cfg, {"price": prof}, clock=lambda: 0.0, labels_expected=True)
    y = rng.normal(size=n)
    ids = [f"id{i}" for i in range(n)]
    keys = hash_ids(ids)
    ts = 1000.0 + np.arange(n, dtype=np.float64)
    pipe.add_predictions(0, PredictionBatch("price", ids, keys, ts, x.reshape(-1, 1), [],
                                            y + rng.normal(size=n), np.full(n, -1), []))
    pipe.add_labels(0, LabelBatch(ids, keys, ts, y, ["price"] * n))
    out = pipe.advance()  # must not raise
    assert any(e.metric == metric for e in out.evaluations)
