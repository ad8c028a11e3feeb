"""Runs kept apart and kept honest: unique run ids, a tile-store folder per run, leftovers of a
killed run, killed runs listed as interrupted, relocatable run folders, the ``latest`` link, a
full tile store and a damaged run catalog (issue 17, parts 2, 5 and 8)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import geoseg.workflow.run as run_mod
from geoseg.cli.main import cli
from geoseg.errors import StoreInUseError
from geoseg.io.raster import count_differences
from geoseg.report.inputs import load_run, read_decimated
from geoseg.rundir import Catalog, RunLock, read_manifest
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow
from geoseg.workflow.store import claim_run_store

from ..workflow_helpers import write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
QUICK = {"fields": [], "district_areas": False, "report": False}
ONE_WORKER = {"workers": 1, "threads_per_worker": 1, "dashboard": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_model(tmp_path_factory.mktemp("m") / "model")


def _project(d: Path, model_dir: Path, *, seed: int = 0, shape: tuple[int, int] = (128, 128), **wf: Any) -> Path:
    """scene.tif (128 x 128 px: 16 tiles of 64 px in 4 batches), the model and wf.yaml."""
    d.mkdir(parents=True, exist_ok=True)
    write_scene(d / "scene.tif", *shape, TF, seed=seed)
    shutil.copytree(model_dir, d / "model")
    write_workflow(d / "wf.yaml", **{"outputs": QUICK, "cluster": ONE_WORKER, **wf})
    return d


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


# ------------------------------------------------------------------ 2. run ids and tile-store folders


def test_run_ids_are_unique_and_sortable_by_time(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    cfg = load_workflow(_project(tmp_path, model_dir) / "wf.yaml")
    ids = [run_mod._new_run_id(cfg) for _ in range(50)]
    assert len(set(ids)) == 50  # the same workflow in the same second: still distinct
    for i in ids:
        assert re.fullmatch(r"\d{8}T\d{6}Z-" + cfg.sha256[:6] + r"-[0-9a-f]{6}", i), i
    assert sorted(ids, key=lambda i: i[:16]) == ids  # time first: sorting by name sorts by start


def test_a_store_folder_held_by_another_run_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    root = tmp_path / "store" / "t" / "20261203T194500Z-abcdef-000001"
    mine, other = tmp_path / "a" / "runs" / "t" / root.name, tmp_path / "b" / "runs" / "t" / root.name
    claim_run_store(root, run_dir=mine, resume=False)
    owner = json.loads((root / "owner.json").read_text())
    assert owner["run_dir"] == str(mine) and owner["runs_dir"] == str(mine.parent.parent)
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
    with pytest.raises(StoreInUseError) as e:
        claim_run_store(root, run_dir=other, resume=False)
    msg = str(e.value)
    assert msg == (
        f"{root}: this tile-store folder belongs to run {mine} (pid {os.getpid()} on {socket.gethostname()} since "
        f"{owner['since']}), not to {other}; two runs in one store folder would mix their tiles - give this run "
        f"its own store (the workflow's store key or --store), or delete {root} if that run is gone for good"
    )
    with pytest.raises(StoreInUseError):  # a resume of another run is refused too
        claim_run_store(root, run_dir=other, resume=True)
    claim_run_store(root, run_dir=mine, resume=True)  # the same run, resumed: accepted
    unowned = root.parent / "20261203T194500Z-abcdef-000002"
    unowned.mkdir()
    with pytest.raises(StoreInUseError, match=rf"^{re.escape(str(unowned))}: this tile-store folder already exists "
                                              r"without an owner \(left by another run\); a new run must start"):
        claim_run_store(unowned, run_dir=other, resume=False)
    claim_run_store(unowned, run_dir=other, resume=True)  # a store from before owners were recorded: resumed
    assert json.loads((unowned / "owner.json").read_text())["run_dir"] == str(other)


def test_two_runs_with_one_run_id_never_share_tiles(model_dir, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Even when two runs get the same id (as two starts of one workflow text in the same second
    did), the second one cannot take the first one's tiles for its own."""
    store = tmp_path / "shared"
    a = _project(tmp_path / "a", model_dir, seed=1, store=str(store))
    b = _project(tmp_path / "b", model_dir, seed=2, store=str(store))
    monkeypatch.setattr(run_mod, "_new_run_id", lambda cfg: "20261203T194500Z-abcdef-000001")
    res_a = run_workflow(load_workflow(a / "wf.yaml"))
    with pytest.raises(StoreInUseError, match=re.escape(f"{store}/t/20261203T194500Z-abcdef-000001: this tile-store "
                                                        f"folder belongs to run {res_a.run_dir}")):
        run_workflow(load_workflow(b / "wf.yaml"))
    assert not (b / "runs" / "t" / "20261203T194500Z-abcdef-000001").exists()


