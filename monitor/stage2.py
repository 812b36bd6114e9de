"""Stage 2 over Kafka: the per-model view built from every input partition's partial panes.

With ``state.backend = "kafka"`` stage 1 (any replica, per input partition) publishes each
sealed partial pane, unsealed outcomes included, to the panes topic keyed by model, plus
its progress: how far that source partition has sealed and whether it is active. The
model's one owner (a consumer group on the panes topic) merges the partial panes of all
sources, which is exact because sketches add, and evaluates the pane ``[t, t + pane)``
once every active source has sealed past it, in pane order. This is the rule the
one-process pipeline applies to its own partitions, so a model's windows and alerts are
the same whatever the number of replicas and however the input is keyed.

A source that has not reported yet holds the model back (its owner may not have started);
one that reported ``active = false`` (no data, or idle for ``scheduler.idle_close_seconds``)
does not.

Each source numbers its records for a model (``seq``, 1, 2, ... across owners of the source:
the number is in the source partition's snapshot), and the model's state keeps, per source,
the seq of the last record merged. A record at or below it is skipped, on its Kafka headers
alone. That makes two things exact: a process that owns both a source partition and the
model merges the source's panes directly as it seals them (:meth:`ModelStage.merge_local`,
no round trip through the topic) once its stage has merged every record the source
published before (the seqs match); and an owner that re-reads records its snapshot already
holds (after a roll-back, monitor.kstate) skips them.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from detectors.reference import ReferenceProfile
from monitor.metrics import Metrics
from monitor.panes import Pane
from monitor.pipeline import ModelRuntime, Output

__all__ = ["ModelStage", "encode_pane", "pane_message", "pane_headers", "PANES_VERSION"]

log = logging.getLogger("driftline.stage2")

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()

#: 2: records carry ``seq`` (also as the Kafka header ``driftline.seq``, with the source
#: partition as ``driftline.source``); 1: without, merged unconditionally
PANES_VERSION = 2
#: 2: each source's progress holds the ``seq`` of the last record merged from it
STAGE_VERSION = 2
SEQ_HEADER, SOURCE_HEADER = "driftline.seq", "driftline.source"


def encode_pane(pane: Pane) -> bytes:
    """A sealed partial pane as it travels on the panes topic (msgpack of ``to_dict()``),
    encoded once: the record embeds these bytes as they are."""
    return _pack.encode(pane.to_dict())


def pane_message(model: str, source: int, n_sources: int, panes: list[Pane | bytes], sealed: float, active: bool,
                 seq: int = 0) -> bytes:
    """One record of the panes topic: a source partition's newly sealed panes of a model
    (unsealed outcomes kept, so the owner orders all sources' outcomes together; each a
    :class:`Pane` or its :func:`encode_pane` bytes), and the source's progress once they are
    in. ``seq`` numbers the source's records for the model (1, 2, ...), so an owner that has
    merged a record, or its panes directly (monitor.kstate), skips it when it comes again."""
    return _pack.encode({"kind": "panes", "version": PANES_VERSION, "model": model, "source": source,
                         "n_sources": n_sources, "sealed": sealed, "active": active, "seq": seq,
                         "panes": [msgspec.Raw(p if isinstance(p, bytes) else encode_pane(p)) for p in panes]})


def pane_headers(source: int, seq: int) -> list[tuple[str, bytes]]:
    """The Kafka headers of a panes record: enough to skip it without decoding its panes."""
    return [(SOURCE_HEADER, str(source).encode()), (SEQ_HEADER, str(seq).encode())]


def seq_of(headers) -> tuple[int, int] | None:
    """(source, seq) from a panes record's headers; None for a record without them."""
    if not headers:
        return None
    h = dict(headers)
    if SEQ_HEADER not in h or SOURCE_HEADER not in h:
        return None
    return int(h[SOURCE_HEADER]), int(h[SEQ_HEADER])


