"""Faults during a run: a Dask worker SIGKILLed mid-inference, workers out of memory, a full disk,
the whole run killed twice.

Each ends with outputs byte-identical to an undisturbed run of the same workflow, or (out of
memory) with one line that says what to change.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from affine import Affine
from click.testing import CliRunner

import geoseg.io.raster
import geoseg.workflow.run as run_mod
import geoseg.workflow.store
from geoseg.cli.main import cli
from geoseg.errors import WorkerLostError
from geoseg.io.raster import RasterWriter
from geoseg.workflow.cluster import worker_lost
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
GEOSEG = [sys.executable, "-m", "geoseg.cli.main"]
OUTPUTS = ("mask.tif", "confidence.tif")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_model(tmp_path_factory.mktemp("m") / "model")


def _project(d: Path, model_dir: Path) -> Path:
    """scene.tif (300 x 250 px: 80 tiles of 64 px in 20 batches), the model and wf.yaml."""
    d.mkdir(parents=True, exist_ok=True)
    write_scene(d / "scene.tif", 300, 250, TF)
    shutil.copytree(model_dir, d / "model")
    write_workflow(d / "wf.yaml")
    return d


def _leftovers(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs if d.exists() for p in d.rglob("*.partial-*"))


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The outputs of an undisturbed run (a LocalCluster of 2 worker processes)."""
    d = _project(tmp_path_factory.mktemp("ref"), model_dir)
    res = run_workflow(load_workflow(d / "wf.yaml"))
    return {name: (res.run_dir / name).read_bytes() for name in OUTPUTS}


# ------------------------------------------------------------------ a worker SIGKILLed during inference


def test_a_worker_killed_mid_inference_changes_nothing(model_dir, tmp_path, reference, monkeypatch):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir)
    clients: list[Any] = []
    real_connect = run_mod.connect

    def connect(cfg, stack):  # type: ignore[no-untyped-def]
        client = real_connect(cfg, stack)
        clients.append(client)
        return client

    monkeypatch.setattr(run_mod, "connect", connect)
    killed: dict[str, Any] = {}

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            if clients and len(list((d / "store").rglob("batch-*.json"))) >= 3:
                pids = clients[0].run(os.getpid)  # {worker address: pid}
                address, pid = sorted(pids.items())[0]
                killed.update(address=address, pid=pid, records=len(list((d / "store").rglob("batch-*.json"))))
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    res = run_workflow(load_workflow(d / "wf.yaml"))
    t.join(timeout=5)
    assert killed, "the worker was never killed"
    assert 3 <= killed["records"] < 20, "the kill should land part way through inference"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert res.status == "done" and res.tiles == 80
    assert sum(res.stats["infer_tasks_per_worker"].values()) == 20  # every batch has a result
    for name in OUTPUTS:
        assert (res.run_dir / name).read_bytes() == reference[name], name
    assert _leftovers(res.run_dir) == []


# ------------------------------------------------------------------ workers out of memory


def test_workers_that_run_out_of_memory_give_one_line_that_says_what_to_change(model_dir, tmp_path):  # type: ignore[no-untyped-def]
    """When Dask gives up on a task whose workers all died (KilledWorker: with a memory limit no worker
    with torch loaded fits in, the fourth restart), the run says what to change, not an internal error.

    The whole run is not repeated here: under CPU load a nanny may restart such workers without Dask
    counting the task's attempts (seen with distributed 2026.8), and the run would then not end."""
    from distributed import KilledWorker


    d = _project(tmp_path / "p", model_dir)
    write_workflow(d / "oom.yaml", name="oom",
                   cluster={"workers": 1, "threads_per_worker": 1, "dashboard": False, "memory_limit": "400MB"})
    cfg = load_workflow(d / "oom.yaml")
    lost = worker_lost(cfg, KilledWorker("infer-scene-00003-20261126T131400Z-e414ff", None, 3))
    assert isinstance(lost, WorkerLostError)
    msg = str(lost)
    assert msg.startswith(f"{d / 'oom.yaml'}: the inference task infer-scene-00003-20261126T131400Z-e414ff killed "
                          "the 4 workers that ran it in turn, out of memory most likely")
    assert "cluster.memory_limit: 400MB, for each of 1 workers" in msg and "lower batch_size (2)" in msg
    assert "add --resume" in msg
    assert worker_lost(cfg, ValueError("x")) is None  # other errors pass through as they are
    remote = load_workflow(d / "oom.yaml", scheduler="tcp://10.0.0.5:8786")
    assert "the workers of tcp://10.0.0.5:8786 are restarted" in str(worker_lost(
        remote, KilledWorker("assemble-mask-scene-x", None, 3)))


# ------------------------------------------------------------------ a full disk


