"""Polygonising masks: sieve rule, exactness against rasterio.features.shapes, seams, attributes, CLI."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from scipy import ndimage

from geoseg.classes import ClassTable, CropClass, default_classes
from geoseg.cli.main import GeosegGroup
from geoseg.cli.polygonize import polygonize
from geoseg.core.sieve import label_fields, min_area_pixels, sieve, sieve_halo
from geoseg.core.trace import vectorize
from geoseg.errors import GeosegError, GridMismatchError, NoDataWarning, PolygonizeError
from geoseg.io.fiboa import code_list_id
from geoseg.ops.polygonize import polygonize_raster

from ..geodesic_truth import geod_area_perimeter

UTM = CRS.from_epsg(32643)
T10 = Affine(10, 0, 600_000, 0, -10, 3_380_000)
#: Ground area (m2) of a pixel of T10 (100 km east of UTM 43N's central meridian), by pyproj.Geod
PX_GROUND = float(geod_area_perimeter(shapely.box(600_000, 3_379_990, 600_010, 3_380_000), UTM)[0][0])


def write_mask(path: Path, mask: np.ndarray, transform: Affine = T10, crs: CRS = UTM, nodata: float | None = 255,
               count: int = 1, dtype: str | None = None) -> Path:
    arr = mask if mask.ndim == 3 else mask[None]
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=count,
                       dtype=dtype or arr.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(np.broadcast_to(arr, (count, *arr.shape[1:])).astype(dtype or arr.dtype))
    return path


def reference(mask: np.ndarray, min_pixels: int, exclude: tuple[int, ...] = (), transform: Affine = T10):
    """Whole-raster truth: our sieve on the full array, then GDAL's polygonizer (rasterio.features.shapes)."""
    whole = sieve(mask, min_pixels, nodata=255)
    res = [(shapely.geometry.shape(g), int(v)) for g, v in
           rasterio.features.shapes(whole, mask=whole != 255, transform=transform, connectivity=4)]
    res = [(g, v) for g, v in res if v not in exclude]
    return whole, res


def canonical(geoms, classes):
    wkb = shapely.to_wkb(shapely.normalize(np.asarray(geoms, dtype=object)))
    return sorted(zip(wkb, (int(c) for c in classes)))


def first_pixels(whole: np.ndarray, exclude: tuple[int, ...]) -> list[int]:
    """Row-major index of each component's first pixel, by scipy.ndimage (independent of geoseg)."""
    out = []
    for k in np.unique(whole):
        if k == 255 or k in exclude:
            continue
        lab, n = ndimage.label(whole == k)
        idx = ndimage.minimum(np.arange(whole.size).reshape(whole.shape), lab, np.arange(1, n + 1))
        out.extend(int(i) for i in np.atleast_1d(idx))
    return sorted(out)


@st.composite
def random_masks(draw: st.DrawFn) -> np.ndarray:
    h, w = draw(st.integers(1, 72)), draw(st.integers(1, 72))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    cell = draw(st.integers(1, 9))
    coarse = rng.integers(0, k, (h // cell + 2, w // cell + 2))
    dy, dx = rng.integers(0, cell, 2)
    m = np.kron(coarse, np.ones((cell, cell), int))[dy : dy + h, dx : dx + w]
    m = np.where(rng.random((h, w)) < draw(st.sampled_from([0.0, 0.05, 0.3])), rng.integers(0, k, (h, w)), m)
    for _ in range(draw(st.integers(0, 12))):  # thin streaks: specks and small fields of the largest extent
        r, c, n = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 20)
        if rng.random() < 0.5:
            m[r, c : c + n] = rng.integers(0, k + 1)
        else:
            m[r : r + n, c] = rng.integers(0, k + 1)
    nod = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.02, 0.2]))
    if draw(st.booleans()):  # a nodata stripe, like a collar
        r = rng.integers(0, h)
        nod[r : r + rng.integers(1, 6)] = True
    return np.where(nod, 255, m).astype(np.uint8)


# --------------------------------------------------------------------------------------
# the seam property: block-wise == whole raster
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask=random_masks(), block=st.integers(16, 48), min_pixels=st.sampled_from([1, 2, 3, 5]),
       exclude=st.sampled_from([(), (0,)]))
