"""Growth features: vegetation-index time series per field and per district x crop, and phenology.

What yield models consume (``geoseg zonal``; :func:`field_timeseries`,
:func:`district_crop_timeseries`): for each field polygon and each date of a season stack, the
index statistics of its pixels (:func:`geoseg.core.zonal.zone_stats`: weighted mean, median,
std, p10, p90, observed share) with **exact fractional coverage** of the pixels its outline
cuts (:mod:`geoseg.ops.coverage`, the district areas' rule) and each pixel at its ground area;
cloud-masked pixels (a date whose bands are nodata there) left out and counted in ``observed``.
From each field's mean series, its phenology (:func:`geoseg.core.zonal.phenology`: peak and its
date, start and end of season, length, integral). Per district and crop, the area-weighted mean
and std of the index over the pixels the mask maps as that crop, per date.

The stack
---------
A date-major stack whose band names carry their dates (``2024-06-15 B04``, a composite's
``jun-jul_B04``; :mod:`geoseg.core.dates`). Reflectance is the file's numbers times its scale
plus offset (GDAL metadata), else divided by its ``GEOSEG_SCALE`` tag (``geoseg synth``), else,
for integer bands, by 10,000 (Sentinel-2's convention, said in the result's notes). An index a
stack holds as a band of its own (a date's band named ``NDVI``) is read as it is.

How it runs
-----------
Fields are dealt to blocks by their top-left corner; each block's job reads one window (the
union of its fields' bounding boxes: a field is never cut, so every statistic is exact, the
quantiles included) with the bands its indices need, on a :class:`~geoseg.parallel.Runner`.
Memory is bounded by one window per thread. The district profiles read the mask and the stack
block by block and add up weighted sums, so any area fits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from geoseg.core.dates import DateLayout, date_layout
from geoseg.core.geodesy import PixelAreas, pixel_areas
from geoseg.core.grid import Window
from geoseg.core.zonal import STATS, IndexSpec, band_index, index_values, parse_index, phenology, zone_stats
from geoseg.errors import DateLayoutError, FeatureError, GeosegError, portable_errors
from geoseg.io.districts import read_districts
from geoseg.io.objects import readable_copy, written_to
from geoseg.io.raster import check_same_grid, open_raster, raster_info, read_mask_classes, read_periods, rio_window
from geoseg.io.vector import read_vector, write_table, write_vector
from geoseg.ops.coverage import grid_bounds, zone_pieces
from geoseg.parallel import Runner

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "DEFAULT_INDICES",
    "PROFILE_COLUMNS",
    "TIMESERIES_COLUMNS",
    "PartFeatures",
    "SceneFootprint",
    "StackBands",
    "district_crop_timeseries",
    "field_timeseries",
    "part_features",
    "read_stack_bands",
    "zonal_file",
]

#: Indices computed when none are asked for.
DEFAULT_INDICES = ("ndvi", "evi", "ndwi")
#: Columns of the long per-field table.
TIMESERIES_COLUMNS = ("field_id", "date", "index", *STATS)
#: Columns of the per district x crop table.
PROFILE_COLUMNS = ("district", "class_id", "crop", "date", "index", "mean", "std", "observed_ha", "area_ha",
                   "observed")
_BLOCK = 512


@dataclass(frozen=True)
class StackBands:
    """What the jobs need to know of a season stack: its dates, where each index's bands are, and
    how its numbers become reflectance."""

    path: str
    layout: DateLayout
    specs: tuple[IndexSpec, ...]
    #: per spec: the position within a date of each band it reads (a raw band: one position)
    positions: tuple[tuple[int, ...], ...]
    raw: tuple[bool, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    nodata: float | None
    transform: Affine
    shape: tuple[int, int]
    crs: Any
    notes: tuple[str, ...] = ()

    @property
    def used(self) -> list[int]:
        """The positions within a date that any index reads."""
        return sorted({p for ps in self.positions for p in ps})

    def dates(self) -> list[date]:
        return list(self.layout.dates)


def read_stack_bands(stack: str | os.PathLike[str], indices: Sequence[str | IndexSpec]) -> StackBands:
    """Check a season stack for the asked indices.

    Raises
    ------
    FeatureError
        Band names without dates; an index whose bands the stack lacks (naming those it has).
    """
    src = str(stack)
    info = raster_info(src)
    try:
        layout = date_layout(list(info.descriptions), read_periods(src), source=src)
    except DateLayoutError as e:
        raise FeatureError(str(e)) from None
    specs, positions, raw = [], [], []
    for ix in indices:
        try:
            spec = ix if isinstance(ix, IndexSpec) else parse_index(ix)
        except ValueError as e:
            raise FeatureError(f"{src}: {e}") from None
        own = band_index(spec.name, layout.bands)
        if own is not None and layout.bands[own].lower() == spec.name.lower():
            specs.append(spec)
            positions.append((own,))
            raw.append(True)
            continue
        pos = [band_index(b, layout.bands) for b in spec.bands]
        if None in pos:
            missing = [b for b, p in zip(spec.bands, pos, strict=True) if p is None]
            raise FeatureError(
                f"{src}: index {spec.name} needs band(s) {missing}, and each date holds {list(layout.bands)}; "
                f"ask for indices of the bands it has (e.g. nd(B08,B04)), or stack the missing bands"
            )
        specs.append(spec)
        positions.append(tuple(int(p) for p in pos if p is not None))
        raw.append(False)
    with open_raster(src) as ds:
        scales, offsets, tags, dtype = list(ds.scales), list(ds.offsets), ds.tags(), ds.dtypes[0]
    notes = []
    if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
        scale, offset = tuple(float(s) for s in scales), tuple(float(o) for o in offsets)
    elif tags.get("GEOSEG_SCALE"):
        scale, offset = (1.0 / float(tags["GEOSEG_SCALE"]),) * info.count, (0.0,) * info.count
    elif np.issubdtype(np.dtype(dtype), np.integer) and not all(raw):
        scale, offset = (1e-4,) * info.count, (0.0,) * info.count
        notes.append(f"{src}: integer bands without a scale: read as reflectance x 10000")
    else:
        scale, offset = (1.0,) * info.count, (0.0,) * info.count
    return StackBands(src, layout, tuple(specs), tuple(positions), tuple(raw), scale, offset, info.nodata,
                      info.transform, (int(info.shape[0]), int(info.shape[1])), info.crs, tuple(notes))


def _read_values(ds: Any, sb: StackBands, window: Window) -> np.ndarray:
    """(dates x indices, h, w) index values of a window (NaN where not observed)."""
    c, n_t, used = sb.layout.n_bands, sb.layout.n_dates, sb.used
    bands = [t * c + p for t in range(n_t) for p in used]
    a = ds.read([b + 1 for b in bands], window=rio_window(window), masked=True)
    refl = np.ma.getdata(a).astype(np.float64)
    refl *= np.asarray([sb.scale[b] for b in bands])[:, None, None]
    refl += np.asarray([sb.offset[b] for b in bands])[:, None, None]
    refl[np.ma.getmaskarray(a) | ~np.isfinite(refl)] = np.nan
    refl = refl.reshape(n_t, len(used), window.height, window.width)
    slot = {p: i for i, p in enumerate(used)}
    out = np.empty((n_t * len(sb.specs), window.height, window.width))
    for t in range(n_t):
        # a date counts where every band it holds that an index reads has data
        unseen = np.isnan(refl[t]).any(axis=0)
        for i, (spec, pos, raw) in enumerate(zip(sb.specs, sb.positions, sb.raw, strict=True)):
            if raw:
                v = refl[t, slot[pos[0]]].copy()
            else:
                v = index_values(spec, {b: refl[t, slot[p]] for b, p in zip(spec.bands, pos, strict=True)})
            v[unseen] = np.nan
            out[t * len(sb.specs) + i] = v
    return out


# --------------------------------------------------------------------------------------
# per field
@dataclass(frozen=True)
class _FieldJob:
    sb: StackBands
    window: tuple[int, int, int, int]  # row_off, col_off, height, width
    geoms: np.ndarray
    rows: np.ndarray  # the fields' positions in the input
    areas: PixelAreas


@portable_errors
def _field_block(job: _FieldJob) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    r0, c0, h, w = job.window
    bt = job.sb.transform @ Affine.translation(c0, r0)
    zone, flat, frac, _ = zone_pieces(job.geoms, bt, (h, w))
    px = job.areas.block(r0, c0, h, w) if job.areas.constant is None else np.full((h, w), job.areas.mean)
    with open_raster(job.sb.path) as ds:
        values = _read_values(ds, job.sb, Window(c0, r0, w, h))
    v = values.reshape(values.shape[0], -1)[:, flat].T  # pieces x (dates x indices)
    stats = zone_stats(zone, v, frac * px.ravel()[flat], len(job.geoms))
    return job.rows, stats


def _field_jobs(sb: StackBands, geoms: np.ndarray, block: int) -> list[_FieldJob]:
    inv = ~sb.transform
    h, w = sb.shape
    b = shapely.bounds(geoms)
    cols_a, rows_a = inv @ (b[:, 0], b[:, 3])
    cols_b, rows_b = inv @ (b[:, 2], b[:, 1])
    c0 = np.clip(np.floor(np.minimum(cols_a, cols_b)), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(np.maximum(cols_a, cols_b)), 0, w).astype(np.int64)
    r0 = np.clip(np.floor(np.minimum(rows_a, rows_b)), 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(np.maximum(rows_a, rows_b)), 0, h).astype(np.int64)
    inside = (c1 > c0) & (r1 > r0)
    key = (r0 // block) * ((w + block - 1) // block) + (c0 // block)
    areas = pixel_areas(sb.transform, sb.crs, sb.shape)
    jobs = []
    for k in np.unique(key[inside]):
        sel = np.flatnonzero(inside & (key == k))
        wr0, wc0 = int(r0[sel].min()), int(c0[sel].min())
        wr1, wc1 = int(r1[sel].max()), int(c1[sel].max())
        jobs.append(_FieldJob(sb, (wr0, wc0, wr1 - wr0, wc1 - wc0), geoms[sel], sel, areas))
    return jobs


def _day_dates(sb: StackBands, days: np.ndarray) -> list[str | None]:
    origin = date(sb.layout.dates[0].year, 1, 1)
    return [None if not np.isfinite(d) else (origin + timedelta(days=round(float(d)))).isoformat() for d in days]


def field_timeseries(
    stack: str | os.PathLike[str],
    fields: str | os.PathLike[str] | Any,
    *,
    indices: Sequence[str] = DEFAULT_INDICES,
    id_field: str | None = "field_id",
    fraction: float = 0.5,
    block: int = _BLOCK,
    workers: int | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Index statistics per field and date, and each field's phenology (see the module notes).

    Returns ``(timeseries, phenology, notes)``: the long table (:data:`TIMESERIES_COLUMNS`,
    fields x dates x indices) and one row per field (``field_id`` and, per index,
    ``<index>_peak``, ``_peak_date``, ``_sos_date``, ``_eos_date``, ``_season_days``,
    ``_integral``), both in the fields' order.

    Raises
    ------
    FeatureError
        See :func:`read_stack_bands`; fields without a CRS or outside the stack.
    """
    import geopandas as gpd
    import pandas as pd

    sb = read_stack_bands(stack, indices)
    gdf = fields if isinstance(fields, gpd.GeoDataFrame) else read_vector(fields)
    fsrc = "the fields" if isinstance(fields, gpd.GeoDataFrame) else str(fields)
    if gdf.crs is None:
        raise FeatureError(f"{fsrc}: has no CRS; expected field polygons with one (e.g. EPSG:32643)")
    if gdf.crs != sb.crs:
        gdf = gdf.to_crs(sb.crs)
    ids = gdf[id_field].to_numpy() if id_field and id_field in gdf.columns else np.arange(1, len(gdf) + 1)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    ok = ~shapely.is_empty(geoms) & ~shapely.is_missing(geoms)
    footprint = shapely.box(*grid_bounds(sb.transform, *sb.shape))
    if ok.any() and not shapely.intersects(geoms[ok], footprint).any():
        raise FeatureError(f"{fsrc}: no field overlaps {sb.path}; check that both have the right CRS")
    n, t, k = len(gdf), sb.layout.n_dates, len(sb.specs)
    stats = {s: np.full((n, t * k), math.nan) for s in STATS}
    jobs = _field_jobs(sb, np.where(ok, geoms, None), block)
    runner = Runner(min(workers or os.cpu_count() or 1, max(len(jobs), 1)), client=client)
    for rows, st in runner.map(_field_block, jobs, progress):
        for s in STATS:
            stats[s][rows] = st[s]
    dates = [d.isoformat() for d in sb.layout.dates]
    names = [s.name for s in sb.specs]
    long = pd.DataFrame({
        "field_id": np.repeat(ids, t * k),
        "date": np.tile(np.repeat(dates, k), n),
        "index": np.tile(names, n * t),
        **{s: stats[s].ravel() for s in STATS},
    })
    days = sb.layout.days()
    wide: dict[str, Any] = {"field_id": ids}
    for i, name in enumerate(names):
        ph = phenology(days, stats["mean"][:, i::k], fraction)
        wide[f"{name}_peak"] = ph["peak"]
        wide[f"{name}_peak_date"] = _day_dates(sb, ph["peak_day"])
        wide[f"{name}_sos_date"] = _day_dates(sb, ph["sos_day"])
        wide[f"{name}_eos_date"] = _day_dates(sb, ph["eos_day"])
        wide[f"{name}_season_days"] = ph["season_days"]
        wide[f"{name}_integral"] = ph["integral"]
    return long, pd.DataFrame(wide), list(sb.notes)


