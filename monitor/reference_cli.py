"""``driftline reference build``: a reference profile from training or validation data."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from detectors.reference import ReferenceProfile

__all__ = ["main", "read_table", "build_for_model"]


def read_table(path: str | Path) -> pd.DataFrame:
    """Parquet, CSV or JSON Lines, by extension; nested JSON objects are flattened (a.b)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix == ".csv":
        return pd.read_csv(p)
    if suffix in (".jsonl", ".ndjson", ".json"):
        frame = pd.read_json(p, lines=True)
        return pd.json_normalize(frame.to_dict(orient="records"))
    raise ValueError(f"--data {str(p)!r}: unknown format {suffix!r} (use .parquet, .csv or .jsonl)")


def _column(frame: pd.DataFrame, name: str, prefixes: tuple[str, ...]) -> str | None:
    for cand in (name, *[f"{p}.{name}" for p in prefixes]):
        if cand in frame.columns:
            return cand
    return None


def build_for_model(config, model: str, frame: pd.DataFrame) -> ReferenceProfile:
    """Profile one model's features, score, label and sensitive attributes from ``frame``.

    Columns are found by feature name, or under the configured ``features``/``sensitive``
    object paths (flattened JSON: ``features.income``). Score and label use the field names;
    attributions (when the model watches them) are the columns ``<fields.attributions>.<feature>``.
    """
    m = config.model(model)
    f = config.fields
    data: dict = {}
    missing = []
    for feat in m.features:
        col = _column(frame, feat.name, (f.features,))
        if col is None:
            missing.append(feat.name)
        else:
            data[feat.name] = frame[col].to_numpy()
    for a in m.sensitive:
        col = _column(frame, a, (f.sensitive,))
        if col is None:
            missing.append(a)
        else:
            data[a] = frame[col].to_numpy(dtype=object)
    if missing:
        raise ValueError(f"model {model!r}: columns {missing} not found in the data (have {list(frame.columns)[:20]})")
    attributions: dict[str, str] = {}
    if m.attributions.enabled:
        # flattened JSON lines give "attributions.income"; a table may use that name too
        absent = []
        for feat in m.features:
            col = f"{f.attributions}.{feat.name}"
            if col in frame.columns:
                attributions[feat.name] = col
                try:
                    data[col] = frame[col].to_numpy(dtype=np.float64)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"model {model!r}: attribution column {col!r} must be numeric: {e}") from None
            else:
                absent.append(col)
        if absent:
            raise ValueError(f"model {model!r} has attributions.enabled = true but the data lacks the "
                             f"attribution columns {absent} (one per feature, under fields.attributions)")
    score = _column(frame, f.score, ())
    label = _column(frame, f.label, ())
    pred = _column(frame, f.predicted, ())
    for key, col in (("score", score), ("label", label), ("prediction", pred)):
        if col is not None:
            data[key] = frame[col].to_numpy()
    return ReferenceProfile.build(
        data,
        numeric=[x.name for x in m.features if x.type == "numeric"],
        categorical=[x.name for x in m.features if x.type == "categorical"],
        score="score" if score is not None and m.task != "regression" else None,
        label="label" if label is not None else None,
        prediction="prediction" if pred is not None else ("score" if m.task == "regression" and score else None),
        sensitive=list(m.sensitive),
        task=m.task,
        n_bins=m.n_bins,
        decision_threshold=m.decision_threshold,
        intersections=[list(x) for x in m.intersections],
        n_components=m.multivariate.n_components if m.multivariate.enabled else None,
        attributions=attributions or None,
    )


def main(args: argparse.Namespace) -> int:
    from monitor.config import load_config

    config = load_config(args.config)
    profile = build_for_model(config, args.model, read_table(args.data))
    profile.save(args.out)
    print(f"reference build: {args.model}: {profile.n_rows} rows -> {args.out}")
    return 0
