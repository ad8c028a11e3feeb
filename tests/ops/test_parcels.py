"""Parcel mode: each parcel's crop, shares, observed share and confidence against a brute-force
reference (every pixel cell intersected with every parcel by shapely), and its errors."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

from geoseg.classes import default_classes
from geoseg.cli.main import GeosegGroup
from geoseg.cli.polygonize import polygonize
from geoseg.core.geodesy import areas_m2
from geoseg.errors import AreaError, LabelError
from geoseg.ops.parcels import parcel_crops, parcel_dataset

T = Affine(10, 0, 600_000, 0, -10, 3_380_000)
CRS = "EPSG:32643"
CLASSES = default_classes()


def write(path, arr, nodata, count=1, desc=None):  # type: ignore[no-untyped-def]
    a = arr if arr.ndim == 3 else arr[None]
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype="uint8", nodata=nodata, crs=CRS, transform=T) as d:
        d.write(a)
        if desc:
            for i, n in enumerate(desc, start=1):
                d.set_band_description(i, n)
    return path


def reference(mask, conf, polys):  # type: ignore[no-untyped-def]
    """Per parcel: planar area of each class and of nodata inside it, and the coverage-weighted
    confidence, by intersecting every pixel cell."""
    h, w = mask.shape
    out = []
    for p in polys:
        cls = np.zeros(len(CLASSES))
        csum = carea = 0.0
        for r in range(h):
            for c in range(w):
                x0, y0 = T.c + 10 * c, T.f - 10 * (r + 1)
                a = shapely.box(x0, y0, x0 + 10, y0 + 10).intersection(p).area
                if a == 0 or mask[r, c] == 255:
                    continue
                cls[mask[r, c]] += a
                if conf[r, c] > 0:
                    csum += a * conf[r, c]
                    carea += a
        out.append((cls, csum / carea / 255 if carea else np.nan))
    return out


@pytest.fixture
def scene(tmp_path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(4)
    mask = np.ones((12, 14), np.uint8)  # rice
    mask[:, 7:] = 2  # wheat on the right half
    mask[5:8, 2:4] = 3  # a patch of sugarcane
    mask[0, :] = 255  # a nodata row
    conf = np.where(mask == 255, 0, rng.integers(100, 255, mask.shape)).astype(np.uint8)
    m = write(tmp_path / "mask.tif", mask, 255)
    c = write(tmp_path / "conf.tif", conf, 0, desc=["confidence"])
    x0, y0 = 600_000, 3_380_000
    polys = [
        shapely.box(x0 + 3, y0 - 95, x0 + 68, y0 - 3),  # rice, with sugarcane, cut pixels, over the nodata row
        shapely.Polygon([(x0 + 62, y0 - 20), (x0 + 130, y0 - 27), (x0 + 121, y0 - 111), (x0 + 75, y0 - 98)]),  # mostly wheat
        shapely.box(x0 + 500, y0 - 500, x0 + 600, y0 - 400),  # outside the mask
    ]
    gpd.GeoDataFrame({"code": ["A-1", "B-2", "C-3"]}, geometry=polys, crs=CRS).to_file(tmp_path / "parcels.gpkg")
    return tmp_path, mask, conf, polys, m, c


def test_parcel_classes_shares_observed_and_confidence_equal_a_brute_force_reference(scene) -> None:  # type: ignore[no-untyped-def]
    tmp, mask, conf, polys, m, c = scene
    gdf = parcel_crops(m, tmp / "parcels.gpkg", id_field="code", confidence=c, classes=CLASSES)
    assert list(gdf["id"]) == ["A-1", "B-2"] and gdf.attrs["unobserved"] == 1
    ref = reference(mask, conf, polys[:2])
    for (_, row), (cls, cmean), poly in zip(gdf.iterrows(), ref, polys):
        shares = cls / cls.sum()
        assert row["class_id"] == int(np.argmax(cls))
        assert row["crop:name"] == CLASSES.names[int(np.argmax(cls))]
        assert row["class_share"] == pytest.approx(shares.max(), abs=1e-4)
        for i, name in enumerate(CLASSES.names):
            assert row[f"share:{name}"] == pytest.approx(shares[i], abs=1e-4)
        assert row["observed"] == pytest.approx(cls.sum() / poly.area, abs=1e-4)
        assert row["confidence"] == pytest.approx(cmean, abs=1e-4)
        assert row["area_ha"] == pytest.approx(areas_m2(np.array([poly]), CRS)[0] / 1e4, rel=1e-9)
    assert gdf.iloc[0]["observed"] < 0.95  # the nodata row
    assert gdf.iloc[0]["share:sugarcane"] > 0


def test_parcels_without_crs_or_id_or_overlap_are_refused(scene, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tmp, _, _, polys, m, _ = scene
    with pytest.raises(LabelError, match=r"has no attribute 'parcel'; its attributes are \['code'\]"):
        parcel_crops(m, tmp / "parcels.gpkg", id_field="parcel", classes=CLASSES)
    gpd.GeoDataFrame(geometry=[polys[2]], crs=CRS).to_file(tmp_path / "far.gpkg")
    with pytest.raises(AreaError, match=r"none of the 1 parcels overlaps"):
        parcel_crops(m, tmp_path / "far.gpkg", classes=CLASSES)
    gpd.GeoDataFrame(geometry=[shapely.Point(600_010, 3_379_990)], crs=CRS).to_file(tmp_path / "pts.gpkg")
    with pytest.raises(LabelError, match=r"holds no parcel polygons"):
        parcel_crops(m, tmp_path / "pts.gpkg", classes=CLASSES)


def test_cli_parcels(scene) -> None:  # type: ignore[no-untyped-def]
    tmp, _, _, _, m, c = scene
    cli = GeosegGroup(commands={"polygonize": polygonize})
    res = CliRunner().invoke(cli, ["polygonize", str(m), "--parcels", str(tmp / "parcels.gpkg"), "--parcel-id", "code",
                                   "--confidence", str(c), "--classes", _classes_file(tmp), "--out",
                                   str(tmp / "crops.gpkg"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["parcels"] == 2 and d["unobserved"] == 1
    back = gpd.read_file(tmp / "crops.gpkg", layer="crops")
    assert list(back["id"]) == ["A-1", "B-2"] and "share:rice" in back.columns
    res = CliRunner().invoke(cli, ["polygonize", str(m), "--parcels", str(tmp / "parcels.gpkg"), "--min-area-ha", "1",
                                   "--out", str(tmp / "x.gpkg")])
    assert res.exit_code != 0 and "--min-area-ha shape traced fields" in res.output


def _classes_file(tmp) -> str:  # type: ignore[no-untyped-def]
    p = tmp / "classes.yaml"
    p.write_text(CLASSES.to_yaml())
    return str(p)


@pytest.mark.parametrize("per_part", [1, 2, 4])
def test_parcels_counted_in_parts_equal_the_whole_layer(scene, tmp_path, per_part) -> None:  # type: ignore[no-untyped-def]
    """A layer read, counted and written in parts (one task each) gives the rows the whole layer
    gives, in file order, field ids by file position - also with a part away from the mask, a
    feature that is no polygon between them, and a parcel inside another (each counts every
    pixel inside it, whichever part holds the other)."""
    _, _, _, polys, m, c = scene
    x0, y0 = 600_000, 3_380_000
    layer = gpd.GeoDataFrame({"code": ["A-1", "far", "pt", "B-2", "D-4"]},
                             geometry=[polys[0], polys[2], shapely.Point(x0 + 5, y0 - 5), polys[1],
                                       shapely.box(x0 + 80, y0 - 60, x0 + 100, y0 - 40)], crs=CRS)  # D-4 inside B-2
    layer.to_file(tmp_path / "layer.gpkg")
    whole = parcel_crops(m, tmp_path / "layer.gpkg", id_field="code", confidence=c, classes=CLASSES)
    out = tmp_path / "ds"
    out.mkdir()
    tally = parcel_dataset(m, tmp_path / "layer.gpkg", out, per_part=per_part, workers=2, id_field="code",
                           confidence=c, classes=CLASSES)
    parts = sorted(out.glob("*.parquet"))
    assert [p.name for p in parts] == sorted(p.name for p in parts) and len(parts) <= -(-5 // per_part)
    got = pd.concat([gpd.read_parquet(p) for p in parts], ignore_index=True)
    assert list(got["id"]) == list(whole["id"]) == ["A-1", "B-2", "D-4"]
    assert list(got["field_id"]) == list(whole["field_id"]) == [1, 4, 5]
    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")),
                                  pd.DataFrame(whole.drop(columns="geometry")).reset_index(drop=True))
    assert tally == {"parcels": 3, "unobserved": 1, "skipped": 1}
    gpd.GeoDataFrame(geometry=[shapely.Point(x0 + 5, y0 - 5)] * 3, crs=CRS).to_file(tmp_path / "pts.gpkg")
    pts = tmp_path / "pts"
    pts.mkdir()
    with pytest.raises(LabelError, match=r"pts.gpkg: holds no parcel polygons \(3 features\)"):
        parcel_dataset(m, tmp_path / "pts.gpkg", pts, per_part=per_part, classes=CLASSES)
    with pytest.raises(AreaError, match=r"none of the 1 parcels of .*far.gpkg lies over"):
        gpd.GeoDataFrame(geometry=[polys[2]], crs=CRS).to_file(tmp_path / "far.gpkg")
        empty = tmp_path / "ds2"
        empty.mkdir()
        parcel_dataset(m, tmp_path / "far.gpkg", empty, classes=CLASSES)


def test_overlapping_parcels_each_count_every_pixel_inside_them(scene, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, mask, conf, polys, m, c = scene
    x0, y0 = 600_000, 3_380_000
    inner = shapely.box(x0 + 80, y0 - 60, x0 + 100, y0 - 40)  # inside B-2
    cross = shapely.box(x0 + 40, y0 - 70, x0 + 95, y0 - 35)  # across A-1 and B-2
    layer = [polys[0], polys[1], inner, cross]
    gpd.GeoDataFrame(geometry=layer, crs=CRS).to_file(tmp_path / "overlaps.gpkg")
    gdf = parcel_crops(m, tmp_path / "overlaps.gpkg", confidence=c, classes=CLASSES)
    assert len(gdf) == 4
    for (_, row), (cls, cmean), poly in zip(gdf.iterrows(), reference(mask, conf, layer), layer):
        assert row["observed"] == pytest.approx(cls.sum() / poly.area, abs=1e-4)
        for i, name in enumerate(CLASSES.names):
            assert row[f"share:{name}"] == pytest.approx(cls[i] / cls.sum(), abs=1e-4)
        assert row["confidence"] == pytest.approx(cmean, abs=1e-4)
