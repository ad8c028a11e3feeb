"""The synthetic region as real-layout satellite products: names, trees, metadata, pixels, encodings, CLI."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.synth import AcquisitionSpec, SynthRegion, synthesize
from geoseg.synth.products import default_baseline

from ..stac_schema import stac_errors

S2_FILES = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL")
ES_KEYS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "rededge1": "B05", "rededge2": "B06",
           "rededge3": "B07", "nir08": "B8A", "swir16": "B11", "swir22": "B12"}
SAFE_RE = re.compile(r"^S2[AB]_MSIL2A_\d{8}T053649_N\d{4}_R005_T43RFP_\d{8}T090000\.SAFE$")
LANDSAT_RE = re.compile(r"^LC0[89]_L2SP_148039_\d{8}_\d{8}_02_T1$")
H, W = 300, 333  # odd in 20 m (167) columns, and not a multiple of 3 (111 x 100 at 30 m)


def _read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), {"transform": src.transform, "crs": src.crs, "nodata": src.nodata,
                             "dtype": src.dtypes[0], "shape": (src.height, src.width), "driver": src.driver,
                             "overviews": src.overviews(1), "blocks": src.block_shapes[0],
                             "compression": src.compression}


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> SynthRegion:
    """8 scene dates (days 0, 35, ..., 245); Sentinel-2 on days 0 (clear), 35 (cloudy), 50, 105 (old baseline),
    two Landsat looks; every layout."""
    acqs = [
        AcquisitionSpec("2024-06-15", cloud_fraction=0.0),
        AcquisitionSpec("2024-07-20", cloud_fraction=0.4),
        AcquisitionSpec("2024-08-04", platform="sentinel-2a", cloud_fraction=0.6),
        AcquisitionSpec("2024-09-28", baseline="03.01", cloud_fraction=0.0),
        AcquisitionSpec("2024-06-18", platform="landsat-9", cloud_fraction=0.0),
        AcquisitionSpec("2024-07-04", platform="landsat-8", cloud_fraction=0.5),
    ]
    return synthesize(tmp_path_factory.mktemp("products"), height=H, width=W, seed=3, dates=8,
                      products="stac,cdse,landsat", acquisitions=acqs)


def _s2(region: SynthRegion) -> list:
    assert region.products is not None
    return [a for a in region.products.acquisitions if a.sensor == "sentinel-2"]


# --- files in the real layouts -----------------------------------------------------------
def test_layout_trees(region: SynthRegion) -> None:
    pr = region.products
    assert pr is not None and pr.layouts == ("stac", "cdse", "safe", "landsat")  # cdse brought safe
    out = region.out_dir / "products"
    assert sorted(p.name for p in out.iterdir()) == ["cdse", "landsat", "safe", "stac"]  # no temporaries left
    s2 = _s2(region)
    assert [a.platform for a in s2] == ["sentinel-2a", "sentinel-2b", "sentinel-2a", "sentinel-2b"]
    assert [a.baseline for a in s2] == ["05.10", "05.10", "05.11", "03.01"]  # 05.11 from 2024-07-23
    for a in s2:
        es = a.item_ids["stac"]
        assert re.fullmatch(r"S2[AB]_T43RFP_\d{8}T053649_L2A", es)
        folder = out / "stac" / es
        assert sorted(p.name for p in folder.iterdir()) == sorted([f"{b}.tif" for b in S2_FILES] + [f"{es}.json"])
        safe = a.paths["safe"]
        assert SAFE_RE.match(safe.name) and safe.parent == out / "safe" and a.id + ".SAFE" == safe.name
        assert f"_N{a.baseline.replace('.', '')}_" in safe.name
        (granule,) = (safe / "GRANULE").iterdir()
        assert re.fullmatch(r"L2A_T43RFP_A\d{6}_\d{8}T\d{6}", granule.name)
        d = a.date.replace("-", "")
        r10 = sorted(p.name for p in (granule / "IMG_DATA" / "R10m").iterdir())
        r20 = sorted(p.name for p in (granule / "IMG_DATA" / "R20m").iterdir())
        assert r10 == sorted(f"T43RFP_{d}T053649_{b}_10m.jp2" for b in ("B02", "B03", "B04", "B08"))
        assert r20 == sorted(f"T43RFP_{d}T053649_{b}_20m.jp2"
                             for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL"))
        assert (safe / "MTD_MSIL2A.xml").is_file() and (granule / "MTD_TL.xml").is_file()
        assert (out / "cdse" / f"{a.id}.json") == a.paths["cdse"]
    ls = [a for a in pr.acquisitions if a.sensor == "landsat"]
    assert [a.platform for a in ls] == ["landsat-9", "landsat-8"]
    for a in ls:
        assert LANDSAT_RE.match(a.id) and a.paths["landsat"].parent.name == a.id
        names = sorted(p.name for p in a.paths["landsat"].parent.iterdir())
        want = [f"{a.id}_{b}.TIF" for b in ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL")]
        assert names == sorted(want + [f"{a.id}_MTL.json", f"{a.id}_SR_stac.json"])
    for lay in ("stac", "cdse", "landsat"):
        coll = json.loads((out / lay / "items.json").read_text())
        assert coll["type"] == "FeatureCollection"
        assert len(coll["features"]) == len([a for a in pr.acquisitions if lay in a.paths])
        for item in coll["features"]:  # hrefs relative to items.json
            for asset in item["assets"].values():
                assert not asset["href"].startswith("/") and (out / lay / asset["href"]).resolve().exists()
        cat = json.loads((out / lay / "catalog.json").read_text())
        assert cat["type"] == "Catalog"


def test_band_files_are_cogs_with_nodata_0(region: SynthRegion) -> None:
    a = _s2(region)[1]
    for b, path in a.bands["stac"].items():
        _, meta = _read(path)
        assert meta["nodata"] == 0 and meta["crs"].to_epsg() == 32643
        assert meta["dtype"] == ("uint8" if b == "SCL" else "uint16")
        assert meta["compression"].name == "deflate" and meta["blocks"] == (512, 512)
        with rasterio.open(path) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        res = 20 if b in ("B05", "B06", "B07", "B8A", "B11", "B12", "SCL") else 10
        assert meta["transform"].a == res and meta["shape"] == (-(-H // (res // 10)), -(-W // (res // 10)))
        assert (meta["transform"].c, meta["transform"].f) == (region.transform.c, region.transform.f)
    for path in region.products.acquisitions[-1].bands["landsat"].values():  # type: ignore[union-attr]
        if path.suffix == ".TIF":
            _, meta = _read(path)
            assert meta["transform"].a == 30 and meta["shape"] == (100, 111) and meta["dtype"] == "uint16"


# --- STAC items --------------------------------------------------------------------------
def test_earth_search_items_validate_and_describe_their_files(region: SynthRegion) -> None:
    for a in _s2(region):
        item = json.loads(a.paths["stac"].read_text())
        assert stac_errors(item) == []
        p = item["properties"]
        assert p["platform"] == a.platform and p["constellation"] == "sentinel-2"
        assert p["s2:processing_baseline"] == a.baseline and p["s2:mgrs_tile"] == "43RFP"
        assert p["grid:code"] == "MGRS-43RFP" and p["proj:epsg"] == 32643
        assert p["datetime"] == f"{a.date}T05:36:49.024000Z"
        assert p["eo:cloud_cover"] == pytest.approx(a.cloud_cover)
        assert set(item["assets"]) == set(ES_KEYS) | {"scl"}
        offset = -0.1 if a.baseline >= "04.00" else 0.0
        for key, asset in item["assets"].items():
            path = a.paths["stac"].parent / asset["href"]
            _, meta = _read(path)
            rb = asset["raster:bands"][0]
            assert rb["nodata"] == 0 and rb["data_type"] == meta["dtype"]
            assert asset["proj:shape"] == list(meta["shape"])
            assert asset["proj:transform"] == list(meta["transform"])[:6]
            if key != "scl":
                assert asset["eo:bands"][0]["name"] == ES_KEYS[key] and path.name == f"{ES_KEYS[key]}.tif"
                assert rb["scale"] == 0.0001 and rb["offset"] == offset and rb["spatial_resolution"] == meta[
                    "transform"].a
        lon0, lat0, lon1, lat1 = item["bbox"]
        assert 75.5 < lon0 < lon1 < 76.5 and 30.0 < lat0 < lat1 < 31.0  # Punjab, EPSG:4326


def test_landsat_items_validate(region: SynthRegion) -> None:
    for a in region.products.acquisitions:  # type: ignore[union-attr]
        if a.sensor != "landsat":
            continue
        item = json.loads(a.paths["landsat"].read_text())
        assert stac_errors(item) == []
        assert item["id"] == f"{a.id}_SR"
        assert item["properties"]["platform"] == ("LANDSAT_9" if a.platform == "landsat-9" else "LANDSAT_8")
        assert set(item["assets"]) >= {"blue", "green", "red", "nir08", "swir16", "swir22", "qa_pixel"}
        for key in ("blue", "green", "red", "nir08", "swir16", "swir22"):
            rb = item["assets"][key]["raster:bands"][0]
            assert (rb["scale"], rb["offset"], rb["nodata"], rb["data_type"]) == (2.75e-05, -0.2, 0, "uint16")


def test_cdse_items(region: SynthRegion) -> None:
    a = _s2(region)[0]
    item = json.loads(a.paths["cdse"].read_text())
    assert item["stac_version"] == "1.1.0" and item["id"] == a.id
    assert {f"B{b}_10m" for b in ("02", "03", "04", "08")} <= set(item["assets"])
    assert {"B05_20m", "B8A_20m", "B12_20m", "SCL_20m", "product_metadata"} <= set(item["assets"])
    b4 = item["assets"]["B04_10m"]
    assert (b4["raster:scale"], b4["raster:offset"], b4["proj:code"], b4["nodata"]) == (0.0001, -0.1, "EPSG:32643", 0)
    assert b4["bands"][0]["name"] == "B04" and b4["type"] == "image/jp2"
    for asset in item["assets"].values():
        path = (a.paths["cdse"].parent / asset["href"]).resolve()
        assert path.is_file() and path.is_relative_to((region.out_dir / "products" / "safe").resolve())
    old = json.loads(_s2(region)[3].paths["cdse"].read_text())
    assert old["assets"]["B04_10m"]["raster:offset"] == 0.0 and old["properties"]["processing:version"] == "03.01"


# --- the SAFE: metadata and lossless JPEG 2000 ---------------------------------------------
def _mtd(path: Path) -> tuple[float, list[float] | None, str]:
    root = ET.parse(path / "MTD_MSIL2A.xml").getroot()
    q = float(root.find(".//BOA_QUANTIFICATION_VALUE").text)  # type: ignore[union-attr,arg-type]
    offs = root.find(".//BOA_ADD_OFFSET_VALUES_LIST")
    offsets = None if offs is None else [float(e.text) for e in offs.findall("BOA_ADD_OFFSET")]  # type: ignore[arg-type]
    return q, offsets, root.find(".//PROCESSING_BASELINE").text  # type: ignore[union-attr,return-value]


def test_mtd_msil2a(region: SynthRegion) -> None:
    new, old = _s2(region)[0], _s2(region)[3]
    q, offsets, baseline = _mtd(new.paths["safe"])
    assert (q, offsets, baseline) == (10000.0, [-1000.0] * 13, "05.10")
    q, offsets, baseline = _mtd(old.paths["safe"])
    assert (q, offsets, baseline) == (10000.0, None, "03.01")
    root = ET.parse(new.paths["safe"] / "MTD_MSIL2A.xml").getroot()
    assert root.find(".//SPACECRAFT_NAME").text == "Sentinel-2A"  # type: ignore[union-attr]
    assert root.find(".//PRODUCT_START_TIME").text == "2024-06-15T05:36:49.024Z"  # type: ignore[union-attr]
    bands = {e.get("bandId"): e.get("physicalBand") for e in root.iter("Spectral_Information")}
    assert bands["3"] == "B4" and bands["8"] == "B8A" and bands["12"] == "B12"
    files = [e.text for e in root.iter("IMAGE_FILE")]
    assert len(files) == 14
    for f in files:  # listed without the extension, as in real products
        assert (new.paths["safe"] / f"{f}.jp2").is_file()


def test_jp2_lossless_and_georeferenced(region: SynthRegion) -> None:
    a = _s2(region)[1]
    for b in S2_FILES:
        res = "20m" if b in ("B05", "B06", "B07", "B8A", "B11", "B12", "SCL") else "10m"
        jp2, jmeta = _read(a.bands["safe"][f"{b}_{res}"])
        cog, cmeta = _read(a.bands["stac"][b])
        assert jmeta["driver"] == "JP2OpenJPEG" and jmeta["dtype"] == cmeta["dtype"]
        assert jmeta["crs"].to_epsg() == 32643 and jmeta["transform"] == cmeta["transform"]
        np.testing.assert_array_equal(jp2, cog)
        assert cog.max() > 0


# --- pixels --------------------------------------------------------------------------------
def test_clear_look_on_a_scene_date_equals_scene_tif(region: SynthRegion) -> None:
    a = _s2(region)[0]  # 2024-06-15, date 1 of scene.tif, clear
    assert a.date == region.dates[0] and a.cloud_cover == 0
    with rasterio.open(region.scene) as src:
        scene = src.read([1, 2, 3, 4])
    for k, b in enumerate(("B02", "B03", "B04", "B08")):
        dn, _ = _read(a.bands["stac"][b])
        valid = scene[k] > 0
        np.testing.assert_array_equal(dn == 0, ~valid)
        np.testing.assert_array_equal(dn[valid].astype(int) - 1000, scene[k][valid].astype(int))
        s = region.products.surface(a, b)  # type: ignore[union-attr]
        np.testing.assert_array_equal(np.isnan(s), ~valid)
        np.testing.assert_allclose(s[valid], scene[k][valid] / 10000, rtol=0, atol=1e-7)


def test_cloudy_look_on_a_scene_date_equals_scene_tif_where_clear(region: SynthRegion) -> None:
    a = _s2(region)[1]  # 2024-07-20 = scene date 2
    assert a.date == region.dates[1] and 20 < a.cloud_cover < 90
    with rasterio.open(region.scene) as src:
        scene = src.read([5, 6, 7, 8])
    scl, _ = _read(a.bands["stac"]["SCL"])
    clear10 = np.isin(np.repeat(np.repeat(scl, 2, 0), 2, 1)[:H, :W], (4, 5, 6))
    assert 0.1 < clear10.mean() < 0.9
    for k, b in enumerate(("B02", "B03", "B04", "B08")):
        dn, _ = _read(a.bands["stac"][b])
        np.testing.assert_array_equal(dn[clear10].astype(int) - 1000, scene[k][clear10].astype(int))
        assert (dn[~clear10 & (dn > 0)].astype(int) - 1000 != scene[k][~clear10 & (dn > 0)]).mean() > 0.5


def test_scl_classes_where_clouds_and_shadows_are(region: SynthRegion) -> None:
    pr = region.products
    a = _s2(region)[2]  # 60 % cloud
    scl, _ = _read(a.bands["stac"]["SCL"])
    counts = np.bincount(scl.ravel(), minlength=12)
    assert all(counts[c] > 0 for c in (0, 3, 8, 9, 10)) and counts[4] + counts[5] + counts[6] > 0
    assert set(np.unique(scl)) <= {0, 3, 4, 5, 6, 8, 9, 10}
    b02, _ = _read(a.bands["stac"]["B02"].parent / "B05.tif")  # a 20 m band, same grid as SCL
    surf = pr.surface(a, "B05")  # type: ignore[union-attr]
    refl = (b02.astype(float) - 1000) / 10000
    assert np.all(b02[scl == 0] == 0) and np.all(b02[scl != 0] > 0)
    np.testing.assert_array_equal(np.isnan(surf), scl == 0)
    clear = np.isin(scl, (4, 5, 6))
    np.testing.assert_allclose(refl[clear], surf[clear], atol=1e-7)
    assert np.all(refl[scl == 9] > surf[scl == 9] + 0.1)  # thick cloud: bright
    assert np.all(refl[scl == 3] < surf[scl == 3])  # shadow: darker
    assert np.all(np.abs(refl[scl == 10] - surf[scl == 10]) < 0.1)  # thin cirrus: a haze
    b4, b8 = pr.surface(a, "B04", resolution=20), pr.surface(a, "B8A")  # type: ignore[union-attr]
    ndvi = (b8 - b4) / (b8 + b4)
    assert np.nanmean(ndvi[scl == 4]) > np.nanmean(ndvi[scl == 5])
    assert a.cloud_cover == pytest.approx(100 * np.isin(scl, (8, 9, 10)).sum() / (scl > 0).sum(), abs=1e-4)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # collar blocks: all NaN
def test_20m_is_the_mean_of_2x2_10m(region: SynthRegion) -> None:
    a = _s2(region)[1]
    for b in ("B02", "B04"):
        d10, _ = _read(a.bands["safe"][f"{b}_10m"])
        d20, _ = _read(a.bands["safe"][f"{b}_20m"])
        assert d20.shape == (150, 167)
        s10 = np.rint(region.products.surface(a, b) * 10000)  # type: ignore[union-attr]
        s20 = np.rint(region.products.surface(a, b, resolution=20) * 10000)  # type: ignore[union-attr]
        pad = np.pad(s10, ((0, 0), (0, 1)), constant_values=np.nan)  # the last 20 m column has one 10 m column
        blocks = pad.reshape(150, 2, 167, 2)
        mean = np.nanmean(blocks, axis=(1, 3))
        full = ~np.isnan(blocks).any(axis=(1, 3))
        full[:, -1] = ~np.isnan(blocks[:, :, -1, 0]).any(axis=1)
        np.testing.assert_array_equal(np.rint(mean[full]), np.rint(s20[full]))
        np.testing.assert_array_equal(np.isnan(s20), ~full)
        scl, _ = _read(a.bands["stac"]["SCL"])
        clear = np.isin(scl, (4, 5, 6))
        np.testing.assert_array_equal(d20[clear].astype(float) - 1000, s20[clear])
        # and the files agree: a clear 2 x 2 block of DNs averages to its 20 m DN
        c10 = np.repeat(np.repeat(clear, 2, 0), 2, 1)[:H, :W]
        dpad = np.pad(np.where(c10, d10.astype(float), np.nan), ((0, 0), (0, 1)), constant_values=np.nan)
        m = np.nanmean(dpad.reshape(150, 2, 167, 2), axis=(1, 3))
        np.testing.assert_array_equal(np.rint(m[clear]), d20[clear])


def test_the_same_surface_as_a_2021_and_a_2023_product(tmp_path: Path) -> None:
    """Old baseline (2021, no offset) and new (2023, +1000): the same reflectance after each one's metadata."""
    kw = {"height": 120, "width": 140, "seed": 9, "products": "safe,stac"}
    out = {}
    for year in (2021, 2023):
        acq = [AcquisitionSpec(f"{year}-11-01", cloud_fraction=0.0)]
        r = synthesize(tmp_path / str(year), **{**kw, "acquisitions": acq}, season_year=year)
        (a,) = r.products.acquisitions  # type: ignore[union-attr]
        q, offsets, baseline = _mtd(a.paths["safe"])
        item = json.loads(a.paths["stac"].read_text())
        rb = item["assets"]["red"]["raster:bands"][0]
        dn, _ = _read(a.bands["safe"]["B04_10m"])
        es, _ = _read(a.bands["stac"]["B04"])
        np.testing.assert_array_equal(dn, es)
        valid = dn > 0
        add = offsets[3] if offsets else 0.0  # bandId 3 = B4
        refl_mtd = (dn[valid] + add) / q
        refl_stac = dn[valid] * rb["scale"] + rb["offset"]
        np.testing.assert_allclose(refl_mtd, refl_stac, atol=1e-9)
        out[year] = (baseline, dn, refl_mtd, valid)
        assert a.baseline == baseline == default_baseline(date.fromisoformat(a.date))
    assert out[2021][0] == "03.01" and out[2023][0] == "05.09"
    np.testing.assert_array_equal(out[2021][3], out[2023][3])
    valid = out[2021][3]
    np.testing.assert_array_equal(out[2023][1][valid].astype(int), out[2021][1][valid].astype(int) + 1000)
    np.testing.assert_allclose(out[2021][2], out[2023][2], atol=1e-12)