def test_blockwise_polygons_equal_whole_raster_vectorisation(mask, block, min_pixels, exclude):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mask(Path(tmp) / "m.tif", mask)
        gdf = polygonize_raster(path, min_area_ha=min_pixels / 100 if min_pixels > 1 else 0, block=block,
                                exclude=exclude, workers=2)
    whole, ref = reference(mask, min_pixels, exclude)
    assert len(gdf) == len(ref)
    # the same polygons, vertex for vertex after normalize, each with the same class
    assert canonical(gdf.geometry.values, gdf.class_id) == canonical([g for g, _ in ref], [v for _, v in ref])
    # the same areas to the pixel (ground areas: a pixel of this UTM grid is 100.055 m2 on the
    # ground), and ids from each field's top-left pixel
    pixels = sorted(np.round(gdf.area_ha * 1e4 / PX_GROUND).astype(int))
    assert pixels == sorted(int(round(g.area / 100)) for g, _ in ref)
    assert np.allclose(gdf.area_ha * 1e4, shapely.area(gdf.geometry.values) * PX_GROUND / 100, rtol=1e-5)
    assert sorted(gdf.field_id) == first_pixels(whole, exclude)
    assert shapely.is_valid(gdf.geometry.values).all()
    rings, idx = shapely.get_rings(gdf.geometry.values, return_index=True)
    first = np.r_[True, idx[1:] != idx[:-1]]  # exteriors counter-clockwise, holes clockwise
    assert (shapely.is_ccw(rings) == first).all()


