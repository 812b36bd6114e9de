"""Seasonal traffic baseline and the two-sided count test against scipy.stats on the same numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from detectors._serde import StateVersionError
from detectors.traffic import SeasonalBaseline, count_tails, traffic_anomaly


@pytest.mark.parametrize("count,mean", [(0, 3.0), (5, 3.0), (40, 12.5), (120, 100.0), (70, 100.0), (1, 0.2)])
def test_poisson_tails_equal_scipy(count, mean):
    lower, upper = count_tails(count, mean, 1.0)
    assert lower == pytest.approx(stats.poisson.cdf(count, mean), rel=1e-9, abs=1e-300)
    assert upper == pytest.approx(stats.poisson.sf(count - 1, mean), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("count,mean,phi", [(0, 3.0, 2.0), (5, 3.0, 1.5), (40, 12.5, 3.0), (300, 100.0, 2.2),
                                            (30, 100.0, 4.0)])
def test_negative_binomial_tails_equal_scipy(count, mean, phi):
    r, p = mean / (phi - 1.0), 1.0 / phi
    lower, upper = count_tails(count, mean, phi)
    assert lower == pytest.approx(stats.nbinom.cdf(count, r, p), rel=1e-8, abs=1e-300)
    assert upper == pytest.approx(stats.nbinom.sf(count - 1, r, p), rel=1e-8, abs=1e-300)
    # the parameterisation has the intended moments
    assert stats.nbinom.mean(r, p) == pytest.approx(mean)
    assert stats.nbinom.var(r, p) == pytest.approx(phi * mean)


def test_anomaly_score_is_two_sided_beyond_the_tolerance():
    mean, phi, tol = 100.0, 1.8, 1.5
    r_sp, p_sp = mean * tol / (phi - 1), 1 / phi
    r_dr = mean / tol / (phi - 1)
    spike = traffic_anomaly(500, mean, phi, tol)
    want = min(1.0, 2 * min(stats.nbinom.sf(499, r_sp, p_sp), stats.nbinom.cdf(500, r_dr, p_sp)))
    assert spike.p_value == pytest.approx(want, rel=1e-8)
    assert spike.statistic == pytest.approx(-math.log10(want), rel=1e-8)
    assert spike.direction == "spike" and spike.ratio == 5.0
    drop = traffic_anomaly(10, mean, phi, tol)
    assert drop.direction == "drop" and drop.statistic > 3
    # the score grows with the anomaly either way; traffic at the baseline scores 0
    ups = [traffic_anomaly(c, mean, phi, tol).statistic for c in (150, 200, 300, 500)]
    downs = [traffic_anomaly(c, mean, phi, tol).statistic for c in (60, 40, 20, 0)]
    assert ups == sorted(ups) and downs == sorted(downs) and ups[-1] > 5 and downs[-1] > 5
    assert traffic_anomaly(100, mean, phi, tol).statistic == 0.0
    assert traffic_anomaly(3, 0.0).direction == "spike"
    with pytest.raises(ValueError, match="tolerance"):
        traffic_anomaly(1, 1.0, tolerance=0.5)


def test_baseline_moments_equal_a_direct_weighted_computation():
    b = SeasonalBaseline(period_seconds=86400, slot_seconds=3600, half_life=10.0)
    rng = np.random.default_rng(3)
    starts = np.arange(0, 3 * 86400, 600.0)
    counts = rng.poisson(20 + 10 * np.sin(starts / 86400 * 2 * np.pi)).astype(float)
    b.update(starts, counts)
    lam = 0.5 ** (1 / 10.0)
    slot = ((starts % 86400) // 3600).astype(int)
    for s in (0, 7, 23):
        c = counts[slot == s]
        w = lam ** np.arange(c.size)[::-1]  # the latest pane weighs 1
        mean, _, weight = b.expected(np.array([s * 3600.0 + 5.0]))
        assert weight[0] == pytest.approx(w.sum())
        assert mean[0] == pytest.approx((w * c).sum() / w.sum())
    # pooled dispersion of Poisson counts is near 1 (the within-slot trend adds a little)
    assert 0.8 < b.dispersion() < 2.0


def test_vectorised_update_equals_per_pane_updates_and_merge_adds():
    rng = np.random.default_rng(4)
    starts = np.sort(rng.choice(np.arange(0, 86400 * 2, 300.0), 200, replace=False))
    counts = rng.poisson(50, 200).astype(float)
    a, b = SeasonalBaseline(86400, 3600, 20), SeasonalBaseline(86400, 3600, 20)
    a.update(starts, counts)
    for s, c in zip(starts, counts, strict=True):
        b.update_one(s, c)
    for name in ("weight", "s1", "s2"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)
    m = SeasonalBaseline.from_dict(a.to_dict()).merge(b)
    np.testing.assert_allclose(m.s1, 2 * a.s1)
    np.testing.assert_allclose(m.subtract(b).s1, a.s1)
    with pytest.raises(ValueError, match="slot_seconds"):
        a.merge(SeasonalBaseline(86400, 1800, 20))


def test_round_trip_mid_stream_continues_identically():
    rng = np.random.default_rng(5)
    starts = np.arange(0, 86400 * 2, 300.0)
    counts = rng.poisson(30, starts.size).astype(float)
    # the same calls with and without a serialisation between them: bit-identical
    straight = SeasonalBaseline(604800, 3600, 50)
    straight.update(starts[:250], counts[:250])
    straight.update(starts[250:], counts[250:])
    half = SeasonalBaseline(604800, 3600, 50)
    half.update(starts[:250], counts[:250])
    restored = SeasonalBaseline.from_dict(json.loads(json.dumps(half.to_dict())))
    restored.update(starts[250:], counts[250:])
    assert restored.to_dict() == straight.to_dict()
    with pytest.raises(StateVersionError):
        SeasonalBaseline.from_dict({**half.to_dict(), "kind": "other"})


def test_bad_parameters_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="whole multiple"):
        SeasonalBaseline(86400, 7000)
    with pytest.raises(ValueError, match="half_life"):
        SeasonalBaseline(86400, 3600, 0)
