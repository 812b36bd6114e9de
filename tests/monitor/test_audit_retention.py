"""Audit payload retention: payloads older than ``audit.payload_retention_days`` are dropped
and the hash chain still verifies; an edited payload is still caught; another writer
follows the rewritten file; logs without retention keep their format."""

from __future__ import annotations

import json

import pytest

from monitor.audit import KEEP_PAYLOAD, AuditLog, main_export, parse_time, verify
from monitor.cli import main as cli_main
from monitor.config import load_config_text
from monitor.errors import ConfigError

NOW = 1_760_000_000.0
DAY = 86400.0


def _fill(log: AuditLog) -> None:
    log.append("config.loaded", {"source": "c.toml", "config_hash": "h", "models": ["m"]}, time=NOW - 40 * DAY)
    log.append("alert.transition", {"alert_id": "a1", "key": "k1",
                                    "event": {"id": "a1", "state": "firing", "details": {"slices": [["cat_0=b"]]}}},
               model="m", time=NOW - 40 * DAY)
    log.append("alert.acknowledged", {"alert_id": "a1", "reason": "called Jane Doe about it"}, model="m",
               actor="alice", time=NOW - 35 * DAY)
    log.append("reference.version", {"version": "v1", "source": "r.json", "sha256": "0" * 64}, model="m",
               time=NOW - 35 * DAY)
    log.append("alert.acknowledged", {"alert_id": "a2", "reason": "recent"}, model="m", actor="bob", time=NOW - DAY)


def _entries(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_old_payloads_are_dropped_and_the_chain_still_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, payload_retention_days=30) as log:
        _fill(log)
        before = _entries(path)
        assert verify(path).ok
        assert log.redact(now=NOW) == 2
        assert log.redact(now=NOW) == 0  # nothing left to drop
        log.append("alert.acknowledged", {"alert_id": "a3", "reason": "after"}, model="m", actor="carol")
    res = verify(path)
    assert res.ok, res
    after = _entries(path)
    assert len(after) == len(before) + 2  # the audit.redacted entry and the one appended after
    for b, a in zip(before, after, strict=False):
        old = b["kind"] not in KEEP_PAYLOAD and parse_time(b["time"]) < NOW - 30 * DAY
        assert a["data"] is None if old else a["data"] == b["data"]
        # who did what and when, and the chain, are kept
        assert {k: v for k, v in a.items() if k != "data"} == {k: v for k, v in b.items() if k != "data"}
    assert [e["kind"] for e in after if e["data"] is None] == ["alert.transition", "alert.acknowledged"]
    assert "Jane Doe" not in path.read_text() and "cat_0=b" not in path.read_text()
    red = after[len(before)]
    assert red["kind"] == "audit.redacted" and red["data"]["entries"] == 2


def test_an_edited_payload_is_still_caught_after_redaction(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, payload_retention_days=30) as log:
        _fill(log)
        log.redact(now=NOW)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"recent"', '"edited"')  # a kept payload
    path.write_text("\n".join(lines) + "\n")
    res = verify(path)
    assert not res.ok and res.first_bad_line == 5 and "payload edited" in res.reason


def test_another_writer_follows_the_rewritten_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    a = AuditLog(path, payload_retention_days=30)
    b = AuditLog(path, payload_retention_days=30)  # a second process's handle, opened before
    try:
        _fill(a)
        assert a.redact(now=NOW) == 2
        b.append("alert.acknowledged", {"alert_id": "a9", "reason": "from b"}, model="m", actor="dave")
        a.append("alert.acknowledged", {"alert_id": "a10", "reason": "from a"}, model="m", actor="erin")
    finally:
        a.close()
        b.close()
    res = verify(path)
    assert res.ok, res
    assert [e.get("actor") for e in _entries(path)][-2:] == ["dave", "erin"]


def test_without_retention_the_format_is_unchanged_and_nothing_is_redacted(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        _fill(log)
        assert log.redact(now=NOW + 1000 * DAY) == 0
    assert all("data_sha256" not in e and e["data"] is not None for e in _entries(path))
    # enabling retention later cannot drop payloads that no digest commits to
    with AuditLog(path, payload_retention_days=1) as log:
        assert log.redact(now=NOW + 1000 * DAY) == 0
    assert verify(path).ok


def test_redact_cli_and_the_bundle_counts_redacted_payloads(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, payload_retention_days=30) as log:
        _fill(log)
    # the CLI uses the clock: 40-day-old entries are long past a 1-day retention
    assert cli_main(["audit", "redact", "--path", str(path), "--days", "1"]) == 0
    assert "redacted the payloads of 3 entries" in capsys.readouterr().out
    assert verify(path).ok
    assert main_export(["--path", str(path), "--bundle", str(tmp_path / "b")]) == 0
    logs = json.loads((tmp_path / "b" / "index.json").read_text())["art_12_record_keeping"]["logs"]
    assert logs["payloads_redacted"] == {"alert.acknowledged": 2, "alert.transition": 1}


def test_payload_retention_needs_the_file_log(tmp_path):
    with pytest.raises(ConfigError, match=r"audit\.payload_retention_days.*Kafka"):
        load_config_text('[audit]\ntopic = "audit"\npayload_retention_days = 30\n[[models]]\nname = "m"\n'
                         'task = "binary"\n[[models.features]]\nname = "x"\ntype = "numeric"\n')
    with pytest.raises(ConfigError, match=r"audit\.payload_retention_days"):
        load_config_text('[audit]\npayload_retention_days = -1\n[[models]]\nname = "m"\n'
                         'task = "binary"\n[[models.features]]\nname = "x"\ntype = "numeric"\n')