def reference_sieve(mask: np.ndarray, min_pixels: int, passes: int, open_edges: bool) -> np.ndarray:
    """The sieve rule written plainly with scipy.ndimage, pixel by pixel (independent of geoseg).

    Per pass: 4-connected regions of one class among data pixels; a region is a speck when it
    has fewer than ``min_pixels`` pixels and (with ``open_edges``) does not reach the array's
    edge; each speck takes the class with the most pixel edges shared with large regions (ties:
    the lowest class), all specks at once; specks with no large neighbour stay.
    """
    out = mask.copy()
    h, w = out.shape
    for _ in range(passes):
        lab = np.zeros((h, w), np.int64)
        n = 0
        for k in np.unique(out[out != 255]):
            lk, nk = ndimage.label(out == k)
            lab[lk > 0] = lk[lk > 0] + n
            n += nk
        size = np.bincount(lab.ravel(), minlength=n + 1)
        large = size >= min_pixels
        if open_edges:
            large[np.unique(np.r_[lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
        large[0] = False
        votes: dict[int, dict[int, int]] = {}
        for r in range(h):
            for c in range(w):
                a = lab[r, c]
                if a == 0 or large[a]:
                    continue
                for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    if 0 <= rr < h and 0 <= cc < w and large[lab[rr, cc]]:
                        v = votes.setdefault(a, {})
                        v[int(out[rr, cc])] = v.get(int(out[rr, cc]), 0) + 1
        if not votes:
            break
        new = out.copy()
        for a, v in votes.items():
            new[lab == a] = min(v, key=lambda k: (-v[k], k))
        out = new
    return out


@settings(max_examples=60, deadline=None)
@given(mask=random_masks(), min_pixels=st.integers(2, 12), passes=st.integers(1, 3), open_edges=st.booleans())
def test_sieve_equals_a_plain_reference(mask, min_pixels, passes, open_edges):
    """The run-length sieve (only speck pixels expanded) against the rule written pixel by pixel."""
    got = sieve(mask, min_pixels, nodata=255, passes=passes, open_edges=open_edges)
    assert np.array_equal(got, reference_sieve(mask, min_pixels, passes, open_edges))


@settings(max_examples=80, deadline=None)
@given(mask=random_masks(), min_pixels=st.integers(2, 16), data=st.data())
def test_windowed_sieve_equals_whole_sieve(mask, min_pixels, data):
    """The sieve's core decisions need only the halo: any window + halo gives the whole array's result."""
    h, w = mask.shape
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    r1 = data.draw(st.integers(r0 + 1, h))
    c1 = data.draw(st.integers(c0 + 1, w))
    halo = sieve_halo(min_pixels)
    padded = np.pad(mask, halo, constant_values=255)  # outside the raster: nodata, as the block reader pads
    window = padded[r0 : r1 + 2 * halo, c0 : c1 + 2 * halo]
    got = sieve(window, min_pixels, nodata=255, open_edges=True)[halo:-halo, halo:-halo]
    assert np.array_equal(got, sieve(mask, min_pixels, nodata=255)[r0:r1, c0:c1])


def test_halo_must_cover_a_speck_and_its_small_neighbour():
    """Worst case for one pass: a speck of N-1 pixels leaving the core, then a small neighbour of N-1 more.

    Whether that neighbour is small (no vote) or large (a vote for class 0, which wins the
    tie) is only visible 2N - 2 pixels past the core edge: sieve_halo covers it, 2N - 3 does not.
    """
    n = 6
    m = np.full((30, 9), 255, np.uint8)
    m[:4, :] = 1  # a large field of class 1 in the core (rows 0..3)
    m[3, 4] = 3  # the speck starts on the core's last row ...
    m[4:8, 4] = 3  # ... and runs n - 1 = 5 pixels down
    m[3, 3] = 255  # its only large neighbour: class 1 to its right
    m[2, 4] = 255
    m[8:13, 4] = 0  # a small field of class 0 below it, n - 1 pixels long
    whole = sieve(m, n, passes=1)
    assert whole[3, 4] == 1 and (whole[4:8, 4] == 1).all() and (whole[8:13, 4] == 0).all()

    def windowed(halo: int) -> np.ndarray:
        window = np.pad(m, halo, constant_values=255)[: 4 + 2 * halo]  # core = rows 0..3
        return sieve(window, n, passes=1, open_edges=True)[halo:-halo, halo:-halo]

    assert np.array_equal(windowed(sieve_halo(n, 1)), whole[:4])
    assert windowed(2 * n - 3)[3, 4] == 0  # too short: the small field looks cut, hence large


# --------------------------------------------------------------------------------------
# the sieve rule
def test_speck_takes_the_class_it_shares_most_edges_with_among_large_neighbours():
    m = np.array(
        [
            [1, 1, 1, 2, 2, 2],
            [1, 1, 3, 2, 2, 2],
            [1, 1, 3, 2, 2, 2],
            [1, 1, 1, 2, 2, 2],
        ],
        np.uint8,
    )
    out = sieve(m, 3)
    # the 2-pixel speck of 3 touches class 1 on 4 edges (left, top, bottom) and class 2 on 2
    assert out[1, 2] == 1 and out[2, 2] == 1
    assert (out[:, 3:] == 2).all()


def test_ties_go_to_the_lowest_class_and_nodata_never_changes_or_votes():
    m = np.array([[1, 1, 9, 2, 2], [1, 1, 5, 2, 2], [255, 255, 255, 255, 255]], np.uint8)
    out = sieve(m, 3)
    assert out[1, 2] == 1  # two edges to 1 and two to 2: the lower id wins
    assert out[0, 2] == 1
    assert (out[2] == 255).all()
    # a speck enclosed by nodata has no large neighbour: it stays
    iso = np.full((3, 3), 255, np.uint8)
    iso[1, 1] = 4
    assert sieve(iso, 5)[1, 1] == 4


def test_second_pass_absorbs_specks_enclosed_by_specks():
    m = np.full((7, 7), 1, np.uint8)
    m[2:5, 2:5] = [[2, 3, 2], [3, 4, 3], [2, 3, 2]]  # a 3x3 checkerboard of specks in a large field
    one = sieve(m, 2, passes=1)
    assert one[3, 3] == 4  # its only neighbours are specks: kept in the first pass
    assert (sieve(m, 2, passes=2) == 1).all()


def test_component_of_exactly_the_minimum_area_is_kept():
    m = np.ones((6, 6), np.uint8)
    m[0, :4] = 2  # 4 pixels = 0.04 ha at 10 m
    assert min_area_pixels(0.04, 100.0) == 4
    assert (sieve(m, min_area_pixels(0.04, 100.0))[0, :4] == 2).all()
    assert (sieve(m, min_area_pixels(0.05, 100.0))[0, :4] == 1).all()


def test_min_area_conversion_and_bad_values():
    assert min_area_pixels(0.1, 100.0) == 10
    assert min_area_pixels(0.1, 400.0) == 3  # 20 m pixels: 0.12 ha kept, 0.08 ha sieved
    assert min_area_pixels(0, 100.0) == 1
    with pytest.raises(PolygonizeError, match=r"min_area_ha is -0.5; expected 0 \(no sieving\) or a positive"):
        min_area_pixels(-0.5, 100.0)


# --------------------------------------------------------------------------------------
# vectorising arrays
def test_diagonal_touches_give_valid_polygons_identical_to_gdal():
    # a field that touches itself diagonally around a hole, and two fields of one class touching at a corner
    m = np.array(
        [
            [1, 1, 1, 0, 2, 0],
            [1, 0, 0, 1, 0, 2],
            [1, 0, 1, 1, 2, 0],
            [1, 1, 1, 0, 0, 2],
        ],
        np.uint8,
    )
    f = vectorize(m, T10, exclude=[0])
    assert shapely.is_valid(f.geometry).all()
    _, ref = reference(m, 1, (0,))
    assert canonical(f.geometry, f.class_id) == canonical([g for g, _ in ref], [v for _, v in ref])
    ring = f.geometry[f.first_pixel == 0][0]
    assert len(ring.interiors) == 1  # the hole, touching the exterior at one point


def test_label_fields_is_four_connected_and_skips_nodata_and_excluded():
    m = np.array([[1, 0, 1], [0, 1, 255], [1, 1, 2]], np.uint8)
    lab, cls = label_fields(m, m != 255, exclude=[0])
    assert lab[0, 0] != lab[1, 1] and lab[0, 2] != lab[1, 1]  # diagonal neighbours are separate fields
    assert lab[1, 1] == lab[2, 0] == lab[2, 1]
    assert lab[1, 2] == 0 and lab[0, 1] == 0
    assert sorted(cls.tolist()) == [1, 1, 1, 2]


def test_integer_classes_beyond_uint8():
    m = np.array([[70000, 70000], [3, 70000]], np.int32)
    f = vectorize(m, T10, nodata=None)
    assert sorted(f.class_id.tolist()) == [3, 70000]
    assert sorted(f.pixels.tolist()) == [1, 3]


def test_float_mask_is_refused_with_a_hint():
    with pytest.raises(PolygonizeError, match="expected integer class codes"):
        vectorize(np.zeros((2, 2), np.float32), T10)


# --------------------------------------------------------------------------------------
# the raster driver: attributes
@pytest.fixture()
def field_mask(tmp_path: Path) -> tuple[Path, np.ndarray]:
    m = np.zeros((60, 80), np.uint8)
    m[5:25, 10:40] = 1  # 600 px of rice = 6 ha
    m[30:50, 10:70] = 2  # 1200 px of wheat
    m[35:40, 20:25] = 255  # a cloud hole in the wheat
    m[55:60, 0:80] = 255  # collar
    m[10, 50] = 3  # a one-pixel speck
    return write_mask(tmp_path / "mask.tif", m), m


def test_attributes_areas_perimeters_and_stable_ids(field_mask):
    path, m = field_mask
    a = polygonize_raster(path, classes=default_classes(), block=16, run_id="run-7", model_id="unet-1")
    b = polygonize_raster(path, classes=default_classes(), block=1024)
    assert list(a.columns) == ["id", "collection", "field_id", "class_id", "crop:code", "crop:name",
                               "crop:code_list", "area_ha", "metrics:area", "metrics:perimeter",
                               "determination:method", "determination:datetime", "determination:details", "geometry",
                               "run_id", "model_id"]
    assert a.crs == UTM
    assert a["crop:name"].tolist() == ["rice", "wheat"]  # background excluded, the speck sieved into background
    assert a["crop:code"].tolist() == ["1", "2"] and a.class_id.tolist() == [1, 2]
    # ground areas and geodesic perimeters: on this UTM grid, 6.0 and 11.75 ha and 1,000 and 1,800 m
    # of grid are 0.055 % and 0.027 % more on the ground
    area, perim = geod_area_perimeter(a.geometry.values, UTM)
    assert a.area_ha.to_numpy() * 1e4 == pytest.approx(area, rel=1e-7)
    assert a["metrics:perimeter"].to_numpy() == pytest.approx(perim, rel=1e-7)
    assert a.area_ha.to_numpy() == pytest.approx(np.array([6.0, 11.75]) * 1.00055, rel=1e-5)
    assert a["metrics:perimeter"].to_numpy() == pytest.approx(np.array([1000, 1800]) * 1.000275, rel=1e-5)
    assert a["metrics:area"].dtype == np.float32  # fiboa's type: the same area in m2
    assert a["metrics:area"].to_numpy() == pytest.approx(a.area_ha.to_numpy() * 1e4, rel=1e-7)
    assert a.field_id.tolist() == [5 * 80 + 10, 30 * 80 + 10]
    assert a.id.tolist() == ["410", "2410"]
    assert a.field_id.tolist() == b.field_id.tolist()
    # each block sums its own pixels' areas: other blocks, other rounding in the last bits only
    assert np.allclose(a.area_ha, b.area_ha, rtol=1e-12, atol=0)
    assert (a.run_id == "run-7").all() and (a.model_id == "unet-1").all()
    assert (a.collection == "run-7").all() and (b.collection == "geoseg").all()
    assert (a["determination:method"] == "auto-imagery").all()
    assert a["determination:datetime"].isna().all()  # imagery date not given: unknown, not the run's time
    assert a["determination:details"][0] == "geoseg: traced from the class mask mask.tif (model unet-1)"
    # the class table's code list: its ids and names hashed, the same on every run
    assert (a["crop:code_list"] == code_list_id(default_classes())).all()
    assert code_list_id(default_classes()) != code_list_id(ClassTable(
        tuple(CropClass(c.id, c.name + "x", c.color, c.crop) for c in default_classes())))


def test_observation_time_is_the_determination_datetime(field_mask):
    path, _ = field_mask
    a = polygonize_raster(path, classes=default_classes(), observed="2024-10-31")
    b = polygonize_raster(path, classes=default_classes(), observed="2024-10-31T10:30:00+05:30")
    assert a["determination:datetime"].tolist() == [pd.Timestamp("2024-10-31T00:00:00Z")] * 2
    assert b["determination:datetime"].tolist() == [pd.Timestamp("2024-10-31T05:00:00Z")] * 2
    assert str(a["determination:datetime"].dtype) == "datetime64[ms, UTC]"
    for bad in ("last autumn", "2024-13-01", "0999-01-01"):
        with pytest.raises(PolygonizeError, match=r"the observation time is .*; expected a date or time of the "
                                                  r"imagery, e\.g\. 2024-10-31"):
            polygonize_raster(path, observed=bad)


def test_no_sieving_keeps_the_speck_and_nodata_is_never_a_polygon(field_mask):
    path, m = field_mask
    gdf = polygonize_raster(path, min_area_ha=0, exclude=(), block=32)
    assert 3 in gdf.class_id.tolist()
    assert 255 not in gdf.class_id.tolist()
    assert gdf.area_ha.sum() * 1e4 == pytest.approx(geod_area_perimeter(gdf.geometry.values, UTM)[0].sum(), rel=1e-7)
    # the pixels, counted in the top-left pixel's area (which changes by 2e-6 across these 800 m)
    assert gdf.area_ha.sum() * 1e4 / PX_GROUND == pytest.approx((m != 255).sum(), rel=1e-5)


def test_mean_confidence_per_field(field_mask, tmp_path):
    path, m = field_mask
    conf = np.zeros(m.shape, np.uint8)
    conf[5:25, 10:40] = 204  # 0.8
    conf[30:50, 10:40], conf[30:50, 40:70] = 255, 0  # half 1.0, half nodata
    cpath = write_mask(tmp_path / "conf.tif", conf, nodata=0)
    gdf = polygonize_raster(path, confidence=cpath, block=16, exclude=(0,))
    assert gdf.confidence.tolist() == pytest.approx([0.8, 1.0])


def test_confidence_on_another_grid_is_refused(field_mask, tmp_path):
    path, m = field_mask
    cpath = write_mask(tmp_path / "conf.tif", np.zeros((10, 10), np.uint8), nodata=0)
    with pytest.raises(GridMismatchError, match="is not on the grid of"):
        polygonize_raster(path, confidence=cpath)


def test_district_of_largest_overlap(field_mask, tmp_path):
    import geopandas as gpd

    path, m = field_mask
    x0, y0 = T10.c, T10.f
    # west district covers the rice field and a third of the wheat; east the other two thirds
    d = gpd.GeoDataFrame({"name": ["West", "East"]},
                         geometry=[shapely.box(x0, y0 - 600, x0 + 300, y0), shapely.box(x0 + 300, y0 - 600, x0 + 800, y0)],
                         crs=UTM).to_crs("EPSG:4326")
    d.to_file(tmp_path / "d.gpkg")
    gdf = polygonize_raster(path, districts=tmp_path / "d.gpkg", name_field="name", exclude=(0,))
    assert gdf.district.tolist() == ["West", "East"]


def test_exclude_by_name_needs_names_and_unknown_names_fail(field_mask, tmp_path):
    path, m = field_mask
    with pytest.raises(PolygonizeError, match="the mask carries no class names; pass a class file"):
        polygonize_raster(path, exclude=("background",))
    with pytest.raises(PolygonizeError, match=r"no class named 'barley' to exclude; the classes are \['background'"):
        polygonize_raster(path, classes=default_classes(), exclude=("barley",))
    by_id = polygonize_raster(path, exclude=(0, 2))
    assert by_id.class_id.tolist() == [1]
    assert by_id["crop:name"].tolist() == ["class_1"]


def test_foreign_raster_with_nodata_override(tmp_path):
    """Another tool's uint16 classes 1..3 with 0 as nodata but no nodata tag: --nodata 0 makes 0 no field."""
    m = np.zeros((30, 30), np.uint16)
    m[5:15, 5:15] = 3
    m[15:25, 5:25] = 1
    path = write_mask(tmp_path / "other.tif", m, nodata=None)
    gdf = polygonize_raster(path, nodata=0, exclude=(), min_area_ha=0)
    assert sorted(gdf.class_id.tolist()) == [1, 3]
    gdf = gdf.sort_values("area_ha")
    assert gdf.area_ha.to_numpy() * 1e4 / PX_GROUND == pytest.approx([100, 200], rel=1e-5)  # pixels

    with pytest.warns(NoDataWarning, match="no nodata value set; every pixel is taken as observed"):
        assert 0 in polygonize_raster(path, exclude=(), min_area_ha=0).class_id.tolist()


def test_multiband_and_float_rasters_are_refused(tmp_path):
    p = write_mask(tmp_path / "rgb.tif", np.zeros((1, 8, 8), np.uint8), count=3)
    with pytest.raises(PolygonizeError, match="has 3 bands; expected a single-band class mask"):
        polygonize_raster(p)
    p = write_mask(tmp_path / "prob.tif", np.zeros((8, 8), np.float32), nodata=None)
    with pytest.raises(PolygonizeError, match="has float32 pixels; expected integer class codes"):
        polygonize_raster(p)
    with pytest.raises(GeosegError, match="file not found"):
        polygonize_raster(tmp_path / "missing.tif")


def test_simplification_keeps_topology_and_areas_within_tolerance(tmp_path):
    yy, xx = np.mgrid[0:80, 0:80]
    m = np.where((xx - 40) ** 2 + (yy - 40) ** 2 < 30**2, 1, 2).astype(np.uint8)  # a staircase disc in a field
    path = write_mask(tmp_path / "m.tif", m)
    raw = polygonize_raster(path, exclude=())
    simp = polygonize_raster(path, exclude=(), simplify_m=15, max_area_change=0.01)
    assert shapely.is_valid(simp.geometry.values).all()
    assert shapely.get_num_coordinates(simp.geometry.values).sum() < shapely.get_num_coordinates(raw.geometry.values).sum()
    change = np.abs(shapely.area(simp.geometry.values) - raw.area_ha * 1e4) / (raw.area_ha * 1e4)
    assert change.max() <= 0.01
    assert simp.area_ha.tolist() == raw.area_ha.tolist()  # reported areas stay the pixel areas
    # shared edges stay shared: no gaps or overlaps between the two fields
    assert shapely.union_all(simp.geometry.values).area == pytest.approx(80 * 80 * 100)


# --------------------------------------------------------------------------------------
# geographic CRS: true ground areas, never square degrees
def test_geographic_mask_areas_are_geodesic(tmp_path):
    res = 0.0001  # about 11 m x 9.5 m at 30.9 N
    lon0, lat0 = 75.8, 30.95
    m = np.zeros((50, 60), np.uint8)
    m[10:30, 5:35] = 1  # 20 rows x 30 columns
    path = write_mask(tmp_path / "geo.tif", m, transform=Affine(res, 0, lon0, 0, -res, lat0), crs=CRS.from_epsg(4326))
    gdf = polygonize_raster(path, exclude=(0,), min_area_ha=0)
    field = gdf[gdf.class_id == 1].iloc[0]
    w, e = lon0 + 5 * res, lon0 + 35 * res
    n, s = lat0 - 10 * res, lat0 - 30 * res
    # by hand: the WGS 84 ellipsoid's area between two parallels over a span of longitude,
    # A = b^2 dlambda / 2 [q(n) - q(s)], q(phi) = sin/(1 - e^2 sin^2) + ln((1 + e sin)/(1 - e sin)) / (2e)
    a, f = 6378137.0, 1 / 298.257223563
    b, e2 = a * (1 - f), f * (2 - f)
    ecc = math.sqrt(e2)

    def q(phi: float) -> float:
        sp = math.sin(math.radians(phi))
        return sp / (1 - e2 * sp * sp) + math.log((1 + ecc * sp) / (1 - ecc * sp)) / (2 * ecc)

    by_hand = b * b * math.radians(e - w) / 2 * (q(n) - q(s))
    assert field.area_ha * 1e4 == pytest.approx(by_hand, rel=1e-9)
    # and pyproj's geodesic polygon (geodesic edges; the parallels differ by < 1e-8 here)
    geod = pyproj.Geod(ellps="WGS84")
    area, perim = geod.polygon_area_perimeter([w, e, e, w], [n, n, s, s])
    assert field.area_ha * 1e4 == pytest.approx(abs(area), rel=1e-7)
    assert field["metrics:perimeter"] == pytest.approx(perim, rel=1e-6)
    assert 70_000 > field.area_ha * 1e4 > 60_000  # about 6.4 ha, not 6e-6 square degrees
    # the MMU is in hectares on a geographic grid too
    assert polygonize_raster(path, exclude=(0,), min_area_ha=10).empty


# --------------------------------------------------------------------------------------
# Dask: a distributed client gives the same fields as local threads
def test_distributed_client_matches_local_threads(field_mask):
    from dask.distributed import Client, LocalCluster

    path, _ = field_mask
    local = polygonize_raster(path, block=16, exclude=(0,))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        dist = polygonize_raster(path, block=16, exclude=(0,), client=client)
    assert dist.field_id.tolist() == local.field_id.tolist()
    assert shapely.equals(dist.geometry.values, local.geometry.values).all()


# --------------------------------------------------------------------------------------
# CLI
def _cli() -> click.Group:
    @click.group(cls=GeosegGroup)
    def cli() -> None:
        pass

    cli.add_command(polygonize)
    return cli


def test_cli_polygonize_writes_fields_and_reports(field_mask, tmp_path):
    path, _ = field_mask
    classes = tmp_path / "classes.yaml"
    classes.write_text(ClassTable((CropClass(0, "background", "#bdbdbd", False), CropClass(1, "rice", "#1a9850"),
                                   CropClass(2, "wheat", "#fee08b"), CropClass(3, "maize", "#fc8d59"))).to_yaml())
    out = tmp_path / "fields.gpkg"
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(out), "--classes", str(classes),
                                    "--min-area-ha", "0.05", "--observed", "2024-10-31", "--run-id", "kharif-24"])
    assert r.exit_code == 0, r.output
    assert "2 fields (specks under 5 px sieved)" in r.output and "wheat 11.8" in r.output
    import geopandas as gpd

    back = gpd.read_file(out, layer="fields")
    assert back["crop:name"].tolist() == ["rice", "wheat"] and back.collection.tolist() == ["kharif-24"] * 2
    assert back["determination:datetime"].tolist() == [pd.Timestamp("2024-10-31T00:00:00Z")] * 2
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(tmp_path / "other.gpkg"), "--observed", "soon"])
    assert r.exit_code == 1 and "the observation time is 'soon'; expected a date or time" in r.output
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(tmp_path / "f.kml")])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "cannot tell the output format from the extension '.kml'" in r.output
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(out), "--min-area-ha", "-1", "--overwrite"])
    assert r.exit_code == 1 and "min_area_ha is -1.0; expected 0 (no sieving)" in r.output


