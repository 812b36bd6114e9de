"""Synthetic prediction and label streams with changes injected at known times.

Used by the demo, the soundness tests and the benchmarks. A model is a logistic score of
numeric features (standard normal) and categorical features; the label is drawn from the
score (so the model is calibrated) until a performance change flips a share of labels.
Changes: a covariate shift of one feature (in standard deviations), a selection-rate drop
for one group of a sensitive attribute (its scores are scaled down and its labels follow,
so accuracy holds), and an accuracy drop (a share of labels flipped). Everything is vectorised and seeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ModelSpec", "Change", "generate", "reference_frame", "config_models_toml", "default_rules"]

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


def default_rules(acc_warn: float, acc_alert: float) -> str:
    """The ``[[models.rules]]`` TOML of the example rules with the given accuracy levels."""
    return _RULES.format(acc_warn=acc_warn, acc_alert=acc_alert)


@dataclass
class Change:
    """A change starting at ``at`` seconds after the stream start."""

    kind: str  # covariate_shift | selection_drop | accuracy_drop
    at: float
    feature: str = ""
    shift: float = 0.5  # covariate_shift: in standard deviations
    attribute: str = ""
    group: str = ""
    factor: float = 0.5  # selection_drop: score multiplier for the group
    flip: float = 0.3  # accuracy_drop: share of labels flipped


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
    if t is not None:
        for c in spec.changes:
            if c.kind == "covariate_shift":
                j = spec.numeric.index(c.feature)
                X[t >= c.at, j] += c.shift
    logit = -0.8 + X[:, : spec.n_numeric] @ w * 0.6 + (C[:, 0] == 0) * 0.5 if spec.n_categorical else -0.8 + X @ w * 0.6
    score = 1.0 / (1.0 + np.exp(-logit))
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
    return X, C, S, score, y


def generate(spec: ModelSpec, start: float, duration: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Prediction and label records (dicts, as the producer would send them), each sorted by time."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(spec.rate * duration)
    t = np.sort(rng.random(n) * duration)
    X, C, S, score, y = _draw(spec, n, rng, t)
    ts = start + t
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
    has_label = rng.random(n) < spec.label_share
    delay = rng.exponential(spec.label_delay, size=n)
    labels = [
        {"prediction_id": f"{spec.name}-{seed}-{i}", "model": spec.name,
         "timestamp": round(float(ts[i] + delay[i]), 3), "label": int(y[i])}
        for i in np.flatnonzero(has_label)
    ]
    labels.sort(key=lambda r: r["timestamp"])
    return preds, labels


def reference_frame(spec: ModelSpec, n: int = 20000, seed: int = 12345) -> dict[str, np.ndarray]:
    """A training-like data set (no changes) for ``ReferenceProfile.build``."""
    rng = np.random.default_rng(seed)
    X, C, S, score, y = _draw(spec, n, rng, None)
    data: dict[str, np.ndarray] = {f: X[:, j] for j, f in enumerate(spec.numeric)}
    data.update({c: np.array([_CATS[k] for k in C[:, j]], dtype=object) for j, c in enumerate(spec.categorical)})
    data.update({a: np.array([spec.sensitive[a][k] for k in S[a]], dtype=object) for a in spec.sensitive})
    data["score"] = score
    data["label"] = y
    return data


def config_models_toml(spec: ModelSpec, reference: str = "", rules: str = "", **model_keys: Any) -> str:
    """The ``[[models]]`` TOML block for a synthetic model (features and sensitive attributes)."""
    lines = ["[[models]]", f'name = "{spec.name}"', 'task = "binary"', f'reference = "{reference}"',
             f"sensitive = {list(spec.sensitive)!r}".replace("'", '"')]
    for k, v in model_keys.items():
        lines.append(f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    for f in spec.numeric:
        lines += ["[[models.features]]", f'name = "{f}"', 'type = "numeric"']
    for c in spec.categorical:
        lines += ["[[models.features]]", f'name = "{c}"', 'type = "categorical"']
    return "\n".join(lines) + "\n" + rules
