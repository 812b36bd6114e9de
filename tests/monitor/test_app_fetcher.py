"""App with ``kafka.fetch_process``: partitions are read by the fetch process under epochs.

Each (re)start of a partition gets a new epoch, and a chunk fetched under an older epoch
(before a revoke, a loss or a seek) is dropped, so it can never be counted twice. The App's
own consumer only keeps the group: its partitions are paused.
"""

from __future__ import annotations

import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from monitor.app import App

from .conftest import FakeConsumer, build_case


class PausingConsumer(FakeConsumer):
    def __init__(self):
        super().__init__()
        self.paused: list[TopicPartition] = []
        self.polls: list[int] = []

    def pause(self, *tps):
        self.paused += tps

    def poll(self, timeout_ms=0, max_records=None):
        self.polls.append(timeout_ms)
        return {}


class FakeFetcher:
    """The FetchProcess calls App makes, recorded; ``take`` hands out queued chunks."""

    def __init__(self):
        self.assigns: list[dict] = []
        self.revokes: list[list] = []
        self.queue: list[tuple] = []

    def assign(self, starts):
        self.assigns.append(dict(starts))

    def revoke(self, tps):
        self.revokes.append(list(tps))

    def take(self, timeout, max_records):
        out, self.queue = self.queue, []
        return out

    def stop(self):
        pass


class FakeProducer:
    def __init__(self):
        self.sent: list[dict] = []

    def send(self, topic, value=None, key=None, headers=None):
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": dict(headers)})

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def _app(tmp_path, small_spec):
    config, _p, _l, _start, preds, _labels = build_case(tmp_path, small_spec, hours=0.2,
                                                        extra_toml="[topics]\nlabels = \"\"\n")
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"),
              registry=CollectorRegistry())
    app.consumer, app.fetcher, app.producer = PausingConsumer(), FakeFetcher(), FakeProducer()
    return app, preds


def _decoded(app) -> int:
    return int(app.metrics.registry.get_sample_value("driftline_decoder_records_total", {"topic": "predictions"}) or 0)


def test_assignment_pauses_the_group_consumer_and_starts_the_fetcher_at_stored_offsets(tmp_path, small_spec):
    app, _preds = _app(tmp_path, small_spec)
    try:
        tps = [TopicPartition("predictions", p) for p in (0, 1)]
        app.positions[("predictions", 0)] = 7
        app.checkpoint(commit=False)  # partition 0 has a stored offset, partition 1 none
        app.positions.clear()
        app._on_assigned(tps)
        assert app.consumer.paused == tps
        assert app.consumer.seeks == []  # the group consumer never fetches
        (cmd,) = app.fetcher.assigns
        assert cmd[("predictions", 0)][1] == 7
        assert cmd[("predictions", 1)][1] is None  # committed offset, else auto_offset_reset
        assert cmd[("predictions", 0)][0] != cmd[("predictions", 1)][0]
    finally:
        app.fetcher = None
        app.close()


def test_chunks_of_an_older_epoch_or_an_unassigned_partition_are_dropped(tmp_path, small_spec):
    app, preds = _app(tmp_path, small_spec)
    try:
        tp = TopicPartition("predictions", 0)
        app._on_assigned([tp])
        epoch = app.fetcher.assigns[-1][("predictions", 0)][0]
        values = [orjson.dumps(r) for r in preds[:50]]
        bad = b'{"prediction_id": "x", "model": "m", "timestamp": "not a time"}'
        chunk = ("predictions", 0, epoch, list(range(100, 151)), [*values, bad], [None] * 50 + [b"k"], 500)
        stale = ("predictions", 0, epoch - 1, list(range(90, 100)), values[:10], None, 500)
        other = ("predictions", 3, epoch, [0], values[:1], None, 1)
        app.fetcher.queue = [stale, chunk, other]
        app.poll_once()
        assert _decoded(app) == 50
        assert app.positions[("predictions", 0)] == 151
        assert app._highwater[tp] == 500
        (dl,) = app.producer.sent
        assert dl["value"] == bad and dl["key"] == b"k"
        assert dl["headers"]["driftline.source.offset"] == b"150"
        assert app.consumer.polls == [0]  # assigned: the group poll does not wait

        # a loss rolls back to the checkpoint and restarts the kept partitions under a new epoch
        app.checkpoint(commit=False)
        tp1 = TopicPartition("predictions", 1)
        app._on_assigned([tp1])
        app._on_lost([tp1])
        assert app.fetcher.revokes[-1] == [("predictions", 1)]
        new_epoch, start = app.fetcher.assigns[-1][("predictions", 0)]
        assert start == 151 and new_epoch > epoch
        again = ("predictions", 0, epoch, list(range(151, 161)), [orjson.dumps(r) for r in preds[50:60]], None, 500)
        app.fetcher.queue = [again]  # fetched before the loss: must not count
        app.poll_once()
        assert _decoded(app) == 50
        app.fetcher.queue = [(*again[:2], new_epoch, *again[3:])]
        app.poll_once()
        assert _decoded(app) == 60 and app.positions[("predictions", 0)] == 161

        # a revoke tells the fetcher and forgets the epoch
        app._on_revoked([tp])
        assert app.fetcher.revokes[-1] == [("predictions", 0)]
        assert tp not in app._epochs
    finally:
        app.fetcher = None
        app.close()
