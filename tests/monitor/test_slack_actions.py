"""Slack buttons end to end on loopback: the Block Kit messages carry the buttons, a click
signed per Slack's v0 scheme (computed here with hmac, independently of slack_sdk) acts as
the Slack user through the API's own logic, and unsigned, wrongly signed, stale and
replayed requests get 401. Also the read-only /ui page's auth and escaping."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitor import oversight_cli
from monitor.audit import AuditLog, verify
from monitor.events import AlertEvent, RetrainRequest, alert_id
from monitor.http import HttpServer, ui_link
from monitor.metrics import Metrics
from monitor.outbox import Notification
from monitor.oversight import Oversight
from monitor.replay import transition_record
from monitor.sinks.slack import (
    ACTION_ACK,
    ACTION_APPROVE,
    ACTION_REJECT,
    ACTION_SILENCE,
    ACTIONS_BLOCK_ID,
    slack_message,
)
from monitor.slack_actions import SlackActions
from monitor.state import StateStore

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the shape of a Slack app's signing secret
TOKEN = "ui-api-token"
USER = {"id": "U024BE7LH", "username": "alice", "name": "alice", "team_id": "T9TK3CUKW"}
RESPONSE_URL = "https://hooks.slack.com/actions/T9TK3CUKW/1509734234/abcdef"


def sign(body: str, ts: int, secret: str = SECRET) -> str:
    """Slack's v0 request signature: HMAC-SHA256 over "v0:<timestamp>:<body>", hex, "v0=" prefix."""
    base = f"v0:{ts}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def drift(model="credit-risk", rule="accuracy-drop", started=1_700_000_000.0, scope="model", state="firing", seq=1):
    return AlertEvent(
        id=alert_id(model, rule, scope, started), seq=seq, state=state, model=model, rule=rule, metric="accuracy",
        scope=scope, severity="critical", value=0.71, threshold=0.75, window_start=started - 900,
        window_end=started, started_at=started, model_version="v3", actions=["notify", "retrain"],
    )


def alert_note(events, key="k"):
    kind = "alert_group" if len(events) > 1 else "alert"
    return Notification(1, "slack", key, kind, events[0].model, tuple(events), None, 0, 0.0, 0)


def request_note(req):
    return Notification(1, "slack", f"retrain:{req.id}:{req.status}", "retrain", req.model, (), req, 0, 0.0, 0)


class Env:
    def __init__(self, tmp_path, commands=None, slack=True):
        self.store = StateStore(tmp_path / "state")
        self.audit_path = tmp_path / "audit.jsonl"
        self.audit = AuditLog(self.audit_path)
        self.ov = Oversight(self.store, self.audit, cooldown_seconds=3600, min_new_labels=0, require_approval=True)
        self.replies: list[tuple[str, dict]] = []
        self.approved: list[dict] = []
        self.approved_event = threading.Event()
        self.reports = tmp_path / "reports"
        self.reports.mkdir()
        self.metrics = Metrics(CollectorRegistry())
        sa = SlackActions(SECRET, respond=lambda url, msg: self.replies.append((url, msg)),
                          metrics=self.metrics) if slack else None
        self.srv = HttpServer("127.0.0.1", 0, self.metrics.registry, lambda: True, lambda: (True, "ok"), self.ov,
                              TOKEN, reports_dir=self.reports, models=lambda: [{"name": "credit-risk", "task":
                              "binary", "ready": True, "reference": "ref.json", "window_events": 900,
                              "firing": [{"rule": "accuracy-drop", "scope": "model"}]}],
                              on_approve=self._on_approve, commands=commands, slack_actions=sa)
        self.srv.start()
        self.client = httpx.Client(base_url=self.srv.url, timeout=10)

    def _on_approve(self, req):
        self.approved.append(req)
        self.approved_event.set()

    def firing(self, *events):
        with self.store.transaction() as conn:
            self.ov.record_transitions(conn, list(events))
        self.ov.flush_audit()

    def pending_retrain(self, ev):
        with self.store.transaction() as conn:
            self.ov.record_transitions(conn, [ev])
            req = self.ov.propose_retrain(conn, ev.model, "accuracy-drop: accuracy 0.71 < 0.75",
                                          (ev.window_start, ev.window_end), {"alert": transition_record(ev)},
                                          labels_since_last=5000, high_risk=True,
                                          now=time.time(), model_version="v3")
        self.ov.flush_audit()
        assert req is not None and req.status == "pending"
        return req

    def click(self, message: dict, action_id: str, *, ts: int | None = None, secret: str = SECRET,
              signed: bool = True, user: dict = USER, response_url: str = RESPONSE_URL,
              body: str | None = None) -> httpx.Response:
        """POST what Slack posts when ``user`` presses the button ``action_id`` on ``message``."""
        if body is None:
            body = urlencode({"payload": json.dumps(block_actions(message, action_id, user, response_url))})
        ts = int(time.time()) if ts is None else ts
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers |= {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(body, ts, secret)}
        return self.client.post("/slack/actions", content=body.encode(), headers=headers)

    def counted(self, action, outcome):
        v = self.metrics.registry.get_sample_value("driftline_slack_actions_total",
                                                   {"action": action, "outcome": outcome})
        return v or 0.0

    def entries(self, kind):
        lines = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        return [e for e in lines if e["kind"] == kind]

    def close(self):
        self.client.close()
        self.srv.stop()
        self.audit.close()


