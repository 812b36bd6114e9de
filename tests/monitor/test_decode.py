"""RecordDecoder: user field paths, failures with reasons and codes, fast and checked paths."""

from __future__ import annotations

import orjson
import pytest

from monitor.config import load_config_text
from monitor.decode import RecordDecoder

CONFIG = """
[fields]
prediction_id = "meta.id"
model = "meta.model"
timestamp = "meta.ts"
label_timestamp = "ts"
[[models]]
name = "m"
task = "multiclass"
classes = ["low", "mid", "high"]
sensitive = ["sex"]
[[models.features]]
name = "x"
type = "numeric"
[[models.features]]
name = "c"
type = "categorical"
"""


@pytest.fixture
def dec():
    cfg = load_config_text(CONFIG)
    return RecordDecoder(cfg.fields, cfg.models)


def _pred(i, **kw):
    rec = {"meta": {"id": f"p{i}", "model": "m", "ts": 1_700_000_000 + i}, "features": {"x": 1.5, "c": "a"},
           "score": 0.7, "prediction": "mid", "sensitive": {"sex": "F"}}
    rec.update(kw)
    return orjson.dumps(rec)


def test_nested_paths_missing_values_and_class_names(dec):
    batches, failures = dec.decode_predictions([_pred(0), _pred(1, features={"c": None})])
    assert failures == []
    b = batches["m"]
    assert b.ids == ["p0", "p1"] and b.predicted.tolist() == [1, 1]
    assert b.numeric[0, 0] == 1.5 and b.numeric[1, 0] != b.numeric[1, 0]  # missing -> NaN
    assert b.categorical[0].tolist() == ["a", None]


def test_bad_records_are_named_with_path_and_code_and_the_rest_decodes(dec):
    values = [_pred(0), b"{oops", _pred(2, features={"x": "high"}), _pred(3, meta={"id": "p3", "model": "zz", "ts": 1}),
              _pred(4, meta={"id": "p4", "model": "m", "ts": 1_700_000_000_000})]  # milliseconds as seconds
    batches, failures = dec.decode_predictions(values)
    assert batches["m"].ids == ["p0"]
    got = {f.index: (f.code, f.reason) for f in failures}
    assert got[1][0] == "invalid_json"
    assert got[2][0] == "invalid_field" and "$.features.x" in got[2][1]
    assert got[3][0] == "unknown_model" and "'zz'" in got[3][1]
    assert got[4][0] == "bad_timestamp" and "timestamp_unit" in got[4][1]


def test_label_fast_path_equals_the_checked_path(dec):
    plain = [orjson.dumps({"meta": {"id": f"p{i}"}, "ts": 1_700_000_100 + i, "label": i % 3}) for i in range(50)]
    fast, f1 = dec.decode_labels(plain)
    # a class name forces the checked loop for the whole batch
    named = plain + [orjson.dumps({"meta": {"id": "p99"}, "ts": 1_700_000_200, "label": "high"})]
    slow, f2 = dec.decode_labels(named)
    assert f1 == [] and f2 == []
    assert slow.ids[:50] == fast.ids and slow.label[:50].tolist() == fast.label.tolist()
    assert slow.ts[:50].tolist() == fast.ts.tolist() and slow.label[50] == 2.0


ATTR_CONFIG = CONFIG.replace('[[models.features]]\nname = "x"', '[models.attributions]\nenabled = true\n'
                             '[[models.features]]\nname = "x"', 1)


def test_attributions_decode_in_feature_order_and_a_bad_one_is_dead_lettered():
    cfg = load_config_text(ATTR_CONFIG)
    assert cfg.models[0].attributions.enabled
    d = RecordDecoder(cfg.fields, cfg.models)
    good = [_pred(i, attributions={"c": -0.25 * i, "x": 0.5}) for i in range(3)]
    none = _pred(3)  # no attributions: a row of NaN, not an error
    bad = _pred(4, attributions={"x": "high"})
    batches, failures = d.decode_predictions([*good, none, bad])
    b = batches["m"]
    assert b.ids == ["p0", "p1", "p2", "p3"]
    assert b.attributions.shape == (4, 2)  # config order: x, c
    assert b.attributions[:3, 0].tolist() == [0.5, 0.5, 0.5]
    assert b.attributions[:3, 1].tolist() == [0.0, -0.25, -0.5]
    assert all(v != v for v in b.attributions[3])
    (f,) = failures
    assert f.index == 4 and f.code == "invalid_field"
    assert "$.attributions.x" in f.reason


def test_models_without_attributions_ignore_the_field(dec):
    batches, failures = dec.decode_predictions([_pred(0, attributions={"x": "junk"})])
    assert not failures and batches["m"].attributions is None


@pytest.mark.parametrize("missing", [0.0, 0.02])
def test_float_columns_equal_a_numpy_array_of_the_records(missing):
    # the flat fromiter path (no None in the batch) and numpy's array path (a None
    # somewhere) give the values json.loads gives, NaN where a value is absent or null
    import json
    import random

    import numpy as np

    from monitor.synth import ModelSpec, config_models_toml, generate

    rng = random.Random(5)
    s = ModelSpec("bench", rate=50.0, label_delay=60.0, attributions=True)
    cfg = load_config_text(config_models_toml(s, reference="unused.json", rules="", pane_seconds=60.0,
                                              window_panes=5, allowed_lateness_seconds=10.0))
    dec_ = RecordDecoder(cfg.fields, cfg.models)
    preds, _ = generate(s, 1_700_000_000.0, 40.0, seed=3)
    for r in preds:
        for part in ("features", "attributions"):
            for k in list(r[part]):
                if rng.random() < missing:
                    if rng.random() < 0.5:
                        del r[part][k]
                    else:
                        r[part][k] = None
    values = [orjson.dumps(r) for r in preds]
    batch = dec_.decode_predictions(values)[0]["bench"]
    m = cfg.models[0]
    num = [f.name for f in m.features if f.type == "numeric"]
    every = [f.name for f in m.features]
    rows = [json.loads(v) for v in values]
    want_num = np.array([[r["features"].get(f) for f in num] for r in rows], dtype=np.float64)
    want_attr = np.array([[r["attributions"].get(f) for f in every] for r in rows], dtype=np.float64)
    np.testing.assert_array_equal(batch.numeric, want_num)
    np.testing.assert_array_equal(batch.attributions, want_attr)
    assert np.isnan(batch.numeric).any() == bool(missing)
