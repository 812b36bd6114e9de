"""Helpers for the daemon integration tests: a synthetic case, its config, topics, a
producer, the ``driftline run`` subprocess, and readers for its state database.

Everything waits on a condition with a deadline (:func:`wait_until`), never on a fixed
sleep, so the tests hold on a loaded two-core machine.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from detectors.reference import ReferenceProfile
from monitor.state import DB_NAME
from monitor.synth import Change, ModelSpec, config_models_toml, generate, reference_frame

START = 1_700_000_000.0  # event time of the synthetic stream: fixed, independent of wall time
PANE = 60.0

RULES = """
[[models.rules]]
name = "feature-drift"
metric = "psi"
scope = "feature"
warn = 0.1
alert = 0.25
min_samples = 300
for = 2
"""


def servers(broker: Any) -> str:
    """The bootstrap address of a broker fixture (a string or an object carrying it)."""
    for attr in ("bootstrap_servers", "bootstrap"):
        value = getattr(broker, attr, None)
        if value:
            return value if isinstance(value, str) else ",".join(value)
    return str(broker)


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# -- the synthetic case ---------------------------------------------------------------------
@dataclass
class Case:
    """A model spec, its reference profile and its prediction and label records."""

    spec: ModelSpec
    reference: Path
    preds: list[dict]
    labels: list[dict]
    rules: str = RULES

    def counts_by_pane(self) -> dict[float, int]:
        """Predictions per pane, keyed by the pane's end (the window_end of a one-pane window)."""
        out: dict[float, int] = {}
        for r in self.preds:
            end = (r["timestamp"] // PANE) * PANE + PANE
            out[end] = out.get(end, 0) + 1
        return out


def make_case(tmp: Path, *, minutes: float, rate: float = 4.0, seed: int = 0, changes: list[Change] | None = None,
              label_delay: float = 30.0, label_share: float = 1.0) -> Case:
    spec = ModelSpec("m", n_numeric=4, n_categorical=2, rate=rate, label_delay=label_delay,
                     label_share=label_share, sensitive={"sex": ["F", "M"]}, changes=list(changes or []))
    data = reference_frame(spec)
    prof = ReferenceProfile.build(data, numeric=spec.numeric, categorical=spec.categorical, score="score",
                                  label="label", sensitive=list(spec.sensitive), task="binary")
    ref = tmp / "reference.json"
    prof.save(ref)
    preds, labels = generate(spec, START, minutes * 60.0, seed=seed)
    return Case(spec, ref, preds, labels)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "wb") as f:
        for r in rows:
            f.write(orjson.dumps(r) + b"\n")
    return path


@dataclass
class Topics:
    predictions: str
    labels: str
    dead_letter: str
    alerts: str

    @classmethod
    def unique(cls, prefix: str) -> Topics:
        tag = f"{prefix}-{time.time_ns()}"
        return cls(f"{tag}-predictions", f"{tag}-labels", f"{tag}-dlq", f"{tag}-alerts")

    def all(self) -> list[str]:
        return [self.predictions, self.labels, self.dead_letter, self.alerts]


def config_text(case: Case, *, bootstrap: str, topics: Topics, group_id: str, state_dir: Path,
                window_panes: int = 5, checkpoint_seconds: float = 0.5, idle_close_seconds: float = 3600.0,
                max_poll_records: int = 500, fetch_process: bool = True) -> str:
    """A complete config for ``driftline run``: short group timeouts, HTTP on a free port."""
    state_dir.mkdir(parents=True, exist_ok=True)
    head = f"""
[kafka]
bootstrap_servers = ["{bootstrap}"]
group_id = "{group_id}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = {max_poll_records}
poll_timeout_ms = 200
fetch_process = {str(fetch_process).lower()}
[topics]
predictions = "{topics.predictions}"
labels = "{topics.labels}"
dead_letter = "{topics.dead_letter}"
alerts = "{topics.alerts}"
[state]
dir = "{state_dir.as_posix()}"
checkpoint_interval_seconds = {checkpoint_seconds}
[http]
port = 0
[scheduler]
idle_close_seconds = {idle_close_seconds}
[delivery]
poll_interval_seconds = 0.2
backoff_initial_seconds = 0.2
[sinks.kafka]
enabled = true
[audit]
path = "{(state_dir / 'audit.jsonl').as_posix()}"
[reports]
enabled = false
dir = "{(state_dir / 'reports').as_posix()}"
"""
    return head + config_models_toml(case.spec, reference=case.reference.as_posix(), rules=case.rules,
                                     pane_seconds=PANE, window_panes=window_panes,
                                     allowed_lateness_seconds=30.0)


# -- broker side ----------------------------------------------------------------------------
def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    finally:
        admin.close()
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        wait_until(lambda: all(len(probe.partitions_for_topic(n) or ()) == partitions for n in names),
                   30, f"metadata of topics {names}")
    finally:
        probe.close()


class Producer:
    """Batched producer keyed by prediction id: equal keys land on equal partition numbers.

    It remembers the next offset after its last record per partition (from the produce
    acknowledgements): Tansu's ``end_offsets()`` is wrong after batched produce (see
    monitor/broker.py), so "consumed everything" is measured against these.
    """

    def __init__(self, bootstrap: str):
        self.p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks="all")
        self.ends: dict[tuple[str, int], int] = {}

    def send(self, topic: str, rows: list[dict]) -> None:
        futures = [self.p.send(topic, value=orjson.dumps(r), key=r["prediction_id"].encode()) for r in rows]
        self._settle(futures)

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> tuple[int, int]:
        (md,) = self._settle([self.p.send(topic, value=value, key=key)])
        return md.partition, md.offset

    def _settle(self, futures: list) -> list:
        self.p.flush(timeout=60)
        mds = [f.get(timeout=60) for f in futures]
        for md in mds:
            k = (md.topic, md.partition)
            self.ends[k] = max(self.ends.get(k, 0), md.offset + 1)
        return mds

    def close(self) -> None:
        self.p.close(timeout=10)


