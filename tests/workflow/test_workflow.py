"""Workflow runs on real Dask clusters: local, external scheduler, GPU routing, resume, lock, mosaics."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.grid import tile_grid
from geoseg.errors import ConfigError, DistrictError, RasterReadError, RunLockedError, portable_errors
from geoseg.io.raster import MIN_CACHE_BYTES, raster_info
from geoseg.ml import infer
from geoseg.ml.model import read_card
from geoseg.ops.predict import predict_scene
from geoseg.rundir import Catalog, RunLock
from geoseg.workflow import tasks
from geoseg.workflow.cluster import read_ahead
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow
from geoseg.workflow.stages import task_tiles
from geoseg.workflow.store import SceneStore
from geoseg.workflow.tasks import MAX_READERS, readers_for, usable_cores

from ..gdal_capi import gdal_categories, gdal_rat
from ..geodesic_truth import geod_area_perimeter
from ..stac_schema import stac_errors
from ..workflow_helpers import run_geoseg, write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
#: Ground area (ha) of one TF pixel, 60 km east of UTM 43N's central meridian (pyproj.Geod): 0.07 % more
#: than the grid's 0.01 ha (and within 5e-6 of it over these 2.5 x 4 km)
PX_HA = float(geod_area_perimeter(shapely.box(560000, 3419990, 560010, 3420000), "EPSG:32643")[0][0]) / 1e4
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_model(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture
def project(tmp_path, model_dir):  # type: ignore[no-untyped-def]
    """A folder with scene.tif (300 x 250 px), the model and a workflow file."""
    write_scene(tmp_path / "scene.tif", 300, 250, TF)
    shutil.copytree(model_dir, tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml")
    return tmp_path


def _read(path):  # type: ignore[no-untyped-def]
    with rasterio.open(path) as d:
        return d.read(), d.crs, d.transform


# ------------------------------------------------------------------ config validation


@pytest.mark.parametrize(
    "override, message",
    [
        ({"tile": 100}, r"key 'tile': 100 is not divisible by 16; use 96 or 112"),
        ({"tile": "big"}, r"key 'tile': expected int, found str 'big'"),
        ({"scenes": ["nope.tif"]}, r"key 'scenes\[0\]\.path': file .*nope\.tif does not exist"),
        ({"model": "nomodel"}, r"key 'model': model directory .*nomodel does not exist"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"outputs": {"fields": ["kml"], "district_areas": False}}, r"key 'outputs\.fields': unknown format\(s\) \['kml'\]"),
        ({"outputs": {"fields": []}}, r"key 'districts': is required when outputs\.district_areas is true"),
        ({"cluster": {"scheduler": "10.0.0.1:8786"}}, r"key 'cluster\.scheduler': '10\.0\.0\.1:8786'; use 'local' or a scheduler address"),
        ({"cluster": {"resources": {"GPU": "one"}}}, r"key 'cluster\.resources\.GPU': expected a positive number"),
        ({"overlap": 40}, r"key 'overlap': 40 leaves no core in a 64 px tile"),
        ({"cluster": {"performance_report": "yes"}}, r"key 'cluster\.performance_report': expected bool, found str"),
        ({"outputs": {"observed": "autumn", "district_areas": False}},
         r"key 'outputs\.observed': 'autumn'; expected the date \(or time\) of the last image, e\.g\. 2024-10-31"),
    ],
)
def test_bad_workflows_name_the_file_and_key(project, override, message):  # type: ignore[no-untyped-def]
    write_workflow(project / "bad.yaml", **override)
    with pytest.raises(ConfigError, match=message) as e:
        load_workflow(project / "bad.yaml")
    assert "bad.yaml" in str(e.value)


def test_yaml_syntax_error_and_band_count(project, tmp_path):  # type: ignore[no-untyped-def]
    (project / "syntax.yaml").write_text("name: t\nscenes: [scene.tif\n")
    with pytest.raises(ConfigError, match=r"syntax\.yaml: YAML syntax error at line 3"):
        load_workflow(project / "syntax.yaml")
    with rasterio.open(project / "three.tif", "w", driver="GTiff", height=20, width=20, count=3, dtype="uint16",
                       crs="EPSG:32643", transform=TF) as d:
        d.write(np.ones((3, 20, 20), "uint16"))
    write_workflow(project / "bands.yaml", scenes=["three.tif"])
    with pytest.raises(ConfigError, match=r"key 'scenes\[0\]': scene 'three' has 3 bands but the model .* expects 4"):
        load_workflow(project / "bands.yaml")


def test_relative_paths_resolve_against_the_workflow_file(project, monkeypatch, tmp_path_factory):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    cfg = load_workflow(project / "wf.yaml")
    assert cfg.scenes[0].paths[0] == project / "scene.tif"
    assert cfg.store == (project / "store").resolve() and cfg.overlap == 16


# ------------------------------------------------------------------ local cluster


def _single_process_prediction(project):  # type: ignore[no-untyped-def]
    """Mask and confidence of the project's scene predicted in this process on one torch thread,
    with the workflow's tiles and batches."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict_scene(project / "model", project / "scene.tif", project / "single.tif",
                      confidence=project / "single_conf.tif", tile=64, overlap=16, batch_size=2)
    finally:
        torch.set_num_threads(threads)
    return _read(project / "single.tif")[0], _read(project / "single_conf.tif")[0]


