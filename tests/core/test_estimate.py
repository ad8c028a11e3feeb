"""The stratified estimators against the published worked examples and plain numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.estimate import (
    allocate,
    anticipated_overall_se,
    cochran_total,
    points_for_area,
    points_for_users_accuracy,
    stratified_estimate,
)
from geoseg.errors import EstimateError

# Olofsson et al. (2014), Remote Sensing of Environment 148, Section 5: four classes
# (1 deforestation, 2 forest gain, 3 stable forest, 4 stable non-forest), 30 m pixels mapped
# per class, and the sample counts (rows: map class, columns: reference class).
OLOFSSON_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
OLOFSSON_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])


def _points(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, m, r = [], [], []
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            s += [i] * counts[i, j]
            m += [i + 1] * counts[i, j]
            r += [j + 1] * counts[i, j]
    return np.array(s), np.array(m), np.array(r)


@pytest.fixture(scope="module")
def olofsson():
    s, m, r = _points(OLOFSSON_COUNTS)
    return stratified_estimate(s, m, r, OLOFSSON_PIXELS * 0.09, [1, 2, 3, 4])


def test_olofsson_2014_areas_and_intervals_to_the_hectare(olofsson):
    # the paper's printed estimates (ha) and 95 % half-widths (ha)
    assert np.round(olofsson.area).astype(int).tolist() == [21158, 11686, 285770, 581386]
    assert np.round(1.96 * olofsson.area_se).astype(int).tolist() == [6158, 3756, 15510, 16282]
    low, high = olofsson.interval(olofsson.area, olofsson.area_se)
    assert abs(float(low[0]) - (21158 - 6158)) < 1 and abs(float(high[0]) - (21158 + 6158)) < 1
    assert olofsson.total_area == pytest.approx(900_000.0)
    assert olofsson.area.sum() == pytest.approx(900_000.0)


def test_olofsson_2014_accuracies_to_a_thousandth(olofsson):
    assert np.round(olofsson.users, 3).tolist() == [0.880, 0.733, 0.927, 0.963]
    assert np.round(olofsson.producers, 3).tolist() == [0.749, 0.847, 0.935, 0.962]
    assert round(olofsson.overall, 3) == 0.947
    # their 95 % intervals, as printed (two decimals): user's +-0.07/0.10/0.04/0.02, overall +-0.02
    assert np.round(1.96 * olofsson.users_se, 2).tolist() == [0.07, 0.10, 0.04, 0.02]
    assert round(1.96 * olofsson.overall_se, 2) == 0.02
    assert olofsson.counts.tolist() == OLOFSSON_COUNTS.tolist()


def test_olofsson_equations_by_hand(olofsson):
    """Olofsson et al.'s equations 2, 5, 7 and 10 written out, an independent reference."""
    n = OLOFSSON_COUNTS.astype(float)
    w = OLOFSSON_PIXELS / OLOFSSON_PIXELS.sum()
    ni = n.sum(1)
    p = w[:, None] * n / ni[:, None]
    np.testing.assert_allclose(olofsson.proportions, p, rtol=1e-12)
    pk = p.sum(0)
    se_p = np.sqrt((w[:, None] ** 2 * (n / ni[:, None]) * (1 - n / ni[:, None]) / (ni[:, None] - 1)).sum(0))
    np.testing.assert_allclose(olofsson.area_se, se_p * 900_000, rtol=1e-12)
    u = np.diag(p) / p.sum(1)
    prod = np.diag(p) / pk
    np.testing.assert_allclose(olofsson.users_se, np.sqrt(u * (1 - u) / (ni - 1)), rtol=1e-12)
    nj = (OLOFSSON_PIXELS[:, None] / ni[:, None] * n).sum(0)
    for j in range(4):
        t1 = OLOFSSON_PIXELS[j] ** 2 * (1 - prod[j]) ** 2 * u[j] * (1 - u[j]) / (ni[j] - 1)
        t2 = prod[j] ** 2 * sum(OLOFSSON_PIXELS[i] ** 2 * n[i, j] / ni[i] * (1 - n[i, j] / ni[i]) / (ni[i] - 1)
                                for i in range(4) if i != j)
        assert olofsson.producers_se[j] == pytest.approx(math.sqrt(t1 + t2) / nj[j], rel=1e-12)
    oa_v = (w**2 * u * (1 - u) / (ni - 1)).sum()
    assert olofsson.overall_se == pytest.approx(math.sqrt(oa_v), rel=1e-12)


