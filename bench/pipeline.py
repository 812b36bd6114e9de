"""Benchmark: the daemon's processing path, its memory per waiting prediction, and Kafka.

Every figure is printed next to a baseline measured in the same run:

1. Throughput: events/s through decode -> join -> panes -> evaluation from pre-encoded
   JSON in memory (``monitor.ingest.ingest`` + ``Pipeline.advance`` per micro-batch of
   1,000, as the daemon runs them) for a model with 20 numeric + 5 categorical features
   and 2 sensitive attributes, every prediction labelled after a delay, about 1,000
   predictions per 60 s pane. Baselines: raw ``json.loads`` of the same bytes and the
   decoder alone (``RecordDecoder.decode_predictions`` / ``decode_labels``).
   Rates are per core: events over the process's CPU seconds (the loop is single
   threaded; on a shared machine wall time mostly measures the neighbours). Wall rates
   are reported beside them.
2. Memory: 1,000,000 predictions waiting for labels (none arrive), fed through the
   pipeline in a fresh process: join-table bytes, RSS growth and peak-RSS growth per
   waiting prediction, vs a plain ``dict`` {prediction_id: (ts, score, pred, g1, g2)}.
3. Checkpoint (in memory): the ``state.backend = "kafka"`` path without a broker, for one
   replica (stage 1 seals panes unevaluated; each is encoded once, kept until the commit,
   and merged into stage 2 directly, which evaluates; each checkpoint builds the partition
   and model snapshots) with a checkpoint every 10,000 events, vs the
   one-process pipeline without checkpoints, alternating pairs. Scaled
   to the default 10 s interval: the path with vs without building snapshots and pane
   messages (``changelog_ratio_at_default_interval``), and the whole path vs one process
   (``ratio_at_default_interval``).
4. Kafka consume (section ``kafka``): records/s consumed from Apache Kafka (KRaft, jars in
   ``.cache/kafka/libs`` from ``scripts/provision.sh``) by a kafka-python poll loop with
   ``orjson`` decoding vs the whole monitor (``monitor.app.App``) on the same topic content:
   three alternating pairs with ``fetch_max_wait_ms=10`` on both sides (CPU bound: the
   monitor's own cost), the figure being the median pair and ``ratio_range`` all three;
   then one pair with kafka-python's defaults as the App ships them, and the App in one
   process (``kafka.fetch_process = false``). Every run records who used the cores
   (``load_*_runs``: the whole machine, the broker, the bench, the rest = other users, from
   /proc) and the main process's GC pauses, which is what the spread depends on. The App
   tunes its process's garbage collector; the bench restores CPython's defaults after it.
5. Kafka state backend (``kafka_state``): the same records and command with
   ``state.backend = "sqlite"`` and ``"kafka"``, three alternating pairs, each timed from
   the first record until all are consumed, evaluated and committed (a checkpoint after the
   last record; for the Kafka backend, stage 2 caught up on the panes and a second
   checkpoint). Main-thread CPU and wall seconds per stage come with each.
6. Restore (``restore``): a partition holding 1,000,000 waiting predictions written with
   ``SnapshotWriter`` in one transaction to a compacted changelog (``ensure_topics``), then
   ``read_snapshots`` + ``Pipeline.restore_partition`` timed, vs the same bytes from the
   local SQLite ``StateStore``; median of three.
The Kafka sections share one broker and are skipped, with the reason in the output, when
Java or the jars are missing.

Run: ``.venv/bin/python bench/pipeline.py`` (6-7 minutes here). Options: ``--quick``
(small sizes, smoke run), ``--only SECTION,...`` (of throughput, beyond_drift_cost,
checkpoint, memory, kafka, kafka_state, restore; ``beyond_drift_cost`` alone is about a
minute, and with ``--profile`` also gives the CPU per stage of its all-on and all-off runs),
``--skip-kafka``, ``--kafka-records N`` (records for the Kafka sections, default 300,000),
``--profile`` (cProfile of the end-to-end loop and of the monitor behind
Kafka, hot spots to stderr). Ends by printing one JSON object:
``{"figure": {"value", "unit", "baseline", "baseline_name", "ratio", ...}}``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import heapq
import io
import json
import logging
import os
import pstats
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    # run as a script from anywhere without installing; first, so that bench/detectors.py
    # (sys.path[0] when run as a script) cannot shadow the detectors package, even when
    # PYTHONPATH already lists the root further down
    sys.path.insert(0, str(ROOT))

from monitor.config import load_config_text  # noqa: E402
from monitor.decode import RecordDecoder  # noqa: E402
from monitor.ingest import ingest  # noqa: E402
from monitor.metrics import Metrics  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.synth import (  # noqa: E402
    ModelSpec,
    config_models_toml,
    default_rules,
    generate,
    reference_profile,
)

MICRO_BATCH = 1000
PANE_SECONDS = 60.0
START = 1_700_000_000.0
# about 1,000 predictions per pane, so every pane close evaluates a realistically full pane
RATE = 1000.0 / PANE_SECONDS
LABEL_DELAY = 120.0

# The rules of config.toml's example model plus a drift detector on the error stream:
# every kind of evaluation (drift test per feature, performance, fairness, detector) runs.
RULES = default_rules(acc_warn=0.6, acc_alert=0.55) + """
[[models.rules]]
name = "error-drift"
metric = "adwin"
"""

SIZES = {
    # predictions in the throughput stream (labels: as many again), memory fill, Kafka records
    "full": {"throughput_predictions": 150_000, "memory_predictions": 1_000_000, "kafka_records": 300_000,
             "repeats": 2, "kafka_pairs": 3, "restore_repeats": 3},
    "quick": {"throughput_predictions": 6_000, "memory_predictions": 30_000, "kafka_records": 20_000,
              "repeats": 1, "kafka_pairs": 1, "restore_repeats": 1},
}


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"bench/pipeline [{time.perf_counter() - _T0:5.0f} s]: {msg}", file=sys.stderr, flush=True)


def figure(value: float | None, unit: str, baseline: float | None, baseline_name: str, *,
           target: str = "", met: bool | None = None, **extra: Any) -> dict[str, Any]:
    """One result entry; ``ratio`` is value / baseline."""
    ratio = None if value is None or not baseline else value / baseline
    out = {"value": value, "unit": unit, "baseline": baseline, "baseline_name": baseline_name, "ratio": ratio}
    if target:
        out["target"] = target
        out["met"] = met
    out.update(extra)
    return out


def skipped(reason: str) -> dict[str, Any]:
    return {"value": None, "unit": "", "baseline": None, "baseline_name": "", "ratio": None,
            "skipped": reason}


# -- the model and its streams -------------------------------------------------------------
def spec(rate: float = RATE) -> ModelSpec:
    """ModelSpec defaults: 20 numeric + 5 categorical features, sensitive sex and age_band."""
    return ModelSpec("bench", rate=rate, label_delay=LABEL_DELAY)


def build_config(tmp: Path, s: ModelSpec, prefix_toml: str = "", tables: dict | None = None):
    """Config and reference profile for the synthetic model (profile built from training-like data)."""
    prof = reference_profile(s)
    ref = tmp / f"{s.name}-reference.json"
    prof.save(ref)
    text = prefix_toml + config_models_toml(
        s, reference=ref.as_posix(), rules=RULES, pane_seconds=PANE_SECONDS, window_panes=15,
        allowed_lateness_seconds=30.0, tables=tables,
    )
    return load_config_text(text), {s.name: prof}


#: Everything beyond drift off: the baseline of the beyond-drift cost figure.
BEYOND_OFF = {"multivariate": {"enabled": False}, "slices": {"enabled": False}, "attributions": {"enabled": False}}


def encoded_stream(s: ModelSpec, n_predictions: int, seed: int, start: float = START) -> list[tuple[str, list[bytes]]]:
    """Micro-batches as a poll would return them: (topic kind, JSON values), event-time ordered.

    Predictions and labels are merged by event time and cut every 1,000 records; each cut
    is fed as its predictions then its labels, like ``monitor.replay``.
    """
    preds, labels = generate(s, start, n_predictions / s.rate, seed=seed)
    p_bytes = [orjson.dumps(r) for r in preds]
    l_bytes = [orjson.dumps(r) for r in labels]
    merged = heapq.merge(((r["timestamp"], 0, k) for k, r in enumerate(preds)),
                         ((r["timestamp"], 1, k) for k, r in enumerate(labels)))
    out: list[tuple[str, list[bytes]]] = []
    chunk: list[tuple[int, int]] = []

    def cut() -> None:
        p = [p_bytes[k] for kind, k in chunk if kind == 0]
        q = [l_bytes[k] for kind, k in chunk if kind == 1]
        if p:
            out.append(("predictions", p))
        if q:
            out.append(("labels", q))
        chunk.clear()

    for _, kind, k in merged:
        chunk.append((kind, k))
        if len(chunk) == MICRO_BATCH:
            cut()
    cut()
    return out


# -- part 1: throughput --------------------------------------------------------------------
def _clock(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of one call, after a collection."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return time.perf_counter() - w0, time.process_time() - c0, res


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """The run with the least CPU time of ``repeats``."""
    runs = [_clock(fn) for _ in range(repeats)]
    return min(runs, key=lambda r: r[1])


def run_end_to_end(config, profiles, batches: list[tuple[str, list[bytes]]]) -> dict[str, Any]:
    """The daemon's per-batch work: ingest (decode + join + panes), advance (seal, evaluate), drain."""
    metrics = Metrics()
    pipeline = Pipeline(config, profiles, metrics)
    decoder = RecordDecoder(config.fields, config.models)
    t_ingest = t_advance = 0.0
    evaluations = panes = failures = 0
    for kind, values in batches:
        t0 = time.perf_counter()
        failures += len(ingest(pipeline, decoder, kind, 0, values, metrics, kind))
        t1 = time.perf_counter()
        out = pipeline.advance()
        t_advance += time.perf_counter() - t1
        t_ingest += t1 - t0
        evaluations += len(out.evaluations)
        pipeline.drain()
    streamed = evaluations  # before the end-of-input flush (the Kafka-backend path has none)
    pipeline.flush_all()
    evaluations += len(pipeline.drain().evaluations)
    panes = int(metrics.registry.get_sample_value("driftline_window_panes_closed_total",
                                                  {"model": pipeline.models[0].cfg.name}) or 0)
    st = pipeline.partitions[0]
    return {"evaluations": evaluations, "evaluations_streamed": streamed, "panes_closed": panes, "failures": failures,
            "waiting_predictions": len(st.preds), "waiting_labels": len(st.labels),
            "ingest_seconds": t_ingest, "advance_seconds": t_advance}