def test_local_cluster_run_matches_single_process_prediction(project):  # type: ignore[no-untyped-def]
    cfg = load_workflow(project / "wf.yaml")
    res = run_workflow(cfg)
    assert res.status == "done" and res.tiles == 10 * 8 and res.tiles_skipped == 0
    mask, crs, tf = _read(res.run_dir / "mask.tif")
    assert crs.to_epsg() == 32643 and tf == TF and mask.shape == (1, 300, 250)
    # Same tiles, same batches, one torch thread: the single-process prediction gives the same bytes.
    single_mask, single_conf = _single_process_prediction(project)
    np.testing.assert_array_equal(mask, single_mask)
    np.testing.assert_array_equal(_read(res.run_dir / "confidence.tif")[0], single_conf)
    with rasterio.open(res.run_dir / "confidence.tif") as c, rasterio.open(res.run_dir / "mask.tif") as m:
        assert (c.scales, c.offsets, m.scales) == ((1 / 255,), (0.0,), (1.0,))  # a probability; classes unscaled
    assert (mask[0, :3] == 255).all() and (mask[0, 3:] < 7).all()
    # Each worker process loaded the model once, however many batches it ran.
    assert set(res.stats["model_loads_per_worker"].values()) == {1}
    assert sum(res.stats["infer_tasks_per_worker"].values()) == 20
    parts = res.stats["infer_worker_seconds"]  # where the workers' time went
    assert set(parts) == {"read", "model", "setup", "write"} and parts["read"] > 0 and parts["model"] > 0
    assert parts["setup"] > 0  # each worker's first task imports the model libraries and loads the checkpoint
    # Recorded: manifest and catalog.
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["status"] == "done" and m["workflow_sha256"] == cfg.sha256 and set(m["timings"]) >= {"infer", "mosaic"}
    assert m["model"]["weights_sha256"] and m["inputs"][0]["bytes"] == (project / "scene.tif").stat().st_size
    row = Catalog(cfg.runs_dir / "catalog.sqlite").get(res.run_id)
    assert (row["status"], row["tiles_done"], row["tiles_total"], row["scenes"]) == ("done", 80, 80, 1)
    _check_class_names_and_stac(res, card_classes=read_card(project / "model").classes)


def _check_class_names_and_stac(res, card_classes):  # type: ignore[no-untyped-def]
    """The run's mask carries its class names for GDAL (read through its C API) and QGIS, and the run's
    STAC item, listed in the manifest, is valid against the official schemas and describes both rasters."""
    mask = res.run_dir / "mask.tif"
    assert gdal_categories(mask) == card_classes.names
    rat = gdal_rat(mask)
    assert rat is not None and [r[:2] for r in rat.rows] == [[str(c.id), c.name] for c in card_classes]
    assert (res.run_dir / "mask.qml").is_file()
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["outputs"]["stac_item"] == "stac_item.json" and res.outputs["stac_item"] == str(res.run_dir / "stac_item.json")
    item = json.loads((res.run_dir / "stac_item.json").read_text())
    assert stac_errors(item) == []
    assert item["id"] == res.run_id and set(item["assets"]) == {"mask", "confidence"}
    assert [c["name"] for c in item["assets"]["mask"]["classification:classes"]] == card_classes.names
    with rasterio.open(mask) as src:
        assert item["assets"]["mask"]["proj:shape"] == [src.height, src.width]
        assert item["assets"]["mask"]["proj:transform"] == list(src.transform)[:6]
        assert item["assets"]["mask"]["proj:epsg"] == src.crs.to_epsg()


