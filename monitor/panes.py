"""Panes: tumbling event-time buckets of mergeable sketches, the contract between stages.

A pane holds, for one model and one pane interval, everything a window evaluation needs:
feature and score histograms, category counts, per-group prediction counts (selection
rates need no labels), and, for predictions joined with their labels, confusion counts
per group, the score histogram per true class, loss or regression-error sums and the
error indicators in a deterministic order for the sequential detectors. Merging panes is
adding their sketches, so a window is a running sum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.attribution import AttributionSketch
from detectors.performance import LOSS_COLUMNS, REGRESSION_COLUMNS, loss_columns, regression_columns
from detectors.sketch import (
    CategoryCounts,
    ConfusionCounts,
    HistogramBank,
    Moments,
    ScoreHistogram,
    StrCodes,
)
from detectors.slices import SliceCounts

__all__ = ["Layout", "Pane", "RowSample", "window_sample", "LOSS_QUANTUM"]

log = logging.getLogger("driftline.panes")

LOSS_QUANTUM = 2.0**-24
# Per-event reconstruction errors are clipped at this multiple of the reference's mean
# error before they are summed, which bounds them so that the window sums can be kept
# in fixed point (exact, associative, independent of micro-batch boundaries) like the
# loss sums. An event beyond it is an outlier whatever its exact error; a window whose
# mean is driven by such events still reads far above the reference.
RECON_CAP_FACTOR = 100.0


def recon_bounds(ref_mean_error: float) -> tuple[float, float]:
    """(cap, quantum) of a pane's reconstruction-error sums: ``(e - shift)**2 / quantum``
    is at most 2**32 per event, so int64 sums hold 2**31 events per window."""
    cap = RECON_CAP_FACTOR * ref_mean_error
    return cap, cap * cap * 2.0**-32


@dataclass
class Layout:
    """Shape of one model's panes, fixed by its reference profile."""

    model: str
    task: str
    n_classes: int
    numeric: list[str]
    numeric_edges: list[np.ndarray]
    categorical: list[str]
    vocabularies: list[list[str]]
    sensitive: list[str]
    groups: list[list[str]]  # vocabulary per sensitive attribute
    intersections: list[list[str]] = field(default_factory=list)
    has_score: bool = True  # binary/multiclass models that emit a probability
    score_bins: int = 100
    sample_per_pane: int = 0  # rows kept per pane for evidence reports (0: none)
    # multivariate drift: the reference's PCA (detectors.reconstruction.PCAReconstruction)
    # and, for each of its features, the column in the numeric matrix
    reconstruction: Any = None
    attribution_features: list[str] = field(default_factory=list)  # [] = attributions not watched
    slicing: Any = None  # monitor.slicing.SliceLayout, or None
    # detectors.cbpe.ScoreCalibrator fitted on the reference, or None: label-free estimates,
    # and each joined outcome's expected error in the slices
    calibrator: Any = None
    security: Any = None  # monitor.security.SecurityLayout, or None ([models.security] off)

    def __post_init__(self) -> None:
        self._sens_codes = [_group_codes(vocab) for vocab in self.groups]
        self._cat_coders = [CategoryCounts(v) for v in self.vocabularies]
        if self.calibrator is not None:
            p = self.calibrator.probabilities
            c = self.calibrator.counts
            # an outcome without a score is expected to err at the reference's base rate
            self.base_positive = float((p * c).sum() / c.sum()) if c.sum() else 0.5
        self.recon_columns = (
            [self.numeric.index(f) for f in self.reconstruction.features] if self.reconstruction is not None else []
        )
        self.scopes: list[tuple[str, list[str], list[int]]] = []
        for a, vocab in zip(self.sensitive, self.groups, strict=True):
            self.scopes.append((a, list(vocab), [self.sensitive.index(a)]))
        for combo in self.intersections:
            idx = [self.sensitive.index(a) for a in combo]
            names = [""]
            for i in idx:
                names = [f"{n}&{g}" if n else g for n in names for g in self.groups[i]]
            self.scopes.append(("&".join(combo), names, idx))

    def category_codes(self, categorical: list[np.ndarray]) -> list[np.ndarray]:
        """Vocabulary index per value of each categorical feature: -1 unseen, -2 missing."""
        return [c.index_of(v) for c, v in zip(self._cat_coders, categorical, strict=True)]

    def group_codes(self, sensitive: list[np.ndarray]) -> np.ndarray:
        """(n, n_attributes) codes of each event's group per attribute; -1 = outside the vocabulary."""
        n = len(sensitive[0]) if sensitive else 0
        out = np.full((n, len(self.sensitive)), -1, dtype=np.int64)
        for j, values in enumerate(sensitive):
            out[:, j] = self._sens_codes[j].codes(values)
        return out

    def scope_codes(self, codes: np.ndarray) -> list[np.ndarray]:
        """Group code per fairness scope (attributes, then intersections) from attribute codes."""
        out = []
        for _, _, idx in self.scopes:
            c = np.zeros(codes.shape[0], dtype=np.int64)
            bad = np.zeros(codes.shape[0], dtype=bool)
            for i in idx:
                c = c * len(self.groups[i]) + codes[:, i]
                bad |= codes[:, i] < 0
            out.append(np.where(bad, -1, c))
        return out


