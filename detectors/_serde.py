"""Versioned, JSON-safe state helpers shared by every sketch, statistic and detector."""

from __future__ import annotations

from typing import Any

import numpy as np


class StateVersionError(ValueError):
    """Raised when serialised state has the wrong kind or an unknown version."""


def check_state(state: dict[str, Any], kind: str, versions: tuple[int, ...] = (1,)) -> None:
    """Refuse state of another kind or of a version this code cannot read."""
    if not isinstance(state, dict):
        raise StateVersionError(f"expected a dict for {kind!r} state, got {type(state).__name__}")
    got_kind = state.get("kind")
    if got_kind != kind:
        raise StateVersionError(f"state kind is {got_kind!r}, expected {kind!r}")
    got_version = state.get("version")
    if got_version not in versions:
        raise StateVersionError(
            f"{kind!r} state version {got_version!r} is not supported (supported: {list(versions)})"
        )


def floats(a: np.ndarray) -> list:
    """A float array as nested lists that survive JSON, with inf kept as a string."""
    arr = np.asarray(a, dtype=np.float64)
    out = arr.tolist()

    def fix(v):
        if isinstance(v, list):
            return [fix(x) for x in v]
        if v == float("inf"):
            return "inf"
        if v == float("-inf"):
            return "-inf"
        if v != v:
            return "nan"
        return v

    return fix(out)


def unfloats(v: Any) -> np.ndarray:
    """Inverse of :func:`floats`."""

    def fix(x):
        if isinstance(x, list):
            return [fix(y) for y in x]
        if isinstance(x, str):
            return float(x)
        return x

    return np.asarray(fix(v), dtype=np.float64)
