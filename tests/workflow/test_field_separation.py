"""A run with a boundary model: the boundary band goes through the tile store, each scene's
confidence COG and the mosaic, and the run's fields are separated on it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine

from geoseg.ops.parcels import parcel_crops
from geoseg.ops.polygonize import polygonize_raster
from geoseg.ops.predict import predict_scene
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)


def test_a_run_carries_the_boundary_band_and_separates_fields(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_model(tmp_path / "model", seed=3, boundary=True)
    write_scene(tmp_path / "scene.tif", 160, 128, TF)
    write_scene(tmp_path / "b.tif", 96, 128, TF @ Affine.translation(0, 128), seed=5)  # overlaps a's last rows
    write_workflow(tmp_path / "wf.yaml", scenes=["scene.tif", "b.tif"],
                   outputs={"fields": ["parquet"], "district_areas": False, "min_area_ha": 0.05,
                            "max_area_ha": 50})
    res = run_workflow(load_workflow(tmp_path / "wf.yaml"))
    assert res.status == "done"
    # each scene's confidence COG equals a single-process prediction, boundary band included
    predict_scene(tmp_path / "model", tmp_path / "scene.tif", tmp_path / "m.tif", confidence=tmp_path / "c.tif",
                  tile=64, overlap=16, batch_size=2)
    with rasterio.open(res.run_dir / "scenes" / "scene" / "confidence.tif") as run, \
            rasterio.open(tmp_path / "c.tif") as single:
        assert run.descriptions == single.descriptions == ("confidence", "boundary")
        np.testing.assert_allclose(run.read(2).astype(int), single.read(2).astype(int), atol=1)
    # the mosaic keeps the band, 0 exactly where the mosaic's mask is nodata
    with rasterio.open(res.run_dir / "confidence.tif") as c, rasterio.open(res.run_dir / "mask.tif") as m:
        assert c.descriptions == ("confidence", "boundary") and c.count == 2
        b, mask = c.read(2), m.read(1)
    assert ((b == 0) == (mask == 255)).all() and b.shape == (224, 128)
    # the run's fields are those polygonize separates on the mosaic's band, with their class shares
    fields = gpd.read_parquet(res.run_dir / "fields.parquet")
    again = polygonize_raster(res.run_dir / "mask.tif", confidence=res.run_dir / "confidence.tif", min_area_ha=0.05,
                              max_area_ha=50)
    assert len(fields) == len(again) and "class_share" in fields.columns
    assert sorted(fields.field_id) == sorted(again.field_id)
    assert ((fields.class_share > 0) & (fields.class_share <= 1)).all() and (fields.area_ha <= 50).all()


def test_a_run_with_a_parcel_layer_writes_the_parcels_with_their_crops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_model(tmp_path / "model", seed=4)
    write_scene(tmp_path / "scene.tif", 96, 96, TF)
    boxes = [shapely.box(560000 + 30 * i, 3420000 - 300, 560000 + 30 * i + 30, 3420000 - 40) for i in range(5)]
    gpd.GeoDataFrame({"lpis": [f"P{i}" for i in range(5)]}, geometry=boxes, crs="EPSG:32643").to_file(
        tmp_path / "parcels.gpkg")
    write_districts(tmp_path / "districts.gpkg", 560060, (560000, 3419040, 560960, 3420000))
    write_workflow(tmp_path / "wf.yaml", districts={"path": "districts.gpkg", "name_field": "district"},
                   outputs={"fields": ["gpkg"], "district_areas": True, "parcels": "parcels.gpkg",
                            "parcel_id": "lpis"})
    res = run_workflow(load_workflow(tmp_path / "wf.yaml"))
    got = gpd.read_parquet(res.run_dir / "fields.parquet")  # the dataset: a part per part of the layer
    again = parcel_crops(res.run_dir / "mask.tif", tmp_path / "parcels.gpkg", id_field="lpis",
                         confidence=res.run_dir / "confidence.tif")
    assert list(got["district"]) == ["West", "West", "East", "East", "East"]
    assert list(got["id"]) == list(again["id"]) == [f"P{i}" for i in range(5)]
    assert (got["class_id"].to_numpy() == again["class_id"].to_numpy()).all()
    assert got["run_id"].iloc[0] == res.run_id and (got["observed"] > 0.99).all()
