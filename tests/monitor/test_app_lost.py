"""App._on_lost: the pipeline rolls back to the last checkpoint and kept partitions seek to
its offsets, so records the lost partition's next owner re-reads are not counted twice."""

from __future__ import annotations

import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from monitor.app import App
from monitor.ingest import ingest

from .conftest import FakeConsumer, build_case


def test_lost_partition_rolls_the_pipeline_back_to_the_checkpoint(tmp_path, small_spec):
    # no labels topic: the predictions alone move the watermark
    config, _p, _l, _start, preds, _labels = build_case(tmp_path, small_spec, hours=0.5,
                                                        extra_toml="[topics]\nlabels = \"\"\n")
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"),
              registry=CollectorRegistry())
    try:
        app.consumer = FakeConsumer()
        tps = [TopicPartition("predictions", p) for p in (0, 1)]
        app._on_assigned(tps)
        half = len(preds) // 2
        for p, part in ((0, preds[:half:2]), (1, preds[1:half:2])):
            ingest(app.pipeline, app.decoder, "predictions", p, [orjson.dumps(r) for r in part])
            app.positions[("predictions", p)] = len(part)
        app.pipeline.advance()
        app.checkpoint(commit=False)
        at_checkpoint = app.pipeline.model_blobs()
        # more records after the checkpoint, then partition 1 is lost
        for p, part in ((0, preds[half::2]), (1, preds[half + 1 :: 2])):
            ingest(app.pipeline, app.decoder, "predictions", p, [orjson.dumps(r) for r in part])
        app.pipeline.advance()
        assert app.pipeline.model_blobs() != at_checkpoint
        app.consumer.seeks.clear()
        app._on_lost([tps[1]])
        assert app.pipeline.model_blobs() == at_checkpoint
        assert set(app.pipeline.partitions) == {0}
        assert app.consumer.seeks == [("predictions", 0, len(preds[:half:2]))]
    finally:
        app.close()
