"""Model performance from mergeable sketches, every metric with a confidence interval.

Classification metrics come from a confusion matrix (:class:`ConfusionCounts`) and a
score histogram (:class:`ScoreHistogram`); log loss, Brier score and regression metrics
come from :class:`Moments` over per-event columns that the monitor computes once per
micro-batch. Because every input is a sketch, a window's metrics cost O(bins), never a
rescan of events.

What the monitor must feed:

* ``ConfusionCounts`` of (true class, predicted class) codes.
* ``ScoreHistogram(n_classes=2)`` of the binary score P(class 1) per true class for ROC
  AUC and calibration. For a multiclass model feed the *top-label* confidence
  (max probability) with ``correct = (prediction == label)`` as the class: calibration
  error is then the top-label ECE and :func:`estimated_classification_metrics` with
  ``decision_threshold=0`` gives the expected accuracy.
* ``Moments(2)`` over :func:`loss_columns` (``LOSS_COLUMNS``) for log loss and Brier.
* ``Moments(5)`` over :func:`regression_columns` (``REGRESSION_COLUMNS``) for regression.

>>> import numpy as np
>>> from detectors.sketch import ConfusionCounts
>>> cc = ConfusionCounts()
>>> cc.update(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
>>> m = classification_metrics(cc)
>>> m["precision"].value, m["recall"].value, round(m["f1"].value, 4)
(0.6666666666666666, 0.6666666666666666, 0.6667)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors._serde import check_state
from detectors.intervals import normal_interval, t_interval, wilson_interval, z_value
from detectors.sketch import ConfusionCounts, Moments, ScoreHistogram

__all__ = [
    "MetricResult",
    "LOSS_COLUMNS",
    "REGRESSION_COLUMNS",
    "classification_metrics",
    "roc_auc",
    "expected_calibration_error",
    "loss_columns",
    "loss_metrics",
    "regression_columns",
    "regression_metrics",
    "estimated_classification_metrics",
]

LOSS_COLUMNS = ("log_loss", "brier")
REGRESSION_COLUMNS = ("error", "abs_error", "squared_error", "abs_pct_error", "y_true")


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _json_num(v: float) -> float | None:
    # JSON has no NaN; an undefined metric is null.
    return None if math.isnan(v) else float(v)


@dataclass(frozen=True)
class MetricResult:
    """A metric value with its confidence interval and the sample size behind it.

    ``value`` (and the interval) is NaN when the metric is undefined for the data, e.g.
    precision with no predicted positives.
    """

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int

    kind = "metric_result"
    version = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "name": self.name,
            "value": _json_num(self.value),
            "ci_low": _json_num(self.ci_low),
            "ci_high": _json_num(self.ci_high),
            "n": int(self.n),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricResult:
        check_state(dict(d), cls.kind)
        return cls(d["name"], _num(d["value"]), _num(d["ci_low"]), _num(d["ci_high"]), int(d["n"]))


def _result(name: str, value, low, high, n) -> MetricResult:
    return MetricResult(name, float(value), float(low), float(high), int(n))


def _ratio(num, den) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def _wilson_result(name: str, successes, trials, confidence: float) -> MetricResult:
    low, high = wilson_interval(successes, trials, confidence)
    return _result(name, _ratio(successes, trials), low, high, trials)


# --------------------------------------------------------------------------- confusion


def _as_matrix(confusion: ConfusionCounts | np.ndarray) -> np.ndarray:
    m = confusion.total() if isinstance(confusion, ConfusionCounts) else np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(
            f"confusion must be a square (k, k) matrix with k >= 2, got shape {m.shape}"
        )
    if np.any(m < 0):
        raise ValueError("confusion counts must be non-negative")
    return m.astype(np.float64)


def _macro_scores(m: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Macro precision, recall and F1 of confusion matrices ``m[..., true, pred]``.

    Follows scikit-learn's ``zero_division=0``: a class never predicted has precision 0,
    and only classes seen as truth or prediction (``present``) are averaged.
    """
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    pred = m.sum(axis=-2)
    true = m.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(pred > 0, tp / pred, 0.0)
        rec = np.where(true > 0, tp / true, 0.0)
        f1_den = pred + true
        f1 = np.where(f1_den > 0, 2.0 * tp / f1_den, 0.0)
    k = present.sum()
    return np.stack([(x * present).sum(axis=-1) / k for x in (prec, rec, f1)], axis=-1)


