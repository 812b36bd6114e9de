"""Evidence reports: bounded row samples of a window and the Evidently HTML report of the
reference against the alerting window, written when an alert fires.

The sketches in panes hold no rows, but an Evidently report needs rows, so the pipeline
keeps a :class:`Reservoir` (uniform sample, Algorithm R) for the current window and one
for the reference (filled from the reference data or the warm-up events). A reservoir
holds only the configured feature columns plus the reserved quality columns
(:data:`SCORE`, :data:`LABEL`, :data:`PREDICTION`); anything else in a batch (prediction
ids, sensitive attributes not configured as features) is dropped on the way in.

Sliding windows: a reservoir cannot forget evicted rows, so keep one per pane and draw
the window's sample with :func:`combine` when a report is due; it is an exact uniform
sample of the window when each pane's reservoir is at least ``size`` rows.

Report files are named ``<alert id>.html`` in the reports directory, served by the HTTP
API at ``/api/reports/<alert id>.html`` and deleted by :func:`purge` after
``retention_days``; they embed summaries of the sample, so retention applies to them too.
"""

from __future__ import annotations

import html as html_lib
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "Reservoir",
    "ReportWriter",
    "combine",
    "write_report",
    "purge",
    "report_name",
    "SCORE",
    "LABEL",
    "PREDICTION",
]

SCORE = "__score"
LABEL = "__label"
PREDICTION = "__prediction"
KEY = "__key"  # id hashes of the sampled rows: to the report's manifest, never into the report
QUALITY_COLUMNS = (SCORE, LABEL, PREDICTION)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _state_version(d: Mapping, kind: str, version: int) -> None:
    if not isinstance(d, Mapping) or d.get("kind") != kind:
        raise ValueError(f"expected state of kind {kind!r}, got {d.get('kind') if isinstance(d, Mapping) else d!r}")
    if d.get("version") != version:
        raise ValueError(f"{kind} state version {d.get('version')!r} is not supported (this build reads {version})")


