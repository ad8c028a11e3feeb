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

from ..remote_servers import s3_server, subprocess_env
from ..workflow_helpers import write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]


@pytest.fixture(scope="module")
def s3():  # type: ignore[no-untyped-def]
    with s3_server({}) as server:
        old = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)  # this process talks to it too (the claim test, the listing)
        try:
            yield server
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _keys(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{s3.endpoint}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
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


def test_killed_run_with_scene_model_and_tiles_on_s3_resumes_to_the_same_mask(s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{s3.endpoint}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    model = write_model(tmp_path / "model")
    ref, proj = tmp_path / "ref", tmp_path / "proj"
    ref.mkdir()
    proj.mkdir()
    write_scene(ref / "scene.tif", 300, 250, TF)
    shutil.copytree(model, ref / "model")
    client.upload_file(str(ref / "scene.tif"), s3.bucket, "scenes/scene.tif")
    for f in sorted(model.iterdir()):
        client.upload_file(str(f), s3.bucket, f"models/m1/{f.name}")
    store = f"s3://{s3.bucket}/tiles"
    write_workflow(ref / "wf.yaml")  # the reference: an uninterrupted run, everything local
    write_workflow(proj / "wf.yaml", store=store, scenes=[f"s3://{s3.bucket}/scenes/scene.tif"],
                   model=f"s3://{s3.bucket}/models/m1")
    ref_dir = run_workflow(load_workflow(ref / "wf.yaml")).run_dir

    env = subprocess_env({**s3.env, "HF_HUB_OFFLINE": "1", "GEOSEG_CACHE": str(tmp_path / "cache")})
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
    assert not (proj / "store").exists()  # nothing of the store on the local disk
    keys = _keys(s3, "tiles/t/")
    assert any(k.endswith("/" + OWNER_FILE) for k in keys) and any(k.endswith("/tasks.json") for k in keys)
    # the model was copied once for the machine, whole
    copies = [p for p in (tmp_path / "cache" / "objects").iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1 and sorted(p.name for p in copies[0].iterdir()) == sorted(p.name for p in model.iterdir())
    # Damage one finished tile: the checksum must catch it and its batch be predicted again.
    # (a tile of a recorded batch: a tile may also be there without its batch's record)
    rec = min(records)
    victim = f"{rec.rsplit('/', 1)[0]}/{min(json.loads(client.get_object(Bucket=s3.bucket, Key=rec)['Body'].read())['tiles'])}.tif"
    client.put_object(Bucket=s3.bucket, Key=victim, Body=b"not a tile")

    out = subprocess.run([*GEOSEG, "run", str(proj / "wf.yaml"), "--resume"], cwd=proj, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    reused = int(out.stdout.split("(")[1].split()[0])
    assert 0 < reused <= (len(records) - 1) * 4  # the damaged tile's batch was predicted again
    for name in ("mask.tif", "confidence.tif"):
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["path"] == f"s3://{s3.bucket}/models/m1"
    assert manifest["inputs"] == [{"path": f"/vsis3/{s3.bucket}/scenes/scene.tif", "bytes": None, "mtime": None}]
    # the stored tiles read back through the store equal the mask's pixels
    scene_root = f"{store}/t/{run_dir.name}/scene"
    tiles = [k.rsplit("/", 1)[-1][:-4] for k in _keys(s3, f"tiles/t/{run_dir.name}/scene/") if k.endswith(".tif")]
    assert len(tiles) >= 20
    import rasterio

    from geoseg.core.grid import tile_grid

    with rasterio.open(run_dir / "mask.tif") as m:
        mask = m.read(1)
    grid = tile_grid(mask.shape, TF, 64, 16)
    assert sorted(t.key for t in grid) == sorted(tiles)
    st = SceneStore(scene_root)
    for t in list(grid)[::7]:
        core = st.read_tile(t, [1])[0]
        r, c = int(t.core.row_off), int(t.core.col_off)
        np.testing.assert_array_equal(core, mask[r:r + core.shape[0], c:c + core.shape[1]])


def test_unreachable_store_fails_the_run_in_one_line_and_runs_dir_stays_local(tmp_path) -> None:  # type: ignore[no-untyped-def]
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
    write_workflow(tmp_path / "wf2.yaml", runs_dir="s3://bucket/runs")
    with pytest.raises(ConfigError, match=r"key 'runs_dir': 's3://bucket/runs': the runs_dir must be a local folder"):
        load_workflow(tmp_path / "wf2.yaml")


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