def test_olofsson_2014_sample_size():
    # Section 5.1: anticipated user's accuracies 0.7, 0.6, 0.9, 0.95 and S(O) = 0.01 give n = 641
    assert cochran_total(OLOFSSON_PIXELS.astype(float), [0.7, 0.6, 0.9, 0.95], 0.01) == 641
    n = allocate(641, OLOFSSON_PIXELS.astype(float), minimum=75)
    assert n.sum() == 641 and n[:2].tolist() == [75, 75]
    assert n[3] / n[2] == pytest.approx(6_450_000 / 3_200_000, rel=0.01)  # the rest in proportion to area
    se = anticipated_overall_se(OLOFSSON_PIXELS.astype(float), [0.7, 0.6, 0.9, 0.95], n)
    assert 0.008 < se < 0.011


# Stehman (2014), Int. J. Remote Sensing 35, the numerical example: four strata of 10 points,
# stratum sizes 40,000 / 30,000 / 20,000 / 10,000 pixels, map and reference classes A-D.
STEHMAN_STRATA = "A" * 10 + "B" * 10 + "C" * 10 + "D" * 10
STEHMAN_MAP = "AAAAAAABBB" + "ABBBBBBBBB" + "BBCCCCCCBB" + "DDDDDDDDDD"
STEHMAN_REF = "AAAAACBABC" + "ABBBBBAABB" + "CCCCCDDBBA" + "DDDDDDDCCB"


@pytest.fixture(scope="module")
def stehman():
    code = {c: i for i, c in enumerate("ABCD")}
    s = np.array([code[c] for c in STEHMAN_STRATA])
    m = np.array([code[c] for c in STEHMAN_MAP])
    r = np.array([code[c] for c in STEHMAN_REF])
    return stratified_estimate(s, m, r, np.array([40_000, 30_000, 20_000, 10_000.0]), [0, 1, 2, 3])


def test_stehman_2014_example(stehman):
    # the values the paper prints (pp. 4932-4936)
    p = stehman.area / stehman.total_area
    assert round(p[0], 3) == 0.350 and round(p[2], 3) == 0.200
    assert round(stehman.overall, 3) == 0.630
    assert round(stehman.users[1], 3) == 0.574
    assert round(stehman.producers[1], 3) == 0.794
    assert round(stehman.proportions[1, 2], 3) == 0.080
    se_p = stehman.area_se / stehman.total_area
    assert round(se_p[0], 3) == 0.082 and round(se_p[2], 3) == 0.064
    assert round(stehman.overall_se, 3) == 0.085
    assert round(stehman.users_se[1], 3) == 0.125
    assert round(stehman.producers_se[1], 3) == 0.117


def test_reporting_units_equal_their_own_strata():
    """When the reporting units are strata, a unit's areas are the stratified estimate within it."""
    rng = np.random.default_rng(3)
    strata = np.repeat(np.arange(4), 30)  # strata 0, 1 in unit 0; 2, 3 in unit 1
    units = strata // 2
    areas = np.array([100.0, 300.0, 50.0, 550.0])
    mapped = np.array([1, 2, 1, 2])[strata]
    ref = np.where(rng.random(120) < 0.8, mapped, 3 - mapped)
    e = stratified_estimate(strata, mapped, ref, areas, [1, 2], units=units, n_units=2)
    for u in range(2):
        sel = units == u
        sub = stratified_estimate(strata[sel] - 2 * u, mapped[sel], ref[sel], areas[2 * u : 2 * u + 2], [1, 2])
        np.testing.assert_allclose(e.unit_area[u], sub.area, rtol=1e-12)
        np.testing.assert_allclose(e.unit_area_se[u], sub.area_se, rtol=1e-12)
    np.testing.assert_allclose(e.unit_area.sum(0), e.area, rtol=1e-12)
    assert e.unit_n.tolist() == [60, 60]


@st.composite
def samples(draw):
    h = draw(st.integers(1, 4))
    k = draw(st.integers(1, 3))
    n_h = draw(st.lists(st.integers(2, 12), min_size=h, max_size=h))
    areas = np.array(draw(st.lists(st.floats(1.0, 1e6), min_size=h, max_size=h)))
    strata = np.repeat(np.arange(h), n_h)
    mapped = np.array(draw(st.lists(st.integers(0, k - 1), min_size=len(strata), max_size=len(strata))))
    ref = np.array(draw(st.lists(st.integers(0, k - 1), min_size=len(strata), max_size=len(strata))))
    units = np.array(draw(st.lists(st.integers(-1, 1), min_size=len(strata), max_size=len(strata))))
    return strata, mapped, ref, areas, k, units


