"""Attribution drift: has the model's global feature-importance ranking changed?

Per-prediction attributions (e.g. SHAP values) are summarised per feature as the mean
``|attribution|`` of a window (:class:`AttributionSketch`, a mergeable sketch of count, sum
of ``|a|`` and sum of ``a^2``), and compared with the reference importance by NDCG@k of the
window's ranking, as SageMaker Clarify and Vertex AI do, plus Spearman's rank correlation.
The statistic is ``1 - NDCG@k``: 0 when the window ranks the reference's top features as
the reference does, growing as important features lose rank to unimportant ones.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> names = ["income", "age", "tenure", "region"]
>>> reference = reference_importance(rng.normal(size=(5000, 4)) * [4.0, 3.0, 2.0, 1.0])
>>> window = AttributionSketch(names)
>>> window.update(rng.normal(size=(1000, 4)) * [4.0, 3.0, 2.0, 1.0])
>>> r = attribution_drift(reference, window, k=3)
>>> r.top_current, round(r.statistic, 3), r.ci_low <= 0.05
(('income', 'age', 'tenure'), 0.0, True)
>>> shifted = AttributionSketch(names)
>>> shifted.update(rng.normal(size=(1000, 4)) * [4.0, 3.0, 2.0, 6.0])
>>> r = attribution_drift(reference, shifted, k=3)
>>> r.top_current, round(r.statistic, 3), r.ci_low > 0.1, round(r.spearman, 2)
(('region', 'income', 'age'), 0.271, True, -0.2)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from detectors._serde import check_state, floats, unfloats
from detectors.intervals import z_value
from detectors.sketch import _Additive

__all__ = [
    "AttributionSketch",
    "AttributionDriftResult",
    "attribution_drift",
    "reference_importance",
]


def _matrix(attributions: np.ndarray, width: int | None, what: str) -> np.ndarray:
    x = np.asarray(attributions, dtype=np.float64)
    if x.ndim != 2 or (width is not None and x.shape[1] != width):
        cols = "d" if width is None else str(width)
        raise ValueError(f"{what} must be an (n, {cols}) matrix, got shape {x.shape}")
    return x


def _abs_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: count of finite values, sum of ``|a|`` and sum of ``a^2`` over them."""
    a = np.abs(x)
    ok = np.isfinite(a)
    # +-inf counts as absent like NaN: one inf would poison a running sum for good (and
    # inf - inf on eviction is NaN).
    if ok.all():
        count = np.full(a.shape[1], a.shape[0], dtype=np.int64)
    else:
        count = ok.sum(axis=0)
        a[~ok] = 0.0
    # einsum: column sums of a row-major batch without a temporary, ~3x ndarray.sum(axis=0)
    return count, np.einsum("ij->j", a), np.einsum("ij,ij->j", a, a)


def reference_importance(attributions: np.ndarray) -> np.ndarray:
    """Mean ``|attribution|`` per column of an ``(n, d)`` reference matrix.

    NaN and +-inf are absent (as in :class:`AttributionSketch`); a column without any
    finite value gets NaN, and :func:`attribution_drift` then leaves that feature out.
    """
    count, total, _ = _abs_sums(_matrix(attributions, None, "attributions"))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


