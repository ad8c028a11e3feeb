"""Mosaicking scene masks: the first valid scene wins, and the output is the same however the blocks run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoseg.classes import NODATA, default_classes
from geoseg.errors import RasterReadError
from geoseg.io import mosaic

T10 = Affine(10, 0, 600_000, 0, -10, 3_380_000)


def _write(path, a, transform=T10, crs="EPSG:32643", nodata=NODATA):  # type: ignore[no-untyped-def]
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[0], width=a.shape[1], count=1, dtype="uint8",
                       crs=crs, transform=transform, nodata=nodata) as d:
        d.write(a, 1)
    return path


@pytest.fixture
def scenes(tmp_path):  # type: ignore[no-untyped-def]
    """Two overlapping scenes, the first with a nodata hole, each with a confidence raster."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4, (90, 130)).astype("uint8")
    a[10:30, 40:70] = NODATA
    b = rng.integers(0, 4, (80, 110)).astype("uint8")
    tb = T10 @ Affine.translation(50, 15)  # 50 px right, 15 px down: over part of the hole
    ms = [_write(tmp_path / "a.tif", a), _write(tmp_path / "b.tif", b, tb)]
    cs = [_write(tmp_path / "ca.tif", np.full_like(a, 100), nodata=0),
          _write(tmp_path / "cb.tif", np.full_like(b, 200), tb, nodata=0)]
    return ms, cs, a, b


def _digest(path):  # type: ignore[no-untyped-def]
    with rasterio.open(path) as s:
        return hashlib.sha256(s.read().tobytes()).hexdigest()


def test_first_valid_scene_wins(scenes, tmp_path):  # type: ignore[no-untyped-def]
    ms, cs, a, b = scenes
    grid = mosaic.mosaic_masks(ms, tmp_path / "m.tif", confidences=cs, out_confidence=tmp_path / "c.tif",
                               classes=default_classes(), block=32)
    assert grid.shape == (95, 160) and grid.transform == T10
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "c.tif") as c:
        out, conf = m.read(1), c.read(1)
    valid_a = np.zeros(out.shape, bool)
    valid_a[:90, :130] = a != NODATA
    np.testing.assert_array_equal(out[valid_a], a[a != NODATA])  # the first scene wins where it has data
    assert (conf[valid_a] == 100).all()
    np.testing.assert_array_equal(out[15:30, 50:70], b[:15, :20])  # its hole filled from the second
    assert (conf[15:30, 50:70] == 200).all()
    assert (out[10:15, 40:70] == NODATA).all() and (conf[10:15, 40:70] == 0).all()  # where neither has data
    assert (out[90:, :50] == NODATA).all() and (conf[90:, :50] == 0).all()


def test_the_output_does_not_depend_on_threads_or_job_size(scenes, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    ms, cs, _, _ = scenes
    digests = set()
    for job_pixels, workers in [(1 << 30, 1), (32 * 32, 3), (3 * 32 * 32, 2)]:
        monkeypatch.setattr(mosaic, "JOB_PIXELS", job_pixels)
        out = tmp_path / f"m{job_pixels}.tif"
        mosaic.mosaic_masks(ms, out, confidences=cs, out_confidence=tmp_path / "c.tif", classes=default_classes(),
                            block=32, workers=workers)
        digests.add((_digest(out), _digest(tmp_path / "c.tif")))
    assert len(digests) == 1


def test_a_missing_confidence_raster_fails_before_any_output(scenes, tmp_path):  # type: ignore[no-untyped-def]
    ms, cs, _, _ = scenes
    with pytest.raises(RasterReadError, match="nope.tif: file not found"):
        mosaic.mosaic_masks(ms, tmp_path / "m.tif", confidences=[cs[0], tmp_path / "nope.tif"],
                            out_confidence=tmp_path / "c.tif", classes=default_classes())
    assert not (tmp_path / "m.tif").exists()
