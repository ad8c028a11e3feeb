"""geoseg composite: a season of Sentinel-2 L2A products to period composites on one grid.

The products are written from known surfaces in the real layouts (tests/season_products.py);
every composite is compared with a plain numpy computation of the same rule.
"""

from __future__ import annotations

import json
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy import ndimage

from geoseg.errors import SeasonError, SeasonWarning, SourceReadError
from geoseg.ops.composite import clear_path_for, composite_season
from geoseg.parallel import Runner
from tests.season_products import mean20, scl_of, write_item, write_safe

CRS43 = "EPSG:32643"
ORIGIN = (600000.0, 3400000.0)
T10 = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
H = W = 64


def _surface(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # reflectance on the 1e-4 grid, so DN round trips are exact
    return {b: np.round(rng.uniform(0.02, 0.5, (H, W)), 4) for b in ("B02", "B04", "B08")} | \
        {"B11": np.full((H, W), np.round(rng.uniform(0.1, 0.4), 4))}


def _clouds(rng: np.random.Generator, frac: float) -> np.ndarray:
    c20 = rng.random((H // 2, W // 2)) < frac
    return np.repeat(np.repeat(c20, 2, 0), 2, 1)


def _season(tmp: Path, seed: int = 0, days=("2024-06-03", "2024-06-08", "2024-06-13", "2024-06-18",
                                             "2024-07-03", "2024-07-13", "2024-07-23")):
    rng = np.random.default_rng(seed)
    truth = []
    for i, d in enumerate(days):
        refl = _surface(rng)
        clouds = _clouds(rng, 0.35)
        write_item(tmp, f"S2A_43RFQ_{d.replace('-', '')}_0_L2A", d, CRS43, T10, refl, scl_of(clouds),
                   baseline="05.10" if i % 2 else "04.00", platform="sentinel-2a" if i % 2 else "sentinel-2b")
        truth.append((d, refl, clouds))
    return truth


def _delivered(refl: np.ndarray, day: str, band: str) -> np.ndarray:
    """The reflectance a product delivers: DN (rounded, 20 m bands as 2 x 2 means) back through
    its scale and offset (tests/season_products.py writes baselines 04.00/05.10: -1000 DN)."""
    dn = np.rint((mean20(refl) if band == "B11" else refl) * 10000) + 1000
    r = dn * 1e-4 + -0.1
    return np.repeat(np.repeat(r, 2, 0), 2, 1) if band == "B11" else r


def _expected(truth, month: str, band: str) -> tuple[np.ndarray, np.ndarray]:
    looks = [(_delivered(r[band], d, band), c) for d, r, c in truth if d.startswith(month)]
    stack = np.stack([np.where(c, np.nan, r) for r, c in looks])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=0)
    dn = np.where(np.isfinite(med), np.clip(np.rint(med * 10000), 1, 65535), 0).astype(np.uint16)
    return dn, np.isfinite(stack).sum(axis=0)


def test_monthly_median_equals_numpy_on_every_pixel(tmp_path):
    truth = _season(tmp_path / "items")
    out = tmp_path / "season.tif"
    res = composite_season(out, [tmp_path / "items"], bands="B02,B04,B08,B11", start="2024-06-01",
                           end="2024-08-01", runner=Runner(workers=2), block=48)
    assert res.bands == [f"{m}_{b}" for m in ("2024-06", "2024-07") for b in ("B02", "B04", "B08", "B11")]
    assert res.looks == [4, 3] and res.scenes == 7 and res.empty_periods == []
    with rasterio.open(out) as src:
        assert src.crs.to_string() == CRS43 and src.transform == T10 and src.shape == (H, W)
        assert list(src.descriptions) == res.bands and src.nodata == 0 and src.dtypes[0] == "uint16"
        assert json.loads(src.tags()["GEOSEG_PERIODS"])[0] == {"label": "2024-06", "start": "2024-06-01",
                                                                "end": "2024-07-01", "looks": 4}
        got = src.read()
    with rasterio.open(clear_path_for(out)) as src:
        clear = src.read()
        assert list(src.descriptions) == ["2024-06_clear", "2024-07_clear"]
    for p, month in enumerate(("2024-06", "2024-07")):
        for b, band in enumerate(("B02", "B04", "B08", "B11")):
            exp, n = _expected(truth, month, band)
            np.testing.assert_array_equal(got[p * 4 + b], exp, err_msg=f"{month} {band}")
        np.testing.assert_array_equal(clear[p], n)
    assert (clear[0] == 0).any() and (got[0][clear[0] == 0] == 0).all()  # no clear look: nodata


def test_statistics_mean_and_last(tmp_path):
    truth = _season(tmp_path / "items", seed=3)
    out = tmp_path / "mean.tif"
    composite_season(out, [tmp_path / "items"], bands="B04", start="2024-06-01", end="2024-07-01", statistic="mean")
    looks = np.stack([np.where(c, np.nan, _delivered(r["B04"], d, "B04")) for d, r, c in truth if d.startswith("2024-06")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(looks, axis=0)
    with rasterio.open(out) as src:
        got = src.read(1)
    np.testing.assert_array_equal(got, np.where(np.isfinite(mean), np.clip(np.rint(mean * 1e4), 1, None), 0))


def test_identical_surface_old_and_new_baseline_gives_same_reflectance(tmp_path):
    rng = np.random.default_rng(7)
    refl = _surface(rng)
    clear = np.zeros((H, W), bool)
    write_item(tmp_path / "a", "S2A_43RFQ_20210610_0_L2A", "2021-06-10", CRS43, T10, refl, scl_of(clear),
               baseline="03.01", layout="pc")
    write_item(tmp_path / "b", "S2A_43RFQ_20230610_0_L2A", "2023-06-10", CRS43, T10, refl, scl_of(clear),
               baseline="05.09", layout="pc")
    with rasterio.open(tmp_path / "a/S2A_43RFQ_20210610_0_L2A/B04.tif") as a, \
            rasterio.open(tmp_path / "b/S2A_43RFQ_20230610_0_L2A/B04.tif") as b:
        assert (b.read(1).astype(int) - a.read(1)).tolist() == np.full((H, W), 1000).tolist()  # as delivered
    outs = []
    for name, year in (("a", 2021), ("b", 2023)):
        out = tmp_path / f"{name}.tif"
        composite_season(out, [tmp_path / name], bands="B02,B04,B08", start=f"{year}-06-01", end=f"{year}-07-01")
        with rasterio.open(out) as src:
            outs.append(src.read())
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0][1], np.rint(refl["B04"] * 1e4).astype(np.uint16))


def test_raster_bands_offset_is_used_and_baseline_missing_is_refused(tmp_path):
    rng = np.random.default_rng(8)
    refl = _surface(rng)
    clear = np.zeros((H, W), bool)
    # Earth Search layout: raster:bands says offset -0.1 although no baseline property is given
    write_item(tmp_path / "es", "S2A_43RFQ_20230610_0_L2A", "2023-06-10", CRS43, T10, refl, scl_of(clear),
               baseline=None, layout="earthsearch")
    out = tmp_path / "es.tif"
    composite_season(out, [tmp_path / "es"], bands="B04", start="2023-06-01", end="2023-07-01")
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), np.rint(refl["B04"] * 1e4).astype(np.uint16))
    # no raster:bands and no baseline anywhere: refused, naming the item
    write_item(tmp_path / "bare", "S2A_43RFQ_20230611_0_L2A", "2023-06-11", CRS43, T10, refl, scl_of(clear),
               baseline=None, layout="pc")
    with pytest.raises(SeasonError, match=r"S2A_43RFQ_20230611_0_L2A.*processing baseline.*s2:processing_baseline"):
        composite_season(tmp_path / "bare.tif", [tmp_path / "bare"], bands="B04")
    assert not (tmp_path / "bare.tif").exists()


