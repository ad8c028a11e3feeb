"""The forest that reads each pixel's neighbourhood: its features equal a plain numpy computation,
tiles read the same context as the whole raster (no seams), training reads the same features as
inference, the radii survive saving, damaged radii are refused, and training chooses the kind
of forest on the validation blocks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from geoseg.cli.main import cli
from geoseg.errors import CheckpointError
from geoseg.ml.forest import (
    CONTEXT,
    card_forest,
    context_features,
    fit_forest,
    forest_proba,
    load_forest,
    training_pixels,
)
from geoseg.ml.infer import network_input
from geoseg.ml.model import load_checkpoint, read_card, save_checkpoint
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize

from ..workflow_helpers import write_model, write_scene

TRANSFORM = rasterio.Affine(10, 0, 560000, 0, -10, 3420000)


def _plain(x: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """Each pixel's values, then per radius the mean and (population) standard deviation of each
    channel over the square around it, clipped to the array: loops, float64."""
    c, h, w = x.shape
    out = []
    for i in range(h):
        for j in range(w):
            row = list(x[:, i, j].astype(np.float64))
            for r in radii:
                win = x[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].reshape(c, -1).astype(np.float64)
                row += list(win.mean(axis=1)) + list(win.std(axis=1))
            out.append(row)
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12),
       radii=st.sampled_from([(), (1,), (2,), (1, 3), (1, 2, 4)]), data=st.data())
def test_context_features_equal_a_plain_computation(seed: int, c: int, h: int, w: int, radii: tuple[int, ...],
                                                    data: st.DataObject) -> None:
    x = np.random.default_rng(seed).normal(2.0, 1.5, (c, h, w)).astype(np.float32)
    r0 = data.draw(st.integers(0, h - 1))
    r1 = data.draw(st.integers(r0 + 1, h))
    got = context_features(torch.from_numpy(x), radii, (r0, r1)).numpy()
    ref = _plain(x, radii)[r0 * w:r1 * w]
    assert got.shape == ((r1 - r0) * w, c * (1 + 2 * len(radii)))
    np.testing.assert_allclose(got, ref, atol=2e-5)


def _whole_features(scene, mean, std, radii) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The context features of every pixel of ``scene`` computed on the whole raster, as the
    network sees it (0 where a band holds no data) and 0 outside it: (h, w, features)."""
    with rasterio.open(scene) as s:
        a = s.read()
    valid = (a != 0).all(axis=0)
    x = network_input(a[None], valid[None], mean, std)[0]
    m = max(radii)
    padded = np.pad(x, ((0, 0), (m, m), (m, m)))
    f = context_features(torch.from_numpy(np.ascontiguousarray(padded, np.float32)), radii).numpy()
    h, w = valid.shape
    return f.reshape(h + 2 * m, w + 2 * m, -1)[m:m + h, m:m + w]


