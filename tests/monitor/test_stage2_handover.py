"""Stage 2 when a partition joins late: found by the rebalance integration test
(tests/integration/test_daemon.py), reduced to the unit that is wrong."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics
from monitor.panes import Pane
from monitor.pipeline import Output, Pipeline
from monitor.profiles import load_profiles

from .conftest import build_case


def test_a_sealed_pane_behind_the_evaluated_windows_is_counted_not_kept_forever(tmp_path, small_spec):
    """A partition assigned on a rebalance (or back from idle) can seal a pane that stage 2
    already evaluated past (its restored watermark is behind this process's). Such a pane
    goes into ``ModelRuntime.pending`` under a start below ``next_start``; ``advance`` only
    ever pops ``next_start``, so the pane stays in memory for good and its events are in
    no window and in no late-events count."""
    config, *_ = build_case(tmp_path, small_spec, hours=0.1)
    metrics = Metrics(CollectorRegistry())
    pipe = Pipeline(config, load_profiles(config), metrics)
    m = pipe.models[0]
    t0 = 1_700_000_040.0  # a pane boundary
    for k in range(3):
        m.accept_sealed(Pane(m.layout, t0 + 60.0 * k))
    m.advance(t0 + 180.0, metrics, Output())
    assert m.next_start == t0 + 180.0

    stale = Pane(m.layout, t0 + 60.0)  # the late partition's share of an evaluated pane
    n = 5
    stale.add_predictions(np.zeros((n, len(m.layout.numeric))), np.full(n, 0.5),
                          [np.array(["a"] * n, dtype=object) for _ in m.layout.categorical],
                          np.ones(n, dtype=np.int64), [np.zeros(n, dtype=np.int64) for _ in m.layout.scopes])
    m.accept_sealed(stale)
    m.accept_sealed(Pane(m.layout, t0 + 180.0))
    m.advance(t0 + 300.0, metrics, Output())

    assert all(start >= m.next_start for start in m.pending), sorted(m.pending)
    assert metrics.registry.get_sample_value("driftline_window_late_events_total", {"model": "m"}) == n
