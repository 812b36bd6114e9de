"""Tests for monitor/config.py: the example loads, every error names its key and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import (
    DETECTORS,
    Config,
    ModelConfig,
    RuleConfig,
    config_hash,
    load_config,
    load_config_text,
    mask_secrets,
    render_resolved,
    url_problem,
)
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.toml"

MODEL = """
[[models]]
name = "m"
task = "binary"
"""


def line_of(text: str, marker: str) -> int:
    """1-based line of the only line containing ``marker``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def errors_of(text: str, env: dict | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path="c.toml", env=env or {})
    return info.value.errors


def one_error(text: str, env: dict | None = None) -> ConfigError:
    errs = errors_of(text, env)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


def assert_error(text: str, key: str, marker: str, fragment: str, env: dict | None = None):
    err = one_error(text, env)
    assert err.key == key, str(err)
    assert err.line == line_of(text, marker), str(err)
    assert err.path == "c.toml"
    assert fragment in err.message, str(err)
    assert str(err).startswith(f"c.toml:{err.line}: {key}: ")
    return err


# --------------------------------------------------------------------------- example


def test_example_config_loads_with_documented_defaults():
    cfg = load_config(EXAMPLE, env={})
    assert isinstance(cfg, Config)
    m = cfg.model("credit-risk")
    assert m.task == "binary" and m.sensitive == ("sex", "age_band")
    assert [f.name for f in m.features] == ["income", "debt_ratio", "region"]
    psi, acc, dp, *security = m.rules
    assert [r.metric for r in security] == ["traffic_rate_anomaly", "near_duplicate_share", "out_of_support_share",
                                            "schema_violation_rate"]
    assert (psi.scope, psi.for_, psi.fdr, psi.resolve) == ("feature", 2, 0.05, 0.1)
    assert (acc.direction, acc.warn, acc.alert, acc.resolve) == ("below", 0.8, 0.75, 0.8)
    assert acc.actions == ("notify", "retrain") and acc.cooldown_seconds == 900.0
    assert dp.scope == "group"
    # The appended sections document exactly the defaults of the code.
    assert cfg.alerting == type(cfg.alerting)()
    assert cfg.delivery == type(cfg.delivery)()
    assert cfg.sinks == type(cfg.sinks)()
    assert cfg.triggers == type(cfg.triggers)()
    assert cfg.audit == type(cfg.audit)() and cfg.reports == type(cfg.reports)()
    assert cfg.cards == type(cfg.cards)()
    assert cfg.delivery.max_attempts == 0 and cfg.alerting.repeat_interval_seconds == 14400.0
    assert cfg.sinks.kafka.enabled and not cfg.sinks.slack.enabled
    assert cfg.triggers.require_approval is None
    with pytest.raises(KeyError, match="credit-risk"):
        cfg.model("nope")


def test_every_table_default_matches_an_omitted_table():
    """A config with only a model gets the same settings as the example's explicit values."""
    example = load_config(EXAMPLE, env={})
    minimal = load_config_text(MODEL, env={})
    for section in ("kafka", "topics", "fields", "join", "state", "http", "scheduler"):
        assert getattr(minimal, section) == getattr(example, section), section


def test_frozen():
    cfg = load_config(EXAMPLE, env={})
    with pytest.raises(AttributeError):
        cfg.kafka.group_id = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- line numbers

TWO_MODELS = """
[kafka]
group_id = "g"

[[models]]
name = "a"
task = "binary"
  [[models.rules]]
  name = "r0"
  metric = "psi"
  warn = 0.1
  [[models.features]]
  name = "x"
  type = "numeric"

[[models]]
name = "b"
task = "regression"
tags = '''
warn = "not a key"
'''
  [[models.rules]]
  name = "r0"
  metric = "mae"
  warn = 1.0
  [[models.rules]]
  name = "r1"
  metric = "rmse"
  warn = [
    1,
    2,
  ]
  [[models.rules]]
  name = "r2"
  metric = "bias"
  warn = "high"  # MARK
"""


