"""Shared builders for pipeline tests: a synthetic model, its reference and its config."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from monitor.config import load_config_text
from monitor.synth import ModelSpec, config_models_toml, default_rules, generate, reference_profile


class FakeConsumer:
    """The KafkaConsumer calls App makes on assignment, loss and close, recorded."""

    def __init__(self):
        self.seeks: list[tuple] = []

    def seek(self, tp, off):
        self.seeks.append((tp.topic, tp.partition, off))

    def seek_to_beginning(self, *tps):
        self.seeks += [(tp.topic, tp.partition, "beginning") for tp in tps]

    def seek_to_end(self, *tps):
        self.seeks += [(tp.topic, tp.partition, "end") for tp in tps]

    def highwater(self, tp):
        return None

    def close(self, autocommit=False):
        pass


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    return path


def build_case(tmp: Path, spec: ModelSpec, hours: float, seed: int = 0, acc_warn: float = 0.6,
               acc_alert: float = 0.55, extra_toml: str = "", rules: str | None = None,
               tables: dict | None = None, **model_keys):
    """Reference profile, config and stream files for one synthetic model.

    ``rules`` replaces the example rules (``default_rules``); ``tables`` adds model sub-tables.
    """
    prof = reference_profile(spec)
    ref = tmp / f"{spec.name}.json"
    prof.save(ref)
    keys = {"pane_seconds": 60.0, "window_panes": 15, "allowed_lateness_seconds": 30.0}
    keys.update(model_keys)
    rules = default_rules(acc_warn, acc_alert) if rules is None else rules
    text = extra_toml + config_models_toml(spec, reference=ref.as_posix(), rules=rules, tables=tables, **keys)
    config = load_config_text(text)
    start = 1_700_000_000.0
    preds, labels = generate(spec, start, hours * 3600.0, seed=seed)
    p = write_jsonl(tmp / "predictions.jsonl", preds)
    lab = write_jsonl(tmp / "labels.jsonl", labels)
    return config, p, lab, start, preds, labels


@pytest.fixture
def small_spec() -> ModelSpec:
    return ModelSpec("m", n_numeric=4, n_categorical=2, rate=4.0, label_delay=60.0,
                     sensitive={"sex": ["F", "M"]})
