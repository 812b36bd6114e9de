"""Confidence-based performance estimation (CBPE, as NannyML's) from score histograms.

Before labels arrive, a model's accuracy, precision, recall, F1 and ROC AUC can be
*expected* from its scores, provided the scores are calibrated probabilities.
:class:`ScoreCalibrator` makes them so: an isotonic regression of the reference's
positive rate per score bin. :func:`estimate_performance` then gives every event of a
window the calibrated probability of its bin and sums the expected confusion matrix.
Everything is O(bins): a window is a :class:`~detectors.sketch.ScoreHistogram`, never
a rescan of events.

>>> import numpy as np
>>> from detectors.sketch import ScoreHistogram
>>> rng = np.random.default_rng(0)
>>> p = 1 / (1 + np.exp(-rng.normal(0.0, 1.5, 20_000)))  # true P(positive)
>>> score = p**2 / (p**2 + (1 - p) ** 2)  # an over-confident model: sigmoid(2 logit p)
>>> ref = ScoreHistogram()
>>> ref.update(score, (rng.random(p.size) < p).astype(int))
>>> cal = ScoreCalibrator.fit(ref)
>>> window = ScoreHistogram()  # labels unknown: every event in class 0
>>> window.update(score[:5000], np.zeros(5000, dtype=int))
>>> raw = estimate_performance(window)["estimated_accuracy"].value
>>> est = estimate_performance(window, cal)["estimated_accuracy"]
>>> round(raw, 3), round(est.value, 3), round(est.ci_low, 3), round(est.ci_high, 3)
(0.839, 0.733, 0.72, 0.746)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detectors._serde import check_state, floats, unfloats
from detectors.intervals import normal_interval, z_value
from detectors.performance import MetricResult
from detectors.sketch import ScoreHistogram

__all__ = ["ScoreCalibrator", "estimate_performance"]

_TASKS = ("binary", "multiclass")


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``y`` (pool adjacent violators).

    Runs once per reference over at most ``n_bins`` values, so a loop over bins is fine.
    """
    # A stack of blocks (weighted mean, weight, length); a new value that breaks the order
    # is pooled with the blocks before it until the means are non-decreasing again.
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y.tolist(), w.tolist(), strict=True):
        means.append(v)
        weights.append(wt)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w2 = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w2
            weights[-2] = w2
            sizes[-2] += sizes[-1]
            del means[-1], weights[-1], sizes[-1]
    return np.repeat(np.array(means), sizes)