def test_type_error_in_second_model_third_rule_names_key_and_line():
    text = TWO_MODELS.replace("tags = '''\nwarn = \"not a key\"\n'''\n", "")
    text = text.replace("  warn = [\n    1,\n    2,\n  ]", "  warn = 2.0")
    err = one_error(text)
    assert err.key == "models[1].rules[2].warn"
    assert err.message == 'expected a number, got "high"'
    assert (
        str(err)
        == f'c.toml:{line_of(text, "MARK")}: models[1].rules[2].warn: expected a number, got "high"'
    )


def test_multiline_strings_and_arrays_do_not_confuse_the_line_map():
    errs = errors_of(TWO_MODELS)
    by_key = {e.key: e for e in errs}
    # The multi-line string holds "warn = ..." text: it must not be taken for a key.
    assert by_key["models[1].tags"].line == line_of(TWO_MODELS, "tags = '''")
    assert "unknown key" in by_key["models[1].tags"].message
    assert by_key["models[1].rules[1].warn"].line == line_of(TWO_MODELS, 'metric = "rmse"') + 1
    assert by_key["models[1].rules[2].warn"].line == line_of(TWO_MODELS, "MARK")
    assert [e.line for e in errs] == sorted(e.line for e in errs)


def test_array_element_errors_point_at_the_element_line():
    text = (
        MODEL
        + 'sensitive = ["sex", "age"]\nintersections = [\n  ["sex", "age"],\n  ["sex", "band"],  # HERE\n]\n'
    )
    assert_error(
        text, "models[0].intersections[1][1]", "# HERE", '"band" is not listed in sensitive'
    )


@pytest.mark.parametrize("n_models", [1, 2, 3])
@pytest.mark.parametrize("n_rules", [1, 3])
def test_array_of_tables_indices_map_to_the_right_occurrence(n_models, n_rules):
    parts = []
    for i in range(n_models):
        parts.append(f'[[models]]\nname = "m{i}"\ntask = "binary"\n')
        for j in range(n_rules):
            parts.append(f'[[models.rules]]\nname = "r{j}"\nmetric = "psi"\nwarn = 0.1\n')
            parts.append(f"min_samples = 0  # M{i}R{j}\n")
    text = "".join(parts)
    errs = errors_of(text)
    assert len(errs) == n_models * n_rules
    for e in errs:
        i, j = map(
            int, re.fullmatch(r"models\[(\d+)\]\.rules\[(\d+)\]\.min_samples", e.key).groups()
        )
        assert e.line == line_of(text, f"# M{i}R{j}")
        assert "at least 1" in e.message


def test_quoted_and_dotted_keys():
    text = MODEL + '"n_bins" = 1  # A\n[triggers]\ntarget.kind = "airflow"  # B\n'
    errs = errors_of(text)
    by_key = {e.key: e for e in errs}
    assert by_key["models[0].n_bins"].line == line_of(text, "# A")
    assert by_key["triggers.target.url"].line == line_of(text, "# B")


# --------------------------------------------------------------------------- error kinds


def test_unknown_key_did_you_mean():
    text = MODEL + "[[models.rules]]\nname = 'r'\nmetric = 'psi'\nwarm = 0.1  # X\n"
    errs = errors_of(text)
    err = next(e for e in errs if e.key == "models[0].rules[0].warm")
    assert err.line == line_of(text, "# X")
    assert 'did you mean "warn"?' in err.message


def test_unknown_section_did_you_mean():
    assert_error(
        MODEL + "[sink.slack]\nenabled = true  # X\n",
        "sink",
        "[sink.slack]",
        'did you mean "sinks"?',
    )


def test_missing_required_key_names_table_header_line():
    text = "[[models]]\nname = 'a'\ntask = 'binary'\n[[models]]  # SECOND\nname = 'b'\n"
    assert_error(text, "models[1].task", "# SECOND", "missing required key")