class _FullDisk:
    """A dataset whose ``write`` fails with ENOSPC once the shared budget of writes is spent."""

    budget = 0
    lock = threading.Lock()

    def __init__(self, ds: Any) -> None:
        self._ds = ds

    def write(self, *args: Any, **kwargs: Any) -> Any:
        with _FullDisk.lock:
            _FullDisk.budget -= 1
            full = _FullDisk.budget < 0
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._ds.write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)


class _FullDiskWriter(RasterWriter):
    def __enter__(self) -> "_FullDiskWriter":
        super().__enter__()
        self._ds = _FullDisk(self._ds)
        return self


def _threads_connect(cfg, stack):  # type: ignore[no-untyped-def]
    """The run's cluster in this process (threads), so that the patched writer reaches its tasks."""
    from distributed import Client, LocalCluster

    cluster = stack.enter_context(LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                               dashboard_address=":0"))
    return stack.enter_context(Client(cluster))


@pytest.mark.parametrize("budget, where", [(30, "store"), (80 + 50, "cog")])
def test_a_full_disk_fails_cleanly_and_resumes_after_space_is_freed(model_dir, tmp_path, reference, monkeypatch,
                                                                   budget, where):  # type: ignore[no-untyped-def]
    import torch

    monkeypatch.setattr(run_mod, "connect", _threads_connect)
    threads = torch.get_num_threads()
    d = _project(tmp_path / "p", model_dir)
    runner = CliRunner()
    try:
        # 80 tile files in the store, then 80 mask + 80 confidence windows: the disk fills in the store
        # (budget 30) or while the COGs are written (budget 130).
        _FullDisk.budget = budget
        monkeypatch.setattr(geoseg.workflow.store, "RasterWriter", _FullDiskWriter)
        monkeypatch.setattr(geoseg.io.raster, "RasterWriter", _FullDiskWriter)
        out = runner.invoke(cli, ["run", str(d / "wf.yaml"), "--quiet"])
        lines = [ln for ln in out.output.splitlines() if ln.strip()]
        assert out.exit_code == 1 and len(lines) == 1, out.output
        assert "Traceback" not in out.output
        cog = r"(mask|confidence)"  # the two COGs are written by two tasks at once: either may meet the full disk
        target = (r"" if where == "store" else cog) + r"\.tif: writing window Window\("
        import re

        assert re.search(r"^Error: .*" + target + r".*\) failed \(\[Errno 28\] No space left on device\); check free "
                         r"disk space, then run again$", lines[0]), lines[0]
        run_dir = next((d / "runs" / "t").glob("2*"))
        assert _leftovers(d / "store", d / "runs") == []
        assert not (run_dir / "mask.tif").exists() and not (run_dir / "confidence.tif").exists()
        records = list((d / "store").rglob("batch-*.json"))
        assert (0 < len(records) < 20) if where == "store" else len(records) == 20
        import json

        assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
        # Space freed: the patch goes, and --resume finishes the same run with the same bytes.
        monkeypatch.undo()
        monkeypatch.setattr(run_mod, "connect", _threads_connect)
        out = runner.invoke(cli, ["run", str(d / "wf.yaml"), "--resume"])
        assert out.exit_code == 0, out.output
        assert Path(out.output.strip().splitlines()[-1]) == run_dir
        reused = int(out.output.split("(")[1].split()[0])
        assert reused == len(records) * 4
        for name in OUTPUTS:
            assert (run_dir / name).read_bytes() == reference[name], name
        assert _leftovers(d / "store", d / "runs") == []
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ the whole run killed, twice


def test_killed_twice_at_different_points_then_resumed(model_dir, tmp_path, reference):  # type: ignore[no-untyped-def]
    d = _project(tmp_path / "p", model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    seen = []
    for at, args in ((2, []), (9, ["--resume"])):
        proc = subprocess.Popen([*GEOSEG, "run", str(d / "wf.yaml"), "--quiet", *args], cwd=d, env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and len(list((d / "store").rglob("batch-*.json"))) < at:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seen.append(len(list((d / "store").rglob("batch-*.json"))))
    assert 2 <= seen[0] < seen[1] < 20, seen
    # the lock of the killed process is stale; a truncated tile is caught by its checksum
    assert (d / "runs" / "t" / ".lock").exists()
    import json

    record = sorted((d / "store").rglob("batch-*.json"))[-1]
    victim = record.parent / f"{sorted(json.loads(record.read_text())['tiles'])[-1]}.tif"
    victim.write_bytes(victim.read_bytes()[:64])
    out = subprocess.run([*GEOSEG, "run", str(d / "wf.yaml"), "--resume"], cwd=d, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert "took over a stale lock" in out.stderr
    assert [p.name for p in run_dir.parent.iterdir() if p.is_dir() and not p.is_symlink()] == [run_dir.name]
    reused = int(out.stdout.split("(")[1].split()[0])
    assert 0 < reused <= (seen[1] - 1) * 4  # the damaged tile's batch was recomputed
    for name in OUTPUTS:
        assert (run_dir / name).read_bytes() == reference[name], name
    assert _leftovers(run_dir) == []
