"""Tests for monitor/cli.py: `driftline check-config` as a user runs it, and the command table."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from monitor import cli

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".venv" / "bin" / "driftline"


def driftline(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user does; ``env`` entries set to None are removed."""
    # The installed console script is what users run; fall back to the module in a checkout
    # without the venv script so the test still exercises the same main().
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "monitor.cli"]
    full_env = {**os.environ, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        cmd + list(args), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_check_config_example_exits_0():
    res = driftline("check-config", "--config", "config.toml")
    assert res.returncode == 0, res.stderr
    assert "config_hash" in res.stdout
    assert '[[models]]\nname = "credit-risk"' in res.stdout


def test_check_config_masks_secrets(tmp_path):
    text = (REPO / "config.toml").read_text()
    text = text.replace('api_token = ""  ', 'api_token = "${DL_TEST_API_TOKEN}"  ', 1)
    text = text.replace('webhook_url = ""  ', 'webhook_url = "${DL_TEST_SLACK}"  ', 1)
    assert "${DL_TEST_API_TOKEN}" in text and "${DL_TEST_SLACK}" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    env = {
        "DL_TEST_API_TOKEN": "tok-7f3a9c",
        "DL_TEST_SLACK": "https://hooks.slack.com/services/T0/B0/xyzzy",
    }
    for fmt in ("toml", "json"):
        res = driftline("check-config", "--config", str(cfg), "--format", fmt, env=env)
        assert res.returncode == 0, res.stderr
        assert "tok-7f3a9c" not in res.stdout and "xyzzy" not in res.stdout
        assert res.stdout.count('"***"') == 2


def test_check_config_bad_config_exits_2_with_key_and_line(tmp_path):
    text = (REPO / "config.toml").read_text()
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith("alert = 0.75"))
    lines[i] = '  alert = "high"'
    cfg = tmp_path / "bad.toml"
    cfg.write_text("\n".join(lines) + "\n")
    res = driftline("check-config", "--config", str(cfg))
    assert res.returncode == 2
    assert f'{cfg}:{i + 1}: models[0].rules[1].alert: expected a number, got "high"' in res.stderr
    assert res.stdout == ""


def test_check_config_missing_env_var_exits_2(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[models]]\nname = "m"\ntask = "binary"\n[http]\napi_token = "${DL_UNSET_VAR_X}"\n'
    )
    res = driftline("check-config", "-c", str(cfg), env={"DL_UNSET_VAR_X": ""})
    assert res.returncode == 0  # set (even empty) is fine
    res = driftline("check-config", "-c", str(cfg), env={"DL_UNSET_VAR_X": None})
    assert res.returncode == 2
    assert f"{cfg}:5: http.api_token: environment variable DL_UNSET_VAR_X is not set" in res.stderr


def test_every_command_is_registered_with_its_module():
    parser = cli.build_parser()
    seen = {}
    for cmd in cli.COMMANDS:
        args = parser.parse_args(list(cmd.words) + _required_args(cmd))
        assert args._command is cmd and args.command == " ".join(cmd.words)
        seen[args.command] = (cmd.module, cmd.function)
    assert seen["run"] == ("monitor.app", "main")
    assert seen["demo"][0] == "monitor.demo" and seen["replay"][0] == "monitor.replay"
    assert seen["reference build"][0] == "monitor.reference_cli"
    assert seen["audit verify"][0] == seen["audit export"][0] == "monitor.audit"
    assert seen["card"] == ("monitor.cards", "main")
    for name in ("approve", "reject", "ack", "silence", "override", "alerts", "retrains"):
        assert seen[name][0] == "monitor.oversight_cli"
    assert seen["erase"] == ("monitor.privacy", "main")


def _required_args(cmd: cli.Command) -> list[str]:
    return {
        "replay": ["--predictions", "p.jsonl", "--out", "o.jsonl"],
        "reference build": ["--model", "m", "--data", "x.parquet", "--out", "r.json"],
        "audit export": ["--model", "m"],
        "card": ["m"],
        "approve": ["req-1"],
        "reject": ["req-1"],
        "ack": ["a-1"],
        "silence": ["a-1", "--duration", "60"],
        "override": ["credit-risk"],
        "erase": ["--config", "c.toml", "p-1"],
    }.get(" ".join(cmd.words), [])


def test_lazy_dispatch_calls_the_module_function(monkeypatch):
    calls = []
    fake = types.ModuleType("driftline_test_fake_impl")
    fake.main = lambda args: calls.append(args.command) or 7
    monkeypatch.setitem(sys.modules, "driftline_test_fake_impl", fake)
    table = (
        cli.Command(("audit", "verify"), "driftline_test_fake_impl", "main", "x", lambda p: None),
    )
    assert cli.main(["audit", "verify"], commands=table) == 7
    assert calls == ["audit verify"]


def test_missing_implementation_is_a_clear_exit():
    table = (cli.Command(("run",), "monitor.no_such_module_xyz", "main", "x", lambda p: None),)
    with pytest.raises(SystemExit, match="monitor.no_such_module_xyz is missing"):
        cli.main(["run"], commands=table)


def test_import_error_inside_an_implementation_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "driftline_test_broken_impl.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    table = (cli.Command(("run",), "driftline_test_broken_impl", "main", "x", lambda p: None),)
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.main(["run"], commands=table)