def test_single_vs_double_bracket_hint():
    err = one_error("[models]  # X\nname = 'a'\ntask = 'binary'\n")
    assert err.line == 1 and "write [[models]] (double brackets)" in err.message
    err = one_error(MODEL + "[[kafka]]\ngroup_id = 'g'\n")
    assert err.key == "kafka" and "got an array of tables; write [kafka]" in err.message


def test_missing_models():
    err = one_error("[kafka]\n")
    assert err.key == "models" and "at least one [[models]]" in err.message


def test_wrong_types():
    text = MODEL + "high_risk = 1  # A\nwindow_panes = 2.5  # B\nclasses = 'x'  # C\n"
    errs = {e.key: e for e in errors_of(text)}
    assert errs["models[0].high_risk"].message == "expected a boolean (true or false), got 1"
    assert errs["models[0].window_panes"].message == "expected an integer, got 2.5"
    assert errs["models[0].classes"].message == 'expected an array of strings, got "x"'
    assert errs["models[0].classes"].line == line_of(text, "# C")


@pytest.mark.parametrize(
    "snippet, key",
    [
        ("[kafka]\nsecurity_protocol = 'TLS'  # X\n", "kafka.security_protocol"),
        ("[kafka]\nsasl_mechanism = 'plain'  # X\n", "kafka.sasl_mechanism"),
        ("[fields]\ntimestamp_unit = 'us'  # X\n", "fields.timestamp_unit"),
        ("[[models]]\nname = 'a'\ntask = 'binnary'  # X\n", "models[0].task"),
        (MODEL + "[[models.features]]\nname='f'\ntype='text'  # X\n", "models[0].features[0].type"),
        (
            MODEL + "[[models.rules]]\nname='r'\nmetric='psi'\nwarn=1.0\nscope='features'  # X\n",
            "models[0].rules[0].scope",
        ),
        (
            MODEL
            + "[[models.rules]]\nname='r'\nmetric='accuracy'\nwarn=1.0\ndirection='down'  # X\n",
            "models[0].rules[0].direction",
        ),
    ],
)
def test_bad_enum_values(snippet, key):
    text = snippet if "[[models]]" in snippet else MODEL + snippet
    err = assert_error(text, key, "# X", "unknown value")
    assert "expected one of" in err.message


def test_enum_case_suggestion():
    err = one_error(
        MODEL + "[kafka]\nsecurity_protocol = 'SASL_SSL'\nsasl_mechanism = 'plain'\n", {}
    )
    assert 'did you mean "PLAIN"?' in err.message


def test_duplicate_model_and_feature_names():
    text = (
        "[[models]]\nname = 'a'  # FIRST\ntask = 'binary'\n"
        "  [[models.features]]\n  name = 'f'\n  type = 'numeric'\n"
        "  [[models.features]]\n  name = 'f'  # DUPF\n  type = 'numeric'\n"
        "[[models]]\nname = 'a'  # DUPM\ntask = 'binary'\n"
    )
    errs = {e.key: e for e in errors_of(text)}
    assert errs["models[1].name"].line == line_of(text, "# DUPM")
    assert f"first defined at line {line_of(text, '# FIRST')}" in errs["models[1].name"].message
    assert errs["models[0].features[1].name"].line == line_of(text, "# DUPF")
    assert 'duplicate feature name "f"' in errs["models[0].features[1].name"].message


def test_unknown_metric_did_you_mean():
    text = MODEL + "[[models.rules]]\nname='r'\nmetric='accuraccy'  # X\nwarn=0.9\n"
    assert_error(text, "models[0].rules[0].metric", "# X", 'did you mean "accuracy"?')


