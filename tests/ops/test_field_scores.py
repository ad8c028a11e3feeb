"""Field scores of a mask against true field polygons; `geoseg evaluate --fields`."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.features import rasterize

from geoseg.classes import load_classes
from geoseg.cli.main import cli
from geoseg.core.objects import object_scores
from geoseg.errors import ConfigError, LabelError
from geoseg.ml.evaluate import evaluate
from geoseg.ml.train import train
from geoseg.ops.field_scores import field_scores
from geoseg.ops.polygonize import polygonize_raster
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=160, width=224, seed=8)


def test_the_fields_scored_are_the_polygons_polygonize_writes(region) -> None:  # type: ignore[no-untyped-def]
    """The (perfect) label mask's fields, scored from the mask, score as the polygons `polygonize`
    writes of it do, burnt back onto the grid and matched to the burnt true fields."""
    s = field_scores(region.labels, region.fields, class_field="crop")
    table = load_classes(region.classes)
    with rasterio.open(region.labels) as src:
        mask, tf = src.read(1), src.transform
    polys = polygonize_raster(region.labels)
    pred = rasterize(zip(polys.geometry, range(1, len(polys) + 1), strict=True), out_shape=mask.shape, transform=tf,
                     dtype="int32")
    truth = gpd.read_file(region.fields)
    ids = rasterize(zip(truth.geometry, range(1, len(truth) + 1), strict=True), out_shape=mask.shape, transform=tf,
                    dtype="int32")
    ref = object_scores(pred, ids, mask != 255, pred_class=np.r_[-1, polys["class_id"].to_numpy(np.int64)],
                        true_class=np.r_[-1, [table.id_of(c) for c in truth["crop"]]])
    assert s.to_dict() == ref.to_dict()
    # neighbouring fields of one crop are one region today: fewer fields than the truth, under-segmented
    assert s.true_fields == len(truth) and s.predicted_fields < s.true_fields and s.under_segmentation > 0.1
    assert s.extent_iou > 0.99 and s.class_f1 == s.f1  # a matched field of the true mask has the true crop


def test_evaluate_scores_the_fields_of_the_prediction(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train(region.scene, region.labels, region.classes, tmp_path / "m", tile=64, chips_per_epoch=16, epochs=2,
                forest=False)
    ev = evaluate(res.model_dir, region.scene, region.labels, fields=region.fields, fields_class="crop",
                  device="cpu")
    # the same scores as the fields of the mask `predict` writes
    predict_scene(res.model_dir, region.scene, tmp_path / "mask.tif", device="cpu", tile=res.card.tile)
    direct = field_scores(tmp_path / "mask.tif", region.fields, class_field="crop")
    assert ev.fields is not None and ev.fields.to_dict() == direct.to_dict()
    assert "fields:" in ev.summary() and ev.to_dict()["fields"]["true_fields"] == direct.true_fields

    r = CliRunner().invoke(cli, ["evaluate", "--model", str(res.model_dir), "--image", str(region.scene), "--labels",
                                 str(region.labels), "--fields", str(region.fields), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):])
    assert out["fields"]["f1"] == pytest.approx(direct.f1) and out["fields"]["class_f1"] is None


def test_bad_true_fields_are_refused(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabelError, match=r"fields.gpkg: has no attribute 'nope'; .*--fields-class"):
        field_scores(region.labels, region.fields, class_field="nope")
    pts = gpd.read_file(region.fields)
    pts.geometry = pts.geometry.centroid
    pts.to_file(tmp_path / "points.gpkg")
    with pytest.raises(LabelError, match="points.gpkg: holds no field polygons"):
        field_scores(region.labels, tmp_path / "points.gpkg")
    bad = gpd.read_file(region.fields).set_crs(None, allow_override=True)
    bad.to_file(tmp_path / "nocrs.gpkg")
    with pytest.raises(LabelError, match="nocrs.gpkg: has no CRS"):
        field_scores(region.labels, tmp_path / "nocrs.gpkg")
    wrong = gpd.read_file(region.fields)
    wrong["crop"] = "banana"
    wrong.to_file(tmp_path / "banana.gpkg")
    with pytest.raises(LabelError, match="banana"):
        field_scores(region.labels, tmp_path / "banana.gpkg", class_field="crop")


def test_points_and_fields_together_are_refused(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train(region.scene, region.labels, region.classes, tmp_path / "m", tile=64, chips_per_epoch=8, epochs=1,
                forest=False)
    pts = gpd.read_file(region.fields)
    pts.geometry = pts.geometry.representative_point()
    pts.to_file(tmp_path / "points.gpkg")
    with pytest.raises(ConfigError, match="point labels and true fields"):
        evaluate(res.model_dir, region.scene, tmp_path / "points.gpkg", label_field="crop", fields=region.fields,
                 device="cpu")
