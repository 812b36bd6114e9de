"""The reference profile: what "normal" looks like for one model, built from a data set.

A :class:`ReferenceProfile` fixes the bin edges every later window is counted on
(quantile edges per numeric feature, vocabularies per categorical feature and sensitive
attribute) and holds the reference sketches the drift tests compare against, plus the
baseline performance and per-group rates. It is built once from a training/validation
sample (``driftline reference build``) or from the first N events a daemon buffered
(:meth:`ReferenceProfile.from_batches`), and stored as versioned JSON.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> data = {"age": rng.normal(40, 10, 1000), "city": rng.choice(["a", "b"], 1000)}
>>> ref = ReferenceProfile.build(data, numeric=["age"], categorical=["city"], n_bins=4)
>>> ref.numeric["age"].histogram.counts.tolist()
[250, 250, 250, 250]
>>> ReferenceProfile.from_dict(ref.to_dict()).to_dict() == ref.to_dict()
True
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors._serde import check_state, floats, unfloats
from detectors.attribution import reference_importance
from detectors.fairness import GroupRates, group_rates, intersection_codes, intersection_groups
from detectors.performance import (
    MetricResult,
    classification_metrics,
    estimated_classification_metrics,
    expected_calibration_error,
    loss_columns,
    loss_metrics,
    regression_columns,
    regression_metrics,
    roc_auc,
)
from detectors.reconstruction import PCAReconstruction
from detectors.sketch import (
    CategoryCounts,
    ConfusionCounts,
    Histogram,
    HistogramBank,
    Moments,
    ScoreHistogram,
    quantile_edges,
    sketch_from_dict,
)

__all__ = ["ReferenceProfile", "NumericProfile", "SensitiveProfile", "TASKS"]

TASKS = ("binary", "multiclass", "regression")
_MISSING = ("None", "nan", "")


@dataclass(eq=False)
class NumericProfile:
    """One numeric feature: its reference histogram, moments and per-bin means.

    ``bin_means`` (NaN for an empty bin) place each bin's mass at its reference mean,
    which lets a Wasserstein distance be computed from histograms alone. ``low``/``high``
    are the smallest and largest finite reference values, the feature's support (NaN in
    profiles written before they were kept).
    """

    histogram: Histogram
    moments: Moments
    bin_means: np.ndarray
    low: float = math.nan
    high: float = math.nan

    @property
    def edges(self) -> np.ndarray:
        return self.histogram.edges

    def to_dict(self) -> dict[str, Any]:
        return {
            "histogram": self.histogram.to_dict(),
            "moments": self.moments.to_dict(),
            "bin_means": floats(self.bin_means),
            "low": floats(np.array([self.low]))[0],
            "high": floats(np.array([self.high]))[0],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        return cls(
            Histogram.from_dict(d["histogram"]),
            Moments.from_dict(d["moments"]),
            unfloats(d["bin_means"]),
            float(unfloats([d.get("low", "nan")])[0]),
            float(unfloats([d.get("high", "nan")])[0]),
        )


@dataclass(eq=False)
class SensitiveProfile:
    """One sensitive attribute (or an intersection of ``attributes``): its groups and,
    for binary tasks with labels, the reference confusion counts per group."""

    attributes: tuple[str, ...]
    groups: CategoryCounts
    confusion: ConfusionCounts | None

    def rates(self, confidence: float = 0.95) -> GroupRates | None:
        return (
            None if self.confusion is None else group_rates(self.confusion, confidence=confidence)
        )

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        rates = self.rates(confidence)
        return {
            "attributes": list(self.attributes),
            "groups": self.groups.to_dict(),
            "confusion": None if self.confusion is None else self.confusion.to_dict(),
            # Derived from "confusion"; written for readers of the JSON, ignored on load.
            "rates": None if rates is None else rates.records(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SensitiveProfile:
        conf = d.get("confusion")
        return cls(
            tuple(d["attributes"]),
            CategoryCounts.from_dict(d["groups"]),
            None if conf is None else ConfusionCounts.from_dict(conf),
        )


def _columns_of(data: Any) -> Sequence[str]:
    return list(data.columns) if hasattr(data, "columns") else list(data.keys())


def _column(data: Any, name: str, n_rows: int | None) -> np.ndarray:
    if name not in _columns_of(data):
        raise ValueError(f"column {name!r} is not in the data (columns: {_columns_of(data)})")
    col = data[name]
    arr = col.to_numpy() if hasattr(col, "to_numpy") else np.asarray(col)
    arr = arr.ravel() if arr.ndim > 1 and 1 in arr.shape else arr
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"column {name!r} has {arr.shape[0]} rows, expected {n_rows}")
    return arr


def _vocabulary(values: np.ndarray, max_categories: int | None) -> list[str]:
    """Categories seen, most frequent first (ties by name), capped at ``max_categories``."""
    s = np.asarray(values, dtype=object).astype(str)
    uniq, counts = np.unique(s, return_counts=True)
    keep = ~np.isin(uniq, _MISSING)
    uniq, counts = uniq[keep], counts[keep]
    order = np.lexsort((uniq, -counts))
    vocab = uniq[order].tolist()
    return vocab if max_categories is None else vocab[:max_categories]


def _numeric(values: np.ndarray, name: str, n_bins: int) -> NumericProfile:
    x = np.asarray(values, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise ValueError(f"numeric feature {name!r} has no finite values in the reference data")
    edges = quantile_edges(finite, n_bins)
    hist = Histogram(edges)
    hist.update(np.where(np.isinf(x), np.nan, x))
    mean = float(finite.mean())
    moments = Moments(1, shift=mean)
    moments.update(finite)
    idx = np.searchsorted(edges, finite, side="right")
    sums = np.bincount(idx, weights=finite, minlength=edges.size + 1)
    cnt = np.bincount(idx, minlength=edges.size + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_means = np.where(cnt > 0, sums / cnt, np.nan)
    return NumericProfile(hist, moments, bin_means, float(finite.min()), float(finite.max()))


class ReferenceProfile:
    """Reference sketches, vocabularies and baseline metrics of one model.

    Build with :meth:`build`; persist with :meth:`to_dict`/:meth:`from_dict` or
    :meth:`save`/:meth:`load`. Attributes: ``numeric`` (name -> NumericProfile),
    ``categorical`` (name -> CategoryCounts), ``score`` (ScoreHistogram or None),
    ``confusion``/``losses``/``regression`` (the performance sketches or None),
    ``sensitive`` (name -> SensitiveProfile) and ``performance`` (name -> MetricResult,
    recomputed from the sketches, never read from the file).
    """

    kind = "reference_profile"
    version = 1

    def __init__(
        self,
        *,
        task: str,
        n_rows: int,
        numeric: dict[str, NumericProfile],
        categorical: dict[str, CategoryCounts],
        score: ScoreHistogram | None = None,
        score_labelled: bool = False,
        confusion: ConfusionCounts | None = None,
        losses: Moments | None = None,
        regression: Moments | None = None,
        sensitive: dict[str, SensitiveProfile] | None = None,
        classes: list[str] | None = None,
        columns: dict[str, str | None] | None = None,
        n_bins: int = 10,
        decision_threshold: float = 0.5,
        score_bins: int = 100,
        max_categories: int | None = None,
        confidence: float = 0.95,
        sample: dict[str, list] | None = None,
        reconstruction: PCAReconstruction | None = None,
        attribution: dict[str, float] | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        self.task = task
        self.n_rows = int(n_rows)
        self.numeric = numeric
        self.categorical = categorical
        self.score = score
        self.score_labelled = bool(score_labelled)
        self.confusion = confusion
        self.losses = losses
        self.regression = regression
        self.sensitive = sensitive or {}
        self.classes = classes
        self.columns = columns or {"score": None, "label": None, "prediction": None}
        self.n_bins = int(n_bins)
        self.decision_threshold = float(decision_threshold)
        self.score_bins = int(score_bins)
        self.max_categories = max_categories
        self.confidence = float(confidence)
        self.sample = sample or {}
        # multivariate drift: PCA fitted on the numeric features (None: fewer than two, or off)
        self.reconstruction = reconstruction
        # attribution drift: feature -> mean |attribution| of the reference (None: no attributions)
        self.attribution = attribution
        self.performance = self._performance()

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        data: Any,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        score: str | None = None,
        label: str | None = None,
        prediction: str | None = None,
        sensitive: Sequence[str] = (),
        task: str = "binary",
        n_bins: int = 10,
        decision_threshold: float = 0.5,
        score_bins: int = 100,
        max_categories: int | None = 100,
        intersections: Sequence[Sequence[str]] = (),
        confidence: float = 0.95,
        sample_size: int = 2000,
        n_components: float | None = 0.65,
        attributions: Mapping[str, str] | None = None,
    ) -> ReferenceProfile:
        """Profile ``data`` (a mapping of column name -> 1-D array, or a DataFrame).

        * numeric: quantile edges (``n_bins`` bins, fewer for discrete features), the
          histogram on them (±inf count as missing), moments and per-bin means.
        * categorical / sensitive: vocabulary = categories seen, most frequent first,
          capped at ``max_categories`` (None: no cap); rarer categories fall into the
          ``unseen`` bucket, in the reference as in every later window. None, NaN and
          "" are missing, never a category.
        * score: binary tasks, P(class 1) in [0, 1]; multiclass, the top-label
          confidence (the histogram's class is then "prediction correct"). Counted per
          true class when ``label`` is given, else all in class 0.
        * label / prediction: binary labels are 0/1 (a missing prediction is
          ``score >= decision_threshold``); multiclass classes are the sorted union of
          label and prediction values (as strings) and are stored as ``classes``;
          regression uses both as numbers. Rows with a missing label are left out of
          the performance sketches. Log loss and Brier are profiled for binary tasks
          only (a multiclass log loss needs every class's probability, not one score).
        * sensitive: per attribute, the group vocabulary and (binary with labels) the
          confusion counts per group. ``intersections`` adds groups crossing several
          sensitive attributes, named as :func:`detectors.fairness.intersection_groups`.
        * reconstruction: with two or more numeric features and ``n_components`` not None, a
          :class:`~detectors.reconstruction.PCAReconstruction` of them (``n_components``: share
          of variance kept, or a number of components) for multivariate drift.
        * attributions: feature -> column of per-row attributions (e.g. SHAP values); the
          reference importance (mean |attribution|) per feature is kept for attribution drift.
        * sample: ``sample_size`` rows drawn uniformly (seeded) of the feature columns and
          of score/label/prediction (as ``__score``/``__label``/``__prediction``), kept as
          JSON values for evidence reports, which need rows; never ids or sensitive columns.
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
        if not 0.0 <= decision_threshold <= 1.0:
            raise ValueError(f"decision_threshold must be in [0, 1], got {decision_threshold!r}")
        if max_categories is not None and max_categories < 1:
            raise ValueError(f"max_categories must be >= 1 or None, got {max_categories!r}")
        attributions = dict(attributions or {})
        names = [*numeric, *categorical, *(c for c in (score, label, prediction) if c), *sensitive,
                 *attributions.values()]
        if not names:
            raise ValueError(
                "nothing to profile: give numeric, categorical, score, label or sensitive columns"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"a column is listed twice: {names}")
        n_rows = _column(data, names[0], None).shape[0]
        if n_rows == 0:
            raise ValueError("cannot build a reference profile from an empty data set")
        col = {name: _column(data, name, n_rows) for name in names}

        num = {name: _numeric(col[name], name, n_bins) for name in numeric}
        cat = {}
        for name in categorical:
            cc = CategoryCounts(_vocabulary(col[name], max_categories))
            cc.update(col[name])
            cat[name] = cc

        kw: dict[str, Any] = {}
        y_codes, p_codes, classes = cls._targets(
            col, task, score, label, prediction, decision_threshold
        )
        labelled = y_codes is not None
        if score is not None and task != "regression":
            s = np.asarray(col[score], dtype=np.float64)
            hist = ScoreHistogram(2, score_bins)
            if labelled and task == "binary":
                ok = y_codes >= 0
                hist.update(s[ok], y_codes[ok])
            elif labelled:
                ok = (y_codes >= 0) & (p_codes >= 0)
                hist.update(s[ok], (y_codes[ok] == p_codes[ok]).astype(np.int64))
            else:
                hist.update(s, np.zeros(s.size, dtype=np.int64))
            kw["score"], kw["score_labelled"] = hist, labelled
        if labelled and task == "binary" and score is not None:
            losses = Moments(2)
            ok = y_codes >= 0
            losses.update(loss_columns(y_codes[ok], np.asarray(col[score], dtype=np.float64)[ok]))
            kw["losses"] = losses
        if task == "regression" and label is not None and prediction is not None:
            y = np.asarray(col[label], dtype=np.float64)
            cols = regression_columns(y, np.asarray(col[prediction], dtype=np.float64))
            y_mean = float(np.nanmean(cols[:, 4])) if np.any(np.isfinite(cols[:, 4])) else 0.0
            reg = Moments(5, shift=[0.0, 0.0, 0.0, 0.0, y_mean])
            reg.update(cols)
            kw["regression"] = reg
        if labelled and p_codes is not None:
            conf = ConfusionCounts(n_classes=2 if task == "binary" else len(classes))
            conf.update(y_codes, p_codes)  # negative codes (missing) are skipped
            kw["confusion"] = conf

        sens: dict[str, SensitiveProfile] = {}
        codes: dict[str, np.ndarray] = {}
        vocabs: dict[str, list[str]] = {}
        binary_labelled = task == "binary" and labelled and p_codes is not None
        for name in sensitive:
            vocabs[name] = _vocabulary(col[name], max_categories)
            groups = CategoryCounts(vocabs[name])
            codes[name] = groups.index_of(col[name])
            groups.update_codes(codes[name])
            conf = None
            if binary_labelled:
                conf = ConfusionCounts(vocabs[name], 2)
                conf.update(y_codes, p_codes, np.where(codes[name] < 0, -1, codes[name]))
            sens[name] = SensitiveProfile((name,), groups, conf)
        for attrs in intersections:
            attrs = tuple(attrs)
            unknown = [a for a in attrs if a not in codes]
            if len(attrs) < 2 or unknown:
                raise ValueError(
                    f"intersection {list(attrs)} must name >= 2 attributes from sensitive={list(sensitive)}"
                )
            names_x = intersection_groups({a: vocabs[a] for a in attrs})
            code_x = intersection_codes([codes[a] for a in attrs], [len(vocabs[a]) for a in attrs])
            groups = CategoryCounts(names_x)
            groups.update_codes(code_x)
            conf = None
            if binary_labelled:
                conf = ConfusionCounts(names_x, 2)
                conf.update(y_codes, p_codes, code_x)
            sens["&".join(attrs)] = SensitiveProfile(attrs, groups, conf)

        # A uniform row sample (seeded) for evidence reports, which need rows, not sketches.
        rows = np.sort(np.random.default_rng(0).permutation(n_rows)[: max(0, int(sample_size))])
        sample = {name: _json_values(col[name][rows]) for name in [*numeric, *categorical]}
        for key, name in (("__score", score), ("__label", label), ("__prediction", prediction)):
            if name:
                sample[key] = _json_values(col[name][rows])
        if "__prediction" not in sample and p_codes is not None:
            # derived from the score at the decision threshold, as the monitor derives it
            sample["__prediction"] = [None if c < 0 else int(c) for c in p_codes[rows].tolist()]
        kw["sample"] = sample
        if n_components is not None and len(numeric) >= 2:
            X = np.column_stack([np.asarray(col[f], dtype=np.float64) for f in numeric])
            X = np.where(np.isfinite(X), X, np.nan)  # +-inf count as missing, as in the histograms
            try:
                kw["reconstruction"] = PCAReconstruction.fit(X, list(numeric), n_components=n_components)
            except ValueError as e:
                # e.g. constant features or too few rows: multivariate drift is then unavailable,
                # which the monitor reports; the univariate profile is still good
                warnings.warn(f"no multivariate drift model: {e}", stacklevel=2)
        if attributions:
            unknown = [f for f in attributions if f not in (*numeric, *categorical)]
            if unknown:
                raise ValueError(f"attributions name features {unknown} that are not profiled")
            parts = []
            for feat, c in attributions.items():
                try:
                    a = np.asarray(col[c], dtype=np.float64)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"attribution column {c!r} (feature {feat!r}) must be numeric: {e}") from None
                if not np.isfinite(a).any():
                    raise ValueError(f"attribution column {c!r} (feature {feat!r}) has no finite value")
                parts.append(a)
            A = np.column_stack(parts)
            imp = reference_importance(A)
            kw["attribution"] = {f: float(v) for f, v in zip(attributions, imp, strict=True)}
        return cls(
            task=task,
            n_rows=n_rows,
            numeric=num,
            categorical=cat,
            sensitive=sens,
            classes=classes,
            columns={"score": score, "label": label, "prediction": prediction},
            n_bins=n_bins,
            decision_threshold=decision_threshold,
            score_bins=score_bins,
            max_categories=max_categories,
            confidence=confidence,
            **kw,
        )

    @staticmethod
    def _targets(col, task, score, label, prediction, threshold):
        """Label and prediction codes (-1 where missing) and the class vocabulary."""
        if task == "regression":
            return None, None, None
        if task == "binary":
            y = None
            if label is not None:
                y = _binary_codes(col[label], label)
            p = None
            if prediction is not None:
                p = _binary_codes(col[prediction], prediction)
            elif score is not None:
                s = np.asarray(col[score], dtype=np.float64)
                p = np.where(np.isfinite(s), (s >= threshold).astype(np.int64), -1)
            return y, p, None
        if label is None or prediction is None:
            if label is not None or prediction is not None:
                raise ValueError(
                    "a multiclass profile needs both label and prediction (or neither)"
                )
            return None, None, None
        classes = sorted(
            set(_vocabulary(col[label], None)) | set(_vocabulary(col[prediction], None))
        )
        vocab = CategoryCounts(classes)
        y = vocab.index_of(col[label])
        p = vocab.index_of(col[prediction])
        return np.where(y < 0, -1, y), np.where(p < 0, -1, p), classes

    @classmethod
    def from_batches(
        cls, batches: Iterable[Mapping[str, np.ndarray]], **kwargs: Any
    ) -> ReferenceProfile:
        """Build from micro-batches (e.g. the first N events a daemon buffered).

        Edges must exist before anything is counted, so a warm-up window cannot be
        promoted from its sketches; the daemon keeps the warm-up events as column
        arrays and this concatenates them and calls :meth:`build` with ``kwargs``.
        """
        parts: dict[str, list[np.ndarray]] = {}
        for batch in batches:
            for name in _columns_of(batch):
                parts.setdefault(name, []).append(_column(batch, name, None))
        if not parts:
            raise ValueError("from_batches got no batches")
        return cls.build({k: np.concatenate(v) for k, v in parts.items()}, **kwargs)

    # ------------------------------------------------------------------ use

    def _performance(self) -> dict[str, MetricResult]:
        c = self.confidence
        out: dict[str, MetricResult] = {}
        if self.confusion is not None and self.confusion.total().sum() > 0:
            average = "binary" if self.task == "binary" else "macro"
            out.update(classification_metrics(self.confusion, average=average, confidence=c))
        if self.score is not None:
            if self.score_labelled:
                if self.task == "binary":
                    out["roc_auc"] = roc_auc(self.score, c)
                ece_bins = 10 if self.score.n_bins % 10 == 0 else None
                out["ece"] = expected_calibration_error(self.score, ece_bins, confidence=c)
            elif self.task == "binary":
                out.update(estimated_classification_metrics(self.score, self.decision_threshold, c))
        if self.losses is not None:
            out.update(loss_metrics(self.losses, c))
        if self.regression is not None:
            out.update(regression_metrics(self.regression, c))
        return out

    def histogram_bank(self) -> HistogramBank:
        """An empty :class:`HistogramBank` on the numeric features' edges, in ``numeric`` order."""
        if not self.numeric:
            raise ValueError("the reference profile has no numeric features")
        return HistogramBank([p.edges for p in self.numeric.values()])

    def group_rates(self, attribute: str) -> GroupRates | None:
        """Reference per-group rates of one sensitive attribute (None without labels)."""
        if attribute not in self.sensitive:
            raise ValueError(
                f"unknown sensitive attribute {attribute!r}; known: {sorted(self.sensitive)}"
            )
        return self.sensitive[attribute].rates(self.confidence)

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict[str, Any]:
        def opt(s):
            return None if s is None else s.to_dict()

        return {
            "kind": self.kind,
            "version": self.version,
            "task": self.task,
            "n_rows": self.n_rows,
            "n_bins": self.n_bins,
            "decision_threshold": self.decision_threshold,
            "score_bins": self.score_bins,
            "max_categories": self.max_categories,
            "confidence": self.confidence,
            "columns": dict(self.columns),
            "classes": None if self.classes is None else list(self.classes),
            "numeric": {k: v.to_dict() for k, v in self.numeric.items()},
            "categorical": {k: v.to_dict() for k, v in self.categorical.items()},
            "score": opt(self.score),
            "score_labelled": self.score_labelled,
            "confusion": opt(self.confusion),
            "losses": opt(self.losses),
            "regression": opt(self.regression),
            "sensitive": {k: v.to_dict(self.confidence) for k, v in self.sensitive.items()},
            "sample": self.sample,
            "reconstruction": None if self.reconstruction is None else self.reconstruction.to_dict(),
            "attribution": self.attribution,
            # Derived from the sketches above; written for readers, recomputed on load.
            "performance": {k: v.to_dict() for k, v in self.performance.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        check_state(dict(d), cls.kind)

        def opt(key, kind):
            v = d.get(key)
            if v is None:
                return None
            s = sketch_from_dict(v)
            if s.kind != kind:
                raise ValueError(
                    f"reference profile field {key!r} holds a {s.kind!r}, expected {kind!r}"
                )
            return s

        try:
            return cls(
                task=d["task"],
                n_rows=d["n_rows"],
                numeric={k: NumericProfile.from_dict(v) for k, v in d["numeric"].items()},
                categorical={k: CategoryCounts.from_dict(v) for k, v in d["categorical"].items()},
                score=opt("score", "score_histogram"),
                score_labelled=d["score_labelled"],
                confusion=opt("confusion", "confusion_counts"),
                losses=opt("losses", "moments"),
                regression=opt("regression", "moments"),
                sensitive={k: SensitiveProfile.from_dict(v) for k, v in d["sensitive"].items()},
                classes=d["classes"],
                columns=d["columns"],
                n_bins=d["n_bins"],
                decision_threshold=d["decision_threshold"],
                score_bins=d["score_bins"],
                max_categories=d["max_categories"],
                confidence=d["confidence"],
                sample=d.get("sample"),
                # optional: profiles written before multivariate and attribution drift lack them
                reconstruction=None if d.get("reconstruction") is None
                else PCAReconstruction.from_dict(d["reconstruction"]),
                attribution=d.get("attribution"),
            )
        except KeyError as e:
            raise ValueError(f"reference profile is missing field {e.args[0]!r}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the profile as JSON (atomically: a temporary file renamed over ``path``)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, allow_nan=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReferenceProfile:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _json_values(values: np.ndarray) -> list:
    """A column sample as JSON-safe values: numbers stay numbers, NaN and missing become None."""
    out = []
    for v in np.asarray(values, dtype=object).tolist():
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            out.append(None)
        elif isinstance(v, bool | int | float | str):
            out.append(v)
        elif isinstance(v, np.generic):
            out.append(v.item())
        else:
            out.append(str(v))
    return out


def _binary_codes(values: np.ndarray, name: str) -> np.ndarray:
    """0/1 labels as int codes, -1 where missing; anything else is an error."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    x = np.asarray(arr, dtype=np.float64)
    bad = np.isfinite(x) & ~np.isin(x, (0.0, 1.0))
    if np.any(bad):
        raise ValueError(
            f"binary column {name!r} must hold 0/1 (or missing), found {np.unique(x[bad])[:5].tolist()}"
        )
    return np.where(np.isfinite(x), x, -1).astype(np.int64)
