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
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from detectors.reference import ReferenceProfile
from monitor.metrics import Metrics
from monitor.panes import Pane
from monitor.pipeline import ModelRuntime, Output

__all__ = ["ModelStage", "pane_header", "pane_message", "PANES_VERSION"]

log = logging.getLogger("driftline.stage2")

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()

PANES_VERSION = 1
STAGE_VERSION = 1


def pane_header(model: str, source: int, n_sources: int, sealed: float, active: bool) -> dict[str, Any]:
    """A panes record without its panes: whose they are and the source's progress."""
    return {"kind": "panes", "version": PANES_VERSION, "model": model, "source": source, "n_sources": n_sources,
            "sealed": sealed, "active": active}


def pane_message(model: str, source: int, n_sources: int, panes: list[Pane], sealed: float, active: bool,
                 dicts: list[dict] | None = None) -> bytes:
    """One record of the panes topic: a source partition's newly sealed panes of a model
    (unsealed outcomes kept, so the owner orders all sources' outcomes together), and the
    source's progress once they are in. ``dicts``: the panes' ``to_dict()`` when made already."""
    return _pack.encode({**pane_header(model, source, n_sources, sealed, active),
                         "panes": dicts if dicts is not None else [p.to_dict() for p in panes]})


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
        #: model -> source partition -> (sealed through, active)
        self.sources: dict[str, dict[int, tuple[float, bool]]] = {}
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
            if s.get("kind") != "model_stage" or s.get("version") != STAGE_VERSION:
                raise ValueError(f"model {name}: changelog snapshot is not a version-{STAGE_VERSION} model_stage "
                                 f"(kind={s.get('kind')!r}, version={s.get('version')!r})")
            m.restore(s["runtime"])
            self.sources[name] = {int(p): (float(v[0]), bool(v[1])) for p, v in s["sources"].items()}
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
                             "sources": {str(p): [s, a] for p, (s, a) in self.sources[name].items()},
                             "n_sources": self.n_sources[name]})

    # -- processing ----------------------------------------------------------------------------
    def accept(self, value: bytes, where: str, local: tuple[dict, list[Pane]] | None = None) -> str:
        """Merge one panes-topic record; returns its model. ``where`` names the record
        (topic[partition]@offset) in errors. ``local``: the (header, panes) this process
        published in that record itself, taken as they are instead of decoded again (the
        record's bytes are their ``to_dict()``, which restores exactly)."""
        if local is not None:
            msg, panes = local
        else:
            msg, panes = _unpack.decode(value), None
            if not isinstance(msg, dict) or msg.get("kind") != "panes" or msg.get("version") != PANES_VERSION:
                raise ValueError(f"{where}: not a version-{PANES_VERSION} panes record")
        name = msg["model"]
        m = self.runtimes.get(name)
        if m is None:
            raise ValueError(f"{where}: panes of model {name!r}, which this process does not own "
                             "(a model renamed or removed while its panes were in flight?)")
        for pane in panes if panes is not None else (Pane.from_dict(m.layout, d) for d in msg["panes"]):
            if m.next_start is not None and pane.start < m.next_start:
                log.warning("%s: model %s: pane %s of source partition %s came after its window was evaluated "
                            "(through %s); its %d events count as late", where, name, pane.start, msg["source"],
                            m.next_start, pane.n_predictions + pane.n_joined)
            m.accept_sealed(pane)
        self.sources[name][int(msg["source"])] = (float(msg["sealed"]), bool(msg["active"]))
        self.n_sources[name] = max(self.n_sources[name], int(msg["n_sources"]))
        self.dirty.add(name)
        return name

    def advance(self) -> Output:
        """Evaluate every pane all active sources have sealed; returns what was produced."""
        produced = Output()
        for name, m in self.runtimes.items():
            src = self.sources[name]
            n = self.n_sources[name]
            if n == 0 or any(p not in src for p in range(n)):
                continue  # a source that never reported may still hold data for these panes
            active = [s for s, a in src.values() if a]
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