@pytest.mark.parametrize(
    "metric, scope, want",
    [("psi", "model", "feature"), ("accuracy", "feature", "model"),
     ("demographic_parity_difference", "model", "group"), ("adwin", "group", "model")],
)  # fmt: skip
def test_scope_must_match_metric(metric, scope, want):
    extra = "" if metric in DETECTORS else "warn = 0.5\n"
    direction = 'direction = "below"\n' if metric == "accuracy" else ""
    text = (
        MODEL + "sensitive = ['sex']\n[[models.rules]]\nname='r'\n"
        f"metric='{metric}'\n{extra}{direction}scope='{scope}'  # X\n"
    )
    assert_error(text, "models[0].rules[0].scope", "# X", f'must be "{want}"')


def test_scope_inferred_from_metric():
    text = (
        MODEL
        + "sensitive=['s']\n"
        + "".join(
            f"[[models.rules]]\nname='{m}'\nmetric='{m}'\n{'' if m in DETECTORS else 'warn=0.1'}\n"
            for m in ("psi", "brier", "adwin", "equalized_odds_difference")
        )
    )
    rules = load_config_text(text, env={}).models[0].rules
    assert [r.scope for r in rules] == ["feature", "model", "model", "group"]
    assert rules[2].warn is None and rules[2].resolve is None and rules[2].is_detector


def test_warn_alert_order_follows_direction():
    rule = MODEL + "[[models.rules]]\nname='r'\nmetric='{m}'\nwarn={w}\nalert={a}  # X\n"
    # Direction comes from the metric when absent: lower accuracy / p-values are worse.
    acc = load_config_text(rule.format(m="accuracy", w=0.8, a=0.7), env={}).models[0].rules[0]
    assert (acc.direction, acc.resolve) == ("below", 0.8)
    ks = load_config_text(rule.format(m="ks", w=0.05, a=0.01), env={}).models[0].rules[0]
    assert (ks.direction, ks.scope) == ("below", "feature")
    err = assert_error(
        rule.format(m="psi", w=0.25, a=0.1), "models[0].rules[0].alert", "# X", 'direction "above"'
    )
    assert "warn 0.25 is above alert 0.1" in err.message
    assert_error(
        rule.format(m="accuracy", w=0.7, a=0.8),
        "models[0].rules[0].alert",
        "# X",
        'direction "below"',
    )
    text = rule.format(m="accuracy", w=0.8, a=0.7).replace("  # X", "\ndirection='above'  # X")
    assert_error(
        text, "models[0].rules[0].direction", "# X", 'must be "below" for metric "accuracy"'
    )
    text = rule.format(m="chi_square", w=0.05, a=0.01).replace("  # X", "\ndirection='above'  # X")
    assert_error(text, "models[0].rules[0].direction", "# X", "p-values")
    bias = rule.format(m="bias", w=-0.1, a=-0.2).replace("  # X", "\ndirection='below'")
    bias = bias.replace('task = "binary"', 'task = "regression"')
    assert load_config_text(bias, env={}).models[0].rules[0].direction == "below"
    text = (
        MODEL + "[[models.rules]]\nname='r'\nmetric='psi'\nwarn=0.2\nalert=0.25\nresolve=0.3  # X\n"
    )
    assert_error(text, "models[0].rules[0].resolve", "# X", "at or below warn")


def test_threshold_rule_needs_a_threshold_and_detector_rule_refuses_one():
    text = MODEL + "[[models.rules]]  # H\nname='r'\nmetric='f1'\n"
    assert_error(text, "models[0].rules[0].alert", "# H", "needs warn and/or alert")
    text = MODEL + "[[models.rules]]\nname='r'\nmetric='ddm'\nalert=0.5  # X\n"
    assert_error(text, "models[0].rules[0].alert", "# X", "fire on a detection")


def test_metric_must_fit_task():
    text = "[[models]]\nname='a'\ntask='regression'\n[[models.rules]]\nname='r'\nmetric='roc_auc'  # X\nwarn=0.5\ndirection='below'\n"
    assert_error(text, "models[0].rules[0].metric", "# X", "needs a classification task")
    text = (
        MODEL
        + "[[models.rules]]\nname='r'\nmetric='demographic_parity_difference'  # X\nwarn=0.1\n"
    )
    assert_error(text, "models[0].rules[0].metric", "# X", "needs sensitive attributes")