def block_actions(message: dict, action_id: str, user: dict, response_url: str) -> dict:
    """A block_actions payload as Slack documents it, for a button of a message we sent."""
    block = next(b for b in message["blocks"] if b["type"] == "actions")
    button = next(e for e in block["elements"] if e["action_id"] == action_id)
    return {
        "type": "block_actions",
        "user": user,
        "api_app_id": "A02",
        "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": "1548261231.000200", "channel_id": "CBR2V3XEX",
                      "is_ephemeral": False},
        "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        "team": {"id": "T9TK3CUKW", "domain": "example"},
        "channel": {"id": "CBR2V3XEX", "name": "ml-alerts"},
        "message": {"type": "message", "ts": "1548261231.000200", **message},
        "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": block["block_id"],
                     "text": button["text"], "value": button["value"], "action_ts": "1548426417.840180"}],
    }


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


# ---------------------------------------------------------------- the messages' buttons


def test_alert_messages_carry_ack_and_silence_buttons_naming_the_alerts():
    ev = drift()
    msg = slack_message(alert_note([ev]), buttons=True)
    actions = [b for b in msg["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1 and actions[0]["block_id"] == ACTIONS_BLOCK_ID
    els = actions[0]["elements"]
    assert [e["action_id"] for e in els] == [ACTION_ACK, ACTION_SILENCE]
    for e in els:
        assert e["type"] == "button" and e["value"] == ev.id
        assert e["text"]["type"] == "plain_text" and 0 < len(e["text"]["text"]) <= 75
    assert [e["text"]["text"] for e in els] == ["Acknowledge", "Silence 1 h"]
    json.dumps(msg)

    # A grouped message: the buttons act on every firing alert in it, each id once.
    group = [drift(scope=f"feature:f{i}") for i in range(3)]
    value = next(b for b in slack_message(alert_note(group), buttons=True)["blocks"]
                 if b["type"] == "actions")["elements"][0]["value"]
    assert value.split() == [e.id for e in group]

    # No buttons on a resolved alert, or when the webhook's app has no interactivity.
    assert not [b for b in slack_message(alert_note([drift(state="resolved", seq=2)]), buttons=True)["blocks"]
                if b["type"] == "actions"]
    assert not [b for b in slack_message(alert_note([ev]))["blocks"] if b["type"] == "actions"]


def test_a_large_group_keeps_the_button_value_within_slacks_limit():
    group = [drift(scope=f"feature:f{i:03d}") for i in range(100)]
    blocks = slack_message(alert_note(group), buttons=True)["blocks"]
    value = next(b for b in blocks if b["type"] == "actions")["elements"][0]["value"]
    ids = value.split()
    assert len(value) <= 2000 and ids == [e.id for e in group[: len(ids)]] and 60 < len(ids) < 100
    assert f"{100 - len(ids)} more through the API or /ui" in blocks[-1]["elements"][0]["text"]


def test_pending_request_messages_carry_approve_and_reject_with_confirmation():
    req = RetrainRequest(id="r1", model="credit-risk", reason="accuracy 0.71 < 0.75", window_start=0,
                         window_end=60, created_at=60, status="pending")
    msg = slack_message(request_note(req), buttons=True)
    block = msg["blocks"][-1]
    assert block["type"] == "actions" and block["block_id"] == ACTIONS_BLOCK_ID
    approve, reject = block["elements"]
    assert (approve["action_id"], approve["value"], approve["style"]) == (ACTION_APPROVE, "r1", "primary")
    assert (reject["action_id"], reject["value"], reject["style"]) == (ACTION_REJECT, "r1", "danger")
    for b in (approve, reject):
        c = b["confirm"]
        assert {k: c[k]["type"] for k in ("title", "text", "confirm", "deny")} == {
            "title": "plain_text", "text": "mrkdwn", "confirm": "plain_text", "deny": "plain_text"}
    decided = RetrainRequest(id="r1", model="credit-risk", reason="x", window_start=0, window_end=60,
                             created_at=60, status="approved", decided_by="ana")
    assert all(b["type"] != "actions" for b in slack_message(request_note(decided), buttons=True)["blocks"])


# ---------------------------------------------------------------- signed clicks


def test_a_signed_approve_click_approves_the_retrain_as_the_slack_user(env):
    req = env.pending_retrain(drift())
    msg = slack_message(request_note(req), buttons=True)
    r = env.click(msg, ACTION_APPROVE)
    assert r.status_code == 200 and r.content == b""
    got = env.ov.get_retrain(req.id)
    assert got["status"] == "approved" and got["decided_by"] == "slack:U024BE7LH"
    assert got["decision_reason"] == "Approved in Slack by alice (U024BE7LH)"
    # The audit trail: the Slack id is the actor, the user's name is in the data.
    (entry,) = env.entries("retrain.approved")
    assert entry["actor"] == "slack:U024BE7LH" and entry["model"] == "credit-risk"
    assert entry["data"]["request_id"] == req.id and "alice" in entry["data"]["reason"]
    assert verify(env.audit_path).ok
    # The approval hook (which sends the retrain) ran, off the request thread.
    assert env.approved_event.wait(5) and env.approved[0]["id"] == req.id
    # The message is rewritten: same content, buttons replaced by who approved.
    ((url, reply),) = env.replies
    assert url == RESPONSE_URL and reply["replace_original"] is True
    assert all(b.get("block_id") != ACTIONS_BLOCK_ID for b in reply["blocks"])
    assert reply["blocks"][: len(msg["blocks"]) - 1] == msg["blocks"][:-1]
    assert reply["blocks"][-1]["elements"][0]["text"].startswith("Approved by <@U024BE7LH> (alice) at ")
    assert env.counted(ACTION_APPROVE, "carried_out") == 1


def test_unsigned_request_gets_401_and_changes_nothing(env):
    req = env.pending_retrain(drift())
    msg = slack_message(request_note(req), buttons=True)
    r = env.click(msg, ACTION_APPROVE, signed=False)
    assert r.status_code == 401 and "not signed by Slack" in r.json()["error"]
    assert env.ov.get_retrain(req.id)["status"] == "pending"
    assert env.replies == [] and env.entries("retrain.approved") == []
    assert env.counted("unknown", "unsigned") == 1


def test_wrong_signature_gets_401(env):
    req = env.pending_retrain(drift())
    msg = slack_message(request_note(req), buttons=True)
    r = env.click(msg, ACTION_APPROVE, secret="another-apps-secret")
    assert r.status_code == 401 and "does not match" in r.json()["error"]
    assert env.counted("unknown", "bad_signature") == 1
    # A body changed after signing fails the same way.
    body = urlencode({"payload": json.dumps(block_actions(msg, ACTION_APPROVE, USER, RESPONSE_URL))})
    ts = int(time.time())
    r = env.client.post("/slack/actions", content=body.replace("alice", "mallory").encode(), headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(body, ts)})
    assert r.status_code == 401
    # A bearer token does not stand in for Slack's signature.
    r = env.client.post("/slack/actions", content=body.encode(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 401
    assert env.ov.get_retrain(req.id)["status"] == "pending"


def test_a_six_minute_old_signed_request_is_refused_as_a_replay(env):
    req = env.pending_retrain(drift())
    msg = slack_message(request_note(req), buttons=True)
    r = env.click(msg, ACTION_APPROVE, ts=int(time.time()) - 360)  # correctly signed, but old
    assert r.status_code == 401 and "replay" in r.json()["error"]
    assert env.counted("unknown", "stale") == 1
    assert env.ov.get_retrain(req.id)["status"] == "pending"


def test_the_same_signed_request_sent_twice_is_refused_the_second_time(env):
    ev = drift()
    env.firing(ev)
    msg = slack_message(alert_note([ev]), buttons=True)
    body = urlencode({"payload": json.dumps(block_actions(msg, ACTION_ACK, USER, RESPONSE_URL))})
    ts = int(time.time())
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(ts),
               "X-Slack-Signature": sign(body, ts)}
    assert env.client.post("/slack/actions", content=body.encode(), headers=headers).status_code == 200
    r = env.client.post("/slack/actions", content=body.encode(), headers=headers)
    assert r.status_code == 401 and "already received" in r.json()["error"]
    assert env.counted("unknown", "replayed") == 1 and env.counted(ACTION_ACK, "carried_out") == 1
    assert len(env.entries("alert.acknowledged")) == 1


def test_ack_button_acknowledges_as_the_slack_user(env):
    ev = drift()
    env.firing(ev)
    msg = slack_message(alert_note([ev]), buttons=True)
    assert env.click(msg, ACTION_ACK).status_code == 200
    a = env.ov.get_alert(ev.id)
    assert a["state"] == "acknowledged" and a["acknowledged"]["by"] == "slack:U024BE7LH"
    (entry,) = env.entries("alert.acknowledged")
    assert entry["actor"] == "slack:U024BE7LH" and entry["data"]["alert_id"] == ev.id
    assert entry["data"]["reason"] == "Acknowledged in Slack by alice (U024BE7LH)"
    ((_, reply),) = env.replies
    assert reply["replace_original"] is True
    assert reply["blocks"][-1]["elements"][0]["text"].startswith("Acknowledged by <@U024BE7LH> (alice)")


def test_silence_button_silences_every_alert_of_the_message_for_an_hour(env):
    group = [drift(scope=f"feature:f{i}") for i in range(2)]
    env.firing(*group)
    msg = slack_message(alert_note(group), buttons=True)
    before = time.time()
    assert env.click(msg, ACTION_SILENCE).status_code == 200
    silences = env.ov.list_silences()
    assert sorted(s["alert_id"] for s in silences) == sorted(e.id for e in group)
    for s in silences:
        assert s["by"] == "slack:U024BE7LH" and before + 3600 - 1 <= s["until"] <= time.time() + 3600 + 1
    assert {env.ov.get_alert(e.id)["state"] for e in group} == {"silenced"}
    entries = env.entries("alert.silenced")
    assert len(entries) == 2 and {e["actor"] for e in entries} == {"slack:U024BE7LH"}
    assert "Silenced for 1 h by <@U024BE7LH> (alice)" in env.replies[0][1]["blocks"][-1]["elements"][0]["text"]


def test_a_refused_action_tells_the_person_privately(env):
    req = env.pending_retrain(drift())
    env.ov.reject(req.id, "bob", "not now")
    msg = slack_message(request_note(req), buttons=True)
    assert env.click(msg, ACTION_APPROVE).status_code == 200  # Slack gets its acknowledgement
    ((_, reply),) = env.replies
    assert reply["response_type"] == "ephemeral" and reply["replace_original"] is False
    assert f"Could not approve `{req.id}`" in reply["text"] and "rejected" in reply["text"]
    assert env.counted(ACTION_APPROVE, "failed") == 1
    assert env.ov.get_retrain(req.id)["status"] == "rejected"


def test_a_response_url_off_slack_is_not_followed(env):
    ev = drift()
    env.firing(ev)
    msg = slack_message(alert_note([ev]), buttons=True)
    assert env.click(msg, ACTION_ACK, response_url="https://attacker.example/collect").status_code == 200
    assert env.ov.get_alert(ev.id)["state"] == "acknowledged"  # signed by Slack: the click counts
    assert env.replies == []


def test_payloads_it_cannot_act_on_get_400(env):
    for body in ("payload=%7Bnot-json", urlencode({"payload": json.dumps({"type": "view_submission"})}),
                 urlencode({"payload": json.dumps({"type": "block_actions", "user": USER, "actions": [
                     {"action_id": "someone_elses_button", "value": "x"}]})})):
        ts = int(time.time())
        r = env.client.post("/slack/actions", content=body.encode(), headers={
            "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(body, ts)})
        assert r.status_code == 400, body
    assert env.counted("unknown", "bad_payload") == 3


class FakeCommands:
    """The kafka backend's command bus as the API sees it: submit() publishes."""

    def __init__(self):
        self.submitted = []

    def submit(self, op, target, args, who):
        self.submitted.append((op, target, args, who))
        return {"command": f"c{len(self.submitted)}", "op": op, "target": target, "status": "accepted"}


def test_with_the_kafka_backend_a_click_becomes_a_command_like_the_api_post(tmp_path):
    commands = FakeCommands()
    e = Env(tmp_path, commands=commands)
    try:
        ev = drift()
        msg = slack_message(request_note(RetrainRequest(id="req-7", model="credit-risk", reason="x", window_start=0,
                                                        window_end=60, created_at=60)), buttons=True)
        assert e.click(msg, ACTION_APPROVE).status_code == 200
        e.firing(ev)
        assert e.click(slack_message(alert_note([ev]), buttons=True), ACTION_SILENCE).status_code == 200
        (op, target, args, who), (op2, target2, args2, who2) = commands.submitted
        assert (op, target, who) == ("approve", "req-7", "slack:U024BE7LH")
        assert args == {"reason": "Approved in Slack by alice (U024BE7LH)"}
        assert (op2, target2, who2) == ("silence", ev.id, "slack:U024BE7LH")
        assert abs(args2["until"] - (time.time() + 3600)) < 5
        # Applied by the model's owner later: the person is told it was submitted, the message stays.
        assert e.counted(ACTION_APPROVE, "submitted") == 1
        reply = e.replies[0][1]
        assert reply["response_type"] == "ephemeral" and "submitted to the replica that owns the model" in reply["text"]
    finally:
        e.close()


def test_without_a_signing_secret_the_endpoint_is_off(tmp_path):
    e = Env(tmp_path, slack=False)
    try:
        ev = drift()
        r = e.click(slack_message(alert_note([ev]), buttons=True), ACTION_ACK)
        assert r.status_code == 404 and "signing_secret" in r.json()["error"]
    finally:
        e.close()
    with pytest.raises(ValueError, match="signing_secret"):
        SlackActions("  ")


# ---------------------------------------------------------------- the /ui page


def test_ui_needs_the_token_or_a_signed_link_and_escapes_what_it_shows(env):
    ev = drift(rule="drift<script>alert(1)</script>")
    env.pending_retrain(ev)
    (env.reports / f"{ev.id}.html").write_text("<html>evidence</html>")
    assert env.client.get("/ui").status_code == 401
    assert env.client.get("/ui", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = env.client.get("/ui", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'none': no script
    page = r.text
    assert "<script>" not in page and "drift&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "credit-risk" in page and "Pending approvals (1)" in page and "Open alerts (1)" in page
    # The pending request's evidence: the alert that caused it, its statistic and window.
    pending = page.split("Pending approvals (1)", 1)[1]
    assert "accuracy 0.71 vs 0.75 on <code>model</code>" in pending
    assert "window 2023-11-14 21:58:20 UTC to 2023-11-14 22:13:20 UTC" in pending
    assert f"alert id <code>{ev.id}</code>" in pending and "evidence report</a>" in pending
    # The evidence report link is signed and opens without the token.
    href = page.split('<a href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert href.startswith(f"/api/reports/{ev.id}.html?expires=")
    assert env.client.get(href).text == "<html>evidence</html>"
    # A signed link works until it expires; a forged or expired one does not.
    link = ui_link(env.srv.url, TOKEN, int(time.time()) + 60)
    assert httpx.get(link).status_code == 200
    assert httpx.get(link.replace("sig=", "sig=0")).status_code == 401
    assert httpx.get(ui_link(env.srv.url, TOKEN, int(time.time()) - 1)).status_code == 401
    assert env.client.post("/ui", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_ui_link_command_prints_a_working_link(env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DRIFTLINE_API_TOKEN", TOKEN)
    assert oversight_cli.main(["ui-link", "--url", env.srv.url, "--config", str(tmp_path / "none.toml"),
                               "--hours", "2"]) == 0
    link = capsys.readouterr().out.strip()
    expires = int(link.split("expires=")[1].split("&")[0])
    assert abs(expires - (time.time() + 7200)) < 5
    assert httpx.get(link).status_code == 200
    assert oversight_cli.main(["ui-link", "--url", env.srv.url, "--hours", "0"]) == 1


# ---------------------------------------------------------------- configuration

SLACK_TOML = """
[[models]]
name = "m"
task = "binary"
[sinks.slack]
enabled = true
webhook_url = "${SLACK_WEBHOOK_URL}"
signing_secret = "%s"
"""


def test_the_signing_secret_comes_from_the_environment_and_turns_buttons_on():
    from monitor.config import load_config_text, mask_secrets
    from monitor.errors import ConfigError
    from monitor.sinks import build_sinks

    env = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/C", "SLACK_SIGNING_SECRET": SECRET}
    cfg = load_config_text(SLACK_TOML % "${SLACK_SIGNING_SECRET}", env=env)
    assert cfg.sinks.slack.signing_secret == SECRET
    assert mask_secrets(cfg)["sinks"]["slack"]["signing_secret"] == "***"
    assert isinstance(SlackActions.from_config(cfg), SlackActions)
    (sink,) = [s for s in build_sinks(cfg) if s.name == "slack"]
    assert sink.buttons is True
    with pytest.raises(ConfigError, match=r"c\.toml:8: sinks\.slack\.signing_secret: secrets cannot be written"):
        load_config_text(SLACK_TOML % "literal-secret", path="c.toml", env=env)
    off = load_config_text(SLACK_TOML % "", env=env)
    assert SlackActions.from_config(off) is None
    assert [s for s in build_sinks(off) if s.name == "slack"][0].buttons is False
