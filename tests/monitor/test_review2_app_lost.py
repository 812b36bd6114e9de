"""Review: after ``App._on_lost`` rolls the pipeline back, the transitions it already emitted
are emitted again.

``_emit`` counts each transition in ``driftline_alert_transitions_total``, logs the ALERT
line, submits its evidence report and calls ``on_output`` as soon as ``advance()`` returns
it, before the checkpoint. On partitions lost (kafka-python passes the whole assignment),
the pipeline goes back to the last checkpoint and the records since are read again on the
next assignment, so the same transitions (same idempotency keys) come out a second time
and are counted, logged and handed to ``on_output`` twice.
"""

from __future__ import annotations

import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from monitor.app import App
from monitor.ingest import ingest
from monitor.synth import Change

from .conftest import FakeConsumer, build_case


def _counted(registry: CollectorRegistry) -> float:
    return sum(s.value for m in registry.collect() if m.name == "driftline_alert_transitions"
               for s in m.samples if s.name.endswith("_total"))


def test_transitions_recomputed_after_a_lost_partition_are_counted_once(tmp_path, small_spec):
    small_spec.changes = [Change("covariate_shift", 1800.0, feature="num_02", shift=0.8)]
    config, _p, _l, _start, preds, _labels = build_case(tmp_path, small_spec, hours=1.0,
                                                        extra_toml="[topics]\nlabels = \"\"\n")
    seen: list[str] = []
    registry = CollectorRegistry()
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"),
              registry=registry, on_output=lambda out: seen.extend(t.key for t in out.transitions))
    try:
        app.consumer = FakeConsumer()
        tp = TopicPartition("predictions", 0)
        app._on_assigned([tp])
        app.checkpoint(commit=False)
        values = [orjson.dumps(r) for r in preds]
        ingest(app.pipeline, app.decoder, "predictions", 0, values)
        app.positions[("predictions", 0)] = len(values)
        app._emit(app.pipeline.advance())
        assert seen, "the shift should fire before the loss"
        app._on_lost([tp])  # back to the checkpoint; the next owner (us again) re-reads
        app._on_assigned([tp])
        ingest(app.pipeline, app.decoder, "predictions", 0, values)
        app.positions[("predictions", 0)] = len(values)
        app._emit(app.pipeline.advance())
        assert len(seen) == len(set(seen)), f"transitions emitted twice: {sorted(seen)}"
        assert _counted(registry) == len(set(seen))
    finally:
        app.close()