class AttributionSketch(_Additive):
    """Mergeable per-feature count, sum of ``|a|`` and sum of ``a^2`` of attributions.

    ``update`` takes an ``(n, d)`` matrix in ``features`` order; NaN (and +-inf) is an
    absent attribution and is skipped for that feature only. Merging adds the arrays and
    subtracting removes a merged pane, so a sliding window is a running sum of panes. The
    sums are floats (attributions have no known scale to fix a quantum by), so a window
    built in a different order of panes agrees to rounding, not bit for bit; a restored
    state continues bit for bit.
    """

    kind = "attribution_sketch"
    version = 1
    _fields = ("count", "sum_abs", "sum_sq")
    _layout = ("features",)

    def __init__(self, features: Sequence[str]):
        if isinstance(features, str):
            raise ValueError(f"features must be a sequence of names, got the string {features!r}")
        names = tuple(str(f) for f in features)
        if not names:
            raise ValueError("features must name at least one feature, got an empty sequence")
        if len(set(names)) != len(names):
            dup = sorted({f for f in names if names.count(f) > 1})
            raise ValueError(f"features must be unique, got duplicates {dup}")
        self.features = names
        d = len(names)
        self.count = np.zeros(d, dtype=np.int64)
        self.sum_abs = np.zeros(d, dtype=np.float64)
        self.sum_sq = np.zeros(d, dtype=np.float64)

    @property
    def n(self) -> int:
        """Rows seen: the largest count over features (rows without any attribution do not count)."""
        return int(self.count.max())

    def update(self, attributions: np.ndarray) -> None:
        x = _matrix(attributions, len(self.features), "attributions")
        count, total, squares = _abs_sums(x)
        self.count += count
        self.sum_abs += total
        self.sum_sq += squares

    def mean_abs(self) -> np.ndarray:
        """Mean ``|attribution|`` per feature; NaN for a feature with no data."""
        with np.errstate(invalid="ignore", divide="ignore"):
            # masked on count, not left to 0/0: an evicted pane can leave a residue of
            # rounding in the sums when the count is back to 0
            return np.where(self.count > 0, self.sum_abs / self.count, np.nan)

    def std_error(self) -> np.ndarray:
        """Standard error of :meth:`mean_abs` (sample s.d. of ``|a|`` / sqrt(count));
        NaN for a feature with fewer than two values."""
        c = self.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.sum_abs / c
            var = np.maximum(self.sum_sq - c * m * m, 0.0) / (c - 1.0)
            return np.where(self.count > 1, np.sqrt(var / c), np.nan)

    def copy(self) -> AttributionSketch:
        out = AttributionSketch(self.features)
        out.count, out.sum_abs, out.sum_sq = self.count.copy(), self.sum_abs.copy(), self.sum_sq.copy()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "features": list(self.features),
            "count": self.count.tolist(),
            "sum_abs": floats(self.sum_abs),
            "sum_sq": floats(self.sum_sq),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AttributionSketch:
        check_state(d, cls.kind)
        s = cls(d["features"])
        shape = s.count.shape
        try:
            s.count = np.asarray(d["count"], dtype=np.int64).reshape(shape)
            s.sum_abs = unfloats(d["sum_abs"]).reshape(shape)
            s.sum_sq = unfloats(d["sum_sq"]).reshape(shape)
        except ValueError:
            raise ValueError(
                f"attribution_sketch state arrays do not match its {shape[0]} features"
            ) from None
        return s


def _json_num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _num(v: float | None) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True)
class AttributionDriftResult:
    """Attribution drift of one window against the reference.

    ``statistic`` is ``1 - ndcg`` (NDCG@k of the window's ranking with the reference
    importance as relevance); ``[ci_low, ci_high]`` is its parametric-bootstrap interval
    over the window's sampling noise. ``top_reference`` / ``top_current`` are the top-k
    feature names by reference / window importance. All numbers are NaN (and
    ``top_current`` empty) when the window has too little data to rank.
    """

    statistic: float
    ci_low: float
    ci_high: float
    ndcg: float
    spearman: float
    top_reference: tuple[str, ...]
    top_current: tuple[str, ...]
    n: int

    kind = "attribution_drift_result"
    version = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "statistic": _json_num(self.statistic),
            "ci_low": _json_num(self.ci_low),
            "ci_high": _json_num(self.ci_high),
            "ndcg": _json_num(self.ndcg),
            "spearman": _json_num(self.spearman),
            "top_reference": list(self.top_reference),
            "top_current": list(self.top_current),
            "n": int(self.n),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttributionDriftResult:
        check_state(dict(d), cls.kind)
        return cls(
            _num(d["statistic"]),
            _num(d["ci_low"]),
            _num(d["ci_high"]),
            _num(d["ndcg"]),
            _num(d["spearman"]),
            tuple(str(f) for f in d["top_reference"]),
            tuple(str(f) for f in d["top_current"]),
            int(d["n"]),
        )


