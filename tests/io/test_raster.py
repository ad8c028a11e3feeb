"""Reading tiles from real rasters, writing COG masks atomically, and the errors for bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.classes import default_classes
from geoseg.core.grid import Window as GridWindow
from geoseg.core.grid import band_order, tile_grid
from geoseg.core.stitch import apply_nodata
from geoseg.errors import GridMismatchError, RasterReadError, RasterWriteError
from geoseg.io.raster import (
    MAX_CACHE_BYTES,
    MIN_CACHE_BYTES,
    BlockReader,
    RasterWriter,
    check_same_grid,
    confidence_writer,
    iter_tiles,
    mask_writer,
    open_raster,
    raster_info,
    read_mask_classes,
    read_tile,
    tile_cache_bytes,
    valid_mask,
    writer_cache_bytes,
)


def _round_trip(path, size, overlap, tmp_path):  # type: ignore[no-untyped-def]
    """Tile a real raster, run an identity 'model', stitch; also write a valid-data class mask."""
    info = raster_info(path)
    g = tile_grid(info.shape, info.transform, size=size, overlap=overlap)
    out = tmp_path / "identity.tif"
    mask = tmp_path / "mask.tif"
    with open_raster(path) as src, RasterWriter(
        out, shape=info.shape, transform=info.transform, crs=info.crs, count=info.count, dtype=info.dtype,
        nodata=info.nodata,
    ) as w, mask_writer(mask, shape=info.shape, transform=info.transform, crs=info.crs, classes=default_classes()) as m:
        for td in iter_tiles(src, g):
            w.write_tile(td.tile, td.array)
            m.write_tile(td.tile, apply_nodata(np.ones(td.valid.shape, "uint8"), td.valid))
    return info, out, mask


def test_landsat_rgb_with_nodata_collar_round_trips(rgb_tif, tmp_path):  # type: ignore[no-untyped-def]
    info, out, mask = _round_trip(rgb_tif, 256, 32, tmp_path)
    with rasterio.open(rgb_tif) as i, rasterio.open(out) as o, rasterio.open(mask) as m:
        original = i.read()
        np.testing.assert_array_equal(o.read(), original)
        for ds in (o, m):
            assert ds.crs == i.crs and ds.transform == i.transform and ds.shape == i.shape
        # The class mask is nodata (255) exactly where the input has no data in any band.
        expected_nodata = (original == 0).any(axis=0)
        got = m.read(1)
        assert expected_nodata.sum() > 50_000  # the collar is really there
        np.testing.assert_array_equal(got == 255, expected_nodata)
        np.testing.assert_array_equal(np.unique(got), [1, 255])
        # A Cloud-Optimised GeoTIFF: tiled, overviews, COG layout, colour table, class names.
        assert m.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert m.profile["tiled"] and m.profile["compress"] == "deflate"
        assert m.overviews(1) == [2]
        assert m.nodata == 255 and m.dtypes[0] == "uint8"
        assert m.colormap(1)[1][:3] == default_classes()[1].rgb
        assert [c["name"] for c in json.loads(m.tags()["GEOSEG_CLASSES"])][:3] == ["background", "rice", "wheat"]
    assert read_mask_classes(mask).names == default_classes().names


def test_sentinel2_nan_nodata_non_square_pixels_round_trip(s2_tif, tmp_path):  # type: ignore[no-untyped-def]
    info, out, mask = _round_trip(s2_tif, 32, 8, tmp_path)
    assert info.res[0] != info.res[1]
    with rasterio.open(s2_tif) as i, rasterio.open(out) as o, rasterio.open(mask) as m:
        original = i.read()
        got = o.read()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(original))
        assert got.tobytes() == original.tobytes()  # bit for bit, NaNs included
        assert o.transform == i.transform and o.crs == i.crs
        nan_any = np.isnan(original).any(axis=0)
        assert 0 < nan_any.sum() < nan_any.size
        np.testing.assert_array_equal(m.read(1) == 255, nan_any)


def test_scene_smaller_than_one_tile_is_padded(s2_tif):  # type: ignore[no-untyped-def]
    info = raster_info(s2_tif)
    g = tile_grid(info.shape, info.transform, size=256, overlap=32)
    assert len(g) == 1
    with open_raster(s2_tif) as src:
        reflect = read_tile(src, g[0], pad="reflect")
        const = read_tile(src, g[0], pad="constant", fill=-1)
        window = src.read()
    assert reflect.array.shape == (13, 256, 256)
    r, c = g[0].core_in_read
    np.testing.assert_array_equal(reflect.array[:, r, c], window)
    # Padding is never valid; constant padding uses the fill value.
    assert reflect.valid.sum() == valid_mask(window, float("nan")).sum()
    assert not reflect.valid[:, : c.start].any() and not reflect.valid[: r.start].any()
    assert (const.array[:, : r.start] == -1).all()
    # Reflect padding mirrors without repeating the edge pixel.
    np.testing.assert_array_equal(reflect.array[:, r.start - 1, c], window[:, 1])


def test_valid_rule_any_keeps_partly_observed_pixels():
    a = np.array([[[0, 5, 0]], [[3, 0, 0]]], dtype="uint16")
    assert valid_mask(a, 0, "all").tolist() == [[False, False, False]]
    assert valid_mask(a, 0, "any").tolist() == [[True, True, False]]
    assert valid_mask(a, None).all()
    f = np.array([[[np.nan, 1.0]]], dtype="float32")
    assert valid_mask(f, None).tolist() == [[False, True]]


def test_block_reader_takes_validity_from_nodata_or_the_internal_mask(tmp_path):  # type: ignore[no-untyped-def]
    a = np.arange(48, dtype="uint8").reshape(6, 8)
    kw = dict(driver="GTiff", height=6, width=8, count=1, dtype="uint8", crs="EPSG:32643",
              transform=Affine(10, 0, 600_000, 0, -10, 3_380_000))
    with rasterio.open(tmp_path / "nod.tif", "w", nodata=9, **kw) as d:
        d.write(a, 1)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp_path / "internal.tif", "w", **kw) as d:
        d.write(a, 1)
        d.write_mask(a % 3 != 0)
    win = GridWindow(1, 1, 4, 3)  # rows 1-3, columns 1-4
    with BlockReader(tmp_path / "nod.tif") as r:
        b = r.read(win)
        assert r.shape == (6, 8) and b.nodata == 9 and b.mask is None
        np.testing.assert_array_equal(b.array, a[1:4, 1:5])
        np.testing.assert_array_equal(b.valid(), a[1:4, 1:5] != 9)
    with BlockReader(tmp_path / "nod.tif", nodata=10) as r:  # the caller's nodata overrides the file's
        np.testing.assert_array_equal(r.read(win).valid(), a[1:4, 1:5] != 10)
    with BlockReader(tmp_path / "internal.tif") as r:
        b = r.read(win)
        assert b.nodata is None and b.mask is not None
        np.testing.assert_array_equal(b.valid(), a[1:4, 1:5] % 3 != 0)
        np.testing.assert_array_equal(r.read_array(win), a[1:4, 1:5])
    with BlockReader(tmp_path / "internal.tif", nodata=0) as r:  # a nodata value is used instead of the mask
        b = r.read(win)
        assert b.mask is None and b.valid().all()
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        r.read(win)
    with pytest.raises(RasterReadError, match="file not found"):
        with BlockReader(tmp_path / "missing.tif"):
            pass


# ---------------------------------------------------------------- bad inputs


def _write(path, **kw):  # type: ignore[no-untyped-def]
    profile = dict(driver="GTiff", height=8, width=8, count=1, dtype="uint8")
    profile.update(kw)
    with rasterio.open(path, "w", **profile) as d:
        d.write(np.ones((1, 8, 8), "uint8"))


def test_missing_file_is_named(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(RasterReadError, match=r"nope\.tif: file not found"):
        raster_info(tmp_path / "nope.tif")


def test_not_a_raster_is_named(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "notes.tif"
    p.write_text("this is not an image")
    with pytest.raises(RasterReadError, match=r"notes\.tif: cannot be read as a raster .*expected a GeoTIFF"):
        raster_info(p)


def test_truncated_geotiff_is_detected(rgb_tif, tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "cut.tif"
    p.write_bytes(rgb_tif.read_bytes()[:200_000])
    with pytest.raises(RasterReadError, match=r"cut\.tif: .*(truncated|corrupt)"):
        with open_raster(p) as src:
            g = tile_grid((src.height, src.width), size=256, overlap=0)
            for _ in iter_tiles(src, g):
                pass


def test_raster_without_crs_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "nocrs.tif"
    _write(p, transform=Affine(10, 0, 0, 0, -10, 0))
    with pytest.raises(RasterReadError, match=r"nocrs\.tif: has no CRS.*gdal_edit\.py -a_srs"):
        raster_info(p)


def test_rotated_transform_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "rot.tif"
    _write(p, crs="EPSG:32643", transform=Affine(10, 2, 500000, 2, -10, 3400000))
    with pytest.raises(RasterReadError, match=r"rot\.tif: has a rotated or sheared transform.*gdalwarp"):
        raster_info(p)


def test_grid_mismatch_names_both_files_and_what_differs(rgb_tif, tmp_path):  # type: ignore[no-untyped-def]
    a = raster_info(rgb_tif)
    p = tmp_path / "other.tif"
    _write(p, crs="EPSG:32643", transform=Affine(10, 0, 500000, 0, -10, 3400000))
    with pytest.raises(GridMismatchError, match=r"other\.tif is not on the grid of .*RGB\.byte\.tif: size 8x8 \(expected 791x718\); CRS EPSG:32643 \(expected EPSG:32618\)"):
        check_same_grid(a, raster_info(p))
    check_same_grid(a, a)


def test_writer_failure_leaves_nothing_behind(tmp_path):  # type: ignore[no-untyped-def]
    target = tmp_path / "mask.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with mask_writer(target, shape=(64, 64), transform=Affine(10, 0, 0, 0, -10, 0), crs="EPSG:32643",
                         classes=default_classes()) as w:
            w.write(np.zeros((32, 32), "uint8"), rasterio.windows.Window(0, 0, 32, 32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_into_an_impossible_directory_says_so(tmp_path):  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RasterWriteError, match=r"cannot create the output directory .*file.*choose a writable location"):
        with RasterWriter(blocker / "sub" / "m.tif", shape=(8, 8), transform=Affine.identity(), crs="EPSG:32643"):
            pass


def test_existing_output_is_replaced_only_when_complete(tmp_path):  # type: ignore[no-untyped-def]
    target = tmp_path / "m.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with RasterWriter(target, shape=(8, 8), transform=Affine(1, 0, 0, 0, -1, 0), crs="EPSG:32643") as w:
            w.write(np.ones((8, 8), "uint8"), rasterio.windows.Window(0, 0, 8, 8))
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    with RasterWriter(target, shape=(8, 8), transform=Affine(1, 0, 0, 0, -1, 0), crs="EPSG:32643") as w:
        w.write(np.full((8, 8), 7, "uint8"), rasterio.windows.Window(0, 0, 8, 8))
    with rasterio.open(target) as d:
        assert (d.read(1) == 7).all()


def test_block_cache_sizes_hold_what_neighbouring_tiles_share(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "s2.tif"  # 16 uint16 bands in 512 px blocks; never written (sparse), only its layout matters
    with rasterio.open(path, "w", driver="GTiff", width=4096, height=3072, count=16, dtype="uint16", crs="EPSG:32643",
                       transform=Affine(10, 0, 0, 0, -10, 0), tiled=True, blockxsize=512, blockysize=512):
        pass
    with rasterio.open(path) as src:
        grid = tile_grid((src.height, src.width), src.transform, size=512, overlap=32)
        block = 512 * 512 * 16 * 2
        # a task of one tile row: a 512 px window over 512 px blocks spans 2 x 2 of them and the
        # next tile along the row reuses two; 4 blocks decode each once, plus one block and a
        # quarter of slack
        assert grid.grid_shape == (7, 10)
        assert tile_cache_bytes(src, grid.tiles[10:20]) == 5 * block * 5 // 4
        assert tile_cache_bytes(src, grid.tiles[:1]) == MIN_CACHE_BYTES  # the corner tile: one block
        assert tile_cache_bytes(src, []) == MIN_CACHE_BYTES
        # a band of 3 tile rows walked column by column keeps about two of its columns of blocks
        band = band_order(grid, 3)
        assert tile_cache_bytes(src, band[24:36]) == 8 * block * 5 // 4
    # writing tile cores into 512 px blocks: three rows of blocks across the raster, within bounds
    assert writer_cache_bytes((5376, 5376), 512) == MIN_CACHE_BYTES
    assert writer_cache_bytes((100, 100_000), 512) == 3 * 512 * 100_352
    assert writer_cache_bytes((100, 10_000_000), 512) == MAX_CACHE_BYTES


def test_confidence_cog_round_trips_through_differencing(tmp_path):  # type: ignore[no-untyped-def]
    from rasterio.windows import Window


    a = np.random.default_rng(3).integers(0, 256, (300, 260)).astype("uint8")
    p = tmp_path / "confidence.tif"
    with confidence_writer(p, shape=a.shape, transform=Affine(10, 0, 0, 0, -10, 0), crs="EPSG:32643") as w:
        w.write(a, Window(0, 0, 260, 300))
    with rasterio.open(p) as s:
        np.testing.assert_array_equal(s.read(1), a)
        st = s.tags(ns="IMAGE_STRUCTURE")
        assert (st["LAYOUT"], st["COMPRESSION"], st["PREDICTOR"], s.nodata) == ("COG", "DEFLATE", "2", 0)
        # a probability for readers that apply scale and offset: stored 255 reads 1.0
        assert (s.scales, s.offsets) == ((1 / 255,), (0.0,))
        assert float(s.read(1).max()) * s.scales[0] == pytest.approx(a.max() / 255)


def _rio(*args: object) -> None:
    rio = Path(sys.executable).parent / "rio"  # rasterio's command line, which a pip install of geoseg has
    res = subprocess.run([str(rio), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_rio_commands_the_errors_suggest_fix_the_rasters(tmp_path):  # type: ignore[no-untyped-def]
    """Each hint's pip-installable command (`rio edit-info`, `rio warp`, `rio warp --like`) really fixes the file."""
    nocrs = tmp_path / "nocrs.tif"
    _write(nocrs, transform=Affine(10, 0, 500000, 0, -10, 3400000))
    with pytest.raises(RasterReadError, match=r"`rio edit-info --crs EPSG:32643 .*nocrs\.tif`") as e:
        raster_info(nocrs)
    _rio(*str(e.value).split("`")[1].split()[1:])
    assert raster_info(nocrs).crs.to_epsg() == 32643
    rot = tmp_path / "rot.tif"
    _write(rot, crs="EPSG:32643", transform=Affine(10, 2, 500000, 2, -10, 3400000))
    with pytest.raises(RasterReadError, match=r"`rio warp .*rot\.tif northup\.tif`") as e:
        raster_info(rot)
    _rio("warp", rot, tmp_path / "northup.tif")
    t = raster_info(tmp_path / "northup.tif").transform
    assert t.b == 0 and t.d == 0 and t.a > 0 > t.e
    ref = tmp_path / "ref.tif"
    _write(ref, crs="EPSG:32643", transform=Affine(10, 0, 500000, 0, -10, 3400000))
    shifted = tmp_path / "shifted.tif"
    _write(shifted, crs="EPSG:32643", transform=Affine(10, 0, 500003, 0, -10, 3400000))
    with pytest.raises(GridMismatchError, match=r"`rio warp .*shifted\.tif aligned\.tif --like .*ref\.tif`"):
        check_same_grid(raster_info(ref), raster_info(shifted))
    _rio("warp", shifted, tmp_path / "aligned.tif", "--like", ref)
    check_same_grid(raster_info(ref), raster_info(tmp_path / "aligned.tif"))
