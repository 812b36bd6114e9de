"""Synthetic prediction and label streams with changes injected at known times.

Used by the demo, the soundness tests and the benchmarks. A model is a logistic score of
numeric features (standard normal) and categorical features; the label is drawn from the
score (so the model is calibrated) until a performance change flips a share of labels.
Changes: a covariate shift of one feature (in standard deviations), a selection-rate drop
for one group of a sensitive attribute (its scores are scaled down and its labels follow,
so accuracy holds), an accuracy drop (a share of labels flipped), a confidence drop (the
numeric features shrink towards 0, so scores move to the middle and accuracy falls while
the model stays calibrated: visible to label-free estimates), a correlation flip (two
features' correlation changes sign, their marginals stay), a degraded slice (labels
flipped within one pair of categories), a label stop (no labels after a time), a
reweight (a new model version multiplies one feature's weight by ``factor``), a traffic
spike (the rate times ``factor`` until ``until``) and a probe (extra queries at ``rate``
per second until ``until``, all within ``spread`` standard deviations of one point: a
near-duplicate burst). ``ModelSpec.diurnal`` gives the rate a daily cycle.
With ``attributions`` each prediction carries the exact per-feature contributions to the
logit (a linear model's SHAP values with independent features). Everything is vectorised and seeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelSpec", "Change", "generate", "reference_frame", "reference_profile", "config_models_toml",
           "default_rules", "SECURITY_RULES"]

# config.toml's example rules (drift, accuracy, selection-rate parity); the accuracy
# levels depend on the synthetic model's reference accuracy, so they are parameters.
_RULES = """
[[models.rules]]
name = "feature-drift"
metric = "psi"
scope = "feature"
warn = 0.1
alert = 0.25
min_samples = 500
for = 2

[[models.rules]]
name = "accuracy-drop"
metric = "accuracy"
direction = "below"
warn = {acc_warn}
alert = {acc_alert}
min_samples = 300
for = 2
severity = "critical"
actions = ["notify", "retrain"]

[[models.rules]]
name = "selection-rate-parity"
metric = "demographic_parity_difference"
scope = "group"
warn = 0.1
alert = 0.2
min_samples = 500
for = 2
severity = "critical"
"""


#: config.toml's default security rules (thresholds as documented there).
SECURITY_RULES = """
[[models.rules]]
name = "traffic-anomaly"
metric = "traffic_rate_anomaly"
warn = 4.0
alert = 6.0
min_samples = 10
for = 2

[[models.rules]]
name = "near-duplicate-burst"
metric = "near_duplicate_share"
warn = 0.05
alert = 0.1
min_samples = 200
for = 2

[[models.rules]]
name = "out-of-support"
metric = "out_of_support_share"
warn = 0.05
alert = 0.1
min_samples = 200
for = 2