class ScoreCalibrator:
    """Per-score-bin probability of the positive class, non-decreasing in the bin.

    ``probabilities[b]`` is P(positive | score in bin b) and ``counts[b]`` the number of
    reference events behind it (kept for the record; 0 for a bin the reference never
    reached). Build it with :meth:`fit` from a labelled reference :class:`ScoreHistogram`:
    class 1 is the positive class of a binary model, or "prediction correct" for a
    multiclass top-label histogram.
    """

    kind = "score_calibrator"
    version = 1

    def __init__(self, probabilities: np.ndarray, counts: np.ndarray):
        p = np.asarray(probabilities, dtype=np.float64)
        c = np.asarray(counts)
        if p.ndim != 1 or p.size < 2:
            raise ValueError(f"probabilities must be 1-D with >= 2 bins, got shape {p.shape}")
        if c.shape != p.shape:
            raise ValueError(f"counts must have the shape of probabilities {p.shape}, got {c.shape}")
        if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
            raise ValueError(f"probabilities must be finite and in [0, 1], got {p.tolist()!r}")
        if np.any(np.diff(p) < 0.0):
            raise ValueError(f"probabilities must be non-decreasing in the bin, got {p.tolist()!r}")
        if not np.all(np.isfinite(c.astype(np.float64))) or np.any(c < 0) or np.any(c != np.rint(c)):
            raise ValueError(f"counts must be non-negative integers, got {c.tolist()!r}")
        self._p = p.copy()
        self._p.setflags(write=False)
        self._counts = c.astype(np.int64)
        self._counts.setflags(write=False)

    @classmethod
    def fit(cls, hist: ScoreHistogram) -> ScoreCalibrator:
        """Isotonic regression of the per-bin positive rate on the bin index.

        Each bin is weighted by its reference events, which makes this the isotonic fit
        to the events themselves with the scores of a bin tied. A bin with no reference
        events takes the linear interpolation of its nearest fitted neighbours (the
        nearest fitted value beyond the first or last filled bin), which keeps the
        result non-decreasing.
        """
        if not isinstance(hist, ScoreHistogram):
            raise TypeError(f"ScoreCalibrator.fit needs a ScoreHistogram, got {type(hist).__name__}")
        if hist.n_classes != 2:
            raise ValueError(
                f"ScoreCalibrator.fit needs a 2-class ScoreHistogram (negative/positive, or "
                f"incorrect/correct for a top-label histogram), got n_classes={hist.n_classes}"
            )
        counts = hist.counts.sum(axis=0)
        if counts.sum() == 0:
            raise ValueError("ScoreCalibrator.fit needs a reference histogram with labelled events, got none")
        filled = np.flatnonzero(counts)
        w = counts[filled].astype(np.float64)
        fitted = _pav(hist.counts[1, filled] / w, w)
        probs = np.interp(np.arange(hist.n_bins), filled, fitted)
        return cls(np.clip(probs, 0.0, 1.0), counts)

    @property
    def n_bins(self) -> int:
        return int(self._p.size)

    @property
    def probabilities(self) -> np.ndarray:
        """P(positive) per score bin (read-only)."""
        return self._p

    @property
    def counts(self) -> np.ndarray:
        """Reference events per score bin (read-only)."""
        return self._counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "probabilities": floats(self._p),
            "counts": self._counts.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreCalibrator:
        check_state(d, cls.kind)
        return cls(unfloats(d["probabilities"]), np.asarray(d["counts"], dtype=np.int64))

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ScoreCalibrator(n_bins={self.n_bins}, reference_events={int(self._counts.sum())})"


def _calibration_variance(cal: ScoreCalibrator) -> np.ndarray:
    """Per-bin variance of the calibrated probability from the reference's finite size.

    A bin's probability is estimated from ``r_b`` reference events; its variance is taken
    as that of the bin's own positive rate, ``q (1 - q) / (r_b + 4)`` with the
    Agresti-Coull-adjusted ``q = (r_b c_b + 2) / (r_b + 4)`` (so a bin at 0 or 1 still
    has a spread), and bins are treated as independent. The isotonic fit pools bins into
    blocks of ``W = sum r_b`` events sharing one rate of variance ~ ``c (1 - c) / W``;
    by Cauchy-Schwarz ``(sum_b g_b)^2 / W <= sum_b g_b^2 / r_b`` for any weights ``g_b``,
    so per-bin variances bound the pooled ones in any linear combination (to first order). A bin the reference never
    reached is an interpolation of its filled neighbours: it takes the larger of their
    variances, which bounds that of any convex combination of them.
    """
    r = cal.counts.astype(np.float64)
    q = (r * cal.probabilities + 2.0) / (r + 4.0)
    v = q * (1.0 - q) / (r + 4.0)
    filled = np.flatnonzero(r > 0)
    empty = np.flatnonzero(r == 0)
    if empty.size and filled.size:
        after = np.searchsorted(filled, empty)
        left = v[filled[np.maximum(after - 1, 0)]]
        right = v[filled[np.minimum(after, filled.size - 1)]]
        v[empty] = np.maximum(left, right)
    return v


def _predicted_positive(count: np.ndarray, sums: np.ndarray, threshold: float) -> np.ndarray:
    # The rule of performance.estimated_classification_metrics: exact on a bin edge; the
    # bin holding an off-edge threshold goes by its mean raw score.
    n_bins = count.size
    pos_t = threshold * n_bins
    predicted = np.arange(n_bins) >= math.ceil(pos_t - 1e-9)
    if abs(pos_t - round(pos_t)) > 1e-9 and int(pos_t) < n_bins:
        b = int(pos_t)
        predicted[b] = count[b] > 0 and sums[b] / count[b] >= threshold
    return predicted


