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
from geoseg.io.raster import RasterWriter, open_raster, write_text_atomic
from geoseg.rundir import read_owner

__all__ = ["OWNER_FILE", "TASKS_FILE", "SceneStore", "claim_run_store", "run_store"]

#: The file naming the run a store folder belongs to.
OWNER_FILE = "owner.json"
#: The file keeping a run's tiles per inference task (``{"tiles_per_task": n}``) for its resumes.
TASKS_FILE = "tasks.json"


def run_store(store: str | os.PathLike[str], workflow: str, run_id: str) -> Path:
    """The tile-store folder of one run: ``<store>/<workflow>/<run-id>``; its scenes are folders in it.

    >>> run_store("tiles", "demo", "r1")
    PosixPath('tiles/demo/r1')
    """
    return Path(store) / workflow / run_id


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
    root, run_dir = Path(root), Path(run_dir)
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
        if owner is not None and Path(str(owner.get("run_dir"))).resolve() != run_dir.resolve():
            raise StoreInUseError(
                f"{root}: this tile-store folder belongs to run {owner.get('run_dir', '?')} (pid "
                f"{owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('since', '?')}), not to "
                f"{run_dir}; two runs in one store folder would mix their tiles - give this run its own store (the "
                f"workflow's store key or --store), or delete {root} if that run is gone for good"
            ) from None
    except OSError as e:
        raise RunDirError(f"{root}: cannot create the run's tile-store folder ({e.strerror or e}); choose a "
                          f"writable store (the workflow's store key or --store), or fix its permissions") from None
    me = {"run_dir": str(run_dir), "runs_dir": str(run_dir.parent.parent), "host": socket.gethostname(),
          "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_text_atomic(owner_file, json.dumps(me, indent=1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SceneStore:
    """The store folder of one scene of one run."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def tile_path(self, tile: Tile) -> Path:
        return self.root / f"{tile.key}.tif"

    def record_path(self, batch: int) -> Path:
        return self.root / f"batch-{batch:05d}.json"

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
        dates each pixel saw, and for a model with a boundary output its boundary band."""
        self.root.mkdir(parents=True, exist_ok=True)
        hashes = {}
        for i, (t, c, p) in enumerate(zip(tiles, classes, confidence)):
            path = self.tile_path(t)
            core_tf = t.transform @ _translation(t)
            bands = [c, p] + [b[i] for b in (dates_seen, boundary) if b is not None]
            with RasterWriter(path, shape=(int(t.core.height), int(t.core.width)), transform=core_tf, crs=crs,
                              count=len(bands), dtype="uint8", cog=False, blocksize=256, fast=True) as w:
                rows, cols = t.core_in_read
                win = Window(0, 0, int(t.core.width), int(t.core.height))
                w.write(np.stack([b[rows, cols] for b in bands]), win)
            hashes[t.key] = _sha256(path)
        rec = self.record_path(batch)
        try:
            write_text_atomic(rec, json.dumps({"batch": batch, "tiles": hashes}, indent=1))
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
        rec = self.record_path(batch)
        try:
            hashes = json.loads(rec.read_text(encoding="utf-8"))["tiles"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for t in tiles:
            path = self.tile_path(t)
            if hashes.get(t.key) is None or not path.is_file() or _sha256(path) != hashes[t.key]:
                return False
        return True

    def read_tile(self, tile: Tile, bands: Sequence[int] | None = None) -> np.ndarray:
        """The stored core of ``tile``: (2, core_h, core_w) uint8 (class, confidence; and dates seen, for a
        model that reads dates), or ``bands`` of it."""
        with open_raster(self.tile_path(tile)) as src:
            return src.read(list(bands) if bands is not None else None)


def _translation(t: Tile) -> Affine:
    return Affine.translation(t.core.col_off - t.read.col_off, t.core.row_off - t.read.row_off)
