"""The read-only ``/ui`` page in a real browser: ``driftline run`` on the embedded broker
fires a drift alert, and headless Chromium, given a signed link to the daemon's loopback
URL, renders a page whose DOM names the firing alert's rule and model.

Chromium is Debian's ``chromium`` package (scripts/provision.sh installs it); without it
the test skips on a user's machine and fails under CI=true.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from monitor.http import ui_link
from monitor.synth import Change

from .conftest import unavailable
from .daemon_harness import (
    Daemon,
    Producer,
    Topics,
    config_text,
    create_topics,
    make_case,
    servers,
    wait_until,
)

pytestmark = pytest.mark.integration

TOKEN_ENV = "DRIFTLINE_TEST_UI_TOKEN"
TOKEN = "ui-browser-token-0123456789"
BROWSER_TIMEOUT = 90  # a cold Chromium on a busy 2-core machine


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path; session-scoped and listed first so a missing browser skips before
    a broker starts."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("chromium is not installed (scripts/provision.sh, or apt-get install chromium)")


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start;
    # the page is our own, served on loopback. A private profile keeps runs independent.
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=BROWSER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s: {' '.join(cmd)}")


def test_ui_page_renders_in_chromium_and_shows_the_firing_alert(chromium, tansu, tmp_path, monkeypatch):
    case = make_case(tmp_path, minutes=20, rate=3.0, seed=11, label_share=0.5,
                     changes=[Change("covariate_shift", 8 * 60.0, feature="num_02", shift=1.0)])
    bootstrap = servers(tansu)
    topics = Topics.unique("ui")
    create_topics(bootstrap, topics.all(), 1)
    state_dir = tmp_path / "state"
    text = config_text(case, bootstrap=bootstrap, topics=topics, group_id=f"ui-{time.time_ns()}",
                       state_dir=state_dir)
    # The API (and so /ui) needs a token, which comes from the environment like every secret.
    text = text.replace("[http]\nport = 0\n", f'[http]\nport = 0\napi_token = "${{{TOKEN_ENV}}}"\n', 1)
    assert TOKEN_ENV in text
    cfg = tmp_path / "driftline.toml"
    cfg.write_text(text)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    prod = Producer(bootstrap)
    prod.send(topics.predictions, case.preds)
    prod.send(topics.labels, case.labels)
    prod.close()

    d = Daemon(cfg, tmp_path / "driftline.log").start()
    try:
        url = d.wait_http()
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def firing():
            if not d.alive():
                raise AssertionError(f"driftline exited:\n{d.text()[-4000:]}")
            r = httpx.get(f"{url}/api/alerts", params={"state": "firing"}, headers=auth, timeout=5)
            return [a for a in r.json()["alerts"] if a["rule"] == "feature-drift"] if r.status_code == 200 else None

        alert = wait_until(firing, 120, "a firing feature-drift alert in /api/alerts")[0]
        assert alert["model"] == "m" and alert["scope"] == "num_02"

        link = ui_link(url, TOKEN, int(time.time()) + 600)
        dom = _browser(chromium, tmp_path / "profile", "--dump-dom", link)
        page = dom.stdout.decode(errors="replace")
        assert dom.returncode == 0 and "<h1>Driftline overview</h1>" in page, dom.stderr.decode(errors="replace")[-3000:]

        # The rendered DOM: the open-alerts table has a row with the firing alert's model and rule.
        rows = re.findall(r"<tr>(.*?)</tr>", page.split("Open alerts", 1)[1].split("Pending approvals", 1)[0], re.S)
        cells = [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)]
                 for r in rows]
        mine = [c for c in cells if c and c[-1] == alert["id"]]
        assert mine, cells
        assert mine[0][0] == "m" and mine[0][1] == "feature-drift" and mine[0][5] == "firing"
        assert "num_02" in mine[0][3]
        # The models table lists the model.
        assert re.search(r"<td><strong>m</strong></td>", page.split("<h2>Models</h2>", 1)[1])

        # A browser without the signed link is refused (the page shows the JSON error).
        refused = _browser(chromium, tmp_path / "profile2", "--dump-dom", f"{url}/ui")
        assert "missing bearer token" in refused.stdout.decode(errors="replace")

        # A screenshot for people to look at (kept when DRIFTLINE_UI_SCREENSHOT names a file).
        shot = Path(os.environ.get("DRIFTLINE_UI_SCREENSHOT") or tmp_path / "ui.png")
        _browser(chromium, tmp_path / "profile3", f"--screenshot={shot}", "--window-size=1400,900", link)
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        d.stop_quietly()
