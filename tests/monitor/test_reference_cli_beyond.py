"""`driftline reference build` with attribution columns (``<fields.attributions>.<feature>``):
the profile's reference importance, and clear errors for absent or unusable columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from detectors.reference import ReferenceProfile
from monitor import cli
from monitor.config import load_config_text
from monitor.reference_cli import build_for_model
from monitor.synth import ModelSpec, config_models_toml, reference_frame

from .conftest import write_jsonl

SPEC = ModelSpec("m", n_numeric=3, n_categorical=1, sensitive={"sex": ["F", "M"]}, attributions=True)
FEATURES = SPEC.numeric + SPEC.categorical


def config_text(fields: str = "", **tables) -> str:
    return fields + config_models_toml(SPEC, tables=tables or None)


def config(fields: str = "", **tables):
    return load_config_text(config_text(fields, **tables), env={})


def frame(n: int = 3000, prefix: str = "attributions") -> pd.DataFrame:
    data = reference_frame(SPEC, n=n, seed=7)  # attribution columns are "attributions.<feature>"
    df = pd.DataFrame(data)
    return df.rename(columns={f"attributions.{f}": f"{prefix}.{f}" for f in FEATURES})


def importance(df: pd.DataFrame, prefix: str = "attributions") -> dict[str, float]:
    """Mean |attribution| of the finite values, per feature (the oracle)."""
    out = {}
    for f in FEATURES:
        a = df[f"{prefix}.{f}"].to_numpy(dtype=np.float64)
        out[f] = float(np.mean(np.abs(a[np.isfinite(a)])))
    return out


def assert_importance(profile: ReferenceProfile, expected: dict[str, float]) -> None:
    assert profile.attribution is not None and list(profile.attribution) == FEATURES
    for f in FEATURES:
        assert profile.attribution[f] == pytest.approx(expected[f], rel=1e-12, abs=1e-15), f


def test_jsonl_with_nested_attributions_builds_the_reference_importance(tmp_path):
    df = frame()
    rows = []
    for r in df.to_dict(orient="records"):
        rows.append({
            "features": {f: r[f] for f in FEATURES},
            "attributions": {f: r[f"attributions.{f}"] for f in FEATURES},
            "sensitive": {"sex": r["sex"]},
            "score": r["score"],
            "label": r["label"],
        })
    data = write_jsonl(tmp_path / "ref.jsonl", rows)
    cfg = tmp_path / "c.toml"
    cfg.write_text(config_text())
    out = tmp_path / "ref.json"
    code = cli.main(["reference", "build", "--config", str(cfg), "--model", "m", "--data", str(data),
                     "--out", str(out)])
    assert code == 0
    prof = ReferenceProfile.load(out)
    assert_importance(prof, importance(df))
    # the importance is the planted one: num_01 has weight 0 in the synthetic model
    assert prof.attribution["num_01"] == 0.0 and prof.attribution["num_00"] > 0.3
    assert prof.reconstruction is not None and prof.n_rows == len(df)
    assert json.loads(out.read_text())["attribution"] == prof.attribution


def test_csv_with_flat_attribution_columns(tmp_path):
    df = frame(1500)
    path = tmp_path / "ref.csv"
    df.to_csv(path, index=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(config_text())
    out = tmp_path / "ref.json"
    assert cli.main(["reference", "build", "-c", str(cfg), "--model", "m", "--data", str(path), "--out", str(out)]) == 0
    assert_importance(ReferenceProfile.load(out), importance(df))


def test_columns_follow_fields_attributions():
    df = frame(prefix="meta.shap")
    prof = build_for_model(config('[fields]\nattributions = "meta.shap"\n'), "m", df)
    assert_importance(prof, importance(df, "meta.shap"))
    with pytest.raises(ValueError, match=r"attribution columns \['attributions.num_00'"):
        build_for_model(config(), "m", df)  # the default path finds none of them


def test_missing_values_are_left_out_of_the_importance():
    df = frame()
    df.loc[::3, "attributions.num_00"] = np.nan
    df.loc[::5, "attributions.cat_0"] = np.inf
    prof = build_for_model(config(), "m", df)
    assert_importance(prof, importance(df))


def test_attributions_disabled_ignores_the_columns():
    prof = build_for_model(config(attributions={"enabled": False}), "m", frame())
    assert prof.attribution is None


def test_a_missing_attribution_column_is_named():
    df = frame().drop(columns=["attributions.num_01"])
    with pytest.raises(ValueError) as info:
        build_for_model(config(), "m", df)
    msg = str(info.value)
    assert "model 'm' has attributions.enabled = true" in msg
    assert "['attributions.num_01']" in msg  # only the absent one
    assert "attributions.num_00" not in msg


def test_every_missing_attribution_column_is_named():
    df = frame().drop(columns=[f"attributions.{f}" for f in FEATURES])
    with pytest.raises(ValueError, match=r"lacks the attribution columns \['attributions.num_00', "
                                         r"'attributions.num_01', 'attributions.num_02', 'attributions.cat_0'\]"):
        build_for_model(config(), "m", df)


def test_a_missing_attribution_column_fails_the_command_before_writing(tmp_path):
    path = tmp_path / "ref.csv"
    frame(500).drop(columns=["attributions.cat_0"]).to_csv(path, index=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text(config_text())
    out = tmp_path / "ref.json"
    with pytest.raises(ValueError, match=r"\['attributions.cat_0'\]"):
        cli.main(["reference", "build", "-c", str(cfg), "--model", "m", "--data", str(path), "--out", str(out)])
    assert set(tmp_path.iterdir()) == {cfg, path}  # no profile, no temporary file


def test_an_attribution_column_without_values_is_named(tmp_path):
    df = frame(500)
    df["attributions.num_02"] = np.nan
    out = tmp_path / "ref.json"
    with pytest.raises(ValueError, match="attributions.num_02"):
        build_for_model(config(), "m", df).save(out)
    assert not (tmp_path / "ref.json.tmp").exists()


def test_a_non_numeric_attribution_column_is_named():
    df = frame(500)
    df["attributions.num_02"] = df["attributions.num_02"].astype(object)
    df.loc[7, "attributions.num_02"] = "high"
    with pytest.raises(ValueError, match="attributions.num_02"):
        build_for_model(config(), "m", df)
