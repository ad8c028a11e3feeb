"""Overview levels: geoseg's 2 x 2 halving against a plain per-block Python reference, and the COGs
RasterWriter makes with it (every overview level equals the halving of the level below)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.core.pyramid import halve, halved_shape, overview_levels
from geoseg.io.raster import RasterWriter


def _reference(a: np.ndarray, nodata, method: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Pixel by pixel, block by block: the rule as the docstring states it."""
    h, w = a.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    is_float = np.issubdtype(a.dtype, np.floating)
    fill = nodata if nodata is not None else (np.nan if is_float else 0)
    out = np.empty((oh, ow), dtype=np.float64)
    for r in range(oh):
        for c in range(ow):
            vals = [a[i, j] for i in range(2 * r, min(2 * r + 2, h)) for j in range(2 * c, min(2 * c + 2, w))]
            ok = [v for v in vals if not (is_float and np.isnan(v)) and (nodata is None or v != nodata)]
            if method == "nearest":
                first = a[2 * r, 2 * c]
                bad = (is_float and np.isnan(first)) or (nodata is not None and first == nodata)
                out[r, c] = fill if bad else first
            elif not ok:
                out[r, c] = fill
            elif method == "average":
                m = sum(float(v) for v in ok) / len(ok)
                out[r, c] = m if is_float else np.floor(m + 0.5)
            else:
                counts = Counter(ok)
                best = max(counts.values())
                out[r, c] = min(v for v, k in counts.items() if k == best)
    return out.astype(a.dtype)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), method=st.sampled_from(["average", "mode", "nearest"]),
       dtype=st.sampled_from(["uint8", "uint16", "int16", "float32"]),
       nodata_kind=st.sampled_from(["none", "0", "max", "nan"]),
       seed=st.integers(0, 10_000))
def test_halve_matches_the_per_block_reference(h, w, method, dtype, nodata_kind, seed):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, (h, w)).astype(dtype)  # few values: ties and nodata blocks happen often
    is_float = np.issubdtype(a.dtype, np.floating)
    nodata = {"none": None, "0": 0, "max": (np.finfo(dtype).max if is_float else np.iinfo(dtype).max),
              "nan": np.nan if is_float else None}[nodata_kind]
    if nodata_kind == "max":
        a[rng.random((h, w)) < 0.3] = nodata
    if nodata_kind == "nan" and is_float:
        a[rng.random((h, w)) < 0.3] = np.nan
    got = halve(a, nodata, method)
    want = _reference(a, nodata, method)
    assert got.shape == halved_shape(h, w) and got.dtype == a.dtype
    np.testing.assert_array_equal(got, want)
    # the band axis is only carried
    np.testing.assert_array_equal(halve(np.stack([a, a]), nodata, method), np.stack([want, want]))


def test_average_rounds_to_nearest_and_never_overflows() -> None:
    a = np.array([[65535, 65535], [65534, 65535]], np.uint16)
    assert halve(a, None, "average").tolist() == [[65535]]  # 65534.75 -> 65535, computed in float64
    assert halve(np.array([[1, 2], [2, 2]], np.uint8), None, "average").tolist() == [[2]]  # 1.75
    assert halve(np.array([[1, 1], [2, 1]], np.uint8), None, "average").tolist() == [[1]]  # 1.25


def test_mode_keeps_the_majority_class_and_the_smaller_on_a_tie() -> None:
    assert halve(np.array([[3, 3], [1, 3]], np.uint8), 255, "mode").tolist() == [[3]]
    assert halve(np.array([[4, 2], [2, 4]], np.uint8), 255, "mode").tolist() == [[2]]
    assert halve(np.array([[255, 255], [255, 6]], np.uint8), 255, "mode").tolist() == [[6]]
    assert halve(np.array([[255, 255], [255, 255]], np.uint8), 255, "mode").tolist() == [[255]]


def test_bad_method_and_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="overview method 'cubic'"):
        halve(np.zeros((2, 2), np.uint8), None, "cubic")
    with pytest.raises(ValueError, match="height, width"):
        halve(np.zeros((2,), np.uint8), None, "average")


