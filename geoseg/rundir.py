"""The run folder: its file names, the run lock, ``manifest.json`` and the SQLite run catalog.

This module is the one place that spells the layout of a runs folder; everyone else asks it::

    <runs_dir>/catalog.sqlite                the run catalog (:class:`Catalog`)
    <runs_dir>/<name>/.lock                  one workflow's run lock (:class:`RunLock`)
    <runs_dir>/<name>/latest                 a link to its newest finished run
    <runs_dir>/<name>/<run-id>/              one run (:class:`RunPaths`): manifest.json, mask.tif
                                             (+ mask.tif.aux.xml, mask.qml), confidence.tif,
                                             stac_item.json, fields.<fmt>, district_areas.<ext>,
                                             run.log, dask-report.html, report.html, sample/,
                                             estimate.json, estimate_<table>.<ext>, ...

A run folder is relocatable: the manifest stores the run's outputs relative to the folder
(``mask.tif``, ``scenes/x/mask.tif``) and the catalog stores run folders relative to itself
(``<name>/<run-id>``), so a runs folder copied or moved elsewhere reads its own files.
:func:`run_outputs` and :meth:`Catalog.list` resolve them, also the absolute paths older
versions stored.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import CatalogError, GeosegError, RunDirError, RunLockedError
from geoseg.io.raster import write_text_atomic
from geoseg.strict_yaml import load_yaml

__all__ = [
    "CATALOG",
    "LOCK",
    "LATEST",
    "MANIFEST",
    "FIELD_FORMATS",
    "AREA_FORMATS",
    "RunPaths",
    "fields_name",
    "district_areas_name",
    "estimate_table_name",
    "fields_key",
    "district_areas_key",
    "quicklook_key",
    "QUICKLOOK_PREFIX",
    "RunResult",
    "RunLock",
    "read_owner",
    "run_status",
    "write_manifest",
    "read_manifest",
    "run_districts",
    "ESTIMATE_TABLES",
    "run_path",
    "run_outputs",
    "Catalog",
    "catalog_row",
    "pick_run",
]


# ------------------------------------------------------------------ names in a runs folder

#: ``<runs_dir>/catalog.sqlite``: the run catalog of every workflow run into ``runs_dir``.
CATALOG = "catalog.sqlite"
#: ``<runs_dir>/<name>/.lock``: the lock a workflow's running run holds.
LOCK = ".lock"
#: ``<runs_dir>/<name>/latest``: a relative link to the workflow's newest finished run.
LATEST = "latest"
#: ``<runs_dir>/<name>/<run-id>/manifest.json``: what a run is and did; its presence makes a folder a run.
MANIFEST = "manifest.json"
#: The formats a run writes its fields in (``fields.<fmt>``), in the order a reader prefers them.
FIELD_FORMATS = ("parquet", "gpkg", "fgb", "geojson", "shp")
#: The formats a run writes its district table in (``district_areas.<ext>``), in that order.
AREA_FORMATS = ("csv", "parquet")
#: The tables ``geoseg estimate`` writes into a run folder (``estimate_<table>.csv`` and
#: ``.parquet``): per class, per district and class, and the error matrix.
ESTIMATE_TABLES = ("areas", "districts", "matrix")
#: The start of a quicklook's output key (``quicklook_<scene>``).
QUICKLOOK_PREFIX = "quicklook_"


def fields_name(fmt: str) -> str:
    """The file name of the fields in format ``fmt``: ``fields.parquet``, ``fields.gpkg``, ..."""
    return f"fields.{fmt}"


def district_areas_name(ext: str) -> str:
    """The file name of the district table in format ``ext``: ``district_areas.csv``, ``district_areas.parquet``."""
    return f"district_areas.{ext}"


def estimate_table_name(table: str, ext: str) -> str:
    """The file name of a table of ``geoseg estimate`` (one of :data:`ESTIMATE_TABLES`) in format ``ext``:
    ``estimate_areas.csv``, ``estimate_districts.parquet``, ..."""
    return f"estimate_{table}.{ext}"


def fields_key(fmt: str) -> str:
    """The output key of the fields file in format ``fmt``: ``fields_parquet``, ``fields_gpkg``, ..."""
    return f"fields_{fmt}"


def district_areas_key(ext: str) -> str:
    """The output key of the district table in format ``ext``: ``district_areas_csv``, ``district_areas_parquet``."""
    return f"district_areas_{ext}"


def quicklook_key(scene: str) -> str:
    """The output key of a scene's quicklook: ``quicklook_<scene>``."""
    return f"{QUICKLOOK_PREFIX}{scene}"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder (``<runs_dir>/<name>/<run-id>/``), by what they hold.

    The output keys a manifest lists them under are the names of these properties
    (``mask``, ``confidence``, ``stac_item``, ``run_log``, ``dask_report``, ``report_html``,
    ``district_chart``, ``estimate_chart``), and :func:`fields_key`, :func:`district_areas_key` and
    :func:`quicklook_key` for the others.

    >>> p = RunPaths(Path("runs/demo/r1"))
    >>> p.manifest, p.fields("gpkg"), p.district_areas("csv")
    (PosixPath('runs/demo/r1/manifest.json'), PosixPath('runs/demo/r1/fields.gpkg'), PosixPath('runs/demo/r1/district_areas.csv'))
    >>> p.scene_mask("a"), p.stacked_scene("a"), p.quicklook("a")
    (PosixPath('runs/demo/r1/scenes/a/mask.tif'), PosixPath('runs/demo/r1/inputs/a.vrt'), PosixPath('runs/demo/r1/quicklook_a.png'))
    """

    root: Path

    @property
    def manifest(self) -> Path:
        """What the run is and did (:func:`write_manifest`)."""
        return self.root / MANIFEST

    @property
    def mask(self) -> Path:
        """The class mask of the whole region (a COG)."""
        return self.root / "mask.tif"

    @property
    def confidence(self) -> Path:
        """The confidence of the whole region (a COG)."""
        return self.root / "confidence.tif"

    @property
    def stac_item(self) -> Path:
        """The STAC item of the run's rasters (:func:`geoseg.io.stac.stac_item`)."""
        return self.root / "stac_item.json"

    @property
    def run_log(self) -> Path:
        return self.root / "run.log"

    @property
    def logs(self) -> Path:
        """A folder for the logs of the run's workers."""
        return self.root / "logs"

    @property
    def dask_report(self) -> Path:
        """Dask's performance report (workflow key ``cluster.performance_report``)."""
        return self.root / "dask-report.html"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def district_chart(self) -> Path:
        return self.root / "district_chart.png"

    @property
    def estimate_chart(self) -> Path:
        """Mapped and estimated crop areas per district with their 95 % confidence intervals (drawn
        by ``geoseg report`` when the run holds an estimate with districts)."""
        return self.root / "estimate_chart.png"

    @property
    def profile_chart(self) -> Path:
        """The crops' index profiles per district (drawn by ``geoseg report`` when the run holds
        :attr:`district_crop_timeseries`)."""
        return self.root / "profile_chart.png"

    def fields(self, fmt: str) -> Path:
        """The field polygons in format ``fmt`` (one of :data:`FIELD_FORMATS`)."""
        return self.root / fields_name(fmt)

    def district_areas(self, ext: str) -> Path:
        """The district table in format ``ext`` (one of :data:`AREA_FORMATS`)."""
        return self.root / district_areas_name(ext)

    def quicklook(self, scene: str) -> Path:
        return self.root / f"quicklook_{scene}.png"

    @property
    def field_timeseries(self) -> Path:
        """Each field's index statistics per date (``outputs.features``; ``geoseg zonal``)."""
        return self.root / "field_timeseries.parquet"

    @property
    def district_crop_timeseries(self) -> Path:
        """The index profiles per district, crop and date (``outputs.features``)."""
        return self.root / "district_crop_timeseries.parquet"

    @property
    def sample(self) -> Path:
        """The folder of the reference sample ``geoseg sample`` draws from the run: ``design.json``,
        the points for the field teams (``points.gpkg``, ``points.csv``) and their map classes kept
        apart (``key.csv``)."""
        return self.root / "sample"

    @property
    def estimate_summary(self) -> Path:
        """What ``geoseg estimate`` found (overall accuracy, points used, the tables it wrote)."""
        return self.root / "estimate.json"

    def estimate_table(self, table: str, ext: str) -> Path:
        """A table of ``geoseg estimate`` (one of :data:`ESTIMATE_TABLES`) in format ``ext`` (csv, parquet)."""
        return self.root / estimate_table_name(table, ext)

    def scene_mask(self, scene: str) -> Path:
        """A scene's own mask, in a run of several scenes (mosaicked into :attr:`mask`)."""
        return self.root / "scenes" / scene / "mask.tif"

    def scene_confidence(self, scene: str) -> Path:
        return self.root / "scenes" / scene / "confidence.tif"

    def stacked_scene(self, scene: str) -> Path:
        """The VRT that stacks a scene given as several files."""
        return self.root / "inputs" / f"{scene}.vrt"

    def season_scene(self, scene: str) -> Path:
        """The composite of a scene given as a season (its clear-look counts beside it, ``_clear``)."""
        return self.root / "inputs" / f"{scene}.tif"