def throughput(tmp: Path, sizes: dict, profile: bool) -> dict[str, Any]:
    s = spec()
    config, profiles = build_config(tmp, s)
    log(f"throughput: generating {sizes['throughput_predictions']:,} predictions and their labels")
    batches = encoded_stream(s, sizes["throughput_predictions"], seed=1)
    values = [v for _, vs in batches for v in vs]
    n_events = len(values)
    n_bytes = sum(len(v) for v in values)
    repeats = sizes["repeats"]
    # warm-up on a different stream: numba compilation, lazy imports, first-use caches
    run_end_to_end(config, profiles, encoded_stream(s, 3000, seed=99, start=START - 10 * 86400.0))

    log(f"throughput: json.loads of {n_events:,} records ({n_bytes / n_events:.0f} bytes each on average)")
    json_w, json_c, _ = _best(lambda: [json.loads(v) for v in values], repeats)
    orj_w, orj_c, _ = _best(lambda: [orjson.loads(v) for v in values], repeats)

    decoder = RecordDecoder(config.fields, config.models)

    def decode_only() -> None:
        for kind, vs in batches:
            if kind == "predictions":
                decoder.decode_predictions(vs)
            else:
                decoder.decode_labels(vs)

    log("throughput: decoder alone")
    dec_w, dec_c, _ = _best(decode_only, repeats)
    log("throughput: end to end (ingest + advance per micro-batch)")
    e2e_w, e2e_c, info = _best(lambda: run_end_to_end(config, profiles, batches), repeats)
    if info["failures"]:
        raise AssertionError(f"{info['failures']} records failed decoding: the benchmark stream is broken")
    if info["panes_closed"] < 10:
        raise AssertionError(f"only {info['panes_closed']} panes closed: the stream is too short to measure evaluation")

    hot = profile_end_to_end(config, profiles, batches) if profile else None
    beyond = beyond_drift_cost(tmp, sizes)

    e2e, dec, jl = n_events / e2e_c, n_events / dec_c, n_events / json_c
    common = {"events": n_events, "predictions": sum(len(vs) for k, vs in batches if k == "predictions"),
              "mean_record_bytes": round(n_bytes / n_events, 1)}
    result = {
        "end_to_end_events_per_second": figure(
            e2e, "events/s per core (CPU time)", jl, "json.loads of the same bytes (events/s per core)",
            target=">= 100000 events/s per core", met=e2e >= 100_000,
            wall_value=n_events / e2e_w, wall_baseline=n_events / json_w,
            orjson_loads_per_second=n_events / orj_c,
            panes_closed=info["panes_closed"], evaluations=info["evaluations"],
            stage_seconds={"ingest (decode + join + panes)": round(info["ingest_seconds"], 3),
                           "advance (seal + evaluate)": round(info["advance_seconds"], 3)},
            **common),
        "end_to_end_vs_decoder": figure(
            e2e, "events/s per core (CPU time)", dec, "RecordDecoder alone (decode_predictions / decode_labels)",
            target=">= 0.30 of the decode-only ceiling", met=e2e >= 0.3 * dec,
            wall_value=n_events / e2e_w, wall_baseline=n_events / dec_w, **common),
        "decoder_events_per_second": figure(
            dec, "events/s per core (CPU time)", jl, "json.loads of the same bytes (events/s per core)",
            wall_value=n_events / dec_w, wall_baseline=n_events / json_w, **common),
    }
    result["beyond_drift_cost"] = beyond
    if hot is not None:
        result["end_to_end_events_per_second"]["profile_top"] = hot
    return result


