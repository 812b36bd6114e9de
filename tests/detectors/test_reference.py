"""ReferenceProfile: contents checked against numpy/pandas/scikit-learn, and JSON round trips."""

import json

import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm

from detectors._serde import StateVersionError
from detectors.fairness import group_rates
from detectors.reference import ReferenceProfile
from detectors.sketch import quantile_edges


def frame(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "income": rng.lognormal(10, 1, n),
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(list("abcdefg"), n, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.06, 0.04]),
            "sex": rng.choice(["f", "m"], n),
            "race": rng.choice(["r1", "r2", "r3"], n),
            "score": rng.beta(2, 3, n),
        }
    )
    df["label"] = (rng.random(n) < df["score"]).astype(int)
    df.loc[5, "income"] = np.nan
    df.loc[6, "city"] = None
    return df


BINARY = {
    "numeric": ["income", "age"],
    "categorical": ["city"],
    "score": "score",
    "label": "label",
    "sensitive": ["sex", "race"],
    "intersections": [("sex", "race")],
}


def test_numeric_profile_matches_numpy():
    df = frame()
    ref = ReferenceProfile.build(df, **BINARY, n_bins=8)
    for name in ("income", "age"):
        x = df[name].to_numpy()
        finite = x[np.isfinite(x)]
        prof = ref.numeric[name]
        np.testing.assert_array_equal(prof.edges, quantile_edges(finite, 8))
        idx = np.searchsorted(prof.edges, finite, side="right")
        np.testing.assert_array_equal(
            prof.histogram.counts, np.bincount(idx, minlength=prof.edges.size + 1)
        )
        assert prof.histogram.missing == int(np.isnan(x).sum())
        assert prof.moments.mean[0] == pytest.approx(finite.mean(), rel=1e-12)
        assert np.sqrt(prof.moments.variance[0]) == pytest.approx(finite.std(ddof=1), rel=1e-9)
        by_bin = pd.Series(finite).groupby(idx).mean()
        np.testing.assert_allclose(prof.bin_means[by_bin.index], by_bin.to_numpy(), rtol=1e-12)
    assert ref.numeric["age"].edges.size <= 7  # a discrete feature may get fewer bins


def test_categorical_vocabulary_is_capped_by_frequency():
    df = frame()
    ref = ReferenceProfile.build(df, **BINARY, max_categories=3)
    city = ref.categorical["city"]
    counts = df["city"].value_counts()
    assert city.categories == counts.index[:3].tolist()
    assert city.counts.tolist() == counts.iloc[:3].tolist()
    assert city.unseen == int(counts.iloc[3:].sum()) and city.missing == 1