def _bounded(name: str, value: float, se: float, z: float, n) -> MetricResult:
    if not np.isfinite(value):
        return MetricResult(name, float("nan"), float("nan"), float("nan"), int(n))
    value, se = float(value), float(se)
    return MetricResult(name, value, max(value - z * se, 0.0), min(value + z * se, 1.0), int(n))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _expected_auc(
    pos: np.ndarray, neg: np.ndarray, cal_var: np.ndarray, confidence: float, n: int
) -> MetricResult:
    """ROC AUC of expected positive/negative counts per bin, Hanley-McNeil interval.

    Bins are in score order, so pairs in different bins are ordered by bin and pairs in
    one bin count half: the area under the expected ROC curve that CBPE traces when it
    sorts events by score and accumulates expected TPR and FPR (with one probability per
    bin, a bin's stretch of that curve is a straight segment whose area is this half).
    """
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos <= 0.0 or n_neg <= 0.0:
        return MetricResult("estimated_roc_auc", float("nan"), float("nan"), float("nan"), n)
    neg_below = np.cumsum(neg) - neg
    pos_above = n_pos - np.cumsum(pos)
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
    # Hanley & McNeil (1982) with the expected class sizes: the variance of an AUC over
    # fresh samples of scores and labels. Given the scores only the labels vary, so this
    # is the larger of the two to first order, and it stays defined for fractional sizes.
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (
        auc * (1 - auc)
        + max(n_pos - 1.0, 0.0) * (q1 - auc * auc)
        + max(n_neg - 1.0, 0.0) * (q2 - auc * auc)
    ) / (n_pos * n_neg)
    # Plus the calibrator's error through the delta method: moving c_b moves n_b events
    # between the expected positives and negatives of bin b.
    count = pos + neg
    grad = count * (
        (neg_below + 0.5 * neg) - (pos_above + 0.5 * pos) - auc * (n_neg - n_pos)
    ) / (n_pos * n_neg)
    var += float((grad * grad * cal_var).sum())
    low, high = normal_interval(auc, math.sqrt(max(var, 0.0)), confidence)
    return MetricResult("estimated_roc_auc", auc, max(float(low), 0.0), min(float(high), 1.0), n)