def test_a_run_serves_the_dashboard_and_writes_a_dask_performance_report(project):  # type: ignore[no-untyped-def]
    write_workflow(project / "perf.yaml", name="perf",
                   cluster={"workers": 1, "threads_per_worker": 1, "dashboard": True, "performance_report": True})
    res = run_workflow(load_workflow(project / "perf.yaml"))
    report = res.run_dir / "dask-report.html"
    assert res.status == "done" and res.outputs["dask_report"] == str(report)
    html = report.read_text(encoding="utf-8")
    # the task stream of this run: its inference and assembly tasks
    assert "Dask Performance Report" in html and "infer_batch" in html and "assemble_scene" in html
    assert not list(res.run_dir.glob(".*.partial"))  # written under a temporary name, then renamed
    assert res.dashboard is not None and res.dashboard.startswith("http://")


def test_a_task_that_fails_on_a_worker_is_one_clean_line_and_keeps_the_performance_report(project):  # type: ignore[no-untyped-def]
    """A corrupt block read on a worker: the client gets the RasterReadError itself (GDAL's errors in
    its chain would not survive Dask's pickling), the command prints it as one line with GDAL's reason,
    the workers do not log it with a traceback, and the failed run's performance report is kept."""
    src_path, bad = project / "scene.tif", project / "damaged.tif"
    with rasterio.open(src_path) as s:
        with rasterio.open(bad, "w", **{**s.profile, "compress": "deflate"}) as d:
            d.write(s.read())
    data = bytearray(bad.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + n // 4] = b"\xff" * (n // 4)  # block data only: the header stays readable
    bad.write_bytes(bytes(data))
    write_workflow(project / "bad.yaml", name="bad", scenes=["damaged.tif"],
                   cluster={"workers": 1, "threads_per_worker": 1, "dashboard": False, "performance_report": True})
    out = run_geoseg(["run", "bad.yaml"], cwd=project)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert out.returncode == 1 and len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith("Error: ") and "damaged.tif: reading window" in lines[0], lines[0]
    assert "IReadBlock failed" in lines[0] and "internal error" not in lines[0]
    reports = list((project / "runs" / "bad").glob("*/dask-report.html"))
    assert len(reports) == 1 and "infer_batch" in reports[0].read_text(encoding="utf-8")
    assert not list((project / "runs" / "bad").glob("*/.*.partial"))


def test_geoseg_errors_cross_to_the_client_without_gdal_chains():
    from distributed.protocol import pickle as dask_pickle


    def read():  # a geoseg error raised while handling an error whose class tblib cannot rebuild
        try:
            raise _Unrebuildable("GDAL said no")
        except _Unrebuildable:
            raise RasterReadError("scene.tif: reading window failed") from None

    with pytest.raises(Exception) as plain:
        read()
    with pytest.raises(AttributeError):  # what Dask met: it would hand the client a bare Exception
        dask_pickle.loads(dask_pickle.dumps(plain.value))
    with pytest.raises(RasterReadError) as portable:
        portable_errors(read)()
    again = dask_pickle.loads(dask_pickle.dumps(portable.value))
    assert type(again) is RasterReadError and str(again) == "scene.tif: reading window failed"


class _Unrebuildable(Exception):
    """Like GDAL's CPLE_* errors under tblib: ``args`` is a read-only property."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self._msg = msg

    @property  # type: ignore[override]
    def args(self):  # type: ignore[no-untyped-def]
        return (self._msg,)


def test_lock_refuses_a_second_run_and_takes_over_stale_locks(project):  # type: ignore[no-untyped-def]
    cfg = load_workflow(project / "wf.yaml")
    lock_path = cfg.runs_dir / cfg.name / ".lock"
    with RunLock(lock_path):
        with pytest.raises(RunLockedError, match=r"\.lock: this workflow is already running \(pid \d+"):
            run_workflow(cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": "then"}))
    res = run_workflow(cfg)
    assert res.stale_lock is not None and res.stale_lock["pid"] == dead.pid
    assert not lock_path.exists()


def test_kill_then_resume_gives_byte_identical_outputs(project, tmp_path_factory):  # type: ignore[no-untyped-def]
    # Every output: mask, confidence, fields in three formats, district table.
    write_districts(project / "districts.gpkg", 561250, (559000, 3415000, 563500, 3421000))
    write_workflow(project / "wf.yaml", districts={"path": "districts.gpkg", "name_field": "district"},
                   outputs={"fields": ["parquet", "gpkg", "fgb"], "district_areas": True})
    # The uninterrupted reference, in a copy of the project.
    ref = tmp_path_factory.mktemp("ref")
    for name in ("scene.tif", "wf.yaml", "districts.gpkg"):
        shutil.copy(project / name, ref / name)
    shutil.copytree(project / "model", ref / "model")
    ref_dir = run_workflow(load_workflow(ref / "wf.yaml")).run_dir

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*GEOSEG, "run", str(project / "wf.yaml"), "--quiet"], cwd=project, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((project / "store").rglob("batch-*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    records = sorted((project / "store").rglob("batch-*.json"))
    assert 3 <= len(records) < 20, "the kill should land part way through inference"
    # Damage one finished tile: the checksum must catch it and its batch be recomputed.
    # (a tile of a recorded batch: a tile file may also be there without its batch's record)
    victim = records[0].parent / f"{min(json.loads(records[0].read_text())['tiles'])}.tif"
    victim.write_bytes(victim.read_bytes()[:100])

    out = subprocess.run([*GEOSEG, "run", str(project / "wf.yaml"), "--resume"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == project / "runs" / "t"
    assert [p.name for p in run_dir.parent.iterdir() if not p.is_symlink()] == [run_dir.name]
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()  # the newest finished run
    reused = int(out.stdout.split("(")[1].split()[0])
    assert 0 < reused <= (len(records) - 1) * 4
    for name in ("mask.tif", "confidence.tif", "district_areas.csv", "district_areas.parquet"):
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    # Field files carry their run's id (also as fiboa's collection); apart from it they are identical, geometry for
    # geometry.
    import geopandas as gpd

    for name in ("fields.parquet", "fields.gpkg", "fields.fgb"):
        read = gpd.read_parquet if name.endswith(".parquet") else gpd.read_file
        got, want = (read(d / name) for d in (run_dir, ref_dir))
        assert set(got.run_id) == set(got.collection) == {run_dir.name}
        assert set(want.run_id) == set(want.collection) == {ref_dir.name}
        assert len(got) > 10
        got, want = got.drop(columns=["run_id", "collection"]), want.drop(columns=["run_id", "collection"])
        assert got.drop(columns="geometry").equals(want.drop(columns="geometry")), name
        assert (got.geometry.to_wkb() == want.geometry.to_wkb()).all(), name
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "done" and m["resumed"] == 1


# ------------------------------------------------------------------ external scheduler and GPU routing


def _scheduler_address(sched_file, deadline):  # type: ignore[no-untyped-def]
    """The address in the scheduler's file, once the scheduler has finished writing it.

    The file appears before its JSON is complete, so an empty or partial file means: wait.
    """
    while True:
        try:
            return json.loads(sched_file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            if time.time() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def external_cluster(tmp_path):  # type: ignore[no-untyped-def]
    """A real `dask scheduler` and two `dask worker` processes on loopback; worker 'gpu' offers GPU=1."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    address = _scheduler_address(sched_file, deadline=time.time() + 60)
    for name, extra in (("gpu", ["--resources", "GPU=1"]), ("cpu", [])):
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
                                       "--nworkers", "1", "--name", name, "--no-dashboard", *extra], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    from distributed import Client

    with Client(address, timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)
        names = {w["name"]: a for a, w in c.scheduler_info()["workers"].items()}
    yield address, names
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


