"""Models with a field-boundary output: edge targets from polygons, the loss against a plain
computation, training, the card, inference through TTA and the forest, predict and evaluate."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from geoseg.classes import NODATA, default_classes
from geoseg.core.grid import Window
from geoseg.core.instances import Separation
from geoseg.errors import ConfigError, LabelError
from geoseg.io.field_polygons import FieldEdges
from geoseg.ml.chips import EDGE_STEP, EdgeLabels
from geoseg.ml.evaluate import evaluate
from geoseg.ml.forest import card_forest, with_forest
from geoseg.ml.infer import class_logits, has_boundary, predict_outputs
from geoseg.ml.losses import BoundaryLoss, WeightedCrossEntropy
from geoseg.ml.model import build_model, load_checkpoint, mark_outputs, read_card
from geoseg.ml.train import train
from geoseg.ml.tta import TTA_MODES, with_tta
from geoseg.ops.field_scores import field_scores
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize

T = Affine(10, 0, 500_000, 0, -10, 3_000_000)


class _Labels:
    """Labels of one class everywhere (a stand-in for a label raster)."""

    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def read(self, window: Window) -> np.ndarray:
        r, c = int(window.row_off), int(window.col_off)
        return self.value[r:r + int(window.height), c:c + int(window.width)]


def test_edge_targets_from_two_touching_fields(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # two fields of 4 x 3 px side by side (columns 1-3 and 4-6, rows 1-4), in a 6 x 8 px window
    a = shapely.box(500_010, 2_999_950, 500_040, 2_999_990)
    b = shapely.box(500_040, 2_999_950, 500_070, 2_999_990)
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=[a, b], crs="EPSG:32643").to_file(tmp_path / "f.gpkg")
    edges = FieldEdges(tmp_path / "f.gpkg", T, "EPSG:32643")
    labels = np.full((6, 8), 2, np.uint8)  # wheat (a crop) everywhere
    labels[0, 0] = 0  # a background pixel outside the fields
    labels[5, 7] = NODATA
    t = EdgeLabels(_Labels(labels), edges, [c.id for c in default_classes() if c.crop]).read(Window(0, 0, 8, 6))
    state, cls = t // EDGE_STEP, t % EDGE_STEP
    inside = np.zeros((6, 8), bool)
    inside[1:5, 1:7] = True
    expected_edge = inside.copy()
    expected_edge[2:4, 2] = expected_edge[2:4, 5] = False  # the interiors: rows 2-3 of columns 2 and 5
    assert (state[inside] == expected_edge[inside]).all()
    # outside the fields: a crop pixel is unknown (2), the background one is not an edge (0), nodata stays 255
    outside = ~inside
    outside[0, 0] = outside[5, 7] = False
    assert (state[outside] == 2).all() and t[0, 0] == 0 and t[5, 7] == NODATA
    assert (cls[inside] == 2).all()
    # a window offset by a pixel reads the same edges shifted
    t2 = EdgeLabels(_Labels(labels), edges, [1, 2, 3, 4, 5, 6]).read(Window(1, 1, 7, 5))
    np.testing.assert_array_equal(t2, t[1:, 1:])


def test_boundary_loss_equals_a_plain_computation() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)  # 3 classes + the boundary logit
    cls = torch.randint(0, 3, (2, 5, 6))
    state = torch.randint(0, 3, (2, 5, 6))
    target = cls + EDGE_STEP * state
    target[0, 0, :3] = NODATA
    ce = WeightedCrossEntropy(None)
    got = BoundaryLoss(ce, EDGE_STEP, weight=0.5)(logits, target)
    # by hand: CE over labelled pixels; BCE + soft Dice of the boundary over the known ones
    lab = target != NODATA
    ref_ce = torch.nn.functional.cross_entropy(logits[:, :3].permute(0, 2, 3, 1)[lab], cls[lab])
    known = lab & (state < 2)
    z, y = logits[:, 3][known], (state[known] == 1).float()
    p = torch.sigmoid(z)
    bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    assert float(got) == pytest.approx(float(ref_ce + 0.5 * (bce + dice)), rel=1e-5)
    # nothing known: the class loss alone, and a gradient that is zero for the boundary logit
    logits.requires_grad_(True)
    only = BoundaryLoss(ce, EDGE_STEP)(logits, torch.where(lab, cls + 2 * EDGE_STEP, target))
    only.backward()
    assert float(only.detach()) == pytest.approx(float(ref_ce), rel=1e-5)
    assert float(logits.grad[:, 3].abs().sum()) == 0.0


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=192, width=192, seed=5)


@pytest.fixture(scope="module")
def model(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("models") / "m"
    train(region.scene, region.labels, region.classes, out, tile=64, epochs=2, chips_per_epoch=32, seed=1,
          fields=region.fields)
    return out


def test_training_with_fields_records_the_boundary_output(model, region) -> None:  # type: ignore[no-untyped-def]
    card = read_card(model)
    assert card.outputs == ["classes", "boundary"] and card.boundary
    assert card.training["fields"] == [str(region.fields)]
    # the fields of the validation blocks were scored and kept with the pixel scores
    f = card.metrics["fields"]
    assert f["true_fields"] > 0 and 0 <= f["f1"] <= 1 and f["matched"] <= min(f["true_fields"], f["predicted_fields"])
    # the separation kept is the threshold (or none) whose fields scored best there
    by = f["f1_by_threshold"]
    assert set(by) == {"0.05", "0.1", "0.2", "0.3", "0.5", "none"}
    assert card.separation["threshold"] == f["separation_threshold"]
    assert by[card.separation_tag] == max(by.values()) == pytest.approx(f["f1"], abs=1e-6)
    net, _ = load_checkpoint(model)
    assert has_boundary(net)
    assert net(torch.zeros(1, card.in_channels, 64, 64)).shape[1] == len(card.classes) + 1


def test_tta_and_forest_keep_the_boundary_channel(model) -> None:  # type: ignore[no-untyped-def]
    net, card = load_checkpoint(model)
    x = np.random.default_rng(0).integers(200, 3000, (2, card.in_channels, 64, 64)).astype(np.uint16)
    valid = np.ones((2, 64, 64), bool)
    valid[1, :4] = False
    _, _, raw = predict_outputs(net, x, valid, card.band_mean, card.band_std)
    assert raw is not None and raw.dtype == np.uint8
    assert (raw[valid] >= 1).all() and (raw[~valid] == 0).all()
    # the forest answers for the classes only: the boundary passes through unchanged
    forest = card_forest(model, card)
    fused = with_forest(net, forest, 0.5)
    assert has_boundary(fused)
    _, _, b2 = predict_outputs(fused, x, valid, card.band_mean, card.band_std)
    np.testing.assert_array_equal(b2, raw)
    t = torch.zeros(1, card.in_channels, 64, 64)
    assert class_logits(fused, fused(t)).shape[1] == len(card.classes)
    # flips: the boundary logit is averaged over the transforms, like the classes
    tta = with_tta(net, "flips")
    assert has_boundary(tta)
    t = torch.randn(1, card.in_channels, 64, 64)
    with torch.no_grad():
        y = tta(t)
        outs = []
        for k, flip in TTA_MODES["flips"]:
            u = torch.rot90(t, k, dims=(-2, -1))
            u = torch.flip(u, dims=(-1,)) if flip else u
            v = net(u)
            v = torch.flip(v, dims=(-1,)) if flip else v
            outs.append(torch.rot90(v, -k, dims=(-2, -1)))
        ref = torch.stack(outs).mean(0)
    assert y.shape[1] == len(card.classes) + 1
    torch.testing.assert_close(y[:, -1], ref[:, -1], rtol=1e-4, atol=1e-4)


def test_predict_writes_the_boundary_band_and_fields_separate_on_it(model, region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mask, conf = tmp_path / "mask.tif", tmp_path / "conf.tif"
    predict_scene(model, region.scene, mask, confidence=conf, tile=64, overlap=8, device="cpu")
    with rasterio.open(conf) as c, rasterio.open(mask) as m:
        assert c.descriptions == ("confidence", "boundary")
        assert c.tags()["GEOSEG_SEPARATION"] == read_card(model).separation_tag
        assert c.scales[1] == pytest.approx(1 / 254) and c.offsets[1] == pytest.approx(-1 / 254)
        b, cls = c.read(2), m.read(1)
    assert ((b == 0) == (cls == NODATA)).all()
    s_half = field_scores(mask, region.fields, confidence=conf, separation=Separation(threshold=128, erode=0))
    s_blob = field_scores(mask, region.fields)
    # separated on the boundary band, the same mask gives more fields than its 4-connected regions (this
    # model of two short epochs is sure of no interior: at the default threshold it separates nothing)
    assert s_half.predicted_fields > s_blob.predicted_fields
    s_sep = field_scores(mask, region.fields, confidence=conf)
    # evaluate scores the model's own separated fields
    ev = evaluate(model, region.scene, region.labels, fields=region.fields, device="cpu")
    assert ev.fields is not None and ev.fields.predicted_fields == s_sep.predicted_fields
    assert json.loads(json.dumps(ev.to_dict()))["fields"]["f1"] == pytest.approx(s_sep.f1)


def test_init_from_a_model_without_boundary_reinitialises_the_head(model, region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = tmp_path / "plain"
    res = train(region.scene, region.labels, region.classes, plain, tile=64, epochs=1, chips_per_epoch=16, seed=2,
                init_from=model, forest=False)
    assert res.card.outputs == ["classes"] and res.card.training["head_reinitialised"] is True


def test_field_files_must_match_the_images(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"2 field files for 1 images"):
        train(region.scene, region.labels, region.classes, tmp_path / "x", fields=[region.fields, region.fields])
    bare = tmp_path / "nocrs.geojson"
    bare.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(LabelError):
        FieldEdges(bare, T, "EPSG:32643")


def test_mark_outputs_builds_the_extra_channel() -> None:
    net = mark_outputs(build_model("unet", "resnet18", 4, 8), True)
    assert has_boundary(net) and net(torch.zeros(1, 4, 32, 32)).shape[1] == 8
