"""DriftResult records: versioned JSON round trip and the row view of DriftResults."""

import json

import numpy as np
import pytest

from detectors._serde import StateVersionError
from detectors.result import DriftResult, DriftResults


def test_json_round_trip_including_nan_and_none():
    for r in (
        DriftResult("ks", 0.12, 0.003, 0.05, True),
        DriftResult("psi", 0.05, None, 0.1, False),
        DriftResult("psi", float("inf"), None, 0.1, True),
    ):
        assert DriftResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    nan = DriftResult("ks", float("nan"), float("nan"), 0.05, False)
    back = DriftResult.from_dict(json.loads(json.dumps(nan.to_dict(), allow_nan=False)))
    assert np.isnan(back.statistic) and np.isnan(back.p_value) and not back.drifted


def test_unknown_version_is_refused():
    d = DriftResult("psi", 0.2, None, 0.1, True).to_dict()
    with pytest.raises(StateVersionError, match="version"):
        DriftResult.from_dict({**d, "version": 99})
    with pytest.raises(StateVersionError, match="kind"):
        DriftResult.from_dict({**d, "kind": "histogram"})


def test_rows_view():
    rs = DriftResults("ks", np.array([0.1, 0.3]), np.array([0.4, 0.001]), 0.05, np.array([False, True]))
    assert len(rs) == 2
    assert rs.row(1) == DriftResult("ks", 0.3, 0.001, 0.05, True)
    assert DriftResults("psi", np.array([0.2]), None, 0.1, np.array([True])).row(0).p_value is None