[[models.rules]]
name = "schema-violations"
metric = "schema_violation_rate"
warn = 0.01
alert = 0.05
min_samples = 200
for = 2
"""


def default_rules(acc_warn: float, acc_alert: float) -> str:
    """The ``[[models.rules]]`` TOML of the example rules with the given accuracy levels."""
    return _RULES.format(acc_warn=acc_warn, acc_alert=acc_alert)


@dataclass
class Change:
    """A change starting at ``at`` seconds after the stream start."""

    kind: str  # covariate_shift | selection_drop | accuracy_drop | confidence_drop | correlation_flip
    #            | slice_errors | labels_stop | reweight
    at: float
    feature: str = ""
    shift: float = 0.5  # covariate_shift: in standard deviations
    attribute: str = ""
    group: str = ""
    factor: float = 0.5  # selection_drop: score multiplier for the group
    flip: float = 0.3  # accuracy_drop, slice_errors: share of labels flipped
    other: str = ""  # correlation_flip: the second feature (with ``feature``)
    where: dict[str, str] = field(default_factory=dict)  # slice_errors: categorical feature -> category
    until: float = float("inf")  # traffic_spike, probe: end (seconds after the stream start)
    rate: float = 0.0  # probe: extra queries per second
    spread: float = 0.01  # probe: standard deviation of the perturbations


@dataclass
class ModelSpec:
    name: str
    n_numeric: int = 20
    n_categorical: int = 5
    sensitive: dict[str, list[str]] = field(default_factory=lambda: {"sex": ["F", "M"], "age_band": ["18-30", "31-50", "51+"]})
    rate: float = 5.0  # predictions per second of event time
    label_delay: float = 120.0  # mean label delay (exponential), seconds
    label_share: float = 1.0  # share of predictions that ever get a label
    changes: list[Change] = field(default_factory=list)
    # (feature, feature, rho): pairs of numeric features correlated in every draw
    correlated: list[tuple[str, str, float]] = field(default_factory=list)
    attributions: bool = False  # records carry per-feature attributions
    diurnal: float = 0.0  # relative amplitude of a daily rate cycle (0: constant rate)

    @property
    def numeric(self) -> list[str]:
        return [f"num_{i:02d}" for i in range(self.n_numeric)]

    @property
    def categorical(self) -> list[str]:
        return [f"cat_{i}" for i in range(self.n_categorical)]


_CATS = ["a", "b", "c", "d"]
_CAT_P = np.array([0.4, 0.3, 0.2, 0.1])


def _draw(spec: ModelSpec, n: int, rng: np.random.Generator, t: np.ndarray | None = None):
    X = rng.standard_normal((n, spec.n_numeric))
    C = rng.choice(len(_CATS), size=(n, spec.n_categorical), p=_CAT_P)
    S = {a: rng.integers(0, len(v), size=n) for a, v in spec.sensitive.items()}
    w = np.linspace(1.0, -1.0, spec.n_numeric) if spec.n_numeric else np.zeros(0)
    for a, b, rho in spec.correlated:
        i, j = spec.numeric.index(a), spec.numeric.index(b)
        r = np.full(n, rho)
        if t is not None:
            for c in spec.changes:
                if c.kind == "correlation_flip" and {c.feature, c.other} == {a, b}:
                    r = np.where(t >= c.at, -rho, r)
        X[:, j] = r * X[:, i] + np.sqrt(1 - r * r) * X[:, j]  # same N(0, 1) marginal
    if t is not None:
        for c in spec.changes:
            if c.kind == "covariate_shift":
                j = spec.numeric.index(c.feature)
                X[t >= c.at, j] += c.shift
            elif c.kind == "confidence_drop":
                X[t >= c.at] *= c.factor
    contrib = X * (w * 0.6)  # each numeric feature's additive part of the logit
    if t is not None:
        for c in spec.changes:
            if c.kind == "reweight":  # a new model version leans on one feature more (or less)
                j = spec.numeric.index(c.feature)
                contrib[:, j] = np.where(t >= c.at, contrib[:, j] * c.factor, contrib[:, j])
    cat0 = ((C[:, 0] == 0) * 0.5) if spec.n_categorical else np.zeros(n)
    logit = -0.8 + contrib.sum(axis=1) + cat0
    score = 1.0 / (1.0 + np.exp(-logit))
    # exact SHAP values of the logit for independent features: contribution minus its mean
    attr = np.column_stack([contrib, np.zeros((n, spec.n_categorical))])
    if spec.n_categorical:
        attr[:, spec.n_numeric] = cat0 - 0.5 * _CAT_P[0]
    if t is not None:
        for c in spec.changes:
            if c.kind == "selection_drop":
                # the group's scores drop and its labels follow them: the model stays
                # calibrated (accuracy holds) while the group's selection rate falls
                g = spec.sensitive[c.attribute].index(c.group)
                hit = (t >= c.at) & (S[c.attribute] == g)
                score = np.where(hit, score * c.factor, score)
    y = (rng.random(n) < score).astype(np.int64)
    if t is not None:
        for c in spec.changes:
            if c.kind == "accuracy_drop":
                hit = (t >= c.at) & (rng.random(n) < c.flip)
                y = np.where(hit, 1 - y, y)
            elif c.kind == "slice_errors":
                inside = t >= c.at
                for feat, cat in c.where.items():
                    inside &= C[:, spec.categorical.index(feat)] == _CATS.index(cat)
                y = np.where(inside & (rng.random(n) < c.flip), 1 - y, y)
    return X, C, S, score, y, attr


def generate(spec: ModelSpec, start: float, duration: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Prediction and label records (dicts, as the producer would send them), each sorted by time."""
    rng = np.random.default_rng(seed)
    spikes = [c for c in spec.changes if c.kind == "traffic_spike"]
    if spec.diurnal or spikes:
        t = _arrivals(spec, start, duration, spikes, rng)
        n = t.size
    else:
        n = rng.poisson(spec.rate * duration)
        t = np.sort(rng.random(n) * duration)
    X, C, S, score, y, attr = _draw(spec, n, rng, t)
    probe = np.zeros(n, dtype=bool)
    for c in spec.changes:
        if c.kind == "probe":
            tp, Xp, Cp, Sp, sp, yp, ap = _probe(spec, c, duration, rng)
            order = np.argsort(np.concatenate([t, tp]), kind="stable")
            t = np.concatenate([t, tp])[order]
            X, C, score, y, attr = (np.concatenate([a, b])[order] for a, b in ((X, Xp), (C, Cp), (score, sp),
                                                                               (y, yp), (attr, ap)))
            S = {a: np.concatenate([S[a], Sp[a]])[order] for a in S}
            probe = np.concatenate([probe, np.ones(tp.size, dtype=bool)])[order]
            n = t.size
    ts = start + t
    Ar = np.round(attr, 6).tolist() if spec.attributions else None
    names = spec.numeric + spec.categorical
    preds: list[dict[str, Any]] = []
    num, cat, sens = spec.numeric, spec.categorical, list(spec.sensitive)
    Xr = np.round(X, 5).tolist()
    scr = np.round(score, 6).tolist()
    for i in range(n):
        feats = dict(zip(num, Xr[i], strict=True))
        feats.update({c: _CATS[C[i, j]] for j, c in enumerate(cat)})
        preds.append({
            "prediction_id": f"{spec.name}-{seed}-{i}",
            "model": spec.name,
            "model_version": "1.0.0",
            "timestamp": round(float(ts[i]), 3),
            "features": feats,
            "score": scr[i],
            "sensitive": {a: spec.sensitive[a][S[a][i]] for a in sens},
        })
        if Ar is not None:
            preds[-1]["attributions"] = dict(zip(names, Ar[i], strict=True))
    has_label = (rng.random(n) < spec.label_share) & ~probe
    for c in spec.changes:
        if c.kind == "labels_stop":
            has_label &= t < c.at
    delay = rng.exponential(spec.label_delay, size=n)
    labels = [
        {"prediction_id": f"{spec.name}-{seed}-{i}", "model": spec.name,
         "timestamp": round(float(ts[i] + delay[i]), 3), "label": int(y[i])}
        for i in np.flatnonzero(has_label)
    ]
    labels.sort(key=lambda r: r["timestamp"])
    return preds, labels