def _discount(d: int, k: int) -> np.ndarray:
    """scikit-learn's DCG discount ``1 / log2(rank + 1)``, zero past rank k."""
    disc = 1.0 / np.log2(np.arange(d) + 2.0)
    disc[k:] = 0.0
    return disc


def _dcg_rows(gain: np.ndarray, scores: np.ndarray, discount: np.ndarray) -> np.ndarray:
    """DCG of each row of ``scores`` (r, d) ranking the fixed ``gain`` (d,), ties averaged.

    As scikit-learn (McSherry & Najork 2008): features tied in score share the mean gain
    of their group times the summed discount of the ranks the group spans, i.e. the DCG
    averaged over every order of the ties. Vectorised over rows with group sums by
    ``bincount`` on (row, group) ids.
    """
    r, d = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    s = scores[np.arange(r)[:, None], order]
    g = gain[order]
    starts = np.ones((r, d), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    if starts.all():
        # an elementwise product summed per row, not a matrix product: each row then gets
        # the same rounding whatever the number of rows (point estimate and draws agree)
        return (g * discount).sum(axis=1)
    gid = (np.cumsum(starts, axis=1) - 1 + (np.arange(r) * d)[:, None]).ravel()
    size = r * d
    gsum = np.bincount(gid, weights=g.ravel(), minlength=size)
    dsum = np.bincount(gid, weights=np.broadcast_to(discount, (r, d)).ravel(), minlength=size)
    cnt = np.bincount(gid, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_group = np.where(cnt > 0, gsum / cnt * dsum, 0.0)
    return per_group.reshape(r, d).sum(axis=1)


def _ndcg_rows(relevance: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """``sklearn.metrics.ndcg_score([relevance], [row], k=k)`` for each row of ``scores``."""
    disc = _discount(relevance.size, k)
    ideal = float(np.sort(relevance)[::-1] @ disc)
    if ideal == 0.0:
        # scikit-learn scores a sample with no relevant item 0
        return np.zeros(scores.shape[0])
    return _dcg_rows(relevance, scores, disc) / ideal


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy's ``rankdata``)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.empty(x.size, dtype=bool)
    first[0] = True
    first[1:] = xs[1:] != xs[:-1]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], x.size)  # one past each group's last 0-based position
    ranks = np.empty(x.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks (scipy's ``spearmanr``); NaN for constant input."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if den == 0.0:
        return float("nan")
    return float(np.clip(float(ra @ rb) / den, -1.0, 1.0))


@lru_cache(maxsize=16)
def _standard_normal(seed: int, n_draws: int, d: int) -> np.ndarray:
    # The same seed draws the same matrix every window: cache it rather than pay for a new
    # Generator each evaluation. ``mean + se * z`` is bit for bit ``rng.normal(mean, se)``.
    z = np.random.default_rng(seed).standard_normal((n_draws, d))
    z.flags.writeable = False
    return z


def _quantiles(x: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    """``np.quantile(x, q)`` (linear interpolation) of a 1-D array, without its overhead."""
    xs = np.sort(x)
    out = []
    for p in q:
        pos = p * (xs.size - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, xs.size - 1)
        t = pos - lo
        a, b = float(xs[lo]), float(xs[hi])
        # numpy's lerp: from the nearer end, so a tie (a == b) returns a exactly
        out.append(b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t)
    return out[0], out[1]


def _top(values: np.ndarray, names: tuple[str, ...], k: int) -> tuple[str, ...]:
    # stable: ties keep the features' configured order, so the names do not flicker
    order = np.argsort(-values, kind="stable")[:k]
    return tuple(names[i] for i in order)


def attribution_drift(
    reference: np.ndarray,
    current: AttributionSketch,
    k: int = 5,
    confidence: float = 0.95,
    n_draws: int = 200,
    seed: int = 0,
) -> AttributionDriftResult:
    """Drift of the window's feature-importance ranking from the reference's.

    ``reference`` is the reference mean ``|attribution|`` per feature (``(d,)``, in
    ``current.features`` order, e.g. from :func:`reference_importance`): the relevance of
    each feature. ``ndcg`` is NDCG@k of the ranking by the window's mean ``|attribution|``
    exactly as ``sklearn.metrics.ndcg_score([reference], [current_mean], k=k)`` (tied
    window scores averaged as scikit-learn does; an all-zero reference scores 0, as there);
    ``spearman`` is ``scipy.stats.spearmanr(reference, current_mean)`` (NaN when either is
    constant). Features with no data in the reference (NaN) or in the window are left out
    of both: a feature whose attributions stopped arriving is a data-quality problem, not
    a change in how the model uses it. With fewer than two features left, or an empty
    window, the result is NaN.

    The interval is a parametric bootstrap: ``n_draws`` window means are drawn per feature
    from Normal(mean_abs, std_error) (seeded, so a window always gets the same interval)
    and ``1 - NDCG@k`` is taken per draw; ``ci_low``/``ci_high`` are its ``(1 - c)/2`` and
    ``(1 + c)/2`` quantiles. It covers the window's sampling noise only, not the
    reference's (the reference importance is taken as exact), and it is NaN when a used
    feature has fewer than two values in the window. As ``1 - NDCG`` cannot go below 0,
    noise between near-equal features only raises it: with close importances the interval
    can lie above a point statistic of 0, so alert on ``ci_low`` with a margin (e.g. 0.1).
    """
    if not isinstance(current, AttributionSketch):
        raise TypeError(f"current must be an AttributionSketch, got {type(current).__name__}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer >= 1, got {k!r}") from None
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    z_value(confidence)  # validates confidence in (0, 1)
    if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    ref = np.asarray(reference, dtype=np.float64)
    d = len(current.features)
    if ref.shape != (d,):
        raise ValueError(
            f"reference must have shape ({d},) to match the sketch's features, got {ref.shape}"
        )
    if np.any(ref[~np.isnan(ref)] < 0) or np.any(np.isinf(ref)):
        raise ValueError(
            "reference must be mean |attribution| values: finite and >= 0 (NaN = no data), "
            f"got {ref.tolist()}"
        )

    cur = current.mean_abs()
    used = ~np.isnan(ref) & ~np.isnan(cur)
    names = tuple(f for f, u in zip(current.features, used, strict=True) if u)
    top_reference = _top(np.where(np.isnan(ref), -np.inf, ref), current.features,
                         min(k, int((~np.isnan(ref)).sum())))
    nan = float("nan")
    if len(names) < 2:
        return AttributionDriftResult(nan, nan, nan, nan, nan, top_reference, (), current.n)

    rel, mean, se = ref[used], cur[used], current.std_error()[used]
    bootstrap = bool(np.all(np.isfinite(se)))
    rows = mean[None, :]
    if bootstrap:
        # the point estimate as row 0 of the draws: one ranking pass, the same arithmetic
        draws = mean + se * _standard_normal(int(seed), int(n_draws), mean.size)
        rows = np.vstack([rows, draws])
    ndcgs = _ndcg_rows(rel, rows, k)
    ndcg = float(ndcgs[0])
    statistic = max(1.0 - ndcg, 0.0)  # NDCG can exceed 1 by a rounding error
    if bootstrap:
        stats = np.maximum(1.0 - ndcgs[1:], 0.0)
        ci_low, ci_high = _quantiles(stats, ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0))
    else:
        ci_low = ci_high = nan
    return AttributionDriftResult(
        statistic=statistic,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        ndcg=ndcg,
        spearman=_spearman(rel, mean),
        top_reference=top_reference,
        top_current=_top(mean, names, k),
        n=current.n,
    )