@pytest.mark.parametrize("use_client", [False, True])
def test_progress_counts_every_block(field_mask, use_client):  # type: ignore[no-untyped-def]
    field_mask, _ = field_mask
    calls: list[tuple[int, int]] = []
    if use_client:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cl, \
                Client(cl) as client:
            gdf = polygonize_raster(field_mask, block=32, client=client, progress=lambda d, t: calls.append((d, t)))
    else:
        gdf = polygonize_raster(field_mask, block=32, workers=2, progress=lambda d, t: calls.append((d, t)))
    total = calls[-1][1]
    assert total > 1 and [d for d, _ in calls] == list(range(1, total + 1)) and {t for _, t in calls} == {total}
    assert len(gdf) == len(polygonize_raster(field_mask, block=32, workers=1)) > 0


def test_fields_do_not_depend_on_the_number_of_threads(field_mask):  # type: ignore[no-untyped-def]
    path, _ = field_mask
    one = polygonize_raster(path, block=16, workers=1, exclude=(), min_area_ha=0)
    three = polygonize_raster(path, block=16, workers=3, exclude=(), min_area_ha=0)
    assert one.field_id.tolist() == three.field_id.tolist() and one.area_ha.tolist() == three.area_ha.tolist()
    assert shapely.to_wkb(one.geometry.values).tolist() == shapely.to_wkb(three.geometry.values).tolist()


