"""Slack "Where it fails": an alert whose details carry the window's top slices (as the
pipeline attaches them from ``Evaluator.top_slices``) lists them; others do not. Also the
Alertmanager ``where`` annotation built from the same lines."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from detectors.slices import SliceCounts, rank_slices
from monitor.events import decode_alert, encode
from monitor.outbox import Notification
from monitor.sinks.alertmanager import am_alert
from monitor.sinks.slack import slack_message


def top_slices(top: int = 5) -> list[dict]:
    """Ranked slices of a seeded window: errors planted in one region x channel cell, and a
    numeric bin (whose level name holds mrkdwn's "<")."""
    rng = np.random.default_rng(3)
    n = 20000
    codes = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 2, n), rng.integers(0, 2, n)])
    bad = ((codes[:, 0] == 2) & (codes[:, 1] == 1)) | (codes[:, 2] == 0)
    errors = rng.random(n) < np.where(bad, 0.3, 0.1)
    sc = SliceCounts(["region", "channel", "income"], [["n", "s", "e"], ["web", "app"], ["<-1.5", ">=-1.5"]],
                     pairs=[(0, 1), (0, 2), (1, 2)])
    sc.update_outcomes(codes, errors)
    ranked = [r.to_dict() for r in rank_slices(sc, top=top, min_size=100)]
    assert len(ranked) == top and all(r["significant"] for r in ranked[:2])
    return ranked


def alert(make_event, details: dict | None = None, metric: str = "accuracy", **kw):
    ev = make_event(rule="accuracy-drop", value=0.71, details=details or {})
    return msgspec.structs.replace(ev, metric=metric, scope="model", **kw)


def notification(events) -> Notification:
    kind = "alert_group" if len(events) > 1 else "alert"
    return Notification(1, "slack", "k", kind, events[0].model, tuple(events), None, 0, 0.0, 0)


def where_block(msg: dict) -> str | None:
    texts = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    hits = [t for t in texts if t.startswith("*Where it fails*")]
    assert len(hits) <= 1
    return hits[0] if hits else None


def expected_line(s: dict, what: str = "error") -> str:
    """The documented line, built here from the slice's own numbers (mrkdwn-escaped)."""
    name = s["name"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    d, lo, hi = (100 * s[k] for k in ("difference", "ci_low", "ci_high"))
    return (f"• {name}: {what} {100 * s['rate']:.1f}% vs {100 * s['rest_rate']:.1f}% elsewhere "
            f"({d:+.1f} pts, CI {lo:+.1f} to {hi:+.1f}), {100 * s['share']:.1f}% of traffic, "
            f"q = {s['q_value']:.4g}")


def test_alert_with_slices_lists_them_under_where_it_fails(make_event):
    slices = top_slices()
    ev = alert(make_event, {"slices": slices, "slices_by": "error"})
    msg = slack_message(notification([ev]))
    block = where_block(msg)
    assert block is not None
    lines = block.splitlines()
    assert lines[0] == "*Where it fails*"
    assert lines[1:] == [expected_line(s) for s in slices]
    # pair names and numeric bins escaped for mrkdwn
    assert "&amp;income=&lt;-1.5" in block and "&income" not in block and "<-1.5" not in block
    # after the section with the fields, before the context line
    kinds = [b["type"] for b in msg["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    json.dumps(msg)


def test_slices_survive_the_outbox_encoding(make_event):
    ev = alert(make_event, {"slices": top_slices(), "slices_by": "error"})
    again = decode_alert(encode(ev))
    assert slack_message(notification([again])) == slack_message(notification([ev]))


def test_selection_slices_say_selection(make_event):
    slices = top_slices(3)
    ev = alert(make_event, {"slices": slices, "slices_by": "selection"}, metric="demographic_parity_difference")
    lines = where_block(slack_message(notification([ev]))).splitlines()[1:]
    assert lines == [expected_line(s, "selection") for s in slices]


def test_at_most_five_slices_are_listed(make_event):
    slices = top_slices(8)
    ev = alert(make_event, {"slices": slices, "slices_by": "error"})
    lines = where_block(slack_message(notification([ev]))).splitlines()
    assert lines[1:] == [expected_line(s) for s in slices[:5]]


@pytest.mark.parametrize("details", [{}, {"slices": []}, {"slices": None, "slices_by": "error"}])
def test_alert_without_slices_has_no_where_it_fails(make_event, details):
    msg = slack_message(notification([alert(make_event, details)]))
    assert where_block(msg) is None
    assert "Where it fails" not in json.dumps(msg)


def test_grouped_notification_takes_the_slices_of_the_alert_that_has_them(make_event):
    slices = top_slices(2)
    drift = [make_event(f"f{i}", value=0.3 + 0.01 * i) for i in range(3)]
    acc = alert(make_event, {"slices": slices, "slices_by": "error"})
    msg = slack_message(notification([*drift, acc]))
    assert where_block(msg).splitlines()[1:] == [expected_line(s) for s in slices]
    assert where_block(slack_message(notification(drift))) is None


def test_alertmanager_where_annotation_lists_the_top_three(make_event):
    slices = top_slices()
    a = am_alert(alert(make_event, {"slices": slices, "slices_by": "error"}), 1_700_000_100.0, 60.0, "")
    parts = a["annotations"]["where"].split("; ")
    assert len(parts) == 3
    assert parts[0].startswith(f"{slices[0]['name']}: error {100 * slices[0]['rate']:.1f}% vs ")
    assert [p.split(": ")[0] for p in parts] == [s["name"] for s in slices[:3]]
    assert "where" not in am_alert(alert(make_event), 1_700_000_100.0, 60.0, "")["annotations"]