def test_scl_classes_and_dilation(tmp_path):
    rng = np.random.default_rng(9)
    refl_a, refl_b = _surface(rng), _surface(rng)
    cloud = np.zeros((H, W), bool)
    cloud[20:24, 30:34] = True  # two by two 20 m pixels
    write_item(tmp_path / "i", "S2A_43RFQ_20240605_0_L2A", "2024-06-05", CRS43, T10, refl_a, scl_of(cloud))
    write_item(tmp_path / "i", "S2A_43RFQ_20240615_0_L2A", "2024-06-15", CRS43, T10, refl_b,
               scl_of(np.zeros((H, W), bool)), platform="sentinel-2b")
    for dilate in (0, 2):
        out = tmp_path / f"d{dilate}.tif"
        composite_season(out, [tmp_path / "i"], bands="B04", start="2024-06-01", end="2024-07-01", dilate=dilate)
        with rasterio.open(clear_path_for(out)) as src:
            n = src.read(1)
        # reference: within `dilate` pixels (Euclidean, centre to centre) of a cloud pixel
        masked = ndimage.distance_transform_edt(~cloud) <= dilate
        np.testing.assert_array_equal(n, np.where(masked, 1, 2))
        with rasterio.open(out) as src:
            got = src.read(1)
        np.testing.assert_array_equal(got[masked], np.rint(refl_b["B04"][masked] * 1e4).astype(np.uint16))


