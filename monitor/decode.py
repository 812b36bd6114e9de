"""Typed decoding of prediction and label records into columnar micro-batches.

Users have their own JSON schemas, so the field paths come from ``[fields]`` and msgspec
structs are built for them at start-up. A micro-batch is decoded in one call when every
record is valid (the common case); otherwise records are decoded one by one and the bad
ones are returned with the reason (msgspec names the JSON path), for the dead-letter topic.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import time
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import msgspec
import numpy as np

__all__ = [
    "PredictionBatch",
    "LabelBatch",
    "Failure",
    "FAILURE_CODES",
    "RecordDecoder",
    "hash_ids",
]

_SCALAR = int | float | str | bool | None
#: event times beyond now + this are refused (dead-lettered as bad_timestamp)
MAX_FUTURE_SECONDS = 366 * 86400.0


def hash_ids(ids: list[str]) -> np.ndarray:
    """Stable 64-bit keys for prediction ids, vectorised (no per-id Python hashing).

    Python's ``hash`` is salted per process, so it cannot key state that survives a
    restart. The ids' UTF-8 bytes are viewed as 64-bit words and mixed (FNV-style
    multiply-xor with a final avalanche); with 1e6 waiting ids the chance of any
    collision is about 3e-8.
    """
    if not ids:
        return np.zeros(0, dtype=np.uint64)
    try:
        enc = list(map(str.encode, ids))  # C-level loop: the decoder hands over str ids
    except TypeError:
        enc = [s.encode() if isinstance(s, str) else str(s).encode() for s in ids]
    raw = np.array(enc, dtype=bytes)
    width = raw.dtype.itemsize
    padded = (width + 7) // 8 * 8
    if padded != width:
        raw = raw.astype(f"S{padded}")
    words = raw.view(np.uint64).reshape(len(ids), padded // 8)
    length = np.fromiter(map(len, enc), dtype=np.uint64, count=len(enc))
    n_words = (length + np.uint64(7)) // np.uint64(8)
    h = np.full(len(ids), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        # only a row's own words are mixed, so a key never depends on the batch it came in
        for k in range(words.shape[1]):
            mixed = (h ^ words[:, k]) * prime
            mixed ^= mixed >> np.uint64(29)
            h = np.where(np.uint64(k) < n_words, mixed, h)
        h ^= length
        h = (h ^ (h >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


def _float_rows(getter, objs: list[Any], width: int) -> np.ndarray:
    """(n, width) float64 of ``getter(obj)`` (a ``width``-tuple) per object, None as NaN.

    One flat C-level pass; numpy's ``array`` of the tuples would first probe every
    tuple as a nested sequence. A None (a missing value) stops ``fromiter``, and then the
    batch takes ``array``, which reads None as NaN: the same values either way.
    """
    n = len(objs)
    if width > 1:
        try:
            return np.fromiter(chain.from_iterable(map(getter, objs)), dtype=np.float64,
                               count=n * width).reshape(n, width)
        except TypeError:
            pass
    return np.array(list(map(getter, objs)), dtype=np.float64).reshape(n, width)


#: The bounded set of dead-letter reasons (a metric label); the message has the detail.
FAILURE_CODES = ("invalid_json", "invalid_field", "unknown_model", "missing_field", "bad_timestamp", "unknown_class")


@dataclass
class Failure:
    """A record that could not be decoded: its index in the batch, why, and a reason code."""

    index: int
    reason: str
    field: str = ""
    code: str = "invalid_field"
    # the record's model and event time where decoding got that far (a record of a known
    # model counts in its schema_violation_rate); None when it did not
    model: str | None = None
    ts: float | None = None


@dataclass
class PredictionBatch:
    """Columns of one model's predictions from one partition's micro-batch."""

    model: str
    ids: list[str]
    keys: np.ndarray  # uint64, hash_ids(ids)
    ts: np.ndarray  # float64 event time, Unix seconds
    numeric: np.ndarray  # (n, n_numeric) float64, NaN = missing
    categorical: list[np.ndarray]  # one object array per categorical feature
    score: np.ndarray  # float64, NaN = missing
    predicted: np.ndarray  # int64 class index, -1 = missing (binary/multiclass)
    sensitive: list[np.ndarray]  # one object array per sensitive attribute
    model_version: list[str | None] = field(default_factory=list)
    # (n, n_features) float64 per-feature attributions in config feature order, NaN = absent;
    # None when the model does not watch attributions
    attributions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LabelBatch:
    """Columns of labels from one partition's micro-batch."""

    ids: list[str]
    keys: np.ndarray
    ts: np.ndarray
    label: np.ndarray  # float64: class index (classification) or true value (regression)
    model: list[str | None]

    def __len__(self) -> int:
        return len(self.ids)