def test_a_season_across_the_2022_offset_change(tmp_path: Path) -> None:
    r = synthesize(tmp_path, height=64, width=64, seed=1, season_year=2021, products="stac", acquisitions=9,
                   spacing=30, cloudiness=0)
    assert r.dates[0] == "2021-06-15" and r.dates[-1] == "2022-02-15"
    got = [(a.date, a.baseline, a.offset) for a in r.products.acquisitions]  # type: ignore[union-attr]
    assert got[0] == ("2021-06-15", "02.14", 0) and got[1] == ("2021-07-15", "03.01", 0)
    assert got[-1] == ("2022-02-10", "04.00", 1000)
    items = json.loads((r.out_dir / "products" / "stac" / "items.json").read_text())["features"]
    assert [f["assets"]["red"]["raster:bands"][0]["offset"] for f in items] == [0.0] * 8 + [-0.1]
    assert all(a.cloud_cover == 0 for a in r.products.acquisitions)  # type: ignore[union-attr]


def test_landsat_scale_offset_round_trip_and_qa(region: SynthRegion) -> None:
    pr = region.products
    for a in (x for x in pr.acquisitions if x.sensor == "landsat"):  # type: ignore[union-attr]
        mtl = json.loads(a.bands["landsat"]["MTL"].read_text())["LANDSAT_METADATA_FILE"]
        params = mtl["LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"]
        qa, _ = _read(a.bands["landsat"]["QA_PIXEL"])
        fill = (qa & 1) == 1
        clear = ((qa >> 6) & 1 == 1) & ((qa >> 4) & 1 == 0) & ~fill
        for b in ("SR_B2", "SR_B4", "SR_B5", "SR_B7"):
            n = b[-1]
            mult, add = float(params[f"REFLECTANCE_MULT_BAND_{n}"]), float(params[f"REFLECTANCE_ADD_BAND_{n}"])
            assert (mult, add) == (2.75e-05, -0.2)
            dn, _ = _read(a.bands["landsat"][b])
            truth = pr.surface(a, b)  # type: ignore[union-attr]
            np.testing.assert_array_equal(dn == 0, fill)
            np.testing.assert_array_equal(np.isnan(truth), fill)
            assert np.abs(dn[clear] * mult + add - truth[clear]).max() <= mult
        if a.cloud_fraction > 0:
            assert ((qa >> 3) & 1).sum() > 0 and ((qa >> 4) & 1).sum() > 0  # cloud and shadow bits
            assert 0 < a.cloud_cover < 100
        else:
            assert set(np.unique(qa)) <= {1, 21824, 21952}  # fill, clear land, clear water (real C2 values)


