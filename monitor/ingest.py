"""One micro-batch of raw records from one partition: decode, then feed the pipeline."""

from __future__ import annotations

from monitor.decode import Failure, RecordDecoder
from monitor.metrics import Metrics
from monitor.pipeline import Pipeline
from monitor.security import add_violations

__all__ = ["ingest"]


def ingest(pipeline: Pipeline, decoder: RecordDecoder, kind: str, partition: int, values: list[bytes],
           metrics: Metrics | None = None, topic: str = "") -> list[Failure]:
    """Decode ``values`` (``kind`` is "predictions" or "labels") and add them to the pipeline.

    Returns the records that failed decoding (index into ``values`` and reason) so the
    caller can dead-letter them; everything else is in the pipeline's state afterwards.
    """
    if kind == "predictions":
        batches, failures = decoder.decode_predictions(values)
        for batch in batches.values():
            pipeline.add_predictions(partition, batch)
        n_ok = sum(len(b) for b in batches.values())
        if failures:
            add_violations(pipeline, partition, failures)  # schema_violation_rate per model
    else:
        batch, failures = decoder.decode_labels(values)
        pipeline.add_labels(partition, batch)
        n_ok = len(batch)
    if metrics is not None:
        metrics.records_consumed.labels(topic or kind).inc(len(values))
        metrics.records_decoded.labels(topic or kind).inc(n_ok)
    return failures