def test_intersection_attribute_must_be_sensitive():
    text = MODEL + "sensitive = ['sex']\nintersections = [['sex', 'race']]  # X\n"
    assert_error(text, "models[0].intersections[0][1]", "# X", '"race" is not listed in sensitive')


def test_sasl_mechanism_without_sasl_protocol():
    text = MODEL + "[kafka]\nsasl_mechanism = 'PLAIN'  # X\n"
    assert_error(text, "kafka.sasl_mechanism", "# X", 'security_protocol is "PLAINTEXT"')
    text = MODEL + "[kafka]\nsecurity_protocol = 'SASL_SSL'  # X\n"
    assert_error(text, "kafka.sasl_mechanism", "# X", "required when")


def test_all_errors_reported_together_in_file_order():
    text = (
        "[kafka]\nsession_timeout_ms = 'x'  # A\n[[models]]\nname='a'\ntask='nope'  # B\n"
        "[http]\nport = 70000  # C\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path="c.toml", env={})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert [e.line for e in info.value.errors] == [line_of(text, m) for m in ("# A", "# B", "# C")]
    assert (
        lines[2]
        == f"c.toml:{line_of(text, '# C')}: http.port: must be between 0 and 65535, got 70000"
    )


def test_invalid_toml_names_line():
    err = one_error(MODEL + "[kafka]\ngroup_id = \n")
    assert err.line == MODEL.count("\n") + 2 and "invalid TOML" in err.message


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/driftline.toml")


# --------------------------------------------------------------------------- environment


def test_env_substitution_whole_and_embedded():
    text = MODEL + (
        "[kafka]\nbootstrap_servers = ['${BROKER}:9092', '${BROKER2}']\nclient_id = 'dl-${POD}'\n"
        "[state]\ndir = '$${literal}'\n"
    )
    cfg = load_config_text(text, env={"BROKER": "k0", "BROKER2": "k1:9093", "POD": "7"})
    assert cfg.kafka.bootstrap_servers == ("k0:9092", "k1:9093")
    assert cfg.kafka.client_id == "dl-7"
    assert cfg.state.dir == "${literal}"


def test_missing_env_var_names_key_line_and_variable():
    text = MODEL + "[http]\napi_token = '${DL_TOKEN}'  # X\n"
    err = assert_error(text, "http.api_token", "# X", "DL_TOKEN")
    assert "is not set" in err.message
    assert load_config_text(text, env={"DL_TOKEN": "t0k"}).http.api_token == "t0k"


def test_unterminated_reference():
    assert_error(MODEL + "[state]\ndir = 'a${B'  # X\n", "state.dir", "# X", "unterminated")


@pytest.mark.parametrize(
    "section, key",
    [("kafka", "sasl_plain_password"), ("http", "api_token"), ("sinks.slack", "webhook_url"),
     ("sinks.webhook", "secret"), ("sinks.webhook", "previous_secret"), ("triggers.target", "token")],
)  # fmt: skip
def test_literal_secret_refused_without_echoing_it(section, key):
    text = MODEL + f"[{section}]\n{key} = 'hunter2-s3cret'  # X\n"
    errs = [e for e in errors_of(text) if e.key == f"{section}.{key}"]
    assert len(errs) == 1 and errs[0].line == line_of(text, "# X")
    assert "environment variable" in errs[0].message
    assert "hunter2" not in str(errs[0])


def test_secret_header_must_come_from_env():
    base = MODEL + "[triggers.target]\nkind='http'\nurl='https://ci.example/hook'\n"
    text = base + "headers = { Authorization = 'Bearer abc', X-Team = 'ml' }  # X\n"
    assert_error(text, "triggers.target.headers.Authorization", "# X", "environment variable")
    text = base + "headers = { Authorization = 'Bearer ${TOK}', X-Team = 'ml' }\n"
    cfg = load_config_text(text, env={"TOK": "abc"})
    assert cfg.triggers.target.headers == {"Authorization": "Bearer abc", "X-Team": "ml"}
    assert mask_secrets(cfg)["triggers"]["target"]["headers"] == {
        "Authorization": "***",
        "X-Team": "ml",
    }


# --------------------------------------------------------------------------- masking

SECRETS = (
    MODEL
    + """
[kafka]
security_protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
sasl_plain_username = "svc"
sasl_plain_password = "${KAFKA_PASSWORD}"
[http]
api_token = "${API_TOKEN}"
[sinks.slack]
enabled = true
webhook_url = "${SLACK_WEBHOOK_URL}"
[sinks.webhook]
enabled = true
url = "https://hooks.example.com/x"
secret = "${WH_SECRET}"
"""
)
ENV = {
    "KAFKA_PASSWORD": "kp-AAAA",
    "API_TOKEN": "tok-BBBB",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/CCCC",
    "WH_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def test_masking_hides_every_secret():
    cfg = load_config_text(SECRETS, env=ENV)
    assert cfg.kafka.sasl_plain_password == "kp-AAAA"  # resolved for use...
    data = mask_secrets(cfg)
    assert data["kafka"]["sasl_plain_password"] == "***"
    assert data["kafka"]["sasl_plain_username"] == "svc"
    assert data["http"]["api_token"] == "***"
    assert data["sinks"]["slack"]["webhook_url"] == "***"
    assert data["sinks"]["webhook"]["secret"] == "***"
    assert data["sinks"]["webhook"]["previous_secret"] == ""  # unset stays visibly unset
    for fmt in ("toml", "json"):
        out = render_resolved(cfg, fmt=fmt)
        for value in ENV.values():
            assert value not in out  # ...but never printed
        assert '"***"' in out
    assert json.loads(render_resolved(cfg, fmt="json"))["models"][0]["name"] == "m"


def test_render_resolved_loads_back_to_the_same_config():
    cfg = load_config(EXAMPLE, env={})
    again = load_config_text(render_resolved(cfg), env={})
    assert again == cfg
    text = (
        MODEL + "[[models.rules]]\nname='d'\nmetric='kswin'\n[triggers]\nrequire_approval=false\n"
    )
    cfg = load_config_text(text, env={})
    assert load_config_text(render_resolved(cfg), env={}) == cfg


def test_config_hash_stable_and_secret_independent():
    h1 = config_hash(load_config_text(SECRETS, env=ENV))
    assert re.fullmatch(r"[0-9a-f]{64}", h1)
    assert config_hash(load_config_text(SECRETS, env=ENV)) == h1
    other = dict(ENV, KAFKA_PASSWORD="zz", API_TOKEN="yy", WH_SECRET="whsec_" + "QUFB" * 8)
    assert config_hash(load_config_text(SECRETS, env=other)) == h1
    # Key order and comments in the file do not matter; settings do.
    shuffled = SECRETS.replace('sasl_plain_username = "svc"\n', "") + "# c\n"
    shuffled = shuffled.replace("[kafka]\n", '[kafka]\nsasl_plain_username = "svc"  # moved\n')
    assert config_hash(load_config_text(shuffled, env=ENV)) == h1
    changed = SECRETS.replace('"svc"', '"svc2"')
    assert config_hash(load_config_text(changed, env=ENV)) != h1


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "url, insecure_ok, problem",
    [
        ("https://alertmanager.example:9093", False, None),
        ("https://127.0.0.1:9093", False, None),
        ("http://alertmanager:9093", True, "must use https://"),
        ("http://127.0.0.1:9093", False, "allow_insecure_loopback"),
        ("http://127.0.0.1:9093", True, None),
        ("http://localhost:9093", True, None),
        ("http://[::1]:9093", True, None),
        ("https://169.254.169.254/latest/meta-data", False, "metadata"),
        ("https://169.254.10.1/", False, "link-local"),
        ("https://metadata.google.internal/", False, "metadata"),
        ("https://metadata.google.internal./", False, "metadata"),
        ("https://[fd00:ec2::254]/", False, "metadata"),
        ("https://[fe80::1]/", False, "link-local"),
        ("https://[::ffff:169.254.169.254]/", False, "metadata"),
        ("https://2852039166/", False, "metadata"),  # 169.254.169.254 as one number
        ("https://0xa9.0xfe.0xa9.0xfe/", False, "metadata"),
        ("ftp://files.example/", False, "https://"),
        ("https://", False, "no host"),
        ("https://user:pw@hooks.example/", False, "credentials"),
        ("https://0.0.0.0/", False, "unspecified"),
    ],
)
def test_url_problem(url, insecure_ok, problem):
    got = url_problem(url, insecure_ok)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_url_errors_name_key_and_line():
    text = MODEL + "[sinks.alertmanager]\nenabled = true\nurl = 'http://127.0.0.1:9093'  # X\n"
    assert_error(text, "sinks.alertmanager.url", "# X", "allow_insecure_loopback")
    ok = load_config_text(text + "[delivery]\nallow_insecure_loopback = true\n", env={})
    assert ok.sinks.alertmanager.url == "http://127.0.0.1:9093"
    text = (
        MODEL
        + "[triggers.target]\nkind='airflow'\ndag_id='d'\nurl='https://169.254.169.254'  # X\n"
    )
    assert_error(text, "triggers.target.url", "# X", "metadata")


def test_secret_url_problem_does_not_echo_the_url():
    text = MODEL + "[sinks.slack]\nwebhook_url = '${HOOK}'  # X\n"
    err = assert_error(
        text,
        "sinks.slack.webhook_url",
        "# X",
        "https",
        env={"HOOK": "http://hooks.slack.com/T/B/SECRET"},
    )
    assert "SECRET" not in str(err)


def test_enabled_sink_requires_its_url():
    text = MODEL + "[sinks.slack]\nenabled = true\nwebhook_url = '${HOOK}'  # X\n"
    assert_error(text, "sinks.slack.webhook_url", "# X", "HOOK is empty", env={"HOOK": ""})


def test_webhook_secret_format():
    text = MODEL + "[sinks.webhook]\nsecret = '${S}'  # X\n"
    assert_error(text, "sinks.webhook.secret", "# X", "whsec_", env={"S": "not base64!"})


# --------------------------------------------------------------------------- triggers


def test_trigger_target_kind_specific_keys():
    text = (
        MODEL
        + "[triggers.target]\nkind = 'argo'\nurl = 'https://argo.example'\nnamespace = 'ml'\ndag_id = 'x'  # X\n"
    )
    errs = {e.key: e for e in errors_of(text)}
    assert 'used only with kind = "airflow"' in errs["triggers.target.dag_id"].message
    assert errs["triggers.target.dag_id"].line == line_of(text, "# X")
    assert "required when" in errs["triggers.target.workflow_template"].message
    text = (
        MODEL
        + "[triggers.target]\nkind = 'github'\nurl = 'https://api.github.com'\nrepository = 'nope'  # X\n"
    )
    assert_error(text, "triggers.target.repository", "# X", '"owner/name"')


def test_require_approval_defaults_to_high_risk():
    text = (
        "[[models]]\nname='a'\ntask='binary'\nhigh_risk=true\n[[models]]\nname='b'\ntask='binary'\n"
    )
    cfg = load_config_text(text, env={})
    assert cfg.triggers.approval_required(cfg.model("a"))
    assert not cfg.triggers.approval_required(cfg.model("b"))
    cfg = load_config_text(text + "[triggers]\nrequire_approval = true\n", env={})
    assert cfg.triggers.approval_required(cfg.model("b"))


def test_structs_construct_directly_with_defaults():
    """Other components and tests build settings without a file; 'for' is the attribute for_."""
    rule = RuleConfig(name="r", metric="psi", scope="feature", warn=0.1, for_=3)
    model = ModelConfig(name="m", task="binary", rules=(rule,))
    cfg = Config(models=(model,))
    assert cfg.model("m").rules[0].for_ == 3
    assert mask_secrets(cfg)["models"][0]["rules"][0]["for"] == 3


# --------------------------------------------------------------------------- line map property


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    noise=st.lists(st.sampled_from(["", "# [[models.rules]] x = 1", "   "]), max_size=3),
    tricky=st.booleans(),
    data=st.data(),
)
def test_line_map_finds_the_right_occurrence(shape, noise, tricky, data):
    """Random layouts: every rule error lands on its own line, with its own indices."""
    lines: list[str] = []
    expected: dict[str, int] = {}

    def emit(text: str) -> None:
        lines.extend(text.split("\n"))

    for i, n_rules in enumerate(shape):
        emit(f"[[models]]\nname = 'm{i}'\ntask = 'binary'")
        for n in noise:
            emit(n)
        for j in range(n_rules):
            emit(f"  [[models.rules]]\n  name = 'r{j}'\n  metric = 'psi'")
            if tricky:  # multi-line values that contain header- and key-like text
                emit('  severity = """\n[[models]]\nwarn = 1\n"""')
                emit("  actions = [\n    'notify', # ]\n  ]")
            emit("  warn = [\n    0.1,\n  ]" if data.draw(st.booleans()) else "  warn = 0.1")
            bad = data.draw(st.booleans())
            if bad:
                emit("  min_samples = 0")
                expected[f"models[{i}].rules[{j}].min_samples"] = len(lines)
        emit("  [[models.features]]\n  name = 'f'\n  type = 'numeric'")
    text = "\n".join(lines) + "\n"
    try:
        load_config_text(text, env={})
        got = {}
    except ConfigError as e:
        got = {err.key: err.line for err in e.errors if err.key.endswith("min_samples")}
        others = [str(err) for err in e.errors if not err.key.endswith(("min_samples", ".warn"))]
        assert not others, others
    assert got == expected


