"""Multivariate drift: the PCA reconstruction error of the numeric features.

A PCA fitted on the reference keeps the directions that carry most of its variance; a row
is projected onto them and back, and the distance to its reconstruction is its error. When
the relations *between* features change (a correlation flips, a feature decouples from
the others) the error grows even though every marginal is unchanged, which no univariate
test can see. This follows NannyML's ``DataReconstructionDriftCalculator`` on numeric
features: missing values are imputed with the reference mean, features are standardised
with the reference mean and standard deviation (ddof=0; a constant feature gets scale 1),
and the per-row error is the Euclidean norm of the residual in standardised units.

Categorical features are left out of the PCA. A one-hot encoding of a large vocabulary has
as many columns as categories and dominates both the components and the error, and
NannyML's alternative, replacing a category by its reference frequency, maps distinct
categories with similar frequencies onto one number, so a swap between them is invisible
and the encoding means something different as soon as the vocabulary shifts. The
univariate chi-square tests already cover categorical features, one by one.

The per-event path is :meth:`PCAReconstruction.errors` over a micro-batch; a window keeps
a :class:`~detectors.sketch.Moments` of those errors (mergeable, so sliding windows are
running sums), and :func:`reconstruction_error` / :func:`reconstruction_change` turn it
into a value with an interval.

>>> import numpy as np
>>> from detectors.sketch import Moments
>>> rng = np.random.default_rng(0)
>>> cov = np.eye(6)
>>> cov[0, 1] = cov[1, 0] = 0.9   # a and b move together ...
>>> cov[2, 3] = cov[3, 2] = 0.8
>>> model = PCAReconstruction.fit(rng.multivariate_normal(np.zeros(6), cov, 5000), list("abcdef"))
>>> model.n_components_
3
>>> cov[0, 1] = cov[1, 0] = -0.9  # ... until they move against each other: same marginals
>>> window = Moments(1)
>>> window.update(model.errors(rng.multivariate_normal(np.zeros(6), cov, 1000)))
>>> change = reconstruction_change(window, model)
>>> round(change.value, 1), change.ci_low > 0
(0.6, True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from detectors._serde import check_state, floats, unfloats
from detectors.intervals import t_interval, z_value
from detectors.performance import MetricResult
from detectors.sketch import Histogram, Moments, quantile_edges

__all__ = ["PCAReconstruction", "reconstruction_error", "reconstruction_change"]

# A reference reconstructed to within this share of its typical row norm is reconstructed
# exactly up to rounding (its rank is <= k): the error would then measure only rounding.
_EXACT_FIT = 1e-9


def _n_components(n_components: Any, d: int) -> tuple[float | None, int | None]:
    """(share of variance, None) or (None, number of components), validated for ``d``."""
    allowed = (
        f"a share of variance in (0, 1) or a number of components in [1, {d - 1}] "
        f"(fewer than the {d} features)"
    )
    if isinstance(n_components, bool | np.bool_):
        raise ValueError(f"n_components must be {allowed}, got {n_components!r}")
    if isinstance(n_components, numbers.Integral):
        k = int(n_components)
        if not 1 <= k <= d - 1:
            raise ValueError(f"n_components must be {allowed}, got {n_components!r}")
        return None, k
    if isinstance(n_components, numbers.Real):
        v = float(n_components)
        if 0.0 < v < 1.0:
            return v, None
        # A float config value such as 3.0 names a number of components.
        if math.isfinite(v) and v == round(v) and 1 <= v <= d - 1:
            return None, int(v)
    raise ValueError(f"n_components must be {allowed}, got {n_components!r}")


def _residual_projector(components: np.ndarray) -> np.ndarray:
    # I - V'V: one (d, d) product per batch gives every row's residual.
    return np.eye(components.shape[1]) - components.T @ components


def _residual_norms(
    x: np.ndarray, mean: np.ndarray, inv_scale: np.ndarray, residual: np.ndarray
) -> np.ndarray:
    missing = ~np.isfinite(x)
    with np.errstate(invalid="ignore", over="ignore"):
        z = (x - mean) * inv_scale
    z[missing] = 0.0  # the reference mean, standardised
    r = z @ residual
    with np.errstate(over="ignore"):
        e = np.sqrt(np.einsum("ij,ij->i", r, r))
    e[missing.all(axis=1) | ~np.isfinite(e)] = np.nan
    return e


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


class PCAReconstruction:
    """A reference's PCA and the distribution of its per-row reconstruction errors.

    Build it with :meth:`fit` (or :meth:`from_dict`). Attributes: ``features`` (names, in
    the column order of ``X``), ``mean`` and ``scale`` (standardisation, per feature),
    ``components`` (``(k, d)``, orthonormal rows), ``n_components_`` (k), and the
    reference's errors: ``ref_mean_error``, ``ref_std_error`` (ddof=1), ``ref_n``,
    ``error_edges`` (inner quantile edges for an error histogram) and
    ``ref_error_counts`` (the reference's counts on those edges). ``n_components`` and
    ``n_error_bins`` are the requested values.

    The reference errors are in-sample: the PCA was fitted to the same rows, so they are
    slightly smaller on average than fresh rows from the same distribution would give.
    The bias is of order ``k (d - k) / n`` relative (about 0.1% for 20 features and 20k
    rows), far below a window's sampling error.
    """

    kind = "pca_reconstruction"
    version = 1

    def __init__(
        self,
        *,
        features: Sequence[str],
        mean: np.ndarray,
        scale: np.ndarray,
        components: np.ndarray,
        ref_mean_error: float,
        ref_std_error: float,
        ref_n: int,
        error_edges: np.ndarray,
        ref_error_counts: np.ndarray,
        n_components: float | int,
        n_error_bins: int,
    ):
        feats = tuple(features)
        d = len(feats)
        if not all(isinstance(f, str) for f in feats) or len(set(feats)) != d:
            raise ValueError(f"features must be unique strings, got {list(feats)!r}")
        self.features = feats
        self.mean = _frozen(mean)
        self.scale = _frozen(scale)
        self.components = _frozen(components)
        if self.mean.shape != (d,) or self.scale.shape != (d,):
            raise ValueError(
                f"mean and scale must have one value per feature ({d}), "
                f"got shapes {self.mean.shape} and {self.scale.shape}"
            )
        finite = np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.scale))
        if not (finite and np.all(self.scale > 0)):
            raise ValueError("mean must be finite and scale finite and > 0")
        c = self.components
        if c.ndim != 2 or c.shape[1] != d or not 1 <= c.shape[0] < d or not np.all(np.isfinite(c)):
            raise ValueError(
                f"components must be a finite (k, {d}) array with 1 <= k < {d}, got shape {c.shape}"
            )
        self.n_components_ = int(c.shape[0])
        self.ref_mean_error = float(ref_mean_error)
        self.ref_std_error = float(ref_std_error)
        self.ref_n = int(ref_n)
        if not (self.ref_mean_error > 0 and self.ref_std_error >= 0 and self.ref_n >= 2):
            raise ValueError(
                f"ref_mean_error must be > 0, ref_std_error >= 0 and ref_n >= 2, got "
                f"{ref_mean_error!r}, {ref_std_error!r}, {ref_n!r}"
            )
        try:
            self.error_edges = _frozen(Histogram(error_edges).edges)
        except ValueError as e:
            raise ValueError(f"error_edges: {e}") from None
        counts = np.array(ref_error_counts, dtype=np.int64)
        if counts.shape != (self.error_edges.size + 1,) or np.any(counts < 0):
            raise ValueError(
                f"ref_error_counts must be {self.error_edges.size + 1} non-negative counts, "
                f"got shape {counts.shape}"
            )
        counts.setflags(write=False)
        self.ref_error_counts = counts
        # JSON-safe as given (a share or a count), whatever numeric type it came in
        integral = isinstance(n_components, numbers.Integral)
        self.n_components = int(n_components) if integral else float(n_components)
        self.n_error_bins = int(n_error_bins)
        self._inv_scale = 1.0 / self.scale
        self._residual = _residual_projector(c)

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        features: Sequence[str],
        n_components: float | int = 0.65,
        n_error_bins: int = 20,
    ) -> PCAReconstruction:
        """Fit on reference rows ``X`` (``(n, d)`` numeric features; NaN or +-inf = missing).

        ``n_components``: a float in (0, 1) keeps the fewest components whose cumulative
        explained variance ratio exceeds it (scikit-learn's rule, ``side="right"``); an
        integer (or an integral float such as 3.0) keeps that many, at most ``d - 1``.
        Rows with every feature missing carry no information and are dropped; the rest
        must number at least ``2 * d``.
        """
        x = np.array(X, dtype=np.float64)  # a copy: missing values are imputed in place below
        if x.ndim != 2:
            raise ValueError(f"X must be a 2-D (rows, features) array, got shape {x.shape}")
        n, d = x.shape
        feats = tuple(features)
        if len(feats) != d:
            raise ValueError(f"features must name the {d} columns of X, got {len(feats)} names")
        if d < 2:
            raise ValueError(f"X must have at least 2 features for a PCA reconstruction, got {d}")
        share, k = _n_components(n_components, d)
        bins_ok = isinstance(n_error_bins, numbers.Integral) and not isinstance(n_error_bins, bool)
        if not bins_ok or n_error_bins < 2:
            raise ValueError(f"n_error_bins must be an integer >= 2, got {n_error_bins!r}")
        missing = ~np.isfinite(x)
        rows = ~missing.all(axis=1)
        x, missing = x[rows], missing[rows]
        n = x.shape[0]
        if n < 2 * d:
            raise ValueError(f"X must have at least 2 * d = {2 * d} rows with a value, got {n}")
        seen = (~missing).sum(axis=0)
        if np.any(seen == 0):
            empty = [feats[j] for j in np.flatnonzero(seen == 0)]
            raise ValueError(f"X has no values for features {empty}")
        x[missing] = 0.0
        mean = x.sum(axis=0) / seen
        x[missing] = np.broadcast_to(mean, x.shape)[missing]
        centred = x - mean
        # ddof=0 over the imputed column, as StandardScaler after SimpleImputer computes it
        sd = np.sqrt((centred * centred).mean(axis=0))
        constant = x.max(axis=0) == x.min(axis=0)
        if np.count_nonzero(~constant) < 2:
            names = [feats[j] for j in np.flatnonzero(constant)]
            raise ValueError(f"X must have at least 2 non-constant features; constant: {names}")
        scale = np.where(constant, 1.0, sd)
        z = centred / scale
        z -= z.mean(axis=0)  # zero up to rounding; PCA centres, so do the same
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        if share is not None:
            var = s * s
            k = int(np.searchsorted(np.cumsum(var / var.sum()), share, side="right")) + 1
            if k >= d:
                raise ValueError(
                    f"n_components={n_components!r} keeps all {d} components of X, so nothing "
                    "is left to measure; lower it or give a number of components"
                )
        components = vt[:k]
        # Through the per-event arithmetic, so reference and stream errors are computed alike
        # (imputed entries of x equal the mean, so they standardise to 0 as in errors()).
        e = _residual_norms(x, mean, 1.0 / scale, _residual_projector(components))
        typical = math.sqrt(float((z * z).sum(axis=1).mean()))
        if not e.mean() > _EXACT_FIT * typical:
            raise ValueError(
                f"n_components={n_components!r} ({k} components) reconstructs X exactly (its "
                "rank is at most k, e.g. duplicated or linearly dependent features); lower it"
            )
        edges = quantile_edges(e, int(n_error_bins))
        hist = Histogram(edges)
        hist.update(e)
        return cls(
            features=feats,
            mean=mean,
            scale=scale,
            components=components,
            ref_mean_error=float(e.mean()),
            ref_std_error=float(e.std(ddof=1)),
            ref_n=n,
            error_edges=edges,
            ref_error_counts=hist.counts,
            n_components=n_components,
            n_error_bins=int(n_error_bins),
        )

    def errors(self, X: np.ndarray) -> np.ndarray:
        """Per-row reconstruction error of ``X`` (``(n, d)``, or one row ``(d,)``).

        The Euclidean distance between the standardised row and its reconstruction from
        the kept components, in standardised units. A missing (NaN or +-inf) value is
        imputed with the reference mean, as in the reference; a row with every feature
        missing has no error (NaN, which :class:`~detectors.sketch.Moments` skips).
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        d = self.mean.size
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(
                f"X must be an (n, {d}) array of the features {list(self.features)}, got shape {x.shape}"
            )
        return _residual_norms(x, self.mean, self._inv_scale, self._residual)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "features": list(self.features),
            "n_components": self.n_components,
            "n_error_bins": self.n_error_bins,
            "mean": floats(self.mean),
            "scale": floats(self.scale),
            "components": floats(self.components),
            "ref_mean_error": self.ref_mean_error,
            "ref_std_error": self.ref_std_error,
            "ref_n": self.ref_n,
            "error_edges": floats(self.error_edges),
            "ref_error_counts": self.ref_error_counts.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PCAReconstruction:
        check_state(d, cls.kind)
        return cls(
            features=d["features"],
            mean=unfloats(d["mean"]),
            scale=unfloats(d["scale"]),
            components=unfloats(d["components"]),
            ref_mean_error=d["ref_mean_error"],
            ref_std_error=d["ref_std_error"],
            ref_n=d["ref_n"],
            error_edges=unfloats(d["error_edges"]),
            ref_error_counts=np.asarray(d["ref_error_counts"], dtype=np.int64),
            n_components=d["n_components"],
            n_error_bins=d["n_error_bins"],
        )

    def __repr__(self) -> str:
        return (
            f"PCAReconstruction(features={list(self.features)!r}, n_components_={self.n_components_}, "
            f"ref_mean_error={self.ref_mean_error:.6g}, ref_n={self.ref_n})"
        )


def _window(moments: Moments, model: PCAReconstruction, what: str) -> tuple[int, float, float]:
    if not isinstance(moments, Moments):
        raise TypeError(f"{what}: moments must be a Moments sketch, got {type(moments).__name__}")
    if moments.count.size != 1:
        raise ValueError(
            f"{what}: moments must be a Moments(1) over the per-row errors, "
            f"got {moments.count.size} columns"
        )
    if not isinstance(model, PCAReconstruction):
        raise TypeError(f"{what}: model must be a PCAReconstruction, got {type(model).__name__}")
    n = int(moments.count[0])
    sd = math.sqrt(float(moments.variance[0])) if n >= 2 else math.nan
    return n, float(moments.mean[0]), sd


def reconstruction_error(
    moments: Moments, model: PCAReconstruction, confidence: float = 0.95
) -> MetricResult:
    """A window's mean reconstruction error with a Student-t interval.

    ``moments`` is a ``Moments(1)`` over :meth:`PCAReconstruction.errors` of the window's
    rows. The interval is NannyML's ``mean +- k * sd / sqrt(n)`` with a t quantile
    instead of a fixed ``k = 3``. It covers the mean error of the distribution the window
    is drawn from; compare it with ``model.ref_mean_error``.
    """
    n, mean, sd = _window(moments, model, "reconstruction_error")
    low, high = t_interval(mean, sd if n >= 2 else 0.0, n, confidence)
    value = mean if n > 0 else math.nan
    return MetricResult("reconstruction_error", value, float(low), float(high), n)


def reconstruction_change(
    moments: Moments, model: PCAReconstruction, confidence: float = 0.95
) -> MetricResult:
    """Relative change of the mean reconstruction error: ``window mean / reference mean - 1``.

    Unit-free (the error's scale depends on the number of features and components) and
    growing with drift; 0 means no change. The interval is Fieller's for the ratio
    ``a / b`` of two independent means, including the reference's own sampling error:
    the set of ``rho`` with ``(a - rho b)^2 <= c^2 (var_a + rho^2 var_b)``, where
    ``var = sd^2 / n`` per sample. Unlike the delta method it is asymmetric around the
    estimate, as the sampling distribution of a ratio is, and keeps its coverage when the
    standard errors are not small against the means; when they are, the two agree. The
    critical value ``c`` is Student-t with ``n_window - 1`` degrees of freedom, which is
    conservative when the reference is at least as large as the window (Welch's degrees
    of freedom are at least the smaller sample's ``n - 1``).
    The interval is NaN when the window has fewer than 2 errors, or if the reference
    mean were not distinguishable from 0 (then the ratio is unbounded).
    """
    n, a, sd = _window(moments, model, "reconstruction_change")
    z_value(confidence)  # validates confidence
    b = model.ref_mean_error
    value = a / b - 1.0 if n > 0 else math.nan
    if n < 2:
        return MetricResult("reconstruction_error_change", value, math.nan, math.nan, n)
    c = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1))
    var_a = sd * sd / n
    var_b = model.ref_std_error**2 / model.ref_n
    c2 = c * c
    denom = b * b - c2 * var_b
    if not denom > 0:
        return MetricResult("reconstruction_error_change", value, math.nan, math.nan, n)
    half = c * math.sqrt(a * a * var_b + b * b * var_a - c2 * var_a * var_b)
    low = (a * b - half) / denom - 1.0
    high = (a * b + half) / denom - 1.0
    return MetricResult("reconstruction_error_change", value, low, high, n)