def test_landsat_30m_is_the_mean_of_3x3_10m(region: SynthRegion) -> None:
    pr = region.products
    a = next(x for x in pr.acquisitions if x.sensor == "landsat")  # type: ignore[union-attr]
    s30 = pr.surface(a, "SR_B4")  # type: ignore[union-attr]
    assert s30.shape == (100, 111)
    # the 10 m surface of a Landsat look is not a product band; check the grid instead: the window helper agrees
    win = pr.surface(a, "SR_B4", window=Window(100, 90, 11, 10))  # type: ignore[union-attr]
    np.testing.assert_array_equal(win, s30[90:100, 100:111])


def test_surface_windows_agree_with_the_whole(region: SynthRegion) -> None:
    pr = region.products
    a = _s2(region)[2]
    whole = pr.surface(a, "B11")  # type: ignore[union-attr]
    part = pr.surface(a, "B11", window=Window(150, 100, 17, 50))  # type: ignore[union-attr]
    np.testing.assert_array_equal(part, whole[100:150, 150:167])
    with pytest.raises(ConfigError, match="B08 at 10 m"):
        pr.surface(a, "B08", resolution=20)  # type: ignore[union-attr]


def test_overcast_leaves_a_part_without_clear_looks(tmp_path: Path) -> None:
    r = synthesize(tmp_path, height=256, width=256, seed=2, products="stac", acquisitions=4, spacing=5,
                   cloudiness=0, overcast="2024-06-20/2024-06-30")
    acqs = r.products.acquisitions  # type: ignore[union-attr]
    assert [a.overcast for a in acqs] == [False, True, True, True]
    scl = np.stack([_read(a.bands["stac"]["SCL"])[0] for a in acqs[1:]])
    never_clear = ~np.isin(scl, (4, 5, 6)).any(axis=0) & (scl[0] > 0)
    assert 0.1 < never_clear.mean() < 0.6
    assert acqs[0].cloud_cover == 0


