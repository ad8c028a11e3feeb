"""What a report is drawn from: a finished run's manifest, rasters, fields and districts.

Everything is located through the run's ``manifest.json``: the outputs it lists (mask,
fields, district table), the workflow text it recorded (districts path and name field,
scenes) and the model path (class table fallback). A reference-sample estimate that
``geoseg estimate`` wrote into the run folder (``estimate.json`` and its tables) is read by
:func:`read_estimate`, the crops' index profiles of a run with ``outputs.features``
(``district_crop_timeseries.parquet``) by :func:`read_profiles`. Rasters are only ever read
decimated (:func:`read_decimated`), so memory stays bounded on region-sized runs.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from geoseg.classes import ClassTable, default_classes
from geoseg.core.estimate import Z95
from geoseg.errors import GeosegError, ReportError
from geoseg.io.fiboa import OLD_NAMES, compatible_fields
from geoseg.io.raster import open_raster, read_mask_classes
from geoseg.io.vector import read_table, read_vector
from geoseg.ml.model import read_card
from geoseg.ops.estimate import AREA_COLUMNS, DISTRICT_COLUMNS, MATRIX_COLUMNS
from geoseg.ops.features import PROFILE_COLUMNS
from geoseg.rundir import (
    AREA_FORMATS,
    ESTIMATE_TABLES,
    FIELD_FORMATS,
    MANIFEST,
    RunPaths,
    district_areas_key,
    fields_key,
    read_manifest,
    run_districts,
    run_outputs,
    run_path,
)

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "RunData",
    "RunEstimate",
    "load_run",
    "read_estimate",
    "read_profiles",
    "read_decimated",
    "read_fields",
    "false_colour_bands",
]

#: Quicklook rasters are read at most this many pixels on their long side.
MAX_PX = 1500


@dataclass
class RunEstimate:
    """A reference-sample estimate in a run folder (what ``geoseg estimate`` wrote there).

    ``summary`` is ``estimate.json`` (overall accuracy and its interval, points, ``z``, notes);
    the tables have the columns of :data:`geoseg.ops.estimate.AREA_COLUMNS`,
    :data:`~geoseg.ops.estimate.DISTRICT_COLUMNS` and :data:`~geoseg.ops.estimate.MATRIX_COLUMNS`.
    ``districts`` is None when the sample had no districts, ``matrix`` when its file is missing.
    """

    summary: dict[str, Any]
    areas: pd.DataFrame
    districts: pd.DataFrame | None = None
    matrix: pd.DataFrame | None = None

    @property
    def z(self) -> float:
        """The intervals' half-width in standard errors: the summary's ``z`` (1.96 when it has none)."""
        z = self.summary.get("z")
        return float(z) if isinstance(z, (int, float)) and math.isfinite(z) and z > 0 else Z95

    @property
    def level(self) -> float:
        """The intervals' confidence level in percent (95 for ``z`` = 1.96)."""
        return 100 * math.erf(self.z / math.sqrt(2))


@dataclass
class RunData:
    """Paths and tables of one run, as the report needs them (``estimate``: None when the run
    folder holds no estimate; ``profiles``: the table of ``district_crop_timeseries.parquet``, None
    when the run folder has none or it cannot be read)."""

    run_dir: Path
    manifest: dict[str, Any]
    classes: "ClassTable"
    mask: Path
    scenes: list[tuple[str, Path, Path]]  # (scene name, image path, mask on the scene's grid)
    fields: Path | None
    districts: Path | None
    name_field: str | None
    areas: "pd.DataFrame | None"
    notes: list[str] = field(default_factory=list)
    estimate: RunEstimate | None = None
    profiles: pd.DataFrame | None = None

    @property
    def outputs(self) -> dict[str, str]:
        return dict(self.manifest.get("outputs") or {})


