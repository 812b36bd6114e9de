"""The Grafana dashboard and the PrometheusRule, proven with the real tools.

- ``promtool check rules`` and ``promtool test rules`` on the rule groups the chart renders
  (helm/driftline/tests-promtool holds the unit tests, one firing case per alert).
- A running Driftline (``driftline demo``: embedded broker, synthetic stream of two models)
  is scraped by a real Prometheus every second; ``promtool check metrics`` lints its
  /metrics; every PromQL expression of the dashboard and of the rules is executed against
  that Prometheus and must return at least one series (a panel showing "No data" fails),
  and every rule evaluates without error inside Prometheus.

An alert expression is a filter: healthy, it returns nothing. To prove that it reads series
that exist, with labels that match across its operands, each comparison is executed in its
``bool`` form (``a > 5`` -> ``a > bool 5``), which keeps every series with 0 or 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.metrics import Metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "driftline"
DASHBOARD = CHART / "dashboards" / "driftline.json"
RULES_TEST = CHART / "tests-promtool" / "driftline-rules.test.yaml"
# The release the rules are rendered for; the Prometheus below scrapes the demo under the
# job and namespace labels the Prometheus Operator would give this release's pods.
RELEASE, NAMESPACE = "driftline", "monitoring"
DEMO_SECONDS = 200.0
# How long, after the first evaluation, every query may take to have data (alerts fire and
# are delivered a few simulated windows after the injected changes).
DATA_DEADLINE = 100.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: run scripts/provision.sh)", pytrace=False)
    pytest.skip(reason)


def _tool(name: str) -> str:
    path = shutil.which(name) or (
        str(REPO / ".cache" / "bin" / name) if (REPO / ".cache" / "bin" / name).is_file() else None
    )
    if path is None:
        _unavailable(f"{name} not found on PATH or in .cache/bin")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the expressions ------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows included."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def visit(panels: list[dict]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            visit(p.get("panels", []))

    visit(dash["panels"])
    return out


def _regex_literal(value: str) -> str:
    r"""A label value as a regex inside a PromQL string, escaped the way Grafana does it.

    >>> _regex_literal("credit-risk.v2")
    'credit-risk\\\\.v2'
    """
    return re.sub(r"([\\.^$*+?()\[\]{}|])", r"\\\\\1", value)


def substitute(expr: str, models: list[str], rate_interval: str = "20s") -> str:
    """Grafana's variables as Grafana fills them: a multi-value ``$model`` becomes a regex."""
    values = {
        "model": "(" + "|".join(_regex_literal(m) for m in models) + ")",
        "__rate_interval": rate_interval,
        "__interval": "1s",
        "__range": "1m",
    }
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], expr)
    assert "$" not in out, out
    return out


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)")


def bool_form(expr: str) -> str:
    """Every comparison outside label matchers, strings and ranges gets ``bool``.

    >>> bool_form('up{job="a", x!="b"} == 0 and on (job) rate(x[5m]) > 1')
    'up{job="a", x!="b"} == bool 0 and on (job) rate(x[5m]) > bool 1'
    >>> bool_form('a > bool 1')
    'a > bool 1'
    """
    out, i, depth, quote = [], 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
            i += 1
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif depth == 0 and (m := _COMPARISON.match(expr, i)):
            op = m.group(1)
            out.append(op)
            i += len(op)
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def exported_names() -> set[str]:
    """Every sample name Driftline's registry can export (with _bucket, _total, ...)."""
    names = set()
    for family in Metrics().registry.collect():
        base = family.name
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "info": ("_info",),
            "gauge": ("",),
        }[family.type]
        names.update(base + s for s in suffixes)
    return names


# -- rendering the rules --------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's rule groups (model alerts on, default thresholds) as a Prometheus rules file."""
    helm = _tool("helm")
    out = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--set", "prometheusRule.enabled=true,prometheusRule.modelAlerts.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rule = yaml.safe_load(out.stdout)
    assert rule["kind"] == "PrometheusRule"
    work = tmp_path_factory.mktemp("rules")
    path = work / "driftline.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def rule_exprs(rules_file: Path) -> list[tuple[str, str]]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]


# -- static checks --------------------------------------------------------------------------