def test_two_utm_zones_onto_one_grid(tmp_path):
    """The same ground delivered in zone 43 and in zone 44 lands on one zone-43 grid; a smooth
    (linear) surface reprojected from zone 44 matches the zone-43 truth to bilinear accuracy."""
    from pyproj import Transformer

    # a site at 78.0 E: the zone boundary; a linear surface in lon/lat, sampled in each zone
    def surface(crs: str, t: Affine, h: int, w: int) -> np.ndarray:
        cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        x, y = t * (cols, rows)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        return np.round(0.1 + (lon - 77.99) * 20 + (lat - 30.0) * 10, 4)

    tr43 = Transformer.from_crs("EPSG:4326", CRS43, always_xy=True)
    x43, y43 = tr43.transform(77.995, 30.005)
    t43 = Affine(10, 0, np.floor(x43 / 20) * 20, 0, -10, np.ceil(y43 / 20) * 20)
    tr44 = Transformer.from_crs("EPSG:4326", "EPSG:32644", always_xy=True)
    x44, y44 = tr44.transform(77.99, 30.01)
    t44 = Affine(10, 0, np.floor(x44 / 20) * 20, 0, -10, np.ceil(y44 / 20) * 20)
    none = np.zeros((128, 128), bool)
    for crs, t, name, sat in ((CRS43, t43, "S2B_43RFQ_20240610_0_L2A", "sentinel-2b"),
                              ("EPSG:32644", t44, "S2A_44RKV_20240612_0_L2A", "sentinel-2a")):
        refl = {"B04": surface(crs, t, 128, 128)}
        write_item(tmp_path / name[4:9], name, name[10:14] + "-" + name[14:16] + "-" + name[16:18], crs, t, refl,
                   scl_of(none))
    grids = []
    for zone in ("43RFQ", "44RKV"):
        out = tmp_path / f"{zone}.tif"
        res = composite_season(out, [tmp_path / zone], bands="B04", crs=CRS43, area="77.996,30.0,78.001,30.004",
                               periods="season", start="2024-06-01", end="2024-07-01")
        assert res.crs == CRS43
        with rasterio.open(out) as src:
            grids.append((src.transform, src.shape, src.read(1).astype(float) / 1e4))
    (ta, sa, a), (tb, sb, b) = grids
    assert ta == tb and sa == sb  # one grid, whichever zone the products came in
    assert ta.a == 10 and ta.e == -10 and ta.c % 10 == 0 and ta.f % 10 == 0  # pixel edges on 10 m multiples
    truth = surface(CRS43, ta, *sa)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(a[inner] - truth[inner]).max() < 2e-4  # zone 43: the file's own pixels (rounding only)
    assert np.abs(b[inner] - truth[inner]).max() < 3e-4  # zone 44: bilinear onto zone 43 (a linear surface: rounding)


def test_safe_products_folder_and_zip(tmp_path):
    import shutil

    rng = np.random.default_rng(11)
    refl = _surface(rng)
    clouds = _clouds(rng, 0.3)
    safe = write_safe(tmp_path / "safe", "2024-06-10", CRS43, T10, refl, scl_of(clouds), baseline="05.10")
    out = tmp_path / "safe.tif"
    composite_season(out, [safe], bands="B02,B04,B08,B11", periods="season", start="2024-06-01", end="2024-07-01")
    with rasterio.open(out) as src:
        got = src.read()
    exp = np.where(clouds, 0, np.rint(refl["B04"] * 1e4)).astype(np.uint16)
    np.testing.assert_array_equal(got[1], exp)
    zipped = shutil.make_archive(str(tmp_path / "zipped" / safe.stem), "zip", safe.parent, safe.name)
    out2 = tmp_path / "zip.tif"
    composite_season(out2, [zipped], bands="B02,B04,B08,B11", periods="season", start="2024-06-01", end="2024-07-01")
    with rasterio.open(out2) as src:
        np.testing.assert_array_equal(src.read(), got)
    bad = write_safe(tmp_path / "bad", "2024-06-11", CRS43, T10, refl, scl_of(clouds), baseline="05.10",
                     with_offsets=False)
    with pytest.raises(SeasonError, match=r"baseline 05.10 .* no BOA_ADD_OFFSET_VALUES_LIST"):
        composite_season(tmp_path / "bad.tif", [bad], bands="B04")


def test_empty_period_warns_and_records(tmp_path):
    rng = np.random.default_rng(12)
    refl = _surface(rng)
    write_item(tmp_path / "i", "S2A_43RFQ_20240605_0_L2A", "2024-06-05", CRS43, T10, refl,
               scl_of(np.ones((H, W), bool)))  # all cloud
    write_item(tmp_path / "i", "S2A_43RFQ_20240705_0_L2A", "2024-07-05", CRS43, T10, refl,
               scl_of(np.zeros((H, W), bool)))
    with pytest.warns(SeasonWarning, match=r"no clear look anywhere .* 2024-06, 2024-08"):
        res = composite_season(tmp_path / "o.tif", [tmp_path / "i"], bands="B04", start="2024-06-01",
                               end="2024-09-01")
    assert res.empty_periods == ["2024-06", "2024-08"] and res.looks == [1, 1, 0]


