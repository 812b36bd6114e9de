"""Review: ``App._on_lost`` sends a kept partition with no checkpointed offset to the
``auto_offset_reset`` end instead of back to where it was assigned.

A partition assigned since the last checkpoint (or assigned before it but with nothing read
yet) has no offset in the state DB. At assignment the consumer started it at the group's
committed offset; the rollback seeks it to the end ("latest": every record read from it
since assignment is dropped from the rolled-back pipeline and never re-read) or to the
beginning ("earliest": the whole retained history before the committed offset is counted
again). It should go back to the offset it was assigned at (the committed offset).
"""

from __future__ import annotations

import orjson
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.app import App
from monitor.ingest import ingest

from .conftest import build_case

COMMITTED = 7  # where the group left partition 0 (another replica's commit)


class FakeConsumer:
    def __init__(self):
        self.seeks: list[tuple] = []

    def seek(self, tp, off):
        self.seeks.append((tp.topic, tp.partition, off))

    def seek_to_beginning(self, *tps):
        self.seeks += [(tp.topic, tp.partition, "beginning") for tp in tps]

    def seek_to_end(self, *tps):
        self.seeks += [(tp.topic, tp.partition, "end") for tp in tps]

    def committed(self, tp, metadata=False):
        return OffsetAndMetadata(COMMITTED, "", -1) if metadata else COMMITTED

    def position(self, tp):
        return COMMITTED

    def highwater(self, tp):
        return None

    def close(self, autocommit=False):
        pass


def test_kept_partition_without_checkpointed_offset_returns_to_its_assigned_offset(tmp_path, small_spec):
    config, _p, _l, _start, preds, _labels = build_case(
        tmp_path, small_spec, hours=0.2, extra_toml="[kafka]\nauto_offset_reset = \"latest\"\n[topics]\nlabels = \"\"\n")
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"),
              registry=CollectorRegistry())
    try:
        app.consumer = FakeConsumer()
        tps = [TopicPartition("predictions", p) for p in (0, 1)]
        app._on_assigned(tps)  # nothing stored: the consumer starts at the committed offset
        assert app.consumer.seeks == []
        for p, part in ((0, preds[::2]), (1, preds[1::2])):
            ingest(app.pipeline, app.decoder, "predictions", p, [orjson.dumps(r) for r in part])
            app.positions[("predictions", p)] = COMMITTED + len(part)
        app.pipeline.advance()
        app._on_lost([tps[1]])  # no checkpoint yet: the pipeline is rolled back to empty
        # partition 0's records since assignment must be read again; "end" skips them all
        assert app.consumer.seeks == [("predictions", 0, COMMITTED)]
    finally:
        app.close()
