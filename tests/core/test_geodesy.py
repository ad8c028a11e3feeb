"""Ground areas and perimeters in any CRS, against pyproj.Geod on densified lon/lat polygons."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from geoseg.core.geodesy import PixelAreas, areas_m2, equal_area_crs, perimeters_m, pixel_areas, to_equal_area
from geoseg.core.trace import vectorize
from geoseg.errors import AreaError

from ..geodesic_truth import geod_area_perimeter

UTM43 = CRS.from_epsg(32643)
#: UTM 43N's central meridian (75 E) is at easting 500 km; its edge at 72 E is ~210 km west at 30 N
#: and ~334 km at the equator.
ZONE_CENTRE = (500_000.0, 3_380_000.0)
ZONE_EDGE = (170_000.0, 1_000_000.0)  # 72.0 E, 9 N: the grid's areal scale is 1.0018 here


def field(x: float, y: float, size: float = 3000.0) -> shapely.Polygon:
    """A four-sided field of about ``size`` metres, slanted, with a hole."""
    outer = shapely.Polygon([(x, y), (x + size, y + 0.1 * size), (x + 0.9 * size, y + size),
                             (x - 0.1 * size, y + 0.8 * size)])
    return outer.difference(shapely.box(x + 0.3 * size, y + 0.3 * size, x + 0.5 * size, y + 0.5 * size))


# --------------------------------------------------------------------------------------
# polygons: areas and perimeters
@pytest.mark.parametrize(("where", "planar_off"), [(ZONE_CENTRE, -8e-4), (ZONE_EDGE, 1.8e-3)])
def test_utm_fields_at_the_zone_centre_and_edge_have_geodesic_areas(where, planar_off):
    g = np.array([field(*where), field(where[0] + 5000, where[1] - 4000, 600.0)])
    area, perim = geod_area_perimeter(g, UTM43)
    assert areas_m2(g, UTM43) == pytest.approx(area, rel=1e-8)  # target: well below 1e-4
    assert perimeters_m(g, UTM43) == pytest.approx(perim, rel=1e-8)
    # the grid's planar area was off by the areal scale: -0.08 % at the centre, +0.18 % at this edge
    assert shapely.area(g) / area - 1 == pytest.approx([planar_off] * 2, abs=2e-4)


def test_district_sized_polygon_far_from_the_central_meridian():
    """A 60 x 60 km district with 60 km straight edges: densified, its edges keep their shape."""
    d = np.array([shapely.Polygon([(560_000, 3_300_000), (640_000, 3_310_000), (630_000, 3_370_000),
                                   (570_000, 3_360_000)]),
                  shapely.box(*ZONE_EDGE, ZONE_EDGE[0] + 70_000, ZONE_EDGE[1] + 70_000)])
    area, perim = geod_area_perimeter(d, UTM43, step_m=50.0)
    assert areas_m2(d, UTM43) == pytest.approx(area, rel=1e-8)
    assert perimeters_m(d, UTM43) == pytest.approx(perim, rel=1e-8)


def test_a_crs_in_us_survey_feet():
    ca = CRS.from_epsg(2227)  # California zone 3, US survey feet, NAD83 (GRS 1980)
    g = np.array([field(6_000_000, 2_000_000, 8000.0)])
    area, perim = geod_area_perimeter(g, ca)
    assert areas_m2(g, ca) == pytest.approx(area, rel=1e-8)
    assert perimeters_m(g, ca) == pytest.approx(perim, rel=1e-8)
    assert areas_m2(g, ca)[0] == pytest.approx(shapely.area(g[0]) * 0.3048006096**2, rel=5e-4)  # not square feet


@pytest.mark.parametrize("epsg", [5070, 3035])  # CONUS Albers, Europe LAEA: equal-area already
def test_equal_area_crs_planar_is_ground(epsg):
    crs = CRS.from_epsg(epsg)
    x, y = (1_000_000.0, 2_000_000.0) if epsg == 5070 else (4_000_000.0, 3_000_000.0)
    g = np.array([field(x, y), shapely.box(x, y, x + 50_000, y + 40_000)])
    assert areas_m2(g, crs) == pytest.approx(shapely.area(g), rel=1e-8)
    assert areas_m2(g, crs) == pytest.approx(geod_area_perimeter(g, crs, step_m=50.0)[0], rel=1e-8)
    pa = pixel_areas(Affine(10, 0, x, 0, -10, y), crs, (4000, 3000))
    assert pa.constant == 100.0  # every pixel exactly its grid area
    assert pa.block(0, 0, 2, 3).tolist() == [[100.0] * 3] * 2


def test_a_non_wgs84_ellipsoid_is_used():
    """British National Grid is on OSGB 1936 (Airy 1830): areas on Airy, not on WGS 84."""
    bng = CRS.from_epsg(27700)
    g = np.array([shapely.box(400_000, 300_000, 460_000, 370_000), field(300_000, 500_000)])
    area, perim = geod_area_perimeter(g, bng, step_m=50.0)
    assert areas_m2(g, bng) == pytest.approx(area, rel=1e-8)
    assert perimeters_m(g, bng) == pytest.approx(perim, rel=1e-8)
    # on WGS 84 (same lon/lat) the district would be 1.4e-4 larger: far outside the tolerance above
    tr = pyproj.Transformer.from_crs(27700, pyproj.CRS(27700).geodetic_crs, always_xy=True)
    ll = shapely.transform(shapely.segmentize(g[0], 50.0), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    wgs = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(ll)[0])
    assert abs(wgs / area[0] - 1) > 1e-5


def test_geographic_polygons_with_slanted_edges():
    g = np.array([shapely.Polygon([(75, 30), (75.7, 30.1), (75.6, 30.6), (75.1, 30.5)])])
    area, perim = geod_area_perimeter(g, "EPSG:4326")
    assert areas_m2(g, CRS.from_epsg(4326)) == pytest.approx(area, rel=1e-7)
    assert perimeters_m(g, CRS.from_epsg(4326)) == pytest.approx(perim, rel=1e-6)


def test_one_projection_for_geometries_overlaid_together():
    """Given the same bounds, two sets of geometries land in the same equal-area projection."""
    a = np.array([shapely.box(75.0, 30.0, 75.1, 30.1)])
    b = np.array([shapely.box(70.0, 20.0, 85.0, 35.0)])
    bounds = shapely.total_bounds(a)
    ga, gb = to_equal_area(a, CRS.from_epsg(4326), bounds=bounds), to_equal_area(b, CRS.from_epsg(4326), bounds=bounds)
    assert shapely.area(shapely.intersection(ga, gb))[0] == pytest.approx(shapely.area(ga)[0], rel=1e-9)


def test_empty_and_missing_geometries():
    g = np.array([None, shapely.Polygon(), field(*ZONE_CENTRE)], dtype=object)
    a = areas_m2(g, UTM43)
    assert np.isnan(a[0]) and a[1] == 0 and a[2] > 0
    assert perimeters_m(g, UTM43)[:2].tolist() == [0.0, 0.0]
    assert areas_m2(np.array([], dtype=object), UTM43).shape == (0,)


def test_a_crs_without_a_datum_is_a_plane():
    local = CRS.from_wkt('LOCAL_CS["site grid",UNIT["foot",0.3048],AXIS["X",EAST],AXIS["Y",NORTH]]')
    g = np.array([shapely.box(0, 0, 100, 200)])
    assert areas_m2(g, local)[0] == pytest.approx(20_000 * 0.3048**2)
    assert perimeters_m(g, local)[0] == pytest.approx(600 * 0.3048)
    assert pixel_areas(Affine(1, 0, 0, 0, -1, 0), local, (3, 3)).constant == pytest.approx(0.3048**2)
    with pytest.raises(AreaError, match=r"CRS 'site grid' has no datum; expected a geographic or projected CRS"):
        equal_area_crs(local)


# --------------------------------------------------------------------------------------
# pixels
@pytest.mark.parametrize(("crs", "origin", "res"), [
    (UTM43, ZONE_EDGE, 10.0), (UTM43, ZONE_CENTRE, 30.0), (CRS.from_epsg(2227), (6_000_000, 2_000_000), 30.0),
    (CRS.from_epsg(3857), (8_400_000, 3_600_000), 100.0),  # Web Mercator at 31 N: pixels 27 % smaller on the ground
])
def test_pixel_areas_match_geodesic_pixel_cells(crs, origin, res):
    t = Affine(res, 0, origin[0], 0, -res, origin[1])
    h, w = 2500, 3100
    pa = pixel_areas(t, crs, (h, w))
    rng = np.random.default_rng(7)
    rows, cols = rng.integers(0, h, 12), rng.integers(0, w, 12)
    rows[:2], cols[:2] = (0, h - 1), (0, w - 1)  # the corners too
    x0, y0 = t @ (cols, rows)
    cells = shapely.box(x0, y0 - res, x0 + res, y0)
    want = geod_area_perimeter(cells, crs, step_m=1e9)[0]  # a pixel's edges need no densifying
    got = np.array([pa.block(int(r), int(c), 1, 1)[0, 0] for r, c in zip(rows, cols)])
    assert got == pytest.approx(want, rel=1e-7)
    # the whole grid: its pixels' areas add up to the footprint's ground area
    whole = shapely.box(t.c, t.f - h * res, t.c + w * res, t.f)
    assert pa.block(0, 0, h, w).sum() == pytest.approx(geod_area_perimeter(whole, crs, step_m=100.0)[0][0], rel=1e-7)


def test_pixel_areas_of_a_geographic_grid_are_its_exact_rows():
    t = Affine(0.001, 0, 75.0, 0, -0.001, 31.0)
    pa = pixel_areas(t, CRS.from_epsg(4326), (5, 4))
    a, b = pa.factors(1, 2, 3, 2)
    assert b.tolist() == [[1.0], [1.0]]
    for k in range(3):
        n, s = 31.0 - 0.001 * (k + 1), 31.0 - 0.001 * (k + 2)
        want = geod_area_perimeter(shapely.box(75.0, s, 75.001, n), "EPSG:4326", step_m=1e9)[0][0]
        assert a[k, 0] == pytest.approx(want, rel=1e-7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 900), st.integers(1, 900), st.integers(1, 899))
def test_pixel_areas_add_up_whatever_the_blocks(r0, c0, h, w, cut):  # type: ignore[no-untyped-def]
    """Areas are additive: a block's pixels sum to its two halves' (cut anywhere; to 1e-9, where
    each block's factors are cut off), and to its footprint's ground area."""
    t = Affine(20, 0, ZONE_EDGE[0], 0, -20, ZONE_EDGE[1] + 60_000)
    pa = pixel_areas(t, UTM43, (3000, 3000))
    whole = pa.block(r0, c0, h, w)
    cut = min(cut, h)
    top, bottom = pa.block(r0, c0, cut, w), pa.block(r0 + cut, c0, h - cut, w)
    assert top.sum() + bottom.sum() == pytest.approx(whole.sum(), rel=1e-9)
    a, b = pa.factors(r0, c0, h, w)
    assert a.shape[1] == b.shape[1] <= 3  # a few factors, not an image
    x0, y0 = t @ (c0, r0)
    box = shapely.box(x0, y0 - 20 * h, x0 + 20 * w, y0)
    assert whole.sum() == pytest.approx(geod_area_perimeter(box, UTM43, step_m=100.0)[0][0], rel=1e-7)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 500), st.integers(0, 500))
def test_traced_fields_sum_their_pixels_as_the_polygon_route_measures_them(  # type: ignore[no-untyped-def]
        seed, r0, c0):
    """The raster route (pixels' areas summed along each traced outline) and the polygon route
    (the outline measured in the equal-area projection) agree, holes and all.

    To 3e-7: 300 km from the central meridian a straight 90 m edge of the UTM grid bends 7 um
    away from its chord in the equal-area projection (edges are densified to 100 m only), which
    is 1e-7 of a field of a few pixels (and less of a bigger one, whose edges are longer than
    the densified chords)."""
    rng = np.random.default_rng(seed)
    m = (rng.random((40, 50)) < 0.55).astype(np.uint8) + rng.integers(0, 2, (40, 50)).astype(np.uint8)
    t = Affine(30, 0, ZONE_EDGE[0], 0, -30, ZONE_EDGE[1] + 40_000)
    pa = pixel_areas(t, UTM43, (600, 600))
    f = vectorize(m, t, nodata=None, exclude=(0,), offset=(r0, c0), area_factors=pa.factors(r0, c0, *m.shape))
    assert f.area_m2 == pytest.approx(areas_m2(f.geometry, UTM43), rel=3e-7)
    # and to the pixel sum itself
    px = pa.block(r0, c0, *m.shape)
    assert f.area_m2.sum() == pytest.approx(px[m > 0].sum(), rel=1e-12)


# --------------------------------------------------------------------------------------
# bad inputs
def test_rotated_grid_is_refused():
    with pytest.raises(AreaError, match=r"rotated grid .*; warp it north-up first"):
        pixel_areas(Affine(10, 1, 0, 0, -10, 0), UTM43, (4, 4))


def test_geographic_crs_in_grads_is_refused():
    ntf = CRS.from_epsg(4807)  # NTF (Paris), in grads
    with pytest.raises(AreaError, match=r"geographic CRS in 'grad'; expected degrees - reproject the data to "
                                        r"EPSG:4326 first"):
        pixel_areas(Affine(0.001, 0, 0, 0, -0.001, 50), ntf, (4, 4))
    with pytest.raises(AreaError, match=r"geographic CRS in 'grad'"):
        areas_m2(np.array([shapely.box(0, 50, 0.1, 50.1)]), ntf)


def test_a_pixel_area_lattice_of_one_node():
    pa = PixelAreas(np.array([0.5]), np.array([0.5]), np.array([[42.0]]))
    assert pa.block(0, 0, 1, 1).tolist() == [[42.0]] and pa.mean == 42.0
