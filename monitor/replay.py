"""``driftline replay``: the pipeline on files, without Kafka (event time drives the panes).

Predictions and labels are read from JSON Lines, merged in event-time order (labels
after predictions at equal times), fed in micro-batches to the same pipeline the daemon
runs, and every evaluation and alert transition is written as one JSON line. Users
backtest rules with it; tests compare it with a Kafka run.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from monitor.decode import RecordDecoder
from monitor.events import AlertEvent
from monitor.ingest import ingest
from monitor.pipeline import Output, Pipeline
from monitor.profiles import load_profiles

__all__ = ["replay", "main", "transition_record"]


def _lines(path: str | Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def _timed(kind: int, lines: Iterable[bytes], path: str) -> Iterator[tuple[float, int, int, bytes]]:
    dec = msgspec.json.Decoder()
    for n, line in enumerate(lines):
        try:
            obj = dec.decode(line)
            t = obj.get("timestamp") if isinstance(obj, dict) else None
            t = float(t) if isinstance(t, int | float) else 0.0
        except (msgspec.DecodeError, TypeError, ValueError):
            t = 0.0  # the decoder reports it properly; keep its place at the front
        yield t, kind, n, line


def transition_record(t: AlertEvent) -> dict:
    d = msgspec.to_builtins(t)
    return {"type": "alert", "key": t.key, **d}


def write_output(out: Output, f: IO[str]) -> None:
    for e in out.evaluations:
        f.write(json.dumps(e.record(), sort_keys=True) + "\n")
    for t in out.transitions:
        f.write(json.dumps(transition_record(t), sort_keys=True) + "\n")


def replay(config, predictions: str | Path, labels: str | Path | None, out: IO[str], batch_size: int = 1000,
           pipeline: Pipeline | None = None) -> Pipeline:
    """Run the pipeline over the files; writes evaluation and alert lines to ``out``."""
    pipeline = pipeline or Pipeline(config, load_profiles(config))
    decoder = RecordDecoder(config.fields, config.models)
    streams = [_timed(0, _lines(predictions), str(predictions))]
    if labels:
        streams.append(_timed(1, _lines(labels), str(labels)))
    merged = heapq.merge(*streams, key=lambda r: (r[0], r[1], r[2]))
    kinds = ("predictions", "labels")
    run: list[bytes] = []
    run_kind = 0
    bad = 0

    def flush() -> None:
        nonlocal bad
        if run:
            failures = ingest(pipeline, decoder, kinds[run_kind], 0, run)
            for fl in failures:
                bad += 1
                print(f"replay: {kinds[run_kind]} record rejected: {fl.reason}", file=sys.stderr)
            pipeline.advance()
            write_output(pipeline.drain(), out)
            run.clear()

    for _, kind, _, line in merged:
        if kind != run_kind or len(run) >= batch_size:
            flush()
            run_kind = kind
        run.append(line)
    flush()
    pipeline.flush_all()
    write_output(pipeline.drain(), out)
    return pipeline


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    with open(args.out, "w") as f:
        replay(config, args.predictions, args.labels, f)
    print(f"replay: wrote {args.out}")
    return 0
