"""``driftline demo``: the whole product on one machine, with nothing but Python.

Starts the embedded Kafka-compatible broker (when no bootstrap servers are configured),
creates the topics, builds reference profiles for two synthetic models, produces their
prediction and label streams in compressed time (one simulated minute per wall second by
default) with three changes at known times, and runs the monitor on them. Alerts are
printed as they fire; /metrics is served throughout. It stops by itself after
``--duration`` seconds.

Known changes (simulated minutes after the start):
  * credit-risk: covariate shift of num_03 by 0.8 sd at minute 20;
  * credit-risk: selection rate of sex=F drops (scores x0.4) at minute 40;
  * churn: accuracy drop (35% of labels flipped) at minute 30.
Both models run the default security rules, with a 30-minute traffic season so that the
traffic baseline is learned and judged within the demo.
About one prediction in 5,000 is malformed (invalid JSON or a wrong-typed feature) and goes
to the dead-letter topic, so that path shows on /metrics too.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import orjson

from monitor.sinks.render import SLICE_RATE
from monitor.synth import (
    SECURITY_RULES,
    Change,
    ModelSpec,
    config_models_toml,
    default_rules,
    generate,
    reference_profile,
)

__all__ = ["main", "demo_specs", "demo_config_text", "Producer"]

log = logging.getLogger("driftline.demo")

# the example rules plus a chi-square test on the categorical features
EXTRA_RULES = """
[[models.rules]]
name = "category-drift"
metric = "chi_square"
scope = "feature"
warn = 0.001
alert = 0.0001
min_samples = 500
for = 3
fdr = 0.05
severity = "warning"
"""


# beyond drift: label-free performance, multivariate drift and degraded subgroups for both
# models; attribution drift for credit-risk, whose predictions carry attributions
BEYOND_RULES = """
[[models.rules]]
name = "estimated-accuracy"
metric = "estimated_accuracy"
warn = 0.68
alert = 0.62
min_samples = 300
for = 2

[[models.rules]]
name = "multivariate-drift"
metric = "reconstruction_error_change"
warn = 0.1
alert = 0.25
min_samples = 500
for = 2

[[models.rules]]
name = "degraded-subgroup"
metric = "subgroup_error_gap"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
"""
ATTRIBUTION_RULES = """
[[models.rules]]
name = "attribution-drift"
metric = "attribution_shift"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
"""


def demo_specs() -> list[ModelSpec]:
    return [
        ModelSpec("credit-risk", n_numeric=8, n_categorical=3, rate=10.0, label_delay=90.0, attributions=True,
                  changes=[Change("covariate_shift", 20 * 60, feature="num_03", shift=0.8),
                           Change("selection_drop", 40 * 60, attribute="sex", group="F", factor=0.4)]),
        ModelSpec("churn", n_numeric=5, n_categorical=2, rate=10.0, label_delay=60.0,
                  sensitive={"region": ["north", "south", "east"]},
                  changes=[Change("accuracy_drop", 30 * 60, flip=0.35)]),
    ]


def demo_config_text(ref_dir: Path, state_dir: Path, http_port: int, bootstrap: list[str] | None = None) -> str:
    parts = [
        "[kafka]",
        f"bootstrap_servers = {list(bootstrap or [])!r}".replace("'", '"'),
        'group_id = "driftline-demo"',
        "session_timeout_ms = 6000",
        "heartbeat_interval_ms = 1000",
        "[state]",
        f'dir = "{state_dir.as_posix()}"',
        "checkpoint_interval_seconds = 2.0",
        "[http]",
        f"port = {http_port}",
        "[scheduler]",
        "idle_close_seconds = 10.0",
        "[audit]",
        f'path = "{(state_dir / "audit.jsonl").as_posix()}"',
        "[reports]",
        f'dir = "{(state_dir / "reports").as_posix()}"',
    ]
    text = "\n".join(parts) + "\n"
    for spec in demo_specs():
        rules = default_rules(acc_warn=0.68, acc_alert=0.62) + EXTRA_RULES + BEYOND_RULES + SECURITY_RULES
        text += config_models_toml(spec, reference=(ref_dir / f"{spec.name}.json").as_posix(),
                                   rules=rules + (ATTRIBUTION_RULES if spec.attributions else ""),
                                   # a 30-minute traffic season: the baseline is judged within the demo
                                   tables={"security": {"period_seconds": 1800.0, "slot_seconds": 300.0}},
                                   pane_seconds=60.0, window_panes=10, allowed_lateness_seconds=30.0,
                                   high_risk=spec.name == "credit-risk")
    return text


def build_references(ref_dir: Path) -> None:
    ref_dir.mkdir(parents=True, exist_ok=True)
    for spec in demo_specs():
        reference_profile(spec).save(ref_dir / f"{spec.name}.json")


class Producer(threading.Thread):
    """Produces the synthetic streams at ``speed`` simulated seconds per wall second."""

    def __init__(self, bootstrap: list[str], topics, start: float, minutes: float, speed: float = 60.0, seed: int = 0):
        super().__init__(name="demo-producer", daemon=True)
        self.bootstrap = bootstrap
        self.topics = topics
        self.start_ts = start
        self.speed = speed
        self.stop_event = threading.Event()
        preds, labels = [], []
        for k, spec in enumerate(demo_specs()):
            p, lab = generate(spec, start, minutes * 60.0, seed=seed + k)
            preds += p
            labels += lab
        merged = [(r["timestamp"], 0, r) for r in preds] + [(r["timestamp"], 1, r) for r in labels]
        merged.sort(key=lambda x: (x[0], x[1]))
        self.records = merged
        self.sent = 0

    def run(self) -> None:
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=50, batch_size=256 * 1024, acks=1)
        w0 = time.monotonic()
        i = n_pred = 0
        try:
            while i < len(self.records) and not self.stop_event.is_set():
                horizon = self.start_ts + (time.monotonic() - w0) * self.speed
                while i < len(self.records) and self.records[i][0] <= horizon:
                    _, kind, rec = self.records[i]
                    topic = self.topics.predictions if kind == 0 else self.topics.labels
                    prod.send(topic, value=orjson.dumps(rec), key=rec["prediction_id"].encode())
                    n_pred += kind == 0
                    if kind == 0 and n_pred % 5000 == 0:
                        # a few broken producers: these go to the dead-letter topic
                        bad = b"{not json" if n_pred % 10000 == 0 else orjson.dumps(
                            {**rec, "prediction_id": rec["prediction_id"] + "-bad",
                             "features": {**rec["features"], "num_00": "n/a"}})
                        prod.send(topic, value=bad)
                    i += 1
                self.sent = i
                prod.flush()
                time.sleep(0.2)
        finally:
            prod.flush()
            prod.close()


def _free_or(preferred: int) -> int:
    """``preferred`` when it can be bound on loopback, else a free port (a second demo, or
    another exporter on 9108, must not stop this one)."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    return preferred