def _py(value: Any) -> Any:
    """A JSON-safe Python value (NaN and missing become None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


class Reservoir:
    """Uniform sample of at most ``size`` rows of ``columns`` from a stream of batches.

    Algorithm R, vectorised per batch: row number ``i`` (0-based, over the whole stream)
    past the first ``size`` draws ``j`` uniform in ``[0, i]`` and replaces slot ``j`` when
    ``j < size``; within a batch a later row that draws the same slot wins, exactly as in
    the one-row-at-a-time algorithm. State (rows, count, RNG) is JSON-safe.

    >>> r = Reservoir(3, ["x"], seed=1)
    >>> r.update({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "prediction_id": ["a"] * 6})
    >>> r.n_seen, len(r.frame()), list(r.frame().columns)
    (6, 3, ['x'])
    """

    KIND = "driftline.reservoir"
    VERSION = 1

    def __init__(self, size: int, columns: Sequence[str], seed: int = 0):
        if not (isinstance(size, int) and size >= 1):
            raise ValueError(f"reports.sample_size must be an integer >= 1, got {size!r}")
        cols = list(columns)
        if not cols or not all(isinstance(c, str) and c for c in cols):
            raise ValueError(f"columns must be a non-empty list of names, got {columns!r}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"columns lists a name twice: {cols!r}")
        self.size = size
        self.columns = tuple(cols)
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        self.n_seen = 0
        self._k = 0
        self._data = {c: np.full(self.size, None, dtype=object) for c in self.columns}
        self._rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        """Forget every row (the window closed); the RNG restarts from the seed."""
        self._reset()

    def __len__(self) -> int:
        return self._k

    def update(self, batch: Mapping[str, Any] | pd.DataFrame) -> None:
        """Add a batch of rows given as columns. Configured columns missing from the batch
        are filled with None; columns not configured are ignored."""
        present = [c for c in self.columns if c in batch]
        if not present:
            lengths = {len(np.asarray(v)) for v in (batch.values() if isinstance(batch, Mapping) else [])}
            if not lengths or lengths == {0}:
                return
            raise ValueError(f"batch has none of the reservoir's columns {list(self.columns)}")
        arrays = {c: np.asarray(batch[c], dtype=object).reshape(-1) for c in present}
        m = len(arrays[present[0]])
        for c, a in arrays.items():
            if len(a) != m:
                raise ValueError(f"column {c!r} has {len(a)} values, column {present[0]!r} has {m}")
        if m == 0:
            return
        for c in self.columns:
            if c not in arrays:
                arrays[c] = np.full(m, None, dtype=object)
        fill = min(self.size - self._k, m)
        if fill > 0:
            for c in self.columns:
                self._data[c][self._k : self._k + fill] = arrays[c][:fill]
            self._k += fill
        if fill < m:
            rows = np.arange(fill, m)
            # Global 0-based index of each remaining row; draw j uniform in [0, index].
            j = self._rng.integers(0, self.n_seen + rows + 1)
            keep = j < self.size
            slots, src = j[keep], rows[keep]
            if len(slots):
                # Last writer wins, as in the sequential algorithm.
                uniq, first_in_rev = np.unique(slots[::-1], return_index=True)
                last_src = src[::-1][first_in_rev]
                for c in self.columns:
                    self._data[c][uniq] = arrays[c][last_src]
        self.n_seen += m

    def frame(self) -> pd.DataFrame:
        """The sample as a DataFrame (object columns; :func:`write_report` types them)."""
        return pd.DataFrame({c: self._data[c][: self._k].copy() for c in self.columns})

    def to_dict(self) -> dict:
        state = self._rng.bit_generator.state
        return {
            "kind": self.KIND,
            "version": self.VERSION,
            "size": self.size,
            "columns": list(self.columns),
            "seed": self.seed,
            "n_seen": self.n_seen,
            "rows": {c: [_py(v) for v in self._data[c][: self._k]] for c in self.columns},
            # PCG64 state words are 128-bit: strings, so every JSON library round-trips them.
            "rng": {
                "bit_generator": state["bit_generator"],
                "state": str(state["state"]["state"]),
                "inc": str(state["state"]["inc"]),
                "has_uint32": int(state["has_uint32"]),
                "uinteger": str(state["uinteger"]),
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Reservoir:
        _state_version(d, cls.KIND, cls.VERSION)
        r = cls(int(d["size"]), d["columns"], int(d["seed"]))
        rows = d["rows"]
        k = len(rows[r.columns[0]]) if r.columns else 0
        if k > r.size or any(len(rows[c]) != k for c in r.columns):
            raise ValueError(f"{cls.KIND} state: rows do not match size {r.size} and columns {list(r.columns)}")
        for c in r.columns:
            r._data[c][:k] = np.asarray(rows[c], dtype=object)
        r._k = k
        r.n_seen = int(d["n_seen"])
        rng = d["rng"]
        if rng["bit_generator"] != "PCG64":
            raise ValueError(f"{cls.KIND} state: unsupported bit generator {rng['bit_generator']!r}")
        r._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(rng["state"]), "inc": int(rng["inc"])},
            "has_uint32": int(rng["has_uint32"]),
            "uinteger": int(rng["uinteger"]),
        }
        return r


def combine(parts: Iterable[Reservoir], size: int, seed: int = 0) -> pd.DataFrame:
    """A uniform sample of at most ``size`` rows of the union of the parts' streams.

    How many rows come from each part follows the multivariate hypergeometric law on the
    parts' ``n_seen`` counts, then each part contributes a random subset of its sample
    (a subset of a uniform sample is uniform). Exact when every part holds at least
    ``size`` rows or everything it saw; otherwise a part contributes what it has.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame()
    cols = parts[0].columns
    for p in parts:
        if p.columns != cols:
            raise ValueError(f"cannot combine reservoirs with columns {list(cols)} and {list(p.columns)}")
    rng = np.random.default_rng(seed)
    counts = np.array([p.n_seen for p in parts], dtype=np.int64)
    total = int(min(size, counts.sum()))
    take = rng.multivariate_hypergeometric(counts, total)
    frames = []
    for p, t in zip(parts, take, strict=True):
        t = int(min(t, len(p)))
        if t:
            idx = np.sort(rng.choice(len(p), size=t, replace=False))
            frames.append(p.frame().iloc[idx])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(cols))


def report_name(alert_id: str) -> str:
    """File name of an alert's report; refuses ids that could leave the reports directory."""
    name = f"{alert_id}.html"
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"alert id {alert_id!r} cannot name a report file")
    return name