# ------------------------------------------------------------------ locks, manifests and the catalog


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner record in a lock or owner file (``host``, ``pid``, ...): None when the file
    does not exist, ``{}`` when it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _process_gone(owner: dict[str, Any]) -> bool:
    """True when ``owner`` (``host`` and ``pid``, as lock and owner files hold them) names a
    process of this host that no longer exists; a process of another host cannot be checked."""
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


class RunLock:
    """An exclusive lock file for one workflow's runs (``runs/<name>/.lock``).

    The file holds the owner's host and pid, and once the run is chosen its id
    (:meth:`hold_for`). A lock left by a process that no longer exists on this host is
    stale and is taken over (``stale_taken`` records that).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.stale_taken: dict[str, Any] | None = None
        self._held = False

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"{self.path.parent}: cannot write the run folder ({e.strerror or e}); choose a writable runs_dir "
                f"(the workflow's runs_dir key or --runs-dir), or fix its permissions"
            ) from None
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_owner(self.path) or {}
                if _process_gone(owner):
                    self.stale_taken = owner
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunLockedError(
                    f"{self.path}: this workflow is already running (pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {owner.get('since', '?')}); wait for it to finish, or if that "
                    f"process is gone on another host, delete the lock file"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self._held = True
            return self
        raise RunLockedError(f"{self.path}: could not take the run lock; try again")

    def hold_for(self, run_id: str) -> None:
        """Name the run this lock is held for in the lock file (so that :func:`run_status` can
        tell that run's process from the one of a later run of the same workflow)."""
        me = {**(read_owner(self.path) or {}), "host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id}
        write_text_atomic(self.path, json.dumps(me))

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def run_status(status: str, lock: Path, run_id: str) -> str:
    """``status`` as recorded, or ``"interrupted"`` for a run recorded as ``running`` whose
    process is gone: ``lock`` (``runs/<name>/.lock``) is missing, names another run, or
    names a process of this host that no longer exists (a killed run leaves its lock).

    >>> run_status("done", Path("/no/such/.lock"), "r1"), run_status("running", Path("/no/such/.lock"), "r1")
    ('done', 'interrupted')
    """
    if status != "running":
        return status
    owner = read_owner(lock)
    if owner is None or owner.get("run_id", run_id) != run_id or _process_gone(owner):
        return "interrupted"
    return status


def _stored(run_dir: Path, run_id: str, value: str) -> str:
    """``value`` as a manifest stores it: relative to the run folder when it lies inside."""
    p = run_path(run_dir, value, run_id)
    try:
        return p.relative_to(run_dir).as_posix()
    except ValueError:
        return value


def run_districts(run_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> tuple[Path | None, str | None]:
    """The district boundaries and name field the run's workflow named (``districts.path``,
    resolved against the workflow's folder as the run did), or ``(None, None)``."""
    base = Path(manifest.get("workflow", ".")).parent
    try:
        data = load_yaml(manifest.get("workflow_text") or "") or {}
    except yaml.YAMLError:  # a damaged record: the run names no districts
        data = {}
    d = data.get("districts") if isinstance(data, dict) and isinstance(data.get("districts"), dict) else {}
    if not d.get("path"):
        return None, None
    p = Path(str(d["path"])).expanduser()
    return (p if p.is_absolute() else base / p), str(d.get("name_field") or "district")


def run_path(run_dir: str | os.PathLike[str], value: str, run_id: str | None = None) -> Path:
    """A path a manifest or catalog stores, resolved against the folder it was read from.

    Relative paths are joined to ``run_dir``. Absolute ones (what older versions stored)
    that lay inside a folder named ``run_id`` (the run's own folder, wherever it was) are
    rebased onto ``run_dir``; other absolute paths (inputs, the model) are kept.

    >>> run_path("/new/t/r1", "scenes/a/mask.tif"), run_path("/new/t/r1", "/old/runs/t/r1/mask.tif", "r1")
    (PosixPath('/new/t/r1/scenes/a/mask.tif'), PosixPath('/new/t/r1/mask.tif'))
    >>> run_path("/new/t/r1", "/data/scene.tif", "r1")
    PosixPath('/data/scene.tif')
    """
    rd, p = Path(run_dir), Path(value)
    if not p.is_absolute():
        return rd / p
    parts = p.parts
    if run_id and run_id in parts[1:] and not p.is_relative_to(rd):
        at = len(parts) - 1 - parts[::-1].index(run_id)
        return rd.joinpath(*parts[at + 1:])
    return p


def run_outputs(run_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, Path]:
    """The manifest's ``outputs``, each resolved against ``run_dir`` (see :func:`run_path`)."""
    run_id = manifest.get("run_id")
    return {k: run_path(run_dir, str(v), run_id) for k, v in (manifest.get("outputs") or {}).items()}


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically; outputs (and the per-scene images in ``stats.scenes``)
    inside ``run_dir`` are stored relative to it, so the run folder can be moved."""
    run_id = manifest.get("run_id") or run_dir.name
    stored = dict(manifest)
    if manifest.get("outputs"):
        stored["outputs"] = {k: _stored(run_dir, run_id, str(v)) for k, v in manifest["outputs"].items()}
    stats = manifest.get("stats")
    if isinstance(stats, dict) and isinstance(stats.get("scenes"), dict):
        stored["stats"] = {**stats, "scenes": {k: _stored(run_dir, run_id, str(v)) for k, v in stats["scenes"].items()}}
    write_text_atomic(RunPaths(run_dir).manifest, json.dumps(stored, indent=2, default=str))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = RunPaths(run_dir).manifest
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise GeosegError(f"{path}: no manifest; is {run_dir} a geoseg run directory?") from None
    except ValueError as e:
        raise GeosegError(f"{path}: damaged manifest ({e})") from None


@dataclass
class Catalog:
    """The run catalog: one SQLite file next to the runs (``<runs_dir>/catalog.sqlite``).

    Run folders inside the catalog's own folder are stored relative to it. :meth:`list`
    gives them back absolute, and each run's status as :func:`run_status` sees it (a
    killed run is ``interrupted``), with what the catalog recorded as ``recorded_status``.
    """

    path: Path

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, scenes INTEGER,
        tiles_done INTEGER, tiles_total INTEGER, started TEXT, ended TEXT, seconds REAL,
        run_dir TEXT NOT NULL, workflow TEXT, error TEXT
    )"""

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection (closed on exit) whose SQLite errors become :class:`CatalogError`."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30)) as con:
                con.execute(self._SCHEMA)
                yield con
        except sqlite3.DatabaseError as e:
            if "not a database" in str(e) or "malformed" in str(e):
                raise CatalogError(
                    f"{self.path}: not a usable run catalog ({e}); move it aside or delete it (`geoseg runs` then "
                    f"rebuilds it from the runs' manifests), or restore it from a backup"
                ) from None
            raise CatalogError(f"{self.path}: the run catalog cannot be used ({e}); check free disk space and "
                               f"permissions, then try again") from None

    def check(self) -> None:
        """Open the catalog (creating it if needed) and fail now, not mid-run, if it is damaged.

        Raises
        ------
        CatalogError
            The file is not an SQLite database, is damaged, or cannot be written.
        """
        with self._connect():
            pass

    def upsert(self, **row: Any) -> None:
        if row.get("run_dir") is not None:
            run_dir = Path(row["run_dir"])
            if run_dir.is_relative_to(self.path.parent):
                row["run_dir"] = run_dir.relative_to(self.path.parent).as_posix()
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{k}=excluded.{k}" for k in row if k != "run_id")
        with self._connect() as con, con:
            con.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT(run_id) DO UPDATE SET {updates}",
                list(row.values()),
            )

    def _run_dir(self, row: dict[str, Any]) -> Path:
        """Where the row's run is: its stored folder, relative to the catalog's; an absolute one
        (older versions) is taken to be ``<name>/<run-id>`` beside the catalog when that exists."""
        stored = Path(row["run_dir"])
        if not stored.is_absolute():
            return self.path.parent.absolute() / stored
        here = self.path.parent / str(row["name"]) / str(row["run_id"])
        return here if RunPaths(here).manifest.is_file() else stored

    def list(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._connect() as con:
            con.row_factory = sqlite3.Row
            rows = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started DESC, run_id DESC")]
        for r in rows:
            r["run_dir"] = str(self._run_dir(r))
            r["recorded_status"] = r["status"]
            r["status"] = run_status(r["status"], self.path.parent / str(r["name"]) / LOCK, str(r["run_id"]))
        return rows

    def get(self, run_id: str) -> dict[str, Any]:
        return pick_run(self.list(), run_id, self.path)

    def rebuild(self) -> int:
        """Record every run folder beside the catalog (``<name>/<run-id>/manifest.json``; the
        ``latest`` links are not runs) from its manifest; return how many were recorded.

        For a catalog that was lost or deleted because it was damaged. Nothing is written
        when there is no run to record.
        """
        count = 0
        for m in sorted(self.path.parent.glob(f"*/*/{MANIFEST}")):
            if m.parent.is_symlink():
                continue
            try:
                man = read_manifest(m.parent)
            except GeosegError:
                continue
            if not man.get("run_id") or not man.get("name"):
                continue
            self.upsert(**catalog_row(man), run_dir=str(m.parent))
            count += 1
        return count


def pick_run(rows: list[dict[str, Any]], run_id: str, catalog: object) -> dict[str, Any]:
    """The catalog row whose id is ``run_id`` or starts with it (one only)."""
    found = [r for r in rows if r["run_id"] == run_id or r["run_id"].startswith(run_id)]
    if not found:
        raise GeosegError(f"{catalog}: no run with id {run_id!r}; `geoseg runs` lists them")
    if len(found) > 1:
        raise GeosegError(f"{catalog}: run id {run_id!r} is ambiguous ({[r['run_id'] for r in found]}); give more of it")
    return found[0]


def catalog_row(man: dict[str, Any]) -> dict[str, Any]:
    """A run's catalog record from its manifest (for a catalog rebuilt from the runs)."""
    timings = man.get("timings") or {}
    return {"run_id": man["run_id"], "name": man["name"], "status": man.get("status", "failed"),
            "scenes": len((man.get("stats") or {}).get("scenes") or {}) or None, "tiles_done": man.get("tiles"),
            "tiles_total": man.get("tiles"), "started": man.get("started"), "ended": man.get("ended"),
            "seconds": sum(timings.values()) if timings else None, "workflow": man.get("workflow"),
            "error": man.get("error")}

@dataclass
class RunResult:
    """What a run did: its id and folder, its status, the outputs it published, timings and counts."""

    run_id: str
    run_dir: Path
    status: str
    outputs: dict[str, str]
    timings: dict[str, float]
    tiles: int
    tiles_skipped: int
    dashboard: str | None
    stale_lock: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    #: The run folder on object storage, when ``runs_dir`` is one (``run_dir`` was this machine's
    #: working copy, removed once the run was published; ``outputs`` are then object URLs).
    run_url: str | None = None