def test_external_scheduler_routes_inference_to_gpu_workers(project, external_cluster):  # type: ignore[no-untyped-def]
    address, names = external_cluster
    # Any worker: both take inference tasks.
    write_workflow(project / "any.yaml", name="any", cluster={"scheduler": address, "dashboard": False})
    res = run_workflow(load_workflow(project / "any.yaml"))
    assert res.tiles == 80 and set(res.stats["infer_tasks_per_worker"]) == {names["gpu"], names["cpu"]}
    # GPU: 1 -> only the worker started with --resources GPU=1 gets inference tasks.
    write_workflow(project / "gpu.yaml", name="gpu", cluster={"scheduler": address, "resources": {"GPU": 1}})
    res2 = run_workflow(load_workflow(project / "gpu.yaml"))
    assert res2.stats["infer_tasks_per_worker"] == {names["gpu"]: 20}
    assert (res2.run_dir / "mask.tif").read_bytes() == (res.run_dir / "mask.tif").read_bytes()


def test_a_resource_no_worker_offers_fails_fast(project, external_cluster):  # type: ignore[no-untyped-def]
    address, _ = external_cluster
    write_workflow(project / "tpu.yaml", name="tpu", cluster={"scheduler": address, "resources": {"TPU": 1}})
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"inference tasks need worker resources \{'TPU': 1\.0\}, but no worker offers them"):
        run_workflow(load_workflow(project / "tpu.yaml"))
    assert time.time() - t0 < 30
    m = json.loads(next((project / "runs" / "tpu").glob("*/manifest.json")).read_text())
    assert m["status"] == "failed" and "TPU" in m["error"]


