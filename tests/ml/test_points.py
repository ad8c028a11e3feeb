"""Training and evaluating from GPS points: the loss sees only point pixels, points are held out
whole, chips sit around training points, points are scored as points, and the command line
reports dropped points and fails in one line.

The end-to-end run trains on a 256 x 320 synthetic region with 64 px chips for 2 short epochs
(a few seconds on 2 CPU cores), as tests/ml/test_train.py does.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from click.testing import CliRunner

from geoseg.classes import NODATA, default_classes, load_classes
from geoseg.cli.evaluate import evaluate as evaluate_cmd
from geoseg.cli.main import GeosegGroup
from geoseg.cli.train import train as train_cmd
from geoseg.core.grid import Window
from geoseg.errors import LabelError
from geoseg.io.labels import label_counts, open_labels
from geoseg.io.points import PointLabels
from geoseg.io.raster import open_raster, raster_info
from geoseg.ml.chips import ChipSampler
from geoseg.ml.evaluate import evaluate, score_points, window_tiles
from geoseg.ml.losses import make_loss
from geoseg.ml.split import make_split
from geoseg.synth import synthesize


def _group() -> click.Group:
    return GeosegGroup("geoseg", commands={"train": train_cmd, "evaluate": evaluate_cmd})


def _draw_points(region, n: int, seed: int, path: Path, crs: str = "EPSG:4326", extra=()) -> Path:  # type: ignore[no-untyped-def]
    """``n`` points on labelled pixels of the region's labels.tif (class names in ``crop``), in ``crs``."""
    with rasterio.open(region.labels) as src:
        lab, tf, scene_crs = src.read(1), src.transform, src.crs
    names = load_classes(region.classes).names
    rng = np.random.default_rng(seed)
    rr, cc = np.nonzero(lab != NODATA)
    pick = rng.choice(rr.size, n, replace=False)
    x, y = tf @ (cc[pick] + rng.uniform(0.05, 0.95, n), rr[pick] + rng.uniform(0.05, 0.95, n))
    crops = [names[v] for v in lab[rr[pick], cc[pick]]]
    xy = list(zip(np.asarray(x).tolist(), np.asarray(y).tolist()))
    for (px, py), crop in extra:
        xy.append((px, py))
        crops.append(crop)
    gdf = gpd.GeoDataFrame({"crop": crops}, geometry=shapely.points(np.asarray(xy)), crs=scene_crs)
    gdf.to_crs(crs).to_file(path)
    return path


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=256, width=320, seed=3)