def test_bad_inputs(tmp_path):
    rng = np.random.default_rng(13)
    refl = _surface(rng)
    write_item(tmp_path / "i", "S2A_43RFQ_20240605_0_L2A", "2024-06-05", CRS43, T10, refl,
               scl_of(np.zeros((H, W), bool)))
    src = [tmp_path / "i"]
    with pytest.raises(SeasonError, match=r"S2A_43RFQ_20240605_0_L2A\): has no B05 band \(rededge1\)"):
        composite_season(tmp_path / "o.tif", src, bands="B05")
    with pytest.raises(SeasonError, match=r"no scene covers the area"):
        composite_season(tmp_path / "o.tif", src, bands="B04", area="80.0,20.0,80.1,20.1")
    with pytest.raises(SeasonError, match=r"no scene falls in the season 2025-01-01"):
        composite_season(tmp_path / "o.tif", src, bands="B04", start="2025-01-01", end="2025-02-01")
    with pytest.raises(SeasonError, match=r"periods 'weekly'"):
        composite_season(tmp_path / "o.tif", src, bands="B04", periods="weekly")
    with pytest.raises(SourceReadError, match=r"nothere: not found"):
        composite_season(tmp_path / "o.tif", [tmp_path / "nothere"], bands="B04")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SourceReadError, match=r"broken.json: not valid JSON"):
        composite_season(tmp_path / "o.tif", [tmp_path / "broken.json"], bands="B04")
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o_clear.tif").exists()
    # SCL missing from an item
    item = json.loads((tmp_path / "i" / "S2A_43RFQ_20240605_0_L2A.json").read_text())
    del item["assets"]["scl"]
    (tmp_path / "noscl").mkdir()
    (tmp_path / "noscl" / "x.json").write_text(json.dumps(item).replace("./S2A", "../i/S2A"))
    with pytest.raises(SeasonError, match=r"no cloud mask \(SCL asset\)"):
        composite_season(tmp_path / "o.tif", [tmp_path / "noscl"], bands="B04")


def test_polygon_area_masks_outside(tmp_path):
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(14)
    refl = _surface(rng)
    write_item(tmp_path / "i", "S2A_43RFQ_20240605_0_L2A", "2024-06-05", CRS43, T10, refl,
               scl_of(np.zeros((H, W), bool)))
    tri = shapely.Polygon([(600100, 3399900), (600505, 3399900), (600100, 3399495)])  # no pixel centre on an edge
    gpd.GeoDataFrame({"district": ["X"]}, geometry=[tri], crs=CRS43).to_crs("EPSG:4326").to_file(tmp_path / "a.gpkg")
    out = tmp_path / "o.tif"
    composite_season(out, [tmp_path / "i"], bands="B04", area=str(tmp_path / "a.gpkg"), area_where="district=X",
                     crs=CRS43, periods="season", start="2024-06-01", end="2024-07-01")
    with rasterio.open(out) as src:
        got, t = src.read(1), src.transform
    assert (t.c, t.f) == (600100.0, 3399900.0) and got.shape == (41, 41)
    rows, cols = np.mgrid[0:41, 0:41]
    inside = (cols + 0.5) + (rows + 0.5) < 40.5  # pixel centres inside the triangle
    col0, row0 = 10, 10
    exp = np.rint(refl["B04"][row0:row0 + 41, col0:col0 + 41] * 1e4).astype(np.uint16)
    np.testing.assert_array_equal(got[inside], exp[inside])
    assert (got[~inside] == 0).all()


def test_season_dates_and_periods_recorded(tmp_path):
    truth = _season(tmp_path / "items", days=("2024-06-03", "2024-06-20"))
    res = composite_season(tmp_path / "o.tif", [tmp_path / "items"], bands="B04",
                           periods="early:2024-06-01/2024-06-16,late:2024-06-16/2024-07-01")
    assert [p.label for p in res.periods] == ["early", "late"] and res.looks == [1, 1]
    with rasterio.open(tmp_path / "o.tif") as src:
        assert json.loads(src.tags()["GEOSEG_DATES"]) == ["2024-06-03", "2024-06-20"]
        assert src.descriptions == ("early_B04", "late_B04")
    assert date(2024, 6, 3).isoformat() == truth[0][0]
    assert mean20 is not None