@pytest.fixture(scope="module")
def solo(model_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Regions A and B, each run alone with its own store: their masks."""
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        d = _project(tmp_path_factory.mktemp(f"solo-{name}"), model_dir, seed=seed)
        out[name] = run_workflow(load_workflow(d / "wf.yaml")).run_dir / "mask.tif"
    return out


def test_two_regions_started_together_on_one_store_match_their_solo_runs(model_dir, tmp_path, solo):  # type: ignore[no-untyped-def]
    store = tmp_path / "shared"
    dirs = {name: _project(tmp_path / name, model_dir, seed=seed, store=str(store))
            for name, seed in (("a", 1), ("b", 2))}
    assert (dirs["a"] / "wf.yaml").read_text() == (dirs["b"] / "wf.yaml").read_text()  # one workflow text
    procs = {name: subprocess.Popen([*GEOSEG, "run", "wf.yaml", "--quiet"], cwd=d, env=ENV, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, d in dirs.items()}
    outs = {name: p.communicate(timeout=300) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1]
    run_dirs = {name: Path(outs[name][0].strip().splitlines()[-1]) for name in dirs}
    assert run_dirs["a"].name != run_dirs["b"].name
    assert sorted(p.name for p in (store / "t").iterdir()) == sorted(r.name for r in run_dirs.values())
    for name, run_dir in run_dirs.items():
        assert count_differences(run_dir / "mask.tif", solo[name]) == 0, name
        owner = json.loads((store / "t" / run_dir.name / "owner.json").read_text())
        assert owner["run_dir"] == str(run_dir)


# ------------------------------------------------------------------ 8a. leftovers of a killed run


def _fail_execute(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("killed here")


def test_resume_removes_the_partial_files_of_the_run(model_dir, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir)
    cfg = load_workflow(d / "wf.yaml")
    monkeypatch.setattr(run_mod, "_execute", _fail_execute)
    with pytest.raises(RuntimeError, match="killed here"):
        run_workflow(cfg)
    monkeypatch.undo()
    run_dir = next((d / "runs" / "t").glob("2*"))
    store = d / "store" / "t" / run_dir.name
    ours = [run_dir / ".mask.tif.partial-0123456789ab.tif", run_dir / "scenes" / "x" / ".mask.tif.partial-0a.tif",
            run_dir / ".manifest.json.partial-ffffffffffff.json", store / "scene" / ".r000_c000.tif.partial-9.tif"]
    kept = [d / "store" / "t" / "other-run" / "scene" / ".r000_c000.tif.partial-1.tif",  # another run's
            run_dir / "notes.partial-1.txt"]  # not a temporary name of geoseg's
    for p in ours + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    res = run_workflow(cfg, resume=True)
    assert res.run_dir == run_dir and res.status == "done"
    assert [p for p in ours if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    assert "removed 4 partial file(s) left by the interrupted attempt" in (run_dir / "run.log").read_text()


# ------------------------------------------------------------------ 8b. killed runs are interrupted, not running


def _runs_json(runs_dir: Path) -> list[dict[str, Any]]:
    out = _cli("runs", "--runs-dir", str(runs_dir), "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)  # type: ignore[no-any-return]


def test_a_killed_run_is_listed_as_interrupted(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir, shape=(300, 250))
    proc = subprocess.Popen([*GEOSEG, "run", "wf.yaml", "--quiet"], cwd=d, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((d / "store").rglob("batch-*.json")):
            time.sleep(0.05)
        rows = _runs_json(d / "runs")  # alive: running
        assert [(r["status"], r["recorded_status"]) for r in rows] == [("running", "running")]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    rows = _runs_json(d / "runs")
    assert [(r["status"], r["recorded_status"]) for r in rows] == [("interrupted", "running")]
    table = _cli("runs", "--runs-dir", str(d / "runs"))
    assert table.exit_code == 0 and "interrupted" in table.output and "running" not in table.output
    show = _cli("runs", "--runs-dir", str(d / "runs"), "show", rows[0]["run_id"])
    assert show.output.splitlines()[0] == (f"run {rows[0]['run_id']} of t: interrupted (recorded as running; its "
                                           f"process is gone - `geoseg run WORKFLOW --resume` continues it)")


def test_interrupted_means_the_lock_names_no_live_process_of_that_run(tmp_path):  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    cat = Catalog(runs / "catalog.sqlite")
    for rid in ("20261203T000000Z-abcdef-000001", "20261203T000001Z-abcdef-000002"):
        (runs / "t" / rid).mkdir(parents=True)
        cat.upsert(run_id=rid, name="t", status="running", started=rid[:16], run_dir=str(runs / "t" / rid))

    def statuses() -> list[str]:
        return [r["status"] for r in sorted(cat.list(), key=lambda r: r["run_id"])]

    assert statuses() == ["interrupted", "interrupted"]  # no lock at all
    with RunLock(runs / "t" / ".lock") as lock:  # this process holds it, for the second run
        assert statuses() == ["running", "running"]  # a lock of an older geoseg names no run: trusted
        lock.hold_for("20261203T000001Z-abcdef-000002")
        assert statuses() == ["interrupted", "running"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (runs / "t" / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                  "run_id": "20261203T000001Z-abcdef-000002"}))
    assert statuses() == ["interrupted", "interrupted"]
    (runs / "t" / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": dead.pid,
                                                  "run_id": "20261203T000001Z-abcdef-000002"}))
    assert statuses() == ["interrupted", "running"]  # another host's process: cannot tell, so running


# ------------------------------------------------------------------ 8c. relocatable run folders


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A finished run with every reader's inputs: mask, fields, district table, report."""
    d = _project(tmp_path_factory.mktemp("finished"), model_dir,
                 districts={"path": "districts.gpkg", "name_field": "district"},
                 outputs={"fields": ["parquet"], "district_areas": True, "report": True})
    write_districts(d / "districts.gpkg", 560640, (559000, 3418000, 562000, 3421000))
    return run_workflow(load_workflow(d / "wf.yaml"))


def _copy_runs(res: Any, dest: Path, *, old_format: bool = False) -> Path:
    """The run's runs folder copied to ``dest`` (``latest`` kept a link); with ``old_format``, its
    manifest and catalog row first rewritten with the absolute paths older versions stored."""
    src = dest.parent / "src-runs"
    shutil.copytree(res.run_dir.parent.parent, src, symlinks=True)
    run_dir = src / "t" / res.run_id
    if old_format:
        m = json.loads((run_dir / "manifest.json").read_text())
        m["outputs"] = {k: str(run_dir / v) for k, v in m["outputs"].items()}
        (run_dir / "manifest.json").write_text(json.dumps(m))
        import sqlite3

        with sqlite3.connect(src / "catalog.sqlite") as con:
            con.execute("UPDATE runs SET run_dir = ?", (str(run_dir),))
    shutil.copytree(src, dest, symlinks=True)
    shutil.rmtree(src)  # the original is gone
    return dest / "t" / res.run_id


@pytest.mark.parametrize("old_format", [False, True])
def test_a_moved_run_reads_its_own_files(finished, tmp_path, old_format):  # type: ignore[no-untyped-def]
    run_dir = _copy_runs(finished, tmp_path / "moved" / "runs", old_format=old_format)
    runs_dir = run_dir.parent.parent
    show = _cli("runs", "--runs-dir", str(runs_dir), "show", finished.run_id)
    assert show.exit_code == 0, show.output
    assert f"  mask: {run_dir / 'mask.tif'}" in show.output.splitlines()
    assert str(tmp_path / "src-runs") not in show.output
    assert _runs_json(runs_dir)[0]["run_dir"] == str(run_dir)
    data = load_run(run_dir)
    assert data.mask == run_dir / "mask.tif" and data.fields == run_dir / "fields.parquet"
    assert data.areas is not None and len(data.areas) > 0
    q = _cli("query", str(runs_dir / "t"), "SELECT count(*) AS n FROM fields", "--format", "csv")
    assert q.exit_code == 0 and int(q.output.split()[1]) > 0, q.output
    rep = _cli("report", str(run_dir), "--quiet")
    assert rep.exit_code == 0 and Path(rep.output.strip()) == run_dir / "report.html", rep.output
    outputs = read_manifest(run_dir)["outputs"]  # stored relative to the run folder, old manifests too once rewritten
    assert outputs["report_html"] == "report.html" and outputs["mask"] == "mask.tif"
    assert not [v for v in outputs.values() if Path(v).is_absolute()]
    assert finished.outputs["mask"] == str(finished.run_dir / "mask.tif")  # the caller still gets absolute paths


def test_readers_of_a_copied_run_see_the_copys_files(finished, tmp_path):  # type: ignore[no-untyped-def]
    copy = tmp_path / "copy"
    shutil.copytree(finished.run_dir, copy)  # the original stays where it was
    with rasterio.open(copy / "mask.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.write(np.full((1, ds.height, ds.width), 3, "uint8"))
    (copy / "district_areas.csv").write_text((copy / "district_areas.csv").read_text().replace("West", "Westish"))
    data = load_run(copy)
    assert data.mask == copy / "mask.tif"
    assert (read_decimated(data.mask)[0] == 3).all()  # the copy's pixels, not the original's
    assert "Westish" in set(data.areas["district"])
    assert not (read_decimated(finished.run_dir / "mask.tif")[0] == 3).all()


# ------------------------------------------------------------------ 8d. --resume and the latest link


def test_resume_never_takes_the_latest_link_for_a_run(model_dir, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir)
    cfg = load_workflow(d / "wf.yaml")
    ids = iter(["20261203T100000Z-abcdef-000001", "20261203T110000Z-abcdef-000002"])
    monkeypatch.setattr(run_mod, "_new_run_id", lambda cfg: next(ids))
    monkeypatch.setattr(run_mod, "_execute", _fail_execute)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            run_workflow(cfg)
    monkeypatch.undo()
    root = d / "runs" / "t"
    os.symlink("20261203T100000Z-abcdef-000001", root / "latest")  # an older, unfinished run behind the link
    res = run_workflow(cfg, resume=True)
    assert res.run_id == "20261203T110000Z-abcdef-000002" and res.run_dir == root / res.run_id
    assert not (d / "store" / "t" / "latest").exists()
    assert (root / "latest").resolve() == res.run_dir  # now it names the finished run
    res = run_workflow(cfg, resume=True)  # the older unfinished one, by its own name
    assert res.run_id == "20261203T100000Z-abcdef-000001"



# ------------------------------------------------------------------ 5. a full tile store, a damaged catalog


@pytest.fixture
def tiny_store(tmp_path):  # type: ignore[no-untyped-def]
    """A real 300 kB tmpfs for the tile store (needs root, or CAP_SYS_ADMIN)."""
    store = tmp_path / "store"
    store.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(store)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full disk here ({out.stderr.strip() or out.returncode})")
    try:
        yield store
    finally:
        if subprocess.run(["umount", str(store)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(store)], capture_output=True)


def test_a_full_tile_store_is_one_clean_line_and_a_failed_run(model_dir, tmp_path, tiny_store):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir, shape=(300, 250), store=str(tiny_store),
                 cluster={"workers": 2, "threads_per_worker": 1, "dashboard": False})
    out = subprocess.run([*GEOSEG, "run", "wf.yaml", "--quiet"], cwd=d, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr  # no libtiff or GDAL lines, no worker tracebacks
    full = r"(No space left on device|the disk holding \S+ is full \(only [\d,]+ bytes free\))"
    assert re.fullmatch(
        rf"Error: {re.escape(str(tiny_store))}/t/[^/]+/scene/(r\d+_c\d+\.tif|batch-\d+\.json): .*{full}.*; "
        rf"check free disk space.*, then run again( with --resume)?", lines[0]), lines[0]
    run_dir = next((d / "runs" / "t").glob("2*"))
    m = read_manifest(run_dir)
    assert m["status"] == "failed" and m["error"].endswith(lines[0][len("Error: "):])
    row = Catalog(d / "runs" / "catalog.sqlite").get(run_dir.name)
    assert row["status"] == "failed" and row["error"] == lines[0][len("Error: "):][:500]
    # no damaged tile is recorded as finished, and no temporary file is left
    for rec in (tiny_store / "t" / run_dir.name / "scene").glob("batch-*.json"):
        for key in json.loads(rec.read_text())["tiles"]:
            with rasterio.open(rec.parent / f"{key}.tif") as ds:
                assert ds.read().shape[0] == 2
    assert not list(tiny_store.rglob("*.partial-*"))


def test_a_damaged_run_catalog_is_one_clean_line(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir)
    runs = d / "runs"
    runs.mkdir()
    (runs / "catalog.sqlite").write_bytes(np.random.default_rng(0).bytes(4096))
    expected = (f"Error: {runs / 'catalog.sqlite'}: not a usable run catalog (file is not a database); move it aside "
                f"or delete it (`geoseg runs` then rebuilds it from the runs' manifests), or restore it from a backup")
    for args in (["runs", "--runs-dir", str(runs)], ["runs", "--runs-dir", str(runs), "show", "2026"],
                 ["run", str(d / "wf.yaml"), "--quiet"]):
        out = _cli(*args)
        assert out.exit_code == 1, out.output
        assert out.output.strip().splitlines() == [expected], args
    assert not (runs / "t").exists() or not any((runs / "t").glob("2*"))  # the run refused before starting
    # deleted: the listing is rebuilt from the manifests
    (runs / "catalog.sqlite").unlink()
    res = run_workflow(load_workflow(d / "wf.yaml"))
    (runs / "catalog.sqlite").unlink()
    rows = _runs_json(runs)
    assert [(r["run_id"], r["status"], r["run_dir"]) for r in rows] == [(res.run_id, "done", str(res.run_dir))]
    assert rows[0]["tiles_done"] == rows[0]["tiles_total"] == 16 and rows[0]["scenes"] == 1