def _path(p: str) -> list[str]:
    parts = [x for x in p.split(".") if x]
    if not parts:
        raise ValueError(f"empty field path {p!r}")
    return parts


def _build_struct(name: str, leaves: dict[str, tuple[list[str], Any]]) -> type:
    """A msgspec struct type reading each leaf attribute from its (possibly nested) path.

    Nested paths become nested structs; leaves absent from the JSON default to None.
    Unknown JSON keys are ignored (user records carry many fields we do not need).
    Every decoded struct here (and the feature, sensitive and attribution ones) is
    ``gc=False``: decoded JSON holds scalars, raw bytes and other such structs, so it can
    never be in a reference cycle, and thousands of untracked objects per micro-batch no
    longer drive the collector's young-generation passes.
    """
    tree: dict[str, Any] = {}
    for attr, (path, typ) in leaves.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"field path {'.'.join(path)} conflicts with another field")
        if path[-1] in node:
            raise ValueError(f"two fields map to the same JSON path {'.'.join(path)}")
        node[path[-1]] = (attr, typ)

    counter = [0]

    def make(node: dict[str, Any]) -> type:
        fields = []
        for key, val in node.items():
            if isinstance(val, dict):
                fields.append((key, make(val) | None, None))
            elif val[1] is msgspec.Raw:
                # Raw cannot be in a union; an absent object reads as JSON null
                fields.append((key, msgspec.Raw, msgspec.Raw(b"null")))
            else:
                fields.append((key, val[1] | None, None))
        counter[0] += 1
        return msgspec.defstruct(f"{name}{counter[0]}", fields, kw_only=True, gc=False)

    return make(tree)


def _getter(path: list[str]):
    if len(path) == 1:
        return operator.attrgetter(path[0])  # C-level; the common flat schema

    def get(obj):
        for part in path:
            if obj is None:
                return None
            obj = getattr(obj, part)
        return obj

    return get