def test_products_leave_the_region_files_unchanged(tmp_path: Path) -> None:
    kw = {"height": 130, "width": 150, "seed": 4, "dates": 3}
    a = synthesize(tmp_path / "a", **kw)
    b = synthesize(tmp_path / "b", **kw, products="stac", acquisitions=2)
    for name in ("scene.tif", "labels.tif", "truth.csv", "fields.gpkg", "districts.gpkg"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    assert a.products is None and not (a.out_dir / "products").exists()
    c = synthesize(tmp_path / "c", **kw, products="stac", acquisitions=2)
    item = "products/stac/items.json"
    assert (b.out_dir / item).read_bytes() == (c.out_dir / item).read_bytes()
    es = b.products.acquisitions[1].bands["stac"]["B04"]  # type: ignore[union-attr]
    assert es.read_bytes() == (c.out_dir / es.relative_to(b.out_dir)).read_bytes()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"products": "stac,jpeg"}, r"unknown layout 'jpeg'; expected one or more of stac, cdse, safe, landsat"),
    ({"products": "stac", "acquisitions": 0}, r"acquisitions must be 1\.\.200, got 0"),
    ({"products": "stac", "spacing": 0}, r"spacing must be 1\.\.60 days"),
    ({"products": "stac", "cloudiness": -1}, r"cloudiness must be a number in \[0, 3\]"),
    ({"products": "stac", "overcast": "2024-08-01"}, r"overcast must be a period 'START/END'"),
    ({"products": "stac", "overcast": "2024-09-01/2024-08-01"}, r"overcast ends \(2024-08-01\) before"),
    ({"products": "stac", "acquisitions": [AcquisitionSpec("2024-07-01", baseline="5.1")]},
     r"baseline '5\.1' is not a processing baseline NN\.NN"),
    ({"products": "stac", "acquisitions": [AcquisitionSpec("2024-07-01", platform="landsat-9")]},
     r"lacks landsat; add landsat"),
    ({"products": "stac", "acquisitions": ["2024-07-01", "2024-07-01"]}, r"two Sentinel-2 acquisitions on 2024-07-01"),
    ({"products": "stac", "pixel_size": 20.0}, r"products need 10 m pixels"),
    ({"products": "stac", "season_year": 1999}, r"season_year must be 2016\.\.2099, got 1999"),
])
def test_bad_product_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synthesize(tmp_path, height=32, width=32, **kwargs)


