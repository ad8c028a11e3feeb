"""District crop areas: exact coverage, geodesic pixels, both paths against the synthetic truth, bad inputs."""

from __future__ import annotations

from pathlib import Path

import click
import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from geoseg.classes import ClassTable, CropClass, default_classes
from geoseg.cli.areas import areas
from geoseg.cli.main import GeosegGroup
from geoseg.core.geodesy import areas_m2, row_pixel_areas
from geoseg.core.overlay import boundary_coverage, largest_overlap, overlap_areas
from geoseg.errors import AreaError, DistrictError, DistrictWarning, VectorFormatError
from geoseg.ops.areas import (
    TABLE_COLUMNS,
    district_areas,
    district_areas_fields,
    district_areas_file,
    district_areas_raster,
)
from geoseg.ops.polygonize import polygonize_raster
from geoseg.synth import synthesize

from ..geodesic_truth import geod_area_perimeter

DATA = Path(__file__).parents[1] / "data"
INDIA = DATA / "india_districts" / "india_district.json"
UTM = CRS.from_epsg(32643)
T10 = Affine(10, 0, 600_000, 0, -10, 3_380_000)
#: Ground area of one T10 pixel (ha), by pyproj.Geod: 0.055 % more than the grid's 0.01 ha, 100 km east
#: of UTM 43N's central meridian (the pixels of the small rasters below differ from it by under 1e-6)
PX_HA = float(geod_area_perimeter(shapely.box(600_000, 3_379_990, 600_010, 3_380_000), UTM)[0][0]) / 1e4


def write_mask(path: Path, mask: np.ndarray, transform: Affine = T10, crs: CRS = UTM, nodata: float | None = 255) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=1,
                       dtype=mask.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(mask, 1)
    return path


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory):
    """A 512 x 512 synthetic region over real Punjab districts (about a second to make)."""

    return synthesize(tmp_path_factory.mktemp("region"), height=512, width=512, seed=3)


# --------------------------------------------------------------------------------------
# pure pieces
def test_geographic_pixel_areas_are_ellipsoidal():
    t = Affine(0.001, 0, 75.0, 0, -0.001, 31.0)
    rows = row_pixel_areas(t, CRS.from_epsg(4326), 3)
    geod = pyproj.Geod(ellps="WGS84")
    for r in range(3):
        n, s = 31.0 - 0.001 * r, 31.0 - 0.001 * (r + 1)
        area, _ = geod.polygon_area_perimeter([75.0, 75.001, 75.001, 75.0], [n, n, s, s])
        assert rows[r] == pytest.approx(abs(area), rel=1e-7)
    assert rows[0] < rows[2]  # cells grow towards the equator
    with pytest.raises(AreaError, match=r"CRS 'WGS 84 / UTM zone 43N' is not geographic; the ground areas of its "
                                        r"pixels come from pixel_areas"):
        row_pixel_areas(T10, UTM, 2)


def test_geographic_polygon_areas_use_an_equal_area_projection():
    g = np.array([shapely.box(75.0, 30.0, 75.01, 30.01)])
    geod = pyproj.Geod(ellps="WGS84")
    area, _ = geod.geometry_area_perimeter(g[0])
    assert areas_m2(g, CRS.from_epsg(4326))[0] == pytest.approx(abs(area), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_boundary_coverage_is_exact(seed):
    rng = np.random.default_rng(seed)
    h, w = 30, 40
    t = Affine(2.5, 0, 100.0, 0, -2.5, 500.0)
    polys = []
    for _ in range(4):
        pts = rng.uniform([95, 415], [210, 510], (25, 2))
        hull = shapely.MultiPoint(pts).convex_hull.buffer(-3)
        hole = shapely.Point(*rng.uniform([130, 440], [170, 480])).buffer(6)
        polys.append(hull.difference(hole))
    polys.append(shapely.box(105, 430, 130, 450))  # on the grid lines
    polys.append(shapely.MultiPolygon([shapely.box(101.3, 480.2, 117.7, 497.1),  # two parts, one with a hole
                                       shapely.Point(190, 430).buffer(12).difference(shapely.Point(190, 430).buffer(4))]))
    polys = np.array(polys)
    r, c, i, f = boundary_coverage(polys, t, (h, w))
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    x0, y0 = t.c + cols * t.a, t.f + rows * t.e
    cells = shapely.box(x0, y0 + t.e, x0 + t.a, y0)
    for k, poly in enumerate(polys):
        exact = shapely.area(shapely.intersection(cells, poly)) / (t.a * -t.e)
        got = shapely.contains_xy(poly, x0 + t.a / 2, y0 + t.e / 2).astype(float)  # centre rule elsewhere
        sel = i == k
        got[r[sel], c[sel]] = f[sel]
        assert np.abs(got - exact).max() < 1e-9


def test_largest_overlap_prefers_bigger_share():
    d = np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)])
    f = np.array([shapely.box(9, 1, 12, 2), shapely.box(10, 1, 11, 2), shapely.box(20, 0, 21, 1)])
    assert largest_overlap(f, d).tolist() == [1, 1, -1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40))
