"""Indices from band names, weighted zonal statistics and phenology, against plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.zonal import band_index, index_values, parse_index, phenology, zone_stats


def test_named_indices_and_expressions():
    nir, red, green, blue = np.array([0.4, 0.3]), np.array([0.05, 0.3]), np.array([0.08, 0.1]), np.array([0.03, 0.1])
    b = {"nir": nir, "red": red, "green": green, "blue": blue}
    np.testing.assert_allclose(index_values(parse_index("ndvi"), b), (nir - red) / (nir + red))
    np.testing.assert_allclose(index_values(parse_index("ndwi"), b), (green - nir) / (green + nir))
    np.testing.assert_allclose(index_values(parse_index("evi"), b),
                               2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1))
    np.testing.assert_allclose(index_values(parse_index("gcvi=ratio(nir,green)"), b), nir / green)
    assert np.isnan(index_values(parse_index("nd(a,b)"), {"a": np.array([0.0]), "b": np.array([0.0])}))[0]
    with pytest.raises(ValueError, match=r"index 'ndxi': expected one of ndvi, ndwi"):
        parse_index("ndxi")


def test_bands_are_found_by_any_of_their_names():
    assert band_index("nir", ["B02", "B03", "B04", "B08"]) == 3
    assert band_index("red", ["B", "G", "R", "NIR"]) == 2
    assert band_index("B04", ["blue", "green", "red", "nir"]) == 2
    assert band_index("b08", ["B02", "B08"]) == 1
    assert band_index("swir16", ["B", "G", "R", "NIR"]) is None


def _plain_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    """The weighted type-7 quantile written out: s_k = (k-1) w_k + (n-1) (w_1 + ... + w_{k-1}), equal
    values in order of weight."""
    order = np.lexsort((w, v))
    v, w = v[order], w[order]
    n = len(v)
    if n == 1:
        return float(v[0])
    s = [(k - 1) * w[k - 1] + (n - 1) * w[: k - 1].sum() for k in range(1, n + 1)]
    h = q * s[-1]
    k = max(i for i in range(n) if s[i] <= h + 1e-12 * s[-1])
    if k == n - 1:
        return float(v[-1])
    return float(v[k] + (h - s[k]) / (s[k + 1] - s[k]) * (v[k + 1] - v[k]))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5), st.lists(st.tuples(st.integers(0, 4),
                                              st.one_of(st.floats(-1, 1), st.sampled_from([0.0, 0.25, 0.5])),
                                              st.floats(0.01, 3.0), st.booleans()), min_size=1, max_size=60))
def test_zone_stats_equal_plain_numpy(n_zones, pieces):
    z = np.array([p[0] % n_zones for p in pieces])
    v = np.array([p[1] if p[3] else np.nan for p in pieces])
    w = np.array([p[2] for p in pieces])
    s = zone_stats(z, v, w, n_zones)
    for k in range(n_zones):
        sel = z == k
        ok = sel & ~np.isnan(v)
        if not sel.any():
            assert np.isnan(s["observed"][k])
            continue
        assert s["observed"][k] == pytest.approx(w[ok].sum() / w[sel].sum())
        if not ok.any():
            assert np.isnan(s["mean"][k]) and np.isnan(s["median"][k])
            continue
        mean = np.average(v[ok], weights=w[ok])
        assert s["mean"][k] == pytest.approx(mean, abs=1e-12)
        assert s["std"][k] == pytest.approx(math.sqrt(np.average((v[ok] - mean) ** 2, weights=w[ok])), abs=1e-9)
        for key, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):
            assert s[key][k] == pytest.approx(_plain_quantile(v[ok], w[ok], q), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.1, 0.2, 0.5]), st.floats(0.01, 3.0)),
                min_size=2, max_size=40), st.randoms(use_true_random=False))
def test_zone_stats_do_not_hang_on_the_order_of_tied_pieces(pieces, rnd):
    # few distinct values and unequal weights: ties everywhere, in any order the blocks deliver them
    z, v, w = (np.array(c) for c in zip(*pieces, strict=True))
    perm = np.array(rnd.sample(range(len(z)), len(z)))
    a, b = zone_stats(z, v, w, 3), zone_stats(z[perm], v[perm], w[perm], 3)
    for key in ("p10", "median", "p90", "mean", "std"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_equal_weights_give_numpys_default_quantiles():
    rng = np.random.default_rng(0)
    v = rng.normal(size=101)
    s = zone_stats(np.zeros(101, int), v, np.ones(101), 1)
    for key, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9)):
        assert s[key][0] == pytest.approx(np.quantile(v, q), abs=1e-12)


def test_phenology_of_a_known_curve():
    days = np.arange(0, 250, 10.0)
    curve = 0.2 + 0.6 * np.exp(-(((days - 120) / 40) ** 2))
    p = phenology(days, curve[None])
    assert p["peak"][0] == pytest.approx(0.8) and p["peak_day"][0] == 120
    # half the amplitude is reached 40 * sqrt(ln 2) = 33.3 days either side of the peak
    assert p["sos_day"][0] == pytest.approx(120 - 40 * math.sqrt(math.log(2)), abs=1.0)
    assert p["eos_day"][0] == pytest.approx(120 + 40 * math.sqrt(math.log(2)), abs=1.0)
    assert p["season_days"][0] == pytest.approx(p["eos_day"][0] - p["sos_day"][0])
    fine = np.linspace(p["sos_day"][0], p["eos_day"][0], 20001)
    exact = np.trapezoid(0.2 + 0.6 * np.exp(-(((fine - 120) / 40) ** 2)), fine)
    assert p["integral"][0] == pytest.approx(exact, rel=0.02)
    # missing dates are skipped; a peak at the end has no season
    gappy = curve.copy()
    gappy[5:7] = np.nan
    assert phenology(days, gappy[None])["peak_day"][0] == 120
    rising = phenology(days, days[None] / 250.0)
    assert rising["peak_day"][0] == 240 and np.isnan(rising["sos_day"][0])