class RecordDecoder:
    """Decodes prediction and label records for the configured models.

    ``config`` needs ``fields`` (paths) and ``models`` (name, task, classes, features,
    sensitive, decision_threshold) as in ``config.toml``.
    """

    def __init__(self, fields, models):
        self.fields = fields
        self.models = {m.name: m for m in models}
        unit = fields.timestamp_unit
        if unit not in ("s", "ms", "iso"):
            raise ValueError(f"fields.timestamp_unit must be s, ms or iso, got {unit!r}")
        self._unit = unit
        ts_type = dt.datetime if unit == "iso" else float
        pred_leaves = {
            "prediction_id": (_path(fields.prediction_id), str | int),
            "model": (_path(fields.model), str),
            "model_version": (_path(fields.model_version), str | int) if fields.model_version else None,
            "timestamp": (_path(fields.timestamp), ts_type),
            "features": (_path(fields.features), msgspec.Raw),
            "score": (_path(fields.score), float) if fields.score else None,
            "predicted": (_path(fields.predicted), int | str | bool) if fields.predicted else None,
            "sensitive": (_path(fields.sensitive), msgspec.Raw) if fields.sensitive else None,
            "attributions": (_path(fields.attributions), msgspec.Raw)
            if fields.attributions and any(m.attributions.enabled for m in models) else None,
        }
        pred_leaves = {k: v for k, v in pred_leaves.items() if v is not None}
        self._pred_get = {k: _getter(v[0]) for k, v in pred_leaves.items()}
        self._pred_type = _build_struct("Prediction", pred_leaves)
        self._pred_list = msgspec.json.Decoder(list[self._pred_type])
        self._pred_one = msgspec.json.Decoder(self._pred_type)
        label_leaves = {
            "prediction_id": (_path(fields.prediction_id), str | int),
            "timestamp": (_path(fields.label_timestamp), ts_type),
            "label": (_path(fields.label), int | float | str | bool),
        }
        if fields.model:
            label_leaves["model"] = (_path(fields.model), str)
        self._label_get = {k: _getter(v[0]) for k, v in label_leaves.items()}
        self._label_type = _build_struct("Label", label_leaves)
        self._label_list = msgspec.json.Decoder(list[self._label_type])
        self._label_one = msgspec.json.Decoder(self._label_type)
        self._feature_dec: dict[str, tuple[msgspec.json.Decoder, list[str], list[str]]] = {}
        self._columns: dict[str, tuple[Any, list[Any]]] = {}
        self._sensitive_dec: dict[str, msgspec.json.Decoder] = {}
        self._attr_dec: dict[str, tuple[msgspec.json.Decoder, Any]] = {}
        for m in models:
            num = [f.name for f in m.features if f.type == "numeric"]
            cat = [f.name for f in m.features if f.type == "categorical"]
            ftype = msgspec.defstruct(
                f"Features_{len(self._feature_dec)}",
                [(n, float | None, None) for n in num] + [(c, _SCALAR, None) for c in cat],
                kw_only=True, gc=False,
            )
            # `| None`: an absent or null object decodes to None (then an all-missing row)
            self._feature_dec[m.name] = (msgspec.json.Decoder(list[ftype | None]), num, cat)
            self._columns[m.name] = (operator.attrgetter(*num) if num else None,
                                     [operator.attrgetter(c) for c in cat])
            stype = msgspec.defstruct(
                f"Sensitive_{len(self._sensitive_dec)}", [(a, _SCALAR, None) for a in m.sensitive], kw_only=True,
                gc=False,
            )
            self._sensitive_dec[m.name] = msgspec.json.Decoder(list[stype | None])
            if m.attributions.enabled and m.features:
                names = [f.name for f in m.features]
                atype = msgspec.defstruct(f"Attributions_{len(self._attr_dec)}",
                                          [(a, float | None, None) for a in names], kw_only=True, gc=False)
                self._attr_dec[m.name] = (msgspec.json.Decoder(list[atype | None]), operator.attrgetter(*names))

    # -- time -----------------------------------------------------------------------
    def _seconds(self, v) -> float:
        if v is None:
            raise msgspec.ValidationError(f"missing timestamp at `$.{self.fields.timestamp}`")
        if self._unit == "iso":
            if v.tzinfo is None:
                v = v.replace(tzinfo=dt.UTC)
            t = v.timestamp()
        else:
            t = float(v) / 1000.0 if self._unit == "ms" else float(v)
        if not (0.0 <= t <= time.time() + MAX_FUTURE_SECONDS):
            # one such record would move its partition's watermark years ahead (every later
            # record "late"); it is most often milliseconds read as seconds
            raise ValueError(f"{v!r} is not a Unix time in seconds from 1970 to a year from now "
                             f"(fields.timestamp_unit = {self._unit!r})")
        return t

    # -- predictions ------------------------------------------------------------------
    def _envelopes(self, values: list[bytes], one, many) -> tuple[list[Any], list[Failure]]:
        try:
            return many.decode(b"[" + b",".join(values) + b"]"), []
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        good, failures = [], []
        for i, v in enumerate(values):
            try:
                good.append((i, one.decode(v)))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                failures.append(Failure(i, _reason(exc, v), code=_code(exc)))
        return good, failures

    def decode_predictions(self, values: list[bytes]) -> tuple[dict[str, PredictionBatch], list[Failure]]:
        """Decode a micro-batch of prediction records into one batch per model."""
        envs, failures = self._envelopes(values, self._pred_one, self._pred_list)
        indexed = envs if (envs and isinstance(envs[0], tuple)) else list(enumerate(envs))
        g = self._pred_get
        by_model: dict[str, list[tuple[int, Any]]] = {}
        if indexed:
            # the common case, one known model and every id present, without a per-record loop
            models = set(map(g["model"], (e for _, e in indexed)))
            if len(models) == 1 and (model := next(iter(models))) in self.models and \
                    all(pid is not None for pid in map(g["prediction_id"], (e for _, e in indexed))):
                by_model[model], indexed = indexed, []
        for i, e in indexed:
            model = g["model"](e)
            if model not in self.models:
                failures.append(Failure(i, f"unknown model {model!r} at `$.{self.fields.model}`", self.fields.model, "unknown_model"))
                continue
            if g["prediction_id"](e) is None:
                failures.append(Failure(i, f"missing prediction id at `$.{self.fields.prediction_id}`", self.fields.prediction_id, "missing_field", model=model))
                continue
            by_model.setdefault(model, []).append((i, e))
        out: dict[str, PredictionBatch] = {}
        for model, items in by_model.items():
            batch, bad = self._model_batch(model, items)
            failures.extend(bad)
            if batch is not None and len(batch):
                out[model] = batch
        failures.sort(key=lambda f: f.index)
        return out, failures

    def _model_batch(self, model: str, items: list[tuple[int, Any]]) -> tuple[PredictionBatch | None, list[Failure]]:
        cfg = self.models[model]
        g = self._pred_get
        failures: list[Failure] = []
        times = self._plain_times(list(map(g["timestamp"], (e for _, e in items))))
        if times is not None:
            items = [(i, e, t) for (i, e), t in zip(items, times.tolist(), strict=True)]
        else:
            ts_ok = []
            for i, e in items:
                try:
                    ts_ok.append((i, e, self._seconds(g["timestamp"](e))))
                except (msgspec.ValidationError, ValueError, OSError, OverflowError) as exc:
                    failures.append(Failure(i, f"bad timestamp: {exc}", self.fields.timestamp, "bad_timestamp"))
            items = ts_ok
        ts_items = items
        feat_dec, num, cat = self._feature_dec[model]
        feats, bad = self._decode_parts(feat_dec, [g["features"](e) for _, e, _ in items], items, self.fields.features)
        failures.extend(bad)
        keep = [k for k in range(len(items)) if feats[k] is not _BAD]
        sens_raw = [g["sensitive"](items[k][1]) if "sensitive" in g else None for k in keep]
        sens, bad = self._decode_parts(self._sensitive_dec[model], sens_raw, [items[k] for k in keep], self.fields.sensitive)
        failures.extend(bad)
        rows = [k for j, k in enumerate(keep) if sens[j] is not _BAD]
        sens = [s for s in sens if s is not _BAD]
        feats = [feats[k] for k in rows]
        items = [items[k] for k in rows]
        attributions = None
        if model in self._attr_dec:
            attr_dec, attr_get = self._attr_dec[model]
            attrs, bad = self._decode_parts(attr_dec, [g["attributions"](e) for _, e, _ in items], items,
                                            self.fields.attributions)
            failures.extend(bad)
            good = [k for k, a in enumerate(attrs) if a is not _BAD]
            if len(good) < len(items):
                feats, items = [feats[k] for k in good], [items[k] for k in good]
                sens = [sens[k] for k in good]
            attributions = _float_rows(attr_get, attrs if len(good) == len(attrs) else [attrs[k] for k in good],
                                       len(cfg.features))
        if failures:
            when = {i: t for i, _, t in ts_items}
            for f in failures:
                f.model, f.ts = model, when.get(f.index)
        n = len(items)
        if n == 0:
            return None, failures
        # columns by C-level getters; numpy reads None as NaN in a float64 array
        num_get, cat_get = self._columns[model]
        numeric = _float_rows(num_get, feats, len(num)) if num else np.zeros((n, 0), dtype=np.float64)
        categorical = [np.array(list(map(get, feats)), dtype=object) for get in cat_get]
        sensitive = [np.array(list(map(operator.attrgetter(a), sens)), dtype=object) for a in cfg.sensitive]
        envs = [e for _, e, _ in items]
        score = (
            np.array(list(map(g["score"], envs)), dtype=np.float64)
            if "score" in g
            else np.full(n, math.nan)
        )
        predicted = self._classes_of(cfg, list(map(g["predicted"], envs)) if "predicted" in g else [None] * n)
        if cfg.task == "binary":
            missing = predicted < 0
            if missing.any():
                thr = cfg.decision_threshold
                from_score = np.where(np.isnan(score), -1, (score >= thr).astype(np.int64))
                predicted = np.where(missing, from_score, predicted)
        ids = _strings(list(map(g["prediction_id"], envs)))
        mv = g.get("model_version")
        batch = PredictionBatch(
            model=model,
            ids=ids,
            keys=hash_ids(ids),
            ts=np.array([t for _, _, t in items], dtype=np.float64),
            numeric=numeric,
            categorical=categorical,
            score=score,
            predicted=predicted,
            sensitive=sensitive,
            model_version=[None] * n if mv is None else _strings(list(map(mv, envs)), keep_none=True),
            attributions=attributions,
        )
        return batch, failures

    def _plain_times(self, times: list[Any]) -> np.ndarray | None:
        """Event times in seconds, in one vectorised pass, when every one is a plain number in
        range (the common case); None sends the batch through the per-record checks
        (``_seconds``), which name the bad ones."""
        if self._unit == "iso" or not times or not all(type(t) is float or type(t) is int for t in times):
            return None
        ts = np.array(times, dtype=np.float64)
        if self._unit == "ms":
            ts /= 1000.0
        if not (ts.min() >= 0.0 and ts.max() <= time.time() + MAX_FUTURE_SECONDS):
            return None
        return ts

    def _decode_parts(self, dec, raws, items, path) -> tuple[list[Any], list[Failure]]:
        """Decode the raw sub-objects (features or sensitive) of many records in one call.

        An absent or null sub-object reads as one with every field missing.
        """
        if not raws:
            return [], []
        struct = next(t for t in dec.type.__args__[0].__args__ if t is not type(None))
        raws = [_NULL if r is None else r for r in raws]
        try:
            out = dec.decode(b"[" + b",".join(raws) + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            out = None
        if out is not None:
            if any(x is None for x in out):
                empty = struct()
                out = [empty if x is None else x for x in out]
            return out, []
        one = msgspec.json.Decoder(struct | None)
        empty = struct()
        out, failures = [], []
        for (i, *_), r in zip(items, raws, strict=True):
            try:
                x = one.decode(r)
                out.append(empty if x is None else x)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                out.append(_BAD)
                failures.append(Failure(i, _reason(exc, bytes(r), prefix=path), path, _code(exc)))
        return out, failures

    def _classes_of(self, cfg, values: list[Any]) -> np.ndarray:
        """Class index per value: binary accepts 0/1/true/false; multiclass names or indices."""
        if cfg.task == "regression":
            return np.full(len(values), -1, dtype=np.int64)
        if all(v is None for v in values):
            return np.full(len(values), -1, dtype=np.int64)  # no predicted field: from the score
        names = [str(c) for c in cfg.classes] if cfg.classes else []
        lookup = {n: k for k, n in enumerate(names)}
        n_classes = len(names) if names else 2
        if not names and values and all(type(v) is int for v in values):
            # the common case, one array op: plain class indices (out of range -> -1)
            arr = np.array(values, dtype=np.int64)
            return np.where((arr >= 0) & (arr < n_classes), arr, -1)
        out = np.empty(len(values), dtype=np.int64)
        for k, v in enumerate(values):
            if v is None:
                out[k] = -1
            elif isinstance(v, bool):
                out[k] = int(v)
            elif isinstance(v, int) and 0 <= v < n_classes:
                out[k] = v
            elif isinstance(v, float) and v.is_integer() and 0 <= v < n_classes:
                out[k] = int(v)
            else:
                out[k] = lookup.get(str(v), -1)
        return out

    # -- labels -------------------------------------------------------------------------
    def decode_labels(self, values: list[bytes]) -> tuple[LabelBatch, list[Failure]]:
        envs, failures = self._envelopes(values, self._label_one, self._label_list)
        indexed = envs if (envs and isinstance(envs[0], tuple)) else list(enumerate(envs))
        g = self._label_get
        fast = self._labels_fast(indexed, failures)
        if fast is not None:
            return fast
        ids, ts, labels, models, src = [], [], [], [], []
        for i, e in indexed:
            pid, raw = g["prediction_id"](e), g["label"](e)
            if pid is None:
                failures.append(Failure(i, f"missing prediction id at `$.{self.fields.prediction_id}`", self.fields.prediction_id, "missing_field"))
                continue
            if raw is None:
                failures.append(Failure(i, f"missing label at `$.{self.fields.label}`", self.fields.label, "missing_field"))
                continue
            model = g["model"](e) if "model" in g else None
            try:
                t = self._seconds(g["timestamp"](e))
            except (msgspec.ValidationError, ValueError, OSError, OverflowError) as exc:
                failures.append(Failure(i, f"bad timestamp: {exc}", self.fields.label_timestamp, "bad_timestamp"))
                continue
            value = self._label_value(model, raw)
            if value is None:
                failures.append(Failure(i, f"label {raw!r} is not a class of model {model!r} at `$.{self.fields.label}`", self.fields.label, "unknown_class"))
                continue
            ids.append(str(pid))
            ts.append(t)
            labels.append(value)
            models.append(model)
            src.append(i)
        failures.sort(key=lambda f: f.index)
        batch = LabelBatch(
            ids=ids,
            keys=hash_ids(ids),
            ts=np.array(ts, dtype=np.float64),
            label=np.array(labels, dtype=np.float64),
            model=models,
        )
        return batch, failures

    def _labels_fast(self, indexed: list[tuple[int, Any]], failures: list[Failure]) -> tuple[LabelBatch, list[Failure]] | None:
        """Columns straight from the structs when every label is a plain number with an id and
        a numeric time (the common case); None sends the batch through the checking loop."""
        if failures or not indexed:
            return None
        g = self._label_get
        envs = [e for _, e in indexed]
        pids = list(map(g["prediction_id"], envs))
        raws = list(map(g["label"], envs))
        if None in pids or not all(type(r) is int or type(r) is float for r in raws):
            return None
        ts = self._plain_times(list(map(g["timestamp"], envs)))
        if ts is None:
            return None  # the checking loop names the bad timestamps
        models = list(map(g["model"], envs)) if "model" in g else [None] * len(envs)
        ids = [str(p) for p in pids]
        batch = LabelBatch(ids=ids, keys=hash_ids(ids), ts=ts, label=np.array(raws, dtype=np.float64), model=models)
        return batch, []

    def _label_value(self, model: str | None, raw: Any) -> float | None:
        cfg = self.models.get(model) if model is not None else None
        if cfg is not None and cfg.task == "regression":
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return None
            return float(raw)
        if isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        # a class name: resolve against the model's classes (or any model's, if unnamed)
        for m in [cfg] if cfg is not None else self.models.values():
            names = [str(c) for c in m.classes] if m.classes else []
            if str(raw) in names:
                return float(names.index(str(raw)))
        return None


_BAD = object()


def _strings(values: list[Any], keep_none: bool = False) -> list[Any]:
    """``str`` of each value (None kept when ``keep_none``); no copy when all are str already."""
    if all(type(v) is str for v in values):
        return values
    return [None if (keep_none and v is None) else str(v) for v in values]


_NULL = msgspec.Raw(b"null")


def _syntax(exc: Exception) -> bool:
    # msgspec's ValidationError subclasses DecodeError: only a bare DecodeError is bad JSON
    return isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError)


def _code(exc: Exception) -> str:
    return "invalid_json" if _syntax(exc) else "invalid_field"


def _reason(exc: Exception, value: bytes, prefix: str = "") -> str:
    msg = str(exc)
    if prefix and "`$" in msg:
        msg = msg.replace("`$", f"`$.{prefix}", 1)
    if _syntax(exc):
        msg = f"invalid JSON: {msg}"
    return msg[:500]
