"""Evidence-report findings: an alert's top slices ("Where it fails") and the window's
beyond-drift evaluations, as an HTML section above Evidently's report."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from detectors.slices import SliceCounts, rank_slices
from monitor.events import AlertEvent
from monitor.policy import Evaluation
from monitor.reports import LABEL, PREDICTION, SCORE, Reservoir, findings_html, write_report


def top_slices(top: int = 5) -> list[dict]:
    rng = np.random.default_rng(11)
    n = 20000
    codes = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 2, n)])
    bad = (codes[:, 0] == 2) & (codes[:, 1] == 1)
    errors = rng.random(n) < np.where(bad, 0.35, 0.1)
    sc = SliceCounts(["region", "income"], [["n", "s", "e"], ["<0", ">=0"]], pairs=[(0, 1)])
    sc.update_outcomes(codes, errors)
    ranked = [r.to_dict() for r in rank_slices(sc, top=top, min_size=100)]
    assert ranked and ranked[0]["name"] == "region=e&income=>=0"
    return ranked


def alert(details: dict | None = None) -> AlertEvent:
    return AlertEvent(id="a1b2c3", seq=1, state="firing", model="credit-risk", rule="accuracy-drop",
                      metric="accuracy", scope="model", severity="critical", value=0.71, threshold=0.75,
                      window_start=0.0, window_end=900.0, started_at=900.0, details=details or {})


def findings() -> list[dict]:
    return [
        Evaluation("credit-risk", "estimated_accuracy", "model", 0.7123, 0.0, 900.0, 800, ci_low=0.69,
                   ci_high=0.73, details={"realised": 0.7011, "realised_n": 400}).record(),
        Evaluation("credit-risk", "reconstruction_error_change", "model", 0.2345, 0.0, 900.0, 800,
                   ci_low=0.2, ci_high=0.27).record(),
        Evaluation("credit-risk", "subgroup_error_gap", "model", float("nan"), 0.0, 900.0, 400).record(),
    ]


def section(text: str) -> str:
    m = re.search(r'<section id="driftline-findings".*?</section>', text, re.S)
    assert m, text[:500]
    return m.group(0)


def items(text: str) -> list[str]:
    return [html.unescape(x) for x in re.findall(r"<li>(.*?)</li>", text)]


def test_findings_list_each_slice_with_share_rates_and_interval():
    slices = top_slices()
    out = findings_html(alert({"slices": slices, "slices_by": "error"}))
    assert "<h3>Where it fails (slices by error rate, Benjamini-Hochberg q-values)</h3>" in out
    lines = items(out)
    assert len(lines) == len(slices)
    for line, s in zip(lines, slices, strict=True):
        d, lo, hi = (100 * s[k] for k in ("difference", "ci_low", "ci_high"))
        assert line == (f"{s['name']}: error {100 * s['rate']:.1f}% vs {100 * s['rest_rate']:.1f}% elsewhere "
                        f"({d:+.1f} pts, CI {lo:+.1f} to {hi:+.1f}), {100 * s['share']:.1f}% of traffic, "
                        f"q = {s['q_value']:.4g}")
    # names are escaped: "&" and ">" of a pair of a numeric bin never reach the markup raw
    assert "region=e&amp;income=&gt;=0" in out and "region=e&income" not in out
    assert "credit-risk: accuracy-drop firing: accuracy = 0.71 vs threshold 0.75 on model" in html.unescape(out)


def test_at_most_ten_slices_in_the_report():
    many = top_slices() * 4
    assert len(many) > 10
    assert len(items(findings_html(alert({"slices": many, "slices_by": "error"})))) == 10


@pytest.mark.parametrize("details", [{}, {"slices": []}, {"slices": None}])
def test_alert_without_slices_has_no_where_it_fails(details):
    out = findings_html(alert(details))
    assert "Where it fails" not in out and "<li>" not in out
    assert "accuracy-drop firing" in out


def test_an_alert_id_alone_gives_no_statement_and_no_slices():
    out = findings_html("a1b2c3", findings())
    assert "<p>" not in out and "Where it fails" not in out
    assert "<h3>This window</h3>" in out


def test_window_findings_table_shows_value_interval_and_realised():
    out = findings_html(alert(), findings())
    rows = re.findall(r"<tr>(.*?)</tr>", out)
    assert len(rows) == 1 + 3  # header and one row per finding
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows[1:]]
    assert cells[0] == ["estimated_accuracy", "model", "0.7123", "0.69 to 0.73", "0.7011", "ok", "800"]
    assert cells[1] == ["reconstruction_error_change", "model", "0.2345", "0.2 to 0.27", "", "ok", "800"]
    assert cells[2][:4] == ["subgroup_error_gap", "model", "n/a", ""]  # NaN value, no interval
    assert findings_html(alert()).count("<table") == 0


def test_written_report_carries_the_findings_inside_its_body(tmp_path):
    rng = np.random.default_rng(0)
    cols = ["income", SCORE, PREDICTION, LABEL]

    def frame(n, shift):
        x = rng.normal(shift, 1.0, n)
        s = 1 / (1 + np.exp(-x))
        return {"income": x, SCORE: s, PREDICTION: (s >= 0.5).astype(int), LABEL: (rng.random(n) < s).astype(float)}

    ref, cur = Reservoir(200, cols, seed=1), Reservoir(200, cols, seed=2)
    ref.update(frame(400, 0.0))
    cur.update(frame(400, 1.0))
    slices = top_slices()
    ev = alert({"slices": slices, "slices_by": "error"})
    text = write_report(ref, cur, "binary", tmp_path, ev, features={"income": "numeric"}, findings=findings()).read_text()
    sec = section(text)
    body = text.index("<body")
    assert text.index(sec) == text.index(">", body) + 1  # first in the body, above Evidently's report
    assert "Dataset Drift" in text
    assert [line.split(":")[0] for line in items(sec)] == [s["name"] for s in slices]
    assert "estimated_accuracy" in sec
    plain = write_report(ref, cur, "binary", tmp_path, "plain", features={"income": "numeric"}).read_text()
    assert "Where it fails" not in section(plain) and "<table" not in section(plain)
