"""The oversight CLI against a running API: success, and clear messages for 401, 404,
409 and a daemon that is not running."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from monitor.audit import AuditLog
from monitor.events import AlertEvent
from monitor.http import HttpServer
from monitor.oversight import Oversight
from monitor.oversight_cli import main
from monitor.state import StateStore

TOKEN = "cli-token"


@pytest.fixture
def api(tmp_path, monkeypatch):
    store = StateStore(tmp_path / "s")
    audit = AuditLog(tmp_path / "a.jsonl")
    ov = Oversight(store, audit, cooldown_seconds=0, min_new_labels=0)
    ev = AlertEvent(id="a1", seq=1, state="firing", model="m", rule="r", metric="psi", scope="feature:x",
                    severity="warning", value=0.3, threshold=0.25, window_start=0, window_end=60, started_at=0)
    with store.transaction() as conn:
        ov.record_transitions(conn, [ev])
    srv = HttpServer("127.0.0.1", 0, CollectorRegistry(), lambda: True, lambda: (True, ""), ov, TOKEN)
    srv.start()
    monkeypatch.setenv("DRIFTLINE_URL", srv.url)
    monkeypatch.delenv("DRIFTLINE_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./config.toml to fall back on
    yield srv, ov, tmp_path
    srv.stop()
    audit.close()
    store.close()


def test_commands_through_the_project_cli_parser(api, monkeypatch, capsys):
    from monitor.cli import build_parser

    srv, ov, tmp = api
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", TOKEN)
    args = build_parser().parse_args(["ack", "a1", "--by", "zoe", "--reason", "seen"])
    assert main(args) == 0
    assert ov.get_alert("a1")["acknowledged"]["by"] == "zoe"
    args = build_parser().parse_args(["silence", "a1", "--by", "zoe", "--reason", "noisy", "--duration", "600"])
    assert main(args) == 0
    args = build_parser().parse_args(["override", "m", "--by", "zoe", "--reason", "manual", "--duration", "60"])
    assert main(args) == 0
    assert ov.overrides()["m"]["who"] == "zoe"
    capsys.readouterr()
    monkeypatch.delenv("DRIFTLINE_API_TOKEN")
    assert main(["alerts", "--token-file", str(token_file)]) == 0
    assert "a1" in capsys.readouterr().out


def test_error_messages(api, monkeypatch, capsys):
    srv, ov, tmp = api
    assert main(["ack", "a1", "--by", "zoe"]) == 1
    assert "no API token" in capsys.readouterr().err
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", "wrong")
    assert main(["ack", "a1", "--by", "zoe"]) == 1
    assert "refused the token (401" in capsys.readouterr().err
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", TOKEN)
    assert main(["approve", "nope", "--by", "zoe", "--reason", "x"]) == 1
    assert "not found (404)" in capsys.readouterr().err
    assert main(["approve", "nope", "--by", "zoe"]) == 1
    assert "needs --reason" in capsys.readouterr().err
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["ack", "a1", "--by", "zoe", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert "cannot reach the Driftline API" in capsys.readouterr().err
