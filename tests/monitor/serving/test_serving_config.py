"""The [serving] tables and the rollback / disable rule actions: defaults, and errors that
name the key and the file line."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, load_config_text

RULE = """
[[models]]
name = "credit-risk"
task = "binary"
{model_extra}
  [[models.rules]]
  name = "acc"
  metric = "accuracy"
  alert = 0.75
  actions = {actions}   # ACTIONS
"""


def _text(actions='["notify", "rollback"]', serving="", model_extra=""):
    return serving + RULE.format(actions=actions, model_extra=model_extra)


def _line(text, marker):
    (n,) = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    return n


def _errors(text, env=None):
    with pytest.raises(ConfigError) as info:
        load_config_text(text, path="c.toml", env=env or {})
    return info.value.errors


def test_defaults_are_the_safe_ones():
    cfg = load_config_text(_text(actions='["notify"]'))
    s = cfg.serving
    assert (s.cooldown_seconds, s.dry_run, s.require_approval, s.target.kind) == (3600.0, True, True, "")
    m = cfg.model("credit-risk").serving
    assert (m.inference_service, m.namespace, m.registered_model, m.alias, m.rollback_version) == (
        "", "default", "", "champion", "")


def test_the_shipped_config_documents_every_serving_key():
    text = (Path(__file__).parents[3] / "config.toml").read_text()
    cfg = load_config(Path(__file__).parents[3] / "config.toml")
    for key in ("cooldown_seconds", "dry_run", "require_approval"):
        assert f"\n{key} = " in text.split("\n[serving]", 1)[1].split("\n[", 1)[0], key
    target = text.split("[serving.target]", 1)[1].split("\n[", 1)[0]
    for key in ("kind", "url", "token", "ca_file", "headers", "method", "body", "service_account_dir"):
        assert f"\n{key} = " in target or f"\n# {key} = " in target, key
    assert cfg.serving.dry_run is True


def test_a_serving_action_needs_a_target():
    text = _text()
    (err,) = _errors(text)
    assert err.key == "models[0].rules[0].actions" and err.line == _line(text, "# ACTIONS")
    assert 'action "rollback" needs a serving control endpoint' in err.message


def test_one_serving_action_per_rule():
    text = _text(actions='["rollback", "disable"]', serving='[serving.target]\nkind = "mlflow"\nurl = "https://mlflow.example"\n')
    (err,) = _errors(text)
    assert err.key == "models[0].rules[0].actions" and err.line == _line(text, "# ACTIONS")
    assert 'both "rollback" and "disable"' in err.message


def test_mlflow_rollback_needs_a_version_and_a_number():
    serving = '[serving.target]\nkind = "mlflow"\nurl = "https://mlflow.example"\n'
    text = _text(serving=serving)
    (err,) = _errors(text)
    assert err.line == _line(text, "# ACTIONS") and "models.serving.rollback_version" in err.message
    ok = load_config_text(_text(serving=serving, model_extra='[models.serving]\nrollback_version = "7"'))
    assert ok.model("credit-risk").serving.rollback_version == "7"
    bad = _text(serving=serving, model_extra='[models.serving]\nrollback_version = "v7"   # RV')
    (err,) = _errors(bad)
    assert err.key == "models[0].serving.rollback_version" and err.line == _line(bad, "# RV")
    # disable needs no version
    assert load_config_text(_text(actions='["disable"]', serving=serving)).serving.target.kind == "mlflow"


def test_kserve_defaults_to_the_pods_service_account():
    cfg = load_config_text(_text(serving='[serving.target]\nkind = "kserve"\n'))
    t = cfg.serving.target
    assert t.url == "https://kubernetes.default.svc"
    assert t.service_account_dir == "/var/run/secrets/kubernetes.io/serviceaccount"


def test_http_template_errors_name_the_key_and_line():
    text = _text(serving='[serving.target]\nkind = "http"\nurl = "https://ops.example/models/{modle}"   # URL\n')
    (err,) = _errors(text)
    assert err.key == "serving.target.url" and err.line == _line(text, "# URL")
    assert 'unknown placeholder {modle}; did you mean "model"?' in err.message
    text = _text(serving="[serving.target]\nkind = \"http\"\nurl = \"https://ops.example/x\"\n"
                         "body = '{\"to\": {rollback_version}}'   # BODY\n")
    (err,) = _errors(text)
    assert err.key == "serving.target.body" and err.line == _line(text, "# BODY") and "must be a JSON document" in err.message
    text = _text(serving='[serving.target]\nkind = "http"\nurl = "http://ops.example/{model}"   # PLAIN\n')
    (err,) = _errors(text)
    assert err.line == _line(text, "# PLAIN") and "must use https://" in err.message


def test_secrets_and_kind_specific_keys():
    text = _text(serving='[serving.target]\nkind = "mlflow"\nurl = "https://m.example"\ntoken = "dapi123"   # TOK\n')
    (err,) = _errors(text)
    assert err.key == "serving.target.token" and "${VARIABLE_NAME}" in err.message
    cfg = load_config_text(
        _text(actions='["disable"]',
              serving='[serving.target]\nkind = "mlflow"\nurl = "https://m.example"\ntoken = "${MLFLOW_TOKEN}"\n'),
        env={"MLFLOW_TOKEN": "dapi123"})
    assert cfg.serving.target.token == "dapi123"
    text = _text(actions='["disable"]',
                 serving='[serving.target]\nkind = "mlflow"\nurl = "https://m.example"\nmethod = "PUT"   # M\n')
    (err,) = _errors(text)
    assert err.key == "serving.target.method" and err.line == _line(text, "# M")
    assert 'is used only with kind = "http"' in err.message
