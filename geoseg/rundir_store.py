"""A runs folder on object storage (``runs_dir: s3://bucket/runs``): the same layout as a local one
(:mod:`geoseg.rundir`), with what a filesystem gave replaced by what an object store has::

    <runs_dir>/catalog/<run-id>.json         the run catalog: one record per run (:class:`ObjectCatalog`)
    <runs_dir>/<name>/.lock                  the run lock, a lease (:class:`ObjectRunLock`)
    <runs_dir>/<name>/latest                 {"run_id": ...}: the newest finished run (:func:`point_latest`)
    <runs_dir>/<name>/<run-id>/...           one run's files, manifest.json put last (:func:`publish_run`)

* **Lock**: an object created with a create-only put. It holds a lease (``expires``) that the
  running process renews every third of its length with a put conditional on the lock's ETag; a
  lock whose lease ran out, or whose process is gone on this host, is taken over with a put
  conditional on the ETag seen, so of two processes that find one stale lock, one takes it.
* **Catalog**: SQLite cannot live on an object store; each run writes its own record object, and
  listing the catalog lists those records.
* **Publishing**: the run is worked in a local folder (the client's) and put file by file, the
  manifest last: a reader that finds ``manifest.json`` with status ``done`` finds every output
  it lists; ``latest`` moves only after that.

Thin I/O over :mod:`geoseg.io.objects`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Self

from geoseg.errors import GeosegError, RunLockedError
from geoseg.io.objects import join, object_prefix
from geoseg.rundir import LATEST, LOCK, MANIFEST, _process_gone, catalog_row, pick_run

__all__ = ["CATALOG_PREFIX", "DEFAULT_LEASE_S", "ObjectCatalog", "ObjectRunLock", "point_latest", "publish_run",
           "read_remote_manifest", "remote_run_status", "unfinished_runs"]

log = logging.getLogger("geoseg.run")

#: ``<runs_dir>/catalog/``: the folder of the catalog's run records on an object store.
CATALOG_PREFIX = "catalog"
#: Seconds a run lock's lease lasts unless renewed (``GEOSEG_LOCK_LEASE_S`` overrides it).
DEFAULT_LEASE_S = 600.0


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _lease_s() -> float:
    try:
        return max(1.0, float(os.environ.get("GEOSEG_LOCK_LEASE_S") or DEFAULT_LEASE_S))
    except ValueError:
        return DEFAULT_LEASE_S


def _split(url: str) -> tuple[str, str]:
    folder, _, name = url.rstrip("/").rpartition("/")
    return folder, name


def _owner_record(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        out = json.loads(data)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _stale(owner: dict[str, Any], now: float) -> bool:
    """A lock nobody holds any more: its lease ran out, or its process is gone on this host."""
    expires = owner.get("expires_epoch")
    return _process_gone(owner) or not isinstance(expires, (int, float)) or expires < now


class ObjectRunLock:
    """A workflow's run lock on an object store (``<runs_dir>/<name>/.lock``), held with a lease.

    Like :class:`geoseg.rundir.RunLock`: :meth:`acquire` (or ``with``), :meth:`hold_for`,
    :meth:`release`, ``stale_taken``. While held, a thread renews the lease; a renewal that finds
    the lock taken by another process (this one stalled past its lease) is logged as an error.
    """

    def __init__(self, url: str, lease_s: float | None = None) -> None:
        self.url = url
        folder, self._key = _split(url)
        self._prefix = object_prefix(folder)
        self.lease_s = lease_s or _lease_s()
        self.stale_taken: dict[str, Any] | None = None
        self.lost = False
        self._etag: str | None = None
        self._record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _body(self, **extra: Any) -> bytes:
        now = _now()
        self._record.update(extra, host=socket.gethostname(), pid=os.getpid(), expires=_iso(now + self.lease_s),
                            expires_epoch=round(now + self.lease_s, 3), renewed=round(now, 6))
        self._record.setdefault("since", _iso(now))
        return json.dumps(self._record).encode()

    def acquire(self) -> ObjectRunLock:
        for _ in range(3):
            if self._prefix.put(self._key, self._body(), create=True):
                self._etag = self._prefix.head(self._key)
                self._start_renewing()
                return self
            etag = self._prefix.head(self._key)
            owner = _owner_record(self._prefix.get(self._key))
            if etag is None or owner is None:  # released meanwhile: try again
                continue
            if _stale(owner, _now()):
                self._record = {}
                if self._prefix.put(self._key, self._body(), if_match=etag):
                    self.stale_taken = owner
                    self._etag = self._prefix.head(self._key)
                    self._start_renewing()
                    return self
                continue  # another process took it first: look again
            raise RunLockedError(
                f"{self.url}: this workflow is already running (pid {owner.get('pid', '?')} on {owner.get('host', '?')} "
                f"since {owner.get('since', '?')}; its lease runs to {owner.get('expires', '?')}); wait for it to "
                f"finish - a lock whose process died is taken over once its lease runs out"
            )
        raise RunLockedError(f"{self.url}: could not take the run lock; try again")

    def _renew(self, **extra: Any) -> bool:
        with self._mutex:
            if self._etag is None:
                return False
            if not self._prefix.put(self._key, self._body(**extra), if_match=self._etag):
                self.lost = True
                log.error("%s: the run lock was taken by another process (this one did not renew its lease in "
                          "time); the two runs may now write the same run folder", self.url)
                self._etag = None
                return False
            self._etag = self._prefix.head(self._key)
            return True

    def _start_renewing(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.lease_s / 3):
                try:
                    if not self._renew():
                        return
                except GeosegError as e:  # the store unreachable for a moment: the next renewal may succeed
                    log.warning("%s: renewing the run lock's lease failed (%s)", self.url, e)

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="geoseg-lock-lease", daemon=True)
        self._thread.start()

    def hold_for(self, run_id: str) -> None:
        """Name the run this lock is held for (see :meth:`geoseg.rundir.RunLock.hold_for`)."""
        self._renew(run_id=run_id)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._mutex:
            if self._etag is not None and self._prefix.head(self._key) == self._etag:
                self._prefix.delete([self._key])
            self._etag = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remote_run_status(status: str, lock_url: str, run_id: str) -> str:
    """:func:`geoseg.rundir.run_status` for a runs folder on an object store: a run recorded as
    ``running`` is ``interrupted`` when its workflow's lock is gone, names another run, or is stale."""
    if status != "running":
        return status
    folder, key = _split(lock_url)
    owner = _owner_record(object_prefix(folder).get(key))
    if owner is None or owner.get("run_id", run_id) != run_id or _stale(owner, _now()):
        return "interrupted"
    return status