def test_overlap_areas_match_plain_intersections(seed, n):  # type: ignore[no-untyped-def]
    """Every pair that intersects (touching ones with area 0), with the area of the intersection,
    whatever the shortcuts (bounding box covered, geometry covered) decided."""
    rng = np.random.default_rng(seed)
    districts = np.array([  # overlapping, concave and holed districts, as messy boundary files are
        shapely.box(0, 0, 50, 50), shapely.box(50, 0, 100, 50).difference(shapely.box(60, 10, 70, 20)),
        shapely.Polygon([(0, 50), (100, 50), (100, 100), (50, 60), (0, 100)]), shapely.box(40, 40, 60, 60),
    ])
    x, y = rng.uniform(-10, 105, n), rng.uniform(-10, 105, n)
    w, h = rng.choice([0.5, 3.0, 10.0, 30.0], n), rng.choice([0.5, 3.0, 10.0, 30.0], n)
    geoms = shapely.box(x, y, x + w, y + h)
    geoms[::3] = shapely.buffer(shapely.points(x[::3], y[::3]), w[::3] / 2)  # round ones too
    geoms[::5] = shapely.box(np.floor(x[::5]), 0, np.floor(x[::5]) + 1, 1)  # some only touch a district edge
    gi, di, area = overlap_areas(geoms, districts)
    got = {(int(g), int(d)): a for g, d, a in zip(gi, di, area)}
    want = {}
    for g in range(n):
        for d in range(len(districts)):
            if shapely.intersects(geoms[g], districts[d]):
                want[(g, d)] = shapely.area(shapely.intersection(geoms[g], districts[d]))
    assert set(got) == set(want)
    for k, a in want.items():
        assert got[k] == pytest.approx(a, rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------------------
# raster path: by hand
@pytest.fixture()
def split_raster(tmp_path: Path) -> tuple[Path, Path]:
    """A 4 x 6 raster; the district border runs through the middle of column 2."""
    m = np.array([[1, 1, 2, 2, 2, 2]] * 3 + [[255, 255, 2, 2, 2, 255]], np.uint8)
    path = write_mask(tmp_path / "m.tif", m)
    x0, y0 = T10.c, T10.f
    d = gpd.GeoDataFrame({"name": ["A", "B"]}, crs=UTM,
                         geometry=[shapely.box(x0 - 100, y0 - 100, x0 + 25, y0 + 100),
                                   shapely.box(x0 + 25, y0 - 100, x0 + 200, y0 + 100)])
    d.to_file(tmp_path / "d.gpkg")
    return path, tmp_path / "d.gpkg"


def test_exact_split_of_border_pixels_by_hand(split_raster):
    path, dpath = split_raster
    classes = ClassTable((CropClass(0, "background", "#000000", False), CropClass(1, "rice", "#00ff00"),
                          CropClass(2, "wheat", "#ffff00")))
    df = district_areas_raster(path, dpath, "name", classes=classes)
    assert list(df.columns) == list(TABLE_COLUMNS)
    got = df.set_index(["district", "crop"]).area_ha
    # A: columns 0-1 and half of column 2; pixels are 0.01 ha
    assert got["A", "rice"] == pytest.approx(6 * PX_HA)
    assert got["A", "wheat"] == pytest.approx(4 * 0.5 * PX_HA)
    assert got["A", "background"] == 0
    assert got["B", "wheat"] == pytest.approx((4 * 0.5 + 3 * 3 + 2) * PX_HA)
    un = df.groupby("district").unobserved_ha.first()
    assert un["A"] == pytest.approx(2 * PX_HA) and un["B"] == pytest.approx(PX_HA)
    assert df[df.district == "A"].share.sum() == pytest.approx(1.0)
    centre = district_areas_raster(path, dpath, "name", classes=classes, method="centre").set_index(
        ["district", "crop"]).area_ha
    assert centre["A", "wheat"] + centre["B", "wheat"] == pytest.approx(got["A", "wheat"] + got["B", "wheat"])
    assert {centre["A", "wheat"], centre["B", "wheat"]} != {got["A", "wheat"], got["B", "wheat"]}


def test_district_in_several_parts_is_split_exactly(tmp_path):
    """A district in two parts (a MultiPolygon, e.g. cut by the raster's edge) keeps its exact border pixels."""
    m = np.ones((20, 20), np.uint8)
    path = write_mask(tmp_path / "m.tif", m)
    x0, y0 = T10.c, T10.f
    a = shapely.MultiPolygon([shapely.box(x0 + 13, y0 - 57, x0 + 47, y0 - 3),
                              shapely.box(x0 + 101.5, y0 - 187, x0 + 166, y0 - 122.5)])
    b = shapely.box(x0 - 50, y0 - 250, x0 + 250, y0 + 50).difference(a)
    d = gpd.GeoDataFrame({"n": ["A", "B"]}, geometry=[a, b], crs=UTM)
    df = district_areas_raster(path, d, "n").set_index(["district", "class_id"])
    a_ha = geod_area_perimeter(a, UTM)[0][0] / 1e4  # ground area
    assert df.area_ha["A", 1] == pytest.approx(a_ha)
    assert df.area_ha["B", 1] == pytest.approx(400 * PX_HA - a_ha)
    fields = gpd.GeoDataFrame({"class_id": [1]}, geometry=[shapely.box(x0, y0 - 200, x0 + 200, y0)], crs=UTM)
    poly = district_areas_fields(fields, d, "n").set_index(["district", "class_id"])
    assert poly.area_ha["A", 1] == pytest.approx(a_ha)


def test_fields_by_crop_name_and_fields_of_geoseg_0_1(tmp_path):
    """Without class_id, crop:name (or geoseg 0.1's crop) looked up in the class file gives the classes."""
    x0, y0 = T10.c, T10.f
    d = gpd.GeoDataFrame({"n": ["D"]}, geometry=[shapely.box(x0, y0 - 400, x0 + 400, y0)], crs=UTM)
    boxes = [shapely.box(x0, y0 - 100, x0 + 100, y0), shapely.box(x0 + 100, y0 - 300, x0 + 300, y0 - 100)]
    for col in ("crop:name", "crop"):
        f = gpd.GeoDataFrame({col: ["rice", "wheat"]}, geometry=boxes, crs=UTM)
        f.to_file(tmp_path / "f.gpkg")
        df = district_areas(tmp_path / "f.gpkg", d, "n", classes=default_classes()).set_index("class_id")
        truth = geod_area_perimeter(np.array(boxes), UTM)[0] / 1e4  # ground hectares of 1 and 4 ha of grid
        assert df.area_ha[1] == pytest.approx(truth[0], rel=1e-7) and df.area_ha[2] == pytest.approx(truth[1], rel=1e-7)
    with pytest.raises(AreaError, match=r"has no 'class_id' column \(nor 'crop:name' or 'crop' with a class file\)"):
        district_areas_fields(gpd.GeoDataFrame({"x": [1, 2]}, geometry=boxes, crs=UTM), d, "n")


def test_foreign_uint16_raster_with_nodata_option_and_class_file(tmp_path):
    m = np.array([[10, 10, 0], [20, 20, 0]], np.uint16)
    path = write_mask(tmp_path / "other.tif", m, nodata=None)
    d = gpd.GeoDataFrame({"n": ["D"]}, geometry=[shapely.box(599_000, 3_379_000, 601_000, 3_381_000)], crs=UTM)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("classes:\n" + "".join(f"  - {{id: {i}, name: c{i}, color: '#000000'}}\n" for i in range(21)))
    df = district_areas_raster(path, d, "n", classes=yaml, nodata=0)
    rows = df[df.area_ha > 0].set_index("crop").area_ha
    assert rows.to_dict() == pytest.approx({"c10": 2 * PX_HA, "c20": 2 * PX_HA})
    assert df.unobserved_ha.iloc[0] == pytest.approx(2 * PX_HA)
    assert len(df) == 21  # every class of the file, zeros included


def test_geographic_raster_counts_true_pixel_areas(tmp_path):
    res = 0.001
    t = Affine(res, 0, 75.0, 0, -res, 31.0)
    m = np.ones((20, 10), np.uint8)
    path = write_mask(tmp_path / "geo.tif", m, transform=t, crs=CRS.from_epsg(4326))
    d = gpd.GeoDataFrame({"n": ["D"]}, geometry=[shapely.box(74, 30, 76, 32)], crs="EPSG:4326")
    df = district_areas_raster(path, d, "n")
    geod = pyproj.Geod(ellps="WGS84")
    area, _ = geod.polygon_area_perimeter([75.0, 75.01, 75.01, 75.0], [31.0, 31.0, 30.98, 30.98])
    assert df.area_ha.sum() * 1e4 == pytest.approx(abs(area), rel=1e-6)


@pytest.mark.parametrize("method", ["exact", "centre"])
def test_both_routes_give_the_geodesic_district_area_at_a_zone_edge(tmp_path, method):
    """A district 10 km across, 330 km west of UTM 43N's central meridian (the grid's areal scale
    1.0018 there), all one crop: both routes give its ground area (pyproj.Geod), not its grid area."""
    t = Affine(20, 0, 168_000, 0, -20, 1_012_000)
    path = write_mask(tmp_path / "edge.tif", np.ones((600, 600), np.uint8), transform=t)
    x0, y0 = 170_000.0, 1_000_000.0
    d = gpd.GeoDataFrame({"n": ["D"]}, crs=UTM, geometry=[shapely.Polygon(
        [(x0, y0), (x0 + 9_000, y0 + 700), (x0 + 8_300, y0 + 9_900), (x0 + 4_000, y0 + 6_000),
         (x0 - 600, y0 + 8_800)])])
    truth = geod_area_perimeter(d.geometry.values, UTM)[0][0] / 1e4
    raster = district_areas_raster(path, d, "n", method=method, block=256)
    fields = gpd.GeoDataFrame({"class_id": [1]}, crs=UTM, geometry=[shapely.box(168_000, 1_000_000 - 2_000,
                                                                                  180_000, 1_012_000)])
    poly = district_areas_fields(fields, d, "n")
    assert poly.area_ha.sum() == pytest.approx(truth, rel=1e-7)
    assert poly.district_ha.iloc[0] == raster.district_ha.iloc[0] == pytest.approx(truth, rel=1e-7)
    # centre: the pixels whose centres are inside, a few boundary pixels' worth off
    assert raster.area_ha.sum() == pytest.approx(truth, rel=1e-7 if method == "exact" else 1e-3)
    assert d.geometry.area.iloc[0] / 1e4 / truth - 1 == pytest.approx(1.8e-3, abs=1e-4)  # the grid's area


def test_geographic_fields_and_districts_of_different_extents_overlay_where_they_lie():
    """Fields are cut by districts in their own CRS, then measured (they used to be taken into
    two equal-area projections, each centred on its own extent, which moved a district 5 degrees
    wide off its fields)."""
    fields = gpd.GeoDataFrame({"class_id": [1, 2]}, crs="EPSG:4326", geometry=[
        shapely.box(75.00, 30.00, 75.02, 30.01), shapely.box(75.02, 30.00, 75.03, 30.02)])
    d = gpd.GeoDataFrame({"n": ["Wide", "West"]}, crs="EPSG:4326", geometry=[
        shapely.box(75.015, 25.0, 85.0, 35.0), shapely.box(70.0, 25.0, 75.015, 35.0)])
    df = district_areas_fields(fields, d, "n").set_index(["district", "class_id"]).area_ha
    ha = lambda *b: geod_area_perimeter(shapely.box(*b), "EPSG:4326")[0][0] / 1e4  # noqa: E731
    assert df["West", 1] == pytest.approx(ha(75.00, 30.00, 75.015, 30.01), rel=1e-6)
    assert df["Wide", 1] == pytest.approx(ha(75.015, 30.00, 75.02, 30.01), rel=1e-6)
    assert df["Wide", 2] == pytest.approx(ha(75.02, 30.00, 75.03, 30.02), rel=1e-6)


def test_blocks_on_threads_give_the_one_thread_table_and_raise_a_bad_block(tmp_path):
    """Blocks counted on several threads (the Runner) give the one-thread table; a bad value in one
    block of many is raised as the block's own error, not lost in a thread."""
    rng = np.random.default_rng(5)
    m = rng.integers(0, 3, (70, 90)).astype(np.int16)
    path = write_mask(tmp_path / "m.tif", m, nodata=255)
    x0, y0 = T10.c, T10.f
    d = gpd.GeoDataFrame({"n": ["A", "B"]}, crs=UTM, geometry=[shapely.box(x0, y0 - 700, x0 + 333, y0),
                                                               shapely.box(x0 + 333, y0 - 700, x0 + 900, y0)])
    one = district_areas_raster(path, d, "n", block=16, workers=1)
    many = district_areas_raster(path, d, "n", block=16, workers=3)
    pd.testing.assert_frame_equal(one, many, check_exact=False, rtol=1e-12)
    m[60, 80] = -4
    write_mask(path, m, nodata=255)
    with pytest.raises(AreaError, match=r"m\.tif: negative class value -4; expected class ids >= 0"):
        district_areas_raster(path, d, "n", block=16, workers=3)


# --------------------------------------------------------------------------------------
# the synthetic Punjab region with its real districts
def test_true_labels_reproduce_the_generators_truth(region):
    """The generator counts each pixel in the district holding its centre: method="centre" is exactly that.

    The exact method splits border pixels by coverage instead, so it may differ from that
    convention by a fraction of the border pixels only: within 0.01 % per district, and
    within 0.2 ha (a few % of the smallest district x crop cells of this small region).
    """
    truth = region.truth[region.truth.district.isin(region.district_names)]
    centre = district_areas_raster(region.labels, region.districts, "district", method="centre")
    m = truth.merge(centre, on=["district", "class_id"], how="left")
    assert m.area_ha.notna().all() and len(m) == len(truth)
    assert ((m.area_ha - m.hectares).abs() / m.hectares).max() < 1e-9
    exact = district_areas_raster(region.labels, region.districts, "district")
    m = truth.merge(exact, on=["district", "class_id"], how="left")
    assert (m.area_ha - m.hectares).abs().max() < 0.2
    tot = m.groupby("district")[["area_ha", "hectares"]].sum()
    assert ((tot.area_ha - tot.hectares).abs() / tot.hectares).max() < 1e-4
    assert set(exact.district) == set(region.district_names)
    assert (exact.coverage > 0).all() and (exact.coverage < 1).all()  # the region covers parts of districts
    obs = exact.groupby("district").observed_ha.first()
    assert np.allclose(obs, truth.groupby("district").hectares.sum().reindex(obs.index), rtol=1e-4)


def test_raster_and_polygon_paths_agree(region):
    raster = district_areas_raster(region.labels, region.districts, "district")
    fields = polygonize_raster(region.labels, min_area_ha=0)  # crops only (background excluded)
    poly = district_areas_fields(fields, region.districts, "district")
    m = raster.merge(poly, on=["district", "class_id"], suffixes=("_r", "_p"))
    m = m[m.area_ha_r > 0]
    assert len(m) >= 12 and set(m.crop_r) == set(fields["crop:name"])
    # the same ground areas: each pixel's (exact coverage) against the traced fields cut by the districts
    # and measured in the equal-area projection (1e-8 apart here; 3e-7 is the bound for the smallest fields)
    assert ((m.area_ha_r - m.area_ha_p).abs() / m.area_ha_r).max() < 3e-7
    assert poly.share.isna().all() and poly.unobserved_ha.isna().all()
    # a fields file written to disk with a crop:name column gives the same
    fields.to_file(Path(region.out_dir) / "fields_test.gpkg")
    again = district_areas(Path(region.out_dir) / "fields_test.gpkg", region.districts, "district")
    assert np.allclose(again.set_index(["district", "class_id"]).area_ha.reindex(
        poly.set_index(["district", "class_id"]).index), poly.area_ha.to_numpy())


def test_boundaries_in_another_crs_are_reprojected(region, tmp_path):
    d = gpd.read_file(region.districts).to_crs("EPSG:4326")
    d.to_file(tmp_path / "d4326.geojson")
    a = district_areas_raster(region.labels, region.districts, "district")
    b = district_areas_raster(region.labels, tmp_path / "d4326.geojson", "district")
    assert np.allclose(a.area_ha, b.area_ha, rtol=1e-4, atol=1e-3)


def test_real_india_file_reports_null_invalid_and_distant_districts(region):
    with pytest.warns(DistrictWarning) as rec:
        df = district_areas_raster(region.labels, INDIA, "district")
    text = " ".join(str(w.message) for w in rec)
    assert "Diu: null geometry" in text and "Yanam: null geometry" in text
    assert "invalid geometry repaired" in text
    problems = df.attrs["problems"]
    assert sum("no overlap" in p for p in problems) > 600
    assert set(df.district) == set(region.district_names)  # census names match the bundled ones
    ref = district_areas_raster(region.labels, region.districts, "district")
    # the India file's boundaries are the same census polygons, reprojected from EPSG:4326
    assert np.allclose(df.area_ha, ref.area_ha, rtol=2e-3, atol=0.05)


# --------------------------------------------------------------------------------------
# bad inputs, each with its message
def test_missing_name_field_lists_the_attributes(region):
    with pytest.raises(DistrictError, match=r"has no attribute 'District'; the attributes are \['district', 'st_nm', "
                                            r"'censuscode'\] - did you mean 'district'\?"):
        district_areas_raster(region.labels, region.districts, "District")


def test_districts_that_do_not_overlap_at_all_fail_naming_the_crs(region):
    d = gpd.GeoDataFrame({"n": ["Far"]}, geometry=[shapely.box(0, 0, 1000, 1000)], crs=UTM)
    with pytest.raises(AreaError, match=r"none of the 1 districts in <districts> overlaps .*labels.tif.*check that "
                                        r"both files have the right CRS"):
        district_areas_raster(region.labels, d, "n")


def test_districts_without_crs_are_refused(region, tmp_path):
    d = gpd.GeoDataFrame({"n": ["X"]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(DistrictError, match=r"has no CRS, so it cannot be matched to the raster; set one, e.g. "
                                            r"`ogr2ogr -a_srs EPSG:4326"):
        district_areas_raster(region.labels, d, "n")


def test_invalid_and_null_districts_are_reported_not_crashed_on(tmp_path, split_raster):
    path, _ = split_raster
    x0, y0 = T10.c, T10.f
    bowtie = shapely.Polygon([(x0, y0), (x0 + 60, y0 - 40), (x0 + 60, y0), (x0, y0 - 40)])
    d = gpd.GeoDataFrame({"n": ["Bow", "Nothing"]}, geometry=[bowtie, None], crs=UTM)
    with pytest.warns(DistrictWarning, match=r"Nothing: null geometry \(skipped\).*|Bow: invalid geometry repaired"):
        df = district_areas_raster(path, d, "n")
    assert set(df.district) == {"Bow"}
    assert any("Bow: invalid geometry repaired" in p for p in df.attrs["problems"])
    assert any("Nothing: null geometry" in p for p in df.attrs["problems"])
    assert df.area_ha.sum() == pytest.approx(shapely.make_valid(bowtie).area / 1e4 - 0.0, rel=0.35)


def test_unknown_table_extension_fails_before_work(split_raster, tmp_path):
    path, dpath = split_raster
    with pytest.raises(VectorFormatError, match=r"cannot tell the table format from the extension '\.xlsx'; use "
                                                r"\.csv, \.parquet or \.json"):
        district_areas_file(path, dpath, "name", tmp_path / "areas.xlsx")


def test_multiband_raster_is_refused(tmp_path, split_raster):
    _, dpath = split_raster
    p = tmp_path / "rgb.tif"
    with rasterio.open(p, "w", driver="GTiff", height=4, width=4, count=3, dtype="uint8", crs=UTM, transform=T10) as dst:
        dst.write(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(AreaError, match="3 band.*expected a single-band integer class raster"):
        district_areas_raster(p, dpath, "name")


# --------------------------------------------------------------------------------------
# CLI
def _cli() -> click.Group:
    @click.group(cls=GeosegGroup)
    def cli() -> None:
        pass

    cli.add_command(areas)
    return cli


def test_cli_areas_writes_table_and_prints_it(region, tmp_path):
    out = tmp_path / "areas.csv"
    r = CliRunner().invoke(_cli(), ["areas", str(region.labels), "--districts", str(INDIA), "--name-field", "district",
                                    "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Warning: district Diu: null geometry (skipped)" in r.output
    assert "districts) do not overlap" in r.output or "district(s) do not overlap" in r.output
    assert "Ludhiana" in r.output or region.district_names[0] in r.output
    df = pd.read_csv(out)
    assert list(df.columns) == list(TABLE_COLUMNS)
    assert set(df.district) == set(region.district_names)
    r = CliRunner().invoke(_cli(), ["areas", str(region.labels), "--districts", str(INDIA), "--name-field", "name",
                                    "--out", str(out), "--overwrite"])
    assert r.exit_code == 1
    assert "has no attribute 'name'; the attributes are ['district', 'dt_cen_cd', 'st_nm'" in r.output
