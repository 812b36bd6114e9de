"""Tests for the beyond-drift parts of monitor/config.py: the [models.multivariate],
[models.attributions] and [models.slices] tables and the rules on their metrics; every
error names its key and line, and the example documents the code's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import (
    ATTRIBUTION_METRICS,
    ESTIMATED_METRICS,
    MULTIVARIATE_METRICS,
    SUBGROUP_METRICS,
    AttributionsConfig,
    MultivariateConfig,
    SlicesConfig,
    load_config,
    load_config_text,
)
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.toml"


def model(tables: str = "", rules: str = "", task: str = "binary", numeric: tuple[str, ...] = ("x", "y")) -> str:
    """One model (numeric features, the categorical ``region``, sensitive ``sex``) with
    ``tables`` right after its keys and ``rules`` at the end."""
    classes = '\nclasses = ["a", "b", "c"]' if task == "multiclass" else ""
    feats = "".join(f'\n[[models.features]]\nname = "{f}"\ntype = "numeric"\n' for f in numeric)
    return (
        f'[[models]]\nname = "m"\ntask = "{task}"{classes}\nsensitive = ["sex"]\n'
        f"{tables}\n{feats}"
        '\n[[models.features]]\nname = "region"\ntype = "categorical"\n'
        f"{rules}"
    )


def rule(metric: str, warn: float = 0.1, extra: str = "") -> str:
    return f'\n[[models.rules]]\nname = "r"\nmetric = "{metric}"\nwarn = {warn}\n{extra}'


def line_of(text: str, marker: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path="c.toml", env={})
    return info.value.errors


def assert_error(text: str, key: str, marker: str, fragment: str) -> ConfigError:
    errs = errors_of(text)
    assert len(errs) == 1, [str(e) for e in errs]
    err = errs[0]
    assert err.key == key, str(err)
    assert err.line == line_of(text, marker), str(err)
    assert fragment in err.message, str(err)
    assert str(err).startswith(f"c.toml:{err.line}: {key}: ")
    return err


# --------------------------------------------------------------------------- defaults


def test_example_documents_the_defaults_of_the_new_tables():
    m = load_config(EXAMPLE, env={}).model("credit-risk")
    assert m.multivariate == MultivariateConfig() == MultivariateConfig(enabled=True, n_components=0.65)
    assert m.attributions == AttributionsConfig() == AttributionsConfig(enabled=False, k=5)
    assert m.slices == SlicesConfig()
    assert m.slices == SlicesConfig(enabled=True, dimensions=(), pair_with=("sensitive", "categorical"),
                                    max_cells=20000, min_size=100, fdr=0.05, top=5)
    assert load_config(EXAMPLE, env={}).fields.attributions == "attributions"


def test_omitted_tables_get_the_same_defaults_as_the_example():
    example = load_config(EXAMPLE, env={}).model("credit-risk")
    minimal = load_config_text(model(), env={}).model("m")
    for table in ("multivariate", "attributions", "slices"):
        assert getattr(minimal, table) == getattr(example, table), table


def test_new_tables_load_their_values():
    text = model(
        '[models.multivariate]\nenabled = false\nn_components = 3\n'
        '[models.attributions]\nenabled = true\nk = 2\n'
        '[models.slices]\ndimensions = ["region", "sex"]\npair_with = ["numeric"]\n'
        "max_cells = 50\nmin_size = 7\nfdr = 0.2\ntop = 3\n"
    )
    m = load_config_text(text, env={}).model("m")
    assert m.multivariate == MultivariateConfig(enabled=False, n_components=3.0)
    assert m.attributions == AttributionsConfig(enabled=True, k=2)
    assert m.slices == SlicesConfig(dimensions=("region", "sex"), pair_with=("numeric",), max_cells=50,
                                    min_size=7, fdr=0.2, top=3)


@pytest.mark.parametrize("value", ["0.9", "0.0001", "1", "2", "2.0"])
def test_n_components_share_or_whole_number_is_accepted(value):
    text = model(f"[models.multivariate]\nn_components = {value}\n", numeric=("x", "y", "z"))
    cfg = load_config_text(text, env={})
    assert cfg.model("m").multivariate.n_components == float(value)


# --------------------------------------------------------------------------- table errors


@pytest.mark.parametrize(
    ("table", "key", "marker", "fragment"),
    [
        ('[models.slices]\ndimensions = ["x", "regoin"]', "models[0].slices.dimensions[1]", "dimensions",
         '"regoin" is not a feature or sensitive attribute of this model; did you mean "region"?'),
        ('[models.slices]\ndimensions = ["zz"]', "models[0].slices.dimensions[0]", "dimensions",
         "(known: x, y, region, sex)"),
        ('[models.slices]\ndimensions = ["sex", "x", "sex"]', "models[0].slices.dimensions", "dimensions",
         "lists a dimension twice"),
        ('[models.slices]\npair_with = ["sensitive", "numerc"]', "models[0].slices.pair_with[1]", "pair_with",
         'did you mean "numeric"?'),
        ("[models.slices]\npair_with = \"sensitive\"", "models[0].slices.pair_with", "pair_with",
         "expected an array of strings"),
        ("[models.slices]\nmin_size = 0", "models[0].slices.min_size", "min_size", "must be at least 1, got 0"),
        ("[models.slices]\nmax_cells = 0", "models[0].slices.max_cells", "max_cells", "must be at least 1, got 0"),
        ("[models.slices]\ntop = 0", "models[0].slices.top", "top", "must be at least 1, got 0"),
        ("[models.slices]\nfdr = 0", "models[0].slices.fdr", "fdr", "must be in (0, 1), got 0.0"),
        ("[models.slices]\nfdr = 1", "models[0].slices.fdr", "fdr", "must be in (0, 1), got 1.0"),
        ("[models.slices]\nfdr = 1.5", "models[0].slices.fdr", "fdr", "must be in (0, 1), got 1.5"),
        ("[models.slices]\nmin_sise = 5", "models[0].slices.min_sise", "min_sise", 'did you mean "min_size"?'),
        ("[models.multivariate]\nn_components = 0", "models[0].multivariate.n_components", "n_components",
         "must be a share of variance in (0, 1) or a whole number of components >= 1, got 0.0"),
        ("[models.multivariate]\nn_components = -0.5", "models[0].multivariate.n_components", "n_components",
         "got -0.5"),
        ("[models.multivariate]\nn_components = 1.5", "models[0].multivariate.n_components", "n_components",
         "whole number of components >= 1, got 1.5"),
        ("[models.multivariate]\nn_components = nan", "models[0].multivariate.n_components", "n_components",
         "got nan"),
        ("[models.multivariate]\nn_components = inf", "models[0].multivariate.n_components", "n_components",
         "got inf"),
        ('[models.multivariate]\nn_components = "all"', "models[0].multivariate.n_components", "n_components",
         'expected a number, got "all"'),
        ("[models.attributions]\nk  = 0", "models[0].attributions.k", "k  =", "must be at least 1, got 0"),
        ("[models.attributions]\nk  = -3", "models[0].attributions.k", "k  =", "must be at least 1, got -3"),
        ("[models.attributions]\nk  = 2.5", "models[0].attributions.k", "k  =", "expected an integer, got 2.5"),
        ('[models.attributions]\nenabled = "yes"', "models[0].attributions.enabled", "enabled",
         "expected a boolean"),
    ],
)
def test_table_errors_name_key_and_line(table, key, marker, fragment):
    assert_error(model(table), key, marker, fragment)


def test_dimension_error_in_a_multiline_array_points_at_the_element_line():
    text = model('[models.slices]\ndimensions = [\n  "x",\n  "region",\n  "nope",\n]\n')
    assert_error(text, "models[0].slices.dimensions[2]", '"nope"', '"nope" is not a feature')


def test_dimension_error_in_the_second_model_names_that_model():
    first = model().replace('name = "m"', 'name = "a"', 1)
    text = first + model('[models.slices]\ndimensions = ["sex", "age"]')
    assert_error(text, "models[1].slices.dimensions[1]", '"age"', '"age" is not a feature')


def test_sensitive_attributes_are_dimensions_too():
    cfg = load_config_text(model('[models.slices]\ndimensions = ["sex"]\npair_with = []'), env={})
    assert cfg.model("m").slices.dimensions == ("sex",) and cfg.model("m").slices.pair_with == ()


def test_every_problem_of_the_new_tables_is_reported_together_in_file_order():
    text = model(
        "[models.multivariate]\nn_components = 0\n"
        "[models.attributions]\nk = 0\n"
        "[models.slices]\nmin_size = 0\nfdr = 2\n"
    )
    errs = errors_of(text)
    assert [e.key for e in errs] == [
        "models[0].multivariate.n_components", "models[0].attributions.k", "models[0].slices.min_size",
        "models[0].slices.fdr",
    ]
    assert [e.line for e in errs] == sorted(e.line for e in errs)
    assert errs[0].line == line_of(text, "n_components") and errs[-1].line == line_of(text, "fdr")


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize("metric", ESTIMATED_METRICS)
def test_estimated_metric_on_a_regression_model_is_refused_at_the_metric_line(metric):
    text = model(rules=rule(metric, 0.8), task="regression")
    errs = errors_of(text)
    assert errs and all(e.key == "models[0].rules[0].metric" for e in errs), [str(e) for e in errs]
    assert all(e.line == line_of(text, f'metric = "{metric}"') for e in errs)
    assert any(f'"{metric}" needs a classification task, this model is "regression"' in e.message for e in errs)


@pytest.mark.parametrize("metric", [m for m in ESTIMATED_METRICS if m != "estimated_accuracy"])
def test_estimated_metrics_other_than_accuracy_need_a_binary_model(metric):
    text = model(rules=rule(metric, 0.8), task="multiclass")
    assert_error(text, "models[0].rules[0].metric", f'metric = "{metric}"',
                 f'"{metric}" needs task "binary", this model is "multiclass"')


def test_estimated_accuracy_and_subgroup_error_gap_work_for_multiclass():
    text = model(rules=rule("estimated_accuracy", 0.8) + rule("subgroup_error_gap", 0.1).replace('"r"', '"r2"'),
                 task="multiclass")
    rules = load_config_text(text, env={}).model("m").rules
    assert [(r.metric, r.direction, r.scope) for r in rules] == [
        ("estimated_accuracy", "below", "model"), ("subgroup_error_gap", "above", "model")]


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_subgroup_selection_gap_needs_a_binary_model(task):
    text = model(rules=rule("subgroup_selection_gap"), task=task)
    assert_error(text, "models[0].rules[0].metric", 'metric = "subgroup_selection_gap"',
                 f'needs task "binary", this model is "{task}"')


def test_subgroup_error_gap_needs_classification():
    text = model(rules=rule("subgroup_error_gap"), task="regression")
    assert_error(text, "models[0].rules[0].metric", 'metric = "subgroup_error_gap"',
                 'needs task "binary", this model is "regression"')


@pytest.mark.parametrize("metric", ATTRIBUTION_METRICS)
def test_attribution_rule_needs_attributions_enabled(metric):
    for tables in ("", "[models.attributions]\nenabled = false\n"):
        text = model(tables, rules=rule(metric, 0.5))
        assert_error(text, "models[0].rules[0].metric", f'metric = "{metric}"',
                     f'"{metric}" needs attributions.enabled = true on this model')
    cfg = load_config_text(model("[models.attributions]\nenabled = true\n", rules=rule(metric, 0.5)), env={})
    assert cfg.model("m").rules[0].metric == metric


@pytest.mark.parametrize("metric", MULTIVARIATE_METRICS)
def test_reconstruction_rule_needs_multivariate_and_two_numeric_features(metric):
    needs = f'"{metric}" needs multivariate.enabled = true and two or more numeric features'
    off = model("[models.multivariate]\nenabled = false\n", rules=rule(metric))
    assert_error(off, "models[0].rules[0].metric", f'metric = "{metric}"', needs)
    one = model(rules=rule(metric), numeric=("x",))
    assert_error(one, "models[0].rules[0].metric", f'metric = "{metric}"', needs)
    assert load_config_text(model(rules=rule(metric)), env={}).model("m").rules[0].direction == "above"


@pytest.mark.parametrize("metric", SUBGROUP_METRICS)
def test_subgroup_rule_needs_slices_enabled(metric):
    text = model("[models.slices]\nenabled = false\n", rules=rule(metric))
    assert_error(text, "models[0].rules[0].metric", f'metric = "{metric}"',
                 f'"{metric}" needs slices.enabled = true on this model')


@pytest.mark.parametrize(
    ("metric", "direction", "tables"),
    [
        ("estimated_f1", "above", ""),
        ("attribution_rank_correlation", "above", "[models.attributions]\nenabled = true\n"),
        ("attribution_shift", "below", "[models.attributions]\nenabled = true\n"),
        ("reconstruction_error_change", "below", ""),
        ("subgroup_error_gap", "below", ""),
    ],
)
def test_contrary_direction_on_a_new_metric_is_refused(metric, direction, tables):
    text = model(tables, rules=rule(metric, 0.5, f'direction = "{direction}"\n'))
    natural = "below" if direction == "above" else "above"
    assert_error(text, "models[0].rules[0].direction", f'direction = "{direction}"',
                 f'must be "{natural}" for metric "{metric}"')


def test_new_metrics_are_model_scope():
    text = model("[models.attributions]\nenabled = true\n",
                 rules=rule("attribution_shift", 0.2, 'scope = "feature"\n'))
    assert_error(text, "models[0].rules[0].scope", 'scope = "feature"',
                 'must be "model" for metric "attribution_shift" (a model metric), got "feature"')


def test_mean_abs_attribution_is_a_per_feature_series_not_a_rule_metric():
    text = model("[models.attributions]\nenabled = true\n", rules=rule("mean_abs_attribution"))
    assert_error(text, "models[0].rules[0].metric", 'metric = "mean_abs_attribution"',
                 'unknown metric "mean_abs_attribution"')


def test_whole_n_components_beyond_the_numeric_features_is_refused():
    text = model("[models.multivariate]\nn_components = 2\n")  # two numeric features: at most 1
    assert_error(text, "models[0].multivariate.n_components", "n_components", "numeric features")