def test_binary_baseline_performance_matches_sklearn():
    df = frame()
    ref = ReferenceProfile.build(df, **BINARY)
    y, s = df["label"].to_numpy(), df["score"].to_numpy()
    p = (s >= 0.5).astype(int)
    perf = ref.performance
    assert perf["accuracy"].value == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert perf["f1"].value == pytest.approx(skm.f1_score(y, p), abs=1e-12)
    assert perf["log_loss"].value == pytest.approx(skm.log_loss(y, s), rel=1e-12)
    assert perf["brier"].value == pytest.approx(skm.brier_score_loss(y, s), rel=1e-12)
    assert perf["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, s), abs=5e-3)  # 100 bins
    assert perf["ece"].n == len(df)
    assert 0.0 <= perf["ece"].value < 0.03  # labels drawn from the score: calibrated (10 bins)


def test_sensitive_groups_and_rates():
    df = frame()
    ref = ReferenceProfile.build(df, **BINARY)
    assert list(ref.sensitive) == ["sex", "race", "sex&race"]
    sex = ref.sensitive["sex"]
    assert sorted(sex.groups.categories) == ["f", "m"]
    rates = ref.group_rates("sex")
    y, p = df["label"].to_numpy(), (df["score"].to_numpy() >= 0.5).astype(int)
    for g in ("f", "m"):
        mask = df["sex"].to_numpy() == g
        assert rates.rate("selection_rate")[g] == pytest.approx(p[mask].mean(), abs=1e-12)
        assert rates.rate("tpr")[g] == pytest.approx(skm.recall_score(y[mask], p[mask]), abs=1e-12)
    cross = ref.sensitive["sex&race"]
    assert cross.attributes == ("sex", "race") and len(cross.groups.categories) == 6
    assert cross.confusion.counts.sum() == len(df)
    with pytest.raises(ValueError, match="unknown sensitive attribute 'age'"):
        ref.group_rates("age")


def test_round_trip_dict_json_and_file(tmp_path):
    ref = ReferenceProfile.build(frame(), **BINARY)
    d = ref.to_dict()
    assert d["kind"] == "reference_profile" and d["version"] == 1
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN bin means survive as strings
    back = ReferenceProfile.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert back.performance == ref.performance
    path = tmp_path / "ref.json"
    ref.save(path)
    assert ReferenceProfile.load(path).to_dict() == d
    # A window counted on the restored edges is counted exactly like one on the originals.
    bank_a, bank_b = ref.histogram_bank(), back.histogram_bank()
    x = frame(seed=1)[["income", "age"]].to_numpy()
    bank_a.update(x)
    bank_b.update(x)
    assert bank_a == bank_b
    assert bank_a.feature(0).counts.sum() + bank_a.feature(0).missing == len(x)


def test_dict_of_arrays_equals_dataframe_and_from_batches():
    df = frame()
    a = ReferenceProfile.build(df, **BINARY)
    b = ReferenceProfile.build({c: df[c].to_numpy() for c in df.columns}, **BINARY)
    assert a.to_dict() == b.to_dict()
    batches = [
        {c: df[c].to_numpy()[i : i + 500] for c in df.columns} for i in range(0, len(df), 500)
    ]
    assert ReferenceProfile.from_batches(batches, **BINARY).to_dict() == a.to_dict()


def test_unlabelled_binary_profile_has_estimated_performance():
    df = frame()
    ref = ReferenceProfile.build(df, numeric=["age"], score="score")
    s = df["score"].to_numpy()
    assert not ref.score_labelled and ref.confusion is None
    est = ref.performance["estimated_accuracy"].value
    assert est == pytest.approx(np.mean(np.maximum(s, 1 - s)), abs=1e-12)


def test_multiclass_profile():
    rng = np.random.default_rng(2)
    n = 3000
    y = rng.choice(["cat", "dog", "eel"], n)
    pred = np.where(rng.random(n) < 0.7, y, rng.choice(["cat", "dog", "eel"], n))
    conf = np.where(pred == y, rng.uniform(0.6, 1.0, n), rng.uniform(0.34, 0.8, n))
    ref = ReferenceProfile.build(
        {"x": rng.normal(size=n), "y": y, "pred": pred, "conf": conf},
        numeric=["x"],
        label="y",
        prediction="pred",
        score="conf",
        task="multiclass",
    )
    assert ref.classes == ["cat", "dog", "eel"]
    assert ref.performance["f1"].value == pytest.approx(
        skm.f1_score(y, pred, average="macro"), abs=1e-12
    )
    # Top-label ECE: |mean confidence - accuracy| per confidence bin.
    correct = pred == y
    idx = np.minimum((conf * 10).astype(int), 9)  # the profile's ECE uses 10 bins
    ece = sum(
        abs(conf[idx == b].mean() - correct[idx == b].mean()) * np.mean(idx == b)
        for b in np.unique(idx)
    )
    assert ref.performance["ece"].value == pytest.approx(ece, abs=1e-12)
    assert ReferenceProfile.from_dict(ref.to_dict()).to_dict() == ref.to_dict()


def test_regression_profile():
    rng = np.random.default_rng(3)
    y = rng.normal(50, 5, 2000)
    yhat = y + rng.normal(0.3, 2, 2000)
    ref = ReferenceProfile.build(
        {"y": y, "yhat": yhat}, label="y", prediction="yhat", task="regression"
    )
    assert ref.performance["mae"].value == pytest.approx(
        skm.mean_absolute_error(y, yhat), rel=1e-12
    )
    assert ref.performance["r2"].value == pytest.approx(skm.r2_score(y, yhat), rel=1e-9)
    assert ref.regression.shift[4] == pytest.approx(y.mean())


def test_group_rates_of_profile_equal_direct_computation():
    df = frame()
    ref = ReferenceProfile.build(df, **BINARY)
    direct = group_rates(ref.sensitive["race"].confusion)
    np.testing.assert_array_equal(ref.group_rates("race").value, direct.value)


def test_errors_name_the_problem():
    df = frame()
    with pytest.raises(ValueError, match="column 'nope' is not in the data"):
        ReferenceProfile.build(df, numeric=["nope"])
    with pytest.raises(ValueError, match="task must be one of"):
        ReferenceProfile.build(df, numeric=["age"], task="ranking")
    with pytest.raises(ValueError, match="binary column 'age' must hold 0/1"):
        ReferenceProfile.build(df, label="age", score="score")
    with pytest.raises(ValueError, match="numeric feature 'empty'"):
        ReferenceProfile.build({"empty": np.full(10, np.nan)}, numeric=["empty"])
    with pytest.raises(ValueError, match="has 3 rows, expected 4"):
        ReferenceProfile.build({"a": np.zeros(4), "b": np.zeros(3)}, numeric=["a", "b"])
    d = ReferenceProfile.build(df, numeric=["age"]).to_dict()
    with pytest.raises(StateVersionError, match="version 2"):
        ReferenceProfile.from_dict({**d, "version": 2})
    del d["numeric"]
    with pytest.raises(ValueError, match="missing field 'numeric'"):
        ReferenceProfile.from_dict(d)


def test_row_sample_for_reports_is_bounded_uniform_and_round_trips():
    rng = np.random.default_rng(3)
    n = 5000
    data = {"x": rng.normal(size=n), "c": rng.choice(["a", "b"], size=n).astype(object),
            "s": rng.random(n), "y": (rng.random(n) < 0.5).astype(int),
            "sex": rng.choice(["F", "M"], size=n).astype(object), "id": np.arange(n)}
    prof = ReferenceProfile.build(data, numeric=["x"], categorical=["c"], score="s", label="y",
                                  sensitive=["sex"], sample_size=300)
    assert set(prof.sample) == {"x", "c", "__score", "__label", "__prediction"}  # no ids, no sensitive
    assert all(len(v) == 300 for v in prof.sample.values())
    # the sample is of the data's rows: its mean is within a few standard errors
    assert abs(np.mean(prof.sample["x"]) - data["x"].mean()) < 4 / np.sqrt(300)
    again = ReferenceProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert again.sample == prof.sample