def _scenes(manifest: dict[str, Any], run_dir: Path, mask: Path) -> list[tuple[str, Path, Path]]:
    """(name, image, mask) per scene, from the manifest's ``stats.scenes`` (every finished run records it)."""
    recorded = (manifest.get("stats") or {}).get("scenes") or {}
    pairs = [(str(k), run_path(run_dir, str(v), manifest.get("run_id"))) for k, v in recorded.items()]
    out = []
    for name, image in pairs:
        per_scene = RunPaths(run_dir).scene_mask(name)
        out.append((name, image, per_scene if per_scene.exists() else mask))
    return out


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Collect what a report of ``run_dir`` needs.

    Raises
    ------
    ReportError
        No manifest, or no mask in the run directory.
    """
    rd = Path(run_dir)
    if not RunPaths(rd).manifest.exists():
        raise ReportError(
            f"{rd}: no {MANIFEST} found; expected a run directory written by `geoseg run` "
            f"(e.g. runs/demo/latest)"
        )
    manifest = read_manifest(rd)
    return load_run_from(rd, manifest)


def load_run_from(rd: Path, manifest: dict[str, Any]) -> RunData:
    """Like :func:`load_run`, with the manifest given (used while a run is finishing)."""
    outputs = run_outputs(rd, manifest)  # stored relative to the run folder: a moved run reads its own files
    mask = outputs.get("mask") or RunPaths(rd).mask
    if not mask.exists():
        raise ReportError(
            f"{mask}: the run's mask is missing (run status {manifest.get('status')!r}); expected "
            f"{RunPaths(rd).mask.name} in {rd} - finish the run with `geoseg run WORKFLOW --resume`"
        )
    notes: list[str] = []
    classes = read_mask_classes(mask)
    if classes is None:
        try:
            classes = read_card(Path(manifest["model"]["path"])).classes
        except (GeosegError, KeyError, OSError, TypeError):
            classes = default_classes()
            notes.append("class table not found in mask.tif or the model card: default class colours used")
    fields_path = next((outputs[k] for k in map(fields_key, FIELD_FORMATS) if k in outputs and outputs[k].exists()),
                       None)
    districts, name_field = run_districts(rd, manifest)
    if districts is not None and not districts.exists():
        notes.append(f"district boundaries {districts} not found: district outlines left out")
        districts = None
    areas = None
    area_file = next((outputs[k] for k in map(district_areas_key, AREA_FORMATS) if outputs.get(k)), None)
    if area_file and area_file.exists():
        areas = read_table(area_file)
    estimate = read_estimate(rd, notes, run_id=manifest.get("run_id"))
    profiles = read_profiles(rd, notes)
    return RunData(rd, manifest, classes, mask, _scenes(manifest, rd, mask), fields_path, districts, name_field,
                   areas, notes, estimate, profiles)


#: The columns each estimate table must have for the report to draw it.
_ESTIMATE_COLUMNS = {"areas": AREA_COLUMNS, "districts": DISTRICT_COLUMNS, "matrix": MATRIX_COLUMNS}


def _estimate_table(paths: RunPaths, name: str) -> tuple[pd.DataFrame | None, str | None]:
    """One table of the estimate (its Parquet file, else its CSV) and, when a file is there but
    unusable, why; ``(None, None)`` when neither file exists."""
    problem = None
    for ext in ("parquet", "csv"):
        path = paths.estimate_table(name, ext)
        if not path.is_file():
            continue
        try:
            df = read_table(path)
        except (GeosegError, OSError, ValueError) as e:
            problem = problem or f"{path} cannot be read ({type(e).__name__}: {str(e).strip().splitlines()[0]})"
            continue
        missing = [c for c in _ESTIMATE_COLUMNS[name] if c not in df.columns]
        if missing:
            problem = problem or f"{path} lacks the columns {missing}"
            continue
        return df, None
    return None, problem


def read_estimate(run_dir: str | os.PathLike[str], notes: list[str] | None = None, *,
                  run_id: str | None = None) -> RunEstimate | None:
    """The estimate ``geoseg estimate`` wrote into ``run_dir``, or None.

    ``estimate.json`` is written last, after its tables: without it there is no estimate (tables
    alone are one being rewritten, or left by an interrupted one). A summary or per-class table
    that cannot be read, and a ``run_id`` other than the run's, are told in ``notes``.
    """
    paths = RunPaths(Path(run_dir))
    notes = notes if notes is not None else []
    fix = f"rewrite it with `geoseg estimate {paths.root} LABELS --overwrite`"
    try:
        summary = json.loads(paths.estimate_summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        notes.append(f"estimate left out: {paths.estimate_summary} cannot be read ({e}); {fix}")
        return None
    if not isinstance(summary, dict):
        notes.append(f"estimate left out: {paths.estimate_summary} is not an estimate summary; {fix}")
        return None
    tables, problems = {}, {}
    for name in ESTIMATE_TABLES:
        tables[name], problems[name] = _estimate_table(paths, name)
    if tables["areas"] is None:
        why = problems["areas"] or f"{paths.estimate_table('areas', 'parquet').name} is missing"
        notes.append(f"estimate left out: {why}; {fix}")
        return None
    notes.extend(f"estimate: {problems[name]}; {fix}" for name in ESTIMATE_TABLES if problems[name])
    if run_id is not None and summary.get("run_id") not in (None, run_id):
        notes.append(f"the estimate in {paths.estimate_summary} was made for run {summary.get('run_id')}, not "
                     f"{run_id}: check that its sample was drawn from this run's mask")
    return RunEstimate(summary, tables["areas"], tables["districts"], tables["matrix"])


#: The columns of ``district_crop_timeseries.parquet`` the report draws from (``scene``, which a
#: run adds, and ``crop``, ``observed``, are not needed).
_PROFILE_NEEDED = tuple(c for c in PROFILE_COLUMNS if c not in ("crop", "observed"))


def read_profiles(run_dir: str | os.PathLike[str], notes: list[str] | None = None) -> pd.DataFrame | None:
    """The index profiles per district, crop and date of a run with ``outputs.features``
    (``district_crop_timeseries.parquet``, columns :data:`geoseg.ops.features.PROFILE_COLUMNS` after
    a ``scene`` column), or None.

    None without the file; a file that cannot be read, or lacks a column the report draws from, is
    told in ``notes`` and gives None too.
    """
    path = RunPaths(Path(run_dir)).district_crop_timeseries
    notes = notes if notes is not None else []
    if not path.is_file():
        return None
    fix = "rerun the workflow with outputs.features (``geoseg run WORKFLOW.yaml`` makes a new run)"
    try:
        df = read_table(path)
    except (GeosegError, OSError, ValueError) as e:
        why = (str(e).strip().splitlines() or [""])[0]
        notes.append(f"crop growth profiles left out: {path} cannot be read ({type(e).__name__}: {why}); {fix}")
        return None
    missing = [c for c in _PROFILE_NEEDED if c not in df.columns]
    if missing:
        notes.append(f"crop growth profiles left out: {path} lacks the columns {missing}; {fix}")
        return None
    return df


def decimation(shape: tuple[int, int], max_px: int = MAX_PX) -> tuple[int, tuple[int, int]]:
    """The integer decimation factor and output shape that fit ``shape`` in ``max_px`` on its long side.

    Examples
    --------
    >>> decimation((10980, 10980))
    (8, (1373, 1373))
    >>> decimation((300, 200))
    (1, (300, 200))
    """
    f = max(1, math.ceil(max(shape) / max_px))
    return f, (math.ceil(shape[0] / f), math.ceil(shape[1] / f))


def read_decimated(path: str | os.PathLike[str], bands: list[int] | int = 1, *, max_px: int = MAX_PX
                   ) -> tuple[np.ndarray, Affine, Any, float | None]:
    """Read ``bands`` of a raster decimated to at most ``max_px`` on the long side (nearest neighbour).

    GDAL serves such reads from the file's overviews when it has them (geoseg's COG masks
    do), so a full-resolution band is never held in memory.

    Returns
    -------
    array (bands, h, w), the decimated grid's transform, the CRS and the nodata value.
    """
    idx = [bands] if isinstance(bands, int) else list(bands)
    with open_raster(path) as src:
        _, (h, w) = decimation((src.height, src.width), max_px)
        a = src.read(idx, out_shape=(len(idx), h, w), resampling=Resampling.nearest)
        t = src.transform @ Affine.scale(src.width / w, src.height / h)
        return a, t, src.crs, src.nodata


_NIR = {"nir", "b08", "b8", "b8a", "nir08"}
_RED = {"r", "red", "b04", "b4"}
_GREEN = {"g", "green", "b03", "b3"}


def false_colour_bands(descriptions: list[str | None]) -> list[tuple[str, list[int]]]:
    """Per date, the 1-based (NIR, red, green) band numbers of a stack, from its band descriptions.

    Descriptions are ``"<date> <band>"`` (what ``geoseg synth`` and ``geoseg stack`` write) or
    a bare band name. Without recognisable names, bands 4, 3, 2 (B, G, R, NIR order) or 1, 2, 3
    (an RGB image) stand in.

    Examples
    --------
    >>> false_colour_bands(["2024-06-15 B", "2024-06-15 G", "2024-06-15 R", "2024-06-15 NIR"])
    [('2024-06-15', [4, 3, 2])]
    >>> false_colour_bands([None, None, None])
    [('', [1, 2, 3])]
    """
    dates: dict[str, dict[str, int]] = {}
    for i, d in enumerate(descriptions, start=1):
        if not d:
            continue
        parts = re.split(r"[\s_]+", d.strip())
        band = parts[-1].lower()
        date = " ".join(parts[:-1])
        role = "nir" if band in _NIR else "red" if band in _RED else "green" if band in _GREEN else None
        if role:
            dates.setdefault(date, {}).setdefault(role, i)
    full = [(k, [v["nir"], v["red"], v["green"]]) for k, v in dates.items() if len(v) == 3]
    if full:
        return full
    n = len(descriptions)
    return [("", [4, 3, 2])] if n >= 4 else [("", [1, 2, 3][:n] + [1] * (3 - min(n, 3)))]


def read_fields(path: Path, *, limit: int | None = None, columns: list[str] | None = None
                ) -> tuple["gpd.GeoDataFrame", int, float]:
    """The ``limit`` largest fields (by ``area_ha``) of a fields file, the number of fields and their total area.

    From GeoParquet (a file, or a run's dataset: a folder of parts) only the ``area_ha`` column
    is read in full; geometries are decoded for the kept rows only. The total area is NaN when the file has no ``area_ha``. Fields files of
    geoseg 0.1 are read under today's column names (:func:`geoseg.io.fiboa.compatible_fields`).
    """
    import geopandas as gpd  # deferred, as pyarrow: slow to import, and only drawing a report needs them

    if path.suffix.lower() in (".parquet", ".geoparquet"):  # a file, or a dataset's folder of parts
        import pyarrow.dataset as pads

        data = pads.dataset(str(path), format="parquet")
        total = data.count_rows()
        names = set(data.schema.names)
        area = data.to_table(columns=["area_ha"]).column("area_ha").to_numpy() if "area_ha" in names else None
        total_ha = float(np.nansum(area)) if area is not None else float("nan")
        keep = None
        if limit is not None and total > limit and area is not None:
            keep = np.sort(np.argsort(-area, kind="stable")[:limit])
        cols = None
        if columns is not None:
            old = [o for o, new in OLD_NAMES.items() if new in columns and new not in names and o in names]
            cols = [c for c in columns if c in names] + old + ["geometry"]
        table = data.to_table(columns=cols) if keep is None else data.take(keep, columns=cols)
        gdf = compatible_fields(gpd.GeoDataFrame.from_arrow(table))
        return gdf, total, total_ha
    gdf = compatible_fields(read_vector(path))
    total = len(gdf)
    total_ha = float(gdf["area_ha"].sum()) if "area_ha" in gdf.columns else float("nan")
    if limit is not None and total > limit and "area_ha" in gdf.columns:
        gdf = gdf.iloc[np.sort(np.argsort(-gdf["area_ha"].to_numpy(), kind="stable")[:limit])]
    return gdf, total, total_ha