def _group_codes(vocabulary: list[str]) -> StrCodes:
    """Codes of one sensitive attribute's groups by ``str(value)``; -1 outside the vocabulary."""
    index = {g: k for k, g in enumerate(vocabulary)}
    return StrCodes(lambda u: index.get(u, -1))


class RowSample:
    """A bottom-k sample of rows by id hash: the ``k`` rows with the smallest keys.

    Keys are uniform hashes of prediction ids, so the sample is uniform; it depends only on
    which rows were offered (never on batch boundaries or arrival order), merges exactly
    (union, keep the k smallest), and the prediction and outcome samples of a window are
    coordinated: a prediction in one is likely to find its label in the other.
    """

    def __init__(self, k: int, columns: list[str]):
        self.k = int(k)
        self.columns = list(columns)
        self.keys = np.zeros(0, dtype=np.uint64)
        self.data: dict[str, np.ndarray] = {c: np.zeros(0, dtype=object) for c in self.columns}

    def add(self, keys: np.ndarray, data: dict[str, np.ndarray]) -> None:
        if self.k <= 0 or len(keys) == 0:
            return
        keys = np.asarray(keys, dtype=np.uint64)
        if len(self.keys) >= self.k:
            # full: only keys below the current k-th smallest can enter (kept keys are
            # sorted), which after the first rows of a pane is about k/n of them
            enter = keys < self.keys[-1]
            if not enter.any():
                return
            keys = keys[enter]
            data = {c: np.asarray(data[c], dtype=object)[enter] for c in self.columns}
        keys = np.concatenate([self.keys, keys])
        cols = {c: np.concatenate([self.data[c], np.asarray(data[c], dtype=object)]) for c in self.columns}
        keep = np.argsort(keys, kind="stable")[: self.k]
        self.keys = keys[keep]
        self.data = {c: v[keep] for c, v in cols.items()}

    def merge(self, other: RowSample) -> RowSample:
        self.add(other.keys, other.data)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.tolist(), "data": {c: v.tolist() for c, v in self.data.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self.keys = np.asarray(d["keys"], dtype=np.uint64)
        self.data = {c: np.array(d["data"][c] + [None], dtype=object)[:-1] for c in self.columns}


class Pane:
    """The sketches of one model over one pane interval ``[start, start + length)``."""

    kind = "pane"
    version = 1

    def __init__(self, layout: Layout, start: float):
        L = layout
        self.layout = L
        self.start = float(start)
        self.n_predictions = 0
        self.n_joined = 0
        self.label_delay_sum = 0.0
        self.hist = HistogramBank(L.numeric_edges) if L.numeric else None
        # score distribution of every prediction (labels unknown: class 0), for score drift
        # and label-free estimated performance
        self.pred_scores = ScoreHistogram(2, L.score_bins) if (L.has_score and L.task != "regression") else None
        self.cats = [CategoryCounts(v) for v in L.vocabularies]
        # selection rates per scope come from every prediction (true class unknown: row 0)
        self.selection = [ConfusionCounts(names, 2) for _, names, _ in L.scopes] if L.task == "binary" else []
        k = L.n_classes
        if L.task == "regression":
            self.confusion = None
            self.group_confusion = []
            self.scores = None
            self.loss = Moments(len(REGRESSION_COLUMNS))
        else:
            self.confusion = ConfusionCounts(("all",), k)
            self.group_confusion = [ConfusionCounts(names, 2) for _, names, _ in L.scopes] if L.task == "binary" else []
            self.scores = ScoreHistogram(2, L.score_bins) if L.has_score else None
            # fixed point: log loss <= 36.04 (clipped) and Brier <= 2 are bounded, so the
            # sums add exactly and a window does not depend on micro-batch boundaries
            self.loss = Moments(len(LOSS_COLUMNS), quantum=LOSS_QUANTUM)
        # multivariate drift: per-event PCA reconstruction errors (mean and spread)
        if L.reconstruction is not None:
            self._recon_cap, quantum = recon_bounds(L.reconstruction.ref_mean_error)
            self.recon = Moments(1, shift=L.reconstruction.ref_mean_error, quantum=quantum)
        else:
            self.recon = None
        self.attr = AttributionSketch(L.attribution_features) if L.attribution_features else None
        self.slices: SliceCounts | None = L.slicing.counts() if L.slicing is not None else None
        # security signals: inputs outside the reference's support, dead-lettered records
        # of this model, and a count-min sketch of rounded input cells (hashes only)
        self.n_outside = 0
        self.outside_by = np.zeros(len(L.numeric) + len(L.categorical), dtype=np.int64)  # per feature
        self.n_invalid = 0
        self.dups = L.security.sketch() if L.security is not None else None
        feats = L.numeric + L.categorical
        self.psample = RowSample(L.sample_per_pane, feats + ["__score", "__prediction"])
        self.osample = RowSample(L.sample_per_pane, ["__label"])
        # error indicators of joined predictions, sorted at seal for a deterministic order
        self._err_ts: list[np.ndarray] = []
        self._err_key: list[np.ndarray] = []
        self._err_val: list[np.ndarray] = []
        self.errors = np.zeros(0, dtype=np.float64)

    # -- updates --------------------------------------------------------------------------
    def add_predictions(self, numeric: np.ndarray, score: np.ndarray, categorical: list[np.ndarray],
                        predicted: np.ndarray, scope_codes: list[np.ndarray], keys: np.ndarray | None = None,
                        category_codes: list[np.ndarray] | None = None, attributions: np.ndarray | None = None,
                        slice_codes: np.ndarray | None = None) -> None:
        """Predictions of this pane; ``category_codes`` (from :meth:`Layout.category_codes`)
        spare a second coding of the categorical values when the caller has them."""
        n = len(predicted)
        if keys is not None and self.psample.k:
            L = self.layout
            cols = {f: numeric[:, j] for j, f in enumerate(L.numeric)}
            cols.update({f: categorical[j] for j, f in enumerate(L.categorical)})
            cols["__score"] = score
            cols["__prediction"] = predicted
            self.psample.add(keys, cols)
        self.n_predictions += n
        if self.hist is not None:
            self.hist.update(numeric)
        if self.pred_scores is not None:
            ok = ~np.isnan(score)
            self.pred_scores.update(score[ok], np.zeros(int(ok.sum()), dtype=np.int64))
        if category_codes is None:
            category_codes = self.layout.category_codes(categorical)
        for c, codes in zip(self.cats, category_codes, strict=True):
            c.update_codes(codes)
        for cc, codes in zip(self.selection, scope_codes, strict=True):
            cc.update(np.zeros(n, dtype=np.int64), predicted, codes)
        if self.recon is not None and n:
            errors = self.layout.reconstruction.errors(numeric[:, self.layout.recon_columns])
            self.recon.update(np.minimum(errors, self._recon_cap))
        if self.attr is not None and attributions is not None and n:
            self.attr.update(attributions)
        if self.slices is not None and slice_codes is not None and n and self.layout.task == "binary":
            self.slices.update_predictions(slice_codes, predicted == 1)
        sec = self.layout.security
        if sec is not None and n:
            codes = sec.codes(category_codes, n)
            rows, by = sec.outside(numeric, codes)
            self.n_outside += rows
            self.outside_by += by
            self.dups.update(sec.keys(numeric, codes))

    def add_outcomes(self, keys: np.ndarray, label_ts: np.ndarray, pred_ts: np.ndarray, score: np.ndarray,
                     predicted: np.ndarray, label: np.ndarray, scope_codes: list[np.ndarray],
                     slice_codes: np.ndarray | None = None) -> None:
        """Joined (prediction, label) pairs, placed in the pane of the label's event time."""
        n = len(keys)
        if n == 0:
            return
        self.n_joined += n
        self.label_delay_sum += float(np.sum(label_ts - pred_ts))
        self.osample.add(keys, {"__label": label})
        L = self.layout
        if L.task == "regression":
            self.loss.update(regression_columns(label, score))
            err = np.abs(label - score)
        else:
            y = label.astype(np.int64)
            self.confusion.update(y, predicted)
            for cc, codes in zip(self.group_confusion, scope_codes, strict=True):
                cc.update(y, predicted, codes)
            ok = ~np.isnan(score)
            if ok.any() and L.task == "binary":
                if self.scores is not None:
                    self.scores.update(score[ok], y[ok])
                self.loss.update(loss_columns(y[ok], score[ok]))
            elif ok.any() and self.scores is not None:
                # multiclass: top-label confidence against "prediction correct"
                self.scores.update(score[ok], (predicted[ok] == y[ok]).astype(np.int64))
            err = (predicted != y).astype(np.float64)
            if self.slices is not None and slice_codes is not None:
                self.slices.update_outcomes(slice_codes, err, self._expected_errors(score, predicted))
        self._err_ts.append(label_ts)
        self._err_key.append(keys)
        self._err_val.append(err)

    def _expected_errors(self, score: np.ndarray, predicted: np.ndarray) -> np.ndarray | None:
        """Each binary outcome's probability of error by the calibrated score: 1 - p for a
        positive prediction, p for a negative one (None without a calibration)."""
        L = self.layout
        if L.calibrator is None or L.task != "binary":
            return None
        ok = ~np.isnan(score)
        # the calibrator was fitted on the reference's score bins, which are this pane's
        bins = self.scores.bin_of(np.where(ok, score, 0.0))
        p = np.where(ok, L.calibrator.probabilities[bins], L.base_positive)
        return np.where(predicted == 1, 1.0 - p, p)

    def seal(self) -> None:
        """Fix the error-indicator order by (label time, id hash): independent of arrival interleaving."""
        if self._err_ts:
            ts = np.concatenate(self._err_ts)
            key = np.concatenate(self._err_key)
            val = np.concatenate(self._err_val)
            order = np.lexsort((key, ts))
            self.errors = np.concatenate([self.errors, val[order]])
            self._err_ts, self._err_key, self._err_val = [], [], []

    # -- algebra --------------------------------------------------------------------------
    def _sketches(self) -> list[Any]:
        out: list[Any] = [s for s in (self.hist, self.pred_scores) if s is not None]
        out += self.cats + self.selection + self.group_confusion
        out += [s for s in (self.confusion, self.scores, self.loss) if s is not None]
        return out

    def _extras(self) -> dict[str, Any]:
        """Sketches added after the first pane format, stored by name: a pane written before
        them restores with them empty."""
        return {k: s for k, s in (("recon", self.recon), ("attr", self.attr), ("slices", self.slices),
                                  ("dups", self.dups))
                if s is not None}

    def _all_sketches(self) -> list[Any]:
        return self._sketches() + list(self._extras().values())

    def merge(self, other: Pane, samples: bool = True) -> Pane:
        """Add ``other`` into this pane (errors appended after ours).

        ``samples=False`` for the running window, which cannot forget sampled rows of
        evicted panes; a window's row sample is drawn from its panes (:func:`window_sample`).
        """
        for a, b in zip(self._all_sketches(), other._all_sketches(), strict=True):
            a.merge(b)
        self.n_predictions += other.n_predictions
        self.n_joined += other.n_joined
        self.label_delay_sum += other.label_delay_sum
        self.n_outside += other.n_outside
        self.outside_by = self.outside_by + other.outside_by
        self.n_invalid += other.n_invalid
        if samples:
            self.psample.merge(other.psample)
            self.osample.merge(other.osample)
        if other.errors.size:
            self.errors = np.concatenate([self.errors, other.errors])
        # unsealed outcomes (panes sent over the panes topic are merged before the seal):
        # the seal then orders every partition's outcomes together by (label time, id hash),
        # as one process reading all partitions would
        self._err_ts += other._err_ts
        self._err_key += other._err_key
        self._err_val += other._err_val
        return self

    def subtract(self, other: Pane) -> Pane:
        for a, b in zip(self._all_sketches(), other._all_sketches(), strict=True):
            a.subtract(b)
        self.n_predictions -= other.n_predictions
        self.n_joined -= other.n_joined
        self.label_delay_sum -= other.label_delay_sum
        self.n_outside -= other.n_outside
        self.outside_by = self.outside_by - other.outside_by
        self.n_invalid -= other.n_invalid
        return self

    # -- state ----------------------------------------------------------------------------
    def _pending_errors(self) -> dict[str, list]:
        """Joined outcomes not yet sealed, kept unsorted: the seal sorts them all together,
        so a checkpoint between two outcomes of one pane cannot change their final order."""
        def cat(xs: list[np.ndarray], dt) -> list:
            return (np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt)).tolist()

        return {"ts": cat(self._err_ts, np.float64), "key": cat(self._err_key, np.uint64),
                "val": cat(self._err_val, np.float64)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "start": self.start,
            "n_predictions": self.n_predictions,
            "n_joined": self.n_joined,
            "label_delay_sum": self.label_delay_sum,
            "n_outside": self.n_outside,
            "outside_by": self.outside_by.tolist(),
            "n_invalid": self.n_invalid,
            "sketches": [s.to_dict() for s in self._sketches()],
            "extras": {k: s.to_dict() for k, s in self._extras().items()},
            "errors": self.errors.tolist(),
            "pending_errors": self._pending_errors(),
            "psample": self.psample.to_dict(),
            "osample": self.osample.to_dict(),
        }

    @classmethod
    def from_dict(cls, layout: Layout, d: dict[str, Any]) -> Pane:
        if d.get("kind") != cls.kind or d.get("version") != cls.version:
            raise ValueError(f"not a version-{cls.version} pane: kind={d.get('kind')!r} version={d.get('version')!r}")
        p = cls(layout, d["start"])
        p.n_predictions = int(d["n_predictions"])
        p.n_joined = int(d["n_joined"])
        p.label_delay_sum = float(d["label_delay_sum"])
        # absent in panes written before the security signals: nothing was counted
        p.n_outside = int(d.get("n_outside", 0))
        p.n_invalid = int(d.get("n_invalid", 0))
        by = d.get("outside_by")
        if by is not None and len(by) == p.outside_by.size:
            p.outside_by = np.asarray(by, dtype=np.int64)
        mine = p._sketches()
        if len(mine) != len(d["sketches"]):
            raise ValueError("pane state does not match the model layout (reference changed?)")
        for s, sd in zip(mine, d["sketches"], strict=True):
            fresh = type(s).from_dict(sd)
            if isinstance(s, Moments) and s.quantum is not None and fresh.quantum is None:
                fresh = fresh.with_quantum(s.quantum)  # state from before fixed-point sums
            s.__dict__.update(fresh.__dict__)
        for k, s in p._extras().items():
            sd = d.get("extras", {}).get(k)
            if sd is None:
                continue  # state from before this sketch existed, or it was just turned on
            stored = type(s).from_dict(sd)
            try:
                s._check_compatible(stored)
            except ValueError as e:
                # [models.slices], the attributions or the multivariate model changed since
                # the checkpoint: the restored pane starts this sketch empty rather than the
                # daemon refusing the whole state (windows, waiting predictions) over it.
                log.warning("model %s: pane at %s keeps no %s counts from the checkpoint: the "
                            "configured layout differs (%s)", layout.model, d["start"], k, e)
                continue
            s.__dict__.update(stored.__dict__)
        p.errors = np.asarray(d["errors"], dtype=np.float64)
        pend = d["pending_errors"]
        if pend["ts"]:
            p._err_ts = [np.asarray(pend["ts"], dtype=np.float64)]
            p._err_key = [np.asarray(pend["key"], dtype=np.uint64)]
            p._err_val = [np.asarray(pend["val"], dtype=np.float64)]
        p.psample.load(d["psample"])
        p.osample.load(d["osample"])
        return p


def window_sample(panes, size: int, with_keys: bool = False) -> dict[str, list]:
    """Rows for an evidence report: bottom-``size`` of the panes' prediction samples, with
    the label attached where the coordinated outcome samples hold it (else None); with
    ``with_keys``, the rows' id hashes under ``__key`` (for the report's manifest)."""
    panes = list(panes)
    if not panes or panes[0].psample.k == 0:
        return {}
    rows = RowSample(size, panes[0].psample.columns)
    labels = RowSample(10**9, ["__label"])
    for p in panes:
        rows.merge(p.psample)
        labels.merge(p.osample)
    lookup = dict(zip(labels.keys.tolist(), labels.data["__label"].tolist(), strict=True))
    out = {c: v.tolist() for c, v in rows.data.items()}
    out["__label"] = [lookup.get(k) for k in rows.keys.tolist()]
    if with_keys:
        # an erasure finds the reports holding an id by their manifests (monitor.privacy);
        # never a column of the report itself
        out["__key"] = rows.keys.tolist()
    return out