def read_topic(bootstrap: str, topic: str, until: Callable[[list], bool], timeout: float) -> list:
    """Every record of ``topic`` (all partitions, from the start) once ``until(records)`` holds."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=500)
    seen: list = []
    try:
        parts = wait_until(lambda: c.partitions_for_topic(topic), 20, f"metadata of {topic}")
        c.assign([TopicPartition(topic, p) for p in sorted(parts)])
        c.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=300).values():
                seen.extend(batch)
            if until(seen):
                return seen
        raise AssertionError(f"timed out after {timeout:.0f}s reading {topic}: {len(seen)} records, condition unmet")
    finally:
        c.close()


# -- the daemon process ---------------------------------------------------------------------
def _driftline() -> list[str]:
    exe = Path(sys.executable).with_name("driftline")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "monitor.cli"]


_SERVING = re.compile(rb"serving /metrics .* on (http://[0-9.]+:\d+)")


@dataclass
class Daemon:
    """``driftline run --config <path>`` as a subprocess, its log in a file."""

    config: Path
    log: Path
    proc: subprocess.Popen | None = None
    url: str = ""
    starts: int = 0
    _log_offset: int = field(default=0, repr=False)

    def start(self) -> Daemon:
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        with open(self.log, "ab") as f:
            self._log_offset = f.tell()
            f.write(f"==== start {self.starts} ====\n".encode())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = Path(__file__).resolve().parents[2]
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        out = open(self.log, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.proc = subprocess.Popen([*_driftline(), "run", "--config", str(self.config)], stdout=out,
                                     stderr=subprocess.STDOUT, cwd=self.config.parent, env=env)
        out.close()
        self.starts += 1
        self.url = ""
        return self

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def _this_run(self) -> bytes:
        return self.log.read_bytes()[self._log_offset:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_http(self, timeout: float = 60) -> str:
        def found():
            if not self.alive():
                raise AssertionError(f"driftline exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            m = _SERVING.search(self._this_run())
            return m.group(1).decode() if m else None

        self.url = wait_until(found, timeout, "the HTTP server's address in the log")
        return self.url

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels`` (0 when absent)."""
        _, body = self.get("/metrics")
        total = 0.0
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def wait_assigned(self, n: int | None = None, timeout: float = 60) -> float:
        """Until the assigned-partitions gauge is ``n`` (or positive) and /readyz answers 200."""
        def ok():
            if not self.alive():
                raise AssertionError(f"driftline exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            got = self.metric("driftline_consumer_assigned_partitions")
            want = got == n if n is not None else got > 0
            return want and self.get("/readyz")[0] == 200 and got
        return wait_until(ok, timeout, f"{n or 'some'} assigned partitions and /readyz 200")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"driftline ignored SIGTERM for {timeout}s:\n{self.text()[-4000:]}") from None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop_quietly(self) -> None:
        """Teardown: whatever state the test left the process in."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=30)


# -- the state database ------------------------------------------------------------------------
def _db(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{(state_dir / DB_NAME).as_posix()}?mode=ro", uri=True, timeout=30)


def stored_offsets(state_dir: Path) -> dict[tuple[str, int], int]:
    if not (state_dir / DB_NAME).exists():
        return {}
    conn = _db(state_dir)
    try:
        return {(t, p): o for t, p, o in conn.execute("SELECT topic, partition, next_offset FROM offsets")}
    except sqlite3.OperationalError:  # the daemon has not created the table yet
        return {}
    finally:
        conn.close()


def evaluations(state_dir: Path) -> dict[tuple, dict]:
    """The ``evaluations`` table: (model, window_end, metric, scope) -> the record."""
    conn = _db(state_dir)
    try:
        rows = conn.execute("SELECT model, window_end, metric, scope, record FROM evaluations").fetchall()
    finally:
        conn.close()
    return {(m, we, met, sc): json.loads(rec) for m, we, met, sc, rec in rows}


def caught_up(state_dir: Path, ends: dict[tuple[str, int], int]) -> bool:
    """The checkpointed offsets reached the end of every input partition (so the evaluations
    those records produced are in the same checkpoint)."""
    got = stored_offsets(state_dir)
    return all(got.get(k, 0) >= v for k, v in ends.items() if v > 0)


def evaluation_differences(expected: dict[tuple, dict], got: dict[tuple, dict], keys=None,
                           rel: float = 0.0) -> list[tuple]:
    """Where two evaluation tables disagree, on ``keys`` (default: all of either).

    Counts (``n``), statuses, thresholds and windows must be identical, and by default every
    float too: a classification pane's sums (score sums, log loss, Brier) are fixed point,
    so they do not depend on where micro-batches split. ``rel`` > 0 allows float slack for
    regression models, whose error sums are floats added per micro-batch.
    """
    keys = sorted(expected.keys() | got.keys()) if keys is None else sorted(keys)
    out = []
    for k in keys:
        a, b = expected.get(k), got.get(k)
        if a is None or b is None:
            out.append((k, a, b))
            continue
        for f in a.keys() | b.keys():
            x, y = a.get(f), b.get(f)
            if isinstance(x, float) and isinstance(y, float) and f not in ("window_start", "window_end", "threshold"):
                if not math.isclose(x, y, rel_tol=rel, abs_tol=1e-12 if rel else 0.0):
                    out.append((k, f, x, y))
            elif x != y:
                out.append((k, f, x, y))
    return out