class ModelStage:
    """The models this process owns in stage 2: runtimes, sources' progress, output queue."""

    def __init__(self, config, profiles: dict[str, ReferenceProfile | None], metrics: Metrics | None = None,
                 reports: bool = False):
        self.config = config
        self.profiles = profiles
        self.metrics = metrics
        r = config.reports
        self.report_size = r.sample_size if (r.enabled and reports) else 0
        self.index = {m.name: i for i, m in enumerate(config.models)}
        self.runtimes: dict[str, ModelRuntime] = {}
        #: model -> source partition -> (sealed through, active, seq of the last record merged)
        self.sources: dict[str, dict[int, tuple[float, bool, int]]] = {}
        self.n_sources: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.out = Output()

    # -- ownership --------------------------------------------------------------------------
    def own(self, name: str, data: bytes | None) -> ModelRuntime:
        """Take a model over, from its changelog snapshot (None: a model never evaluated)."""
        cfg = self.config.model(name)
        m = ModelRuntime(cfg, self.index[name], self.profiles.get(name), self.report_size)
        m.metrics = self.metrics
        self.sources[name] = {}
        self.n_sources[name] = 0
        if data is not None:
            s = _unpack.decode(data)
            if s.get("kind") != "model_stage" or s.get("version") not in (1, STAGE_VERSION):
                raise ValueError(f"model {name}: changelog snapshot is not a version-1/{STAGE_VERSION} model_stage "
                                 f"(kind={s.get('kind')!r}, version={s.get('version')!r})")
            m.restore(s["runtime"])
            # version 1 kept no seq: every record after its panes offset is merged, as then
            self.sources[name] = {int(p): (float(v[0]), bool(v[1]), int(v[2]) if len(v) > 2 else 0)
                                  for p, v in s["sources"].items()}
            self.n_sources[name] = int(s["n_sources"])
        self.runtimes[name] = m
        return m

    def release(self, name: str) -> None:
        """Give a model up (its panes partition moved): what it produced since the last
        checkpoint is dropped too, or this process would commit windows that the next owner,
        resuming from that checkpoint, evaluates again."""
        o = self.out
        self.out = Output([e for e in o.evaluations if e.model != name], [t for t in o.transitions if t.model != name],
                          [r for r in o.retrains if r["model"] != name], [j for j in o.reports if j["model"] != name])
        self.runtimes.pop(name, None)
        self.sources.pop(name, None)
        self.n_sources.pop(name, None)
        self.dirty.discard(name)

    def to_bytes(self, name: str) -> bytes:
        return _pack.encode({"kind": "model_stage", "version": STAGE_VERSION,
                             "runtime": self.runtimes[name].to_bytes(),
                             "sources": {str(p): list(v) for p, v in self.sources[name].items()},
                             "n_sources": self.n_sources[name]})

    # -- processing ----------------------------------------------------------------------------
    def seq(self, name: str, source: int) -> int:
        """The seq of the last record of ``source`` this stage has merged for ``name`` (0: none)."""
        v = self.sources.get(name, {}).get(source)
        return 0 if v is None else v[2]

    def accept(self, value: bytes, where: str, headers=None, key: bytes | None = None) -> str | None:
        """Merge one panes-topic record; returns its model, or None when the record was
        skipped: its ``seq`` is not past the last merged from its source (merged already,
        as a record or as panes taken directly). ``where`` names the record
        (topic[partition]@offset) in errors; ``headers`` and ``key`` (the model's name): the
        record's, which let a skipped record go undecoded."""
        known = seq_of(headers)
        msg = None
        if known is None or key is None:
            msg = self._decode(value, where)
            name, known = msg["model"], (int(msg["source"]), int(msg.get("seq", 0)))
        else:
            name = key.decode()
        if name not in self.runtimes:
            raise ValueError(f"{where}: panes of model {name!r}, which this process does not own "
                             "(a model renamed or removed while its panes were in flight?)")
        source, seq = known
        if seq and seq <= self.seq(name, source):
            return None
        if msg is None:
            msg = self._decode(value, where)
        m = self.runtimes[name]
        for d in msg["panes"]:
            self._accept_pane(m, Pane.from_dict(m.layout, d), where, source)
        self.sources[name][source] = (float(msg["sealed"]), bool(msg["active"]), seq)
        self.n_sources[name] = max(self.n_sources[name], int(msg["n_sources"]))
        self.dirty.add(name)
        return name

    @staticmethod
    def _decode(value: bytes, where: str) -> dict:
        msg = _unpack.decode(value)
        if not isinstance(msg, dict) or msg.get("kind") != "panes" or msg.get("version") not in (1, PANES_VERSION):
            raise ValueError(f"{where}: not a version-1/{PANES_VERSION} panes record")
        return msg

    def _accept_pane(self, m: ModelRuntime, pane: Pane, where: str, source: int) -> None:
        if m.next_start is not None and pane.start < m.next_start:
            log.warning("%s: model %s: pane %s of source partition %s came after its window was evaluated "
                        "(through %s); its %d events count as late", where, m.cfg.name, pane.start, source,
                        m.next_start, pane.n_predictions + pane.n_joined)
        m.accept_sealed(pane)

    def merge_local(self, name: str, source: int, panes: list[Pane], n_sources: int) -> None:
        """Panes a source partition of this process sealed, merged directly (not through
        the topic; their record comes back later with a seq this stage then skips). The
        stage takes the pane objects over."""
        m = self.runtimes[name]
        for pane in panes:
            self._accept_pane(m, pane, f"source partition {source} (local)", source)
        self.n_sources[name] = max(self.n_sources[name], n_sources)
        self.dirty.add(name)

    def set_progress(self, name: str, source: int, sealed: float, active: bool, seq: int | None = None) -> bool:
        """A local source's progress (``seq``: of its record just published, else kept);
        True when it changed."""
        old = self.sources[name].get(source)
        new = (float(sealed), bool(active), (old[2] if old is not None else 0) if seq is None else int(seq))
        if new == old:
            return False
        self.sources[name][source] = new
        self.dirty.add(name)
        return True

    def advance(self) -> Output:
        """Evaluate every pane all active sources have sealed; returns what was produced."""
        produced = Output()
        for name, m in list(self.runtimes.items()):  # a listener may release one meanwhile
            src = self.sources.get(name)
            n = self.n_sources.get(name, 0)
            if src is None:
                continue  # released since the copy above
            if n == 0 or any(p not in src for p in range(n)):
                continue  # a source that never reported may still hold data for these panes
            active = [s for s, a, _ in src.values() if a]
            if active:  # the one-process rule (Pipeline.advance) over the reported sources
                m.advance(min(active), self.metrics, produced)
        self.out.evaluations += produced.evaluations
        self.out.transitions += produced.transitions
        self.out.retrains += produced.retrains
        self.out.reports += produced.reports
        return produced

    def drain(self) -> Output:
        out, self.out = self.out, Output()
        return out

    def summaries(self) -> list[dict[str, Any]]:
        return [{"name": n, "sources": len(self.sources[n]), "n_sources": self.n_sources[n]}
                for n in sorted(self.runtimes)]
