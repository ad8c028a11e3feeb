"""A run with ``outputs.features``: each field's index series and phenology are those `geoseg zonal`
computes on the run's own scene and fields, the phenology sits in the fields' columns, the district
profiles cover the district table's area, and `geoseg query` shows both tables."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine

from geoseg.errors import ConfigError
from geoseg.ops.features import district_crop_timeseries, field_timeseries
from geoseg.ops.query import query_run
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)


def test_a_run_writes_the_growth_features(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_model(tmp_path / "model", seed=2)
    write_scene(tmp_path / "scene.tif", 128, 128, TF)
    write_districts(tmp_path / "d.gpkg", 560000 + 640, (560000, 3420000 - 1280, 560000 + 1280, 3420000))
    write_workflow(tmp_path / "wf.yaml", districts={"path": "d.gpkg", "name_field": "district"},
                   outputs={"fields": ["parquet"], "district_areas": True, "min_area_ha": 0.05,
                            "features": ["ndvi", "gcvi=ratio(NIR,G)"], "report": False})
    res = run_workflow(load_workflow(tmp_path / "wf.yaml"))
    assert res.status == "done" and {"features", "district_profiles"} <= set(res.timings)
    fields = gpd.read_parquet(res.run_dir / "fields.parquet")
    series = pd.read_parquet(res.run_dir / "field_timeseries.parquet")
    long, wide, _ = field_timeseries(tmp_path / "scene.tif", fields, indices=["ndvi", "gcvi=ratio(NIR,G)"])
    pd.testing.assert_frame_equal(series.sort_values(["field_id", "index"]).reset_index(drop=True),
                                  long.sort_values(["field_id", "index"]).reset_index(drop=True))
    np.testing.assert_allclose(fields["ndvi_peak"].to_numpy(), wide["ndvi_peak"].to_numpy())
    assert set(series["index"]) == {"ndvi", "gcvi"} and len(series) == 2 * len(fields)
    prof = pd.read_parquet(res.run_dir / "district_crop_timeseries.parquet")
    again = district_crop_timeseries(tmp_path / "scene.tif", res.run_dir / "mask.tif", tmp_path / "d.gpkg",
                                     "district", indices=["ndvi", "gcvi=ratio(NIR,G)"])
    np.testing.assert_allclose(prof["mean"].to_numpy(), again["mean"].to_numpy(), rtol=1e-12)
    areas = pd.read_csv(res.run_dir / "district_areas.csv")
    per = prof.drop_duplicates(["district", "class_id"]).merge(areas, on=["district", "class_id"])
    np.testing.assert_allclose(per.area_ha_x, per.area_ha_y, rtol=1e-9)
    q = query_run(res.run_dir, "SELECT count(*) AS n FROM field_timeseries WHERE \"index\" = 'ndvi'")
    assert int(q.n[0]) == len(fields)
    q = query_run(res.run_dir, "SELECT DISTINCT district FROM district_crop_timeseries ORDER BY 1")
    assert q.district.tolist() == ["East", "West"]


def test_features_need_fields_and_known_indices(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_model(tmp_path / "model")
    write_scene(tmp_path / "scene.tif", 64, 64, TF)
    write_workflow(tmp_path / "wf.yaml", outputs={"fields": [], "district_areas": False, "features": ["ndvi"]})
    with pytest.raises(ConfigError, match=r"key 'outputs.features': the growth features are per field"):
        load_workflow(tmp_path / "wf.yaml")
    write_workflow(tmp_path / "wf.yaml", outputs={"fields": ["parquet"], "district_areas": False,
                                                  "features": ["ndxi"]})
    with pytest.raises(ConfigError, match=r"key 'outputs.features': index 'ndxi': expected one of ndvi"):
        load_workflow(tmp_path / "wf.yaml")
