"""Reservoir sampling (uniformity, bound, columns, round-trip mid-stream) and the Evidently
HTML report (drift, quality with labels) plus its retention purge."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from monitor.reports import (
    LABEL,
    PREDICTION,
    SCORE,
    ReportWriter,
    Reservoir,
    combine,
    purge,
    report_name,
    write_report,
)


def _batches(n_batches=20, size=137, seed=0):
    rng = np.random.default_rng(seed)
    start = 0
    for _ in range(n_batches):
        m = int(rng.integers(1, size))
        yield {"x": np.arange(start, start + m, dtype=float), "c": [f"k{i % 3}" for i in range(m)],
               "prediction_id": [f"id{i}" for i in range(start, start + m)]}
        start += m


def test_bound_and_columns():
    r = Reservoir(50, ["x", "c", "missing"], seed=3)
    for b in _batches():
        r.update(b)
    f = r.frame()
    assert len(f) == 50 and list(f.columns) == ["x", "c", "missing"]  # never the id
    assert f["missing"].isna().all() and f["x"].is_unique
    with pytest.raises(ValueError, match="column 'c' has 2 values"):
        r.update({"x": [1.0], "c": ["a", "b"]})


def test_inclusion_is_uniform():
    # Each of n items must be kept with probability k/n; chi-square over many seeded runs.
    n, k, runs = 200, 20, 600
    hits = np.zeros(n)
    for seed in range(runs):
        r = Reservoir(k, ["x"], seed=seed)
        rng = np.random.default_rng(10_000 + seed)
        cuts = np.sort(rng.choice(np.arange(1, n), size=6, replace=False))
        for part in np.split(np.arange(n, dtype=float), cuts):
            r.update({"x": part})
        hits[r.frame()["x"].astype(int).to_numpy()] += 1
    expected = np.full(n, runs * k / n)
    p = stats.chisquare(hits, expected).pvalue
    assert p > 0.001, p


def test_matches_sequential_algorithm_r():
    # Same draws, one row at a time (textbook Algorithm R) vs the vectorised batch path.
    data = np.arange(500, dtype=float)
    r = Reservoir(30, ["x"], seed=7)
    r.update({"x": data[:30]})
    r.update({"x": data[30:]})  # one batch: all 470 draws in one call
    rng = np.random.default_rng(7)
    draws = rng.integers(0, np.arange(30, 500) + 1)
    res = list(data[:30])
    for i, j in zip(range(30, 500), draws, strict=True):
        if j < 30:
            res[j] = data[i]
    assert list(r.frame()["x"]) == res


def test_round_trip_mid_stream():
    batches = list(_batches(seed=5))
    whole = Reservoir(40, ["x", "c"], seed=11)
    for b in batches:
        whole.update(b)
    half = Reservoir(40, ["x", "c"], seed=11)
    for b in batches[:10]:
        half.update(b)
    restored = Reservoir.from_dict(json.loads(json.dumps(half.to_dict())))
    for b in batches[10:]:
        restored.update(b)
    assert restored.n_seen == whole.n_seen
    pd.testing.assert_frame_equal(restored.frame(), whole.frame())
    with pytest.raises(ValueError, match="version"):
        Reservoir.from_dict({**half.to_dict(), "version": 99})


def test_combine_is_uniform_over_panes():
    # Three "panes" of different sizes; the combined sample must weight them by size.
    counts = np.zeros(3)
    for seed in range(300):
        parts = []
        for p, n in enumerate((100, 300, 600)):
            r = Reservoir(50, ["p"], seed=seed * 3 + p)
            r.update({"p": np.full(n, p)})
            parts.append(r)
        df = combine(parts, 50, seed=seed)
        assert len(df) == 50
        counts += np.bincount(df["p"].astype(int), minlength=3)
    assert stats.chisquare(counts, counts.sum() * np.array([0.1, 0.3, 0.6])).pvalue > 0.001


def _model_frames(n, shift, rng, labelled=1.0):
    x = rng.normal(shift, 1.0, n)
    score = 1 / (1 + np.exp(-x))
    label = (rng.random(n) < score).astype(float)
    label[rng.random(n) > labelled] = np.nan
    return {"income": x, "region": rng.choice(["n", "s", "e"], n), SCORE: score,
            PREDICTION: (score >= 0.5).astype(int), LABEL: label}


def test_write_report_drift_and_quality(tmp_path):
    rng = np.random.default_rng(0)
    ref = Reservoir(300, ["income", "region", SCORE, PREDICTION, LABEL], seed=1)
    cur = Reservoir(300, ["income", "region", SCORE, PREDICTION, LABEL], seed=2)
    ref.update(_model_frames(1000, 0.0, rng))
    cur.update(_model_frames(1000, 1.5, rng, labelled=0.6))
    path = write_report(ref, cur, "binary", tmp_path / "r", "abc123", features={"income": "numeric", "region": "categorical"})
    html = path.read_text()
    assert path.name == "abc123.html" and html.lstrip().startswith("<!DOCTYPE html>")
    # Evidently's markup: the drift preset and, with labels, the classification preset.
    assert "Dataset Drift" in html and "Drifted Columns" in html and "Accuracy" in html
    # Without labels: drift only.
    cur2 = Reservoir(100, ["income", "region"], seed=3)
    cur2.update(_model_frames(300, 1.5, rng))
    html2 = write_report(ref, cur2, "binary", tmp_path / "r", "nolabels",
                         features={"income": "numeric", "region": "categorical"}).read_text()
    assert "Dataset Drift" in html2 and "Accuracy" not in html2


def test_regression_report(tmp_path):
    rng = np.random.default_rng(1)

    def frame(n, shift):
        x = rng.normal(shift, 1, n)
        return pd.DataFrame({"x": x, SCORE: 2 * x, LABEL: 2 * x + rng.normal(0, 0.5, n)})

    html = write_report(frame(200, 0), frame(200, 1), "regression", tmp_path, "reg1",
                        features={"x": "numeric"}).read_text()
    assert "Dataset Drift" in html and "MAE" in html and "Mean Absolute Percentage Error" in html


def test_report_name_and_errors(tmp_path):
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            report_name(bad)
    with pytest.raises(ValueError, match="current has 0"):
        write_report(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": []}), "binary", tmp_path, "e",
                     features={"x": "numeric"})


def test_purge_after_retention(tmp_path):
    now = 1_800_000_000.0
    old, fresh = tmp_path / "old.html", tmp_path / "fresh.html"
    keep = tmp_path / "notes.txt"
    for p in (old, fresh, keep):
        p.write_text("x")
    os.utime(old, (now - 31 * 86400, now - 31 * 86400))
    os.utime(fresh, (now - 29 * 86400, now - 29 * 86400))
    os.utime(keep, (now - 90 * 86400, now - 90 * 86400))
    assert purge(tmp_path, 30, now=now) == [old]
    assert fresh.exists() and keep.exists()
    assert ReportWriter(dir=tmp_path, retention_days=1).purge(now=now) == [fresh]