def read_remote_manifest(run_url: str) -> dict[str, Any] | None:
    """The manifest of the run folder ``run_url``; None when it has none (or a damaged one)."""
    return _owner_record(object_prefix(run_url).get(MANIFEST))


def unfinished_runs(workflow_url: str) -> list[str]:
    """The ids of the workflow's runs (``<runs_dir>/<name>/<run-id>/manifest.json``) not recorded as
    done, newest first."""
    out = []
    for run_id in reversed(object_prefix(workflow_url).folders()):  # run ids sort by their start
        man = read_remote_manifest(join(workflow_url, run_id))
        if man is not None and man.get("status") != "done":
            out.append(run_id)
    return out


def publish_run(root: Path, run_url: str, *, skip: tuple[str, ...] = ()) -> int:
    """Put every file of the local run folder ``root`` under ``run_url``, ``manifest.json`` last
    (files named in ``skip``, relative to ``root``, and temporary ``.*.partial-*`` files are left out).
    Returns how many files were put."""
    prefix = object_prefix(run_url)
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".partial-" not in p.name)
    count = 0
    for p in files:
        rel = p.relative_to(root).as_posix()
        if rel == MANIFEST or rel in skip:
            continue
        prefix.put(rel, p)
        count += 1
    if (root / MANIFEST).is_file():
        prefix.put(MANIFEST, root / MANIFEST)
        count += 1
    return count


def point_latest(workflow_url: str, run_id: str) -> None:
    """``<runs_dir>/<name>/latest``: the newest finished run, as ``{"run_id": ...}``."""
    object_prefix(workflow_url).put(LATEST, json.dumps({"run_id": run_id}).encode())


class ObjectCatalog:
    """The run catalog of a runs folder on an object store: ``<runs_dir>/catalog/<run-id>.json``.

    The interface of :class:`geoseg.rundir.Catalog` (``check``, ``upsert``, ``list``, ``get``,
    ``rebuild``); each run writes only its own record, so no two runs write one object.
    """

    def __init__(self, runs_url: str) -> None:
        self.runs_url = runs_url.rstrip("/")
        self.url = join(self.runs_url, CATALOG_PREFIX)
        self._prefix = object_prefix(self.url)

    @property
    def path(self) -> str:  # what messages name, as Catalog.path does
        return self.url

    def check(self) -> None:
        """Fail now, not mid-run, when the store cannot be listed."""
        self._prefix.listing()

    def upsert(self, **row: Any) -> None:
        key = f"{row['run_id']}.json"
        record = _owner_record(self._prefix.get(key)) or {}
        record.update(row)
        self._prefix.put(key, json.dumps(record, default=str).encode())

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for key, _ in self._prefix.listing():
            if not key.endswith(".json") or "/" in key:
                continue
            r = _owner_record(self._prefix.get(key))
            if not r or not r.get("run_id") or not r.get("name"):
                continue
            r.setdefault("started", "")
            r["run_dir"] = join(self.runs_url, str(r["name"]), str(r["run_id"]))
            r["recorded_status"] = r.get("status")
            r["status"] = remote_run_status(str(r.get("status")), join(self.runs_url, str(r["name"]), LOCK),
                                            str(r["run_id"]))
            rows.append(r)
        rows.sort(key=lambda r: (str(r.get("started") or ""), str(r["run_id"])), reverse=True)
        return rows

    def get(self, run_id: str) -> dict[str, Any]:
        return pick_run(self.list(), run_id, self.url)

    def rebuild(self) -> int:
        """Record every run folder of the runs folder from its manifest; return how many."""
        count = 0
        for name in object_prefix(self.runs_url).folders():
            if name == CATALOG_PREFIX:
                continue
            workflow = join(self.runs_url, name)
            for run_id in object_prefix(workflow).folders():  # folders only: a run's files are not listed
                man = read_remote_manifest(join(workflow, run_id))
                if not man or not man.get("run_id") or not man.get("name"):
                    continue
                self.upsert(**catalog_row(man))
                count += 1
        return count