@pytest.mark.parametrize(("h", "w", "block", "count", "want"), [
    (1200, 1200, 512, None, [2, 4]), (512, 512, 512, None, []), (513, 10, 512, None, [2]),
    (5000, 300, 256, None, [2, 4, 8, 16, 32]), (4096, 4096, 512, 1, [2]), (1, 1, 512, 3, []),
])
def test_overview_levels_follow_gdals_auto_rule(h, w, block, count, want):  # type: ignore[no-untyped-def]
    assert overview_levels(h, w, block, count) == want


def _write(path: Path, a: np.ndarray, **kw) -> None:  # type: ignore[no-untyped-def]
    b, h, w = a.shape
    with RasterWriter(path, shape=(h, w), transform=Affine(10, 0, 500000, 0, -10, 3400000), crs="EPSG:32643",
                      count=b, dtype=a.dtype.name, **kw) as wr:
        for r in range(0, h, 300):  # windows that do not match the tiles
            wr.write(a[:, r:r + 300], Window(0, r, w, min(300, h - r)))


def test_cog_overviews_are_geosegs_halving_level_by_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(1, 5000, (3, 1100, 1300)).astype(np.uint16)
    a[:, :150] = 0  # a nodata strip, to see it stay nodata and not pull averages down
    a[1, 500:510, 600:611] = 0
    _write(tmp_path / "season.tif", a, nodata=0, overview_resampling="average", scale=1e-4,
           tags={"GEOSEG_BANDS": "x"}, band_descriptions=["jun_B04", "jun_B08", "jul_B04"])
    assert sorted(os.listdir(tmp_path)) == ["season.tif"]  # no level file, no VRT left behind
    with rasterio.open(tmp_path / "season.tif") as d:
        assert d.overviews(1) == [2, 4] and d.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert d.descriptions == ("jun_B04", "jun_B08", "jul_B04") and d.scales == (1e-4,) * 3
        assert d.tags()["GEOSEG_BANDS"] == "x" and d.nodata == 0
        assert d.transform == Affine(10, 0, 500000, 0, -10, 3400000) and d.crs.to_epsg() == 32643
        np.testing.assert_array_equal(d.read(), a)
        level1 = d.read(out_shape=(3, 550, 650))
        level2 = d.read(out_shape=(3, 275, 325))
    np.testing.assert_array_equal(level1, halve(a, 0, "average"))
    np.testing.assert_array_equal(level2, halve(level1, 0, "average"))
    assert (level1[:, :75] == 0).all() and (level1[[0, 2], 75:] > 0).all()
    # a hole stays a hole where a whole 2 x 2 block is nodata, and is averaged over where one is not
    assert (level1[1, 250:255, 300:305] == 0).all() and (
        level1[1, 250:255, 305] == np.floor(a[1, 500:510, 611].reshape(5, 2).mean(axis=1) + 0.5)).all()


def test_mask_overviews_keep_classes_by_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a = rng.integers(0, 7, (1, 700, 900)).astype(np.uint8)
    a[0, :40] = 255
    _write(tmp_path / "mask.tif", a, nodata=255, overview_resampling="mode")
    with rasterio.open(tmp_path / "mask.tif") as d:
        assert d.overviews(1) == [2]
        np.testing.assert_array_equal(d.read(1, out_shape=(350, 450)), halve(a[0], 255, "mode"))
        assert set(np.unique(d.read(1, out_shape=(350, 450)))) <= set(range(7)) | {255}


def test_creation_options_still_steer_the_overviews(tmp_path: Path) -> None:
    a = np.random.default_rng(5).integers(1, 9, (1, 1100, 1100)).astype(np.uint16)
    _write(tmp_path / "none.tif", a, overview_resampling="average", creation_options={"OVERVIEWS": "NONE"})
    _write(tmp_path / "one.tif", a, overview_resampling="average", creation_options={"OVERVIEW_COUNT": "1"})
    _write(tmp_path / "gdal.tif", a, overview_resampling="average", creation_options={"RESAMPLING": "BILINEAR"})
    with rasterio.open(tmp_path / "none.tif") as d:
        assert d.overviews(1) == []
    with rasterio.open(tmp_path / "one.tif") as d:
        assert d.overviews(1) == [2]
        np.testing.assert_array_equal(d.read(out_shape=(1, 550, 550)), halve(a, None, "average"))
    with rasterio.open(tmp_path / "gdal.tif") as d:  # a method geoseg does not make: GDAL builds them
        assert d.overviews(1) == [2, 4]
    assert sorted(os.listdir(tmp_path)) == ["gdal.tif", "none.tif", "one.tif"]