@pytest.mark.skipif(not (__import__("platform").system() == "Linux" and __import__("platform").libc_ver()[0] == "glibc"),
                    reason="glibc's allocator (mallopt); resident memory from /proc")
def test_polygonise_blocks_keep_freed_memory_under_dasks_trim_threshold(tmp_path):  # type: ignore[no-untyped-def]
    """Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536: every freed array goes back to the
    kernel and the next faults in fresh pages (polygonising twice as slow). A block task tunes the
    allocator first, so after one a freed 200 MB array stays resident for reuse."""
    import os
    import subprocess
    import sys

    path = tmp_path / "mask.tif"
    write_mask(path, np.random.default_rng(0).integers(0, 3, (64, 64)).astype("uint8"))
    code = (
        "import numpy as np, os, sys\n"
        "from geoseg.ops.polygonize import polygonize_raster\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20\n"
        "if sys.argv[1] == 'polygonise': polygonize_raster(sys.argv[2], workers=1)\n"
        "before = rss(); a = np.ones(200 << 20, np.uint8); del a; print(rss() - before)\n"
    )
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    env.pop("GEOSEG_MALLOC", None)
    kept = {}
    for what in ("nothing", "polygonise"):
        out = subprocess.run([sys.executable, "-c", code, what, str(path)], env=env, capture_output=True, text=True,
                             check=True)
        kept[what] = int(out.stdout.strip().splitlines()[-1])
    assert kept["nothing"] < 20  # the trim threshold returns it at once
    assert kept["polygonise"] > 150  # MiB kept for the next block
