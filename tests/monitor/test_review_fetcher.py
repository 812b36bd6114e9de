"""Review of the fetch-process integration in App: failing scenarios found in review.

kafka-python 3.0.12 runs the rebalance listener from ``KafkaConsumer.close()``: the
coordinator's ``_on_close_prepare_async`` calls ``on_partitions_revoked`` for every
assigned partition (``on_partitions_lost`` if the generation is lost) and, if the listener
raised, re-raises it as a ``KafkaError`` after its cleanup. ``App.close()`` calls
``consumer.close()``, so ``App._on_revoked`` (a checkpoint, then ``fetcher.revoke``) runs
on every stop, including the stop that follows an exception in the poll loop.
"""

from __future__ import annotations

import contextlib

import orjson
import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from monitor.app import App, _Rebalance
from monitor.fetcher import FetchError

from .conftest import build_case
from .test_app_fetcher import FakeFetcher, FakeProducer, PausingConsumer


class ClosingConsumer(PausingConsumer):
    """What kafka-python 3.0.12's ``KafkaConsumer.close()`` does with the listener
    (kafka/coordinator/consumer.py, ``_on_close_prepare_async``): revoke every assigned
    partition through it, and re-raise a listener's exception as a KafkaError."""

    def __init__(self):
        super().__init__()
        self.listener = None
        self.assigned: set[TopicPartition] = set()
        self.closed = False

    def close(self, autocommit=False):
        self.closed = True
        revoked, self.assigned = self.assigned, set()
        if self.listener is not None and revoked:
            try:
                self.listener.on_partitions_revoked(revoked)
            except Exception as exc:
                raise KafkaError("User rebalance callback throws an error") from exc


class FailingProducer(FakeProducer):
    """A dead-letter send that fails, as KafkaProducer.send does when the dead-letter
    topic's metadata cannot be had within max_block_ms."""

    def __init__(self):
        super().__init__()
        self.closed = False

    def send(self, topic, value=None, key=None, headers=None):
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    def close(self, timeout=None):
        self.closed = True


class StoppableFetcher(FakeFetcher):
    def __init__(self):
        super().__init__()
        self.stopped = False

    def stop(self):
        self.stopped = True


def _app(tmp_path, small_spec):
    config, _p, _l, _start, preds, _labels = build_case(tmp_path, small_spec, hours=0.2,
                                                        extra_toml="[topics]\nlabels = \"\"\n")
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(tmp_path / "state"),
              registry=CollectorRegistry())
    consumer = ClosingConsumer()
    consumer.listener = _Rebalance(app)
    app.consumer, app.fetcher, app.producer = consumer, StoppableFetcher(), FakeProducer()
    return app, preds


def _assign(app, tp):
    app.consumer.assigned.add(tp)
    app._on_assigned([tp])
    return app.fetcher.assigns[-1][(tp.topic, tp.partition)][0]


def test_an_exception_mid_chunk_is_not_checkpointed_by_the_close_that_follows(tmp_path, small_spec):
    """A chunk is ingested into the pipeline, then its dead letter cannot be sent: poll_once
    raises before ``positions`` moves past the chunk. run()'s ``finally: close()`` closes the
    consumer, kafka-python calls on_partitions_revoked, and _on_revoked checkpoints: the
    state now holds the chunk's good records while the stored offset is still before the
    chunk. The restarted monitor re-reads the chunk from that offset and counts those
    records a second time (and again after every crash on the same chunk)."""
    app, preds = _app(tmp_path, small_spec)
    tp = TopicPartition("predictions", 0)
    try:
        epoch = _assign(app, tp)
        first = [orjson.dumps(r) for r in preds[:50]]
        app.fetcher.queue = [("predictions", 0, epoch, list(range(50)), first, None, 200)]
        app.poll_once()
        app.checkpoint(commit=False)
        assert app.store.offsets()[("predictions", 0)] == 50
        state_at_50 = app.store.blobs("partition/")

        second = [orjson.dumps(r) for r in preds[50:100]]
        bad = b'{"prediction_id": "x", "model": "m", "timestamp": "not a time"}'
        app.producer = FailingProducer()
        app.fetcher.queue = [("predictions", 0, epoch, list(range(50, 101)), [*second, bad], None, 200)]
        with pytest.raises(KafkaTimeoutError):
            app.poll_once()
        assert app.positions[("predictions", 0)] == 50  # the chunk was not taken as a whole
    finally:
        app.close()  # what run()'s finally does after the exception
    assert app.store.offsets()[("predictions", 0)] == 50
    # the checkpoint written by close must describe the state at offset 50, not 50 + the
    # good half of the failed chunk
    assert app.store.blobs("partition/") == state_at_50


def test_close_after_the_fetch_process_died_still_stops_it_and_closes_the_producer(tmp_path, small_spec):
    """The fetch process dies (its "error", or a crash): take() raises FetchError and run()
    calls close(). consumer.close() runs on_partitions_revoked, whose fetcher.revoke()
    writes to the dead process's socket and raises FetchError; kafka-python re-raises it
    as KafkaError, so App.close() stops there: the fetch process is never stopped or
    reaped, the producer (dead letters) never closed, the audit log never closed, and the
    exception reported is the listener's KafkaError instead of the fetch failure."""
    app, _preds = _app(tmp_path, small_spec)
    tp = TopicPartition("predictions", 0)
    _assign(app, tp)
    fetcher = app.fetcher
    producer = app.producer = FailingProducer()

    def gone(tps):
        raise FetchError("the fetch process is gone: [Errno 32] Broken pipe")

    fetcher.revoke = gone
    with contextlib.suppress(KafkaError):  # what matters is what close() skipped
        app.close()
    assert app.consumer.closed
    assert fetcher.stopped, "App.close() did not stop the (dead) fetch process"
    assert producer.closed, "App.close() did not close the producer"