# --- the command line ------------------------------------------------------------------------
def test_cli_writes_products(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = CliRunner().invoke(cli, ["synth", str(out), "--height", "64", "--width", "64", "--products", "stac,safe",
                                    "--acquisitions", "3", "--spacing", "5", "--cloudiness", "0", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["products"]["layouts"] == ["stac", "safe"]
    assert [a["date"] for a in info["products"]["acquisitions"]] == ["2024-06-15", "2024-06-20", "2024-06-25"]
    assert len(list((out / "products" / "safe").glob("*.SAFE"))) == 3
    assert len(json.loads((out / "products" / "stac" / "items.json").read_text())["features"]) == 3
    again = CliRunner().invoke(cli, ["synth", str(out), "--height", "64", "--width", "64", "--products", "stac"])
    assert again.exit_code != 0 and "--overwrite" in again.output


@pytest.mark.parametrize(("args", "match"), [
    (["--products", "stac,jpeg"], "unknown layout 'jpeg'"),
    (["--products", "stac", "--overcast", "2024-08-01/August"], "overcast must be an ISO date"),
    (["--products", "stac", "--acquisitions", "0"], "acquisitions must be 1..200"),
    (["--acquisitions", "3"], "--acquisitions needs --products"),
])
def test_cli_rejects_bad_product_options(tmp_path: Path, args: list[str], match: str) -> None:
    res = CliRunner().invoke(cli, ["synth", str(tmp_path / "r"), "--height", "32", "--width", "32", *args])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], res.output