# --------------------------------------------------------------------------------------
# one part of a fields dataset, as a task
@dataclass(frozen=True)
class SceneFootprint:
    """A scene a field's features may come from: its stack and grid (a field belongs to the first
    scene, in the listed order, whose grid holds its representative point)."""

    path: str
    shape: tuple[int, int]
    transform: Affine
    crs: Any


@dataclass(frozen=True)
class PartFeatures:
    """:func:`part_features`' job: one part of a fields dataset, where its series go, the indices,
    and the id of its first field when the fields carry no ``field_id`` (1-based, over all parts)."""

    part: str
    series_out: str
    scenes: tuple[SceneFootprint, ...]
    indices: tuple[str, ...]
    first_id: int = 1

    def __dask_tokenize__(self) -> Any:
        return ("geoseg-part-features", self.part, self.series_out, self.indices, self.first_id,
                tuple((s.path, s.shape, tuple(s.transform)) for s in self.scenes))


@portable_errors
def part_features(job: PartFeatures) -> dict[str, Any]:
    """Growth features of one part of a fields dataset, written where it runs: the series of its
    fields (``job.series_out``) and the part rewritten with their phenology columns. Each field's
    statistics come from the first scene whose grid holds its representative point. Returns
    ``{"written": bool, "outside": fields in no scene, "notes": [...]}``."""
    import geopandas as gpd
    import pandas as pd

    with readable_copy(job.part) as part:  # a worker without the client's disk reads it from object storage
        gdf = gpd.read_parquet(part)
    has_id = "field_id" in gdf.columns
    pts = gdf.geometry.representative_point()
    done = np.zeros(len(gdf), bool)
    longs, wides, notes = [], [], []
    for sc in job.scenes:
        h, w = sc.shape
        xs, ys = pts.x.to_numpy(), pts.y.to_numpy()
        if gdf.crs is not None and gdf.crs != sc.crs:
            tp = pts.to_crs(sc.crs)
            xs, ys = tp.x.to_numpy(), tp.y.to_numpy()
        col, row = ~sc.transform @ (xs, ys)
        take = ~done & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        if not take.any():
            continue
        sub = gdf[take]
        long, wide, n = field_timeseries(sc.path, sub, indices=job.indices, id_field="field_id" if has_id else None,
                                         workers=1)
        if not has_id:  # the run's own order: 1..N over all fields
            ids = job.first_id + np.flatnonzero(take)
            long["field_id"] = np.repeat(ids, len(long) // max(len(ids), 1))
            wide["field_id"] = ids
        wide.index = sub.index
        longs.append(long)
        wides.append(wide)
        notes += n
        done |= take
    outside = int((~done).sum())
    if not longs:
        return {"written": False, "outside": outside, "notes": notes}
    with written_to(job.series_out) as out:
        write_table(pd.concat(longs, ignore_index=True), out)
    with written_to(job.part) as out:
        write_vector(gdf.join(pd.concat(wides).drop(columns=["field_id"])), out)
    return {"written": True, "outside": outside, "notes": notes}


# --------------------------------------------------------------------------------------
# per district and crop
@dataclass(frozen=True)
class _ProfileJob:
    sb: StackBands
    mask: str
    window: tuple[int, int, int, int]
    zones: np.ndarray
    areas: PixelAreas
    nodata: float | None = None
    sums: tuple[str, ...] = field(default=("w", "wv", "wv2"))


@portable_errors
def _profile_block(job: _ProfileJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(keys (zone x 256 + class), area m2, observed m2, sum w v, sum w v^2)`` of one block;
    the last three are (keys x dates x indices)."""
    r0, c0, h, w = job.window
    bt = job.sb.transform @ Affine.translation(c0, r0)
    zone, flat, frac, _ = zone_pieces(job.zones, bt, (h, w))
    m = len(job.sb.specs) * job.sb.layout.n_dates
    if len(zone) == 0:
        return (np.zeros(0, np.int64), np.zeros(0), np.zeros((0, m)), np.zeros((0, m)), np.zeros((0, m)))
    with open_raster(job.mask) as ds:
        a = ds.read(1, window=((r0, r0 + h), (c0, c0 + w)), masked=True)
    cls = np.ma.filled(a, 255).astype(np.int64).ravel()[flat]
    if job.nodata is not None:
        cls = np.where(cls == int(job.nodata), 255, cls)
    keep = cls != 255
    zone, flat, frac, cls = zone[keep], flat[keep], frac[keep], cls[keep]
    px = job.areas.block(r0, c0, h, w) if job.areas.constant is None else np.full((h, w), job.areas.mean)
    wgt = frac * px.ravel()[flat]
    key = zone * 256 + cls
    uk, inv = np.unique(key, return_inverse=True)
    area = np.bincount(inv, weights=wgt, minlength=len(uk))
    with open_raster(job.sb.path) as ds:
        values = _read_values(ds, job.sb, Window(c0, r0, w, h))
    v = values.reshape(m, -1)[:, flat].T
    obs, s1, s2 = (np.zeros((len(uk), m)) for _ in range(3))
    for j in range(m):
        ok = ~np.isnan(v[:, j])
        ww, vv, ii = wgt[ok], v[ok, j], inv[ok]
        obs[:, j] = np.bincount(ii, weights=ww, minlength=len(uk))
        s1[:, j] = np.bincount(ii, weights=ww * vv, minlength=len(uk))
        s2[:, j] = np.bincount(ii, weights=ww * vv * vv, minlength=len(uk))
    return uk, area, obs, s1, s2


def district_crop_timeseries(
    stack: str | os.PathLike[str],
    mask: str | os.PathLike[str],
    districts: str | os.PathLike[str] | Any,
    name_field: str,
    *,
    indices: Sequence[str] = DEFAULT_INDICES,
    classes: Any = None,
    block: int = _BLOCK,
    workers: int | None = None,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Per district, crop (the mask's class), date and index: the area-weighted mean and std of
    the index over the pixels mapped as that crop, their observed and total hectares
    (:data:`PROFILE_COLUMNS`). The stack must be on the mask's grid.

    Raises
    ------
    FeatureError
        The stack is not on the mask's grid; see :func:`read_stack_bands`.
    """
    import pandas as pd

    sb = read_stack_bands(stack, indices)
    minfo = raster_info(mask)
    try:
        check_same_grid(minfo, raster_info(sb.path))
    except GeosegError as e:
        raise FeatureError(f"{sb.path}: the stack is not on the mask's grid ({e}); the district profiles read "
                           f"both pixel by pixel - give the stack the mask was predicted from") from None
    table = classes if classes is not None else read_mask_classes(mask)
    d = read_districts(districts, name_field, crs=minfo.crs, warn=False)
    footprint = shapely.box(*grid_bounds(minfo.transform, *minfo.shape))
    zones = shapely.intersection(np.asarray(d.gdf.geometry.values, dtype=object), footprint)
    names = [str(n) for n in d.names]
    h, w = sb.shape
    areas = pixel_areas(sb.transform, sb.crs, sb.shape)
    jobs = [_ProfileJob(sb, str(mask), (r, c, min(block, h - r), min(block, w - c)), zones, areas, minfo.nodata)
            for r in range(0, h, block) for c in range(0, w, block)]
    m = sb.layout.n_dates * len(sb.specs)
    acc: dict[int, list[np.ndarray]] = {}
    runner = Runner(min(workers or os.cpu_count() or 1, len(jobs)), client=client)
    for uk, area, obs, s1, s2 in runner.map(_profile_block, jobs, progress):
        for i, key in enumerate(uk.tolist()):
            cur = acc.setdefault(key, [0.0, np.zeros(m), np.zeros(m), np.zeros(m)])
            cur[0] += area[i]
            cur[1] += obs[i]
            cur[2] += s1[i]
            cur[3] += s2[i]
    dates = [dd.isoformat() for dd in sb.layout.dates]
    specs = [s.name for s in sb.specs]
    rows = []
    for key in sorted(acc, key=lambda k: (names[k // 256], k % 256)):
        area, obs, s1, s2 = acc[key]
        zi, cid = divmod(key, 256)
        crop = table[cid].name if table is not None and cid < len(table) else f"class_{cid}"
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(obs > 0, s1 / np.where(obs > 0, obs, 1), math.nan)
            std = np.sqrt(np.maximum(np.where(obs > 0, s2 / np.where(obs > 0, obs, 1), math.nan) - mean**2, 0.0))
        for t, dt in enumerate(dates):
            for i, ix in enumerate(specs):
                j = t * len(specs) + i
                rows.append((names[zi], cid, crop, dt, ix, mean[j], std[j], obs[j] / 1e4, area / 1e4,
                             obs[j] / area if area > 0 else math.nan))
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def zonal_file(
    stack: str | os.PathLike[str],
    fields: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    indices: Sequence[str] = DEFAULT_INDICES,
    id_field: str | None = "field_id",
    mask: str | os.PathLike[str] | None = None,
    districts: str | os.PathLike[str] | None = None,
    name_field: str = "district",
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """``geoseg zonal``: write ``field_timeseries.parquet``, ``field_phenology.parquet`` (and, with a
    mask and districts, ``district_crop_timeseries.parquet``) into ``out_dir``; return what was
    written (paths, rows, notes)."""
    out = Path(out_dir)
    targets = {"field_timeseries": out / "field_timeseries.parquet",
               "field_phenology": out / "field_phenology.parquet"}
    if mask is not None and districts is not None:
        targets["district_crop_timeseries"] = out / "district_crop_timeseries.parquet"
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise FeatureError(f"{existing[0]}: exists already; pass --overwrite to replace it")
    long, wide, notes = field_timeseries(stack, fields, indices=indices, id_field=id_field, workers=workers,
                                         progress=progress)
    result: dict[str, Any] = {"notes": notes}
    write_table(long, targets["field_timeseries"])
    write_table(wide, targets["field_phenology"])
    result["field_timeseries"] = {"path": str(targets["field_timeseries"]), "rows": len(long)}
    result["field_phenology"] = {"path": str(targets["field_phenology"]), "rows": len(wide)}
    if "district_crop_timeseries" in targets:
        prof = district_crop_timeseries(stack, mask, districts, name_field, indices=indices, workers=workers)
        write_table(prof, targets["district_crop_timeseries"])
        result["district_crop_timeseries"] = {"path": str(targets["district_crop_timeseries"]), "rows": len(prof)}
    return result
