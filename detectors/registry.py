"""Closed registry of the window-vs-reference drift tests, by name.

Each entry describes a test (display name, feature kinds it applies to, default
threshold, whether it has a p-value) and holds its scalar and vectorised functions. The
table is written out here, not filled by import side effects, so what exists is visible
in one place and a config can only name a test that is listed.

>>> get_test("psi").default_threshold
0.1
>>> get_test("ks").has_p_value, sorted(get_test("ks").kinds)
(True, ['numeric'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from detectors import (
    chi_square,
    g_test,
    hellinger,
    jensen_shannon,
    kl,
    ks,
    psi,
    total_variation,
    wasserstein,
)
from detectors.result import DriftResult, DriftResults

__all__ = ["DriftTest", "TESTS", "NUMERIC", "CATEGORICAL", "get_test", "available_tests"]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
_BOTH = frozenset({NUMERIC, CATEGORICAL})


@dataclass(frozen=True)
class DriftTest:
    """Descriptor of one drift test.

    ``function(ref_counts, cur_counts, *, threshold, ...)`` returns a DriftResult;
    ``rows_function`` does the same for ``(features, bins)`` matrices and returns
    DriftResults. ``needs_points`` marks tests that also need ``points=`` or ``edges=``.
    """

    name: str
    display_name: str
    kinds: frozenset[str]
    default_threshold: float
    has_p_value: bool
    function: Callable[..., DriftResult]
    rows_function: Callable[..., DriftResults]
    needs_points: bool = False

    def applies_to(self, kind: str) -> bool:
        return kind in self.kinds


_ALL = (
    DriftTest("psi", "Population Stability Index", _BOTH, psi.PSI_WARN, False,
              psi.psi_drift, psi.psi_drift_rows),
    DriftTest("jensen_shannon", "Jensen-Shannon distance", _BOTH, jensen_shannon.DEFAULT_THRESHOLD, False,
              jensen_shannon.jensen_shannon_drift, jensen_shannon.jensen_shannon_drift_rows),
    DriftTest("kl", "Kullback-Leibler divergence KL(current || reference)", _BOTH, kl.DEFAULT_THRESHOLD, False,
              kl.kl_drift, kl.kl_drift_rows),
    DriftTest("hellinger", "Hellinger distance", _BOTH, hellinger.DEFAULT_THRESHOLD, False,
              hellinger.hellinger_drift, hellinger.hellinger_drift_rows),
    DriftTest("total_variation", "Total variation distance", _BOTH, total_variation.DEFAULT_THRESHOLD, False,
              total_variation.total_variation_drift, total_variation.total_variation_drift_rows),
    DriftTest("wasserstein", "Wasserstein distance (normed by reference std)", frozenset({NUMERIC}),
              wasserstein.DEFAULT_THRESHOLD, False,
              wasserstein.wasserstein_drift, wasserstein.wasserstein_drift_rows, needs_points=True),
    DriftTest("ks", "Kolmogorov-Smirnov test", frozenset({NUMERIC}), ks.DEFAULT_THRESHOLD, True,
              ks.ks_drift, ks.ks_drift_rows),
    DriftTest("chi_square", "Chi-square test", frozenset({CATEGORICAL}), chi_square.DEFAULT_THRESHOLD, True,
              chi_square.chi_square_drift, chi_square.chi_square_drift_rows),
    DriftTest("g_test", "G-test (log-likelihood ratio)", frozenset({CATEGORICAL}), g_test.DEFAULT_THRESHOLD, True,
              g_test.g_test_drift, g_test.g_test_drift_rows),
)

TESTS: Mapping[str, DriftTest] = MappingProxyType({t.name: t for t in _ALL})


def available_tests(kind: str | None = None) -> list[str]:
    """Names of the registered tests, optionally only those for a feature kind."""
    if kind is not None and kind not in _BOTH:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {sorted(_BOTH)}")
    return [n for n, t in TESTS.items() if kind is None or kind in t.kinds]


def get_test(name: str) -> DriftTest:
    """The descriptor of drift test ``name``; the error lists the available names."""
    try:
        return TESTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown drift test {name!r}; available: {', '.join(TESTS)}"
        ) from None
