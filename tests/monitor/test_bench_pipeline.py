"""Smoke test of bench/pipeline.py: the in-memory parts run in --quick mode and print the
documented JSON shape. No timing is asserted (the figures depend on the machine)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "pipeline.py"
FIGURES = {
    "end_to_end_events_per_second",
    "end_to_end_vs_decoder",
    "beyond_drift_cost",
    "checkpoint_snapshot_cost",
    "decoder_events_per_second",
    "join_state_bytes_per_waiting_prediction",
    "rss_growth_bytes_per_waiting_prediction",
    "peak_rss_growth_bytes_per_waiting_prediction",
    "kafka_consume_records_per_second",
    "kafka_consume_records_per_second_default_fetch_wait",
    "kafka_consume_records_per_second_one_process",
    "kafka_state_backend_records_per_second",
    "kafka_state_restore_seconds_per_million_waiting",
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(bench):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        returned = bench.main(["--quick", "--skip-kafka"])
    return returned, buf.getvalue()


def test_quick_run_prints_one_json_object_of_figures(run):
    returned, stdout = run
    printed = json.loads(stdout)
    assert printed == json.loads(json.dumps(returned))
    assert set(printed) == FIGURES
    for name, fig in printed.items():
        assert {"value", "unit", "baseline", "baseline_name", "ratio"} <= set(fig), name
        if name.startswith("kafka_"):
            assert fig["skipped"] == "--skip-kafka"
            assert fig["value"] is None and fig["ratio"] is None
            continue
        assert fig["unit"] and fig["baseline_name"], name
        assert fig["value"] >= 0 and math.isfinite(fig["value"]) and fig["baseline"] > 0, name
        assert fig["ratio"] == pytest.approx(fig["value"] / fig["baseline"]), name


def test_quick_run_exercises_the_whole_path(bench, run):
    out = run[0]
    e2e = out["end_to_end_events_per_second"]
    # every record decoded and joined; many panes closed and were evaluated
    assert e2e["events"] > 2 * 5_000
    assert e2e["panes_closed"] >= 10
    assert e2e["evaluations"] > e2e["panes_closed"]
    assert out["end_to_end_vs_decoder"]["baseline_name"].startswith("RecordDecoder")
    mem = out["join_state_bytes_per_waiting_prediction"]
    assert mem["waiting"] == bench.SIZES["quick"]["memory_predictions"]
    # the join table's rows at capacity bound what it can hold per waiting prediction
    assert mem["join_capacity_rows"] >= mem["waiting"]


def test_kafka_part_skips_with_a_reason_when_the_jars_are_missing(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "_kafka_libs", lambda: None)
    res = bench.kafka(tmp_path, bench.SIZES["quick"])
    assert set(res) == set(bench.KAFKA_FIGURES)
    for fig in res.values():
        assert fig["value"] is None
        assert "not found" in fig["skipped"]


def test_checkpoint_figure_runs_the_kafka_backend_path_to_the_same_evaluations(run):
    ck = run[0]["checkpoint_snapshot_cost"]
    # the bench itself refuses a run whose Kafka-backend path evaluated other metrics than
    # the one-process pipeline; here: it checkpointed, built snapshots and evaluated
    assert ck["checkpoints"] >= 2
    assert ck["snapshot_bytes_per_checkpoint"] > 0 and ck["pane_message_bytes"] > 0
    assert ck["evaluations"] > 0
    assert ck["ratio_at_default_interval"] > 0
    # with snapshots and pane messages over without: a cost, so below 1 (and not inverted)
    assert 0 < ck["changelog_ratio_at_default_interval"] < 1
    assert set(ck["checkpoint_cpu_share_by_step"]) == {"pane messages", "snapshots", "stage 2 merge",
                                                       "stage 2 evaluate"}


def test_only_runs_the_named_sections(bench):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = bench.main(["--quick", "--only", "checkpoint,restore", "--skip-kafka"])
    assert set(out) == {"checkpoint_snapshot_cost", "kafka_state_restore_seconds_per_million_waiting"}
    assert out["kafka_state_restore_seconds_per_million_waiting"]["skipped"] == "--skip-kafka"


def test_only_names_the_sections_when_one_is_unknown(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "throughput,restor"])
    err = capsys.readouterr().err
    assert "restor" in err and "kafka_state" in err


def test_only_beyond_drift_cost_prints_that_figure_with_its_stages(bench):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        returned = bench.main(["--quick", "--only", "beyond_drift_cost"])
    assert json.loads(buf.getvalue()) == json.loads(json.dumps(returned))
    fig = returned["beyond_drift_cost"]
    assert set(returned) == {"beyond_drift_cost"}
    assert fig["runs"] == 3 and fig["value"] > 0 and fig["json_loads_per_second"] > 0
    lo, hi = fig["on_vs_json_loads_range"]
    assert lo <= fig["on_vs_json_loads"] <= hi
    assert set(fig["stage_us_per_event"]) == {f"{side} {stage}" for side in ("on", "off") for stage in
                                              ("ingest (decode + join + panes)", "advance (seal + evaluate)")}
    assert all(v > 0 for v in fig["stage_us_per_event"].values())