def _arrivals(spec: ModelSpec, start: float, duration: float, spikes: list[Change],
              rng: np.random.Generator) -> np.ndarray:
    """Sorted arrival offsets of a Poisson process with the daily cycle and spikes (thinning)."""
    peak = spec.rate * (1.0 + abs(spec.diurnal)) * max([c.factor for c in spikes] + [1.0])
    n = rng.poisson(peak * duration)
    t = np.sort(rng.random(n) * duration)
    rate = spec.rate * (1.0 + spec.diurnal * np.sin(2.0 * np.pi * (start + t) / 86400.0))
    for c in spikes:
        rate = np.where((t >= c.at) & (t < c.until), rate * c.factor, rate)
    return t[rng.random(n) * peak < rate]


def _probe(spec: ModelSpec, c: Change, duration: float, rng: np.random.Generator):
    """A near-duplicate burst: queries around one point of the reference distribution."""
    end = min(c.until, duration)
    n = rng.poisson(c.rate * max(end - c.at, 0.0))
    t = np.sort(c.at + rng.random(n) * (end - c.at))
    X, C, S, score, y, attr = _draw(spec, max(n, 1), rng, None)
    X = np.repeat(X[:1], n, axis=0) + c.spread * rng.standard_normal((n, spec.n_numeric))
    C = np.repeat(C[:1], n, axis=0)
    w = np.linspace(1.0, -1.0, spec.n_numeric) if spec.n_numeric else np.zeros(0)
    cat0 = ((C[:, 0] == 0) * 0.5) if spec.n_categorical else np.zeros(n)
    score = 1.0 / (1.0 + np.exp(-(-0.8 + (X * (w * 0.6)).sum(axis=1) + cat0)))
    attr = np.repeat(attr[:1], n, axis=0)
    S = {a: v[:n] if n <= v.size else np.resize(v, n) for a, v in S.items()}
    return t, X, C, S, score, (rng.random(n) < score).astype(np.int64), attr


