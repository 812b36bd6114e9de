"""monitor/broker.py without a working broker: the errors a user sees when the embedded
broker cannot start, and argument checks. (Against real brokers: tests/integration.)"""

from __future__ import annotations

import socket
import stat

import pytest

from monitor.broker import BrokerError, EmbeddedBroker, create_topics, free_port
from monitor.errors import DriftlineError


def fake_binary(tmp_path, body: str) -> str:
    path = tmp_path / "tansu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_broker_that_exits_is_reported_with_its_binary_and_output(tmp_path):
    binary = fake_binary(tmp_path, 'echo "error: cannot bind listener $3" >&2; exit 3')
    broker = EmbeddedBroker(binary=binary)
    with pytest.raises(BrokerError) as info:
        broker.start(timeout=10)
    message = str(info.value)
    assert binary in message
    assert "error: cannot bind listener tcp://127.0.0.1:" in message
    assert isinstance(info.value, DriftlineError)
    assert not broker.running
    assert broker.log_path is None  # the temporary directory is gone


def test_a_broker_that_never_answers_times_out_naming_the_binary(tmp_path):
    binary = fake_binary(tmp_path, 'echo "still starting"; exec sleep 30')
    broker = EmbeddedBroker(binary=binary)
    with pytest.raises(BrokerError, match="did not answer") as info:
        broker.start(timeout=1)
    assert binary in str(info.value) and "still starting" in str(info.value)
    assert not broker.running  # the hung process was stopped


def test_a_fixed_port_in_use_is_refused_before_starting(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        marker = tmp_path / "started"
        broker = EmbeddedBroker(port=port, binary=fake_binary(tmp_path, f"touch {marker}"))
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is in use"):
            broker.start(timeout=5)
        assert not marker.exists()


def test_missing_binary_is_a_broker_error(tmp_path):
    with pytest.raises(BrokerError, match="cannot run the Tansu broker"):
        EmbeddedBroker(binary=str(tmp_path / "nope")).start(timeout=5)


def test_bootstrap_before_start_and_bad_arguments():
    with pytest.raises(BrokerError, match="call start"):
        _ = EmbeddedBroker().bootstrap
    assert EmbeddedBroker(port=1234).bootstrap == "127.0.0.1:1234"
    with pytest.raises(ValueError, match="port must be in 1..65535, got 70000"):
        EmbeddedBroker(port=70000)
    EmbeddedBroker().stop()  # stopping a broker that never started is harmless


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": []}, "topic names"),
        ({"names": ["ok", ""]}, "topic names"),
        ({"names": ["t"], "partitions": 0}, "partitions must be >= 1, got 0"),
        ({"names": ["t"], "replication_factor": 0}, "replication_factor must be >= 1, got 0"),
        ({"names": ["t"], "bootstrap": []}, "bootstrap servers"),
    ],
)
def test_create_topics_checks_its_arguments_before_connecting(kwargs, match):
    kwargs.setdefault("bootstrap", f"127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match=match):
        create_topics(**kwargs)
