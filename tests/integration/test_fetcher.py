"""The fetch process (monitor/fetcher.py) against a real broker: it reads what it is told,
from where it is told, tags chunks with the assignment's epoch, stops on request, and
dies with the App's process when that is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaProducer

from monitor.broker import create_topics
from monitor.fetcher import FetchProcess

from .daemon_harness import servers

pytestmark = pytest.mark.integration


def _settings(bootstrap: str) -> dict:
    return {"bootstrap_servers": [bootstrap], "group_id": f"fetch-{uuid.uuid4().hex[:8]}",
            "enable_auto_commit": False, "auto_offset_reset": "earliest", "fetch_max_wait_ms": 50}


def _produce(bootstrap: str, topic: str, partitions: int, n: int) -> None:
    p = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=20)
    for part in range(partitions):
        for i in range(n):
            p.send(topic, value=f"{part}-{i}".encode(), key=b"k" if i == 0 else None, partition=part)
    p.flush(timeout=60)
    p.close()


def _collect(f: FetchProcess, want: int, timeout: float = 60.0) -> list[tuple]:
    out: list[tuple] = []
    deadline = time.monotonic() + timeout
    while sum(len(c[4]) for c in out) < want:
        assert time.monotonic() < deadline, f"only {sum(len(c[4]) for c in out)} of {want} records in {timeout} s"
        out += f.take(0.5, 1000)
    return out


def test_fetch_process_reads_assigned_partitions_from_the_given_offsets(broker):
    bootstrap = servers(broker)
    topic = f"fetch-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [topic], partitions=2)
    _produce(bootstrap, topic, 2, 40)
    f = FetchProcess(_settings(bootstrap), max_records=25, poll_timeout_ms=200)
    f.start()
    try:
        f.assign({(topic, 0): (1, None), (topic, 1): (2, 30)})  # None: no commit yet -> earliest
        chunks = _collect(f, 40 + 10)
        by_part: dict[int, list] = {0: [], 1: []}
        for t, part, epoch, offsets, values, keys, highwater in chunks:
            assert t == topic and epoch == {0: 1, 1: 2}[part] and highwater == 40
            assert len(offsets) == len(values) <= 25
            by_part[part] += list(zip(offsets, values, keys or [None] * len(values), strict=True))
        assert [o for o, _, _ in by_part[0]] == list(range(40))
        assert by_part[0][0][2] == b"k" and by_part[0][1][1] == b"0-1"
        assert [(o, v) for o, v, _ in by_part[1]] == [(i, f"1-{i}".encode()) for i in range(30, 40)]

        # a revoked partition is not read any more; a re-assignment seeks under a new epoch
        f.revoke([(topic, 1)])
        f.assign({(topic, 0): (3, 35)})
        again = _collect(f, 5)
        assert {(c[1], c[2]) for c in again} == {(0, 3)}
        assert [o for c in again for o in c[3]] == list(range(35, 40))
    finally:
        f.stop()
    assert f.proc.poll() == 0


_KILLED_APP = """
import os, signal, sys, time
from monitor.fetcher import FetchProcess
f = FetchProcess({"bootstrap_servers": [sys.argv[1]], "group_id": "x"}, 10, 100)
f.start()
print(f.pid, flush=True)
time.sleep(1.5)  # the child has set its parent-death signal by now
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_fetch_process_dies_with_a_killed_app(broker):
    proc = subprocess.run([sys.executable, "-c", _KILLED_APP, servers(broker)], capture_output=True, text=True,
                          timeout=60, cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, f"fetch process {child} outlived its killed App"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
