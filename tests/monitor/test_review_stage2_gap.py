"""Review: stage 2 walks an event-time gap one empty pane at a time when nothing is pending.

``ModelRuntime.advance`` jumps over a gap longer than the window only while ``pending``
holds a later pane. When ``pending`` is empty it builds and evaluates an empty pane for
every pane length up to ``sealed_through``. One prediction with a far-future timestamp
(milliseconds read as seconds: 1.7e12 s) on a partition with no labels topic (or idle
labels) moves that partition's watermark, and so ``sealed_through``, ~5e4 years ahead:
the poll loop then evaluates ~2.8e13 empty windows (a hang, with every evaluation kept in
``Pipeline.out`` until the next checkpoint, which never comes), and every later record of
the partition is "late" and dropped. The decoder accepts any finite timestamp.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from monitor.panes import Pane
from monitor.pipeline import Output, Pipeline
from monitor.profiles import load_profiles

from .conftest import build_case


def test_a_long_gap_with_nothing_pending_is_not_walked_pane_by_pane(tmp_path, small_spec):
    config, *_ = build_case(tmp_path, small_spec, hours=0.1)
    metrics = Metrics(CollectorRegistry())
    pipe = Pipeline(config, load_profiles(config), metrics)
    m = pipe.models[0]
    t0 = 1_700_000_040.0
    m.accept_sealed(Pane(m.layout, t0))
    out = Output()
    gap_panes = 50 * m.cfg.window_panes
    m.advance(t0 + 60.0 * gap_panes, metrics, out)
    windows = {e.window_end for e in out.evaluations}
    # after window_panes empty panes the window holds nothing; the same gap with a pane
    # pending after it is skipped in one jump, so must this one be
    assert len(windows) <= m.cfg.window_panes + 1, f"{len(windows)} windows evaluated for a {gap_panes}-pane gap"