def beyond_drift_cost(tmp: Path, sizes: dict, profile: bool = False) -> dict[str, Any]:
    """End to end with multivariate drift, slices and attribution drift all on, vs all off,
    on the same stream (records carry attributions for all 25 features), alternating runs.
    Security signals (on by default) run in both. ``profile``: cProfile of one all-on pass."""
    s = ModelSpec("bench", rate=RATE, label_delay=LABEL_DELAY, attributions=True)
    on, on_profiles = build_config(tmp, s)
    off, off_profiles = build_config(tmp, s, tables=BEYOND_OFF)
    batches = encoded_stream(s, sizes["throughput_predictions"], seed=1)
    n_events = sum(len(vs) for _, vs in batches)
    warm = encoded_stream(s, 3000, seed=99, start=START - 10 * 86400.0)
    run_end_to_end(on, on_profiles, warm)
    run_end_to_end(off, off_profiles, warm)
    log("throughput: end to end with everything beyond drift on, and off, alternating")
    values = [v for _, vs in batches for v in vs]
    rates: dict[str, list[float]] = {"on": [], "off": [], "json": []}
    stages: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    for _ in range(max(3, sizes["repeats"])):
        for name, cfg, prof in (("off", off, off_profiles), ("on", on, on_profiles)):
            _, cpu, info = _clock(lambda cfg=cfg, prof=prof: run_end_to_end(cfg, prof, batches))
            if info["failures"]:
                raise AssertionError(f"{info['failures']} records failed decoding in the {name} run")
            rates[name].append(n_events / cpu)
            stages[name].append((info["ingest_seconds"], info["advance_seconds"]))
        # the machine's speed at that moment: json.loads of the same records
        _, cpu, _ = _clock(lambda: [json.loads(v) for v in values])
        rates["json"].append(n_events / cpu)
    ratios = sorted(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
    on_rate, off_rate = sorted(rates["on"])[len(rates["on"]) // 2], sorted(rates["off"])[len(rates["off"]) // 2]

    def us_per_event(name: str, k: int) -> float:  # median over the runs, wall time of the stage
        return round(1e6 * sorted(x[k] for x in stages[name])[len(stages[name]) // 2] / n_events, 3)

    hot = None
    if profile:
        prof_ = cProfile.Profile()
        prof_.enable()
        run_end_to_end(on, on_profiles, batches)
        prof_.disable()
        hot = _print_profile(prof_, "one in-memory pass with everything beyond drift on")
    extra = {"profile_top": hot} if hot is not None else {}
    return figure(
        on_rate, "events/s per core (CPU time), median of runs", off_rate,
        "the same stream and pipeline with multivariate, slices and attributions off (median)",
        target=">= 100000 events/s per core with all of it on", met=on_rate >= 100_000,
        added_us_per_event=round(1e6 * (1 / on_rate - 1 / off_rate), 3),
        ratio_median_of_pairs=ratios[len(ratios) // 2], ratio_range=[ratios[0], ratios[-1]],
        on_range=[min(rates["on"]), max(rates["on"])],
        on_vs_json_loads=sorted(a / b for a, b in zip(rates["on"], rates["json"], strict=True))[len(ratios) // 2],
        json_loads_per_second=sorted(rates["json"])[len(ratios) // 2],
        on_vs_json_loads_range=[min(a / b for a, b in zip(rates["on"], rates["json"], strict=True)),
                                max(a / b for a, b in zip(rates["on"], rates["json"], strict=True))],
        stage_us_per_event={f"{name} {stage}": us_per_event(name, k) for name in ("on", "off")
                            for k, stage in enumerate(("ingest (decode + join + panes)", "advance (seal + evaluate)"))},
        runs=len(ratios), events=n_events, mean_record_bytes=round(sum(map(len, values)) / n_events, 1), **extra)


#: state.checkpoint_interval_seconds's default: the Kafka backend pays one snapshot per interval
CHECKPOINT_INTERVAL = 10.0
#: the in-memory checkpoint figure checkpoints every this many micro-batches (10k events):
#: about 100x as often as the default interval at this rate, so the cost is measurable
CHECKPOINT_EVERY_BATCHES = 10


def run_kafka_shape(config, profiles, batches: list[tuple[str, list[bytes]]],
                    every: int) -> dict[str, Any]:
    """The ``state.backend = "kafka"`` path of :mod:`monitor.kstate` without the broker, for
    a process that owns the model and its input partition (one replica).

    Stage 1 (``Pipeline(stage2=False)``) seals panes unevaluated; after each micro-batch
    they are encoded once (``encode_pane``: kept until the commit, for a roll-back or a
    model given up before it) and merged into stage 2 directly (``ModelStage.merge_local``,
    then ``advance``), as ``KafkaState.absorb`` does. Every ``every`` micro-batches a
    checkpoint builds what the transaction would send: the partition snapshot
    (``PartitionState.to_bytes``) and the model snapshot (``ModelStage.to_bytes``), which
    holds the panes merged directly (they get no panes record).
    """
    from monitor.stage2 import ModelStage, encode_pane

    metrics = Metrics()
    pipeline = Pipeline(config, profiles, metrics, stage2=False)
    stage = ModelStage(config, profiles, metrics)
    for m in pipeline.models:
        stage.own(m.cfg.name, None)
    decoder = RecordDecoder(config.fields, config.models)
    evaluations = failures = checkpoints = 0
    cpu = dict.fromkeys(("pane messages", "snapshots", "stage 2 merge", "stage 2 evaluate"), 0.0)
    snapshot_bytes: list[int] = []
    pane_bytes = 0
    unpublished: dict[tuple[int, int], list[bytes]] = {}

    def absorb() -> None:
        nonlocal evaluations
        t0 = time.process_time()
        sealed = pipeline.take_sealed()
        for key, panes in sealed.items():
            unpublished.setdefault(key, []).extend(encode_pane(x) for x in sorted(panes, key=lambda x: x.start))
        t1 = time.process_time()
        for m in pipeline.models:
            for p in sorted(pipeline.partitions):
                stage.merge_local(m.cfg.name, p, sealed.get((m.index, p), []), 1)
                stage.set_progress(m.cfg.name, p, *pipeline.progress(m.index, p))
        t2 = time.process_time()
        evaluations += len(stage.advance().evaluations)
        t3 = time.process_time()
        for name, sec in (("pane messages", t1 - t0), ("stage 2 merge", t2 - t1), ("stage 2 evaluate", t3 - t2)):
            cpu[name] += sec

    def checkpoint() -> None:
        nonlocal checkpoints, pane_bytes
        t0 = time.process_time()
        for m in pipeline.models:
            for p in sorted(pipeline.partitions):
                pane_bytes += sum(map(len, unpublished.pop((m.index, p), [])))  # committed: dropped
                stage.set_progress(m.cfg.name, p, *pipeline.progress(m.index, p))
        t1 = time.process_time()
        size = sum(len(st.to_bytes()) for st in pipeline.partitions.values())
        size += sum(len(stage.to_bytes(name)) for name in sorted(stage.dirty) if name in stage.runtimes)
        stage.dirty.clear()
        stage.drain()
        t2 = time.process_time()
        cpu["pane messages"] += t1 - t0
        cpu["snapshots"] += t2 - t1
        snapshot_bytes.append(size)
        checkpoints += 1

    for k, (kind, values) in enumerate(batches):
        failures += len(ingest(pipeline, decoder, kind, 0, values, metrics, kind))
        pipeline.advance()
        absorb()
        if (k + 1) % every == 0:
            checkpoint()
    checkpoint()
    return {"evaluations": evaluations, "failures": failures, "checkpoints": checkpoints,
            "snapshot_cpu": cpu["snapshots"], "cpu_by_step": cpu, "snapshot_bytes": snapshot_bytes,
            "pane_bytes": pane_bytes}


def checkpoint_cost(tmp: Path, sizes: dict) -> dict[str, Any]:
    """In memory: the Kafka backend's path (stage 1 -> pane messages -> stage 2, snapshots at
    every checkpoint) vs the one-process pipeline without checkpoints, same stream,
    alternating runs. Also the snapshot cost alone, scaled to the default interval."""
    s = spec()
    config, profiles = build_config(tmp, s)
    batches = encoded_stream(s, sizes["throughput_predictions"], seed=1)
    n_events = sum(len(vs) for _, vs in batches)
    warm = encoded_stream(s, 3000, seed=99, start=START - 10 * 86400.0)
    run_end_to_end(config, profiles, warm)
    run_kafka_shape(config, profiles, warm, CHECKPOINT_EVERY_BATCHES)
    log(f"checkpoint: Kafka-backend path with a checkpoint every {CHECKPOINT_EVERY_BATCHES * MICRO_BATCH:,} "
        "events, and the one-process pipeline without checkpoints, alternating")
    runs: list[dict[str, Any]] = []
    for _ in range(max(3, sizes["repeats"])):
        _, off_cpu, off = _clock(lambda: run_end_to_end(config, profiles, batches))
        _, on_cpu, on = _clock(lambda: run_kafka_shape(config, profiles, batches, CHECKPOINT_EVERY_BATCHES))
        if off["failures"] or on["failures"]:
            raise AssertionError("records failed decoding: the benchmark stream is broken")
        if on["evaluations"] != off["evaluations_streamed"]:
            raise AssertionError(f"the Kafka-backend path evaluated {on['evaluations']} metrics, the one-process "
                                 f"pipeline {off['evaluations_streamed']}: the two paths differ")
        runs.append({"off_cpu": off_cpu, "on_cpu": on_cpu, "on": on, "off": off})
    runs.sort(key=lambda r: r["off_cpu"] / r["on_cpu"])
    mid = runs[len(runs) // 2]
    on, on_cpu, off_cpu = mid["on"], mid["on_cpu"], mid["off_cpu"]
    per_ckpt = on["snapshot_cpu"] / on["checkpoints"]
    # At the default interval: one snapshot per CHECKPOINT_INTERVAL seconds of processing
    # (CPU bound, so CPU seconds are wall seconds). The pane messages are per pane, not per
    # checkpoint: the same total whatever the interval.
    processing = on_cpu - on["snapshot_cpu"]
    at_default = processing + processing / CHECKPOINT_INTERVAL * per_ckpt
    without = processing - on["cpu_by_step"]["pane messages"]
    changelog_ratio = without / at_default
    return {"checkpoint_snapshot_cost": figure(
        n_events / on_cpu, "events/s per core (CPU time), median pair", n_events / off_cpu,
        "the same stream through the one-process pipeline (stage 2 in memory), no checkpoint",
        target=">= 0.80: the Kafka-backend path with vs without building snapshots and pane messages, at "
               f"the default {CHECKPOINT_INTERVAL:g} s checkpoint interval (changelog_ratio_at_default_interval)",
        met=changelog_ratio >= 0.8,
        checkpoint_every_events=CHECKPOINT_EVERY_BATCHES * MICRO_BATCH, checkpoints=on["checkpoints"],
        ratio_runs=[round(r["off_cpu"] / r["on_cpu"], 3) for r in runs],
        snapshot_ms_per_checkpoint=round(1e3 * per_ckpt, 3),
        snapshot_bytes_per_checkpoint=int(statistics.median(on["snapshot_bytes"])),
        checkpoint_cpu_share_by_step={k: round(v / on_cpu, 4) for k, v in on["cpu_by_step"].items()},
        pane_message_bytes=on["pane_bytes"],
        changelog_ratio_at_default_interval=round(changelog_ratio, 4),
        # the whole Kafka-backend path (pane transport and stage 2 included) vs one process
        ratio_at_default_interval=round(off_cpu / at_default, 4),
        evaluations=on["evaluations"], events=n_events)}


def profile_end_to_end(config, profiles, batches) -> list[dict[str, Any]]:
    """cProfile of one end-to-end pass: the functions with the most own time (also to stderr)."""
    prof = cProfile.Profile()
    prof.enable()
    run_end_to_end(config, profiles, batches)
    prof.disable()
    return _print_profile(prof, "one in-memory end-to-end pass")


def _print_profile(prof: cProfile.Profile, what: str) -> list[dict[str, Any]]:
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())  # own time of every function
    rows = []
    for (file, line, fn), (_cc, ncalls, tt, ct, _callers) in st.stats.items():
        where = os.path.relpath(file, ROOT) if file.startswith(str(ROOT)) else os.path.basename(file)
        rows.append({"function": f"{where}:{line}:{fn}", "calls": ncalls, "own_s": round(tt, 4),
                     "own_share": round(tt / total, 4), "cum_s": round(ct, 4), "cum_share": round(ct / total, 4)})
    rows.sort(key=lambda r: -r["own_s"])
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
    log(f"profile of {what}, by cumulative time:\n" + buf.getvalue())
    log(f"profile of {what}, by own time (share of profiled time):\n" + "\n".join(
        f"  {r['own_share']:6.1%} own {r['cum_share']:6.1%} cum  {r['calls']:>9}  {r['function']}" for r in rows[:30]))
    return rows[:20]


# -- part 2: memory --------------------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss(reset: bool = False) -> int:
    """Peak RSS (VmHWM); ``reset`` restarts the peak from the current RSS first.

    Not ``ru_maxrss``: that one survives fork and exec, so a worker would report the
    parent's peak. Writing 5 to clear_refs resets VmHWM (Linux >= 4.0); where that is not
    allowed the peak includes start-up, and the growth is then a lower bound.
    """
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _templates(s: ModelSpec, n: int) -> tuple[list[bytes], list[float]]:
    """Encoded prediction records split after the timestamp, so new ones are made by concatenation.

    Generating a million records with ``monitor.synth`` would take longer than feeding
    them; ``prefix + id + middle + ts + tail`` gives distinct records at bytes speed.
    """
    preds, _ = generate(s, START, n / s.rate, seed=7)
    tails, offsets = [], []
    for r in preds:
        b = orjson.dumps(r)
        cut = b.index(b',"features":')
        tails.append(b[cut:])
        offsets.append(r["timestamp"] - START)
    return tails, offsets


_HEAD = b'{"prediction_id":"'
_MID = b'","model":"bench","model_version":"1.0.0","timestamp":'


def memory_worker(kind: str, n: int) -> dict[str, Any]:
    """Runs in a fresh process; fills ``n`` waiting predictions and reports its memory."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    try:
        s = spec(rate=100.0)  # 1e6 predictions span 1e4 s of event time: far inside the 1-day TTL
        if kind == "pipeline":
            return _fill_pipeline(tmp, s, n)
        return _fill_dict(s, n, trace=kind == "dict-traced")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fill_pipeline(tmp: Path, s: ModelSpec, n: int) -> dict[str, Any]:
    marks: dict[str, int] = {}

    def warmed() -> None:
        marks["rss0"], marks["peak0"] = _rss(), _peak_rss(reset=True)

    pipeline, _config, _profiles = _filled_pipeline(tmp, s, n, warmed)
    gc.collect()
    rss1, peak1 = _rss(), _peak_rss()
    st = pipeline.partitions[0]
    join_bytes = st.preds.nbytes + st.labels.nbytes
    return {"n": n, "waiting": len(st.preds), "join_bytes": join_bytes, "rss_growth": rss1 - marks["rss0"],
            "peak_rss_growth": max(0, peak1 - marks["peak0"]), "capacity": st.preds.capacity,
            "panes_closed": int(pipeline.metrics.registry.get_sample_value(
                "driftline_window_panes_closed_total", {"model": pipeline.models[0].cfg.name}) or 0),
            "open_panes": sum(len(p) for p in st.open)}


def _filled_pipeline(tmp: Path, s: ModelSpec, n: int, warmed: Callable[[], None] | None = None):
    """(pipeline, config, profiles): ``n`` predictions fed through ingest/advance, none labelled, so all
    wait in partition 0's join; ``warmed`` is called after the warm-up, before the fill."""
    config, profiles = build_config(tmp, s)
    metrics = Metrics()
    pipeline = Pipeline(config, profiles, metrics)
    decoder = RecordDecoder(config.fields, config.models)
    chunk = 10_000
    tails, offsets = _templates(s, chunk)
    span = len(tails) / s.rate
    # warm-up in a partition that is dropped again (numba compile, first allocations)
    warm = [_HEAD + f"warm-{i}".encode() + _MID + repr(START - 86400.0 + offsets[i]).encode() + tails[i]
            for i in range(MICRO_BATCH)]
    ingest(pipeline, decoder, "predictions", 1, warm, metrics, "predictions")
    pipeline.advance()
    pipeline.drop_partition(1)
    pipeline.drain()
    del warm
    gc.collect()
    if warmed is not None:
        warmed()
    done, k = 0, 0
    while done < n:
        m = min(chunk, n - done, len(tails))
        base = START + k * span
        values = [_HEAD + f"bench-{k}-{i}".encode() + _MID + repr(round(base + offsets[i], 3)).encode() + tails[i]
                  for i in range(m)]
        for j in range(0, m, MICRO_BATCH):
            bad = ingest(pipeline, decoder, "predictions", 0, values[j : j + MICRO_BATCH], metrics, "predictions")
            if bad:
                raise AssertionError(f"memory fill: record rejected: {bad[0].reason}")
            pipeline.advance()
            pipeline.drain()
        done += m
        k += 1
    del values
    waiting = len(pipeline.partitions[0].preds)
    if waiting != n:
        raise AssertionError(f"{waiting} predictions waiting after feeding {n}: some expired or were dropped")
    return pipeline, config, profiles


def _fill_dict(s: ModelSpec, n: int, trace: bool) -> dict[str, Any]:
    """The naive join state: {prediction_id: (ts, score, predicted, group 1, group 2)}.

    Group names are shared objects (as a careful implementation would intern them), so the
    baseline is not inflated by per-record strings.
    """
    rng_groups = [list(v) for v in s.sensitive.values()]
    gc.collect()
    rss0, peak0 = _rss(), _peak_rss(reset=True)
    if trace:
        tracemalloc.start()
    cur0 = tracemalloc.get_traced_memory()[0] if trace else 0
    table: dict[str, tuple] = {}
    g1, g2 = rng_groups[0], rng_groups[1]
    for i in range(n):
        ts = START + i / s.rate
        score = (i % 997) / 997.0
        table[f"bench-{i // 10_000}-{i % 10_000}"] = (ts, score, int(score >= 0.5), g1[i % len(g1)], g2[i % len(g2)])
    cur1 = tracemalloc.get_traced_memory()[0] if trace else 0
    if trace:
        tracemalloc.stop()
    gc.collect()
    rss1, peak1 = _rss(), _peak_rss()
    return {"n": n, "entries": len(table), "traced_growth": cur1 - cur0, "rss_growth": rss1 - rss0,
            "peak_rss_growth": max(0, peak1 - peak0)}


def memory(sizes: dict) -> dict[str, Any]:
    n = sizes["memory_predictions"]
    log(f"memory: {n:,} waiting predictions through the pipeline, and the dict baseline (separate processes)")
    # separate fresh processes: RSS is per process, and a traced run must not inflate an untraced one
    procs = {kind: subprocess.Popen([sys.executable, __file__, "--memory-worker", kind, "--n", str(n)],
                                    stdout=subprocess.PIPE, text=True)
             for kind in ("pipeline", "dict", "dict-traced")}
    res = {}
    for kind, p in procs.items():
        out, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"memory worker {kind} failed with exit code {p.returncode}")
        res[kind] = json.loads(out.strip().splitlines()[-1])
    pipe, plain, traced = res["pipeline"], res["dict"], res["dict-traced"]
    per = lambda b: b / n  # noqa: E731
    return {
        "join_state_bytes_per_waiting_prediction": figure(
            per(pipe["join_bytes"]), "bytes", per(traced["traced_growth"]),
            "dict {id: (ts, score, pred, g1, g2)}: tracemalloc growth per entry",
            target="<= 150 bytes", met=per(pipe["join_bytes"]) <= 150, waiting=pipe["waiting"],
            join_capacity_rows=pipe["capacity"]),
        "rss_growth_bytes_per_waiting_prediction": figure(
            per(pipe["rss_growth"]), "bytes", per(plain["rss_growth"]),
            "dict {id: (ts, score, pred, g1, g2)}: RSS growth per entry",
            target="<= 150 bytes", met=per(pipe["rss_growth"]) <= 150, waiting=pipe["waiting"],
            panes_closed=pipe["panes_closed"], open_panes=pipe["open_panes"]),
        "peak_rss_growth_bytes_per_waiting_prediction": figure(
            per(pipe["peak_rss_growth"]), "bytes", per(plain["peak_rss_growth"]),
            "dict {id: (ts, score, pred, g1, g2)}: peak RSS growth per entry",
            waiting=pipe["waiting"]),
    }


# -- part 3: Kafka ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class KafkaBroker:
    """A single-node Apache Kafka in KRaft mode (broker + controller) from the cached jars."""

    def __init__(self, libs: Path, workdir: Path):
        self.libs = libs
        self.dir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = _free_port()
        self.controller_port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> str:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java not found")
        props = self.dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"log.dirs={self.dir / 'data'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1",  # the first transaction starts in ~1 s, not ~10
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
        ]) + "\n")
        log4j = self.dir / "log4j2.properties"
        log4j.write_text("rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n"
                         "appender.out.type = Console\nappender.out.name = OUT\n"
                         "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\n")
        cp = f"{self.libs}/*"
        jvm = [java, "-Xmx768m", "-Xms256m", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j}", "-cp", cp]
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # "=" form: an id starting with "-" (1 in 64) would otherwise read as an option
        fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(props),
                                    "--standalone"], capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka storage format failed: {(fmt.stderr or fmt.stdout)[-500:]}")
        self.log = open(self.dir / "kafka.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        from kafka.admin import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafka exited with {self.proc.returncode}: {self._tail()}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                admin.list_topics()
                admin.close()
                return self.bootstrap
            except Exception as exc:  # noqa: BLE001 - not up yet; retried until the deadline
                last = exc
                time.sleep(0.5)
        raise RuntimeError(f"kafka did not answer within {timeout:.0f} s ({last}): {self._tail()}")

    def _tail(self) -> str:
        try:
            return (self.dir / "kafka.log").read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()


def _kafka_libs() -> Path | None:
    libs = ROOT / ".cache" / "kafka" / "libs"
    return libs if any(libs.glob("kafka_2.13-*.jar")) else None


def _produce(bootstrap: str, batches: list[tuple[str, list[bytes]]], topics: dict[str, str]) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1,
                             max_request_size=8 * 1024 * 1024)
    n = 0
    for kind, values in batches:
        for v in values:
            producer.send(topics[kind], value=v, partition=0)
        n += len(values)
    producer.flush(timeout=300)
    producer.close()
    return n


# kafka-python's default fetch_max_wait_ms (500) lets the consumer sit idle for most of a
# run on a loopback broker (measured: 17k records/s, 10% CPU); with 10 ms it is CPU bound.
# Both sides always get the same settings, and both settings are measured.
FAST_FETCH = {"fetch_max_wait_ms": 10}


class _Load:
    """Who used the machine's cores during a timed run, from /proc: the whole machine (every
    process, ours and the other engineers'), the broker's JVM, and the bench's own
    processes; the rest is the neighbours. Also the main process's garbage-collection pauses."""

    def __init__(self, broker_pid: int | None):
        self.broker_pid = broker_pid
        self._gc_start = 0.0
        self.gc_seconds = 0.0
        self.gc_on = False
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, _info: dict) -> None:
        if not self.gc_on:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start:
            self.gc_seconds += time.perf_counter() - self._gc_start
            self._gc_start = 0.0

    def close(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def start(self) -> dict[str, float]:
        self.gc_on, self.gc_seconds = True, 0.0
        return {"wall": time.perf_counter(), "machine": _machine_busy(), "broker": _pid_cpu(self.broker_pid)}

    def stop(self, mark: dict[str, float], own_cpu: float) -> dict[str, float]:
        """Cores in use on average over the run, by whom; ``own_cpu``: the bench's CPU seconds."""
        self.gc_on = False
        wall = time.perf_counter() - mark["wall"]
        machine = (_machine_busy() - mark["machine"]) / wall
        broker = (_pid_cpu(self.broker_pid) - mark["broker"]) / wall
        own = own_cpu / wall
        return {"machine_cores": round(machine, 3), "broker_cores": round(broker, 3), "bench_cores": round(own, 3),
                "others_cores": round(max(0.0, machine - broker - own), 3),
                "gc_pause_seconds": round(self.gc_seconds, 4), "gc_share_of_wall": round(self.gc_seconds / wall, 4)}


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _pid_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of one process so far, 0 when it is unknown or gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _consume_plain(bootstrap: str, topics: list[str], total: int, decode: Callable[[bytes], Any],
                   overrides: dict[str, Any], load: _Load | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """kafka-python alone: the poll loop decoding every value, nothing else."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"bench-plain-{uuid.uuid4().hex[:8]}",
                      enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=MICRO_BATCH,
                      session_timeout_ms=6000, heartbeat_interval_ms=1000, **overrides)
    c.subscribe(topics)
    n = n0 = 0
    t0 = c0 = None
    lmark: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while n < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka-python consumer read {n} of {total} records in {timeout:.0f} s")
            got = 0
            for recs in c.poll(timeout_ms=500, max_records=MICRO_BATCH).values():
                for r in recs:
                    decode(r.value)
                got += len(recs)
            n += got
            if got and t0 is None:
                # timing starts once the group is joined and the first records are in hand
                t0, c0, n0 = time.perf_counter(), time.process_time(), n
                lmark = load.start() if load is not None else {}
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        machine = load.stop(lmark, cpu) if load is not None else {}
    finally:
        c.close(autocommit=False)
    return {"records": n - n0, "wall": wall, "cpu": cpu, "load": machine}


class _CpuMeter:
    """Main-thread CPU seconds per stage of the monitor's loop, by wrapping instance methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.wall: dict[str, float] = {}  # the same stages in wall time: CPU plus waiting (broker, GIL)
        self.on = False

    def wrap(self, obj: Any, attr: str, stage: str) -> None:
        inner = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            if not self.on:
                return inner(*a, **k)
            t, w = time.thread_time(), time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.thread_time() - t
                self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w

        setattr(obj, attr, timed)


def _stage2_caught_up(app) -> bool:
    """Kafka backend: the model's owner has merged every pane message stage 1 committed
    (each source's progress as stage 2 saw it equals what stage 1 last published)."""
    ks = app.kstate
    for (model, p), (sealed, _active) in ks._published.items():
        seen = ks.stage.sources.get(model, {}).get(p)
        if seen is None or seen[0] != sealed:
            return False
    return bool(ks._published)


def _consume_app(bootstrap: str, config, tmp: Path, total: int, overrides: dict[str, Any],
                 profile: bool = False, load: _Load | None = None, settle: bool = False,
                 timeout: float = 300.0) -> dict[str, Any]:
    """The whole monitor: App.run (poll, ingest, advance, dead letters, periodic checkpoints).

    ``settle``: the timed window ends only once everything read is durable: a checkpoint
    after the last record and, with ``state.backend = "kafka"``, stage 2 caught up on the
    panes that checkpoint published and, if that produced output (panes merged from the
    topic rather than directly), a second checkpoint committing it, so the two backends are
    timed to the same point (all records consumed, evaluated, committed).
    """
    from prometheus_client import CollectorRegistry

    from monitor.app import App

    group = f"bench-app-{uuid.uuid4().hex[:8]}"
    if config.state.backend == "kafka":
        # the models group and the internal topics derive from kafka.group_id: fresh per run
        config = msgspec.structs.replace(config, kafka=msgspec.structs.replace(config.kafka, group_id=group),
                                         state=msgspec.structs.replace(config.state, topic_prefix=group))
    app = App(config, bootstrap_servers=[bootstrap], state_dir=str(tmp / f"state-{uuid.uuid4().hex[:8]}"),
              http_port=0, http_host="127.0.0.1", registry=CollectorRegistry(),
              consumer_overrides={"group_id": group, **overrides})
    meter = _CpuMeter()
    meter.wrap(app.decoder, "decode_predictions", "decode")
    meter.wrap(app.decoder, "decode_labels", "decode")
    meter.wrap(app.pipeline, "add_predictions", "join + panes")
    meter.wrap(app.pipeline, "add_labels", "join + panes")
    meter.wrap(app.pipeline, "advance", "advance (seal + evaluate)")
    meter.wrap(app, "checkpoint", "checkpoint")
    if app.kstate is not None:
        meter.wrap(app.kstate, "poll", "stage 2 (merge + evaluate) + delivery")
    make_consumer = app._make_consumer

    def make_metered_consumer():
        c = make_consumer()
        meter.wrap(c, "poll", "kafka-python poll")
        return c

    app._make_consumer = make_metered_consumer  # type: ignore[method-assign]
    mark: dict[str, Any] = {}
    inner = app.poll_once
    prof = cProfile.Profile() if profile else None

    def finished() -> bool:
        """Whether the timed window is over (settle: checkpoint, then stage 2, then again)."""
        if not settle:
            return True
        step = mark.setdefault("settle", 0)
        if step == 0:
            app.checkpoint()
            mark["settle"] = 1 if app.kstate is not None else 2
            mark["settle_checkpoint"] = time.perf_counter()
        elif step == 1 and _stage2_caught_up(app):
            mark["settle_caught_up"] = time.perf_counter()
            stage = app.kstate.stage
            if stage.dirty or stage.out.evaluations or stage.out.transitions:
                app.checkpoint()  # stage 2 produced output after the first checkpoint
            mark["settle"] = 2
        return mark["settle"] == 2

    def poll_once() -> None:
        timed = "t0" in mark and "t1" not in mark
        if timed:
            t = time.thread_time()
        inner()
        # the topics are fresh, so the sum of next offsets is the number of records consumed
        n = sum(app.positions.values())
        if n >= total and "consumed" not in mark:
            mark["consumed"] = time.perf_counter()
        done = n >= total and "t1" not in mark and finished()
        if timed:
            mark["loop"] += time.thread_time() - t
        if n and "t0" not in mark:
            mark.update(t0=time.perf_counter(), c0=time.process_time(), n0=n, loop=0.0, f0=_fetcher_cpu(app))
            mark["load"] = load.start() if load is not None else {}
            meter.on = True
            if prof is not None:
                prof.enable()
        if done:
            mark.update(t1=time.perf_counter(), c1=time.process_time(), n1=n, f1=_fetcher_cpu(app))
            meter.on = False
            if prof is not None:
                prof.disable()
            app.request_stop()

    app.poll_once = poll_once  # type: ignore[method-assign]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    gc_threshold = gc.get_threshold()
    try:
        app.run(duration=timeout)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        # App.run tunes this process's garbage collector (monitor.runtime.tune_gc); the
        # kafka-python baseline runs with CPython's defaults, as a user's own loop would
        gc.unfreeze()
        gc.set_threshold(*gc_threshold)
    if "t1" not in mark:
        raise RuntimeError(f"the monitor consumed {sum(app.positions.values())} of {total} records in {timeout:.0f} s"
                           + (f" (settling: step {mark.get('settle')})" if settle else ""))
    stages = {k: round(v, 3) for k, v in meter.seconds.items()}
    stages["other (loop)"] = round(mark["loop"] - sum(meter.seconds.values()), 3)
    if prof is not None:
        _print_profile(prof, "the monitor behind Kafka (main thread)")
    fetch_cpu = mark["f1"] - mark["f0"]
    if app.fetcher is not None:
        stages["fetch process (all threads)"] = round(fetch_cpu, 3)
    cpu = mark["c1"] - mark["c0"] + fetch_cpu
    # CPU of both processes: the fetch process's parsing is the monitor's cost too
    wall = {k: round(v, 3) for k, v in meter.wall.items()}
    wall["all stages"] = round(sum(meter.wall.values()), 3)
    wall["timed window"] = round(mark["t1"] - mark["t0"], 3)
    wall["after the last record (settle)"] = round(mark["t1"] - mark["consumed"], 3)
    if "settle_checkpoint" in mark:  # where the settle went: checkpoint, stage 2 catching up, checkpoint
        wall["settle: first checkpoint"] = round(mark["settle_checkpoint"] - mark["consumed"], 3)
    if "settle_caught_up" in mark:
        wall["settle: stage 2 catching up"] = round(mark["settle_caught_up"] - mark["settle_checkpoint"], 3)
        wall["settle: second checkpoint"] = round(mark["t1"] - mark["settle_caught_up"], 3)
    return {"records": mark["n1"] - mark["n0"], "wall": mark["t1"] - mark["t0"], "cpu": cpu,
            "main_thread_cpu": stages, "main_thread_wall": wall,
            "load": load.stop(mark["load"], cpu) if load is not None else {}}


def _fetcher_cpu(app) -> float:
    """CPU seconds of the App's fetch process so far (0 without one), from /proc."""
    if app.fetcher is None:
        return 0.0
    return _pid_cpu(app.fetcher.pid)


#: figures of the Kafka part, by section (``--only``)
KAFKA_SECTIONS = {
    "kafka": ("kafka_consume_records_per_second", "kafka_consume_records_per_second_default_fetch_wait",
              "kafka_consume_records_per_second_one_process"),
    "kafka_state": ("kafka_state_backend_records_per_second",),
    "restore": ("kafka_state_restore_seconds_per_million_waiting",),
}
KAFKA_FIGURES = tuple(f for names in KAFKA_SECTIONS.values() for f in names)


def kafka_skipped(reason: str, sections: tuple[str, ...] = tuple(KAFKA_SECTIONS)) -> dict[str, Any]:
    return {name: skipped(reason) for sec in sections for name in KAFKA_SECTIONS[sec]}


def _median_pair(app_runs: list[dict[str, Any]], plain_runs: list[dict[str, Any]]) -> int:
    """Index of the pair with the median ratio (an odd number of pairs: a real pair)."""
    ratios = [(a["records"] / a["wall"]) / (p["records"] / p["wall"]) for a, p in zip(app_runs, plain_runs, strict=True)]
    order = sorted(range(len(ratios)), key=ratios.__getitem__)
    return order[len(order) // 2]


def kafka(tmp: Path, sizes: dict, profile: bool = False,
          sections: tuple[str, ...] = tuple(KAFKA_SECTIONS)) -> dict[str, Any]:
    libs = _kafka_libs()
    if libs is None:
        return kafka_skipped("Apache Kafka jars not found in .cache/kafka/libs (run scripts/provision.sh)", sections)
    if shutil.which("java") is None:
        return kafka_skipped("java not found on PATH", sections)
    topics = {"predictions": "bench-predictions", "labels": "bench-labels"}
    kafka_toml = f"""
[kafka]
group_id = "bench"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_records = {MICRO_BATCH}

[topics]
predictions = "{topics['predictions']}"
labels = "{topics['labels']}"
dead_letter = "bench-dead-letter"
alerts = "bench-alerts"

[reports]
dir = "{(tmp / 'reports').as_posix()}"
"""
    s = spec()
    config, _ = build_config(tmp, s, prefix_toml=kafka_toml)
    n_pred = sizes["kafka_records"] // 2
    batches = encoded_stream(s, n_pred, seed=3)
    broker = KafkaBroker(libs, Path(tempfile.mkdtemp(prefix="bench-kafka-", dir=tmp)))
    names = list(topics.values())
    result: dict[str, Any] = {}
    load: _Load | None = None
    try:
        log("kafka: starting Apache Kafka (KRaft)")
        try:
            bootstrap = broker.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            return kafka_skipped(f"Apache Kafka did not start: {exc}", sections)
        load = _Load(broker.proc.pid if broker.proc is not None else None)
        if "kafka" in sections or "kafka_state" in sections:
            from kafka.admin import KafkaAdminClient, NewTopic

            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic(t, 1, 1) for t in [*names, "bench-dead-letter", "bench-alerts"]])
            admin.close()
            log(f"kafka: producing {sum(len(v) for _, v in batches):,} records")
            total = _produce(bootstrap, batches, topics)
        if "kafka" in sections:
            result.update(_kafka_consume(bootstrap, config, tmp, names, total, sizes, load, profile))
        if "kafka_state" in sections:
            result.update(_kafka_state_backend(bootstrap, config, tmp, total, sizes, load, profile))
        if "restore" in sections:
            result.update(_kafka_restore(bootstrap, tmp, sizes))
    finally:
        if load is not None:
            load.close()
        broker.stop()
    return result


def _kafka_consume(bootstrap: str, config, tmp: Path, names: list[str], total: int, sizes: dict, load: _Load,
                   profile: bool) -> dict[str, Any]:
    """The consume ratio as the median and range of alternating pairs, plus the one-process
    and default-fetch-wait figures (one pair each)."""
    plain_runs, app_runs = [], []
    for k in range(sizes["kafka_pairs"]):
        # the baseline first in every pair: a broker still warming up (JIT, page cache)
        # slows the baseline, never flatters the monitor
        log(f"kafka: pair {k + 1}/{sizes['kafka_pairs']}: kafka-python + orjson, then the whole monitor "
            "(fetch_max_wait_ms=10)")
        plain_runs.append(_consume_plain(bootstrap, names, total, orjson.loads, FAST_FETCH, load))
        app_runs.append(_consume_app(bootstrap, config, tmp, total, FAST_FETCH, load=load))
    log("kafka: the monitor in one process (kafka.fetch_process = false)")
    one_process = msgspec.structs.replace(config, kafka=msgspec.structs.replace(config.kafka, fetch_process=False))
    one = _consume_app(bootstrap, one_process, tmp, total, FAST_FETCH, load=load)
    # All records again: the default wait stalls the consumer once one topic is read to
    # its end while the other still has a backlog, which is what a catching-up monitor sees.
    log("kafka: both again with kafka-python's default fetch wait")
    plain_default = _consume_plain(bootstrap, names, total, orjson.loads, {}, load)
    app_default = _consume_app(bootstrap, config, tmp, total, {}, load=load)
    if profile:
        log("kafka: an extra, untimed run of the monitor under cProfile")
        _consume_app(bootstrap, config, tmp, total, FAST_FETCH, profile=True)
    mid = _median_pair(app_runs, plain_runs)
    return {
        "kafka_consume_records_per_second": _kafka_figure(
            app_runs, plain_runs, total, "kafka-python defaults + fetch_max_wait_ms=10, on both sides", pick=mid),
        "kafka_consume_records_per_second_default_fetch_wait": _kafka_figure(
            [app_default], [plain_default], total,
            "kafka-python defaults (fetch_max_wait_ms=500) as monitor.app ships them, on both sides"),
        "kafka_consume_records_per_second_one_process": _kafka_figure(
            [one], [plain_runs[mid]], total, "kafka.fetch_process = false; fetch_max_wait_ms=10 on both sides",
            target=False),  # informational: the one-core configuration
    }


def _kafka_figure(app_runs: list[dict[str, Any]], plain_runs: list[dict[str, Any]], records: int,
                  settings: str, target: bool = True, pick: int = 0) -> dict:
    """``pick``: the pair that stands for the figure (the median pair where there are several;
    its ratio is then the median ratio); ``ratio_range`` spans all pairs."""
    app, plain = app_runs[pick], plain_runs[min(pick, len(plain_runs) - 1)]
    rate, base = app["records"] / app["wall"], plain["records"] / plain["wall"]
    pairs = len(app_runs) == len(plain_runs) and len(app_runs) > 1
    extra: dict[str, Any] = {}
    if pairs:
        ratios = sorted((a["records"] / a["wall"]) / (p["records"] / p["wall"])
                        for a, p in zip(app_runs, plain_runs, strict=True))
        extra = {"ratio_median": ratios[len(ratios) // 2], "ratio_range": [ratios[0], ratios[-1]],
                 "pairs": len(ratios)}
    return figure(
        rate, "records/s (wall)" + (", median pair" if pairs else ""), base,
        "kafka-python poll loop + orjson.loads, same topics" + (", same pair" if pairs else ""),
        target=">= 0.80 of kafka-python alone" if target else "", met=rate >= 0.8 * base, records=records,
        consumer_settings=settings, **extra,
        value_runs=[round(r["records"] / r["wall"]) for r in app_runs],
        baseline_runs=[round(r["records"] / r["wall"]) for r in plain_runs],
        cpu_value=app["records"] / app["cpu"], cpu_baseline=plain["records"] / plain["cpu"],
        cpu_ratio=(app["records"] / app["cpu"]) / (plain["records"] / plain["cpu"]),
        cpu_ratio_runs=[round((a["records"] / a["cpu"]) / (p["records"] / p["cpu"]), 3)
                        for a, p in zip(app_runs, plain_runs, strict=False)],
        load_value_runs=[r.get("load", {}) for r in app_runs], load_baseline_runs=[r.get("load", {}) for r in plain_runs],
        monitor_cpu_seconds_by_stage=app["main_thread_cpu"],
    )


def _kafka_state_backend(bootstrap: str, config, tmp: Path, total: int, sizes: dict, load: _Load,
                         profile: bool = False) -> dict[str, Any]:
    """The same records and command with ``state.backend = "sqlite"`` then ``"kafka"``,
    alternating; each run timed until everything read is consumed, evaluated and committed."""
    # Once the last record is read the input is idle, and the loop would wait up to
    # kafka.poll_timeout_ms (500) for input before each turn of stage 2 while it settles:
    # an artefact of a finite input that a live stream does not have. 20 ms on both sides.
    config = msgspec.structs.replace(config, kafka=msgspec.structs.replace(config.kafka, poll_timeout_ms=20))
    kcfg = msgspec.structs.replace(config, state=msgspec.structs.replace(config.state, backend="kafka"))
    sqlite_runs, kafka_runs = [], []
    for k in range(sizes["kafka_pairs"]):
        log(f"kafka_state: pair {k + 1}/{sizes['kafka_pairs']}: the monitor with state.backend = \"sqlite\", "
            "then \"kafka\"")
        sqlite_runs.append(_consume_app(bootstrap, config, tmp, total, FAST_FETCH, load=load, settle=True))
        kafka_runs.append(_consume_app(bootstrap, kcfg, tmp, total, FAST_FETCH, load=load, settle=True))
    if profile:
        log("kafka_state: an extra, untimed run of the Kafka backend under cProfile")
        _consume_app(bootstrap, kcfg, tmp, total, FAST_FETCH, profile=True, settle=True)
    mid = _median_pair(kafka_runs, sqlite_runs)
    k_run, s_run = kafka_runs[mid], sqlite_runs[mid]
    ratios = sorted((a["records"] / a["wall"]) / (b["records"] / b["wall"])
                    for a, b in zip(kafka_runs, sqlite_runs, strict=True))
    rate, base = k_run["records"] / k_run["wall"], s_run["records"] / s_run["wall"]
    return {"kafka_state_backend_records_per_second": figure(
        rate, "records/s (wall), consumed to committed, median pair", base,
        "the same command with state.backend = \"sqlite\" (same pair)",
        target=">= 0.80 of the SQLite backend", met=rate >= 0.8 * base, records=total,
        consumer_settings="fetch_max_wait_ms=10, kafka.poll_timeout_ms=20, kafka.fetch_process = true, checkpoint every "
                          f"{config.state.checkpoint_interval_seconds:g} s plus one at the end",
        ratio_range=[ratios[0], ratios[-1]], pairs=len(ratios),
        value_runs=[round(r["records"] / r["wall"]) for r in kafka_runs],
        baseline_runs=[round(r["records"] / r["wall"]) for r in sqlite_runs],
        cpu_ratio=(k_run["records"] / k_run["cpu"]) / (s_run["records"] / s_run["cpu"]),
        load_value_runs=[r["load"] for r in kafka_runs], load_baseline_runs=[r["load"] for r in sqlite_runs],
        monitor_cpu_seconds_by_stage=k_run["main_thread_cpu"],
        baseline_cpu_seconds_by_stage=s_run["main_thread_cpu"],
        monitor_wall_seconds_by_stage=k_run["main_thread_wall"],
        baseline_wall_seconds_by_stage=s_run["main_thread_wall"])}


def _kafka_restore(bootstrap: str, tmp: Path, sizes: dict) -> dict[str, Any]:
    """Restore of one partition holding ``memory_predictions`` waiting predictions: from the
    compacted changelog (SnapshotWriter in one transaction; read_snapshots + restore_partition)
    vs the same bytes from the local SQLite StateStore."""
    from kafka import KafkaProducer

    from monitor.changelog import (
        InternalTopics,
        SnapshotWriter,
        ensure_topics,
        new_checkpoint_id,
        read_snapshots,
    )
    from monitor.state import StateStore

    n = sizes["memory_predictions"]
    s = spec(rate=100.0)  # as the memory figure: far inside the 1-day TTL
    log(f"restore: {n:,} waiting predictions through the pipeline")
    pipeline, config, profiles = _filled_pipeline(tmp, s, n)
    st = pipeline.partitions[0]
    t0 = time.perf_counter()
    data = st.to_bytes()
    to_bytes_seconds = time.perf_counter() - t0
    chunk = config.state.chunk_bytes
    internal = InternalTopics(f"bench-restore-{uuid.uuid4().hex[:8]}")
    common = {"bootstrap_servers": bootstrap}
    ensure_topics(common, internal.specs(1, 1), 1)
    producer = KafkaProducer(transactional_id=f"{internal.prefix}-writer", acks="all", linger_ms=5,
                             max_request_size=max(1048576, 2 * chunk), **common)
    try:
        producer.init_transactions()
        log(f"restore: writing the {len(data) / 1e6:.1f} MB snapshot to {internal.partition_changelog} in one "
            "transaction")
        t0 = time.perf_counter()
        producer.begin_transaction()
        SnapshotWriter(producer.send, internal.partition_changelog, chunk).write(
            "partition/0", 0, data, new_checkpoint_id(), {"offsets": {"bench-predictions": n}})
        producer.commit_transaction()
        write_seconds = time.perf_counter() - t0
    finally:
        producer.close(timeout=10)
    store = StateStore(tmp / f"restore-{uuid.uuid4().hex[:8]}")
    store.checkpoint({("bench-predictions", 0): n}, {"kpartition/0": data})
    del pipeline, st
    gc.collect()

    def restore(snapshot: Callable[[], bytes]) -> tuple[float, float]:
        """(seconds reading the bytes, seconds rebuilding the partition state from them)."""
        fresh = Pipeline(config, profiles, Metrics())
        gc.collect()
        t = time.perf_counter()
        got = snapshot()
        t1 = time.perf_counter()
        fresh.restore_partition(0, got)
        took = (t1 - t, time.perf_counter() - t1)
        if len(fresh.partitions[0].preds) != n:
            raise AssertionError(f"{len(fresh.partitions[0].preds)} waiting predictions restored, {n} written")
        return took

    def from_changelog() -> bytes:
        snaps = read_snapshots(common, internal.partition_changelog, 0)
        return snaps["partition/0"].data

    kafka_s, sqlite_s = [], []
    for k in range(sizes["restore_repeats"]):
        log(f"restore: {k + 1}/{sizes['restore_repeats']}: from the changelog, then from the local SQLite file")
        kafka_s.append(restore(from_changelog))
        sqlite_s.append(restore(lambda: store.blob("kpartition/0")))
    store.close()
    per = 1e6 / n
    k_med, s_med = statistics.median(map(sum, kafka_s)) * per, statistics.median(map(sum, sqlite_s)) * per
    k_read = statistics.median(r for r, _ in kafka_s) * per
    chunks = -(-len(data) // chunk)
    return {"kafka_state_restore_seconds_per_million_waiting": figure(
        k_med, "seconds per 1 M waiting predictions (wall, median)", s_med,
        "the same bytes restored from the local SQLite StateStore (median)",
        waiting=n, snapshot_bytes=len(data), chunks=chunks, chunk_bytes=chunk,
        value_runs=[round(sum(x) * per, 3) for x in kafka_s], baseline_runs=[round(sum(x) * per, 3) for x in sqlite_s],
        # where the time goes: reading the bytes (changelog / SQLite), then the same rebuild
        read_seconds_runs=[round(r * per, 3) for r, _ in kafka_s],
        baseline_read_seconds_runs=[round(r * per, 3) for r, _ in sqlite_s],
        rebuild_seconds_runs=[round(b * per, 3) for _, b in kafka_s + sqlite_s],
        changelog_read_mb_per_second=round(len(data) / 1e6 / (k_read / per), 1),
        snapshot_build_seconds_per_million=round(to_bytes_seconds * per, 3),
        changelog_write_seconds_per_million=round(write_seconds * per, 3),
        # one snapshot of this partition per checkpoint (when it moved): its share of the
        # default interval is what the join size costs the Kafka backend
        checkpoint_share_at_default_interval=round((to_bytes_seconds + write_seconds) / CHECKPOINT_INTERVAL, 3))}


#: what --only selects, in the order they run (all but beyond_drift_cost by default: the
#: throughput section includes it)
DEFAULT_SECTIONS = ("throughput", "checkpoint", "memory", *KAFKA_SECTIONS)
SECTIONS = ("throughput", "beyond_drift_cost", *DEFAULT_SECTIONS[1:])


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, figures not meaningful")
    ap.add_argument("--skip-kafka", action="store_true", help="leave out the Apache Kafka part")
    ap.add_argument("--only", default="", help="comma-separated sections to run, of: " + ", ".join(SECTIONS))
    ap.add_argument("--profile", action="store_true", help="cProfile the end-to-end loop; hot spots to stderr")
    ap.add_argument("--kafka-records", type=int, default=0,
                    help="records produced for the Kafka sections (default 300000; the README's longer "
                         "state-backend figure uses 1200000)")
    ap.add_argument("--memory-worker", choices=["pipeline", "dict", "dict-traced"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_worker:
        res = memory_worker(args.memory_worker, args.n)
        print(json.dumps(res))
        return res
    only = tuple(x.strip() for x in args.only.split(",") if x.strip()) or DEFAULT_SECTIONS
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(unknown)}; the sections are {', '.join(SECTIONS)}")
    quiet = logging.getLogger("driftline")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # alerts on a synthetic stream are not news
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.kafka_records:
        sizes["kafka_records"] = args.kafka_records
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        result: dict[str, Any] = {}
        if "throughput" in only:
            result.update(throughput(tmp, sizes, args.profile))  # includes beyond_drift_cost
        elif "beyond_drift_cost" in only:
            result["beyond_drift_cost"] = beyond_drift_cost(tmp, sizes, args.profile)
        if "checkpoint" in only:
            result.update(checkpoint_cost(tmp, sizes))
        if "memory" in only:
            result.update(memory(sizes))
        kafka_sections = tuple(sec for sec in KAFKA_SECTIONS if sec in only)
        if kafka_sections and args.skip_kafka:
            result.update(kafka_skipped("--skip-kafka", kafka_sections))
        elif kafka_sections:
            result.update(kafka(tmp, sizes, args.profile, kafka_sections))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        quiet.setLevel(level)  # main() also runs in-process (tests): leave logging as found
    log(f"done in {time.perf_counter() - t0:.0f} s")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
