"""Audit chain: appends resume across reopen, verify detects edit/delete/reorder/one-byte
changes and names the first bad line, export selects one model's evidence."""

from __future__ import annotations

import argparse
import hashlib
import json
import threading

import pytest

from monitor.audit import (
    GENESIS_HASH,
    AuditError,
    AuditLog,
    canonical,
    export,
    main,
    main_verify,
    verify,
)


def _fill(path, n=6):
    with AuditLog(path) as log:
        for i in range(n):
            log.append("alert.transition", {"i": i, "v": 0.5 * i}, model="m" if i % 2 else "other",
                       time=1_700_000_000.0 + i)
    return path.read_bytes().splitlines(keepends=True)


def test_chain_fields_and_independent_hash(tmp_path):
    path = tmp_path / "audit.jsonl"
    _fill(path, 3)
    lines = path.read_text().splitlines()
    prev = GENESIS_HASH
    for i, line in enumerate(lines):
        e = json.loads(line)
        assert e["seq"] == i and e["prev_hash"] == prev
        body = {k: v for k, v in e.items() if k != "hash"}
        # Independent canonicalisation: sorted keys, compact separators, UTF-8.
        expect = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                           ensure_ascii=False).encode()).hexdigest()
        assert e["hash"] == expect
        prev = e["hash"]
    res = verify(path)
    assert res.ok and res.entries == 3 and res.first_bad_line is None and res.head_hash == prev


def test_resume_on_reopen_and_nonfinite(tmp_path):
    path = tmp_path / "a.jsonl"
    _fill(path, 2)
    with AuditLog(path) as log:
        assert log.head()[0] == 1
        e = log.append("retrain.created", {"x": float("nan"), "y": float("inf")}, model="m", actor="bob")
        assert e["seq"] == 2 and e["data"] == {"x": "NaN", "y": "Infinity"}
    assert verify(path).ok and verify(path).entries == 3


def test_unknown_kind_refused(tmp_path):
    with AuditLog(tmp_path / "a.jsonl") as log, pytest.raises(AuditError, match="unknown audit kind"):
        log.append("alert.fired", {})


@pytest.mark.parametrize("line_no", [0, 2, 5])
def test_edit_detected_at_the_edited_line(tmp_path, line_no):
    path = tmp_path / "a.jsonl"
    lines = _fill(path)
    e = json.loads(lines[line_no])
    e["data"]["v"] = 99.0
    lines[line_no] = canonical(e) + b"\n"  # well-formed, but its hash no longer matches
    path.write_bytes(b"".join(lines))
    res = verify(path)
    assert not res.ok and res.first_bad_line == line_no + 1 and res.entries == line_no
    assert "edited" in res.reason


def test_edit_with_recomputed_hash_breaks_next_link(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = _fill(path)
    e = json.loads(lines[1])
    e["data"]["v"] = 42.0
    e["hash"] = hashlib.sha256(canonical({k: v for k, v in e.items() if k != "hash"})).hexdigest()
    lines[1] = canonical(e) + b"\n"
    path.write_bytes(b"".join(lines))
    res = verify(path)
    assert not res.ok and res.first_bad_line == 3 and "prev_hash" in res.reason


def test_deletion_and_reordering_detected(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = _fill(path)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    res = verify(path)
    assert not res.ok and res.first_bad_line == 3
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    res = verify(path)
    assert not res.ok and res.first_bad_line == 2
    path.write_bytes(b"".join(lines[1:]))  # first entry deleted
    res = verify(path)
    assert not res.ok and res.first_bad_line == 1


def test_every_single_byte_change_is_detected(tmp_path):
    path = tmp_path / "a.jsonl"
    original = b"".join(_fill(path, 3))
    line_starts = [0] + [i + 1 for i, b in enumerate(original) if b == ord("\n")]
    # Try a handful of replacement bytes at every position of the log.
    for pos in range(len(original)):
        for repl in (b" ", b"0", b"a", b"\n"):
            if original[pos : pos + 1] == repl:
                continue
            data = original[:pos] + repl + original[pos + 1 :]
            path.write_bytes(data)
            res = verify(path)
            assert not res.ok, (pos, repl)
            line_of_pos = max(i for i, s in enumerate(line_starts) if s <= pos) + 1
            # Named line is the edited one (or the one after, when the edit hit its newline).
            assert res.first_bad_line in (line_of_pos, line_of_pos + 1), (pos, repl, res)


def test_tail_truncation_needs_the_head_anchor(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        for i in range(4):
            log.append("trigger.sent", {"i": i})
        head = log.head()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    assert verify(path).ok  # a shorter valid chain...
    res = verify(path, expect_head=head)
    assert not res.ok and "truncated" in res.reason  # ...is caught against the recorded head
    path.write_bytes(b"".join(lines)[:-5])  # cut in the middle of the last line
    res = verify(path)
    assert not res.ok and res.first_bad_line == 4


def test_torn_tail_is_repaired_and_recorded(tmp_path):
    path = tmp_path / "a.jsonl"
    _fill(path, 2)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":2,"half')
    with AuditLog(path) as log:
        e = log.last_entry
        assert e["kind"] == "audit.tail_repaired" and e["seq"] == 2
        assert e["data"]["removed_bytes"] == len(b'{"seq":2,"half')
    assert verify(path).ok


def test_concurrent_appends_keep_one_chain(tmp_path):
    path = tmp_path / "a.jsonl"
    a, b = AuditLog(path), AuditLog(path)  # two handles: flock + head re-read keep one chain

    def work(log, tag):
        for i in range(50):
            log.append("notification.delivered", {"t": tag, "i": i})

    threads = [threading.Thread(target=work, args=(log, t)) for log, t in ((a, "a"), (a, "a2"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    res = verify(path)
    assert res.ok and res.entries == 150


def test_export_one_model_since(tmp_path):
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.append("config.loaded", {"config_hash": "abc"}, time=1_700_000_000.0)
        log.append("alert.transition", {"n": 1}, model="m", time=1_700_000_100.0)
        log.append("alert.transition", {"n": 2}, model="x", time=1_700_000_200.0)
        log.append("retrain.approved", {"n": 3}, model="m", actor="al", time=1_700_000_300.0)
    doc = export(path, "m")
    assert [e["seq"] for e in doc["entries"]] == [0, 1, 3] and doc["verification"]["ok"]
    doc = export(path, "m", since="2023-11-14T22:15:00Z")  # 1700000100
    assert [e["seq"] for e in doc["entries"]] == [1, 3]
    out = tmp_path / "m.json"
    ns = argparse.Namespace(command="audit export", path=str(path), config=None, model="m",
                            since=None, until=None, output=str(out))
    assert main(ns) == 0
    assert json.loads(out.read_text())["model"] == "m"


def test_cli_verify_exit_codes(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    lines = _fill(path, 3)
    assert main_verify(["--path", str(path)]) == 0
    assert "OK: 3 entries" in capsys.readouterr().out
    path.write_bytes(lines[0] + lines[1].replace(b'"i":1', b'"i":7') + lines[2])
    assert main(argparse.Namespace(command="audit verify", path=str(path), config=None)) == 1
    assert "FAILED at line 2" in capsys.readouterr().err
