"""The processing core shared by ``run`` (Kafka) and ``replay`` (files).

Stage 1, per input partition: decoded predictions go into event-time panes and wait in
the label join; labels complete them (joined outcomes go into the pane of the label's
event time). A partition's watermark is the smaller of its prediction and label maximum
event times (the label side counts once labels were seen there) minus the model's
allowed lateness; panes that end at or before it are sealed and handed to stage 2.

Stage 2, per model: a window pane for ``[t, t + pane)`` is evaluated once every active
partition has sealed it, so the window's content never depends on how the partitions'
records interleaved. The window is a running sum of the last ``window_panes`` panes.

Because both stages depend only on each partition's own record order and on event time,
a replay of the same input, or a run killed and resumed from a checkpoint, produces
exactly the same evaluations and alert transitions as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from detectors.change_detector import detector_from_dict, detector_registry
from detectors.reference import ReferenceProfile
from monitor.config import (
    ATTRIBUTION_METRICS,
    ESTIMATED_METRICS,
    MULTIVARIATE_METRICS,
    SUBGROUP_METRICS,
)
from monitor.decode import LabelBatch, PredictionBatch
from monitor.evaluate import Evaluator, layout_from_profile
from monitor.events import AlertEvent
from monitor.join import JoinTable
from monitor.metrics import Metrics
from monitor.panes import Layout, Pane, window_sample
from monitor.policy import Evaluation, RulePolicy

__all__ = ["Pipeline", "ModelRuntime", "PartitionState", "Output"]

log = logging.getLogger("driftline.pipeline")

_pack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder()

# prediction join payload: ts; f64 [score]; f32 [model, predicted, scope codes...]
_P_MODEL, _P_PRED, _P_SCOPES = 0, 1, 2


_ERROR_VIEW, _SELECTION_VIEW = ("error", "above"), ("selection", "either")
#: Which slice ranking explains an alert on a metric: error rates (performance, error-based
#: fairness, detectors on the error stream) or selection rates (prediction-based fairness).
_SLICE_VIEW: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier", "ece",
                     "equal_opportunity_difference", "equalized_odds_difference",
                     "predictive_parity_difference",
                     "adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w", "cusum"), _ERROR_VIEW),
    **dict.fromkeys(("demographic_parity_difference", "disparate_impact_ratio", "subgroup_selection_gap"),
                    _SELECTION_VIEW),
}  # subgroup_error_gap: the view its evaluator judged (Evaluator.error_view), see _with_slices


#: Evaluations an evidence report lists beside the alert: the label-free and multivariate views.
_FINDINGS = frozenset(ESTIMATED_METRICS + MULTIVARIATE_METRICS + ATTRIBUTION_METRICS + SUBGROUP_METRICS)


@dataclass
class Output:
    """What processing produced since the last drain (written by the next checkpoint)."""

    evaluations: list[Evaluation] = field(default_factory=list)
    transitions: list[AlertEvent] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)  # evidence to write, off the loop


class ModelRuntime:
    """Stage-2 state of one model: reference, window, detectors, policy, warm-up buffer."""

    def __init__(self, cfg, index: int, profile: ReferenceProfile | None, report_size: int = 0):
        self.cfg = cfg
        self._children: dict[tuple, Any] = {}  # memoised metric series (_series)
        # rows sampled per window for evidence reports (reports.sample_size; 0: none)
        self.report_size = report_size
        self.metrics: Metrics | None = None  # set by the Pipeline
        self.index = index
        self.pane = float(cfg.pane_seconds)
        self.profile: ReferenceProfile | None = None
        self.layout: Layout | None = None
        self.evaluator: Evaluator | None = None
        self.warmup: list[dict[str, np.ndarray]] = []
        self.warmup_n = 0
        self.window: Pane | None = None
        self.panes: deque[Pane] = deque()
        self.pending: dict[float, Pane] = {}
        self.next_start: float | None = None
        self.empty_run = 0  # consecutive evaluated panes without data (the window drains)
        self.policy = RulePolicy(cfg.name, cfg.rules)
        reg = detector_registry()
        self.detectors = {r.name: reg[r.metric]() for r in cfg.rules if r.metric in reg}
        self.labels_since_retrain = 0
        if profile is not None:
            self.set_profile(profile)

    @property
    def ready(self) -> bool:
        return self.layout is not None

    @property
    def slice_columns(self) -> int:
        """Join payload columns of this model's packed slice codes: exact once the reference
        is read, else the bound of three codes per column (first-fit of codes of at most 8
        bits into 24-bit words leaves no word but the last with fewer than three)."""
        sl = self.cfg.slices
        if not sl.enabled or self.cfg.task == "regression":
            return 0
        if self.layout is not None:
            return self.layout.slicing.n_columns if self.layout.slicing is not None else 0
        n_dims = len(sl.dimensions) or len(self.cfg.features) + len(self.cfg.sensitive)
        return -(-n_dims // 3)

    def set_profile(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        per_pane = -(-self.report_size // self.cfg.window_panes) if self.report_size else 0
        self.layout = layout_from_profile(self.cfg, profile, sample_per_pane=per_pane)
        self.evaluator = Evaluator(self.cfg, profile, self.layout)
        self.window = Pane(self.layout, 0.0)

    def pane_start(self, ts: np.ndarray) -> np.ndarray:
        return np.floor(ts / self.pane) * self.pane

    # -- warm-up reference ----------------------------------------------------------------
    def add_warmup(self, b: PredictionBatch) -> PredictionBatch | None:
        """Buffer predictions until ``warmup_events``; returns the rows past the warm-up."""
        need = self.cfg.warmup_events - self.warmup_n
        take = min(need, len(b))
        cols: dict[str, np.ndarray] = {}
        for j, f in enumerate(self.layout_numeric()):
            cols[f] = b.numeric[:take, j]
        for j, f in enumerate(self.layout_categorical()):
            cols[f] = b.categorical[j][:take]
        for j, a in enumerate(self.cfg.sensitive):
            cols[a] = b.sensitive[j][:take]
        if self.cfg.task != "regression":
            cols["__score__"] = b.score[:take]
        if b.attributions is not None:
            for j, f in enumerate(self.cfg.features):
                cols[f"__attr__{f.name}"] = b.attributions[:take, j]
        self.warmup.append(cols)
        self.warmup_n += take
        if self.warmup_n >= self.cfg.warmup_events:
            self._promote_warmup()
            if take < len(b):
                return _slice_batch(b, slice(take, None))
        return None

    def layout_numeric(self) -> list[str]:
        return [f.name for f in self.cfg.features if f.type == "numeric"]

    def layout_categorical(self) -> list[str]:
        return [f.name for f in self.cfg.features if f.type == "categorical"]

    def _promote_warmup(self) -> None:
        has_score = self.cfg.task != "regression" and any(
            np.isfinite(c["__score__"]).any() for c in self.warmup if "__score__" in c
        )
        profile = ReferenceProfile.from_batches(
            self.warmup,
            numeric=self.layout_numeric(),
            categorical=self.layout_categorical(),
            score="__score__" if has_score else None,
            sensitive=list(self.cfg.sensitive),
            task=self.cfg.task,
            n_bins=self.cfg.n_bins,
            decision_threshold=self.cfg.decision_threshold,
            n_components=self.cfg.multivariate.n_components if self.cfg.multivariate.enabled else None,
            attributions={f.name: f"__attr__{f.name}" for f in self.cfg.features}
            if self.cfg.attributions.enabled and all(f"__attr__{f.name}" in c for c in self.warmup for f in self.cfg.features)
            else None,
        )
        log.info("model %s: warm-up reference built from %d predictions", self.cfg.name, self.warmup_n)
        self.warmup = []
        self.set_profile(profile)

    # -- stage 2 ----------------------------------------------------------------------------
    def accept_sealed(self, pane: Pane) -> None:
        if self.next_start is not None and pane.start < self.next_start:
            # a partition that joined late (rebalance, back from idle) sealed a pane stage 2
            # has already evaluated: its events are late for every window; count, not keep
            if self.metrics is not None:
                self.metrics.late_events.labels(self.cfg.name).inc(pane.n_predictions + pane.n_joined)
            return
        have = self.pending.get(pane.start)
        if have is None:
            self.pending[pane.start] = pane
        else:
            have.merge(pane)

    def advance(self, sealed_through: float, metrics: Metrics | None, out: Output) -> None:
        """Evaluate every pane that all active partitions have sealed (in pane order)."""
        if not self.ready:
            return
        if self.next_start is None:
            if not self.pending:
                return
            self.next_start = min(self.pending)
        while self.next_start + self.pane <= sealed_through:
            start = self.next_start
            pane = self.pending.pop(start, None)
            if pane is None:
                if self.empty_run >= self.cfg.window_panes:
                    # the window has drained: no more windows to evaluate until data comes;
                    # jump (to the next pane with data, or to the end of the sealed time).
                    # Which windows are evaluated depends only on where data is, never on
                    # how far the watermark moved per call.
                    if not self.pending and math.isinf(sealed_through):
                        break  # after flush_all: nothing left, and no end to jump to
                    self.next_start = min(self.pending) if self.pending else sealed_through
                    continue
                pane = Pane(self.layout, start)
                self.empty_run += 1
            else:
                self.empty_run = 0
            pane.seal()
            self._add_pane(pane, metrics, out)
            if self.empty_run >= self.cfg.window_panes:
                self._clear_window()  # drop float residue of the subtractions
            self.next_start = start + self.pane

    def _clear_window(self) -> None:
        self.panes.clear()
        self.window = Pane(self.layout, 0.0)

    def _add_pane(self, pane: Pane, metrics: Metrics | None, out: Output) -> None:
        self.window.merge(pane, samples=False)
        self.panes.append(pane)
        while len(self.panes) > self.cfg.window_panes:
            self.window.subtract(self.panes.popleft())
        self.window.errors = np.zeros(0)  # the window keeps sums; errors feed detectors per pane
        self.labels_since_retrain += pane.n_joined
        ws = self.panes[0].start
        we = pane.start + self.pane
        evals = self.evaluator.evaluate(self.window, ws, we, pane=pane)
        for name, det in self.detectors.items():
            hits = det.update_many(pane.errors) if pane.errors.size else np.zeros(0, dtype=np.int64)
            rule = next(r for r in self.cfg.rules if r.name == name)
            # scope = the rule's name: two rules may run the same detector with other settings
            evals.append(Evaluation(self.cfg.name, rule.metric, name, float(len(hits)), ws, we, int(pane.errors.size),
                                    details={"rule": name}))
        transitions = self.policy.apply(evals, ws, we)
        if any(t.state == "firing" for t in transitions):
            transitions = self._with_slices(transitions)
        out.evaluations += evals
        if self.report_size and any(t.state == "firing" and t.seq == 1 for t in transitions):
            transitions = self._with_reports(transitions, out, evals)
        for t in transitions:
            if t.state == "firing" and "retrain" in t.actions:
                out.retrains.append({"model": self.cfg.name, "alert": t, "labels_since_last": self.labels_since_retrain})
        out.transitions += transitions
        if metrics is not None:
            self._export(metrics, evals, pane)

    def _with_slices(self, transitions: list[AlertEvent]) -> list[AlertEvent]:
        """Where it fails: a firing performance or fairness alert carries the slices of the
        window that contribute most to the drop (ranked once per window and view)."""
        ranked: dict[tuple[str, str], list[dict]] = {}
        result = []
        for t in transitions:
            view = _SLICE_VIEW.get(t.metric)
            if t.metric == "subgroup_error_gap":
                view = (self.evaluator.error_view, "above")  # the slices the rule judged
            if t.state == "firing" and view is not None and self.window.slices is not None:
                if view not in ranked:
                    ranked[view] = self.evaluator.top_slices(self.window, *view)
                if ranked[view]:
                    t = msgspec.structs.replace(t, details={**t.details, "slices": ranked[view],
                                                            "slices_by": view[0]})
            result.append(t)
        return result

    def _with_reports(self, transitions: list[AlertEvent], out: Output,
                      evals: list[Evaluation]) -> list[AlertEvent]:
        """New episodes get an evidence report (written off the poll loop) and its link."""
        current = window_sample(self.panes, self.report_size, with_keys=True)
        findings = [e.record() for e in evals if e.metric in _FINDINGS and e.value is not None]
        result = []
        for t in transitions:
            if t.state == "firing" and t.seq == 1 and current:
                out.reports.append({"model": self.cfg.name, "alert": t, "reference": self.profile.sample,
                                    "current": current, "findings": findings})
                t = msgspec.structs.replace(t, details={**t.details, "report": f"/api/reports/{t.id}.html"})
            result.append(t)
        return result

    def _series(self, metric, *labels: str):
        """``metric.labels(*labels)``, memoised: a window exports a few hundred series and
        prometheus_client validates the labels and takes a lock on every ``labels`` call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _export(self, m: Metrics, evals: list[Evaluation], pane: Pane) -> None:
        name = self.cfg.name
        series = self._series
        series(m.panes_closed, name).inc()
        series(m.evaluations, name).inc()
        series(m.window_events, name).set(self.window.n_predictions)
        drifted = 0
        for e in evals:
            if e.value is not None and not (isinstance(e.value, float) and math.isnan(e.value)):
                series(m.statistic, name, e.metric, e.scope).set(e.value)
            if e.ci_low is not None and e.ci_high is not None:
                series(m.statistic_ci, name, e.metric, e.scope, "low").set(e.ci_low)
                series(m.statistic_ci, name, e.metric, e.scope, "high").set(e.ci_high)
            if e.p_value is not None:
                series(m.statistic_p, name, e.metric, e.scope).set(e.p_value)
            if e.metric == "label_coverage" and e.value is not None:
                series(m.label_coverage, name).set(e.value)
        for r in self.cfg.rules:
            for e in evals:
                if e.metric == r.metric and "=" not in e.scope:
                    if r.warn is not None:
                        series(m.threshold, name, e.metric, e.scope, "warn").set(r.warn)
                    if r.alert is not None:
                        series(m.threshold, name, e.metric, e.scope, "alert").set(r.alert)
                    if r.scope == "feature" and e.status == "alert":
                        drifted += 1
        series(m.drifted_features, name).set(drifted)

    # -- state -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        state = {
            "kind": "model_runtime",
            "version": 1,
            "profile": None if self.profile is None or self.cfg.reference else self.profile.to_dict(),
            "warmup": [{k: _col(v) for k, v in c.items()} for c in self.warmup],
            "warmup_n": self.warmup_n,
            "panes": [p.to_dict() for p in self.panes],
            # the running window itself: its float sums differ in the last bits from a
            # fresh sum of the panes, and a restart must continue bit-for-bit
            "window": None if self.window is None else self.window.to_dict(),
            "pending": [p.to_dict() for p in self.pending.values()],
            "next_start": self.next_start,
            "empty_run": self.empty_run,
            "policy": self.policy.to_dict(),
            "detectors": {k: d.to_dict() for k, d in self.detectors.items()},
            "labels_since_retrain": self.labels_since_retrain,
            "traffic": self.evaluator.traffic.to_dict() if self.ready and self.evaluator.traffic else None,
        }
        return _pack.encode(state)

    def restore(self, data: bytes) -> None:
        s = _unpack.decode(data)
        if s.get("kind") != "model_runtime" or s.get("version") != 1:
            raise ValueError(f"model {self.cfg.name}: state blob is not a version-1 model_runtime")
        if s["profile"] is not None:
            self.set_profile(ReferenceProfile.from_dict(s["profile"]))
        self.warmup = [{k: _uncol(v) for k, v in c.items()} for c in s["warmup"]]
        self.warmup_n = s["warmup_n"]
        if self.ready:
            self.panes = deque(Pane.from_dict(self.layout, d) for d in s["panes"])
            self.window = Pane.from_dict(self.layout, s["window"]) if s.get("window") else Pane(self.layout, 0.0)
            self.pending = {p.start: p for p in (Pane.from_dict(self.layout, d) for d in s["pending"])}
        self.next_start = s["next_start"]
        self.empty_run = s.get("empty_run", 0)
        self.policy.load(s["policy"])
        for k, d in s["detectors"].items():
            if k in self.detectors:
                self.detectors[k] = detector_from_dict(d)
        self.labels_since_retrain = s["labels_since_retrain"]
        if self.ready and self.evaluator.traffic is not None and s.get("traffic"):
            self.evaluator.traffic.load(s["traffic"])