@settings(max_examples=150, deadline=None)
@given(samples())
def test_estimator_invariants(sample):
    strata, mapped, ref, areas, k, units = sample
    e = stratified_estimate(strata, mapped, ref, areas, range(k), units=units, n_units=2)
    assert e.proportions.sum() == pytest.approx(1.0)
    assert e.area.sum() == pytest.approx(areas.sum())
    assert (e.area >= -1e-9).all() and (e.area_se >= 0).all()
    assert 0 <= e.overall <= 1 + 1e-12
    assert e.overall == pytest.approx(np.trace(e.proportions))
    # a plain per-stratum mean reference for each class's area
    for c in range(k):
        ref_area = sum(areas[h] * np.mean(ref[strata == h] == c) for h in range(len(areas)))
        assert e.area[c] == pytest.approx(ref_area, rel=1e-9, abs=1e-9)
        var = sum(areas[h] ** 2 * np.var(ref[strata == h] == c, ddof=1) / (strata == h).sum()
                  for h in range(len(areas)))
        assert e.area_se[c] == pytest.approx(math.sqrt(var), rel=1e-9, abs=1e-9)
    # the units split each class's area: together with the points in no unit, the total
    rest = stratified_estimate(strata, mapped, ref, areas, range(k), units=np.where(units < 0, 0, -1), n_units=1)
    np.testing.assert_allclose(e.unit_area.sum(0) + rest.unit_area[0], e.area, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1e6), min_size=1, max_size=8), st.integers(0, 3000), st.integers(2, 80))
def test_allocation(areas, total, minimum):
    a = np.array(areas)
    if a.sum() <= 0:
        with pytest.raises(EstimateError):
            allocate(total, a, minimum)
        return
    n = allocate(total, a, minimum)
    live = a > 0
    assert n.sum() == max(total, minimum * live.sum())
    assert (n[live] >= minimum).all() and (n[~live] == 0).all()


def test_perfect_map_is_its_own_estimate():
    strata = np.repeat([0, 1, 2], 5)
    e = stratified_estimate(strata, strata + 1, strata + 1, np.array([10.0, 20.0, 70.0]), [1, 2, 3])
    assert e.area.tolist() == [10.0, 20.0, 70.0]
    assert e.area_se.tolist() == [0.0, 0.0, 0.0]
    assert e.overall == 1.0 and e.users.tolist() == [1.0, 1.0, 1.0]


def test_points_for_area_worked_example():
    # the README's example: rice mapped on 40 % of a district, user's accuracy 0.9, 5 % of the
    # rest truly rice; +-10 % needs 163 points, +-5 % four times as many
    assert points_for_area(0.4, 0.9, 0.05, 0.10) == 163
    assert points_for_area(0.4, 0.9, 0.05, 0.05) == 652


def test_stratum_with_one_point_is_named():
    with pytest.raises(EstimateError, match=r"fewer than two labelled points: rice / Ludhiana \(1 point\)"):
        stratified_estimate(np.array([0, 0, 1]), np.array([0, 0, 1]), np.array([0, 0, 1]),
                            np.array([5.0, 6.0]), [0, 1], stratum_names=["wheat / Ludhiana", "rice / Ludhiana"])


def test_unknown_class_is_named():
    with pytest.raises(EstimateError, match=r"reference classes of the points holds class ids \[9\]"):
        stratified_estimate(np.array([0, 0]), np.array([0, 0]), np.array([0, 9]), np.array([5.0]), [0, 1])


def test_bad_budget_and_target():
    with pytest.raises(EstimateError, match="budget of 5 points for 4 strata"):
        allocate(100, np.ones(4), 50, budget=5)
    with pytest.raises(EstimateError, match="target standard error 0"):
        cochran_total(np.ones(3), 0.8, 0.0)
    n = allocate(1000, np.array([1.0, 1.0, 98.0]), 50, budget=120)
    assert n.sum() == 120 and n.min() >= 40


def test_points_for_users_accuracy():
    # U = 0.8 within SE 0.05: 0.16 / 0.0025 + 1 = 65; the SE those points give is the target
    n = points_for_users_accuracy([0.8, 0.95, 1.0], 0.05)
    assert n.tolist() == [65, 20, 2]
    assert math.sqrt(0.8 * 0.2 / (n[0] - 1)) == pytest.approx(0.05)