# -- state.backend = "kafka" ------------------------------------------------------------------
def test_kafka_backend_needs_a_reference_for_every_model():
    text = EXAMPLE.read_text().replace('backend = "sqlite"', 'backend = "kafka"', 1)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith('backend = "kafka"'))
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "config.toml", env={})
    msg = str(e.value)
    assert f"config.toml:{line}: state.backend" in msg and "credit-risk" in msg and "reference" in msg


@pytest.mark.parametrize(("line", "message"), [
    ("chunk_bytes = 10", "state.chunk_bytes: must be between 1024"),
    ("replication_factor = 0", "state.replication_factor: must be -1"),
    ("model_partitions = 0", "state.model_partitions"),
    ('topic_prefix = "a b"', "state.topic_prefix: must be a Kafka topic name prefix"),
    ('backend = "etcd"', "state.backend"),
])
def test_kafka_state_keys_are_checked(line, message):
    key = line.split(" = ")[0]
    lines = [ln for ln in EXAMPLE.read_text().splitlines() if not ln.startswith(f"{key} = ")]
    text = "\n".join(lines).replace("[state]\n", f"[state]\n{line}\n", 1)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_text(text, "config.toml", env={})


def test_audit_goes_to_a_topic_with_the_kafka_backend():
    from monitor.config import audit_topic, internal_topic_prefix

    cfg = load_config(EXAMPLE, env={})
    assert audit_topic(cfg) == "" and internal_topic_prefix(cfg) == cfg.kafka.group_id
    text = EXAMPLE.read_text().replace('backend = "sqlite"', 'backend = "kafka"', 1)
    text = text.replace('topic_prefix = ""', 'topic_prefix = "dl"', 1)
    text = text.replace('reference = ""', 'reference = "ref.json"')
    cfg = load_config_text(text, "config.toml", env={})
    assert audit_topic(cfg) == "dl-audit"
