"""Review: ``driftline_alerts{state="firing"}`` after a restart.

The gauge is set only in ``App._emit`` when a transition happens, and ``_zero_series``
sets it to 0 at start. An alert that is firing in the checkpointed policy state therefore
reads 0 after a restart (every pod restart, every rollout) until some alert of that model
changes state, which can be hours. The PrometheusRule ``DriftlineModelAlertFiring``
(helm/driftline/templates/prometheusrule.yaml: ``driftline_alerts{state="firing"} > 0``)
and the dashboard's "alerts by state" panel then resolve while the alert still fires.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.app import App
from monitor.pipeline import Pipeline
from monitor.profiles import load_profiles
from monitor.state import StateStore

from .conftest import build_case


def test_firing_alerts_restored_from_a_checkpoint_show_in_the_gauge(tmp_path, small_spec):
    config, *_ = build_case(tmp_path, small_spec, hours=0.1)
    state_dir = tmp_path / "state"
    pipe = Pipeline(config, load_profiles(config))
    m = pipe.models[0]
    rule = m.cfg.rules[0].name
    m.policy._state = {f"{rule}\x1fmodel": {"firing": True, "streak": 1, "level": "alert", "start": 1.7e9,
                                            "seq": 1, "resolved_at": None}}
    store = StateStore(state_dir)
    store.checkpoint({}, pipe.model_blobs())
    store.close()

    registry = CollectorRegistry()
    app = App(config, bootstrap_servers=["127.0.0.1:9"], state_dir=str(state_dir), registry=registry)
    try:
        assert app.pipeline.models[0].policy.firing() == [(rule, "model")]
        firing = registry.get_sample_value("driftline_alerts", {"model": "m", "state": "firing"})
        assert firing == 1.0, f"gauge reads {firing} with one alert firing in the restored state"
    finally:
        app.close()
