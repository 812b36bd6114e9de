"""Slice counts against a pandas groupby, slice statistics against statsmodels, and the
planted-slice and no-slice behaviour of the ranking and the degraded-subgroup rule, plain
and adjusted for the model's confidence (excess errors)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from detectors._serde import StateVersionError
from detectors.slices import SliceCounts, SliceResult, degraded_subgroup, rank_slices

# Same formulas on the same integer counts; only floating-point rounding differs (the
# statistics are O(1) numbers computed in a handful of operations, so ~1e-15 is typical).
ORACLE = 1e-9

DIMS = ["region", "channel", "device", "plan", "age_band"]
LEVELS = [
    [f"r{k}" for k in range(6)],
    ["web", "app", "phone", "store"],
    ["ios", "android", "desktop"],
    [f"p{k}" for k in range(5)],
    ["18-29", "30-44", "45-64", "65+"],
]
ALL_PAIRS = [(i, j) for i in range(5) for j in range(i + 1, 5)]
REGION_P = [0.3, 0.2, 0.15, 0.15, 0.1, 0.1]
CHANNEL_P = [0.4, 0.3, 0.2, 0.1]
BAD_REGION, BAD_CHANNEL = 4, 1  # 0.1 x 0.3 = 3% of traffic


def events(n, seed, planted=True, missing=0.0):
    rng = np.random.default_rng(seed)
    codes = np.column_stack(
        [
            rng.choice(6, n, p=REGION_P),
            rng.choice(4, n, p=CHANNEL_P),
            rng.integers(0, 3, n),
            rng.integers(0, 5, n),
            rng.integers(0, 4, n),
        ]
    ).astype(np.int64)
    if missing:
        codes[rng.random(codes.shape) < missing] = -1
    bad = (codes[:, 0] == BAD_REGION) & (codes[:, 1] == BAD_CHANNEL)
    p_err = np.where(bad & planted, 0.2, 0.1)
    errors = (rng.random(n) < p_err).astype(np.int64)
    return codes, errors


def counts_of(codes, errors, pairs=ALL_PAIRS, batch=1000, selected=None):
    sc = SliceCounts(DIMS, LEVELS, pairs)
    for s in range(0, len(codes), batch):
        sc.update_outcomes(codes[s : s + batch], errors[s : s + batch])
        if selected is not None:
            sc.update_predictions(codes[s : s + batch], selected[s : s + batch])
    return sc


# --------------------------------------------------------------------------- counts


def test_cell_counts_equal_a_pandas_groupby_of_the_rows():
    codes, errors = events(30_000, seed=1, missing=0.05)
    selected = np.random.default_rng(2).random(len(codes)) < 0.4
    pairs = [(0, 1), (3, 2), (4, 0)]  # (3, 2): the pair's own order names and lays out the cells
    sc = counts_of(codes, errors, pairs=pairs, batch=777, selected=selected)
    df = pd.DataFrame(codes, columns=DIMS).assign(err=errors, sel=selected.astype(int))
    got = {name: k for k, name in enumerate(sc.names)}
    assert len(got) == sc.n_cells == 22 + 6 * 4 + 5 * 3 + 4 * 6
    expected = {}
    for d, dim in enumerate(DIMS):
        g = df[df[dim] >= 0].groupby(dim)[["err", "sel"]].agg(["size", "sum"])
        for code, row in g.iterrows():
            expected[f"{dim}={LEVELS[d][code]}"] = row
    for i, j in pairs:
        a, b = DIMS[i], DIMS[j]
        g = df[(df[a] >= 0) & (df[b] >= 0)].groupby([a, b])[["err", "sel"]].agg(["size", "sum"])
        for (ca, cb), row in g.iterrows():
            expected[f"{a}={LEVELS[i][ca]}&{b}={LEVELS[j][cb]}"] = row
    assert set(expected) <= set(got)
    for name, k in got.items():
        row = expected.get(name)
        want = (0, 0, 0) if row is None else (row[("err", "size")], row[("err", "sum")], row[("sel", "sum")])
        assert (sc.n_out[k], sc.err[k], sc.sel[k]) == want, name
        assert sc.n_pred[k] == sc.n_out[k]  # every row was fed as both here
    # Totals count every event, also those missing in some dimension.
    assert (sc.total_out, sc.total_err) == (len(df), int(errors.sum()))
    assert (sc.total_pred, sc.total_sel) == (len(df), int(selected.sum()))
    for arr in (sc.n_out, sc.err, sc.n_pred, sc.sel):
        assert arr.dtype == np.int64


def test_batch_size_does_not_change_the_counts():
    codes, errors = events(10_000, seed=3, missing=0.02)
    assert counts_of(codes, errors, batch=10_000) == counts_of(codes, errors, batch=333)


def test_float_errors_and_bool_selection_are_accepted_and_bad_values_refused():
    codes, errors = events(100, seed=4)
    a, b = SliceCounts(DIMS, LEVELS), SliceCounts(DIMS, LEVELS)
    a.update_outcomes(codes, errors.astype(np.float64))
    b.update_outcomes(codes, errors.astype(bool))
    assert a == b
    with pytest.raises(ValueError, match="errors must be 0/1"):
        a.update_outcomes(codes, np.full(100, 0.5))
    with pytest.raises(ValueError, match="selected must be 0/1"):
        a.update_predictions(codes, np.full(100, 2))
    with pytest.raises(ValueError, match=r"codes must be an \(n, 5\) array"):
        a.update_outcomes(codes[:, :4], errors)
    with pytest.raises(ValueError, match=r"errors must be an \(100,\) array"):
        a.update_outcomes(codes, errors[:99])
    bad = codes.copy()
    bad[7, 2] = 3  # device has levels 0..2
    with pytest.raises(ValueError, match=r"'device' must be -1 \(missing\) or in 0..2, got 3 at row 7"):
        a.update_outcomes(bad, errors)
    bad[7, 2] = -2
    with pytest.raises(ValueError, match="got -2"):
        a.update_outcomes(bad, errors)
    with pytest.raises(ValueError, match="codes must be integers"):
        a.update_outcomes(codes.astype(float), errors)
    assert a == b  # a refused batch leaves the counts alone


def test_layout_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"slice layout has 213 cells \(22 single levels \+ 191 pair"):
        SliceCounts(DIMS, LEVELS, ALL_PAIRS, max_cells=200)
    assert SliceCounts(DIMS, LEVELS, ALL_PAIRS, max_cells=213).n_cells == 213
    with pytest.raises(ValueError, match="max_cells must be an integer >= 1"):
        SliceCounts(DIMS, LEVELS, max_cells=0)
    with pytest.raises(ValueError, match=r"i != j indices into dims \(0..4\), got \(2, 2\)"):
        SliceCounts(DIMS, LEVELS, [(2, 2)])
    with pytest.raises(ValueError, match=r"got \(0, 5\)"):
        SliceCounts(DIMS, LEVELS, [(0, 5)])
    with pytest.raises(ValueError, match="'region' and 'channel' twice"):
        SliceCounts(DIMS, LEVELS, [(0, 1), (1, 0)])
    with pytest.raises(ValueError, match="one list per dimension: 5 dims, 4 level lists"):
        SliceCounts(DIMS, LEVELS[:4])
    with pytest.raises(ValueError, match="levels of dimension 'device'"):
        SliceCounts(DIMS, [*LEVELS[:2], ["ios", "ios"], *LEVELS[3:]])
    with pytest.raises(ValueError, match="dims must be distinct"):
        SliceCounts(["a", "a"], [["x"], ["y"]])


# --------------------------------------------------------------------------- algebra and state


def test_merge_and_subtract_are_exact():
    codes, errors = events(20_000, seed=5, missing=0.03)
    sel = errors[::-1].copy()
    whole = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    whole.update_outcomes(codes, errors)
    whole.update_predictions(codes, sel)
    a, b = SliceCounts(DIMS, LEVELS, ALL_PAIRS), SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    a.update_outcomes(codes[:8000], errors[:8000])
    a.update_predictions(codes[:8000], sel[:8000])
    b.update_outcomes(codes[8000:], errors[8000:])
    b.update_predictions(codes[8000:], sel[8000:])
    merged = a.copy().merge(b)
    assert merged == whole
    back = merged.subtract(b)
    assert back == a and back.to_dict() == a.to_dict()
    assert a.empty_like() == SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    with pytest.raises(ValueError, match="different pairs"):
        a.merge(SliceCounts(DIMS, LEVELS, ALL_PAIRS[:3]))
    with pytest.raises(TypeError):
        a.merge(object())


def test_copy_is_independent():
    codes, errors = events(2000, seed=6)
    a = counts_of(codes, errors)
    c = a.copy()
    c.update_outcomes(codes, errors)
    assert c.total_out == 2 * a.total_out and c.n_out.sum() == 2 * a.n_out.sum()


def test_round_trip_mid_stream_gives_the_uninterrupted_run():
    codes, errors = events(40_000, seed=7)
    sel = (np.random.default_rng(8).random(len(codes)) < 0.3).astype(np.int64)
    straight = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    resumed = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    for s in range(0, 40_000, 1000):
        if s == 17_000:
            resumed = SliceCounts.from_dict(json.loads(json.dumps(resumed.to_dict())))
        for sc in (straight, resumed):
            sc.update_outcomes(codes[s : s + 1000], errors[s : s + 1000])
            sc.update_predictions(codes[s : s + 1000], sel[s : s + 1000])
    assert resumed == straight
    assert resumed.names == straight.names
    assert rank_slices(resumed, top=20) == rank_slices(straight, top=20)
    assert degraded_subgroup(resumed, what="selection", direction="either") == degraded_subgroup(
        straight, what="selection", direction="either"
    )
    d = straight.to_dict()
    with pytest.raises(StateVersionError):
        SliceCounts.from_dict({**d, "version": 99})
    with pytest.raises(StateVersionError):
        SliceCounts.from_dict({**d, "kind": "histogram"})
    with pytest.raises(ValueError, match="err has shape"):
        SliceCounts.from_dict({**d, "err": d["err"][:-1]})


def test_slice_result_round_trips_through_json():
    codes, errors = events(20_000, seed=9)
    for r in rank_slices(counts_of(codes, errors), top=5):
        d = json.loads(json.dumps(r.to_dict()))
        assert d["kind"] == "slice_result" and SliceResult.from_dict(d) == r


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("what", "confidence"), [("error", 0.95), ("selection", 0.9)])
def test_statistics_equal_statsmodels(what, confidence):
    codes, errors = events(50_000, seed=10, missing=0.05)
    selected = (np.random.default_rng(11).random(len(codes)) < 0.25 + 0.1 * (codes[:, 2] == 1)).astype(int)
    sc = counts_of(codes, errors, selected=selected)
    min_size = 600  # leaves out the smallest pair cells (region r4/r5 x store, ~450 events)
    got = rank_slices(sc, what=what, min_size=min_size, confidence=confidence, top=sc.n_cells, direction="either")
    if what == "error":
        x_all, n_all, total_x, total_n = sc.err, sc.n_out, sc.total_err, sc.total_out
    else:
        x_all, n_all, total_x, total_n = sc.sel, sc.n_pred, sc.total_sel, sc.total_pred
    eligible = [k for k in range(sc.n_cells) if n_all[k] >= min_size and total_n - n_all[k] >= min_size]
    assert sorted(r.name for r in got) == sorted(sc.names[k] for k in eligible)
    assert 150 < len(eligible) < sc.n_cells  # some pair cells fall below min_size
    p_ref = {}
    for k in eligible:
        x, n = int(x_all[k]), int(n_all[k])
        xr, nr = total_x - x, total_n - n
        _, p_ref[sc.names[k]] = proportions_ztest([x, xr], [n, nr])
    names = list(p_ref)
    _, q, _, _ = multipletests([p_ref[m] for m in names], method="fdr_bh")
    q_ref = dict(zip(names, q, strict=True))
    by_name = {r.name: r for r in got}
    worst = {"p": 0.0, "q": 0.0, "ci": 0.0}
    for k in eligible:
        r = by_name[sc.names[k]]
        x, n = int(x_all[k]), int(n_all[k])
        xr, nr = total_x - x, total_n - n
        # compare="diff" is count1/nobs1 minus count2/nobs2: the slice first, the rest second.
        low, high = confint_proportions_2indep(x, n, xr, nr, method="newcomb", compare="diff", alpha=1 - confidence)
        assert r.n == n and r.rate == x / n and r.rest_rate == xr / nr
        assert r.share == n / total_n and r.contribution == pytest.approx(r.difference * r.share, abs=1e-15)
        worst["p"] = max(worst["p"], abs(r.p_value - p_ref[r.name]))
        worst["q"] = max(worst["q"], abs(r.q_value - q_ref[r.name]))
        worst["ci"] = max(worst["ci"], abs(r.ci_low - low), abs(r.ci_high - high))
        assert r.significant == (q_ref[r.name] <= 0.05)
    assert max(worst.values()) <= ORACLE, worst
    assert any(r.significant for r in got) and not all(r.significant for r in got)


def test_a_window_without_errors_has_no_evidence():
    codes, errors = events(5000, seed=12)
    sc = counts_of(codes, np.zeros_like(errors))
    ranked = rank_slices(sc, direction="either", top=1000)
    assert ranked and all(r.p_value == 1.0 and r.difference == 0.0 and not r.significant for r in ranked)
    assert rank_slices(sc) == []  # nothing above the rest
    assert degraded_subgroup(sc) == (0.0, None)
    empty = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    assert rank_slices(empty) == [] and degraded_subgroup(empty, what="selection") == (0.0, None)


def test_eligibility_needs_min_size_in_the_slice_and_in_its_rest():
    codes, errors = events(5000, seed=13)
    sc = counts_of(codes, errors)
    for r in rank_slices(sc, min_size=400, direction="either", top=1000):
        assert r.n >= 400 and sc.total_out - r.n >= 400
    # A slice holding (nearly) every event has no rest to compare with.
    one = SliceCounts(["a", "b"], [["x", "y"], ["u"]])
    one.update_outcomes(np.column_stack([np.r_[np.zeros(990), np.ones(10)], np.zeros(1000)]).astype(int),
                        np.r_[np.zeros(500), np.ones(500)])
    names = {r.name for r in rank_slices(one, min_size=30, direction="either")}
    assert names == set()  # b=u is everything; a=y has 10 events; a=x has a rest of 10


def test_argument_errors():
    sc = counts_of(*events(1000, seed=14))
    for kw, msg in [
        ({"what": "accuracy"}, "what must be one of"),
        ({"direction": "up"}, "direction must be one of"),
        ({"min_size": 0}, "min_size must be an integer >= 1"),
        ({"confidence": 1.0}, "confidence must be in"),
        ({"fdr": 0.0}, "fdr must be in"),
        ({"top": 0}, "top must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            rank_slices(sc, **kw)
    with pytest.raises(TypeError, match="counts must be a SliceCounts"):
        degraded_subgroup({})


# --------------------------------------------------------------------------- planted slices


def test_planted_pair_is_ranked_first_and_drives_the_subgroup_rule():
    codes, errors = events(200_000, seed=2024)
    sc = counts_of(codes, errors)
    planted = f"region=r{BAD_REGION}&channel={LEVELS[1][BAD_CHANNEL]}"
    ranked = rank_slices(sc, top=sc.n_cells)
    assert ranked[0].name == planted and ranked[0].significant
    assert ranked[0].rate == pytest.approx(0.2, abs=0.02) and ranked[0].share == pytest.approx(0.03, abs=0.003)
    # Region and channel carry the same excess errors, hence about the same contribution;
    # they are significant too, and explained by the pair they follow right after it,
    # ahead of pairs that overlap the planted cell (region=r4&device=ios, ...).
    singles = {r.name: r for r in ranked if r.name in (f"region=r{BAD_REGION}", "channel=app")}
    assert len(singles) == 2
    assert {r.name for r in ranked[1:3]} == set(singles)
    for r in singles.values():
        assert r.significant and r.contribution == pytest.approx(ranked[0].contribution, rel=0.35)
    value, worst = degraded_subgroup(sc)
    assert worst is not None and worst.name == planted and value == worst.ci_low > 0


def test_planted_pair_first_over_seeds():
    # Not a single lucky seed: the order holds for most draws (contribution alone would
    # order the pair, its region and its channel by noise, about a third of the time each).
    firsts = [rank_slices(counts_of(*events(200_000, seed=s)))[0].name for s in range(100, 110)]
    assert firsts.count(f"region=r{BAD_REGION}&channel=app") >= 9, firsts


def test_a_broad_failure_is_not_hidden_behind_a_pair_inside_it():
    # The whole region is worse and one channel in it worse still: the region is the
    # bigger part of the drop and its rest still departs, so it stays ahead of the pair.
    # Not seed 15: events() draws the regions from that seed's first uniforms.
    rng = np.random.default_rng(1015)
    codes, _ = events(200_000, seed=15)
    in_region = codes[:, 0] == BAD_REGION
    p_err = np.where(in_region, 0.16, 0.1) + 0.06 * (in_region & (codes[:, 1] == BAD_CHANNEL))
    errors = (rng.random(len(codes)) < p_err).astype(np.int64)
    ranked = rank_slices(counts_of(codes, errors))
    assert ranked[0].name == f"region=r{BAD_REGION}"
    assert f"region=r{BAD_REGION}&channel=app" in [r.name for r in ranked]
    # The subgroup rule still points at the most concentrated harm.
    assert degraded_subgroup(counts_of(codes, errors))[1].name == f"region=r{BAD_REGION}&channel=app"


def test_no_planted_slice_rarely_fires():
    quiet = 0
    for seed in range(20):
        value, worst = degraded_subgroup(counts_of(*events(200_000, seed=seed, planted=False)))
        quiet += value == 0.0 and worst is None
    # BH at 5% bounds the chance of any false discovery by about 5% per window.
    assert quiet >= 18


def test_selection_rate_drop_is_found_with_direction_below():
    codes, errors = events(100_000, seed=16)
    rng = np.random.default_rng(17)
    low_group = codes[:, 4] == 3  # age_band=65+
    selected = rng.random(len(codes)) < np.where(low_group, 0.2, 0.3)
    sc = counts_of(codes, errors, selected=selected)
    ranked = rank_slices(sc, what="selection", direction="below")
    assert ranked[0].name == "age_band=65+" and ranked[0].significant
    assert all(r.difference < 0 for r in ranked)
    assert ranked[0].rate == pytest.approx(0.2, abs=0.01) and ranked[0].rest_rate == pytest.approx(0.3, abs=0.01)
    value, worst = degraded_subgroup(sc, what="selection", direction="below")
    assert worst.name == "age_band=65+" and value == -worst.ci_high > 0
    assert "age_band=65+" not in [r.name for r in rank_slices(sc, what="selection", direction="above", top=1000)]
    either = degraded_subgroup(sc, what="selection", direction="either")
    assert either[1].name == "age_band=65+" and either[0] == value
    # Error rates are untouched by the selection counts.
    assert rank_slices(sc, what="error", top=1)[0].name == f"region=r{BAD_REGION}&channel=app"


# ------------------------------------------------------------------ confidence-adjusted


def confident_events(n, seed, overconfident=False):
    """Outcomes of a calibrated model whose confidence differs by slice: the device
    dimension sets how sure it is (ios: p(error) 0.05, android 0.2, desktop 0.4), so plain
    error rates differ by device on a healthy model. ``overconfident`` doubles the error
    probability of the planted region x channel cell (3% of traffic) without changing
    what the model expects there."""
    codes, _ = events(n, seed, planted=False)
    rng = np.random.default_rng(seed + 5000)
    expected = np.array([0.05, 0.2, 0.4])[codes[:, 2]] * rng.uniform(0.8, 1.2, n)
    bad = (codes[:, 0] == BAD_REGION) & (codes[:, 1] == BAD_CHANNEL)
    p_err = np.where(bad & overconfident, np.minimum(2 * expected, 1.0), expected)
    errors = (rng.random(n) < p_err).astype(np.int64)
    return codes, errors, expected


def expected_counts_of(codes, errors, expected, batch=1000):
    sc = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    for s in range(0, len(codes), batch):
        sc.update_outcomes(codes[s : s + batch], errors[s : s + batch], expected[s : s + batch])
    return sc


def test_excess_error_statistics_equal_pandas_and_statsmodels():
    codes, errors, expected = confident_events(60_000, seed=30, overconfident=True)
    sc = expected_counts_of(codes, errors, expected, batch=777)
    df = pd.DataFrame({"region": codes[:, 0], "channel": codes[:, 1], "err": errors, "exp": expected})
    cell = df[(df.region == BAD_REGION) & (df.channel == BAD_CHANNEL)]
    rest = df.drop(cell.index)
    got = {r.name: r for r in rank_slices(sc, what="excess_error", min_size=100, top=sc.n_cells, direction="either")}
    r = got[f"region=r{BAD_REGION}&channel=app"]
    excess, rest_excess = (cell.err - cell.exp).mean(), (rest.err - rest.exp).mean()
    # fixed point: each expected error is rounded to 2**-24, so means agree to ~1e-7
    assert r.rate == pytest.approx(excess, abs=1e-7) and r.rest_rate == pytest.approx(rest_excess, abs=1e-7)
    assert r.difference == pytest.approx(excess - rest_excess, abs=1e-7)
    es, er = cell.exp.mean(), rest.exp.mean()
    z = (excess - rest_excess) / np.sqrt(es * (1 - es) / len(cell) + er * (1 - er) / len(rest))
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-5)
    # the interval's half-width is Agresti-Caffo's, as statsmodels computes it
    x, n, xr, nr = int(cell.err.sum()), len(cell), int(rest.err.sum()), len(rest)
    lo, hi = confint_proportions_2indep(x, n, xr, nr, method="agresti-caffo", compare="diff")
    assert (r.ci_high - r.ci_low) / 2 == pytest.approx((hi - lo) / 2, abs=ORACLE)
    # totals and per-cell sums equal a groupby
    sums = df.groupby("region").exp.sum()
    assert sc.exp_err[: len(LEVELS[0])] * 2.0**-24 == pytest.approx(sums.reindex(range(6), fill_value=0).to_numpy(),
                                                                      abs=1e-6 * 60_000)


def test_a_calibrated_model_with_uneven_confidence_has_no_excess_slice():
    plain, adjusted = 0, 0
    for seed in range(10):
        sc = expected_counts_of(*confident_events(100_000, seed=40 + seed))
        plain += degraded_subgroup(sc)[1] is not None
        adjusted += degraded_subgroup(sc, what="excess_error")[1] is not None
    # the unsure device's plain error rate departs every time; its excess never should
    # (BH at 5% bounds a false discovery by about 5% per window)
    assert plain == 10 and adjusted <= 1, (plain, adjusted)


def test_an_overconfident_slice_is_found_by_its_excess_error():
    sc = expected_counts_of(*confident_events(200_000, seed=60, overconfident=True))
    value, worst = degraded_subgroup(sc, what="excess_error")
    assert worst is not None and worst.name == f"region=r{BAD_REGION}&channel=app" and value == worst.ci_low > 0
    assert rank_slices(sc, what="excess_error")[0].name == worst.name


def test_expected_errors_merge_exactly_round_trip_and_are_checked():
    codes, errors, expected = confident_events(20_000, seed=70)
    whole = expected_counts_of(codes, errors, expected, batch=20_000)
    a = expected_counts_of(codes[:7000], errors[:7000], expected[:7000], batch=333)
    b = expected_counts_of(codes[7000:], errors[7000:], expected[7000:], batch=1000)
    a.merge(b)
    assert np.array_equal(a.exp_err, whole.exp_err) and a.total_exp == whole.total_exp
    back = SliceCounts.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert np.array_equal(back.exp_err, whole.exp_err) and back.total_out_exp == 20_000
    a.subtract(b)
    assert a.total_out_exp == 7000
    partial = expected_counts_of(codes[:100], errors[:100], expected[:100])
    partial.update_outcomes(codes[100:200], errors[100:200])  # no expectations
    with pytest.raises(ValueError, match="expected error for every outcome: 100 of 200"):
        degraded_subgroup(partial, what="excess_error")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], got 1.5 at row 2"):
        partial.update_outcomes(codes[:3], errors[:3], np.array([0.1, 0.2, 1.5]))
    with pytest.raises(ValueError, match=r"expected must be an \(3,\) array"):
        partial.update_outcomes(codes[:3], errors[:3], np.array([0.1, 0.2]))


@pytest.mark.parametrize("seed", range(6))
def test_significant_q_values_are_bh_bit_for_bit_where_they_reject(seed):
    # The standing rule's short cut sorts only the p-values that can be rejected; ties,
    # NaN (no test), p-values at the 2 * fdr cut and all-significant windows included.
    from detectors.multiple_testing import benjamini_hochberg
    from detectors.slices import _significant_q

    rng = np.random.default_rng(seed)
    fdr = [0.05, 0.1, 0.01, 0.2, 0.05, 0.5][seed]
    p = np.concatenate([rng.random(3000), rng.random(200) * 1e-3, np.full(50, 2 * fdr), np.full(40, fdr / 7)])
    p = np.round(p, 4) if seed % 2 else p  # many ties
    p[rng.random(p.size) < 0.1] = np.nan
    if seed == 5:
        p = np.where(np.isnan(p), np.nan, p * 1e-4)  # every test rejects
    rejected, q_full = benjamini_hochberg(p, alpha=fdr)
    q = _significant_q(p, fdr)
    sig = q <= fdr
    np.testing.assert_array_equal(sig, rejected)
    np.testing.assert_array_equal(q[sig], q_full[sig])  # bit for bit
    ok = ~np.isnan(p)
    _, q_oracle, _, _ = multipletests(p[ok], alpha=fdr, method="fdr_bh")
    np.testing.assert_array_equal(sig[ok], q_oracle <= fdr)


@pytest.mark.parametrize("what", ["error", "excess_error", "selection"])
def test_degraded_subgroup_short_cut_keeps_every_significant_cell(what):
    from detectors.slices import _cells

    rng = np.random.default_rng(11)
    codes, errors = events(40000, seed=3)
    sc = SliceCounts(DIMS, LEVELS, ALL_PAIRS)
    expected = np.clip(0.1 + 0.05 * rng.standard_normal(len(errors)), 0.0, 1.0)
    sc.update_outcomes(codes, errors, expected)
    sc.update_predictions(codes, errors)
    full = _cells(sc, what, 30, 0.95, 0.05)
    fast = _cells(sc, what, 30, 0.95, 0.05, every_q=False)
    assert full["significant"].any()
    np.testing.assert_array_equal(fast["significant"], full["significant"])
    np.testing.assert_array_equal(fast["q"][full["significant"]], full["q"][full["significant"]])
