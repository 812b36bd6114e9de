"""``driftline replay``: the pipeline on files, without Kafka (event time drives the panes).

Predictions and labels are read from JSON Lines, merged in event-time order (labels
after predictions at equal times), fed in micro-batches to the same pipeline the daemon
runs, and every evaluation and alert transition is written as one JSON line. Users
backtest rules with it; tests compare it with a Kafka run.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def _event_time(obj, path: list[str], unit: str) -> float:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    if isinstance(obj, bool) or obj is None:
        return 0.0
    if unit == "iso" and isinstance(obj, str):
        t = dt.datetime.fromisoformat(obj.replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(obj, int | float):
        return float(obj) / 1000.0 if unit == "ms" else float(obj)
    return 0.0


def _timed(kind: int, lines: Iterable[bytes], path: list[str], unit: str) -> Iterator[tuple[float, int, int, bytes]]:
    """(event time, stream, line number, raw line): the merge key of the two files."""
    dec = msgspec.json.Decoder()
    for n, line in enumerate(lines):
        try:
            t = _event_time(dec.decode(line), path, unit)
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
    pipeline = pipeline or Pipeline(config, load_profiles(config), labels_expected=bool(labels))
    decoder = RecordDecoder(config.fields, config.models)
    f = config.fields
    streams = [_timed(0, _lines(predictions), f.timestamp.split("."), f.timestamp_unit)]
    if labels:
        streams.append(_timed(1, _lines(labels), f.label_timestamp.split("."), f.timestamp_unit))
    merged = heapq.merge(*streams, key=lambda r: (r[0], r[1], r[2]))
    kinds = ("predictions", "labels")
    chunk: list[tuple[int, bytes]] = []

    def flush() -> None:
        # A time-ordered chunk is fed as one predictions batch, then one labels batch, like
        # a Kafka poll returning both topics: the pipeline's result does not depend on the
        # interleaving inside a chunk (see monitor.pipeline).
        for k in (0, 1):
            values = [line for kind, line in chunk if kind == k]
            if values:
                for fl in ingest(pipeline, decoder, kinds[k], 0, values):
                    print(f"replay: {kinds[k]} record rejected: {fl.reason}", file=sys.stderr)
        pipeline.advance()
        write_output(pipeline.drain(), out)
        chunk.clear()

    for _, kind, _, line in merged:
        chunk.append((kind, line))
        if len(chunk) >= batch_size:
            flush()
    flush()
    pipeline.flush_all()
    write_output(pipeline.drain(), out)
    return pipeline


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.runtime import tune_gc

    config = load_config(args.config)
    tune_gc()
    with open(args.out, "w") as f:
        replay(config, args.predictions, args.labels, f)
    print(f"replay: wrote {args.out}")
    return 0
