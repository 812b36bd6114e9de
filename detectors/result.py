"""Result records of the window-vs-reference drift tests.

A statistic always grows with drift; a p-value, when the test has one, is its own field.
``DriftResult`` is one feature's outcome, ``DriftResults`` the vectorised outcome over
many features (one row of a ``(features, bins)`` count matrix each).

>>> r = DriftResult(test="psi", statistic=0.31, p_value=None, threshold=0.1, drifted=True)
>>> DriftResult.from_dict(r.to_dict()) == r
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors._serde import check_state

__all__ = ["DriftResult", "DriftResults"]


def _json_float(v: float | None) -> float | str | None:
    # JSON has no NaN/inf; keep them as strings the way detectors._serde.floats does.
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _from_json_float(v: float | str | None) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one two-sample drift test on one feature.

    For p-value tests (KS, chi-square, G) ``threshold`` is the significance level and
    ``drifted`` is ``p_value < threshold``; for distance tests it is
    ``statistic >= threshold``. A NaN statistic (an empty side) never counts as drift.
    """

    test: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool

    kind = "drift_result"
    version = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "test": self.test,
            "statistic": _json_float(self.statistic),
            "p_value": _json_float(self.p_value),
            "threshold": _json_float(self.threshold),
            "drifted": bool(self.drifted),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftResult:
        check_state(d, cls.kind)
        return cls(
            test=str(d["test"]),
            statistic=float(d["statistic"]),
            p_value=_from_json_float(d["p_value"]),
            threshold=float(d["threshold"]),
            drifted=bool(d["drifted"]),
        )


@dataclass(frozen=True, eq=False)
class DriftResults:
    """Vectorised outcome: one entry per feature row.

    ``p_value`` is None for distance tests, else a float array (NaN where a row had an
    empty side). Use :meth:`row` to get one feature's :class:`DriftResult`.
    """

    test: str
    statistic: np.ndarray
    p_value: np.ndarray | None
    threshold: float
    drifted: np.ndarray

    def __len__(self) -> int:
        return int(self.statistic.shape[0])

    def row(self, i: int) -> DriftResult:
        """Feature ``i`` as a scalar :class:`DriftResult`."""
        return DriftResult(
            test=self.test,
            statistic=float(self.statistic[i]),
            p_value=None if self.p_value is None else float(self.p_value[i]),
            threshold=float(self.threshold),
            drifted=bool(self.drifted[i]),
        )
