"""Training: it learns, it is reproducible, chips stay out of validation blocks, labels from
vectors equal labels from rasters, and bad inputs fail early with clear errors.

Everything runs on a 256 x 320 synthetic region with 64 px chips and a U-Net/resnet18 of
encoder depth 4, so a training run takes a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.classes import NODATA, load_classes
from geoseg.cli.main import GeosegGroup
from geoseg.cli.train import train as train_cmd
from geoseg.errors import CheckpointError, ConfigError, GridMismatchError, LabelError, TileError
from geoseg.io.labels import RasterLabels, VectorLabels, label_counts, open_labels, window_tile
from geoseg.io.raster import raster_info
from geoseg.ml.chips import ChipSampler
from geoseg.ml.model import ModelCard, build_from_card, load_checkpoint, save_checkpoint, sha256_file
from geoseg.ml.split import Split, block_size, make_split
from geoseg.ml.train import train
from geoseg.synth import synthesize

FAST = dict(tile=64, chips_per_epoch=32, batch_size=8)
NC = Path(__file__).parents[1] / "data" / "nc_landsat"


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=256, width=320, seed=3)


@pytest.fixture(scope="module")
def trained(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A model trained for 6 short epochs; every training chip window is recorded."""
    seen: list[tuple[int, Window]] = []
    original = ChipSampler.window

    def recording(self):  # type: ignore[no-untyped-def]
        s, w = original(self)
        seen.append((s, w))
        return s, w

    ChipSampler.window = recording  # type: ignore[method-assign]
    epochs: list[dict] = []
    try:
        out = tmp_path_factory.mktemp("models") / "m"
        res = train(region.scene, region.labels, region.classes, out, epochs=6, seed=0,
                    progress=lambda e, n, m: epochs.append(m), **FAST)
    finally:
        ChipSampler.window = original  # type: ignore[method-assign]
    return res, seen, epochs


def _majority_miou(cm: np.ndarray) -> float:
    """mIoU of predicting the commonest target class everywhere (the trivial baseline)."""
    rows = cm.sum(axis=1)
    return float(rows.max() / rows.sum() / (rows > 0).sum())


def test_training_learns_and_writes_a_loadable_checkpoint(region, trained) -> None:  # type: ignore[no-untyped-def]
    res, _, epochs = trained
    card = res.card
    cm = np.asarray(card.metrics["confusion_matrix"])
    baseline = _majority_miou(cm)
    assert baseline < 0.1
    assert card.metrics["miou"] > max(0.3, 4 * baseline), card.metrics
    assert [e["epoch"] for e in epochs] == list(range(1, res.epochs_run + 1))
    assert epochs[-1]["loss"] < epochs[0]["loss"]

    model, loaded = load_checkpoint(res.model_dir)
    assert loaded == card
    info = raster_info(region.scene)
    assert card.bands == list(info.descriptions) and card.in_channels == 16
    assert card.tile == 64 and card.overlap == 8 and card.valid_rule == "all"
    assert card.classes.names == load_classes(region.classes).names
    for key in ("miou", "per_class_iou", "per_class_f1", "pixel_accuracy", "confusion_matrix", "class_names",
                "pixels", "epoch"):
        assert key in card.metrics
    assert card.metrics["pixels"] == int(cm.sum()) > 0
    for key in ("epochs_run", "seed", "loss", "lr", "chips", "seconds", "images", "validation", "class_weights"):
        assert key in card.training
    assert card.training["images"] == [str(region.scene)] and card.training["seed"] == 0

    # the normalisation statistics are those of the scene's valid pixels (sampled chips: within a few %)
    with rasterio.open(region.scene) as src:
        a = src.read().reshape(16, -1).astype(np.float64)
    valid = (a != 0).all(axis=0)
    np.testing.assert_allclose(card.band_mean, a[:, valid].mean(axis=1), rtol=0.1)
    np.testing.assert_allclose(card.band_std, a[:, valid].std(axis=1), rtol=0.2)


