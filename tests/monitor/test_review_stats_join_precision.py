"""Review finding: the prediction side of the label join keeps the score in float32.

monitor/pipeline.py packs [model, score, predicted, scope codes] into a float32 payload
while the prediction waits for its label, and the joined outcome is built from it. For
a regression model the "score" is the predicted value, so every prediction is rounded
to 24 bits: at targets ~1.2e8 a model that predicts exactly gets MAE ~2 and RMSE ~2.3.
(Binary scores are rounded too: 1 - 1e-9 becomes 1.0, so a confident miss gets log loss
-log(eps) = 36 instead of 20.7.)
"""

from __future__ import annotations

import numpy as np

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
features = [{name = "x", type = "numeric"}]
"""


def test_exact_regression_predictions_have_zero_error_after_the_join():
    cfg = load_config_text(TOML)
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    prof = ReferenceProfile.build({"x": x}, numeric=["x"], task="regression")
    pipe = Pipeline(cfg, {"price": prof}, clock=lambda: 0.0, labels_expected=True)
    y = 123_456_789.0 + np.arange(n)  # large targets, predicted exactly
    ids = [f"id{i}" for i in range(n)]
    keys = hash_ids(ids)
    ts = 1000.0 + np.arange(n) * 0.1
    pipe.add_predictions(0, PredictionBatch("price", ids, keys, ts, x.reshape(-1, 1), [], y.copy(),
                                            np.full(n, -1), []))
    pipe.add_labels(0, LabelBatch(ids, keys, ts + 1.0, y.copy(), ["price"] * n))
    panes = list(pipe.partitions[0].open[0].values())
    assert sum(int(p.loss.count[0]) for p in panes) == n
    for p in panes:
        # columns: error, abs_error, squared_error, abs_pct_error, y_true
        assert p.loss.sum[1] == 0.0, f"MAE of exact predictions: {p.loss.mean[1]}"
