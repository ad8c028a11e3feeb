"""A runs folder on object storage (moto's S3 server on 127.0.0.1): the run lock as a lease taken
with conditional puts, the catalog as one record per run, and publishing with the manifest last."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from geoseg.errors import GeosegError, ObjectStoreError, RunLockedError
from geoseg.io.objects import Prefix, object_prefix
from geoseg.rundir_store import (
    ObjectCatalog,
    ObjectRunLock,
    point_latest,
    publish_run,
    read_remote_manifest,
    remote_run_status,
    unfinished_runs,
)


def _lock_record(url: str) -> dict:
    folder, _, key = url.rpartition("/")
    return json.loads(object_prefix(folder).get(key) or b"null")


def test_one_holder_at_a_time_and_release(s3) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3.bucket}/runs1/wf/.lock"
    first = ObjectRunLock(url, lease_s=30).acquire()
    first.hold_for("r1")
    rec = _lock_record(url)
    assert rec["pid"] == os.getpid() and rec["run_id"] == "r1" and rec["expires_epoch"] > time.time() + 20
    with pytest.raises(RunLockedError, match=rf"runs1/wf/.lock: this workflow is already running \(pid {os.getpid()} "
                                             r"on .* its lease runs to .*Z\); wait for it to finish"):
        ObjectRunLock(url, lease_s=30).acquire()
    assert remote_run_status("running", url, "r1") == "running"
    assert remote_run_status("running", url, "r0") == "interrupted"  # the lock names another run
    first.release()
    assert _lock_record(url) is None
    assert remote_run_status("running", url, "r1") == "interrupted"  # no lock: its process is gone
    with ObjectRunLock(url, lease_s=30) as again:
        assert again.stale_taken is None
    assert _lock_record(url) is None


def test_the_lease_is_renewed_while_held(s3) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3.bucket}/runs2/wf/.lock"
    with ObjectRunLock(url, lease_s=1.5):
        first = _lock_record(url)["expires_epoch"]
        time.sleep(3.2)  # two lease lengths: without renewal it would be stale
        assert _lock_record(url)["expires_epoch"] > first + 1
        with pytest.raises(RunLockedError):
            ObjectRunLock(url, lease_s=1.5).acquire()


def test_a_stale_lock_is_taken_over_by_exactly_one(s3) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3.bucket}/runs3/wf/.lock"
    stale = {"host": "another-host", "pid": 1, "since": "2026-01-01T00:00:00Z", "expires": "2026-01-01T00:10:00Z",
             "expires_epoch": time.time() - 5}
    object_prefix(f"s3://{s3.bucket}/runs3/wf").put(".lock", json.dumps(stale).encode())
    assert remote_run_status("running", url, "r1") == "interrupted"  # its lease ran out
    won: list[ObjectRunLock] = []
    refused: list[BaseException] = []
    barrier = threading.Barrier(4)

    def contend() -> None:
        lock = ObjectRunLock(url, lease_s=30)
        barrier.wait()
        try:
            won.append(lock.acquire())
        except RunLockedError as e:
            refused.append(e)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    assert won[0].stale_taken is not None and won[0].stale_taken["host"] == "another-host"
    won[0].release()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_at_once(s3) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    owner = {"host": socket.gethostname(), "pid": int(dead.stdout), "expires_epoch": time.time() + 3600}
    object_prefix(f"s3://{s3.bucket}/runs4/wf").put(".lock", json.dumps(owner).encode())
    with ObjectRunLock(f"s3://{s3.bucket}/runs4/wf/.lock", lease_s=30) as lock:
        assert lock.stale_taken is not None and lock.stale_taken["pid"] == int(dead.stdout)


def test_a_holder_whose_lock_was_taken_notices(s3, caplog) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3.bucket}/runs5/wf/.lock"
    lock = ObjectRunLock(url, lease_s=1.2).acquire()
    object_prefix(f"s3://{s3.bucket}/runs5/wf").put(".lock", b'{"host": "thief", "pid": 2}')  # as a taker would
    deadline = time.time() + 10
    while not lock.lost and time.time() < deadline:
        time.sleep(0.1)
    assert lock.lost
    assert "the run lock was taken by another process" in caplog.text
    lock.release()
    assert _lock_record(url)["host"] == "thief"  # release deletes only its own lock


def test_the_catalog_keeps_a_record_per_run(s3) -> None:  # type: ignore[no-untyped-def]
    runs = f"s3://{s3.bucket}/runs6"
    cat = ObjectCatalog(runs)
    cat.check()
    assert cat.list() == []
    cat.upsert(run_id="20261201T000000Z-aaaaaa-000001", name="wf", status="running", started="2026-12-01T00:00:00Z")
    cat.upsert(run_id="20261202T000000Z-aaaaaa-000002", name="wf", status="done", started="2026-12-02T00:00:00Z")
    cat.upsert(run_id="20261201T000000Z-aaaaaa-000001", status="failed", error="boom")  # updates its own record
    rows = cat.list()
    assert [(r["run_id"][-6:], r["status"]) for r in rows] == [("000002", "done"), ("000001", "failed")]
    assert rows[1]["error"] == "boom" and rows[1]["run_dir"] == f"{runs}/wf/20261201T000000Z-aaaaaa-000001"
    assert cat.get("20261202")["status"] == "done"
    with pytest.raises(GeosegError, match=r"run id '2026120' is ambiguous"):
        cat.get("2026120")
    with pytest.raises(GeosegError, match=r"no run with id 'x'; `geoseg runs` lists them"):
        cat.get("x")
    # a running run whose lock is gone is listed as interrupted
    cat.upsert(run_id="20261203T000000Z-aaaaaa-000003", name="wf", status="running", started="2026-12-03T00:00:00Z")
    newest = cat.list()[0]
    assert (newest["status"], newest["recorded_status"]) == ("interrupted", "running")


def test_publishing_puts_the_manifest_last_and_rebuilds_the_catalog(s3, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    runs = f"s3://{s3.bucket}/runs7"
    root = tmp_path / "r1"
    (root / "scenes" / "a").mkdir(parents=True)
    (root / "mask.tif").write_bytes(b"mask")
    (root / "scenes" / "a" / "mask.tif").write_bytes(b"scene")
    (root / ".mask.tif.partial-1").write_bytes(b"junk")
    manifest = {"run_id": "r1", "name": "wf", "status": "done", "started": "2026-12-01T00:00:00Z", "tiles": 4}
    (root / "manifest.json").write_text(json.dumps(manifest))
    # a failure part way: no manifest is published, so no reader takes the run for a finished one
    real_put, calls = Prefix.put, []

    def failing_put(self: Prefix, key: str, data: bytes | Path, **kw: object) -> bool:
        calls.append(key)
        if len(calls) == 2:
            raise ObjectStoreError(f"{key}: writing failed (injected)")
        return real_put(self, key, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Prefix, "put", failing_put)
    with pytest.raises(ObjectStoreError):
        publish_run(root, f"{runs}/wf/r1")
    assert read_remote_manifest(f"{runs}/wf/r1") is None
    monkeypatch.setattr(Prefix, "put", real_put)
    calls.clear()
    monkeypatch.setattr(Prefix, "put", lambda self, key, data, **kw: (calls.append(key), real_put(self, key, data, **kw))[1])
    assert publish_run(root, f"{runs}/wf/r1") == 3
    assert calls == ["mask.tif", "scenes/a/mask.tif", "manifest.json"]  # manifest last, no temporary file
    monkeypatch.setattr(Prefix, "put", real_put)
    assert read_remote_manifest(f"{runs}/wf/r1") == manifest
    assert unfinished_runs(f"{runs}/wf") == []
    object_prefix(f"{runs}/wf/r0").put("manifest.json", json.dumps({**manifest, "run_id": "r0", "status": "running"}).encode())
    assert unfinished_runs(f"{runs}/wf") == ["r0"]
    point_latest(f"{runs}/wf", "r1")
    assert json.loads(object_prefix(f"{runs}/wf").get("latest")) == {"run_id": "r1"}
    cat = ObjectCatalog(runs)
    assert cat.rebuild() == 2
    assert sorted((r["run_id"], r["recorded_status"]) for r in cat.list()) == [("r0", "running"), ("r1", "done")]