def _multinomial_delta_se(m: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Delta-method standard errors of the macro scores under multinomial sampling.

    The confusion cells are a multinomial sample of size N with cell probabilities p, so
    ``Var f(p_hat) ~= (g' diag(p) g - (g'p)^2) / N`` with ``g`` the gradient of f at p.
    With ``row_c``/``col_c`` the true/predicted totals of class c and K present classes,
    the gradients with respect to cell (i, j) are (terms of classes with a zero
    denominator, scored 0 by convention, drop out):

    * macro precision: ``(1/K) (δ_ij - precision_j) / col_j``
    * macro recall: ``(1/K) (δ_ij - recall_i) / row_i``
    * macro F1: ``(1/K) (2 δ_ij / S_i - F1_i / S_i - F1_j / S_j)``, ``S_c = row_c + col_c``
    """
    n = m.sum()
    p = m / n
    k_present = present.sum()
    tp = np.diag(p)
    col = p.sum(axis=0)
    row = p.sum(axis=1)
    s = row + col
    eye = np.eye(p.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_col = np.where(col > 0, 1.0 / col, 0.0)
        inv_row = np.where(row > 0, 1.0 / row, 0.0)
        inv_s = np.where(s > 0, 1.0 / s, 0.0)
        prec = tp * inv_col
        rec = tp * inv_row
        f1 = 2.0 * tp * inv_s
    # Absent classes have zero totals, so every term of theirs is already 0.
    g_prec = (eye - prec[None, :]) * inv_col[None, :]
    g_rec = (eye - rec[:, None]) * inv_row[:, None]
    g_f1 = 2.0 * eye * inv_s[:, None] - (f1 * inv_s)[:, None] - (f1 * inv_s)[None, :]
    g = np.stack([g_prec, g_rec, g_f1]).reshape(3, -1) / k_present
    pv = p.ravel()
    var = (g * g * pv).sum(axis=1) - (g * pv).sum(axis=1) ** 2
    return np.sqrt(np.maximum(var, 0.0) / n)


def classification_metrics(
    confusion: ConfusionCounts | np.ndarray,
    *,
    average: str = "binary",
    positive: int = 1,
    confidence: float = 0.95,
) -> dict[str, MetricResult]:
    """Accuracy, precision, recall and F1 with confidence intervals from confusion counts.

    ``confusion`` is a :class:`ConfusionCounts` (groups are summed) or a ``(k, k)``
    matrix indexed ``[true, predicted]``.

    * ``average="binary"`` (k == 2, class ``positive``): accuracy, precision and recall
      get Wilson intervals. F1 gets a Wilson interval on the Jaccard index
      ``J = tp / (tp + fp + fn)`` (a binomial proportion given tp + fp + fn) mapped
      through the monotone ``F1 = 2J / (1 + J)``; to first order this equals the
      delta-method interval and, unlike it, stays sensible when F1 is 0 or 1.
    * ``average="macro"``: unweighted means over classes (scikit-learn semantics with
      ``zero_division=0``), intervals by the multinomial delta method, clipped to [0, 1].
    """
    m = _as_matrix(confusion)
    n = m.sum()
    out = {"accuracy": _wilson_result("accuracy", np.trace(m), n, confidence)}
    if average == "binary":
        if m.shape[0] != 2 or positive not in (0, 1):
            raise ValueError(
                f"average='binary' needs a 2x2 confusion and positive in (0, 1); "
                f"got shape {m.shape} and positive={positive!r} (use average='macro')"
            )
        tp = m[positive, positive]
        fp = m[:, positive].sum() - tp
        fn = m[positive, :].sum() - tp
        out["precision"] = _wilson_result("precision", tp, tp + fp, confidence)
        out["recall"] = _wilson_result("recall", tp, tp + fn, confidence)
        relevant = tp + fp + fn
        j_low, j_high = wilson_interval(tp, relevant, confidence)
        out["f1"] = _result(
            "f1",
            _ratio(2 * tp, 2 * tp + fp + fn),
            2 * j_low / (1 + j_low),
            2 * j_high / (1 + j_high),
            relevant,
        )
        return out
    if average != "macro":
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    if n == 0:
        for name in ("precision", "recall", "f1"):
            out[name] = _result(name, np.nan, np.nan, np.nan, 0)
        return out
    values = _macro_scores(m, present)
    se = _multinomial_delta_se(m, present)
    low, high = normal_interval(values, se, confidence)
    for i, name in enumerate(("precision", "recall", "f1")):
        out[name] = _result(name, values[i], max(low[i], 0.0), min(high[i], 1.0), n)
    return out


# --------------------------------------------------------------------------- scores


def _binary_hist(hist: ScoreHistogram, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(hist, ScoreHistogram):
        raise TypeError(f"{what} needs a ScoreHistogram, got {type(hist).__name__}")
    if hist.n_classes != 2:
        raise ValueError(
            f"{what} needs a binary ScoreHistogram (n_classes=2), got n_classes={hist.n_classes}; "
            "for a multiclass model feed the top-label confidence with correct/incorrect as the class"
        )
    return hist.counts[0].astype(np.float64), hist.counts[1].astype(np.float64)


def roc_auc(hist: ScoreHistogram, confidence: float = 0.95) -> MetricResult:
    """ROC AUC from a binary score histogram, with the Hanley-McNeil (1982) interval.

    The AUC is the Mann-Whitney probability that a positive outranks a negative, over
    bins: pairs in different bins are ordered by bin, pairs in the same bin count half.
    It equals the exact AUC when no bin mixes distinct scores of both classes; otherwise
    it differs from it by at most ``0.5 * sum_b pos_b * neg_b / (P * N)``.
    """
    neg, pos = _binary_hist(hist, "roc_auc")
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return _result("roc_auc", np.nan, np.nan, np.nan, n_pos + n_neg)
    neg_below = np.cumsum(neg) - neg
    auc = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    low, high = normal_interval(auc, math.sqrt(max(var, 0.0)), confidence)
    return _result("roc_auc", auc, max(float(low), 0.0), min(float(high), 1.0), n_pos + n_neg)


def expected_calibration_error(
    hist: ScoreHistogram, n_bins: int | None = 10, confidence: float = 0.95
) -> MetricResult:
    """Expected calibration error ``sum_b (n_b / N) |mean score_b - positive rate_b|``.

    Bins are ``n_bins`` equal-width bins made by merging adjacent histogram bins
    (``n_bins`` must divide the histogram's; None uses the histogram's own bins). The
    per-bin score sums make the mean score exact within each bin. The plug-in ECE is
    biased upwards by sampling noise, about ``sqrt(2/pi) * sqrt(q(1-q)/n_b)`` per bin,
    so keep bins well filled (10 bins, the default, and hundreds of events per bin).
    The interval is a normal approximation with the bin weights held fixed and the
    binomial variance of each bin's positive rate (Agresti-Coull adjusted, so a bin with
    all or no positives still has a spread); it describes the estimator's spread, not
    that bias, and is rough near ECE = 0.
    """
    neg, pos = _binary_hist(hist, "expected_calibration_error")
    sums = hist.score_sums.sum(axis=0)
    if n_bins is not None:
        if n_bins < 1 or hist.n_bins % n_bins:
            raise ValueError(
                f"n_bins={n_bins!r} must be >= 1 and divide the histogram's {hist.n_bins} bins"
            )
        step = hist.n_bins // n_bins
        neg, pos, sums = (a.reshape(n_bins, step).sum(axis=1) for a in (neg, pos, sums))
    count = neg + pos
    total = count.sum()
    if total == 0:
        return _result("ece", np.nan, np.nan, np.nan, 0)
    ece = float(np.abs(sums - pos).sum() / total)
    # Agresti-Coull-adjusted rate in the variance: a bin at 0% or 100% positives is not
    # known exactly, and the plug-in rate would give it zero variance
    rate = (pos + 2.0) / (count + 4.0)
    se = math.sqrt(float((count * rate * (1 - rate)).sum())) / total
    low, high = normal_interval(ece, se, confidence)
    return _result("ece", ece, max(float(low), 0.0), float(high), total)


def estimated_classification_metrics(
    hist: ScoreHistogram, decision_threshold: float = 0.5, confidence: float = 0.95
) -> dict[str, MetricResult]:
    """Performance expected from scores alone, before labels arrive (confidence-based).

    Assumes the scores are **calibrated**: an event with score p is positive with
    probability p. Then the expected confusion matrix is: over predicted positives
    (score >= ``decision_threshold``) TP = sum p and FP = sum (1 - p); over predicted
    negatives FN = sum p and TN = sum (1 - p). Expected accuracy is therefore the mean of
    max-like terms ``p`` or ``1 - p`` (at 0.5: ``mean(max(p, 1 - p))``), as in NannyML's
    CBPE. If the scores are miscalibrated on the current data (the usual consequence of
    concept drift), these estimates are wrong in an unknown direction: they detect
    performance loss caused by covariate shift, not by a changed relation to the label.

    Labels in the histogram are ignored (counts of all classes are summed), so a
    prediction-only histogram may be fed with every label 0. The threshold is exact
    when it lies on a bin edge (0.5 with an even number of bins); otherwise the bin
    containing it counts as predicted positive if its mean score is >= the threshold.
    A top-label histogram (see the module docstring) with ``decision_threshold=0``
    gives the expected multiclass accuracy (the mean confidence).

    Intervals cover the *realised* metric given the scores: under calibration the
    number of true positives is a sum of independent Bernoulli(p) draws. Its variance
    ``sum p(1-p)`` is bounded above using each bin's mean score, so the intervals are
    conservative; they do not include any calibration error.
    """
    if not 0.0 <= decision_threshold <= 1.0:
        raise ValueError(f"decision_threshold must be in [0, 1], got {decision_threshold!r}")
    if not isinstance(hist, ScoreHistogram):
        raise TypeError(
            f"estimated_classification_metrics needs a ScoreHistogram, got {type(hist).__name__}"
        )
    count = hist.counts.sum(axis=0).astype(np.float64)
    sums = hist.score_sums.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums / count, 0.0)
    pos_t = decision_threshold * hist.n_bins
    predicted = np.arange(hist.n_bins) >= math.ceil(pos_t - 1e-9)
    if abs(pos_t - round(pos_t)) > 1e-9 and int(pos_t) < hist.n_bins:
        b = int(pos_t)
        predicted[b] = mean[b] >= decision_threshold
    var = count * mean * (1 - mean)
    tp = sums[predicted].sum()
    fp = (count - sums)[predicted].sum()
    fn = sums[~predicted].sum()
    tn = (count - sums)[~predicted].sum()
    var_pp, var_pn = var[predicted].sum(), var[~predicted].sum()
    n_pp = tp + fp  # == count[predicted].sum() up to float rounding
    n = count.sum()
    size_pp = int(count[predicted].sum())  # the exact count, for the reported n
    z = z_value(confidence)

    def clip(name, value, se, size):
        if not np.isfinite(value):
            return _result(name, np.nan, np.nan, np.nan, size)
        return _result(name, value, max(value - z * se, 0.0), min(value + z * se, 1.0), size)

    out = {}
    out["estimated_accuracy"] = clip(
        "estimated_accuracy", _ratio(tp + tn, n), math.sqrt(var_pp + var_pn) / n if n else 0.0, n
    )
    out["estimated_precision"] = clip(
        "estimated_precision", _ratio(tp, n_pp), math.sqrt(var_pp) / n_pp if n_pp else 0.0, size_pp
    )
    pos = tp + fn
    rec_var = (fn * fn * var_pp + tp * tp * var_pn) / pos**4 if pos > 0 else 0.0
    out["estimated_recall"] = clip("estimated_recall", _ratio(tp, pos), math.sqrt(rec_var), n)
    d = n_pp + tp + fn
    f1_var = (4 * (n_pp + fn) ** 2 * var_pp + 4 * tp * tp * var_pn) / d**4 if d > 0 else 0.0
    out["estimated_f1"] = clip("estimated_f1", _ratio(2 * tp, d), math.sqrt(f1_var), n)
    return out


# --------------------------------------------------------------------------- moments


def _moments_means(moments: Moments, columns: tuple[str, ...], what: str):
    if not isinstance(moments, Moments):
        raise TypeError(f"{what} needs a Moments sketch, got {type(moments).__name__}")
    if moments.count.size != len(columns):
        raise ValueError(
            f"{what} needs a Moments over the {len(columns)} columns {list(columns)}, "
            f"got {moments.count.size} columns"
        )
    return moments.count, moments.mean, np.sqrt(moments.variance)


def loss_columns(y_true: np.ndarray, proba: np.ndarray, eps: float | None = None) -> np.ndarray:
    """Per-event ``(log_loss, brier)`` columns for a ``Moments(2)`` (see ``LOSS_COLUMNS``).

    Binary: ``proba`` is P(class 1), shape (n,), and ``y_true`` is 0/1; the Brier score
    is ``(p - y)^2``. Multiclass: ``proba`` is (n, k) and ``y_true`` class codes; Brier
    is ``sum_k (p_k - [y == k])^2`` (scikit-learn's conventions). Probabilities are
    clipped to ``[eps, 1 - eps]`` for the log (default: float64 machine epsilon, as
    scikit-learn). Rows with a missing label or probability become NaN and are skipped.
    """
    eps = np.finfo(np.float64).eps if eps is None else float(eps)
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if p.ndim == 1:
        if p.shape != y.shape:
            raise ValueError(f"y_true {y.shape} and proba {p.shape} differ in length")
        p_true = np.where(y == 1, p, 1.0 - p)
        brier = (p - y) ** 2
        bad = ~np.isin(y, (0.0, 1.0)) | ~np.isfinite(p)
    elif p.ndim == 2:
        if p.shape[0] != y.shape[0]:
            raise ValueError(f"y_true ({y.shape[0]},) and proba {p.shape} differ in length")
        k = p.shape[1]
        bad = ~np.isfinite(y) | (y < 0) | (y >= k) | ~np.all(np.isfinite(p), axis=1)
        yi = np.where(bad, 0, y).astype(np.int64)
        onehot = np.zeros_like(p)
        onehot[np.arange(y.size), yi] = 1.0
        p_true = p[np.arange(y.size), yi]
        brier = ((p - onehot) ** 2).sum(axis=1)
    else:
        raise ValueError(f"proba must be 1-D (binary) or 2-D (multiclass), got shape {p.shape}")
    log_loss = -np.log(np.clip(p_true, eps, 1.0 - eps))
    out = np.column_stack([log_loss, brier])
    out[bad] = np.nan
    return out


def _mean_result(name, n, mean, sd, confidence) -> MetricResult:
    low, high = t_interval(mean, sd, n, confidence)
    return _result(name, mean if n > 0 else np.nan, low, high, n)


def loss_metrics(moments: Moments, confidence: float = 0.95) -> dict[str, MetricResult]:
    """Log loss and Brier score (means of :func:`loss_columns`) with Student-t intervals."""
    n, mean, sd = _moments_means(moments, LOSS_COLUMNS, "loss_metrics")
    return {
        c: _mean_result(c, n[i], mean[i], sd[i], confidence) for i, c in enumerate(LOSS_COLUMNS)
    }


def regression_columns(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-event columns for a ``Moments(5)`` (see ``REGRESSION_COLUMNS``).

    ``error = y_pred - y_true`` (so bias > 0 means over-prediction), ``abs_error``,
    ``squared_error``, ``abs_pct_error = |error| / max(|y_true|, eps)`` (scikit-learn's
    MAPE, as a fraction, not per cent) and ``y_true`` itself. A row with a non-finite
    value is NaN in every column, so all columns count the same events. Use the
    reference mean of ``y_true`` as the Moments ``shift`` of the last column.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    yhat = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"y_true {y.shape} and y_pred {yhat.shape} differ in length")
    e = yhat - y
    ae = np.abs(e)
    ape = ae / np.maximum(np.abs(y), np.finfo(np.float64).eps)
    out = np.column_stack([e, ae, e * e, ape, y])
    out[~(np.isfinite(y) & np.isfinite(yhat))] = np.nan
    return out


def regression_metrics(moments: Moments, confidence: float = 0.95) -> dict[str, MetricResult]:
    """MAE, MSE, RMSE, MAPE, bias and R² from a ``Moments`` over :func:`regression_columns`.

    Means (bias, MAE, MSE, MAPE) get Student-t intervals; RMSE is the square root of the
    MSE interval. R² = 1 - SSE / SST gets a delta-method interval with
    ``Var(R²) ~= Var(squared error) / (n s_y^4) + 2 (1 - R²)^2 / (n - 1)``: the second
    term is the normal-theory variance of the sample variance of y (the sketch holds no
    fourth moment of y), and the covariance between squared errors and y's spread is
    ignored, which widens the interval when, as usual, that covariance is positive.
    """
    n, mean, sd = _moments_means(moments, REGRESSION_COLUMNS, "regression_metrics")
    cnt = int(n[0])
    out = {
        "bias": _mean_result("bias", cnt, mean[0], sd[0], confidence),
        "mae": _mean_result("mae", cnt, mean[1], sd[1], confidence),
        "mse": _mean_result("mse", cnt, mean[2], sd[2], confidence),
        "mape": _mean_result("mape", cnt, mean[3], sd[3], confidence),
    }
    mse = out["mse"]
    out["rmse"] = _result(
        "rmse",
        math.sqrt(mse.value) if cnt else np.nan,
        math.sqrt(max(mse.ci_low, 0.0)) if cnt > 1 else np.nan,
        math.sqrt(mse.ci_high) if cnt > 1 else np.nan,
        cnt,
    )
    var_y = float(moments.variance[4])
    if cnt < 2 or not var_y > 0:
        out["r2"] = _result("r2", np.nan, np.nan, np.nan, cnt)
        return out
    sse = cnt * mean[2]
    sst = (cnt - 1) * var_y
    r2 = 1.0 - sse / sst
    sigma2 = sst / cnt  # population variance of y, matching sse / n in the ratio
    var_r2 = sd[2] ** 2 / (cnt * sigma2**2) + 2.0 * (1.0 - r2) ** 2 / (cnt - 1)
    low, high = normal_interval(r2, math.sqrt(var_r2), confidence)
    out["r2"] = _result("r2", r2, low, min(float(high), 1.0), cnt)
    return out
