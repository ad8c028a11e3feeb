"""Scene prediction: grid, nodata and confidence conventions, band checks; stacking inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner

from geoseg.classes import default_classes
from geoseg.cli.main import cli
from geoseg.errors import CheckpointError, GridMismatchError
from geoseg.io.raster import raster_info
from geoseg.io.stack import stack_rasters
from geoseg.ml.model import ModelCard, build_from_card, save_checkpoint
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize
from tests.remote_servers import GDAL_HTTP_ENV, range_server

TF = Affine(10, 0, 560000, 0, -10, 3420000)


def _scene(path, h=150, w=210, bands=4, names=None, collar=True):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    a = rng.integers(200, 4000, (bands, h, w)).astype("uint16")
    if collar:
        a[:, :, :7] = 0
        a[:, -5:, :] = 0
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=bands, dtype="uint16", nodata=0,
                       crs="EPSG:32643", transform=TF) as d:
        d.write(a)
        for i, n in enumerate(names or [f"2024-06-15 {b}" for b in ["B", "G", "R", "NIR"]][:bands], start=1):
            d.set_band_description(i, n)
    return a


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    card = ModelCard(arch="unet", encoder="resnet18", in_channels=4, classes=default_classes(),
                     arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]},
                     bands=[f"2024-06-15 {b}" for b in ["B", "G", "R", "NIR"]],
                     band_mean=[2000.0] * 4, band_std=[1000.0] * 4, tile=64, overlap=16)
    d = tmp_path_factory.mktemp("model") / "m"
    save_checkpoint(d, build_from_card(card), card)
    return d


def test_predict_writes_mask_and_confidence_on_the_input_grid(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    a = _scene(tmp_path / "scene.tif")
    res = predict_scene(model_dir, tmp_path / "scene.tif", tmp_path / "mask.tif", confidence=tmp_path / "conf.tif",
                        tile=64, overlap=16, batch_size=3)
    nodata = (a == 0).any(axis=0)
    assert res.tiles == 5 * 7 and res.device == "cpu"
    with rasterio.open(tmp_path / "mask.tif") as m, rasterio.open(tmp_path / "conf.tif") as c:
        assert m.crs.to_epsg() == 32643 and m.transform == TF and m.shape == (150, 210)
        assert c.transform == TF and c.nodata == 0 and m.nodata == 255
        mask, conf = m.read(1), c.read(1)
    np.testing.assert_array_equal(mask == 255, nodata)
    np.testing.assert_array_equal(conf == 0, nodata)
    assert mask[~nodata].max() < 7 and conf[~nodata].min() >= 255 // 7


def test_prediction_is_deterministic_and_batch_size_only_moves_ties(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    _scene(tmp_path / "scene.tif")
    for name, bs in (("a", 1), ("b", 8), ("c", 8)):
        predict_scene(model_dir, tmp_path / "scene.tif", tmp_path / f"{name}.tif", tile=64, overlap=16, batch_size=bs)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b, \
            rasterio.open(tmp_path / "c.tif") as c:
        a1, b1, c1 = a.read(1), b.read(1), c.read(1)
    np.testing.assert_array_equal(b1, c1)  # same batches, same bytes (resume relies on it)
    # Another batch size changes float summation order: only near-ties may flip.
    assert (a1 != b1).mean() < 1e-3


def test_wrong_band_count_names_file_and_fix(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    _scene(tmp_path / "three.tif", bands=3)
    with pytest.raises(CheckpointError, match=r"three\.tif: has 3 bands, but .* expects 4 \(2024-06-15 B, .*geoseg stack"):
        predict_scene(model_dir, tmp_path / "three.tif", tmp_path / "m.tif")
    assert not (tmp_path / "m.tif").exists()


def test_wrong_band_order_is_refused(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    names = [f"2024-06-15 {b}" for b in ["NIR", "G", "R", "B"]]
    _scene(tmp_path / "swapped.tif", names=names)
    with pytest.raises(CheckpointError, match=r"band order differs .*band 1 is '2024-06-15 NIR', expected '2024-06-15 B'"):
        predict_scene(model_dir, tmp_path / "swapped.tif", tmp_path / "m.tif")


def test_stack_keeps_band_names_and_pixels(tmp_path):  # type: ignore[no-untyped-def]
    parts = []
    for i, name in enumerate(["b2", "b3", "b4"]):
        p = tmp_path / f"{name}.tif"
        with rasterio.open(p, "w", driver="GTiff", height=40, width=50, count=1, dtype="uint16", nodata=0,
                           crs="EPSG:32643", transform=TF) as d:
            d.write(np.full((1, 40, 50), i + 1, "uint16"))
        parts.append(p)
    for out in (tmp_path / "stack.vrt", tmp_path / "stack.tif"):
        res = stack_rasters(out, parts)
        assert res.bands == ["b2", "b3", "b4"]
        info = raster_info(out)
        assert info.count == 3 and info.transform == TF and info.nodata == 0 and info.descriptions == ("b2", "b3", "b4")
        with rasterio.open(out) as s:
            assert [int(s.read(i)[0, 0]) for i in (1, 2, 3)] == [1, 2, 3]


def test_stack_refuses_another_grid(tmp_path):  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    for p, tf in ((a, TF), (b, TF @ Affine.translation(1, 0))):
        with rasterio.open(p, "w", driver="GTiff", height=8, width=8, count=1, dtype="uint16", crs="EPSG:32643",
                           transform=tf) as d:
            d.write(np.ones((1, 8, 8), "uint16"))
    with pytest.raises(GridMismatchError, match=r"b\.tif is not on the grid of .*a\.tif: transform"):
        stack_rasters(tmp_path / "s.vrt", [a, b])
    assert not (tmp_path / "s.vrt").exists()


def test_tiled_prediction_agrees_with_whole_image_prediction(tmp_path):  # type: ignore[no-untyped-def]
    """A trained model: the stitched tiled mask equals the one-piece prediction on >= 99.5 % of pixels with
    the default overlap (measured on the demo region with the demo model: 99.96 %, see
    benchmarks/tiled_vs_whole.py)."""

    region = synthesize(tmp_path / "r", height=640, width=640, seed=11)
    res = train(region.scene, region.labels, region.classes, tmp_path / "m", tile=128, chip=64, epochs=15,
                patience=15, chips_per_epoch=64, seed=1, forest=False)  # the network's seams are the question
    assert res.card.metrics["miou"] > 0.6  # a model that has learned something, or the comparison means little
    predict_scene(tmp_path / "m", region.scene, tmp_path / "whole.tif", tile=640, overlap=0, device="cpu")
    with rasterio.open(tmp_path / "whole.tif") as d:
        whole = d.read(1)
    valid = whole != 255
    for tile in (512, 256):  # 512: the default tile, 2 x 2 tiles here; 256: 9 tiles
        r = predict_scene(tmp_path / "m", region.scene, tmp_path / f"t{tile}.tif", tile=tile, device="cpu")
        assert r.tiles == (4 if tile == 512 else 9)
        with rasterio.open(tmp_path / f"t{tile}.tif") as d:
            tiled = d.read(1)
        np.testing.assert_array_equal(tiled == 255, ~valid)
        agreement = (tiled[valid] == whole[valid]).mean()
        assert agreement >= 0.995, (tile, agreement)


def test_predict_cli_creation_options_json_and_overwrite(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    """`geoseg predict --co COMPRESS=ZSTD --co BLOCKSIZE=128`: both COGs take the options, keep the COG layout
    and the same pixels as the default; an existing output needs --overwrite; options that would break the
    COG are refused before any work."""
    _scene(tmp_path / "scene.tif")
    base = ["predict", "--model", str(model_dir), str(tmp_path / "scene.tif"), "--tile", "64"]
    ref = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "ref.tif")])
    assert ref.exit_code == 0, ref.output
    args = [*base, "--out", str(tmp_path / "mask.tif"), "--confidence", str(tmp_path / "conf.tif"),
            "--co", "COMPRESS=ZSTD", "--co", "BLOCKSIZE=128", "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["mask"] == str(tmp_path / "mask.tif") and got["confidence"] == str(tmp_path / "conf.tif")
    assert got["tiles"] == 5 * 7 and got["device"] == "cpu"
    for name in ("mask.tif", "conf.tif"):
        with rasterio.open(tmp_path / name) as m:
            assert m.compression.name == "zstd" and m.block_shapes == [(128, 128)]
            assert m.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and m.overviews(1) == [2]  # 210 px > 128
    with rasterio.open(tmp_path / "mask.tif") as m, rasterio.open(tmp_path / "ref.tif") as r:
        assert (m.read(1) == r.read(1)).all() and r.compression.name == "deflate"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "mask.tif: the output already exists; pass --overwrite" in again.stderr
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0
    bad = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "x.tif"), "--co", "TILED=NO"])
    assert bad.exit_code == 1 and "creation option TILED cannot be set on this COG (a COG is always tiled)" in bad.stderr
    assert not (tmp_path / "x.tif").exists()


def test_predict_reads_a_remote_image_as_it_reads_a_local_one(model_dir, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """`geoseg predict http://127.0.0.1:PORT/scene.tif` (the https:// code path) gives the mask of the local file."""
    (tmp_path / "served").mkdir()
    _scene(tmp_path / "served" / "scene.tif")
    for k, v in GDAL_HTTP_ENV.items():
        monkeypatch.setenv(k, v)
    local = predict_scene(model_dir, tmp_path / "served" / "scene.tif", tmp_path / "local.tif", tile=64)
    with range_server(tmp_path / "served") as srv:
        out = CliRunner().invoke(cli, ["predict", "--model", str(model_dir), f"{srv.url}/scene.tif", "--tile", "64",
                                       "--out", str(tmp_path / "remote.tif")])
        assert out.exit_code == 0, out.output
        assert any(r is not None for m, p, r in srv.requests if p == "/scene.tif")  # read by byte ranges
    with rasterio.open(local.mask) as a, rasterio.open(tmp_path / "remote.tif") as b:
        assert (a.read(1) == b.read(1)).all() and a.transform == b.transform
