"""Real brokers and servers for tests/integration, started on free loopback ports.

Fixtures (``tansu``, ``kafka``, ``alertmanager`` are session-scoped, started on first use
and stopped at the end of the run; ``prometheus`` is a per-test factory):

- ``tansu``: the embedded Tansu broker (``monitor.broker.EmbeddedBroker``), ``.bootstrap``.
- ``kafka``: Apache Kafka 4.x in KRaft mode (one combined broker+controller) from the jars
  ``scripts/provision.sh`` put in ``.cache/kafka/libs``; ``.bootstrap``. Topic auto-creation
  is OFF, as on most production clusters, so code that forgets to create a topic fails here.
- ``broker``: parametrized over both; a test using it runs once per broker.
- ``alertmanager``: Debian's ``prometheus-alertmanager``; the base URL ``http://127.0.0.1:P``.
  Its one receiver sends nothing; alerts are read back with ``GET /api/v2/alerts``.
- ``prometheus``: ``prometheus(targets=[...]) -> base URL`` starts a Prometheus scraping the
  targets every second (or takes ``scrape_configs``/``rule_files``); stopped after the test.

A server that cannot be had skips its tests with the reason on a user's machine; under
``CI=true`` it fails them instead (``unavailable`` below), because CI must test for real.
Both broker handles also answer ``.bootstrap_servers`` (the same string).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from monitor.broker import BrokerError, EmbeddedBroker, free_port, wait_for_kafka

REPO = Path(__file__).resolve().parents[2]
KAFKA_LIBS = Path(os.environ.get("DRIFTLINE_KAFKA_LIBS", REPO / ".cache" / "kafka" / "libs"))
START_TIMEOUT = 90.0  # a cold JVM on a busy 2-core machine; usually 5-8 s


def unavailable(reason: str) -> NoReturn:
    """The one place that decides: skip on a user's machine, fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a server test may not skip)", pytrace=False)
    pytest.skip(reason)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """A server process of ours: its command, its log file, and how to stop it."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_seconds: float = 0.0

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def _start(
    name: str,
    make_cmd: Callable[[], list[str]],
    ready: Callable[[subprocess.Popen[bytes]], None],
    log_path: Path,
    env: dict[str, str] | None = None,
    attempts: int = 3,
) -> Server:
    """Run ``make_cmd()`` (fresh ports each attempt) until ``ready`` returns.

    ``ready`` raises while the server is not ready. A process that exits early is retried
    with new ports (another process may have taken a port between picking and binding);
    then it and its log's tail are reported through ``unavailable``.
    """
    t0 = time.monotonic()
    problem = ""
    for _ in range(attempts):
        cmd = make_cmd()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        try:
            ready(proc)
        except Exception as exc:
            exited = proc.poll() is not None
            Server(name, proc, log_path).stop(timeout=5)
            problem = f"{exc}; command: {' '.join(cmd)}; log tail:\n{_tail(log_path)}"
            if exited:
                continue  # most likely a port taken meanwhile: again, on fresh ports
            break
        return Server(name, proc, log_path, time.monotonic() - t0)
    unavailable(f"{name} did not start: {problem}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = r.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {timeout:g}s (last: {last})")


# --- brokers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tansu() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    try:
        broker.start(timeout=30)
    except BrokerError as exc:
        unavailable(f"embedded Tansu broker: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class KafkaServer:
    """Apache Kafka started by the ``kafka`` fixture."""

    bootstrap: str
    server: Server
    data_dir: Path
    name: str = "kafka"
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap

    @property
    def startup_seconds(self) -> float:
        return self.server.startup_seconds


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _kafka_cluster_id() -> str:
    # Kafka's format: a random UUID, URL-safe base64 without padding; not starting with "-".
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def kafka_properties(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    """server.properties of a one-node KRaft cluster (broker and controller) on loopback."""
    plain, ctrl = f"127.0.0.1:{port}", f"127.0.0.1:{controller_port}"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "listeners": f"PLAINTEXT://{plain},CONTROLLER://{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{plain},CONTROLLER://{ctrl}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.quorum.bootstrap.servers": ctrl,
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One node: every internal topic has one replica, and few partitions so that its
        # creation on the first group join or transaction is quick.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The first member of a group gets its partitions at once, not after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }


_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafka.additivity = true
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    java = _java()
    if java is None:
        unavailable("Apache Kafka needs Java 17+, and no java is on PATH or in JAVA_HOME")
    if not list(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        unavailable(f"no Apache Kafka jars in {KAFKA_LIBS}: run scripts/provision.sh")
    work = tmp_path_factory.mktemp("kafka")
    data = work / "data"
    (work / "log4j2.properties").write_text(_LOG4J2)
    log_path = work / "kafka.log"
    classpath = str(KAFKA_LIBS / "*")
    jvm = [
        java,
        "-Xms128m",
        "-Xmx512m",
        "-XX:+UseSerialGC",  # 2 cores: the parallel collectors only add start-up time
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}",
        "-cp",
        classpath,
    ]
    state: dict[str, object] = {}

    def make_cmd() -> list[str]:
        shutil.rmtree(data, ignore_errors=True)
        port, cport = free_port(), free_port()
        props = kafka_properties(port, cport, data)
        conf = work / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        fmt = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "--standalone",
             "--cluster-id", _kafka_cluster_id(), "--config", str(conf)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if fmt.returncode != 0:
            unavailable(
                f"kafka.tools.StorageTool format failed ({fmt.returncode}): "
                f"{(fmt.stdout + fmt.stderr)[-2000:]}"
            )
        state.update(bootstrap=f"127.0.0.1:{port}", props=props)
        return [*jvm, "kafka.Kafka", str(conf)]

    def ready(proc: subprocess.Popen[bytes]) -> None:
        try:
            wait_for_kafka(str(state["bootstrap"]), START_TIMEOUT, proc)
        except BrokerError as exc:
            raise RuntimeError(f"kafka.Kafka exited: {exc}") from None

    server = _start("Apache Kafka", make_cmd, ready, log_path)
    try:
        props = state["props"]
        assert isinstance(props, dict)
        yield KafkaServer(str(state["bootstrap"]), server, data, properties=props)
    finally:
        server.stop()


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> EmbeddedBroker | KafkaServer:
    """Each test that takes ``broker`` runs against Tansu and against Apache Kafka."""
    return request.getfixturevalue(request.param)


# --- Prometheus and Alertmanager -------------------------------------------------------------

# Alertmanager's config must name a receiver for its route; one with no integrations keeps
# alerts in its API (which is what the tests read) and sends nothing anywhere.
_ALERTMANAGER_CONFIG = {
    "route": {
        "receiver": "keep",
        "group_wait": "1s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    },
    "receivers": [{"name": "keep"}],
}


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        unavailable(
            "no prometheus-alertmanager on PATH: run scripts/provision.sh as root "
            "(apt-get install prometheus-alertmanager)"
        )
    work = tmp_path_factory.mktemp("alertmanager")
    config = work / "alertmanager.yml"
    config.write_text(json.dumps(_ALERTMANAGER_CONFIG))  # JSON is YAML
    state: dict[str, str] = {}

    def make_cmd() -> list[str]:
        state["url"] = f"http://127.0.0.1:{free_port()}"
        return [
            binary,
            f"--config.file={config}",
            f"--storage.path={work / 'data'}",
            f"--web.listen-address={state['url'].removeprefix('http://')}",
            "--cluster.listen-address=",  # no gossip port: a single instance
        ]

    server = _start(
        "Alertmanager",
        make_cmd,
        lambda proc: _wait_http(f"{state['url']}/-/ready", proc),
        work / "alertmanager.log",
    )
    try:
        yield state["url"]
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Factory: ``prometheus(targets=["127.0.0.1:9108"]) -> "http://127.0.0.1:P"``.

    ``scrape_configs`` replaces the one job built from ``targets``; ``rule_files`` are
    loaded and evaluated every ``interval``; ``alertmanager`` (a base URL) receives alerts.
    Every Prometheus started is stopped after the test.
    """
    binary = shutil.which("prometheus")
    servers: list[Server] = []

    def start(
        targets: Sequence[str] = (),
        *,
        scrape_configs: Sequence[dict] | None = None,
        rule_files: Sequence[str | Path] = (),
        interval: str = "1s",
        alertmanager: str | None = None,
        metrics_path: str = "/metrics",
    ) -> str:
        if binary is None:
            unavailable(
                "no prometheus on PATH: run scripts/provision.sh as root (apt-get install prometheus)"
            )
        work = tmp_path_factory.mktemp("prometheus")
        jobs = (
            list(scrape_configs)
            if scrape_configs is not None
            else [
                {
                    "job_name": "driftline",
                    "metrics_path": metrics_path,
                    "static_configs": [{"targets": list(targets)}],
                }
            ]
        )
        conf: dict[str, object] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": jobs,
        }
        if rule_files:
            conf["rule_files"] = [str(Path(f).resolve()) for f in rule_files]
        if alertmanager:
            host = alertmanager.removeprefix("http://").rstrip("/")
            conf["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        config = work / "prometheus.yml"
        config.write_text(json.dumps(conf))
        state: dict[str, str] = {}

        def make_cmd() -> list[str]:
            state["url"] = f"http://127.0.0.1:{free_port()}"
            return [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={state['url'].removeprefix('http://')}",
            ]

        servers.append(
            _start(
                "Prometheus",
                make_cmd,
                lambda proc: _wait_http(f"{state['url']}/-/ready", proc),
                work / "prometheus.log",
            )
        )
        return state["url"]

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
