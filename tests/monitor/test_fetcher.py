"""The fetch process's failure path, without a broker: a consumer that cannot be built is
reported to the App with kafka-python's reason, and the App's side raises it."""

from __future__ import annotations

import pytest

from monitor.fetcher import FetchError, FetchProcess


def test_a_consumer_that_cannot_start_is_reported_with_its_reason():
    f = FetchProcess({"bootstrap_servers": ["127.0.0.1:9"], "no_such_setting": 1}, max_records=10,
                     poll_timeout_ms=50)
    f.start()
    try:
        with pytest.raises(FetchError, match="no_such_setting"):
            for _ in range(100):  # the child needs a moment to start python and import kafka
                f.take(0.2, 10)
    finally:
        f.stop(timeout=5)
    assert f.proc.poll() is not None


def test_stop_ends_a_fetch_process_stuck_connecting():
    # no broker at port 9: kafka-python's constructor blocks in its bootstrap, where the
    # process cannot read "stop"; stop() kills it after its timeout
    f = FetchProcess({"bootstrap_servers": ["127.0.0.1:9"]}, max_records=10, poll_timeout_ms=50)
    f.start()
    assert f.take(0.3, 10) == []  # nothing assigned: nothing fetched, no error yet
    f.stop(timeout=2)
    assert f.proc.poll() is not None