def _col(a: np.ndarray) -> dict:
    a = np.asarray(a)
    if a.dtype == object:
        return {"o": [None if v is None else str(v) for v in a]}
    return {"f": a.astype(np.float64).tobytes()}


def _uncol(d: dict) -> np.ndarray:
    if "o" in d:
        return np.array(d["o"], dtype=object)
    return np.frombuffer(d["f"], dtype=np.float64).copy()


def _slice_batch(b: PredictionBatch, s) -> PredictionBatch:
    return PredictionBatch(
        model=b.model, ids=b.ids[s], keys=b.keys[s], ts=b.ts[s], numeric=b.numeric[s],
        categorical=[c[s] for c in b.categorical], score=b.score[s], predicted=b.predicted[s],
        sensitive=[x[s] for x in b.sensitive], model_version=b.model_version[s] if b.model_version else [],
        attributions=None if b.attributions is None else b.attributions[s],
    )


class PartitionState:
    """Stage-1 state of one partition number (predictions[p] and labels[p] together)."""

    def __init__(self, partition: int, n_models: int, n_scopes: int, ttl: float, max_pending: int,
                 labels_expected: bool = True):
        self.partition = partition
        # With a labels topic, the label side holds the watermark back from the start (a
        # consumer may read minutes of predictions before its first label); it stops doing
        # so only when it has been idle for scheduler.idle_close_seconds (processing time).
        self.labels_expected = labels_expected
        self.labels_idle = False
        self.ttl = ttl
        self._f32_width = _P_SCOPES + n_scopes
        self.preds = JoinTable(1, self._f32_width, max_pending)
        self.labels = JoinTable(2, 1, max_pending)
        self.open: list[dict[float, Pane]] = [{} for _ in range(n_models)]
        self.sealed: list[float] = [-math.inf] * n_models
        self.pred_max = -math.inf
        self.label_max = -math.inf
        self.last_activity = time.monotonic()
        self.last_label_activity = self.last_activity
        self.idle = False

    def watermark(self) -> float:
        if not self.labels_expected or self.labels_idle:
            return self.pred_max
        return min(self.pred_max, self.label_max)

    def to_bytes(self) -> bytes:
        return _pack.encode({
            "kind": "partition_state",
            "version": 2,
            "preds": self.preds.to_bytes(),
            "labels": self.labels.to_bytes(),
            "open": [[p.to_dict() for p in panes.values()] for panes in self.open],
            "sealed": self.sealed,
            "pred_max": self.pred_max,
            "label_max": self.label_max,
        })

    def restore(self, data: bytes, models: list[ModelRuntime], max_pending: int) -> None:
        s = _unpack.decode(data)
        if s.get("kind") != "partition_state" or s.get("version") not in (1, 2):
            raise ValueError(f"partition {self.partition}: state blob is not a version-1/2 partition_state "
                             f"(kind={s.get('kind')!r}, version={s.get('version')!r})")
        self.preds = JoinTable.from_bytes(s["preds"], max_pending)
        if s["version"] == 1:
            # v1 kept the score in the float32 payload [model, score, predicted, scopes...]
            keys, ts, _, f32 = self.preds.rows()
            self.preds = JoinTable(1, f32.shape[1] - 1, max_pending, initial_capacity=2 * len(keys) + 16)
            self.preds.put(keys, ts, f32[:, 1:2].astype(np.float64), np.delete(f32, 1, axis=1))
        width = self.preds.f32.shape[1]
        if width > self._f32_width:
            # written with the pre-reference bound on slice columns: the codes' packing depends
            # on the layout only, so the columns past the exact width hold nothing
            keys, ts, f64, f32 = self.preds.rows()
            self.preds = JoinTable(1, self._f32_width, max_pending, initial_capacity=2 * len(keys) + 16)
            self.preds.put(keys, ts, f64, np.ascontiguousarray(f32[:, : self._f32_width]))
        elif width < self._f32_width:
            # written before slice codes rode the join: pad (0 = no codes, counted in no slice)
            keys, ts, f64, f32 = self.preds.rows()
            self.preds = JoinTable(1, self._f32_width, max_pending, initial_capacity=2 * len(keys) + 16)
            pad = np.zeros((len(keys), self._f32_width - width), dtype=np.float32)
            self.preds.put(keys, ts, f64, np.hstack([f32, pad]))
        self.labels = JoinTable.from_bytes(s["labels"], max_pending)
        self.open = [
            {d["start"]: Pane.from_dict(m.layout, d) for d in panes} if m.ready else {}
            for m, panes in zip(models, s["open"], strict=True)
        ]
        self.sealed = list(s["sealed"])
        self.pred_max = s["pred_max"]
        self.label_max = s["label_max"]


