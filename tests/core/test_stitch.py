"""Tile -> identity model -> stitch reproduces the input bit for bit, in memory and through files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.core.grid import tile_grid
from geoseg.core.stitch import apply_nodata, stitch, trim
from geoseg.io.raster import RasterWriter, iter_tiles, open_raster


def _read_padded(image: np.ndarray, tile) -> np.ndarray:  # type: ignore[no-untyped-def]
    """What a reader returns for a tile: the window, edge-padded with a sentinel."""
    h, w = image.shape[-2:]
    r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
    out = np.full((*image.shape[:-2], int(tile.read.height), int(tile.read.width)), -7, dtype=image.dtype)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + int(tile.read.height), h), min(c0 + int(tile.read.width), w)
    out[..., rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = image[..., rr0:rr1, cc0:cc1]
    return out


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 400),
    w=st.integers(1, 400),
    bands=st.integers(1, 3),
    size=st.sampled_from([16, 32, 48, 64, 128, 256]),
    data=st.data(),
)
def test_identity_stitch_is_bit_exact(h, w, bands, size, data):  # type: ignore[no-untyped-def]
    overlap = data.draw(st.integers(0, (size - 1) // 2))
    image = np.random.default_rng(h * 1000 + w).integers(-5, 250, size=(bands, h, w)).astype("int16")
    g = tile_grid((h, w), size=size, overlap=overlap)
    out = stitch(g, ((t, _read_padded(image, t)) for t in g))
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)
    assert (out != -7).all()  # no padding leaked into the result


def test_stitch_refuses_wrong_shapes_and_duplicates():
    g = tile_grid((40, 40), size=32, overlap=8)
    with pytest.raises(ValueError, match="does not match the read window"):
        trim(g[0], np.zeros((30, 32)))
    with pytest.raises(ValueError, match="given twice"):
        stitch(g, [(g[0], np.zeros((32, 32))), (g[0], np.zeros((32, 32)))])


def test_apply_nodata_marks_only_invalid_pixels():
    a = np.arange(6, dtype="uint8").reshape(2, 3)
    valid = np.array([[True, False, True], [False, True, True]])
    out = apply_nodata(a, valid)
    assert out.tolist() == [[0, 255, 2], [255, 4, 5]]
    assert a.tolist() == [[0, 1, 2], [3, 4, 5]]  # input untouched


@st.composite
def _file_case(draw):  # type: ignore[no-untyped-def]
    h = draw(st.integers(1, 300))
    w = draw(st.integers(1, 300))
    size = draw(st.sampled_from([16, 32, 64, 96]))
    overlap = draw(st.integers(0, (size - 1) // 2))
    dtype = draw(st.sampled_from(["uint8", "uint16", "float32"]))
    res = draw(st.sampled_from([(10.0, 10.0), (9.9948, 9.9974), (0.00025, 0.0002)]))
    return h, w, size, overlap, dtype, res


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_file_case())
def test_file_round_trip_keeps_pixels_crs_and_transform(tmp_path, case):  # type: ignore[no-untyped-def]
    h, w, size, overlap, dtype, (rx, ry) = case
    crs = "EPSG:4326" if rx < 1 else "EPSG:32643"
    tf = Affine(rx, 0, 500000.123 if rx > 1 else 75.5, 0, -ry, 3400000.0 if rx > 1 else 31.0)
    rng = np.random.default_rng(h + 7 * w)
    image = (rng.random((2, h, w)) * 200).astype(dtype)
    src_path = tmp_path / f"in-{h}-{w}-{size}-{overlap}-{dtype}.tif"
    with rasterio.open(src_path, "w", driver="GTiff", height=h, width=w, count=2, dtype=dtype, crs=crs, transform=tf) as d:
        d.write(image)
    out_path = tmp_path / f"out-{h}-{w}-{size}-{overlap}-{dtype}.tif"
    g = tile_grid((h, w), tf, size=size, overlap=overlap)
    with open_raster(src_path) as src:
        with RasterWriter(out_path, shape=(h, w), transform=src.transform, crs=src.crs, count=2, dtype=dtype) as wr:
            for td in iter_tiles(src, g, pad="reflect"):
                assert td.array.shape == (2, size, size)
                wr.write_tile(td.tile, td.array)  # identity model
    with rasterio.open(out_path) as o, rasterio.open(src_path) as i:
        assert o.crs == i.crs
        assert o.transform == i.transform
        assert (o.width, o.height) == (i.width, i.height)
        np.testing.assert_array_equal(o.read(), image)
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name) == []
