"""Workflow files (``workflows/*.yaml``) -> a validated, frozen :class:`RunConfig`.

Relative paths in a workflow are relative to the workflow file's folder. Validation
happens on load and names the file and the key: unknown keys, wrong types, missing
files, a tile size the model cannot take, a scene whose band count differs from the
model's. See the README ("Workflow files") for the full reference.
"""

from __future__ import annotations

import datetime
import glob as globmod
import hashlib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geoseg.core.season import STATISTICS, parse_periods
from geoseg.core.zonal import parse_index
from geoseg.errors import ConfigError, GeosegError, ObjectStoreError
from geoseg.io.districts import check_districts_reach
from geoseg.io.imagery import band_request
from geoseg.io.objects import cache_root, is_object_url, local_copy
from geoseg.io.paths import dataset_path, is_remote
from geoseg.io.raster import DEFAULT_MAX_PIXELS, check_size, raster_info
from geoseg.ml.infer import check_input, date_input
from geoseg.ml.model import read_card
from geoseg.ml.tta import TTA_MODES
from geoseg.ops.polygonize import exclude_ids
from geoseg.rundir import FIELD_FORMATS
from geoseg.strict_yaml import load_yaml

__all__ = ["FIELD_FORMATS", "ClusterSpec", "OutputSpec", "RunConfig", "SceneSpec", "SeasonSpec", "load_workflow", "read_scenes"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SeasonSpec:
    """A scene made by compositing a season (``geoseg composite``) at the start of the run.

    ``sources`` are local paths (resolved against the workflow's folder) or URLs; the other
    fields are :func:`geoseg.ops.composite.composite_season`'s arguments.
    """

    sources: tuple[str, ...]
    bands: tuple[str, ...]
    start: str
    end: str
    periods: str = "monthly"
    area: str | None = None
    area_where: str | None = None
    crs: str | None = None
    resolution: float = 10.0
    statistic: str = "median"
    scl_mask: tuple[int, ...] | None = None
    dilate: int = 0
    boa_offset: float | None = None
    stac_api: str | None = None
    collections: tuple[str, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~geoseg.ops.composite.composite_season` (but ``out``)."""
        out: dict[str, Any] = dict(sources=list(self.sources), bands=list(self.bands), start=self.start, end=self.end,
                                   periods=self.periods, area=self.area, area_where=self.area_where, crs=self.crs,
                                   resolution=self.resolution, statistic=self.statistic, dilate=self.dilate,
                                   boa_offset=self.boa_offset, stac_api=self.stac_api)
        if self.scl_mask is not None:
            out["scl_classes"] = list(self.scl_mask)
        if self.collections:
            out["collections"] = list(self.collections)
        return out

    def band_names(self) -> list[str]:
        """The composite's band names, ``<period>_<band>``, without reading anything."""
        periods = parse_periods(self.periods, datetime.date.fromisoformat(self.start),
                                datetime.date.fromisoformat(self.end))
        return [f"{p.label}_{b}" for p in periods for b in self.bands]

    @property
    def token(self) -> str:
        """A hash of the spec: a resumed run keeps a composite made from the same one."""
        return hashlib.sha256(repr(self).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class SceneSpec:
    """One scene: a raster file, per-date/per-band files stacked in the given order, or a season."""

    name: str
    paths: tuple[Path | str, ...]  # str: a remote file, as GDAL opens it (/vsis3/..., /vsicurl/...)
    season: SeasonSpec | None = None

    @property
    def is_stack(self) -> bool:
        return len(self.paths) > 1


@dataclass(frozen=True)
class ClusterSpec:
    """Where the graph runs: an embedded LocalCluster or an existing scheduler."""

    scheduler: str = "local"
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    resources: dict[str, float] = field(default_factory=dict)
    dashboard: bool = True
    performance_report: bool = False

    @property
    def is_local(self) -> bool:
        return self.scheduler == "local"


@dataclass(frozen=True)
class OutputSpec:
    mask: bool = True
    confidence: bool = True
    fields: tuple[str, ...] = ("parquet", "gpkg")
    min_area_ha: float = 0.1
    #: Fields larger than this are dropped (None: none are).
    max_area_ha: float | None = None
    #: Separate touching fields on the confidence's boundary band (a model trained with field polygons).
    separate_fields: bool = True
    #: The user's parcel layer: the fields outputs are then its parcels with their crops, and the
    #: attribute that identifies a parcel (None: 1, 2, ...).
    parcels: Path | None = None
    parcel_id: str | None = None
    exclude_classes: tuple[str, ...] = ("background",)
    district_areas: bool = True
    report: bool = True
    #: When the imagery was taken (ISO 8601, UTC when no zone is given): the fields'
    #: ``determination:datetime``; None: unknown.
    observed: str | None = None
    #: Growth features: the indices of each field's time series and phenology, and of the district x
    #: crop profiles (empty: none).
    features: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """A validated workflow."""

    path: Path
    name: str
    scenes: tuple[SceneSpec, ...]
    model: Path
    tile: int
    overlap: int
    batch_size: int
    tiles_per_task: int
    device: str
    districts: Path | None
    name_field: str | None
    outputs: OutputSpec
    cluster: ClusterSpec
    store: Path | str  # a local folder, or an object-store URL (s3://...)
    #: The runs folder; for one on object storage (``runs_url``), this machine's working copy of it.
    runs_dir: Path
    crs: str | None
    text: str = field(repr=False, default="")
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: For a model that reads dates: a pixel is mapped when at least this many of its dates are observed.
    min_dates: int = 1
    #: Test-time augmentation of the predict stage: none, flips or d4 (geoseg.ml.tta).
    tta: str = "none"
    #: Fuse the model's per-pixel forest, when its checkpoint has one (geoseg.ml.forest).
    forest: bool = True
    #: The model directory's object-store URL when it is on one (``model`` is then this machine's copy).
    model_url: str | None = None
    #: The runs folder's object-store URL when it is on one: runs are worked in ``runs_dir`` and
    #: published there (:mod:`geoseg.rundir_store`).
    runs_url: str | None = None

    @property
    def model_source(self) -> str:
        """Where workers find the model: its object-store URL, else its path."""
        return self.model_url or str(self.model)

    @property
    def sha256(self) -> str:
        """Hash of the workflow file's content."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


_TOP = {
    "name", "scenes", "model", "tile", "overlap", "batch_size", "tiles_per_task", "device", "districts",
    "outputs", "cluster", "store", "runs_dir", "crs", "description", "max_pixels", "min_dates",
    "tta", "forest",
}


class _Reader:
    """Typed access to a YAML mapping with errors that name the file and the key."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: key '{self.prefix}{key}': {msg}")

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted((k for k in self.data if k not in allowed), key=str)  # YAML keys may be null, numbers, ...
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown key(s) {[self.prefix + str(k) for k in unknown]}; allowed here: {sorted(allowed)}"
            )

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required or default is ...:
                raise self.err(key, "is required")
            return default
        v = self.data[key]
        if isinstance(v, bool) and typ in (int, float, (int, float)):
            raise self.err(key, f"expected a number, found {v!r}")
        if typ is float and isinstance(v, int):
            return float(v)
        if not isinstance(v, typ):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.err(key, f"expected {names}, found {type(v).__name__} {v!r}")
        return v

    def sub(self, key: str) -> _Reader:
        v = self.get(key, dict, {})
        return _Reader(self.path, v, f"{self.prefix}{key}.")

    def path_(self, key: str, base: Path, *, must_exist: bool = True, default: Any = ..., kind: str = "file") -> Path:
        raw = self.get(key, str, default)
        if raw is None:
            return None  # type: ignore[return-value]
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else (base / p)
        if must_exist and not p.exists():
            raise self.err(key, f"{kind} {p} does not exist; fix the path (relative paths are relative to the workflow file)")
        return p


def _scenes(r: _Reader, base: Path) -> tuple[SceneSpec, ...]:
    raw = r.get("scenes", list, required=True)
    if not raw:
        raise r.err("scenes", "is empty; list at least one scene")
    out: list[SceneSpec] = []
    for i, item in enumerate(raw):
        key = f"scenes[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise r.err(key, f"expected a path or a mapping with path/glob/stack, found {item!r}")
        s = _Reader(r.path, item, f"{key}.")
        s.check_keys({"path", "glob", "stack", "name", "season"})
        given = [k for k in ("path", "glob", "stack", "season") if k in item]
        if len(given) != 1:
            raise r.err(key, f"give exactly one of path, glob, stack or season (found {given or 'none'})")
        name = s.get("name", str, None)
        if name is not None and not _NAME.match(name):
            raise s.err("name", f"{name!r} is not a plain name (letters, digits, '_', '-', '.')")
        if "season" in item:
            if name is None:
                raise s.err("name", "is required for a season (it names the composited scene)")
            out.append(SceneSpec(name, (), _season(r, item["season"], f"{key}.season.", base)))
        elif "path" in item:
            raw = s.get("path", str)
            if is_remote(raw):  # a COG on object storage or a web server: GDAL reads it where it is
                out.append(SceneSpec(name or PurePosixPath(raw.split("?", 1)[0]).stem, (dataset_path(raw),)))
                continue
            p = s.path_("path", base)
            out.append(SceneSpec(name or p.stem, (p,)))
        elif "glob" in item:
            pattern = s.get("glob", str)
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matches = sorted(globmod.glob(full))
            if not matches:
                raise s.err("glob", f"{full!r} matches no file; check the pattern")
            for m in matches:
                out.append(SceneSpec(Path(m).stem, (Path(m),)))
        else:
            files = s.get("stack", list)
            if not files or not all(isinstance(f, str) for f in files):
                raise s.err("stack", "expected a list of file paths, in band order")
            paths = []
            for j, f in enumerate(files):
                p = Path(f).expanduser()
                p = p if p.is_absolute() else base / p
                if not p.exists():
                    raise s.err(f"stack[{j}]", f"file {p} does not exist; fix the path")
                paths.append(p)
            if name is None:
                raise s.err("name", "is required for a stack (it names the stacked scene)")
            out.append(SceneSpec(name, tuple(paths)))
    for i, s in enumerate(out):  # names become folders: a file name such as '...tif' must not climb out
        if s.name in ("", ".", "..") or "/" in s.name or "\\" in s.name:
            raise r.err(f"scenes[{i}]", f"the file {s.paths[0]} gives the scene name {s.name!r}, which cannot name a "
                                        f"folder; give the scene a name: {{path: ..., name: NAME}}")
    seen: dict[str, int] = {}
    final = []
    for s in out:  # make names unique, in order
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        final.append(s if n == 0 else replace(s, name=f"{s.name}-{n + 1}"))
    return tuple(final)


_SEASON_KEYS = {"sources", "bands", "start", "end", "periods", "area", "area_where", "crs", "resolution",
                "statistic", "scl_mask", "dilate", "boa_offset", "stac_api", "collections"}


def _season(r: _Reader, raw: Any, prefix: str, base: Path) -> SeasonSpec:
    """A scene's ``season:`` mapping, checked (dates, bands, periods, statistic) without reading imagery."""
    if not isinstance(raw, dict):
        raise r.err(prefix.rstrip("."), f"expected a mapping (sources, bands, start, end, periods, area, ...), found {raw!r}")
    s = _Reader(r.path, raw, prefix)
    s.check_keys(_SEASON_KEYS)
    srcs = s.get("sources", (list, str), [])
    srcs = [srcs] if isinstance(srcs, str) else srcs
    api = s.get("stac_api", str, None)
    if not srcs and not api:
        raise s.err("sources", "is required (STAC files or URLs, SAFE products, folders), unless stac_api is given")
    sources = []
    for j, src in enumerate(srcs):
        if not isinstance(src, str):
            raise s.err(f"sources[{j}]", f"expected a path or URL, found {src!r}")
        if is_remote(src):
            sources.append(src)
            continue
        p = Path(src).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise s.err(f"sources[{j}]", f"{p} does not exist; fix the path")
        sources.append(str(p))
    bands = s.get("bands", (list, str), required=True)
    bands = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else [str(b) for b in bands]
    area = s.get("area", str, None)
    if area and not area.lower().startswith(("mgrs:", "tile:")) and len(area.split(",")) != 4:
        p = Path(area).expanduser()
        area = str(p if p.is_absolute() else base / p)
        if not Path(area).exists():
            raise s.err("area", f"{area} does not exist; give a polygon file, mgrs:TILE or MINLON,MINLAT,MAXLON,MAXLAT")
    try:
        names = list(band_request(bands))
        spec = SeasonSpec(
            sources=tuple(sources), bands=tuple(names), start=str(s.get("start", (str, datetime.date), required=True)),
            end=str(s.get("end", (str, datetime.date), required=True)), periods=str(s.get("periods", (str, list), "monthly")
                                                                            if not isinstance(raw.get("periods"), list)
                                                                            else ",".join(map(str, raw["periods"]))),
            area=area, area_where=s.get("area_where", str, None), crs=s.get("crs", str, None),
            resolution=float(s.get("resolution", (int, float), 10.0)), statistic=s.get("statistic", str, "median"),
            scl_mask=tuple(s.get("scl_mask", list)) if raw.get("scl_mask") is not None else None,
            dilate=int(s.get("dilate", int, 0)),
            boa_offset=float(raw["boa_offset"]) if raw.get("boa_offset") is not None else None, stac_api=api,
            collections=tuple(s.get("collections", list, [])),
        )
        spec.band_names()  # dates and periods checked now, not at the end of a long run
    except GeosegError as e:
        raise r.err(prefix.rstrip("."), str(e)) from None
    except ValueError as e:
        raise r.err(prefix.rstrip("."), f"{e}; expected start and end as YYYY-MM-DD") from None
    if spec.statistic not in STATISTICS:
        raise s.err("statistic", f"{spec.statistic!r}: expected one of {', '.join(STATISTICS)}")
    return spec


def read_scenes(path: str | Path) -> tuple[SceneSpec, ...]:
    """Only the ``scenes`` of a workflow file, checked (for tools that prepare a run's inputs
    before the rest of it exists, such as the demo)."""
    p = Path(path)
    _, data = _read_mapping(p)
    return _scenes(_Reader(p, data), p.resolve().parent)


def load_workflow(
    path: str | Path,
    *,
    runs_dir: str | Path | None = None,
    store: str | Path | None = None,
    scheduler: str | None = None,
    check_inputs: bool = True,
) -> RunConfig:
    """Read and validate a workflow file.

    Parameters
    ----------
    path : path
        The YAML file (read with :func:`geoseg.strict_yaml.load_yaml`: safe, and without aliases,
        deep nesting or repeated keys).
    runs_dir, store, scheduler : optional
        Override the file's ``runs_dir``, ``store`` and ``cluster.scheduler``.
    check_inputs : bool
        Also open the model card and every scene to check band counts and tile size.

    Raises
    ------
    ConfigError
        Naming the file and the key for every problem found.
    """
    p = Path(path)
    text, data = _read_mapping(p)
    base = p.resolve().parent
    r = _Reader(p, data)
    r.check_keys(_TOP)
    name = r.get("name", str, required=True)
    if not _NAME.match(name):
        raise r.err("name", f"{name!r} is not a plain name (letters, digits, '_', '-', '.'; it names folders)")
    scenes = _scenes(r, base)
    model_url = r.get("model", str, None)
    if model_url is not None and is_object_url(model_url):  # workers copy it too (geoseg.workflow.tasks)
        try:
            model = local_copy(model_url.rstrip("/"), "model directory")
        except ObjectStoreError as e:
            raise r.err("model", str(e)) from None
        model_url = model_url.rstrip("/")
    else:
        model, model_url = r.path_("model", base, kind="model directory"), None
    inference = _inference(r)
    districts, name_field = _districts(r, base)
    outputs = _outputs(r, districts, base)
    cluster = _cluster(r, scheduler)
    cfg = RunConfig(
        path=p.resolve(),
        name=name,
        scenes=scenes,
        model=model,
        model_url=model_url,
        districts=districts,
        name_field=name_field,
        outputs=outputs,
        cluster=cluster,
        store=_folder(r, "store", store, "tiles", base),
        **_runs_folder(_folder(r, "runs_dir", runs_dir, "runs", base)),
        text=text,
        **inference,
    )
    if check_inputs:
        cfg = _check_inputs(cfg, r)
    return cfg


def _read_mapping(p: Path) -> tuple[str, dict[str, Any]]:
    """The workflow file's text and its YAML mapping."""
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: workflow file not found; pass the path of a workflows/*.yaml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the workflow ({e}); expected a UTF-8 YAML file") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: YAML syntax error{where}: {problem}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys (name, scenes, model, ...), found {type(data).__name__}")
    return text, data


def _inference(r: _Reader) -> dict[str, Any]:
    """The keys of how inference runs (tile, overlap, batch_size, tiles_per_task, max_pixels, device, crs),
    checked, as :class:`RunConfig` fields; an overlap not given is -1 (the model's, once its card is read)."""
    tile = r.get("tile", int, 512)
    overlap = r.get("overlap", int, None)
    batch_size = r.get("batch_size", int, 4)
    tiles_per_task = r.get("tiles_per_task", int, 16)
    max_pixels = r.get("max_pixels", int, DEFAULT_MAX_PIXELS)
    min_dates = r.get("min_dates", int, 1)
    tta = r.get("tta", str, "none")
    if tta not in TTA_MODES:
        raise r.err("tta", f"{tta!r}; expected none, flips (4 passes per tile) or d4 (8 passes)")
    forest = r.get("forest", bool, True)
    for key, v, lo in (("tile", tile, 16), ("batch_size", batch_size, 1), ("tiles_per_task", tiles_per_task, 1),
                       ("overlap", overlap if overlap is not None else 0, 0), ("max_pixels", max_pixels, 1),
                       ("min_dates", min_dates, 1)):
        if v < lo:
            raise r.err(key, f"must be at least {lo}, found {v}")
    if tile % 16:
        lo = tile // 16 * 16
        raise r.err("tile", f"{tile} is not divisible by 16; use {lo or 16} or {lo + 16}")
    device = r.get("device", str, "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise r.err("device", f"{device!r}; expected auto, cpu or cuda")
    crs = r.get("crs", str, None)
    if crs is not None:
        try:
            CRS.from_user_input(crs)
        except CRSError:
            raise r.err("crs", f"{crs!r} is not a CRS GDAL knows; use e.g. EPSG:32643") from None
    return {"tile": tile, "overlap": overlap if overlap is not None else -1, "batch_size": batch_size,
            "tiles_per_task": tiles_per_task, "device": device, "crs": crs, "max_pixels": max_pixels,
            "min_dates": min_dates, "tta": tta, "forest": forest}


def _districts(r: _Reader, base: Path) -> tuple[Path | None, str | None]:
    """The ``districts`` mapping: the boundary file (which must exist) and its name field."""
    d = r.sub("districts")
    d.check_keys({"path", "name_field"})
    districts = d.path_("path", base, default=None, kind="district boundary file") if d.data else None
    name_field = d.get("name_field", str, "district") if d.data else None
    return districts, name_field


def _outputs(r: _Reader, districts: Path | None, base: Path) -> OutputSpec:
    """The ``outputs`` mapping; district areas need ``districts``."""
    o = r.sub("outputs")
    o.check_keys({"mask", "confidence", "fields", "min_area_ha", "max_area_ha", "separate_fields", "exclude_classes",
                  "district_areas", "report", "observed", "parcels", "parcel_id", "features"})
    fields = o.get("fields", list, ["parquet", "gpkg"])
    bad = [f for f in fields if f not in FIELD_FORMATS]
    if bad:
        raise o.err("fields", f"unknown format(s) {bad}; choose from {list(FIELD_FORMATS)}")
    min_area_ha = o.get("min_area_ha", float, 0.1)
    if not math.isfinite(min_area_ha) or min_area_ha < 0:
        raise o.err("min_area_ha", f"{min_area_ha!r}; expected 0 (no sieving) or a positive area in hectares, e.g. 0.1")
    max_area_ha = o.get("max_area_ha", float, None)
    if max_area_ha is not None and (not math.isfinite(max_area_ha) or max_area_ha <= 0 or max_area_ha < min_area_ha):
        raise o.err("max_area_ha", f"{max_area_ha!r}; expected a positive area in hectares no smaller than min_area_ha "
                                   f"({min_area_ha}), e.g. 10")
    exclude = o.get("exclude_classes", list, ["background"])
    odd = [e for e in exclude if not isinstance(e, (str, int)) or isinstance(e, bool)]
    if odd:
        raise o.err("exclude_classes", f"expected class names or ids, found {odd}")
    observed = o.get("observed", (str, datetime.date), None)
    if observed is not None:
        try:
            observed = datetime.datetime.fromisoformat(str(observed)).isoformat()
        except ValueError:
            raise o.err("observed", f"{observed!r}; expected the date (or time) of the last image, e.g. 2024-10-31 "
                                    f"or 2024-10-31T10:30:00Z") from None
    features = o.get("features", list, [])
    for ix in features:
        try:
            parse_index(str(ix))
        except ValueError as e:
            raise o.err("features", str(e)) from None
    outputs = OutputSpec(
        mask=True,
        confidence=o.get("confidence", bool, True),
        fields=tuple(fields),
        min_area_ha=min_area_ha,
        max_area_ha=max_area_ha,
        separate_fields=o.get("separate_fields", bool, True),
        parcels=o.path_("parcels", base, default=None, kind="parcel file"),
        parcel_id=o.get("parcel_id", str, None),
        exclude_classes=tuple(str(e) for e in exclude),
        district_areas=o.get("district_areas", bool, True),
        report=o.get("report", bool, True),
        observed=observed,
        features=tuple(str(ix) for ix in features),
    )
    if outputs.features and not outputs.fields:
        raise o.err("features", "the growth features are per field: list at least one fields format in outputs.fields")
    if o.get("mask", bool, True) is False:
        raise o.err("mask", "the mask is the run's primary output and cannot be switched off")
    if outputs.district_areas and districts is None:
        raise r.err("districts", "is required when outputs.district_areas is true (give path and name_field)")
    return outputs


def _cluster(r: _Reader, scheduler: str | None) -> ClusterSpec:
    """The ``cluster`` mapping; ``scheduler`` (``--scheduler``) overrides its scheduler."""
    c = r.sub("cluster")
    c.check_keys({"scheduler", "workers", "threads_per_worker", "memory_limit", "resources", "dashboard",
                  "performance_report"})
    res = c.get("resources", dict, {})
    for k, v in res.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise c.err(f"resources.{k}", f"expected a positive number, found {v!r}")
    sched = scheduler or c.get("scheduler", str, "local")
    if sched != "local" and not re.match(r"^(tcp|tls|inproc|ws|wss|ucx)://", sched):
        raise c.err("scheduler", f"{sched!r}; use 'local' or a scheduler address such as tcp://host:8786")
    cluster = ClusterSpec(
        scheduler=sched,
        workers=c.get("workers", int, 2),
        threads_per_worker=c.get("threads_per_worker", int, 1),
        memory_limit=str(c.get("memory_limit", (str, int), "auto")),
        resources={str(k): float(v) for k, v in res.items()},
        dashboard=c.get("dashboard", bool, True),
        performance_report=c.get("performance_report", bool, False),
    )
    if cluster.workers < 1 or cluster.threads_per_worker < 1:
        raise c.err("workers", "workers and threads_per_worker must be at least 1")
    _check_memory_limit(c, cluster.memory_limit)
    return cluster


def _folder(r: _Reader, key: str, override: str | Path | None, default: str, base: Path) -> Path | str:
    """The folder ``key`` names (``store``, ``runs_dir``): ``override`` (a command-line option), else
    the file's value relative to the workflow's folder, else ``default`` relative to the current one."""
    raw = os.fspath(override) if override is not None else r.get(key, str, None)
    if raw is not None and is_object_url(raw):
        return raw.rstrip("/")
    if override is not None:
        return Path(override).resolve()
    if raw is None:
        return Path(default).resolve()
    q = Path(raw).expanduser()
    return q if q.is_absolute() else (base / q).resolve()


def _runs_folder(folder: Path | str) -> dict[str, Any]:
    """``runs_dir`` (and ``runs_url``) for a runs folder: a local one, or one on object storage, which
    runs are worked in a local copy of (under ``GEOSEG_CACHE``, named by a hash of the URL) and
    published to."""
    if isinstance(folder, Path):
        return {"runs_dir": folder}
    digest = hashlib.sha256(folder.encode()).hexdigest()[:16]
    return {"runs_dir": cache_root() / "runs" / digest, "runs_url": folder}


def _check_memory_limit(c: _Reader, value: str) -> None:
    """``cluster.memory_limit`` as Dask reads it: ``auto``, bytes, a size such as ``4GB``, or a fraction of RAM."""
    from dask.utils import parse_bytes  # deferred: dask is slow to import, and `geoseg --help` imports this module

    if value == "auto":
        return
    try:
        n = float(value)
    except ValueError:
        try:
            n = parse_bytes(value)
        except (ValueError, TypeError):
            raise c.err("memory_limit", f"{value!r} is not a size; use auto, a size such as 4GB or 4GiB, "
                                        f"bytes, or a fraction of the machine's memory such as 0.5") from None
    if not math.isfinite(n) or n <= 0:
        raise c.err("memory_limit", f"{value!r}; expected a positive size (e.g. 4GB) or auto")


def _check_inputs(cfg: RunConfig, r: _Reader) -> RunConfig:
    try:
        card = read_card(cfg.model)
    except GeosegError as e:
        raise r.err("model", str(e)) from None
    if cfg.tile % card.multiple:
        lo = cfg.tile // card.multiple * card.multiple
        raise r.err("tile", f"{cfg.tile} is not divisible by {card.multiple}, which the model "
                            f"({card.arch}/{card.encoder}) needs; use {lo or card.multiple} or {lo + card.multiple}")
    overlap = card.overlap if cfg.overlap < 0 else cfg.overlap
    if cfg.tile - 2 * overlap <= 0:
        raise r.err("overlap", f"{overlap} leaves no core in a {cfg.tile} px tile; use less than {cfg.tile // 2}")

    try:
        exclude_ids(cfg.outputs.exclude_classes, card.classes, str(cfg.model))
    except GeosegError as e:
        raise r.err("outputs.exclude_classes", str(e)) from None
    scene_infos = []
    for i, s in enumerate(cfg.scenes):
        if s.season is not None:  # made at the start of the run: its band names are known now
            names = s.season.band_names()
            n_dates = len(names) // max(1, len(s.season.bands))
            if card.temporal and len(s.season.bands) == card.bands_per_date and n_dates >= cfg.min_dates:
                continue  # a temporal model reads any number of periods
            if card.temporal or len(names) != card.in_channels or (card.bands and names != card.bands):
                want = f" ({', '.join(card.bands[:4])}, ...)" if card.bands else ""
                raise r.err(f"scenes[{i}].season", f"the composite would have {len(names)} bands ({', '.join(names[:4])}"
                                                   f"{', ...' if len(names) > 4 else ''}) but the model {cfg.model} "
                                                   f"expects {card.in_channels}{want}; give the periods and bands the "
                                                   f"model was trained on")
            continue
        try:
            infos = [raster_info(p) for p in s.paths]
            for info in infos:
                check_size(info, cfg.max_pixels, "raise the workflow's max_pixels key if the scene is really this large")
        except GeosegError as e:
            raise r.err(f"scenes[{i}]", str(e)) from None
        scene_infos += infos
        counts = [info.count for info in infos]
        if card.temporal:
            if sum(counts) % card.bands_per_date:
                raise r.err(f"scenes[{i}]", f"scene {s.name!r} has {sum(counts)} bands, not a whole number of dates "
                                            f"of the {card.bands_per_date} bands the model {cfg.model} reads per date")
        elif sum(counts) != card.in_channels:
            raise r.err(
                f"scenes[{i}]",
                f"scene {s.name!r} has {sum(counts)} bands but the model {cfg.model} expects {card.in_channels}; "
                f"stack the scene's files in the model's band order ({', '.join(card.bands[:4])}, ...)",
            )
        if len(infos) == 1:  # band order and pixel scale against the model card
            try:
                check_input(card, infos[0], cfg.model)
                date_input(card, infos[0], cfg.min_dates, cfg.model)
            except GeosegError as e:
                raise r.err(f"scenes[{i}]", str(e)) from None
    if cfg.districts is not None:
        try:
            check_districts_reach(cfg.districts, scene_infos)
        except GeosegError as e:
            raise r.err("districts.path", str(e)) from None
    return replace(cfg, overlap=overlap)