def reference_profile(spec: ModelSpec, n: int = 20000, seed: int = 12345, **build_keys: Any):
    """``ReferenceProfile.build`` on :func:`reference_frame` (with attributions when the spec has them)."""
    from detectors.reference import ReferenceProfile

    names = spec.numeric + spec.categorical
    attributions = {f: f"attributions.{f}" for f in names} if spec.attributions else None
    return ReferenceProfile.build(reference_frame(spec, n, seed), numeric=spec.numeric, categorical=spec.categorical,
                                  score="score", label="label", sensitive=list(spec.sensitive), task="binary",
                                  attributions=attributions, **build_keys)


def reference_frame(spec: ModelSpec, n: int = 20000, seed: int = 12345) -> dict[str, np.ndarray]:
    """A training-like data set (no changes) for ``ReferenceProfile.build``."""
    rng = np.random.default_rng(seed)
    X, C, S, score, y, attr = _draw(spec, n, rng, None)
    data: dict[str, np.ndarray] = {f: X[:, j] for j, f in enumerate(spec.numeric)}
    if spec.attributions:
        data.update({f"attributions.{f}": attr[:, j] for j, f in enumerate(spec.numeric + spec.categorical)})
    data.update({c: np.array([_CATS[k] for k in C[:, j]], dtype=object) for j, c in enumerate(spec.categorical)})
    data.update({a: np.array([spec.sensitive[a][k] for k in S[a]], dtype=object) for a in spec.sensitive})
    data["score"] = score
    data["label"] = y
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v!r}".replace("'", '"')


def config_models_toml(spec: ModelSpec, reference: str = "", rules: str = "",
                       tables: dict[str, dict[str, Any]] | None = None, **model_keys: Any) -> str:
    """The ``[[models]]`` TOML block for a synthetic model (features and sensitive attributes).

    ``tables`` adds model sub-tables, e.g. ``{"attributions": {"enabled": True}}``; a spec
    with ``attributions`` turns them on unless ``tables`` says otherwise.
    """
    lines = ["[[models]]", f'name = "{spec.name}"', 'task = "binary"', f'reference = "{reference}"',
             f"sensitive = {list(spec.sensitive)!r}".replace("'", '"')]
    for k, v in model_keys.items():
        lines.append(f"{k} = {_toml_value(v)}")
    tables = dict(tables or {})
    if spec.attributions:
        tables.setdefault("attributions", {"enabled": True})
    for name, keys in tables.items():
        lines.append(f"[models.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
    for f in spec.numeric:
        lines += ["[[models.features]]", f'name = "{f}"', 'type = "numeric"']
    for c in spec.categorical:
        lines += ["[[models.features]]", f'name = "{c}"', 'type = "categorical"']
    return "\n".join(lines) + "\n" + rules
