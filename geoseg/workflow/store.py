"""The tile store: per-tile outputs of a run, written atomically and verified on resume.

Layout: ``<store>/<workflow>/<run-id>/<scene>/`` (:func:`run_store` names the run's folder)

* ``<store>/<workflow>/<run-id>/owner.json`` — which run the folder belongs to (its run
  folder, runs folder, host and pid): a run creates its folder exclusively
  (:func:`claim_run_store`), and a run that finds the folder held by another refuses to
  start, so two runs never mix their tiles, even in one shared store.

* ``<tile-key>.tif`` — the tile's **core** window as a small GeoTIFF with the scene's
  georeferencing: band 1 the class (uint8, 255 nodata), band 2 the confidence (uint8,
  0 nodata). Each tile is written by exactly one task, under a temporary name, then renamed.
* ``<store>/<workflow>/<run-id>/tasks.json`` — the number of tiles per inference task the
  run chose, kept for its resumes.
* ``batch-<n>.json`` — the batch record: for each tile of the batch, its file's sha256.
  Written (atomically) only after all of the batch's tiles. A batch counts as done only
  when its record exists *and* every tile file still has the recorded hash, so a
  truncated or damaged tile is detected and its batch recomputed.

The batch (not the tile) is the unit of work and of resume: a batch is always predicted
whole, so a resumed run computes each tile with exactly the same batch as an
uninterrupted run, and its outputs are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.windows import Window

from geoseg.core.grid import Tile
from geoseg.errors import GeosegError, RasterWriteError, RunDirError, StoreInUseError
from geoseg.io.objects import is_object_url, join, object_prefix, read_text, write_text
from geoseg.io.raster import RasterWriter, open_raster, write_text_atomic
from geoseg.rundir import read_owner

__all__ = ["OWNER_FILE", "TASKS_FILE", "SceneStore", "claim_run_store", "run_store"]

#: The file naming the run a store folder belongs to.
OWNER_FILE = "owner.json"
#: The file keeping a run's tiles per inference task (``{"tiles_per_task": n}``) for its resumes.
TASKS_FILE = "tasks.json"


def run_store(store: str | os.PathLike[str], workflow: str, run_id: str) -> Path | str:
    """The tile-store folder of one run: ``<store>/<workflow>/<run-id>``; its scenes are folders in it
    (a :class:`Path`, or a URL for a store on object storage).

    >>> run_store("tiles", "demo", "r1"), run_store("s3://bucket/tiles", "demo", "r1")
    (PosixPath('tiles/demo/r1'), 's3://bucket/tiles/demo/r1')
    """
    if is_object_url(store):
        return join(store, workflow, run_id)
    return Path(store) / workflow / run_id


def scene_store(root: Path | str, scene: str) -> str:
    """The store folder (path or URL) of one scene of the run whose store folder is ``root``."""
    return join(root, scene)


def read_store_json(root: Path | str, name: str) -> dict | None:
    """A JSON object kept in a run's store folder (e.g. :data:`TASKS_FILE`); None if missing or damaged."""
    text = read_text(root, name)
    try:
        out = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def write_store_json(root: Path | str, name: str, value: dict) -> None:
    """Keep ``value`` as ``name`` in a run's store folder (atomically; one put on object storage)."""
    write_text(root, name, json.dumps(value, indent=1))