def _typed(df: pd.DataFrame, features: Mapping[str, str]) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for name, kind in features.items():
        col = df[name] if name in df else pd.Series([None] * len(df), index=df.index)
        if kind == "numeric":
            out[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[name] = col.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    for name in QUALITY_COLUMNS:
        if name in df:
            out[name] = df[name]
    return out


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    if LABEL not in df:
        return df.iloc[0:0]
    return df[df[LABEL].map(lambda v: v is not None and not (isinstance(v, float) and math.isnan(v)))]


def write_report(
    reference: Reservoir | pd.DataFrame,
    current: Reservoir | pd.DataFrame,
    task: str,
    out_dir: str | Path,
    alert: Any,
    *,
    features: Mapping[str, str],
    classes: Sequence[str] = (),
    min_labelled: int = 30,
    findings: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write ``<alert id>.html``: data drift of ``features`` (name -> ``numeric`` or
    ``categorical``), plus classification or regression quality when both samples have at
    least ``min_labelled`` labelled rows. With quality, both samples are restricted to
    their labelled rows (Evidently computes every metric of a report on the same rows,
    and quality metrics cannot take a missing label); the report's metadata says so.

    ``alert`` is an AlertEvent (or anything with ``id``, ``model``, ``rule``) or an id string.
    A "Driftline findings" section above Evidently's report states the alert, where the
    model fails (the alert's top slices) and ``findings`` (evaluation records of the window:
    estimated vs realised performance, multivariate and attribution drift, subgroups).
    Written to a temporary file and renamed, so the API never serves half a report.
    """
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )
    from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

    if task not in ("binary", "multiclass", "regression"):
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    if not features:
        raise ValueError("features is empty: a report needs at least one feature column")
    bad = {k: v for k, v in features.items() if v not in ("numeric", "categorical")}
    if bad:
        raise ValueError(f"feature types must be numeric or categorical, got {bad}")
    alert_id = alert if isinstance(alert, str) else alert.id
    name = report_name(alert_id)
    ref = _typed(reference.frame() if isinstance(reference, Reservoir) else reference, features)
    cur = _typed(current.frame() if isinstance(current, Reservoir) else current, features)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"cannot write report {name}: reference has {len(ref)} rows, current has {len(cur)}")

    numeric = [f for f, k in features.items() if k == "numeric"]
    categorical = [f for f, k in features.items() if k == "categorical"]
    ref_l, cur_l = _labelled(ref), _labelled(cur)
    quality = len(ref_l) >= min_labelled and len(cur_l) >= min_labelled
    metrics: list = [DataDriftPreset(columns=list(features))]
    definition: dict[str, Any] = {"numerical_columns": list(numeric), "categorical_columns": list(categorical)}
    if quality:
        ref, cur = ref_l.copy(), cur_l.copy()
        if task == "regression":
            pred = SCORE if SCORE in cur and cur[SCORE].notna().all() else PREDICTION
            for df in (ref, cur):
                df[LABEL] = pd.to_numeric(df[LABEL], errors="coerce")
                df[pred] = pd.to_numeric(df[pred], errors="coerce")
            definition["numerical_columns"] += [LABEL, pred]
            definition["regression"] = [Regression(target=LABEL, prediction=pred)]
            metrics.append(RegressionPreset())
        else:
            as_int = task == "binary" and not classes
            conv = (lambda v: int(float(v))) if as_int else (lambda v: str(v))
            for df in (ref, cur):
                df[LABEL] = df[LABEL].map(conv)
                df[PREDICTION] = df[PREDICTION].map(conv)
            definition["categorical_columns"] += [LABEL, PREDICTION]
            if task == "binary":
                has_score = SCORE in cur and pd.to_numeric(cur[SCORE], errors="coerce").notna().all() \
                    and pd.to_numeric(ref[SCORE], errors="coerce").notna().all()
                if has_score:
                    for df in (ref, cur):
                        df[SCORE] = pd.to_numeric(df[SCORE], errors="coerce")
                    definition["numerical_columns"].append(SCORE)
                definition["classification"] = [
                    BinaryClassification(
                        target=LABEL,
                        prediction_labels=PREDICTION,
                        prediction_probas=SCORE if has_score else None,
                        pos_label=1 if as_int else str(classes[1]),
                    )
                ]
            else:
                definition["classification"] = [MulticlassClassification(target=LABEL, prediction_labels=PREDICTION)]
            metrics.append(ClassificationPreset())
    keep = list(features) + [c for c in QUALITY_COLUMNS if quality and c in cur and c in ref]
    ref, cur = ref[keep], cur[keep]
    dd = DataDefinition(**definition)
    meta = {
        "alert_id": alert_id,
        "rows": "labelled rows only" if quality else "all sampled rows",
        "reference_rows": str(len(ref)),
        "current_rows": str(len(cur)),
    }
    for attr in ("model", "rule", "metric", "scope"):
        if not isinstance(alert, str) and getattr(alert, attr, None) is not None:
            meta[attr] = str(getattr(alert, attr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # evidently/pandas deprecation noise on every run
        snapshot = Report(metrics, metadata=meta).run(
            Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
        )
        html = snapshot.get_html_str(as_iframe=False)
    html = _with_findings(html, alert, findings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, out / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out / name


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return html_lib.escape("n/a" if v is None else str(v))


def findings_html(alert: Any, findings: Sequence[Mapping[str, Any]] = ()) -> str:
    """The alert, its top slices and the window's other findings as an HTML section."""
    from monitor.sinks.render import slice_lines, statement

    parts = ['<section id="driftline-findings" style="font-family:sans-serif;margin:1em">',
             "<h2>Driftline findings</h2>"]
    if not isinstance(alert, str):
        parts.append(f"<p>{html_lib.escape(f'{alert.model}: {alert.rule} {alert.state}: {statement(alert)}')}</p>")
        where = slice_lines(alert, limit=10)
        if where:
            parts.append(f"<h3>Where it fails (slices by {html_lib.escape(str(alert.details.get('slices_by')))} "
                         "rate, Benjamini-Hochberg q-values)</h3><ol>")
            parts += [f"<li>{html_lib.escape(line)}</li>" for line in where]
            parts.append("</ol>")
    if findings:
        parts.append("<h3>This window</h3><table border=1 cellpadding=4><tr><th>metric</th><th>scope</th>"
                     "<th>value</th><th>interval</th><th>realised</th><th>status</th><th>n</th></tr>")
        for f in findings:
            det = f.get("details") or {}
            ci = "" if f.get("ci_low") is None else f"{_cell(f['ci_low'])} to {_cell(f.get('ci_high'))}"
            parts.append(
                f"<tr><td>{_cell(f.get('metric'))}</td><td>{_cell(f.get('scope'))}</td><td>{_cell(f.get('value'))}</td>"
                f"<td>{ci}</td><td>{_cell(det.get('realised')) if 'realised' in det else ''}</td>"
                f"<td>{_cell(f.get('status'))}</td><td>{_cell(f.get('n'))}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    section = "\n".join(parts)
    return section


def _with_findings(html: str, alert: Any, findings: Sequence[Mapping[str, Any]]) -> str:
    section = findings_html(alert, findings)
    at = html.find("<body")
    if at < 0:
        return section + html
    at = html.find(">", at) + 1
    return html[:at] + section + html[at:]


def purge(out_dir: str | Path, retention_days: float, now: float | None = None) -> list[Path]:
    """Delete reports, their key manifests (and abandoned temporary files) last modified more than
    ``retention_days`` before ``now``. Returns the deleted paths."""
    if not retention_days > 0:
        raise ValueError(f"reports.retention_days must be > 0, got {retention_days!r}")
    out = Path(out_dir)
    if not out.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - retention_days * 86400.0
    deleted = []
    for path in out.iterdir():
        # reports, their manifests (the sampled rows' id hashes) and abandoned temporary files
        if not (path.suffix == ".html" or path.name.endswith(".keys.json")
                or (path.name.startswith(".") and path.suffix == ".tmp")):
            continue
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted.append(path)
        except FileNotFoundError:
            continue  # deleted concurrently
    return deleted


class ReportWriter:
    """The ``[reports]`` section bound to functions: makes reservoirs, writes and purges."""

    def __init__(self, enabled: bool = True, dir: str | Path = "./state/reports", sample_size: int = 2000,
                 retention_days: float = 30.0):
        if not (isinstance(sample_size, int) and sample_size >= 1):
            raise ValueError(f"reports.sample_size must be an integer >= 1, got {sample_size!r}")
        if not retention_days > 0:
            raise ValueError(f"reports.retention_days must be > 0, got {retention_days!r}")
        self.enabled = enabled
        self.dir = Path(dir)
        self.sample_size = sample_size
        self.retention_days = retention_days

    @classmethod
    def from_config(cls, config: Any) -> ReportWriter:
        r = config.reports
        return cls(enabled=r.enabled, dir=r.dir, sample_size=r.sample_size, retention_days=r.retention_days)

    def reservoir(self, model: Any, seed: int = 0, quality: bool = True) -> Reservoir:
        """A reservoir for a ``[[models]]`` entry: its features, plus the quality columns."""
        cols = [f.name for f in model.features] + (list(QUALITY_COLUMNS) if quality else [])
        return Reservoir(self.sample_size, cols, seed)

    def write(self, reference: Reservoir | pd.DataFrame, current: Reservoir | pd.DataFrame, model: Any,
              alert: Any, findings: Sequence[Mapping[str, Any]] = ()) -> Path | None:
        if not self.enabled:
            return None
        if isinstance(current, pd.DataFrame) and KEY in current:
            from monitor.privacy import write_manifest  # lazy: privacy imports the decoder

            # the manifest first: a report on disk always has one for an erasure to find
            self.dir.mkdir(parents=True, exist_ok=True)
            write_manifest(self.dir, alert if isinstance(alert, str) else alert.id, current[KEY].tolist())
            current = current.drop(columns=[KEY])
        return write_report(reference, current, model.task, self.dir, alert,
                            features={f.name: f.type for f in model.features}, classes=model.classes,
                            findings=findings)

    def purge(self, now: float | None = None) -> list[Path]:
        return purge(self.dir, self.retention_days, now)