def test_promtool_check_rules(rules_file: Path) -> None:
    out = subprocess.run([_tool("promtool"), "check", "rules", str(rules_file)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout


def test_promtool_test_rules(rules_file: Path) -> None:
    # The unit-test file names its rule file relatively: put both side by side.
    test_file = rules_file.parent / RULES_TEST.name
    shutil.copyfile(RULES_TEST, test_file)
    out = subprocess.run([_tool("promtool"), "test", "rules", test_file.name],
                         capture_output=True, text=True, timeout=120, cwd=rules_file.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    # Every alert of the chart has at least one case in the unit tests.
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert {name for name, _ in rule_exprs(rules_file)} <= tested


def test_queries_use_only_exported_metrics(rules_file: Path) -> None:
    known = exported_names()
    exprs = dashboard_queries() + rule_exprs(rules_file)
    for title, expr in exprs:
        for name in re.findall(r"\bdriftline_\w+", expr):
            assert name in known, f"{title}: {name} is not a metric Driftline exports"
    used = " ".join(e for _, e in exprs)
    families = {f.name for f in Metrics().registry.collect()}
    unused = {f for f in families if not re.search(rf"\b{f}(_total|_bucket|_info)?\b", used)}
    # Every family is on the dashboard or in a rule, except these (ad-hoc queries; the
    # alerts, retrain and serving requests themselves are in /api and the audit log; Slack
    # clicks are in the audit log, and the demo has no Slack to put data on a panel).
    assert unused == {
        "driftline_join_matched", "driftline_join_expired", "driftline_trigger_retrain_requests",
        "driftline_serving_actions", "driftline_checkpoint_last_success_timestamp_seconds",
        "driftline_slack_actions",
    }, unused


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["query"]["query"] == "label_values(driftline_evaluation_runs_total, model)"
    assert model["multi"] and model["includeAll"]
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Stream health", "Drift", "Performance", "Fairness", "Beyond drift", "Security signals",
                    "Alerts and deliveries", "Checkpoints"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
        # Panels of model data follow the model variable.
        for t in p["targets"]:
            if re.search(r"driftline_(evaluation|join|window|alert)", t["expr"]) and "model" in t["expr"]:
                assert 'model=~"$model"' in t["expr"], (p["title"], t["expr"])
    # Panels do not overlap on Grafana's 24-column grid.
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


# -- the live scrape ------------------------------------------------------------------------


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _query(prom: str, expr: str) -> list[dict]:
    try:
        body = json.loads(_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    except urllib.error.HTTPError as exc:  # 400: the expression does not parse
        raise AssertionError(f"Prometheus rejected {expr!r}: {exc.read().decode()}") from None
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``driftline demo`` serving /metrics on a free loopback port: (base URL, log path)."""
    port = _free_port()
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "monitor.cli", "demo", "--duration", str(DEMO_SECONDS),
           "--http-port", str(port), "--state-dir", str(tmp_path / "demo")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"driftline demo exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                _get(f"{url}/metrics", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"driftline demo served no /metrics in 90 s:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)
        yield url, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_real_prometheus_scrapes_driftline_and_every_query_has_data(
    demo: tuple[str, Path], prometheus, rules_file: Path
) -> None:
    promtool = _tool("promtool")
    demo_url, demo_log = demo
    target = demo_url.removeprefix("http://")
    prom = prometheus(
        scrape_configs=[{
            "job_name": RELEASE,
            "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}],
        }],
        rule_files=[rules_file],
    )

    # Wait until both models have been evaluated, as seen through Prometheus.
    deadline = time.monotonic() + 120
    models: list[str] = []
    while time.monotonic() < deadline:
        body = json.loads(_get(f"{prom}/api/v1/label/model/values?" + urllib.parse.urlencode(
            {"match[]": "driftline_evaluation_runs_total"})))
        models = sorted(body["data"])
        if len(models) >= 2:
            break
        time.sleep(1)
    if models != ["churn", "credit-risk"]:
        targets = json.loads(_get(f"{prom}/api/v1/targets"))["data"]["activeTargets"]
        pytest.fail(f"the model variable's query found {models}; targets: "
                    f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets]}; "
                    f"demo log tail:\n{demo_log.read_text()[-3000:]}")

    # /metrics passes Prometheus's own exposition-format lint.
    text = _get(f"{demo_url}/metrics")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

    queries = [(f"dashboard: {t}", substitute(e, models)) for t, e in dashboard_queries()]
    queries += [(f"rule: {n}", bool_form(e)) for n, e in rule_exprs(rules_file)]
    # Some series appear only after the injected changes make alerts fire and deliveries
    # happen; poll until every query has data or the deadline passes.
    deadline = time.monotonic() + DATA_DEADLINE
    while True:
        empty = [(name, q) for name, q in queries if not _query(prom, q)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not empty, "queries without data (panels that would show 'No data'):\n" + "\n".join(
        f"  {name}: {q}" for name, q in empty)

    # Prometheus evaluated every rule without an error (e.g. many-to-many matching).
    groups = json.loads(_get(f"{prom}/api/v1/rules"))["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_exprs(rules_file))
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