@pytest.fixture(scope="module")
def points(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    """400 points in EPSG:4326, plus one far outside the scene."""
    with rasterio.open(region.labels) as src:
        far = src.transform @ (-500, -500)
    return _draw_points(region, 400, 0, tmp_path_factory.mktemp("pts") / "points.gpkg",
                        extra=[((float(far[0]), float(far[1])), "rice")])


@pytest.fixture(scope="module")
def trained(region, points, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("models") / "m"
    res = CliRunner().invoke(_group(), [
        "train", "--image", str(region.scene), "--labels", str(points), "--label-field", "crop",
        "--point-radius", "10", "--classes", str(region.classes), "--out", str(out), "--tile", "64",
        "--epochs", "2", "--batch-size", "4", "--seed", "0",
    ])
    return out, res


# --------------------------------------------------------------------------------------
def test_the_loss_counts_only_labelled_pixels() -> None:
    torch.manual_seed(0)
    k = 4
    logits = torch.randn(2, k, 16, 16)
    target = torch.full((2, 16, 16), NODATA, dtype=torch.int64)
    spots = [(0, 3, 4, 1), (0, 10, 12, 2), (1, 7, 7, 1), (1, 15, 0, 3)]
    for b, r, c, v in spots:
        target[b, r, c] = v
    w = [0.5, 1.0, 2.0, 4.0]
    loss = make_loss("ce", w)
    got = float(loss(logits, target))
    # by hand over the 4 labelled pixels only: weighted mean of -log softmax
    num = den = 0.0
    for b, r, c, v in spots:
        logp = torch.log_softmax(logits[b, :, r, c], dim=0)[v]
        num += -w[v] * float(logp)
        den += w[v]
    assert got == pytest.approx(num / den, rel=1e-5)
    # unlabelled pixels: any logits give the same loss, and they get no gradient
    other = logits.clone()
    mask = (target == NODATA).unsqueeze(1).expand_as(other)
    other[mask] = torch.randn(int(mask.sum())) * 100
    other.requires_grad_(True)
    for name in ("ce", "dice", "ce+dice"):
        fn = make_loss(name, w)
        assert float(fn(other, target).detach()) == pytest.approx(float(fn(logits, target)), rel=1e-5)
        other.grad = None
        fn(other, target).backward()
        assert float(other.grad[mask].abs().max()) == 0.0
        assert float(other.grad[~mask].abs().max()) > 0.0


def test_points_are_held_out_whole_by_block(region, points) -> None:  # type: ignore[no-untyped-def]
    info = raster_info(region.scene)
    table = load_classes(region.classes)
    lab = open_labels(points, info, table, field="crop", point_radius=15)
    assert isinstance(lab, PointLabels) and lab.n == 400
    counts = label_counts(lab, (256, 320), 64)
    assert int(counts.sum()) == int(lab.pixels_per_point.sum())
    split = make_split(counts, (256, 320), 64, np.random.default_rng(0))
    val = split.holds_out(lab.rows, lab.cols)
    assert 0 < val.sum() < lab.n
    tr, va = lab.subset(~val), lab.subset(val)
    # no point in both sets; together they are all the points
    a = {tuple(p) for p in tr.anchors.tolist()}
    b = {tuple(p) for p in va.anchors.tolist()}
    assert not (a & b) and tr.n + va.n == lab.n
    # each point lies in a block of its own side (rebuilt from the pattern, not from Split)
    pat = lambda rc: ((rc[:, 0] // 64) + 2 * (rc[:, 1] // 64)) % 5 == split.pattern  # noqa: E731
    assert pat(va.anchors).all() and not pat(tr.anchors).any()
    # every pixel of a point goes with it, even where its radius crosses into the other side's block
    whole = Window(0, 0, 320, 256)
    t_px, v_px = tr.read(whole) != NODATA, va.read(whole) != NODATA
    for sub, px in ((tr, t_px), (va, v_px)):
        assert int(px.sum()) == np.unique(sub.member_lin).size
        assert px[sub.member_rows, sub.member_cols].all()
    in_val = pat(np.stack([va.member_rows, va.member_cols], 1))
    assert not in_val.all()  # some validation pixels lie outside the validation blocks (radius 15 m) ...
    only_val = ~np.isin(va.member_lin, tr.member_lin)
    assert not t_px[va.member_rows[only_val], va.member_cols[only_val]].any()  # ... and are no training labels


def test_chips_are_placed_around_training_points(region, points) -> None:  # type: ignore[no-untyped-def]
    info = raster_info(region.scene)
    lab = open_labels(points, info, load_classes(region.classes), field="crop")
    counts = label_counts(lab, (256, 320), 64)
    split = make_split(counts, (256, 320), 64, np.random.default_rng(1))
    tr = lab.subset(~split.holds_out(lab.rows, lab.cols))
    with open_raster(region.scene) as src:
        sampler = ChipSampler([(src, tr, split)], 32, np.random.default_rng(0))
        for _ in range(200):
            _, win = sampler.window()
            r, c = int(win.row_off), int(win.col_off)
            assert not split.overlaps_validation(win)
            inside = (tr.rows >= r) & (tr.rows < r + 32) & (tr.cols >= c) & (tr.cols < c + 32)
            assert inside.any(), win
        for _ in range(20):
            _, target, _, _, _ = sampler.chip()
            assert (target != NODATA).any()


def test_training_from_points_end_to_end(region, points, trained) -> None:  # type: ignore[no-untyped-def]
    out, res = trained
    assert res.exit_code == 0, res.output
    assert "epoch   2/2" in res.output and "saved" in res.output
    # the point outside the scene: a warning line (stderr) and the summary
    assert "warning: " in res.stderr and "400 of 401 points used" in res.stderr
    assert "1 outside the image" in res.stderr and "400 of 401 points used" in res.stdout
    card = json.loads((out / "model.json").read_text())
    t = card["training"]
    assert t["label_field"] == "crop" and t["point_radius_m"] == 10.0
    (rep,) = t["points"]
    assert (rep["total"], rep["used"], rep["outside"]) == (401, 400, 1)
    assert rep["train_points"] + rep["validation_points"] == 400 and rep["validation_points"] > 0
    # the loss counted only point pixels: class weights come from the training points' pixels
    assert sum(t["train_label_pixels"]) <= 5 * rep["train_points"]
    assert card["metrics"]["split"].endswith("(pixels of the validation points)")
    assert card["metrics"]["pixels"] > 0


def test_evaluate_on_points_through_the_cli(region, points, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, _ = trained
    res = CliRunner().invoke(_group(), ["evaluate", "--model", str(out), "--image", str(region.scene),
                                        "--labels", str(points), "--label-field", "crop", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["unit"] == "points" and d["points"]["scored"] == 400 and d["pixels"] == 400
    assert sum(map(sum, d["confusion_matrix"])) == 400
    assert d["pixel_scores"]["pixels"] == 400  # radius 0, no two points on one pixel here
    assert "1 outside the image" in res.stderr
    text = CliRunner().invoke(_group(), ["evaluate", "--model", str(out), "--image", str(region.scene),
                                         "--labels", str(points), "--label-field", "crop", "--text"])
    assert "over 400 points (one vote per point" in text.stdout and "point accuracy" in text.stdout


def test_cli_errors_are_one_line(region, points, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, _ = trained
    bad = tmp_path / "bad.gpkg"
    gdf = gpd.read_file(points)
    gdf.loc[gdf.index[:2], "crop"] = ["paddy", "Wheat"]
    gdf.to_file(bad)
    lines = tmp_path / "lines.gpkg"
    gpd.GeoDataFrame({"crop": ["rice"]}, geometry=[shapely.LineString([(75, 30), (75.01, 30.01)])],
                     crs="EPSG:4326").to_file(lines)
    cases = [
        (["train", "--image", str(region.scene), "--labels", str(bad), "--label-field", "crop", "--classes",
          str(region.classes), "--out", str(tmp_path / "m")], "attribute 'crop' holds values 'Wheat', 'paddy' not in"),
        (["evaluate", "--model", str(out), "--image", str(region.scene), "--labels", str(lines), "--label-field",
          "crop"], "holds LineString geometries"),
        (["evaluate", "--model", str(out), "--image", str(region.scene), "--labels", str(points), "--label-field",
          "class"], "has no attribute 'class'; its attributes are ['crop']"),
        (["evaluate", "--model", str(out), "--image", str(region.scene), "--labels", str(region.labels),
          "--point-radius", "5"], "--point-radius 5 applies to vector label files"),
    ]
    for args, text in cases:
        res = CliRunner().invoke(_group(), args)
        assert res.exit_code == 1, res.output
        assert res.output.count("\n") == 1 and text in res.output, res.output
    assert not (tmp_path / "m").exists()


def test_points_are_scored_as_points_on_a_tiny_constructed_case(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A "model" whose logits are the bands: the image says what is predicted where."""
    tf = Affine(10, 0, 500_000, 0, -10, 3_400_000)
    pred = np.zeros((16, 16), np.int64)
    pred[:, 8:] = 1
    pred[12:, :] = 2
    img = np.stack([(pred == k).astype(np.uint16) + 1 for k in range(3)])
    img[:, 0:2, 0:2] = 0  # nodata
    scene = tmp_path / "s.tif"
    with rasterio.open(scene, "w", driver="GTiff", height=16, width=16, count=3, dtype="uint16", crs="EPSG:32643",
                       transform=tf, nodata=0) as dst:
        dst.write(img)
    # (row, col, true class); radius 10 m: plus shapes of 5 pixels. The point at (4, 8) straddles the 0|1
    # edge (4 pixels say 1, 1 says 0); the one at (0, 0) has only nodata pixels
    pts = [(2, 2, 0), (3, 10, 1), (5, 12, 0), (13, 3, 2), (13, 12, 1), (4, 8, 1), (0, 0, 2)]
    xy = [tf @ (c + 0.5, r + 0.5) for r, c, _ in pts]
    gpd.GeoDataFrame({"crop": [k for *_, k in pts]}, geometry=shapely.points(np.asarray(xy)),
                     crs="EPSG:32643").to_file(tmp_path / "p.gpkg")
    table = default_classes()
    info = raster_info(scene)
    lab = open_labels(tmp_path / "p.gpkg", info, table, field="crop", point_radius=10)
    assert lab.report.on_nodata == 1  # the point on (0, 0)
    k = len(table)
    tiles = window_tiles(tf, Window(0, 0, 16, 16), 16, 0)
    with open_raster(scene) as src:
        cm_points, cm_pixels, n_tiles, n = score_points(torch.nn.Identity(), src, lab, tiles, k,
                                                        mean=[0.0] * 3, std=[1.0] * 3)
    assert n == 6 and n_tiles == 1
    expected = np.zeros((k, k), np.int64)
    for (t, p) in [(0, 0), (1, 1), (0, 1), (2, 2), (1, 2), (1, 1)]:  # rows = truth, columns = prediction
        expected[t, p] += 1
    np.testing.assert_array_equal(cm_points, expected)
    # pixels: 5 per scored point, all inside and observed
    assert int(cm_pixels.sum()) == 30
    assert (cm_pixels[1, 0], cm_pixels[1, 1], cm_pixels[1, 2]) == (1, 5 + 4, 5)
    assert math.isclose(float(np.trace(cm_points)) / n, 4 / 6)


def test_evaluate_window_counts_only_its_points(region, points, trained) -> None:  # type: ignore[no-untyped-def]
    out, _ = trained
    whole = evaluate(out, region.scene, points, label_field="crop", device="cpu")
    part = evaluate(out, region.scene, points, label_field="crop", window="0,0,128,320", device="cpu")
    lab = open_labels(points, raster_info(region.scene), load_classes(region.classes), field="crop")
    assert part.scored_points == int((lab.rows < 128).sum()) < whole.scored_points == 400
    assert part.tiles <= whole.tiles
    bad = gpd.read_file(points)
    bad.loc[bad.index[0], "crop"] = "jowar"
    p = Path(points).with_name("bad_eval.gpkg")
    bad.to_file(p)
    with pytest.raises(LabelError, match="holds values 'jowar' not in the class file"):
        evaluate(out, region.scene, p, label_field="crop", device="cpu")