def test_unreachable_scheduler_is_one_clear_error(project):  # type: ignore[no-untyped-def]
    out = subprocess.run([*GEOSEG, "run", str(project / "wf.yaml"), "--scheduler", "tcp://127.0.0.1:9"],
                         cwd=project, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in lines[0]


# ------------------------------------------------------------------ several scenes


def test_overlapping_scenes_count_each_location_once(project):  # type: ignore[no-untyped-def]
    # Scene b overlaps the lower half of scene a and extends below it (same CRS, same pixel grid).
    write_scene(project / "b.tif", 200, 250, TF @ Affine.translation(0, 200), seed=5)
    # Districts split at x = 561250 (column 125), on pixel edges, covering both scenes.
    write_districts(project / "districts.gpkg", 561250, (559000, 3415000, 563500, 3421000))
    write_workflow(project / "two.yaml", name="two", scenes=["scene.tif", "b.tif"],
                   districts={"path": "districts.gpkg", "name_field": "district"},
                   outputs={"fields": ["parquet"], "district_areas": True, "min_area_ha": 0,
                            "observed": "2024-10-31"})
    res = run_workflow(load_workflow(project / "two.yaml"))
    mosaic, crs, tf = _read(res.run_dir / "mask.tif")
    a = _read(res.run_dir / "scenes" / "scene" / "mask.tif")[0][0]
    b = _read(res.run_dir / "scenes" / "b" / "mask.tif")[0][0]
    assert tf == TF and mosaic.shape == (1, 400, 250)
    m = mosaic[0]
    # First valid scene wins where they overlap; b fills the rest (its collar rows inside a are taken from a).
    np.testing.assert_array_equal(m[:300], a)
    np.testing.assert_array_equal(m[300:], b[100:])
    # Each pixel counted once: the valid area of the mosaic is the union, not the sum.
    assert (m != 255).sum() == (a != 255).sum() + (b[100:] != 255).sum()
    # District areas equal those of the single mosaic's pixels (10 m pixels, PX_HA each): no double counting.
    import pandas as pd

    areas = pd.read_csv(res.run_dir / "district_areas.csv")
    union = np.concatenate([a, b[100:]])
    for name, cols in (("West", slice(0, 125)), ("East", slice(125, 250))):
        part = union[:, cols]
        got = areas[areas.district == name].set_index("class_id")
        for cid in range(7):
            assert got.loc[cid, "area_ha"] == pytest.approx((part == cid).sum() * PX_HA, rel=1e-5, abs=1e-6), \
                (name, cid)
        assert got["observed_ha"].iloc[0] == pytest.approx((part != 255).sum() * PX_HA, rel=1e-5)
    # Field polygons: their areas sum to the mosaic's crop pixels (no sieving; background excluded).
    fields = pd.read_parquet(res.run_dir / "fields.parquet", columns=["class_id", "area_ha", "district", "collection",
                                                                      "run_id", "determination:datetime"])
    assert fields.area_ha.sum() == pytest.approx(((union != 255) & (union != 0)).sum() * PX_HA, rel=1e-5)
    assert set(fields.district) <= {"West", "East"}
    # fiboa: the run is the collection; the workflow's outputs.observed is when the fields were observed
    assert (fields.collection == res.run_dir.name).all() and (fields.run_id == res.run_dir.name).all()
    assert (fields["determination:datetime"] == pd.Timestamp("2024-10-31T00:00:00Z")).all()
    _check_class_names_and_stac(res, card_classes=read_card(project / "model").classes)
    for scene in ("scene", "b"):  # each scene's mask is a mask COG too
        assert gdal_categories(res.run_dir / "scenes" / scene / "mask.tif") == read_card(project / "model").classes.names


def test_scenes_in_two_utm_zones_mosaic_onto_one_grid(project):  # type: ignore[no-untyped-def]
    # The same ground, delivered in UTM 43N and (reprojected) in UTM 44N.
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(project / "scene.tif") as src:
        tf44, w, h = calculate_default_transform(src.crs, "EPSG:32644", src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": "EPSG:32644", "transform": tf44, "width": w, "height": h}
        with rasterio.open(project / "z44.tif", "w", **profile) as dst:
            for i in range(1, 5):
                reproject(rasterio.band(src, i), rasterio.band(dst, i), resampling=rasterio.enums.Resampling.nearest)
            dst.descriptions = src.descriptions
    write_workflow(project / "zones.yaml", name="zones", scenes=["z44.tif", "scene.tif"], crs="EPSG:32643")
    res = run_workflow(load_workflow(project / "zones.yaml"))
    mosaic, crs, tf = _read(res.run_dir / "mask.tif")
    assert crs.to_epsg() == 32643 and tf.a == 10
    only43 = _read(res.run_dir / "scenes" / "scene" / "mask.tif")[0][0]
    n43, n = (only43 != 255).sum(), (mosaic[0] != 255).sum()
    # The two scenes show the same ground: the mosaic counts it once (about one scene's area, not two).
    assert 0.97 * n43 <= n <= 1.03 * n43


def test_district_problems_are_recorded_not_fatal(project):  # type: ignore[no-untyped-def]
    import geopandas as gpd
    import pandas as pd

    write_districts(project / "d.gpkg", 561250, (559000, 3415000, 563500, 3421000))
    d = gpd.read_file(project / "d.gpkg")
    d = pd.concat([d, gpd.GeoDataFrame({"district": ["Nowhere"]}, geometry=[None], crs=d.crs)], ignore_index=True)
    d.to_file(project / "d.gpkg", driver="GPKG")
    write_workflow(project / "dp.yaml", name="dp", districts={"path": "d.gpkg", "name_field": "district"},
                   outputs={"fields": ["parquet"], "district_areas": True, "report": False})
    res = run_workflow(load_workflow(project / "dp.yaml"))
    assert any(p.startswith("Nowhere:") for p in res.stats["district_problems"]), res.stats["district_problems"]
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["stats"]["district_problems"] == res.stats["district_problems"]
    areas = pd.read_csv(res.run_dir / "district_areas.csv")
    assert set(areas.district) == {"West", "East"}
    fields = pd.read_parquet(res.run_dir / "fields.parquet", columns=["district"])
    assert set(fields.district) <= {"West", "East"} and len(fields) > 0


def test_a_wrong_district_name_field_fails_before_any_tile_is_predicted(project):  # type: ignore[no-untyped-def]
    write_districts(project / "d.gpkg", 561250, (559000, 3415000, 563500, 3421000))
    write_workflow(project / "bad.yaml", name="bad", districts={"path": "d.gpkg", "name_field": "DISTNAME"},
                   outputs={"fields": ["parquet"], "district_areas": True, "report": False})
    with pytest.raises(DistrictError, match=r"d\.gpkg.*DISTNAME"):
        run_workflow(load_workflow(project / "bad.yaml"))
    assert not list((project / "store").rglob("*.tif"))  # checked in the plan, before the cluster starts


# --------------------------------------------------------------------------------------
# task sizing and the allocator (pure; no cluster)




@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(1, 400), min_size=1, max_size=4), workers=st.integers(1, 8),
       most=st.integers(1, 40), batch=st.integers(1, 8))
