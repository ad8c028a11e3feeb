"""Evaluation: the JSON equals metrics recomputed from ``predict_scene`` + labels; windows, vectors, errors."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.evaluate import evaluate as evaluate_cmd
from geoseg.cli.main import GeosegGroup
from geoseg.core.metrics import confusion_matrix, iou
from geoseg.errors import ConfigError, LabelError
from geoseg.ml.evaluate import evaluate, parse_window, window_tiles
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=200, width=256, seed=11)


@pytest.fixture(scope="module")
def model(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("models") / "m"
    train(region.scene, region.labels, region.classes, out, tile=64, epochs=2, chips_per_epoch=32, seed=1,
          forest=False)  # evaluate reads any checkpoint; the forest is tests/ml/test_forest.py's
    return out


@pytest.fixture(scope="module")
def predicted(region, model, tmp_path_factory):  # type: ignore[no-untyped-def]
    mask = tmp_path_factory.mktemp("pred") / "mask.tif"
    predict_scene(model, region.scene, mask, tile=64, overlap=8, batch_size=4, device="cpu")
    return mask


def _group() -> click.Group:
    return GeosegGroup("geoseg", commands={"evaluate": evaluate_cmd})


def test_json_equals_metrics_recomputed_from_predict_and_labels(region, model, predicted) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(_group(), ["evaluate", "--model", str(model), "--image", str(region.scene),
                                        "--labels", str(region.labels), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    with rasterio.open(predicted) as m, rasterio.open(region.labels) as lab:
        pred, target = m.read(1), lab.read(1)
    observed = pred != 255  # the image holds data
    cm = confusion_matrix(pred, target, 7, valid=observed)
    assert d["confusion_matrix"] == cm.tolist()
    assert d["pixels"] == int(((target != 255) & observed).sum())
    names = d["class_names"]
    assert names == ["background", "rice", "wheat", "sugarcane", "cotton", "maize", "fallow"]
    expected = iou(cm)
    for n, v in zip(names, expected):
        assert (d["per_class_iou"][n] is None) if np.isnan(v) else d["per_class_iou"][n] == pytest.approx(v)
    present = ~np.isnan(expected)
    assert d["miou"] == pytest.approx(expected[present].mean())
    assert d["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert set(d["per_class_f1"]) == set(names)
    assert d["tile"] == 64 and d["overlap"] == 8 and d["window"] == [0, 0, 200, 256]


def test_a_model_scored_against_its_own_mask_is_perfect(region, model, predicted) -> None:  # type: ignore[no-untyped-def]
    r = evaluate(model, region.scene, predicted, device="cpu")
    assert r.scores.miou == 1.0 and r.scores.pixel_accuracy == 1.0
    cm = np.asarray(r.scores.confusion)
    assert (cm == np.diag(np.diag(cm))).all()


def test_window_counts_only_its_pixels(region, model, predicted) -> None:  # type: ignore[no-untyped-def]
    r = evaluate(model, region.scene, region.labels, window="64,96,100,120", device="cpu")
    with rasterio.open(region.labels) as lab, rasterio.open(predicted) as m:
        target, pred = lab.read(1), m.read(1)
    t, p = target[64:164, 96:216], pred[64:164, 96:216]
    assert r.window == (64, 96, 100, 120)
    assert r.scores.pixels == int(((t != 255) & (p != 255)).sum())
    assert "mIoU" in r.summary().splitlines()[0] and "pixel accuracy" in r.summary().splitlines()[-1]
    # a window on the scene's tile lattice (stride 48) reads exactly the scene's tiles: same answer as the
    # scene prediction cut to the window (only batch composition differs, which may flip a near-tie)
    r = evaluate(model, region.scene, region.labels, window="48,96,96,96", device="cpu")
    t, p = target[48:144, 96:192], pred[48:144, 96:192]
    full = confusion_matrix(p, t, 7, valid=p != 255)
    assert np.abs(np.asarray(r.scores.confusion) - full).sum() <= 0.002 * full.sum()


def test_vector_labels(region, model) -> None:  # type: ignore[no-untyped-def]
    r = evaluate(model, region.scene, region.fields, label_field="class_id", device="cpu")
    d = r.to_dict()
    # fields only: no background label, so no background row
    assert sum(d["confusion_matrix"][0]) == 0 and d["pixels"] > 0


def test_window_tiles_partition_the_window() -> None:
    from affine import Affine
    from rasterio.windows import Window

    win = Window(30, 20, 150, 90)
    covered = np.zeros((200, 300), int)
    for t in window_tiles(Affine.identity(), win, 64, 8):
        covered[int(t.core.row_off): int(t.core.row_off + t.core.height),
                int(t.core.col_off): int(t.core.col_off + t.core.width)] += 1
        assert int(t.read.width) == 64
    assert (covered[20:110, 30:180] == 1).all() and covered.sum() == 150 * 90


def test_bad_window_and_mismatched_class_table(region, model, predicted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"window .* reaches outside"):
        parse_window("0,0,500,10", (200, 256))
    res = CliRunner().invoke(_group(), ["evaluate", "--model", str(model), "--image", str(region.scene),
                                        "--labels", str(region.labels), "--window", "1,2,3"])
    assert res.exit_code == 1 and "pass --window row,col,height,width" in res.output
    assert res.output.count("\n") == 1
    # a geoseg mask whose embedded class table names other classes
    other = tmp_path / "other.tif"
    with rasterio.open(predicted) as src:
        profile, a, tags = src.profile, src.read(1), src.tags()
    with rasterio.open(other, "w", **{**profile, "driver": "GTiff"}) as dst:
        dst.write(a, 1)
        dst.update_tags(GEOSEG_CLASSES=tags["GEOSEG_CLASSES"].replace("fallow", "fallow_land"))
    with pytest.raises(LabelError, match="differs from the model's"):
        evaluate(model, region.scene, other, device="cpu")