def _me(run_dir: Path | str) -> dict:
    runs_dir = run_dir.rsplit("/", 2)[0] if isinstance(run_dir, str) else str(run_dir.parent.parent)
    return {"run_dir": str(run_dir), "runs_dir": runs_dir, "host": socket.gethostname(),
            "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _same_run(recorded: object, run_dir: Path | str) -> bool:
    """Whether an owner file's ``run_dir`` names ``run_dir`` (a local folder, or a run folder's URL)."""
    if isinstance(run_dir, str):
        return str(recorded) == run_dir
    return Path(str(recorded)).resolve() == run_dir.resolve()


def _in_use(root: object, owner: dict, run_dir: Path | str) -> StoreInUseError:
    return StoreInUseError(
        f"{root}: this tile-store folder belongs to run {owner.get('run_dir', '?')} (pid "
        f"{owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('since', '?')}), not to "
        f"{run_dir}; two runs in one store folder would mix their tiles - give this run its own store (the "
        f"workflow's store key or --store), or delete {root} if that run is gone for good"
    )


def _claim_object_store(root: str, run_dir: Path | str, resume: bool) -> None:
    """:func:`claim_run_store` on object storage: the owner object is created only if absent
    (a conditional put), so of two runs that race for one folder exactly one gets it."""
    prefix = object_prefix(root)
    me = json.dumps(_me(run_dir), indent=1).encode()
    if prefix.put(OWNER_FILE, me, create=True):
        return
    try:
        owner = json.loads(prefix.get(OWNER_FILE) or b"null")
    except ValueError:
        owner = None
    if not isinstance(owner, dict) or not _same_run(owner.get("run_dir"), run_dir):
        raise _in_use(root, owner if isinstance(owner, dict) else {}, run_dir)
    if not resume:
        raise StoreInUseError(f"{root}: this tile-store folder was already claimed for {run_dir} (pid "
                              f"{owner.get('pid', '?')} on {owner.get('host', '?')}); a new run must start with an "
                              f"empty folder - continue that run with --resume, or delete {root}")
    prefix.put(OWNER_FILE, me)


def claim_run_store(root: str | os.PathLike[str], *, run_dir: str | os.PathLike[str], resume: bool) -> None:
    """Take the tile-store folder ``root`` (``<store>/<workflow>/<run-id>``) for the run in ``run_dir``.

    A new run creates ``root`` exclusively and writes :data:`OWNER_FILE` in it (the run
    folder, its runs folder, host, pid and time). ``root`` may already exist only for a
    resume of the run that owns it (same run folder), or, on resume, without an owner
    file (a store written before owners were recorded); the owner file is then rewritten
    with this process.

    Raises
    ------
    StoreInUseError
        ``root`` belongs to another run, or (new run) exists without an owner.
    RunDirError
        ``root`` cannot be created or written.
    """
    where: Path | str = os.fspath(run_dir) if is_object_url(run_dir) else Path(run_dir)
    if is_object_url(root):
        _claim_object_store(os.fspath(root), where, resume)
        return
    root = Path(root)
    owner_file = root / OWNER_FILE
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(root)  # exclusive: exactly one run creates it
    except FileExistsError:
        owner = read_owner(owner_file)
        if owner is None and not resume:
            raise StoreInUseError(
                f"{root}: this tile-store folder already exists without an owner (left by another run); a new run "
                f"must start with an empty folder - give this run its own store (the workflow's store key or "
                f"--store), or delete {root} if no run uses it"
            ) from None
        if owner is not None and not _same_run(owner.get("run_dir"), where):
            raise _in_use(root, owner, where) from None
    except OSError as e:
        raise RunDirError(f"{root}: cannot create the run's tile-store folder ({e.strerror or e}); choose a "
                          f"writable store (the workflow's store key or --store), or fix its permissions") from None
    write_text_atomic(owner_file, json.dumps(_me(where), indent=1))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SceneStore:
    """The store folder of one scene of one run: a local folder, or an object-store prefix
    (``s3://...``) that the workers of a cluster without a shared disk all write to."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._prefix = object_prefix(os.fspath(root)) if is_object_url(root) else None
        self.root: Path | str = self._prefix.url if self._prefix is not None else Path(root)

    def _location(self, name: str) -> Path | str:
        return self._prefix.location(name) if self._prefix is not None else Path(self.root, name)

    def tile_path(self, tile: Tile) -> Path | str:
        return self._location(f"{tile.key}.tif")

    def record_path(self, batch: int) -> Path | str:
        return self._location(_record(batch))

    def _tile_bytes(self, tile: Tile) -> bytes | None:
        if self._prefix is not None:
            return self._prefix.get(f"{tile.key}.tif")
        try:
            return Path(self.tile_path(tile)).read_bytes()
        except OSError:
            return None

    def write_batch(
        self,
        batch: int,
        tiles: Sequence[Tile],
        classes: Sequence[np.ndarray],
        confidence: Sequence[np.ndarray],
        crs: object,
        dates_seen: Sequence[np.ndarray] | None = None,
        boundary: Sequence[np.ndarray] | None = None,
    ) -> dict[str, str]:
        """Write the cores of a batch's tiles, then its record; return ``{tile key: sha256}``.

        Each tile holds class and confidence, then for a model that reads dates a band of the
        dates each pixel saw, and for a model with a boundary output its boundary band. On
        object storage each tile is made in a local temporary folder, then put whole."""
        import contextlib
        import tempfile

        remote = self._prefix is not None
        if not remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="geoseg-tiles-") if remote else contextlib.nullcontext() as tmp:
            hashes = {}
            for i, (t, c, p) in enumerate(zip(tiles, classes, confidence)):
                path = Path(tmp, f"{t.key}.tif") if remote else Path(self.tile_path(t))
                core_tf = t.transform @ _translation(t)
                bands = [c, p] + [b[i] for b in (dates_seen, boundary) if b is not None]
                with RasterWriter(path, shape=(int(t.core.height), int(t.core.width)), transform=core_tf, crs=crs,
                                  count=len(bands), dtype="uint8", cog=False, blocksize=256, fast=True) as w:
                    rows, cols = t.core_in_read
                    win = Window(0, 0, int(t.core.width), int(t.core.height))
                    w.write(np.stack([b[rows, cols] for b in bands]), win)
                data = path.read_bytes()
                hashes[t.key] = _sha256(data)
                if remote:
                    self._prefix.put(f"{t.key}.tif", data)
        rec = self.record_path(batch)
        try:
            write_text(self.root, _record(batch), json.dumps({"batch": batch, "tiles": hashes}, indent=1))
        except GeosegError:
            raise  # already one message naming the file, the reason and the fix
        except OSError as e:
            raise RasterWriteError(
                f"{rec}: writing the batch record failed ({e.strerror or e}); check free disk space, then "
                f"run again with --resume"
            ) from None
        return hashes

    def batch_done(self, batch: int, tiles: Sequence[Tile]) -> bool:
        """True when the batch record exists and every tile file matches its recorded hash."""
        try:
            hashes = json.loads(read_text(self.root, _record(batch)) or "null")["tiles"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for t in tiles:
            if hashes.get(t.key) is None:
                return False
            data = self._tile_bytes(t)
            if data is None or _sha256(data) != hashes[t.key]:
                return False
        return True

    def read_tile(self, tile: Tile, bands: Sequence[int] | None = None) -> np.ndarray:
        """The stored core of ``tile``: (2, core_h, core_w) uint8 (class, confidence; and dates seen, for a
        model that reads dates), or ``bands`` of it."""
        if self._prefix is None:
            with open_raster(self.tile_path(tile)) as src:
                return src.read(list(bands) if bands is not None else None)
        from rasterio.io import MemoryFile

        data = self._tile_bytes(tile)
        if data is None:
            raise RunDirError(f"{self.tile_path(tile)}: this stored tile is missing; run again with --resume to "
                              f"predict it again")
        with MemoryFile(data) as mem, mem.open() as src:
            return src.read(list(bands) if bands is not None else None)


def _record(batch: int) -> str:
    return f"batch-{batch:05d}.json"


def _translation(t: Tile) -> Affine:
    return Affine.translation(t.core.col_off - t.read.col_off, t.core.row_off - t.read.row_off)