@pytest.fixture(scope="module")
def context_model(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An untrained network fused at weight 1 with a forest that reads the neighbourhood, fitted on
    the whole raster's context features; the map the whole raster gives."""
    d = tmp_path_factory.mktemp("cm")
    write_scene(d / "scene.tif", 128, 160, TRANSFORM)
    write_model(d / "net")
    model, card = load_checkpoint(d / "net")
    f = _whole_features(d / "scene.tif", card.band_mean, card.band_std, CONTEXT)
    with rasterio.open(d / "scene.tif") as s:
        valid = (s.read() != 0).all(axis=0)
    x = f[valid]
    # classes that follow the spread of band 1 over the 3 x 3 square as much as the pixel's own value
    score = x[:, 0] + 3 * x[:, 8]
    y = np.digitize(score, np.quantile(score, [0.3, 0.7])).astype(np.int64) + 1
    forest = fit_forest(np.ascontiguousarray(x), y, len(card.classes), 0, trees=8, context=CONTEXT)
    assert (forest.feature >= 4).any()  # it does read the context
    save_checkpoint(d / "model", model, dataclasses.replace(card, forest={"weight": 1.0}), forest=forest)
    expected = np.full(valid.shape, 255, np.uint8)
    walk = forest_proba(dataclasses.replace(forest, context=()),
                        torch.from_numpy(np.ascontiguousarray(x.T[None, :, :, None])))
    expected[valid] = walk[0, :, :, 0].argmax(dim=0).numpy()
    return d, expected


def test_tiles_read_the_same_context_as_the_whole_raster(context_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, expected = context_model
    for tile, overlap in ((64, 8), (96, 3), (48, 16)):
        predict_scene(d / "model", d / "scene.tif", tmp_path / f"{tile}.tif", tile=tile, overlap=overlap)
        with rasterio.open(tmp_path / f"{tile}.tif") as s:
            np.testing.assert_array_equal(s.read(1), expected, err_msg=f"tile {tile} overlap {overlap}")
    assert len(np.unique(expected[expected != 255])) == 3


def test_training_reads_the_features_inference_reads(context_model) -> None:  # type: ignore[no-untyped-def]
    d, _ = context_model
    _, card = load_checkpoint(d / "net")
    f = _whole_features(d / "scene.tif", card.band_mean, card.band_std, CONTEXT)
    h, w = f.shape[:2]
    labels = np.full((h, w), 255, np.uint8)
    labels[::3, ::2] = (np.arange(h)[::3, None] + np.arange(w)[None, ::2]) % 4
    path = d / "labels.tif"
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32643", transform=TRANSFORM) as t:
        t.write(labels, 1)
    windows = [rasterio.windows.Window(c, r, min(48, w - c), min(40, h - r)) for r in range(0, h, 40)
               for c in range(0, w, 48)]
    class Band:  # the labels protocol: read(window) -> class ids
        def read(self, window):  # type: ignore[no-untyped-def]
            return labels[window.toslices()]

    with rasterio.open(d / "scene.tif") as src:
        x, y = training_pixels([(src, Band(), windows, None)], card.band_mean, card.band_std, "all", 1.0,
                               np.random.default_rng(0), CONTEXT)
    with rasterio.open(d / "scene.tif") as s:
        valid = (s.read() != 0).all(axis=0)
    want_x, want_y = [], []
    for win in windows:
        sl = (slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width))
        keep = (labels[sl] != 255) & valid[sl]
        want_x.append(f[sl][keep])
        want_y.append(labels[sl][keep])
    np.testing.assert_array_equal(y, np.concatenate(want_y))
    np.testing.assert_allclose(x, np.concatenate(want_x), atol=1e-5)
    assert x.shape[1] == 4 * (1 + 2 * len(CONTEXT))


def test_the_radii_are_saved_and_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3 * 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 7] > 0).astype(np.int64)
    forest = fit_forest(x, y, 2, 0, trees=3, max_leaves=16, context=(1, 3))
    path = tmp_path / "f.safetensors"
    save_file(forest.tensors(), str(path))
    back = load_forest(path, 3, 2)
    assert back.context == (1, 3)
    img = torch.from_numpy(rng.normal(size=(1, 3, 9, 11)).astype(np.float32))
    np.testing.assert_array_equal(forest_proba(back, img).numpy(), forest_proba(forest, img).numpy())
    with pytest.raises(CheckpointError, match=r"split channels up to \d+, but the model reads 2 channels \(10 with"):
        load_forest(path, 2, 2)
    for bad, message in ((np.array([0, 3], np.int32), r"context radii \[0, 3\]"),
                         (np.array([3, 1], np.int32), r"context radii \[3, 1\]"),
                         (np.array([1.0, 3.0], np.float32), r"context radii \[1\.0, 3\.0\] \(float32\)")):
        save_file({**forest.tensors(), "context": bad}, str(path))
        with pytest.raises(CheckpointError, match=message) as e:
            load_forest(path, 3, 2)
        assert str(e.value).startswith(str(path)) and "expected 1 to 4 increasing radii" in str(e.value)


def test_training_chooses_the_kind_of_forest_on_the_validation_blocks(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    region = synthesize(tmp_path / "r", height=128, width=160, seed=3)
    common = {"epochs": 1, "seed": 0, "tile": 32, "chips_per_epoch": 16, "batch_size": 8}
    res = train(region.scene, region.labels, region.classes, tmp_path / "m", overlap=4, **common)
    rec = res.card.training["forest"]
    assert set(rec["brier_by_kind"]) == {"pixel", "context"}
    chosen = "context" if rec["context"] else "pixel"
    assert rec["context"] in ([], list(CONTEXT))
    assert rec["brier_by_kind"][chosen] == min(rec["brier_by_kind"].values())
    assert rec["brier_by_kind"][chosen] == rec["brier_by_weight"][f"{rec['weight']:.1f}"]
    if res.card.forest:
        assert list(card_forest(res.model_dir, res.card).context) == rec["context"]
    # a halo narrower than the context's reach: the pixel's own values only
    res = train(region.scene, region.labels, region.classes, tmp_path / "n", overlap=max(CONTEXT) - 1, **common)
    assert set(res.card.training["forest"]["brier_by_kind"]) == {"pixel"}
    assert res.card.training["forest"]["context"] == []
    # a context forest over many channels is fitted on fewer pixels, so that its rows stay bounded
    channels = len(res.card.band_mean)
    monkeypatch.setattr("geoseg.ml.train.MAX_ROW_BYTES", 4 * channels * (1 + 2 * len(CONTEXT)) * 300)
    res = train(region.scene, region.labels, region.classes, tmp_path / "b", overlap=4, **common)
    rows = res.card.training["forest"]["pixels_by_kind"]
    assert 300 <= rows["context"] < 330 and 1500 <= rows["pixel"] < 1600, rows
    monkeypatch.undo()
    # asked for by the command line
    out = CliRunner().invoke(cli, ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes",
                                   str(region.classes), "--out", str(tmp_path / "c"), "--tile", "32", "--epochs", "1",
                                   "--no-forest-context"])
    assert out.exit_code == 0, out.output
    assert set(read_card(tmp_path / "c").training["forest"]["brier_by_kind"]) == {"pixel"}