class Pipeline:
    """Stage 1 for every assigned partition and stage 2 for every model, in one process."""

    def __init__(self, config, profiles: dict[str, ReferenceProfile | None], metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic, reports: bool = False,
                 labels_expected: bool | None = None, stage2: bool = True):
        self.config = config
        # stage2=False (state.backend = "kafka"): sealed panes wait in ``sealed`` for the
        # checkpoint, which publishes them to the model's owner (monitor.kstate)
        self.stage2 = stage2
        self.sealed: dict[tuple[int, int], list[Pane]] = {}
        self.metrics = metrics
        self.clock = clock
        r = config.reports
        size = r.sample_size if (r.enabled and reports) else 0
        self.models = [ModelRuntime(m, i, profiles.get(m.name), size) for i, m in enumerate(config.models)]
        for m in self.models:
            m.metrics = metrics
        self.by_name = {m.cfg.name: m for m in self.models}
        self.n_scopes = max([len(m.sensitive) + len(m.intersections) for m in config.models] + [0])
        # join payload columns for slice codes (packed); sized for the widest model
        self.n_slice_cols = max([m.slice_columns for m in self.models] + [0])
        self.partitions: dict[int, PartitionState] = {}
        self.labels_expected = bool(config.topics.labels) if labels_expected is None else labels_expected
        self.out = Output()

    # -- partitions -------------------------------------------------------------------------
    def partition(self, p: int) -> PartitionState:
        st = self.partitions.get(p)
        if st is None:
            st = self.partitions[p] = self.new_partition_state(p)
        return st

    def new_partition_state(self, p: int) -> PartitionState:
        """An empty partition state (not registered: see :meth:`partition`)."""
        return PartitionState(p, len(self.models), self.n_scopes + self.n_slice_cols, self.config.join.ttl_seconds,
                              self.config.join.max_pending, labels_expected=self.labels_expected)

    def drop_partition(self, p: int) -> None:
        self.partitions.pop(p, None)
        for key in [k for k in self.sealed if k[1] == p]:
            del self.sealed[key]

    def take_sealed(self) -> dict[tuple[int, int], list[Pane]]:
        """(model index, partition) -> panes sealed since the last call (stage2=False)."""
        out, self.sealed = self.sealed, {}
        return out

    def progress(self, model_index: int, p: int) -> tuple[float, bool]:
        """How far partition ``p`` has sealed the model's panes, and whether it holds stage 2
        back (the one-process rule of :meth:`advance`: it has data and is not idle)."""
        st = self.partitions.get(p)
        if st is None:
            return -math.inf, False
        return st.sealed[model_index], bool(not st.idle and st.pred_max > -math.inf)


    # -- stage 1 ----------------------------------------------------------------------------
    def add_predictions(self, p: int, batch: PredictionBatch) -> None:
        m = self.by_name[batch.model]
        st = self.partition(p)
        st.last_activity, st.idle = self.clock(), False
        st.pred_max = max(st.pred_max, float(batch.ts.max()))
        if not m.ready:
            rest = m.add_warmup(batch)
            if rest is None:
                return
            batch = rest
        L = m.layout
        starts = m.pane_start(batch.ts)
        late = starts < st.sealed[m.index]
        if late.any():
            if self.metrics is not None:
                self.metrics.late_events.labels(m.cfg.name).inc(int(late.sum()))
            if late.all():
                return
            batch = _slice_batch(batch, ~late)
            starts = starts[~late]
        codes = L.group_codes(batch.sensitive) if L.sensitive else np.zeros((len(batch), 0), dtype=np.int64)
        scope_codes = L.scope_codes(codes) if L.sensitive else []
        cat_codes = L.category_codes(batch.categorical)
        slice_codes = (L.slicing.codes(batch.numeric, [np.maximum(c, -1) for c in cat_codes], codes)
                       if L.slicing is not None else None)
        one_pane = len(starts) and starts[0] == starts[-1] and (starts == starts[0]).all()
        for s in np.unique(starts):
            sel = slice(None) if one_pane else starts == s
            pane = st.open[m.index].get(float(s))
            if pane is None:
                pane = st.open[m.index][float(s)] = Pane(L, float(s))
            pane.add_predictions(batch.numeric[sel], batch.score[sel], [c[sel] for c in batch.categorical],
                                 batch.predicted[sel], [c[sel] for c in scope_codes], keys=batch.keys[sel],
                                 category_codes=[c[sel] for c in cat_codes],
                                 attributions=None if batch.attributions is None else batch.attributions[sel],
                                 slice_codes=None if slice_codes is None else slice_codes[sel])
        # join: labels that arrived first complete these predictions now
        f32 = np.full((len(batch), _P_SCOPES + self.n_scopes + self.n_slice_cols), -1.0, dtype=np.float32)
        f32[:, _P_MODEL] = m.index
        f32[:, _P_PRED] = batch.predicted
        for j, c in enumerate(scope_codes):
            f32[:, _P_SCOPES + j] = c
        if slice_codes is not None:
            at = _P_SCOPES + self.n_scopes
            f32[:, at : at + L.slicing.n_columns] = L.slicing.pack(slice_codes)
        found, lts, lf64, _ = st.labels.take(batch.keys)
        if found.any():
            self._outcomes(st, batch.keys[found], batch.ts[found], batch.score[found], f32[found], lts[found],
                           lf64[found, 1])
        wait = ~found
        # the score waits in float64: float32 would round regression predictions (24 bits)
        # and probabilities near 0 or 1 (a confident miss's log loss)
        accepted = st.preds.put(batch.keys[wait], batch.ts[wait], batch.score[wait].reshape(-1, 1), f32[wait])
        if self.metrics is not None and not accepted.all():
            self.metrics.join_expired.labels(m.cfg.name, "prediction", "duplicate_id").inc(int((~accepted).sum()))

    def add_labels(self, p: int, batch: LabelBatch) -> None:
        if not len(batch):
            return
        st = self.partition(p)
        st.last_activity, st.idle = self.clock(), False
        st.last_label_activity, st.labels_idle = st.last_activity, False
        st.label_max = max(st.label_max, float(batch.ts.max()))
        found, pts, pf64, pf32 = st.preds.take(batch.keys)
        if found.any():
            self._outcomes(st, batch.keys[found], pts[found], pf64[found, 0], pf32[found], batch.ts[found],
                           batch.label[found])
        wait = ~found
        if wait.any():
            n = int(wait.sum())
            f64 = np.column_stack([batch.ts[wait], batch.label[wait]])
            st.labels.put(batch.keys[wait], batch.ts[wait], f64, np.full((n, 1), -1.0))

    def _outcomes(self, st: PartitionState, keys, pred_ts, score, f32, label_ts, label) -> None:
        model_idx = f32[:, _P_MODEL].astype(np.int64)
        for mi in np.unique(model_idx):
            m = self.models[int(mi)]
            sel = model_idx == mi
            starts = m.pane_start(label_ts[sel])
            late = starts < st.sealed[m.index]
            if self.metrics is not None:
                self.metrics.joined.labels(m.cfg.name).inc(int(sel.sum()))
                self.metrics.label_delay.labels(m.cfg.name).observe(float(np.median(label_ts[sel] - pred_ts[sel])))
                if late.any():
                    self.metrics.late_events.labels(m.cfg.name).inc(int(late.sum()))
            k, pt, f, lt, y, sc = keys[sel], pred_ts[sel], f32[sel], label_ts[sel], label[sel], score[sel]
            scopes = [f[:, _P_SCOPES + j].astype(np.int64) for j in range(len(m.layout.scopes))]
            sl = m.layout.slicing
            at = _P_SCOPES + self.n_scopes
            codes = sl.unpack(f[:, at : at + sl.n_columns]) if sl is not None else None
            for s in np.unique(starts[~late]):
                rows = starts == s
                pane = st.open[m.index].get(float(s))
                if pane is None:
                    pane = st.open[m.index][float(s)] = Pane(m.layout, float(s))
                pane.add_outcomes(k[rows], lt[rows], pt[rows], sc[rows],
                                  f[rows, _P_PRED].astype(np.int64), y[rows], [c[rows] for c in scopes],
                                  slice_codes=None if codes is None else codes[rows])

    # -- watermarks, sealing, stage 2 -----------------------------------------------------------
    def _keep(self, produced: Output) -> Output:
        """Queue what a call produced for the next checkpoint; return just that."""
        self.out.evaluations += produced.evaluations
        self.out.transitions += produced.transitions
        self.out.retrains += produced.retrains
        self.out.reports += produced.reports
        return produced

    def advance(self) -> Output:
        """Seal panes behind each partition's watermark, expire the join, evaluate ready windows.

        Returns what this call produced; it is also queued until :meth:`drain`.
        """
        produced = Output()
        # list(): with state.backend = "kafka", kafka-python's IO thread drops revoked
        # partitions (rebalance listener) while this loop may run
        for st in list(self.partitions.values()):
            wm = st.watermark()
            for m in self.models:
                if not m.ready or wm == -math.inf:
                    continue
                cutoff = math.floor((wm - m.cfg.allowed_lateness_seconds) / m.pane) * m.pane
                if cutoff <= st.sealed[m.index]:
                    continue
                for start in sorted(s for s in st.open[m.index] if s + m.pane <= cutoff):
                    pane = st.open[m.index].pop(start)
                    if not self.stage2:
                        # unsealed: the owner seals it with every partition's outcomes
                        self.sealed.setdefault((m.index, st.partition), []).append(pane)
                        continue
                    pane.seal()
                    m.accept_sealed(pane)
                st.sealed[m.index] = cutoff
            self._expire(st)
        if not self.stage2:
            return self._keep(produced)
        for m in self.models:
            active = [st.sealed[m.index] for st in self.partitions.values() if not st.idle and st.pred_max > -math.inf]
            if active:
                m.advance(min(active), self.metrics, produced)
        return self._keep(produced)

    def _expire(self, st: PartitionState) -> None:
        if st.pred_max > -math.inf:
            _, _, f32 = st.preds.expire(st.pred_max - st.ttl)
            self._count_expired(f32[:, _P_MODEL] if len(f32) else np.zeros(0), "prediction")
        if st.label_max > -math.inf:
            ts, _, _ = st.labels.expire(st.label_max - st.ttl)
            if len(ts) and self.metrics is not None:
                self.metrics.join_expired.labels("", "label", "ttl").inc(len(ts))

    def _count_expired(self, model_codes: np.ndarray, kind: str) -> None:
        if self.metrics is None or not len(model_codes):
            return
        idx, counts = np.unique(model_codes.astype(np.int64), return_counts=True)
        for i, c in zip(idx, counts, strict=True):
            self.metrics.join_expired.labels(self.models[int(i)].cfg.name, kind, "ttl").inc(int(c))

    def update_gauges(self) -> None:
        """Join-size gauges: a scan of the join tables, so the app calls it per checkpoint,
        not per micro-batch."""
        if self.metrics is None:
            return
        waiting = np.zeros(len(self.models), dtype=np.int64)
        labels = 0
        for st in self.partitions.values():
            live = st.preds.f32[st.preds.head : st.preds.tail][st.preds.alive[st.preds.head : st.preds.tail]]
            if len(live):
                waiting += np.bincount(live[:, _P_MODEL].astype(np.int64), minlength=len(self.models))
            labels += len(st.labels)
        for m, w in zip(self.models, waiting, strict=True):
            self.metrics.join_pending.labels(m.cfg.name, "prediction").set(int(w))
        self.metrics.join_pending.labels("", "label").set(labels)

    def close_idle(self, idle_seconds: float) -> Output:
        """Processing-time fallback: idle partitions stop holding back stage 2."""
        now = self.clock()
        for st in self.partitions.values():
            if now - st.last_activity >= idle_seconds:
                st.idle = True
            if now - st.last_label_activity >= idle_seconds:
                st.labels_idle = True
        return self.advance()

    def flush_all(self) -> Output:
        """End of a finite input (replay): seal and evaluate every pane, as if time moved on."""
        produced = Output()
        for st in self.partitions.values():
            for m in self.models:
                if not m.ready:
                    continue
                for start in sorted(st.open[m.index]):
                    pane = st.open[m.index].pop(start)
                    pane.seal()
                    m.accept_sealed(pane)
                st.sealed[m.index] = math.inf
        for m in self.models:
            if m.ready and m.pending:
                m.advance(max(m.pending) + m.pane, self.metrics, produced)
        return self._keep(produced)

    def drain(self) -> Output:
        out, self.out = self.out, Output()
        return out

    # -- state ------------------------------------------------------------------------------------
    def partition_blobs(self) -> dict[str, bytes]:
        return {f"partition/{p}": st.to_bytes() for p, st in self.partitions.items()}

    def model_blobs(self) -> dict[str, bytes]:
        return {f"model/{m.cfg.name}": m.to_bytes() for m in self.models}

    def restore_models(self, blobs: dict[str, bytes]) -> None:
        for m in self.models:
            data = blobs.get(f"model/{m.cfg.name}")
            if data is not None:
                m.restore(data)

    def restore_partition(self, p: int, data: bytes | None) -> None:
        st = self.partition(p)
        if data is not None:
            st.restore(data, self.models, self.config.join.max_pending)