def test_no_training_chip_overlaps_a_validation_block(region, trained) -> None:  # type: ignore[no-untyped-def]
    res, seen, _ = trained
    v = res.card.training["validation"][0]
    assert v["block"] == block_size((256, 320), 64) == 64 and v["blocks"] >= 2
    # rebuild the validation pixels from the recorded pattern, independently of Split
    h, w, b = 256, 320, v["block"]
    rows, cols = np.meshgrid(np.arange(h) // b, np.arange(w) // b, indexing="ij")
    val_px = (rows + 2 * cols) % 5 == v["pattern"]
    assert len(seen) >= 6 * 32
    for _, win in seen:
        r, c = int(win.row_off), int(win.col_off)
        assert not val_px[max(r, 0): r + 64, max(c, 0): c + 64].any(), win


@settings(max_examples=25, deadline=None)
@given(st.integers(40, 300), st.integers(40, 300), st.sampled_from([16, 32, 48]), st.integers(0, 2**31))
def test_chip_windows_never_touch_validation_blocks(h: int, w: int, tile: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = block_size((h, w), tile)
    nb = (-(-h // b), -(-w // b))
    counts = rng.integers(0, 50, (*nb, 3))
    try:
        split = make_split(counts, (h, w), b, rng)
    except LabelError:
        return  # labels in a single pattern: nothing to split, and the error says so
    val_px = np.zeros((h, w), bool)
    for win in split.windows(True):
        val_px[int(win.row_off): int(win.row_off + win.height), int(win.col_off): int(win.col_off + win.width)] = True
    try:
        sampler = ChipSampler([(None, None, split)], tile, rng)
    except LabelError:
        return  # no labelled training block
    for _ in range(50):
        try:
            _, win = sampler.window()
        except TileError:
            return  # no room for a chip between validation blocks; the error names a smaller tile
        r, c = int(win.row_off), int(win.col_off)
        assert not val_px[max(r, 0): r + tile, max(c, 0): c + tile].any()
        assert not split.overlaps_validation(win)


def test_split_holds_out_about_a_fifth_spread_over_the_scene() -> None:
    counts = np.ones((8, 8, 2), np.int64)
    split = make_split(counts, (1024, 1024), 128, np.random.default_rng(0))
    assert isinstance(split, Split)
    assert 0.15 <= split.val.mean() <= 0.25
    assert split.val.any(axis=0).all() and split.val.any(axis=1).all()  # every block row and column
    v = split.val.astype(int)
    assert not (v[1:, :] & v[:-1, :]).any() and not (v[:, 1:] & v[:, :-1]).any()  # no two share an edge


def _same_weights(a: Path, b: Path) -> bool:
    wa, _ = load_checkpoint(a)
    wb, _ = load_checkpoint(b)
    sa, sb = wa.state_dict(), wb.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_other_seed_other_weights(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Same seed: the same chips in the same order and bit-identical weights (file bytes too), statistics
    and scores."""
    kw = dict(epochs=2, tile=64, chips_per_epoch=16, batch_size=8, forest=False)  # the network is the subject
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        seen: list[Window] = []
        original = ChipSampler.window

        def recording(self):  # type: ignore[no-untyped-def]
            s, w = original(self)
            seen.append(w)
            return s, w

        ChipSampler.window = recording  # type: ignore[method-assign]
        try:
            runs[name] = (train(region.scene, region.labels, region.classes, tmp_path / name, seed=seed, **kw), seen)
        finally:
            ChipSampler.window = original  # type: ignore[method-assign]
    (a, wa), (b, wb), (c, wc) = runs["a"], runs["b"], runs["c"]
    assert wa == wb and wa != wc
    assert _same_weights(tmp_path / "a", tmp_path / "b")
    assert sha256_file(tmp_path / "a" / "model.safetensors") == sha256_file(tmp_path / "b" / "model.safetensors")
    assert a.card.weights_sha256 == b.card.weights_sha256
    assert not _same_weights(tmp_path / "a", tmp_path / "c")
    assert a.card.metrics == b.card.metrics and a.card.metrics != c.card.metrics
    assert a.card.band_mean == b.card.band_mean and a.card.band_std == b.card.band_std
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.card.training["validation"] == b.card.training["validation"]


def test_vector_labels_equal_raster_labels(region) -> None:  # type: ignore[no-untyped-def]
    info = raster_info(region.scene)
    classes = load_classes(region.classes)
    whole = Window(0, 0, info.shape.width, info.shape.height)
    with open_labels(region.labels, info, classes) as r, \
            open_labels(region.fields, info, classes, field="class_id") as v:
        assert isinstance(r, RasterLabels) and isinstance(v, VectorLabels)
        ras, vec = r.read(whole), v.read(whole)
        both = (ras != NODATA) & (vec != NODATA)
        # exact wherever both hold a label (same pixel-centre rule)
        np.testing.assert_array_equal(ras[both], vec[both])
        # the only differences: background (roads, villages, margins) has no field polygon
        only_raster = (ras != NODATA) & (vec == NODATA)
        assert set(np.unique(ras[only_raster]).tolist()) <= {0}
        # and no field label where the image has no data (labels.tif is 255 there)
        with rasterio.open(region.scene) as src:
            nodata = (src.read() == 0).any(axis=0)
        assert not (both & nodata).any()
        crop = (ras != NODATA) & (ras != 0)
        assert (vec[crop] == ras[crop]).mean() == 1.0  # every crop pixel comes out of the vector too
        # windows straddling the edge: outside the raster is no label, inside is the same
        edge = Window(-10, 200, 64, 64)
        e = v.read(edge)
        assert (e[:, :10] == NODATA).all() and (e[-8:, :] == NODATA).all()
        np.testing.assert_array_equal(e[:56, 10:], vec[200:256, 0:54])
    # class names work as well as ids, from a file in another CRS
    import geopandas as gpd

    gdf = gpd.read_file(region.fields)
    gdf["crop_name"] = gdf["crop"]
    gdf = gdf.to_crs("EPSG:4326")  # another CRS: reprojected onto the image grid
    path = Path(region.out_dir) / "fields_by_name.gpkg"
    gdf.to_file(path)
    with VectorLabels(path, "crop_name", info, classes) as vn:
        by_name = vn.read(whole)
    same = (by_name != NODATA) & (vec != NODATA)
    assert (by_name[same] == vec[same]).mean() > 0.999  # reprojection moves a few edge pixels
    assert abs(int((by_name != NODATA).sum()) - int((vec != NODATA).sum())) < 0.01 * vec.size


def test_training_from_vector_labels_through_the_cli(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "vec"
    res = CliRunner().invoke(_group(), [
        "train", "--image", str(region.scene), "--labels", str(region.fields), "--label-field", "class_id",
        "--classes", str(region.classes), "--out", str(out), "--tile", "64", "--epochs", "1", "--batch-size", "2",
        "--no-forest",
    ])
    assert res.exit_code == 0, res.output
    assert "epoch   1/1" in res.output and "val mIoU" in res.output and "saved" in res.output
    card = json.loads((out / "model.json").read_text())
    assert card["training"]["label_field"] == "class_id"


def test_patience_through_the_cli(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "p"
    args = ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes", str(region.classes),
            "--tile", "64", "--batch-size", "2", "--no-forest"]
    res = CliRunner().invoke(_group(), [*args, "--out", str(out), "--epochs", "2", "--patience", "5"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "model.json").read_text())["training"]["patience"] == 5
    bad = CliRunner().invoke(_group(), [*args, "--out", str(tmp_path / "q"), "--patience", "0"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1, bad.output
    assert "patience must be an int >= 1, got 0" in bad.output
    assert not (tmp_path / "q").exists()


def test_chip_sets_the_training_chips_and_the_card_keeps_the_tile(region, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--chip trains on smaller chips (more of them per epoch) while the card keeps the inference tile and halo."""
    sides: set[tuple[int, int]] = set()
    original = ChipSampler.window

    def recording(self):  # type: ignore[no-untyped-def]
        s, w = original(self)
        sides.add((int(w.height), int(w.width)))
        return s, w

    monkeypatch.setattr(ChipSampler, "window", recording)
    out = tmp_path / "chip"
    args = ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes", str(region.classes),
            "--tile", "128", "--chip", "32", "--lr", "2e-3", "--epochs", "1", "--batch-size", "4", "--out", str(out),
            "--no-forest"]
    res = CliRunner().invoke(_group(), args)
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    assert (card["tile"], card["overlap"]) == (128, 16)  # inference as for --tile 128 alone
    t = card["training"]
    assert t["chip"] == 32 and t["lr"] == 2e-3
    # an epoch is one pass over the training labels in 32 px chips (16 times as many as 128 px chips),
    # at least 50 batches
    expected = max(50 * 4, -(-sum(t["train_label_pixels"]) // 32**2))
    assert t["chips_per_epoch"] == -(-expected // 4) * 4
    assert (32, 32) in sides and all(h == w and h in (32, 128) for h, w in sides)  # 128: the statistics windows
    assert t["validation"][0]["block"] == block_size((256, 320), 128)  # the split follows the tile, not the chip


def test_chip_the_model_cannot_take_is_refused(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TileError, match=r"--chip 40 is not divisible by 16, .* use --chip 32 or 48"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", tile=64, chip=40)
    res = CliRunner().invoke(_group(), ["train", "--image", str(region.scene), "--labels", str(region.labels),
                                        "--classes", str(region.classes), "--out", str(tmp_path / "m"),
                                        "--chip", "0"])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "--chip must be a positive number of pixels, got 0" in res.output
    assert not (tmp_path / "m").exists()


def test_baseline_rf_is_trained_and_scored_on_the_same_split(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--baseline rf: a forest on the training blocks' pixels, scored on every labelled pixel of the
    validation blocks (counted here plainly from the label raster and the recorded pattern)."""
    out = tmp_path / "b"
    res = CliRunner().invoke(_group(), [
        "train", "--image", str(region.scene), "--labels", str(region.labels), "--classes", str(region.classes),
        "--out", str(out), "--tile", "64", "--epochs", "1", "--batch-size", "2", "--baseline", "rf", "--no-forest"])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "model.json").read_text())
    b, v = card["training"]["baseline"], card["training"]["validation"][0]
    with rasterio.open(region.labels) as s:
        lab = s.read(1)
    with rasterio.open(region.scene) as s:
        valid = (s.read() != 0).all(axis=0)
    rows, cols = np.meshgrid(np.arange(lab.shape[0]) // v["block"], np.arange(lab.shape[1]) // v["block"],
                             indexing="ij")
    in_val = (rows + 2 * cols) % 5 == v["pattern"]
    labelled = (lab != NODATA) & valid
    assert b["validation_pixels"] == int((labelled & in_val).sum()) == card["metrics"]["pixels"]
    assert b["train_pixels"] == int((labelled & ~in_val).sum())
    assert b["kind"] == "rf" and b["trees"] == 100 and 0.3 < b["miou"] <= 1.0  # the synthetic crops are separable
    assert f"per-pixel random forest (100 trees, {b['train_pixels']:,} of the same training pixels)" in res.output
    assert f"this model {card['metrics']['miou'] - b['miou']:+.3f}" in res.output
    bad = CliRunner().invoke(_group(), [
        "train", "--image", str(region.scene), "--labels", str(region.labels), "--classes", str(region.classes),
        "--out", str(tmp_path / "x"), "--baseline", "xgboost"])
    assert bad.exit_code == 2 and "'xgboost' is not one of 'none', 'rf'" in bad.output
    with pytest.raises(ConfigError, match=r"baseline 'gbm': expected one of rf"):
        train(region.scene, region.labels, region.classes, tmp_path / "y", baseline="gbm", **FAST)


def _group() -> click.Group:
    return GeosegGroup("geoseg", commands={"train": train_cmd})


def _write_labels(path: Path, array: np.ndarray, like: Path, transform=None, crs=None) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(like) as src:
        profile = dict(driver="GTiff", height=src.height, width=src.width, count=1, dtype=array.dtype.name,
                       crs=crs or src.crs, transform=transform or src.transform, nodata=255)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def test_label_raster_on_another_grid(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(region.labels) as src:
        a, tf = src.read(1), src.transform
    shifted = tmp_path / "shifted.tif"
    _write_labels(shifted, a, region.scene, transform=tf @ tf.translation(3, 0))
    with pytest.raises(GridMismatchError, match=r"shifted\.tif is not on the grid of .*scene\.tif: transform"):
        train(region.scene, shifted, region.classes, tmp_path / "m", **FAST)
    res = CliRunner().invoke(_group(), ["train", "--image", str(region.scene), "--labels", str(shifted),
                                        "--classes", str(region.classes), "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "gdalwarp" in res.output
    assert not (tmp_path / "m").exists()


def test_label_values_outside_the_class_table(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(region.labels) as src:
        a = src.read(1)
    a[10:20, 10:20] = 9
    a[200:210, 300:310] = 12
    bad = tmp_path / "bad.tif"
    _write_labels(bad, a, region.scene)
    with pytest.raises(LabelError, match=r"bad\.tif: holds label values 9, 12 not in the class file .*classes\.yaml "
                                         r"\(ids 0\.\.6: 0=background, 1=rice"):
        train(region.scene, bad, region.classes, tmp_path / "m", **FAST)


def test_vector_label_field_missing_or_holding_unknown_classes(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabelError, match=r"has no attribute 'crop_id'; its attributes are \['field_id', 'class_id'"):
        train(region.scene, region.fields, region.classes, tmp_path / "m", label_field="crop_id", **FAST)
    with pytest.raises(LabelError, match=r"pass --label-field .* attributes \['field_id', 'class_id'"):
        train(region.scene, region.fields, region.classes, tmp_path / "m", **FAST)
    import geopandas as gpd

    gdf = gpd.read_file(region.fields)
    gdf.loc[gdf.index[:3], "crop"] = ["barley", "rice", "oats"]
    path = tmp_path / "named.geojson"
    gdf.to_file(path)
    with pytest.raises(LabelError, match=r"attribute 'crop' holds values 'barley', 'oats' not in the class file"):
        train(region.scene, path, region.classes, tmp_path / "m", label_field="crop", **FAST)


def test_tile_not_divisible_names_the_sizes_to_use(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TileError, match=r"--tile 100 is not divisible by 16, .* use --tile 96 or 112"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", tile=100)
    with pytest.raises(TileError, match=r"--tile 200 is not divisible by 32, which unet/resnet18 needs .* "
                                        r"use --tile 192 or 224"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", tile=200,
              arch_kwargs={"encoder_depth": 5})


def test_init_from_another_architecture_is_refused(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    classes = load_classes(region.classes)
    card = ModelCard(arch="deeplabv3plus", encoder="resnet18", in_channels=16, classes=classes,
                     band_mean=[0.0] * 16, band_std=[1.0] * 16)
    save_checkpoint(tmp_path / "dl", build_from_card(card), card)
    with pytest.raises(CheckpointError, match=r"dl: is a deeplabv3plus/resnet18 model .* but this training builds "
                                              r"unet/resnet18 .* pass --arch deeplabv3plus --encoder resnet18"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", arch="unet",
              init_from=tmp_path / "dl", **FAST)
    with pytest.raises(CheckpointError, match="not found; --init-from takes a geoseg checkpoint directory"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", init_from=tmp_path / "nope.pt", **FAST)


def test_fine_tune_with_new_classes_keeps_the_encoder_and_reinitialises_the_head(region, trained, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res, _, _ = trained
    # same classes but renamed: the head is re-initialised, the rest starts from the checkpoint
    renamed = tmp_path / "classes.yaml"
    renamed.write_text(Path(region.classes).read_text().replace("fallow", "fallow_land"))
    ft = train(region.scene, region.labels, renamed, tmp_path / "ft", init_from=res.model_dir, epochs=1,
               tile=64, chips_per_epoch=8, batch_size=8, forest=False)
    assert ft.card.arch == "unet" and ft.card.training["init_kind"] == "checkpoint"
    assert ft.card.training["head_reinitialised"] is True
    # a weights file is not a checkpoint: --init-from says to use --pretrained for it
    (tmp_path / "enc.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"enc.pt: is a file; .*use --pretrained .*enc.pt --pretrained-bands"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", init_from=tmp_path / "enc.pt", **FAST)


def test_time_limit_stops_cleanly_and_saves(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train(region.scene, region.labels, region.classes, tmp_path / "t", epochs=1000, patience=1000,
                time_limit=0.08, forest=False, **FAST)
    assert res.stop_reason == "time-limit" and 1 <= res.epochs_run < 1000
    # it stops after the epoch that crosses the budget: every epoch before that one ended inside it (the
    # history's clock, so a slow machine runs fewer epochs rather than failing)
    assert len(res.history) == res.epochs_run and all(h["seconds"] < 0.08 * 60 for h in res.history[:-1])
    load_checkpoint(tmp_path / "t")


def test_nc_landsat_strata_on_the_band_grid(tmp_path) -> None:
    """Real data: strata.tif says NAD83(HARN) (EPSG:3358), the bands an unnamed LCC on GRS80 with an unknown
    datum. GDAL's CRS comparison takes them as the same, so the labels open on the band grid; the same
    strata tagged with the *named* NAD83 code of the bands (EPSG:32119 vs 3358) is refused, naming both."""
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes:\n" + "".join(
        f"  - {{id: {i}, name: s{i}, color: '#{i:02x}{i:02x}{i:02x}'}}\n" for i in range(8)))
    table = load_classes(classes)
    image = NC / "lsat7_2000_stack.tif"
    with open_labels(NC / "strata.tif", image, table) as lab:
        counts = label_counts(lab, (443, 489), 128).sum(axis=(0, 1))
    assert counts.tolist() == [0, 65099, 1433, 23502, 14532, 107643, 4223, 194]  # strata 1..7; 0 is nodata
    with rasterio.open(NC / "strata.tif") as src:
        a, profile = src.read(1), src.profile
    named = tmp_path / "strata_3358.tif"
    with rasterio.open(named, "w", **{**profile, "crs": "EPSG:3358"}) as dst:
        dst.write(a, 1)
    other = tmp_path / "image_32119.tif"
    with rasterio.open(image) as src:
        data, iprofile = src.read(), src.profile
    with rasterio.open(other, "w", **{**iprofile, "crs": "EPSG:32119"}) as dst:
        dst.write(data)
    with pytest.raises(GridMismatchError, match=r"strata_3358\.tif is not on the grid of .*: CRS EPSG:3358 "
                                                r"\(expected EPSG:32119\)"):
        open_labels(named, other, table)


def test_window_tile_reads_through_geoseg_io(region) -> None:  # type: ignore[no-untyped-def]
    info = raster_info(region.scene)
    t = window_tile(Window(5, 7, 32, 16), info.transform)
    assert t.transform @ (0, 0) == info.transform @ (5, 7)


def test_several_scenes_train_one_model(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = synthesize(tmp_path / "other", height=160, width=200, seed=8)
    with pytest.raises(LabelError, match="--label-field"):  # the vector of the second pair needs its field
        train([region.scene, other.scene], [region.labels, other.fields], region.classes, tmp_path / "m",
              epochs=1, **FAST)
    torch.manual_seed(123)
    state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    res = train([region.scene, other.scene], [region.labels, other.labels], region.classes, tmp_path / "m",
                epochs=1, forest=False, **FAST)
    # no hidden global state: the caller's RNGs and determinism setting are as they were
    assert torch.equal(torch.random.get_rng_state(), state) and (np.random.get_state()[1] == np_state).all()
    assert not torch.are_deterministic_algorithms_enabled()
    assert [v["image"] for v in res.card.training["validation"]] == [str(region.scene), str(other.scene)]
    assert all(v["blocks"] >= 1 for v in res.card.training["validation"])
    with pytest.raises(ConfigError, match="2 images but 1 label files"):
        train([region.scene, other.scene], [region.labels], region.classes, tmp_path / "m", **FAST)