def estimate_performance(
    hist: ScoreHistogram,
    calibrator: ScoreCalibrator | None = None,
    decision_threshold: float = 0.5,
    confidence: float = 0.95,
    task: str = "binary",
) -> dict[str, MetricResult]:
    """Expected performance of a window from its scores alone (NannyML's CBPE).

    ``hist`` is the window's prediction histogram; its labels are ignored (counts of all
    classes are summed). Each event is positive with its bin's calibrated probability
    ``c_b`` (``calibrator`` None: the bin's mean raw score, i.e. the raw scores are taken
    as calibrated, as :func:`~detectors.performance.estimated_classification_metrics`).
    Which events are *predicted* positive is decided by the raw score against
    ``decision_threshold`` (exact when it is a bin edge, such as 0.5 with an even number
    of bins; else the bin holding it goes by its mean raw score). Expected TP, FP, FN, TN
    follow, and so do:

    * ``task="binary"``: ``estimated_accuracy``, ``estimated_precision``,
      ``estimated_recall``, ``estimated_f1`` and ``estimated_roc_auc`` (the AUC of the
      expected positives ``n_b c_b`` and negatives ``n_b (1 - c_b)`` per bin).
    * ``task="multiclass"`` with a top-label histogram (class 1 = prediction correct):
      ``estimated_accuracy`` only, the mean probability of being correct;
      ``decision_threshold`` is then not used.

    What the intervals cover: the *realised* metric of this window given its scores, if
    the calibration holds on it (the binned realised metric, e.g.
    :func:`~detectors.performance.roc_auc` of the window's labelled histogram). The
    label of an event is then Bernoulli(p) with p averaging ``c_b`` over its bin, so the
    variance of the true-positive count is at most ``sum_b n_b c_b (1 - c_b)``; with a
    calibrator, each bin adds ``n_b^2 Var(c_b)`` for the reference's finite size (see
    :func:`_calibration_variance`). Accuracy, precision, recall and F1 get these through
    the delta method (conservative); ROC AUC gets Hanley-McNeil with the expected class
    counts plus the calibrator term. They do not cover a calibration that no longer
    holds (concept drift: the estimates then miss in an unknown direction), nor the
    within-bin spread of the probability under covariate shift (a bin keeps the
    reference's average), which is small at 100 bins unless events pile into one bin.
    A metric with an empty denominator (no events, no predicted positives) is NaN.
    """
    if not isinstance(hist, ScoreHistogram):
        raise TypeError(f"estimate_performance needs a ScoreHistogram, got {type(hist).__name__}")
    if calibrator is not None:
        if not isinstance(calibrator, ScoreCalibrator):
            raise TypeError(f"calibrator must be a ScoreCalibrator or None, got {type(calibrator).__name__}")
        if calibrator.n_bins != hist.n_bins:
            raise ValueError(
                f"calibrator has {calibrator.n_bins} bins but the histogram has {hist.n_bins}; "
                "fit the calibrator on a reference histogram with the same bins"
            )
    if not 0.0 <= decision_threshold <= 1.0:
        raise ValueError(f"decision_threshold must be in [0, 1], got {decision_threshold!r}")
    if task not in _TASKS:
        raise ValueError(f"task must be one of {list(_TASKS)}, got {task!r}")
    z = z_value(confidence)

    count = hist.counts.sum(axis=0).astype(np.float64)
    sums = hist.score_sums.sum(axis=0)
    if calibrator is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(count > 0, sums / count, 0.0)
        expected = sums
        cal_var = np.zeros_like(count)
    else:
        prob = calibrator.probabilities
        expected = count * prob
        cal_var = _calibration_variance(calibrator)
    # Label noise given the scores, plus the calibrator's error: an error in c_b moves
    # all n_b events of bin b together, hence n_b^2.
    var = count * prob * (1.0 - prob) + count * count * cal_var
    n = count.sum()
    size = int(hist.counts.sum())

    if task == "multiclass":
        acc = _ratio(expected.sum(), n)
        se = math.sqrt(var.sum()) / n if n else 0.0
        return {"estimated_accuracy": _bounded("estimated_accuracy", acc, se, z, size)}

    predicted = _predicted_positive(count, sums, decision_threshold)
    tp = expected[predicted].sum()
    fp = (count - expected)[predicted].sum()
    fn = expected[~predicted].sum()
    tn = (count - expected)[~predicted].sum()
    var_pp, var_pn = var[predicted].sum(), var[~predicted].sum()
    n_pp = tp + fp
    size_pp = int(hist.counts[:, predicted].sum())

    out = {}
    out["estimated_accuracy"] = _bounded(
        "estimated_accuracy", _ratio(tp + tn, n), math.sqrt(var_pp + var_pn) / n if n else 0.0, z, size
    )
    out["estimated_precision"] = _bounded(
        "estimated_precision", _ratio(tp, n_pp), math.sqrt(var_pp) / n_pp if n_pp else 0.0, z, size_pp
    )
    # TP and FN are sums over disjoint events (predicted positive / negative), so they
    # are independent; delta method on recall = TP / (TP + FN) and F1 = 2 TP / (n_pp + TP + FN).
    pos = tp + fn
    rec_var = (fn * fn * var_pp + tp * tp * var_pn) / pos**4 if pos > 0 else 0.0
    out["estimated_recall"] = _bounded("estimated_recall", _ratio(tp, pos), math.sqrt(rec_var), z, size)
    d = n_pp + tp + fn
    f1_var = (4 * (n_pp + fn) ** 2 * var_pp + 4 * tp * tp * var_pn) / d**4 if d > 0 else 0.0
    out["estimated_f1"] = _bounded("estimated_f1", _ratio(2 * tp, d), math.sqrt(f1_var), z, size)
    out["estimated_roc_auc"] = _expected_auc(expected, count - expected, cal_var, confidence, size)
    return out