def main(args: argparse.Namespace) -> int:
    from monitor.app import App
    from monitor.config import load_config, load_config_text

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    duration = args.duration if args.duration is not None else 120.0
    work = Path(getattr(args, "state_dir", None) or tempfile.mkdtemp(prefix="driftline-demo-"))
    port = getattr(args, "http_port", None) or _free_or(9108)
    ref_dir = work / "references"
    build_references(ref_dir)
    broker = None
    if args.config:
        config = load_config(args.config)
        bootstrap = list(config.kafka.bootstrap_servers)
    else:
        config, bootstrap = None, []
    if not bootstrap:
        from monitor.broker import EmbeddedBroker

        broker = EmbeddedBroker()
        broker.start()
        bootstrap = [broker.bootstrap]
        print(f"demo: embedded Kafka-compatible broker (Tansu) on {broker.bootstrap}")
    try:
        if config is None:
            config = load_config_text(demo_config_text(ref_dir, work / "state", port, bootstrap), path="<demo config>")
        from monitor.broker import create_topics

        t = config.topics
        create_topics(bootstrap, [t.predictions, t.labels, t.dead_letter, t.alerts], partitions=1)
        start = time.time() - 3600.0  # simulated event time begins an hour ago
        minutes = duration * 60.0 / 60.0 + 5
        producer = Producer(bootstrap, t, start, minutes, speed=60.0, seed=args.seed)
        print(f"demo: {len(producer.records)} synthetic records for models credit-risk and churn; "
              "changes at simulated minutes 20 (credit-risk num_03 shift), 30 (churn accuracy), "
              "40 (credit-risk sex=F selection rate)")
        print(f"demo: metrics at http://127.0.0.1:{config.http.port}/metrics, state in {work}")

        def show(out) -> None:
            for e in out.transitions:
                mins = (e.window_end - start) / 60.0
                what = f"{e.state.upper()} ({e.level})" if e.state == "firing" else e.state.upper()
                print(f"demo: ALERT {what:16s} {e.model}/{e.rule} {e.scope}: {e.metric}={e.value:.4g} "
                      f"(threshold {e.threshold}) at simulated minute {mins:.0f}", flush=True)
                if e.state != "firing" or "slices" not in e.details:
                    continue
                top = [sl for sl in e.details["slices"] if sl["significant"]][:1]
                for sl in top:
                    what = SLICE_RATE.get(e.details.get("slices_by", "error"), "rate")
                    print(f"demo:       where it fails: {sl['name']} ({what} "
                          f"{100 * sl['rate']:.1f}% vs {100 * sl['rest_rate']:.1f}% elsewhere)", flush=True)
                if not top:
                    print("demo:       where it fails: no slice departs from the rest (a change across the board)",
                          flush=True)

        app = App(config, config_source="<demo config>", bootstrap_servers=bootstrap, on_output=show)
        producer.start()
        code = app.run(duration=duration)
        producer.stop_event.set()
        producer.join(timeout=10)
        print(f"demo: done after {duration:.0f}s; produced {producer.sent} records. Look at: audit log "
              f"{config.audit.path}, evidence reports {config.reports.dir}, state {work}")
        return code
    finally:
        if broker is not None:
            broker.stop()