def test_task_size_is_bounded_and_no_worse_than_the_cap(counts, workers, most, batch):
    n = task_tiles(counts, workers, most, batch)
    assert 1 <= n <= most
    assert n == most or n % batch == 0  # whole forward passes, or the cap itself

    def span(k: int) -> int:  # the busiest worker's tiles when tasks go to the least-loaded worker
        loads = [0] * workers
        for size in sorted((min(k, c - i) for c in counts for i in range(0, c, k)), reverse=True):
            loads[loads.index(min(loads))] += size
        return max(loads)

    assert span(n) <= span(most)
    if workers > 1 and sum(counts) > most:  # more than one task's worth: no worker waits for one giant task
        assert span(n) < sum(counts)


def test_task_size_examples():
    assert task_tiles([9], 2, 16, 4) == 4  # 4 + 4 + 1: both workers busy (was one task of 9)
    assert task_tiles([144], 2, 16, 4) == 12  # 12 tasks, 6 each (16 per task: 9 tasks, 5 against 4)
    assert task_tiles([144], 1, 16, 4) == 16  # one worker: the largest tasks
    assert task_tiles([3], 4, 16, 4) == 16  # one task of 3 whatever the size: ties go to the largest


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_allocator_tuning_can_be_switched_off():
    code = "import geoseg.parallel as p; print(p.tune_allocator())"
    env = {**os.environ, "GEOSEG_MALLOC": "default"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    env.pop("GEOSEG_MALLOC")
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == str(GLIBC)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator (mallopt, malloc_trim); resident memory from /proc")
def test_memory_kept_for_reuse_is_returned_after_inference():
    """With the tuned thresholds a freed 200 MB array stays resident; release_memory gives it back."""
    code = (
        "import numpy as np, os\n"
        "from geoseg.parallel import release_memory, tune_allocator\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') >> 20\n"
        "tune_allocator(); a = np.ones(200 << 20, np.uint8); del a\n"
        "kept = rss(); release_memory(); print(kept - rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) > 150  # MiB handed back


def test_inference_tasks_read_through_a_real_block_cache(project, monkeypatch):  # type: ignore[no-untyped-def]
    """rasterio takes an integer GDAL_CACHEMAX as bytes: the task must ask for megabytes' worth
    (a 256-byte cache decoded every 16-band block again for each of the ~4 tiles sharing it)."""

    seen = []
    real = infer.read_tile

    def spy(src, tile, **kw):  # type: ignore[no-untyped-def]
        seen.append(int(rasterio.env.getenv()["GDAL_CACHEMAX"]))
        return real(src, tile, **kw)

    monkeypatch.setattr(infer, "read_tile", spy)  # the task reads through geoseg.ml.infer.read_batch
    info = raster_info(project / "scene.tif")
    grid = tile_grid(info.shape, info.transform, size=64, overlap=16)
    rec = tasks.infer_batch(str(project / "scene.tif"), str(project / "model"), str(project / "store"), 0,
                            grid.tiles[:4], batch_size=2, device="cpu")
    assert len(seen) == 4 and min(seen) >= MIN_CACHE_BYTES
    # the record splits the task's time: reading, the model, the first task's setup, the store
    assert rec["read_seconds"] > 0 and rec["compute_seconds"] > 0 and rec["write_seconds"] > 0
    assert rec["seconds"] >= rec["read_seconds"] + rec["compute_seconds"] + rec["write_seconds"]


def test_reader_threads_give_the_same_tiles_and_close_their_files(project, monkeypatch):  # type: ignore[no-untyped-def]
    """Reading ahead on several threads (one dataset each) stores exactly what reading inline stores."""
    from contextlib import contextmanager


    opened, closed = [], []
    real = tasks.open_raster

    @contextmanager
    def spy(path):  # type: ignore[no-untyped-def]
        with real(path) as src:
            opened.append(path)
            yield src
        closed.append(path)

    monkeypatch.setattr(tasks, "open_raster", spy)
    info = raster_info(project / "scene.tif")
    tiles = tile_grid(info.shape, info.transform, size=64, overlap=16).tiles[:10]
    stored = {}
    for readers in (0, 3):
        root = project / f"store{readers}"
        rec = tasks.infer_batch(str(project / "scene.tif"), str(project / "model"), str(root), 0, tiles,
                                batch_size=2, device="cpu", read_ahead=readers)
        assert rec["read_seconds"] > 0 and not rec["skipped"]
        stored[readers] = [SceneStore(root).read_tile(t) for t in tiles]
        if readers == 0:
            assert len(opened) == 1  # the model's thread reads from the task's one dataset
    for a, b in zip(stored[3], stored[0], strict=True):
        np.testing.assert_array_equal(a, b)
    with rasterio.open(SceneStore(project / "store0").tile_path(tiles[0])) as t:  # internal: quick ZSTD
        assert (t.count, t.dtypes[0], t.profile["compress"]) == (2, "uint8", "zstd")
    assert len(opened) >= 3 and sorted(opened) == sorted(closed)  # the readers' own datasets, all closed


def test_reader_threads_by_device():
    assert readers_for("cpu") == 0 and readers_for("cpu", 4) == 0  # CPU cores run the model
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert readers_for("cuda") == max(1, min(MAX_READERS, cores - 1))
    assert readers_for("cuda:1", threads=10 * cores) == 1


@pytest.mark.parametrize("workers, threads, readers", [(4, 1, 3), (3, 2, 3), (16, 1, 0), (20, 1, 0), (1, 1, 8)])
def test_local_cluster_shares_its_spare_cores_out_as_readers(project, monkeypatch, workers, threads, readers):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    cluster = {"workers": workers, "threads_per_worker": threads, "dashboard": False}
    cfg = load_workflow(write_workflow(project / "wf.yaml", cluster=cluster))
    assert read_ahead(cfg) == readers
    ext = load_workflow(write_workflow(project / "wf.yaml", cluster={"scheduler": "tcp://127.0.0.1:8786"}))
    assert read_ahead(ext) is None  # an external cluster's workers decide from their own cores


def test_a_corrupt_block_read_ahead_fails_the_task_cleanly(project):  # type: ignore[no-untyped-def]
    """A decoding error on a reader thread reaches the task as the one-line read error, and the
    batch leaves no record (it will be predicted again on resume)."""

    src_path, bad = project / "scene.tif", project / "damaged.tif"
    with rasterio.open(src_path) as s:
        profile = {**s.profile, "compress": "deflate"}
        with rasterio.open(bad, "w", **profile) as d:
            d.write(s.read())
    data = bytearray(bad.read_bytes())
    n = len(data)
    data[n // 3 : n // 3 + n // 4] = b"\xff" * (n // 4)  # block data only: the header and tags stay readable
    bad.write_bytes(bytes(data))
    info = raster_info(bad)
    tiles = tile_grid(info.shape, info.transform, size=64, overlap=16).tiles
    root = project / "store_bad"
    with pytest.raises(RasterReadError, match=r"damaged\.tif: reading window .*(truncated|corrupt)"):
        tasks.infer_batch(str(bad), str(project / "model"), str(root), 0, tiles, batch_size=2, device="cpu",
                          read_ahead=2)
    assert not SceneStore(root).record_path(0).exists() and not SceneStore(root).batch_done(0, tiles)


def test_a_run_reading_ahead_on_spare_cores_gives_the_same_mask(project):  # type: ignore[no-untyped-def]
    """One worker on a machine with more cores: its tasks read on reader threads (own datasets, inside
    the worker process) and the outputs equal the single-process prediction's bytes."""

    cfg = load_workflow(write_workflow(project / "wf1.yaml",
                                       cluster={"workers": 1, "threads_per_worker": 1, "dashboard": False}))
    if usable_cores() >= 2:
        assert read_ahead(cfg) >= 1
    res = run_workflow(cfg)
    single_mask, single_conf = _single_process_prediction(project)
    np.testing.assert_array_equal(_read(res.run_dir / "mask.tif")[0], single_mask)
    np.testing.assert_array_equal(_read(res.run_dir / "confidence.tif")[0], single_conf)
    assert res.stats["infer_worker_seconds"]["read"] > 0


def test_processes_exit_without_a_final_collection_of_what_they_imported():
    """quick_exit registers gc.freeze at exit, once: an exit handler registered before it (so run
    after it) sees the objects frozen, which the final collection then skips."""
    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "from geoseg.parallel import quick_exit\n"
        "print(quick_exit(), quick_exit())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "frozen", "True"]
