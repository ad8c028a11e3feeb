"""Fields written where they are made: the GeoParquet dataset of `polygonize_dataset`, read as one
table, equals `polygonize_raster`'s fields for any block size (a property test), on a Dask cluster
too; parts are whole fields, only seam fields are merged; DuckDB reads it; bad uses are refused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.classes import default_classes
from geoseg.errors import GeosegError, PolygonizeError
from geoseg.ops.polygonize import SEAM_PART, polygonize_dataset, polygonize_raster

from ..core.test_vectorize import random_masks, write_mask
from ..ops.test_polygonize_fields import write

CLASSES = default_classes()


def _same(ds: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> None:
    ds = ds.sort_values("field_id").reset_index(drop=True)
    assert ds.field_id.tolist() == ref.field_id.tolist()
    assert shapely.equals(ds.geometry.values, ref.geometry.values).all()
    cols = [c for c in ref.columns if c != "geometry"]
    assert list(ds.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(pd.DataFrame(ds[cols]), pd.DataFrame(ref[cols]), check_dtype=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask=random_masks(), block=st.integers(16, 40), min_ha=st.sampled_from([0.0, 0.02, 0.05]))
def test_dataset_equals_the_single_table_for_any_block(mask, block, min_ha):
    with tempfile.TemporaryDirectory() as d:
        path = write_mask(Path(d) / "m.tif", mask)
        kw = {"block": block, "min_area_ha": min_ha, "classes": CLASSES, "exclude": (0,), "workers": 2}
        ref = polygonize_raster(path, **kw)
        res = polygonize_dataset(path, Path(d) / "fields.parquet", **kw)
        assert res.fields == len(ref)
        back = gpd.read_parquet(res.path)
        if len(ref) == 0:  # one empty part, so that readers still find the columns
            assert [p.name for p in res.path.glob("*.parquet")] == [SEAM_PART]
            assert len(back) == 0 and list(back.columns) == list(ref.columns)
            return
        _same(back, ref)
        want = ref.groupby("crop:name")["area_ha"].sum()
        assert res.hectares == pytest.approx({k: float(v) for k, v in want.items()}, rel=1e-12)


def test_parts_hold_whole_fields_and_only_seam_fields_are_merged(tmp_path):
    i, j = np.mgrid[:16, :16]
    # 96 x 96 px of 6 px fields, no two neighbours of one crop: 256 fields
    mask = np.kron((i + 2 * j) % 3 + 1, np.ones((6, 6), int)).astype(np.uint8)
    path = write_mask(tmp_path / "m.tif", mask)
    res = polygonize_dataset(path, tmp_path / "fields.parquet", block=32, classes=CLASSES, min_area_ha=0)
    names = sorted(p.name for p in res.path.iterdir())
    assert SEAM_PART in names and len(names) == res.parts and res.parts > 2
    # every field lies in the block its part is named after, unless it is in the seam part
    for p in res.path.glob("part-0*.parquet"):
        i, j = (int(x) for x in p.stem.split("-")[1:])
        part = gpd.read_parquet(p)
        b = part.geometry.bounds
        x0, y0 = 600_000 + j * 320, 3_380_000 - i * 320
        assert (b.minx >= x0).all() and (b.maxx <= x0 + 320).all() and (b.maxy <= y0).all() and (b.miny >= y0 - 320).all()
    seams = gpd.read_parquet(res.path / SEAM_PART)
    bounds = seams.geometry.bounds
    on_seam = np.zeros(len(seams), bool)
    for k in (1, 2):  # block seams at 320 m and 640 m from the corner, on both axes: each reaches one
        on_seam |= (bounds.minx <= 600_000 + 320 * k) & (bounds.maxx >= 600_000 + 320 * k)
        on_seam |= (bounds.maxy >= 3_380_000 - 320 * k) & (bounds.miny <= 3_380_000 - 320 * k)
    assert on_seam.all() and res.fields == 256 and len(seams) < res.fields / 2
    # the schema and metadata are the same in every part, fiboa's, with the bbox covering column
    schemas = {pq.read_schema(p).remove_metadata().to_string() for p in res.path.glob("*.parquet")}
    assert len(schemas) == 1 and "bbox" in next(iter(schemas))
    # DuckDB reads the dataset as one table
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{res.path}/*.parquet')").fetchall()[0][0]
    assert n == res.fields == len(polygonize_raster(path, block=32, classes=CLASSES, min_area_ha=0))


def test_separated_fields_and_districts(tmp_path):
    rng = np.random.default_rng(5)
    mask = np.kron(rng.integers(1, 3, (10, 10)), np.ones((8, 8), int)).astype(np.uint8)
    boundary = np.zeros(mask.shape, np.uint8)
    boundary[::8, :] = 250
    boundary[:, ::8] = 250
    m, c = write(tmp_path, mask, boundary)
    from ..workflow_helpers import write_districts

    write_districts(tmp_path / "d.gpkg", 600_000 + 400, (600_000, 3_380_000 - 800, 600_000 + 800, 3_380_000))
    kw = {"confidence": c, "block": 24, "classes": CLASSES, "min_area_ha": 0.02, "districts": tmp_path / "d.gpkg",
              "name_field": "district", "run_id": "r1", "model_id": "m1", "observed": "2024-10-31"}
    ref = polygonize_raster(m, **kw)
    assert "class_share" in ref.columns and ref.district.notna().all()
    res = polygonize_dataset(m, tmp_path / "f.parquet", **kw)
    _same(gpd.read_parquet(res.path), ref)


def test_on_a_dask_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    rng = np.random.default_rng(1)
    mask = np.kron(rng.integers(0, 4, (9, 9)), np.ones((7, 7), int)).astype(np.uint8)
    path = write_mask(tmp_path / "m.tif", mask)
    ref = polygonize_raster(path, block=16, classes=CLASSES)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        res = polygonize_dataset(path, tmp_path / "f.parquet", block=16, classes=CLASSES, client=client)
    _same(gpd.read_parquet(res.path), ref)


def test_bad_uses_are_refused_and_nothing_is_left_half_written(tmp_path):
    mask = np.kron(np.arange(4).reshape(2, 2), np.ones((20, 20), int)).astype(np.uint8)
    path = write_mask(tmp_path / "m.tif", mask)
    out = tmp_path / "f.parquet"
    with pytest.raises(PolygonizeError, match=r"simplify_m cannot be used when fields are written block by block"):
        polygonize_dataset(path, out, simplify_m=5)
    first = polygonize_dataset(path, out, block=16, classes=CLASSES)
    with pytest.raises(GeosegError, match=r"f.parquet"):
        polygonize_dataset(path, out, overwrite=False)
    # a failure half-way (a class the table lacks) leaves the old dataset as it was, and no staging folder
    bad = mask.copy()
    bad[0, 0] = 9
    bad_path = write_mask(tmp_path / "bad.tif", bad)
    with pytest.raises(PolygonizeError, match=r"holds class values"):
        polygonize_dataset(bad_path, out, block=16, classes=CLASSES, min_area_ha=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tif", "f.parquet", "m.tif"]
    assert len(gpd.read_parquet(out)) == first.fields
    with pytest.raises(PolygonizeError, match=r"districts given without name_field"):
        polygonize_dataset(path, out, districts=tmp_path / "d.gpkg")


def test_without_a_class_table_every_part_names_the_same_code_list(tmp_path):
    rng = np.random.default_rng(2)
    mask = np.kron(rng.integers(0, 6, (8, 8)), np.ones((9, 9), int)).astype(np.uint8)
    mask[:30, :30] = np.where(mask[:30, :30] == 5, 4, mask[:30, :30])  # not every class in every block
    path = write_mask(tmp_path / "m.tif", mask)
    res = polygonize_dataset(path, tmp_path / "f.parquet", block=16, min_area_ha=0)
    back = gpd.read_parquet(res.path)
    assert back["crop:code_list"].nunique() == 1 and set(back["crop:name"]) == {f"class_{i}" for i in range(6)}


def test_cli_writes_a_dataset_and_refuses_what_a_folder_cannot_be(tmp_path):
    from click.testing import CliRunner

    from ..core.test_vectorize import _cli

    i, j = np.mgrid[:8, :8]
    path = write_mask(tmp_path / "m.tif", np.kron((i + 2 * j) % 3 + 1, np.ones((6, 6), int)).astype(np.uint8))
    classes = tmp_path / "classes.yaml"
    classes.write_text(CLASSES.to_yaml())
    out = tmp_path / "fields.parquet"
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(out), "--classes", str(classes),
                                    "--block", "16", "--min-area-ha", "0", "--dataset"])
    assert r.exit_code == 0, r.output
    assert "64 fields (no sieving), in " in r.output and len(gpd.read_parquet(out)) == 64
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", "-", "--dataset"])
    assert r.exit_code == 2 and "--dataset writes a folder of GeoParquet files" in r.output
    r = CliRunner().invoke(_cli(), ["polygonize", str(path), "--out", str(tmp_path / "g"), "--dataset",
                                    "--simplify", "5"])
    assert r.exit_code == 1 and "simplify_m cannot be used when fields are written block by block" in r.output
    assert "Traceback" not in r.output


def test_query_reads_a_run_dataset_in_safe_mode_and_names_a_damaged_part(tmp_path):
    from geoseg.errors import QueryError
    from geoseg.ops.query import query_run

    i, j = np.mgrid[:16, :16]
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    path = write_mask(run / "mask.tif", np.kron((i + 2 * j) % 3 + 1, np.ones((6, 6), int)).astype(np.uint8))
    res = polygonize_dataset(path, run / "fields.parquet", block=32, classes=CLASSES, min_area_ha=0)
    for safe in (True, False):
        q = query_run(run, 'SELECT "crop:name" AS crop, count(*) AS n FROM fields GROUP BY 1 ORDER BY 1', safe=safe)
        assert q.n.sum() == res.fields == 256 and q.crop.tolist() == ["rice", "sugarcane", "wheat"]
    part = sorted(res.path.glob("part-0*.parquet"))[1]
    part.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(QueryError) as e:
        query_run(run, "SELECT count(*) FROM fields")
    assert str(e.value).startswith(f"{part}: cannot be read as Parquet")
    assert f"geoseg polygonize {run}/mask.tif --dataset --out {run}/fields.parquet" in str(e.value)


@pytest.mark.parametrize("ext", ["gpkg", "fgb", "geojson", "shp"])
def test_a_dataset_streamed_into_one_file_equals_the_file_written_whole(tmp_path, ext):
    import pyogrio

    from geoseg.errors import VectorWriteError
    from geoseg.io.vector import write_vector, write_vector_parts

    i, j = np.mgrid[:16, :16]
    path = write_mask(tmp_path / "m.tif", np.kron((i + 2 * j) % 3 + 1, np.ones((6, 6), int)).astype(np.uint8))
    res = polygonize_dataset(path, tmp_path / "fields.parquet", block=32, classes=CLASSES, min_area_ha=0,
                             observed="2024-10-31", run_id="r1")
    parts = sorted(res.path.glob("*.parquet"))
    assert len(parts) > 3
    out, n = write_vector_parts((gpd.read_parquet(p) for p in parts), tmp_path / f"s.{ext}", classes=CLASSES)
    ref = write_vector(gpd.read_parquet(res.path), tmp_path / f"w.{ext}", classes=CLASSES)
    layer = {"layer": out.stem} if ext == "gpkg" else {}
    a = pyogrio.read_dataframe(out, **layer).sort_values("field_id").reset_index(drop=True)
    b = pyogrio.read_dataframe(ref, **({"layer": "w"} if ext == "gpkg" else {})).sort_values("field_id")
    b = b.reset_index(drop=True)
    assert n == len(a) == len(b) == res.fields
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert a.geometry.geom_equals(b.geometry).all()
    assert sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name) == []
    with pytest.raises(VectorWriteError, match=r"nothing to write \(no parts\)"):
        write_vector_parts(iter([]), tmp_path / f"none.{ext}")


def test_map_reduce_keeps_the_results_on_the_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    from geoseg.parallel import Runner

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        total = Runner(client=client).map_reduce(np.arange, [3, 4, 5], _sizes, lambda d, n: seen.append((d, n)))
        assert total == [3, 4, 5] and seen[-1] == (3, 3)
        # the reduction ran on a worker: its process is not this one
        pid = Runner(client=client).map_reduce(np.arange, [1], _pid)
        assert pid != os.getpid()
    assert Runner(2).map_reduce(np.arange, [3, 4], _sizes) == [3, 4]


def _sizes(results):
    return [len(r) for r in results]


def _pid(results):
    return os.getpid()


def test_features_per_part_equal_the_whole_table(tmp_path):
    from geoseg.ops.features import PartFeatures, SceneFootprint, field_timeseries, part_features
    from geoseg.parallel import Runner

    from ..workflow_helpers import write_scene

    i, j = np.mgrid[:16, :16]
    mask = np.kron((i + 2 * j) % 3 + 1, np.ones((6, 6), int)).astype(np.uint8)
    path = write_mask(tmp_path / "m.tif", mask)
    with rasterio.open(path) as src:
        tf = src.transform
    write_scene(tmp_path / "scene.tif", 96, 96, tf)
    res = polygonize_dataset(path, tmp_path / "fields.parquet", block=32, classes=CLASSES, min_area_ha=0)
    whole = gpd.read_parquet(res.path)
    parts = sorted(res.path.glob("*.parquet"))
    scene = SceneFootprint(str(tmp_path / "scene.tif"), (96, 96), tf, whole.crs)
    out = tmp_path / "series"
    out.mkdir()
    jobs = [PartFeatures(str(p), str(out / p.name), (scene,), ("ndvi",)) for p in parts]
    done = Runner(2).map(part_features, jobs)
    assert all(d["written"] and d["outside"] == 0 for d in done)
    long, wide, _ = field_timeseries(tmp_path / "scene.tif", whole, indices=["ndvi"])
    got = pd.read_parquet(out).sort_values(["field_id", "date"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, long.sort_values(["field_id", "date"]).reset_index(drop=True),
                                  check_categorical=False)
    again = gpd.read_parquet(res.path).sort_values("field_id").reset_index(drop=True)
    ref = wide.set_index(whole.field_id.to_numpy()).loc[again.field_id]
    np.testing.assert_allclose(again["ndvi_peak"].to_numpy(), ref["ndvi_peak"].to_numpy())
    assert again["ndvi_peak_date"].tolist() == ref["ndvi_peak_date"].tolist()


def test_resume_removes_the_staging_folders_an_interrupted_run_left(tmp_path):
    from geoseg.io.raster import atomic_path
    from geoseg.workflow.run import _remove_partials

    run = tmp_path / "runs" / "r1"
    staging = atomic_path(run / "fields.parquet")
    (staging / "inner").mkdir(parents=True)
    (staging / "part-00000-00000.parquet").write_bytes(b"x")
    (staging / "inner" / ".part.parquet.partial-0123456789ab.parquet").write_bytes(b"y")
    stray = atomic_path(run / "mask.tif")
    stray.write_bytes(b"z")
    (run / "fields.parquet").mkdir()  # a published dataset stays
    assert _remove_partials(tmp_path) == 2
    assert sorted(p.name for p in run.iterdir()) == ["fields.parquet"]
