"""Polygonize with a boundary band: fields separated block by block equal the whole raster's, traced
by GDAL's polygonizer; majority classes and class shares by plain numpy; options and bad values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.classes import default_classes
from geoseg.cli.main import GeosegGroup
from geoseg.cli.polygonize import polygonize
from geoseg.core.instances import Separation, separate_fields
from geoseg.core.sieve import sieve
from geoseg.errors import PolygonizeError
from geoseg.ops.polygonize import polygonize_raster

T10 = Affine(10, 0, 600_000, 0, -10, 3_380_000)
CLASSES = default_classes()  # 0 background (no field), 1.. crops


def write(tmp: Path, mask: np.ndarray, boundary: np.ndarray | None, tag: str | None = None) -> tuple[Path, Path]:
    h, w = mask.shape
    m, c = tmp / "mask.tif", tmp / "conf.tif"
    with rasterio.open(m, "w", driver="GTiff", height=h, width=w, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32643", transform=T10) as d:
        d.write(mask, 1)
    bands = [np.where(mask == 255, 0, 200).astype(np.uint8)] + ([] if boundary is None else [boundary])
    with rasterio.open(c, "w", driver="GTiff", height=h, width=w, count=len(bands), dtype="uint8", nodata=0,
                       crs="EPSG:32643", transform=T10) as d:
        d.write(np.stack(bands))
        d.set_band_description(1, "confidence")
        if boundary is not None:
            d.set_band_description(2, "boundary")
        if tag is not None:
            d.update_tags(GEOSEG_SEPARATION=tag)
    return m, c


def reference(mask: np.ndarray, boundary: np.ndarray, min_pixels: int, sep: Separation):
    """The whole raster at once: the sieve, the separation, fields under ``min_pixels`` dropped,
    each field traced by GDAL (rasterio.features.shapes) and its majority class by bincount."""
    valid = mask != 255
    whole = sieve(mask, min_pixels, valid=valid) if min_pixels > 1 else mask
    field = valid & (whole != 0)
    labels = separate_fields(whole, field, np.where(valid, boundary, 0).astype(np.uint8), sep)
    out = []
    for g, v in rasterio.features.shapes(labels.astype(np.int32), mask=labels > 0, transform=T10, connectivity=4):
        sel = labels == int(v)
        if sel.sum() < min_pixels:
            continue
        counts = np.bincount(whole[sel], minlength=len(CLASSES))
        out.append((shapely.geometry.shape(g), int(counts.argmax()), counts.max() / counts.sum()))
    return out


def canonical(geoms, classes, shares):  # type: ignore[no-untyped-def]
    wkb = shapely.to_wkb(shapely.normalize(np.asarray(geoms, dtype=object)))
    return sorted(zip(wkb, (int(c) for c in classes), (round(float(s), 9) for s in shares)))


@st.composite
def cases(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    h, w = draw(st.integers(8, 70)), draw(st.integers(8, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cell = draw(st.integers(3, 9))
    coarse = rng.integers(0, 4, (h // cell + 2, w // cell + 2))
    m = np.kron(coarse, np.ones((cell, cell), int))[:h, :w]
    m = np.where(rng.random((h, w)) < draw(st.sampled_from([0.0, 0.05])), rng.integers(0, 4, (h, w)), m)
    m = np.where(rng.random((h, w)) < draw(st.sampled_from([0.0, 0.05])), 255, m).astype(np.uint8)
    # boundary lines on the cell grid (some), plus noise
    b = rng.integers(1, 120, (h, w))
    for r in range(0, h, cell):
        if rng.random() < 0.7:
            b[r] = 230
    for c in range(0, w, cell):
        if rng.random() < 0.7:
            b[:, c] = 230
    b = np.where(m == 255, 0, b).astype(np.uint8)
    sep = Separation(threshold=128, seed_pixels=draw(st.integers(1, 5)), grow=draw(st.integers(0, 4)),
                     erode=draw(st.integers(0, 2)))
    return m, b, sep, draw(st.sampled_from([1, 2, 4])), draw(st.integers(16, 40))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_separated_fields_blockwise_equal_the_whole_raster_traced_by_gdal(case) -> None:  # type: ignore[no-untyped-def]
    mask, boundary, sep, min_pixels, block = case
    with tempfile.TemporaryDirectory() as tmp:
        m, c = write(Path(tmp), mask, boundary)
        gdf = polygonize_raster(m, confidence=c, classes=CLASSES, min_area_ha=min_pixels / 100 if min_pixels > 1 else 0,
                                block=block, workers=2, separation=sep)
    ref = reference(mask, boundary, min_pixels, sep)
    assert len(gdf) == len(ref)
    assert canonical(gdf.geometry.values, gdf.class_id, gdf.class_share) == \
        canonical([g for g, _, _ in ref], [k for _, k, _ in ref], [s for _, _, s in ref])
    assert gdf.geometry.is_valid.all()
    assert gdf.field_id.is_unique


def test_touching_wheat_fields_become_two_polygons_and_the_band_can_be_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mask = np.full((20, 40), 2, np.uint8)  # one crop everywhere
    b = np.full(mask.shape, 20, np.uint8)
    b[:, 19:21] = 240  # the line between two fields
    m, c = write(tmp_path, mask, b)
    two = polygonize_raster(m, confidence=c, classes=CLASSES, separation=Separation(threshold=128, grow=4, erode=0))
    assert len(two) == 2 and sorted(two.area_ha.round(4)) == pytest.approx([0.2 * 20 * 10 / 10, 0.2 * 20 * 10 / 10],
                                                                           rel=2e-3)
    assert (two.class_share == 1.0).all()
    one = polygonize_raster(m, confidence=c, classes=CLASSES, separate=False)
    assert len(one) == 1 and "class_share" not in one.columns
    # a higher threshold than the line's value keeps one field
    assert len(polygonize_raster(m, confidence=c, classes=CLASSES, separation=Separation(threshold=250))) == 1
    # max_area_ha drops the fields above it
    assert len(polygonize_raster(m, confidence=c, classes=CLASSES, max_area_ha=1.0)) == 0
    # a confidence raster without a boundary band: today's fields
    m2, c2 = write(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, mask, None)
    assert len(polygonize_raster(m2, confidence=c2, classes=CLASSES)) == 1


def test_bad_values_are_refused_with_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mask = np.full((8, 8), 2, np.uint8)
    m, c = write(tmp_path, mask, np.full(mask.shape, 10, np.uint8))
    with pytest.raises(PolygonizeError, match=r"max_area_ha is 0.05; expected a positive area in hectares no smaller "
                                              r"than min_area_ha \(0.1\)"):
        polygonize_raster(m, confidence=c, classes=CLASSES, max_area_ha=0.05)
    with pytest.raises(PolygonizeError, match=r"seed_pixels 0"):
        polygonize_raster(m, confidence=c, classes=CLASSES, separation=Separation(seed_pixels=0))
    bad = np.full((8, 8), 9, np.uint8)  # class 9 is not in the table
    m, c = write(tmp_path, bad, np.full(bad.shape, 10, np.uint8))
    with pytest.raises(PolygonizeError, match=r"holds class value 9, which is not in the class table \(7 classes\)"):
        polygonize_raster(m, confidence=c, classes=CLASSES)


def test_cli_separates_and_reports_class_share(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mask = np.full((20, 40), 2, np.uint8)
    b = np.full(mask.shape, 5, np.uint8)  # interiors below the default threshold (0.05, stored 14)
    b[:, 19:21] = 240
    m, c = write(tmp_path, mask, b)
    runner = CliRunner()
    cli = GeosegGroup(commands={"polygonize": polygonize})
    res = runner.invoke(cli, ["polygonize", str(m), "--confidence", str(c), "--out", str(tmp_path / "f.gpkg"),
                              "--json"])
    assert res.exit_code == 0, res.output
    assert '"fields": 2' in res.output
    res = runner.invoke(cli, ["polygonize", str(m), "--confidence", str(c), "--out", str(tmp_path / "g.gpkg"),
                              "--no-separate", "--json"])
    assert '"fields": 1' in res.output
    res = runner.invoke(cli, ["polygonize", str(m), "--confidence", str(c), "--out", str(tmp_path / "h.gpkg"),
                              "--boundary-threshold", "0.99", "--json"])
    assert '"fields": 1' in res.output
    res = runner.invoke(cli, ["polygonize", str(m), "--confidence", str(c), "--out", str(tmp_path / "j.gpkg"),
                              "--boundary-threshold", "0.01", "--json"])  # every pixel cut: nothing seeds
    assert '"fields": 1' in res.output
    res = runner.invoke(cli, ["polygonize", str(m), "--confidence", str(c), "--out", str(tmp_path / "i.gpkg"),
                              "--max-area-ha", "-1"])
    assert res.exit_code != 0 and "max_area_ha is -1.0" in res.output and "Traceback" not in res.output


def test_the_models_choice_in_the_confidence_raster_is_followed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    mask = np.full((20, 40), 2, np.uint8)
    b = np.full(mask.shape, 60, np.uint8)  # interiors at 0.23: cut at the default threshold (0.05)
    b[:, 19:21] = 240
    for tag, n in ((None, 1), ("0.3", 2), ("none", 1)):
        d = tmp_path / str(tag)
        d.mkdir()
        m, c = write(d, mask, b, tag)
        assert len(polygonize_raster(m, confidence=c, classes=CLASSES)) == n, tag
    # an explicit separation wins over the tag
    assert len(polygonize_raster(m, confidence=c, classes=CLASSES, separation=Separation(threshold=128, erode=0))) == 2
    m, c = write(tmp_path, mask, b, "often")
    with pytest.raises(PolygonizeError, match=r"GEOSEG_SEPARATION is 'often'"):
        polygonize_raster(m, confidence=c, classes=CLASSES)
