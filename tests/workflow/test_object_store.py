"""The tile store on object storage: a run whose workers write their tiles to an S3 API server
(moto, on 127.0.0.1) - killed part way through inference and resumed - gives the same mask bytes
as an uninterrupted run with a local store; the store folder is claimed with a conditional put."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.errors import ConfigError, ObjectStoreError, StoreInUseError
from geoseg.io.objects import object_prefix, read_text, write_text
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow
from geoseg.workflow.store import OWNER_FILE, SceneStore, claim_run_store, run_store

from ..remote_servers import subprocess_env
from ..workflow_helpers import write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]


def _keys(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    client = _s3_client(s3)
    out, token = [], None
    while True:
        kw = {"ContinuationToken": token} if token else {}
        page = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix, **kw)
        out += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return out


def test_text_objects_and_the_create_only_put(s3) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3.bucket}/t1"
    assert read_text(url, "a.json") is None
    write_text(url, "a.json", '{"n": 1}')
    assert json.loads(read_text(url, "a.json")) == {"n": 1}
    p = object_prefix(url)
    assert p.put("once", b"first", create=True) is True
    assert p.put("once", b"second", create=True) is False  # a conditional put: the first stays
    assert p.get("once") == b"first"


def test_a_store_folder_is_claimed_once(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = run_store(f"s3://{s3.bucket}/tiles", "wf", "r1")
    assert root == f"s3://{s3.bucket}/tiles/wf/r1"
    mine, other = tmp_path / "runs" / "wf" / "r1", tmp_path / "other" / "wf" / "r1"
    claim_run_store(root, run_dir=mine, resume=False)
    assert json.loads(object_prefix(root).get(OWNER_FILE))["run_dir"] == str(mine)
    with pytest.raises(StoreInUseError, match=rf"tiles/wf/r1: this tile-store folder belongs to run "
                                              rf"{re.escape(str(mine))} .*not to {re.escape(str(other))}; two runs"):
        claim_run_store(root, run_dir=other, resume=True)
    with pytest.raises(StoreInUseError, match=r"tiles/wf/r1: this tile-store folder was already claimed for .*r1 "
                                              r".*continue that run with --resume"):
        claim_run_store(root, run_dir=mine, resume=False)  # a new run never reuses a folder
    claim_run_store(root, run_dir=mine, resume=True)  # its own resume takes it back


def test_an_unreachable_store_is_one_clear_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ObjectStoreError, match=r"s3://nowhere/tiles/x: writing failed \(.*\); check the address"):
        object_prefix("s3://nowhere/tiles").put("x", b"1")
    assert "\n" not in str(pytest.raises(ObjectStoreError, object_prefix("s3://nowhere/t").get, "x").value)


def _s3_client(s3):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=f"http://{s3.endpoint}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _reference_and_project(s3, tmp_path: Path, prefix: str, size: tuple[int, int]):  # type: ignore[no-untyped-def]
    """A local reference project (scene, model, districts) and a project folder with only the districts;
    the scene and the model uploaded under ``prefix`` (``<prefix>scenes/scene.tif``, ``<prefix>models/m1/``)."""
    client = _s3_client(s3)
    model = write_model(tmp_path / "model")
    ref, proj = tmp_path / "ref", tmp_path / "proj"
    ref.mkdir()
    proj.mkdir()
    h, w = size
    write_scene(ref / "scene.tif", h, w, TF)
    shutil.copytree(model, ref / "model")
    x0, y1 = TF.c, TF.f
    for d in (ref, proj):
        write_districts(d / "districts.gpkg", x0 + 10 * w // 2, (x0, y1 - 10 * h, x0 + 10 * w, y1))
    client.upload_file(str(ref / "scene.tif"), s3.bucket, f"{prefix}scenes/scene.tif")
    for f in sorted(model.iterdir()):
        client.upload_file(str(f), s3.bucket, f"{prefix}models/m1/{f.name}")
    return client, model, ref, proj


def _download(client, bucket: str, url: str, dest: Path) -> Path:  # type: ignore[no-untyped-def]
    key = url.split(f"s3://{bucket}/", 1)[1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, key, str(dest))
    return dest


def test_killed_run_with_every_path_on_s3_resumes_to_the_same_outputs(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import geopandas as gpd
    import pandas as pd

    client, model, ref, proj = _reference_and_project(s3, tmp_path, "", (300, 250))
    store, runs = f"s3://{s3.bucket}/tiles", f"s3://{s3.bucket}/runs"
    common = {"outputs": {"fields": ["parquet", "gpkg"], "district_areas": True, "report": False, "features": ["ndvi"]},
              "districts": {"path": "districts.gpkg", "name_field": "district"}}
    write_workflow(ref / "wf.yaml", **common)  # the reference: an uninterrupted run, everything local
    write_workflow(proj / "wf.yaml", store=store, runs_dir=runs, scenes=[f"s3://{s3.bucket}/scenes/scene.tif"],
                   model=f"s3://{s3.bucket}/models/m1", **common)
    ref_dir = run_workflow(load_workflow(ref / "wf.yaml")).run_dir

    cache = tmp_path / "cache"
    env = subprocess_env({**s3.env, "HF_HUB_OFFLINE": "1", "GEOSEG_CACHE": str(cache)})
    proc = subprocess.Popen([*GEOSEG, "run", str(proj / "wf.yaml"), "--quiet"], cwd=proj, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    records: list[str] = []
    while time.time() < deadline and len(records) < 3:
        time.sleep(0.1)
        records = [k for k in _keys(s3, "tiles/t/") if k.rsplit("/", 1)[-1].startswith("batch-")]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    records = [k for k in _keys(s3, "tiles/t/") if k.rsplit("/", 1)[-1].startswith("batch-")]
    assert 3 <= len(records) < 20, "the kill should land part way through inference"
    assert not (proj / "store").exists() and not (proj / "runs").exists()  # nothing of either on the local disk
    keys = _keys(s3, "tiles/t/")
    assert any(k.endswith("/" + OWNER_FILE) for k in keys) and any(k.endswith("/tasks.json") for k in keys)
    # the killed run: its manifest (running) and lock on the store; listed as interrupted
    killed = [k for k in _keys(s3, "runs/t/") if k.endswith("/manifest.json")]
    assert len(killed) == 1 and _keys(s3, "runs/t/.lock") == ["runs/t/.lock"]
    listed = subprocess.run([*GEOSEG, "runs", "--runs-dir", runs, "--json"], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    assert [(r["status"], r["recorded_status"]) for r in json.loads(listed.stdout)] == [("interrupted", "running")]
    # the model was copied once for the machine, whole
    copies = [p for p in (cache / "objects").iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1 and sorted(p.name for p in copies[0].iterdir()) == sorted(p.name for p in model.iterdir())
    # Damage one finished tile: the checksum must catch it and its batch be predicted again.
    # (a tile of a recorded batch: a tile may also be there without its batch's record)
    rec = min(records)
    victim = f"{rec.rsplit('/', 1)[0]}/{min(json.loads(client.get_object(Bucket=s3.bucket, Key=rec)['Body'].read())['tiles'])}.tif"
    client.put_object(Bucket=s3.bucket, Key=victim, Body=b"not a tile")

    shutil.rmtree(cache / "runs")  # the resume may run on another machine: nothing of the first attempt's copy
    out = subprocess.run([*GEOSEG, "run", str(proj / "wf.yaml"), "--resume"], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    run_url = out.stdout.strip().splitlines()[-1]
    run_id = run_url.rsplit("/", 1)[-1]
    assert run_url == f"{runs}/t/{run_id}" and killed == [f"runs/t/{run_id}/manifest.json"]
    reused = int(out.stdout.split("(")[1].split()[0])
    assert 0 < reused <= (len(records) - 1) * 4  # the damaged tile's batch was predicted again
    got = tmp_path / "got"
    for name in ("mask.tif", "confidence.tif", "district_areas.csv"):
        assert _download(client, s3.bucket, f"{run_url}/{name}", got / name).read_bytes() == \
            (ref_dir / name).read_bytes(), name
    parts = [k for k in _keys(s3, f"runs/t/{run_id}/fields.parquet/") if k.endswith(".parquet")]
    assert parts
    for k in parts:
        _download(client, s3.bucket, f"s3://{s3.bucket}/{k}", got / "fields.parquet" / k.rsplit("/", 1)[-1])
    mine = gpd.read_parquet(got / "fields.parquet").sort_values("field_id").reset_index(drop=True)
    theirs = gpd.read_parquet(ref_dir / "fields.parquet").sort_values("field_id").reset_index(drop=True)
    assert len(mine) > 0
    pd.testing.assert_frame_equal(mine.drop(columns=["geometry", "collection", "run_id"]),
                                  theirs.drop(columns=["geometry", "collection", "run_id"]))
    assert mine.geometry.geom_equals_exact(theirs.geometry, 0).all() and "ndvi_peak" in mine.columns
    for name in ("field_timeseries.parquet", "district_crop_timeseries.parquet"):  # the growth features
        keys = [k for k in _keys(s3, f"runs/t/{run_id}/{name}") if k.endswith(".parquet")]
        for k in keys:
            _download(client, s3.bucket, f"s3://{s3.bucket}/{k}", got / k.split(f"{run_id}/", 1)[1])
        cols = ["field_id", "index", "date"] if name.startswith("field") else ["district", "class_id", "index", "date"]
        a, b = (pd.read_parquet(d / name).sort_values(cols).reset_index(drop=True) for d in (got, ref_dir))
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b)
    assert len(gpd.read_file(_download(client, s3.bucket, f"{run_url}/fields.gpkg", got / "fields.gpkg"), layer="fields")) == len(mine)
    manifest = json.loads(_download(client, s3.bucket, f"{run_url}/manifest.json", got / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["resumed"] == 1
    assert manifest["model"]["path"] == f"s3://{s3.bucket}/models/m1"
    assert manifest["inputs"] == [{"path": f"/vsis3/{s3.bucket}/scenes/scene.tif", "bytes": None, "mtime": None}]
    assert {"mask", "confidence", "fields_parquet", "fields_gpkg", "district_areas_csv", "run_log"} <= set(manifest["outputs"])
    assert all(f"runs/t/{run_id}/{v}" in _keys(s3, f"runs/t/{run_id}/{v}") or
               any(k.startswith(f"runs/t/{run_id}/{v}/") for k in _keys(s3, f"runs/t/{run_id}/{v}"))
               for v in manifest["outputs"].values())  # every output it lists is on the store
    # published: latest points at it, the catalog records it done, the lock and the exchange folder are gone,
    # and this machine keeps no copy of the run
    assert json.loads(client.get_object(Bucket=s3.bucket, Key="runs/t/latest")["Body"].read()) == {"run_id": run_id}
    assert not _keys(s3, "runs/t/.lock") and not _keys(s3, f"runs/t/{run_id}/.exchange/")
    assert not any((cache / "runs").rglob("*.tif"))
    listed = subprocess.run([*GEOSEG, "runs", "--runs-dir", runs, "--json"], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    assert [(r["run_id"], r["status"], r["run_dir"]) for r in json.loads(listed.stdout)] == [(run_id, "done", run_url)]
    shown = subprocess.run([*GEOSEG, "runs", "--runs-dir", runs, "show", run_id[:20]], env=env, capture_output=True,
                           text=True, timeout=120, check=True)
    assert f"run {run_id} of t: done" in shown.stdout and f"mask: {run_url}/mask.tif" in shown.stdout
    # the stored tiles read back through the store equal the mask's pixels
    tiles = [k.rsplit("/", 1)[-1][:-4] for k in _keys(s3, f"tiles/t/{run_id}/scene/") if k.endswith(".tif")]
    import rasterio

    from geoseg.core.grid import tile_grid

    with rasterio.open(got / "mask.tif") as m:
        mask = m.read(1)
    grid = tile_grid(mask.shape, TF, 64, 16)
    assert len(tiles) >= 20 and sorted(t.key for t in grid) == sorted(tiles)
    st = SceneStore(f"{store}/t/{run_id}/scene")
    for t in list(grid)[::7]:
        core = st.read_tile(t, [1])[0]
        r, c = int(t.core.row_off), int(t.core.col_off)
        np.testing.assert_array_equal(core, mask[r:r + core.shape[0], c:c + core.shape[1]])


def test_unreachable_store_fails_the_run_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_scene(tmp_path / "scene.tif", 100, 80, TF)
    write_model(tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml", store="s3://nowhere/tiles")
    env = subprocess_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                          "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "HF_HUB_OFFLINE": "1"})
    out = subprocess.run([*GEOSEG, "run", str(tmp_path / "wf.yaml")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: s3://nowhere/tiles/t/"), out.stderr
    assert "/owner.json: writing failed (" in lines[0] and "AWS_ENDPOINT_URL" in lines[0]
    assert not (tmp_path / "runs" / "t").exists() or not any((tmp_path / "runs" / "t").glob("2*"))


def test_a_folder_on_s3_is_copied_once_and_again_when_it_changes(s3, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from geoseg.io.objects import local_copy

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    url = f"s3://{s3.bucket}/models/copyme"
    write_text(url, "model.json", '{"v": 1}')
    write_text(url, "sub/extra.txt", "x")
    a = local_copy(url)
    assert (a / "model.json").read_text() == '{"v": 1}' and (a / "sub" / "extra.txt").read_text() == "x"
    assert local_copy(url + "/") == a  # the same objects: the same copy, nothing fetched again
    write_text(url, "model.json", '{"v": 2}')
    b = local_copy(url)
    assert b != a and (b / "model.json").read_text() == '{"v": 2}'
    assert not [p for p in (tmp_path / "cache" / "objects").iterdir() if p.name.startswith(".")]  # no partial copy
    with pytest.raises(ObjectStoreError, match=r"models/none: no objects under this model directory; check the URL"):
        local_copy(f"s3://{s3.bucket}/models/none", "model directory")
    write_scene(tmp_path / "scene.tif", 100, 80, TF)
    write_workflow(tmp_path / "wf.yaml", model=f"s3://{s3.bucket}/models/none")
    with pytest.raises(ConfigError, match=r"key 'model': s3://geoseg-test/models/none: no objects under this model"):
        load_workflow(tmp_path / "wf.yaml")


def test_workers_that_cannot_see_the_clients_disk(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Workers in their own mount namespace, where the client's folders (this test's tmp_path: the
    project, the client's copy of the run) are an empty tmpfs: everything they read and write goes
    through the object store, and the run's outputs equal those of a local run."""
    import tempfile

    from distributed import Client

    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {tmp_path} && true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("needs unshare and mount (root): " + probe.stderr.decode(errors="replace")[:200])
    client, _, ref, proj = _reference_and_project(s3, tmp_path, "iso/", (200, 180))
    common = {"outputs": {"fields": ["parquet"], "district_areas": True, "report": False, "features": ["ndvi"]},
              "districts": {"path": "districts.gpkg", "name_field": "district"}}
    write_workflow(ref / "wf.yaml", **common)
    ref_dir = run_workflow(load_workflow(ref / "wf.yaml")).run_dir

    worker_cache = Path(tempfile.mkdtemp(prefix="geoseg-worker-cache-"))  # outside tmp_path: the workers' own disk
    env = subprocess_env({**s3.env, "HF_HUB_OFFLINE": "1", "GEOSEG_CACHE": str(worker_cache)})
    sched_file = worker_cache / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        worker = (f"mount -t tmpfs tmpfs {tmp_path} && exec {sys.executable} -m dask worker {address} "
                  f"--nthreads 1 --nworkers 1 --no-dashboard")
        for _ in range(2):
            procs.append(subprocess.Popen(["unshare", "-m", "sh", "-c", worker], env=env, cwd=worker_cache,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            seen = c.run(lambda: sorted(os.listdir(str(tmp_path))))
        assert list(seen.values()) == [[], []]  # the workers see none of the client's files

        runs = f"s3://{s3.bucket}/iso/runs"
        write_workflow(proj / "wf.yaml", store=f"s3://{s3.bucket}/iso/tiles", runs_dir=runs,
                       scenes=[f"s3://{s3.bucket}/iso/scenes/scene.tif"], model=f"s3://{s3.bucket}/iso/models/m1",
                       cluster={"scheduler": address, "dashboard": False}, **common)
        out = subprocess.run([*GEOSEG, "run", str(proj / "wf.yaml"), "--json"], cwd=proj,
                             env={**env, "GEOSEG_CACHE": str(tmp_path / "cache")}, capture_output=True, text=True,
                             timeout=300, check=False)
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        run_url = summary["run_dir"]
        assert run_url.startswith(f"{runs}/t/") and summary["district_crop_ha"]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
        shutil.rmtree(worker_cache, ignore_errors=True)
    got = tmp_path / "got"
    for name in ("mask.tif", "confidence.tif", "district_areas.csv"):
        assert _download(client, s3.bucket, f"{run_url}/{name}", got / name).read_bytes() == \
            (ref_dir / name).read_bytes(), name
    run_id = run_url.rsplit("/", 1)[-1]
    import geopandas as gpd
    import pandas as pd

    for k in _keys(s3, f"iso/runs/t/{run_id}/"):
        if "/fields.parquet/" in k or "/field_timeseries.parquet/" in k:
            _download(client, s3.bucket, f"s3://{s3.bucket}/{k}", got / k.split(f"{run_id}/", 1)[1])
    mine = gpd.read_parquet(got / "fields.parquet").sort_values("field_id").reset_index(drop=True)
    theirs = gpd.read_parquet(ref_dir / "fields.parquet").sort_values("field_id").reset_index(drop=True)
    assert len(mine) > 0 and "ndvi_peak" in mine.columns
    pd.testing.assert_frame_equal(mine.drop(columns=["geometry", "collection", "run_id"]),
                                  theirs.drop(columns=["geometry", "collection", "run_id"]))
    series = [pd.read_parquet(d / "field_timeseries.parquet").sort_values(["field_id", "date"]).reset_index(drop=True)
              for d in (got, ref_dir)]
    pd.testing.assert_frame_equal(*series)
    assert not _keys(s3, f"iso/runs/t/{run_id}/.exchange/")


def test_a_season_run_into_a_runs_folder_on_s3(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A season composited in the run (on the client) and shared with the workers through the store:
    the published composite and mask equal a local run's."""
    from .test_season_workflow import NAMES, _items, _model, _season

    _items(tmp_path / "items")
    _model(tmp_path / "model", NAMES)
    outputs = {"fields": ["parquet"], "district_areas": False, "report": False, "exclude_classes": []}
    ref = run_workflow(load_workflow(write_workflow(tmp_path / "ref.yaml", name="s", scenes=[_season()],
                                                    outputs=outputs)))
    runs = f"s3://{s3.bucket}/season-runs"
    res = run_workflow(load_workflow(write_workflow(tmp_path / "s3.yaml", name="s", scenes=[_season()], outputs=outputs,
                                                    runs_dir=runs)))
    assert res.run_url == f"{runs}/s/{res.run_id}" and not res.run_dir.exists()
    assert res.outputs["season_kharif"] == f"{res.run_url}/inputs/kharif.tif"
    client = _s3_client(s3)
    for rel in ("inputs/kharif.tif", "mask.tif", "confidence.tif"):
        got = _download(client, s3.bucket, f"{res.run_url}/{rel}", tmp_path / "got" / rel)
        assert got.read_bytes() == (ref.run_dir / rel).read_bytes(), rel
    assert not _keys(s3, f"season-runs/s/{res.run_id}/.exchange/")
