"""Review: stage 2 never returns once ``sealed_through`` is infinite.

``Pipeline.flush_all`` (end of a replay input) sets every partition's ``sealed`` to ``inf``;
any later ``Pipeline.advance`` (a replay continued with ``replay(..., pipeline=p)``, more
records after the flush) calls ``ModelRuntime.advance(inf)``. After ``window_panes`` empty
panes the drained-window jump sets ``next_start = sealed_through = inf``, and
``inf + pane <= inf`` holds, so the loop spins forever (before this change it built empty
panes forever). The test runs the call in a child process with a time limit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_advance_after_flush_all_returns(tmp_path):
    code = textwrap.dedent(f"""
        import importlib.util, pathlib, orjson
        from monitor.decode import RecordDecoder
        from monitor.ingest import ingest
        from monitor.pipeline import Pipeline
        from monitor.profiles import load_profiles
        from monitor.synth import ModelSpec
        spec = importlib.util.spec_from_file_location("cf", {str(ROOT / "tests/monitor/conftest.py")!r})
        cf = importlib.util.module_from_spec(spec); spec.loader.exec_module(cf)
        sm = ModelSpec("m", n_numeric=4, n_categorical=2, rate=4.0, label_delay=60.0,
                       sensitive={{"sex": ["F", "M"]}})
        config, _p, _l, _s, preds, labels = cf.build_case(pathlib.Path({str(tmp_path)!r}), sm, hours=0.2)
        pipe = Pipeline(config, load_profiles(config))
        dec = RecordDecoder(config.fields, config.models)
        ingest(pipe, dec, "predictions", 0, [orjson.dumps(r) for r in preds])
        pipe.advance()
        pipe.flush_all()
        ingest(pipe, dec, "labels", 0, [orjson.dumps(r) for r in labels[:10]])
        pipe.advance()
        print("returned")
    """)
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("Pipeline.advance() after flush_all() did not return within 20 s (it takes ~3 s otherwise)") from None
    assert r.returncode == 0 and "returned" in r.stdout, r.stderr[-2000:]
