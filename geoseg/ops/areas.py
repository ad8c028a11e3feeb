"""Crop areas per district, from a class raster or from field polygons.

Every area is a ground area on the CRS's ellipsoid, whatever the CRS (never a projected
grid's planar area, nor square degrees): pixels' and polygons' from :mod:`geoseg.core.geodesy`,
the exact coverage of pixels cut by a boundary from :mod:`geoseg.core.overlay`.

Raster path (:func:`district_areas_raster`)
-------------------------------------------
The mask is read block by block on a :class:`~geoseg.parallel.Runner`'s threads (memory
bounded by one block per thread) and every pixel is decoded once. Per block, districts are burnt at pixel centres (GDAL), pixels are counted
per (district, class) with one ``bincount``, each pixel weighted by its own ground area
(:meth:`~geoseg.core.geodesy.PixelAreas.block`; one factor for the whole block in an
equal-area CRS), and pixels cut by a district boundary are then
corrected to their **exact fractional coverage**: each boundary's edges are split at the
grid lines and their signed trapezoids summed per cell (the scan-converter of font
renderers), so a pixel half in Ludhiana and half in Sangrur counts half to each, and totals
carry no pixel-grid bias. Pixels that are nodata (collar, cloud) count as the district's
unobserved area. ``method="centre"`` skips the correction (each pixel to the district
containing its centre), which is how :func:`geoseg.synth.synthesize` counts its truth.

Polygon path (:func:`district_areas_fields`)
--------------------------------------------
Fields x districts through an STRtree, in the CRS (where their edges are straight); fields
inside one district keep their own area, the others are intersected, and each piece is
measured on the ground (:func:`~geoseg.core.geodesy.areas_m2`). A fields file
says nothing about what was observed, so
``share``, ``observed_ha`` and ``unobserved_ha`` are NaN there.

Output table: one row per (district, class) with ``district``, ``class_id``, ``crop``,
``area_ha``, ``share`` (of the district's observed area), ``observed_ha``,
``unobserved_ha`` (nodata / cloud inside the raster), ``district_ha`` (the whole district)
and ``coverage`` (fraction of the district inside the raster footprint).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.classes import ClassTable, CropClass, crop_names, load_classes, unknown_classes
from geoseg.core.geodesy import PixelAreas, areas_m2, pixel_areas
from geoseg.core.grid import Window
from geoseg.core.overlay import boundary_coverage, overlap_areas
from geoseg.core.tally import centre_counts
from geoseg.errors import AreaError, DistrictWarning, portable_errors
from geoseg.io.districts import DistrictProblem, Districts, read_districts
from geoseg.io.raster import (
    BlockReader,
    RasterInfo,
    check_outputs,
    check_size,
    raster_info,
    read_mask_classes,
    valid_mask,
    warn_no_nodata,
)
from geoseg.io.fiboa import compatible_fields
from geoseg.io.paths import STDOUT, check_overwrite
from geoseg.io.vector import FORMATS, read_vector, table_format, write_table
from geoseg.parallel import Runner

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "TABLE_COLUMNS",
    "district_areas_raster",
    "district_areas_fields",
    "district_areas",
    "district_areas_file",
    "check_class_raster",
    "zone_class_areas",
]

log = logging.getLogger(__name__)

#: Columns of every district area table, in order.
TABLE_COLUMNS = ("district", "class_id", "crop", "area_ha", "share", "observed_ha", "unobserved_ha",
                 "district_ha", "coverage")
_RASTERIZE_LOCK = threading.Lock()
#: Default block size (pixels) for the raster path.
DEFAULT_AREA_BLOCK = 1024


# --------------------------------------------------------------------------------------
# raster path
@dataclass(frozen=True)
class _AreaJob:
    mask: str
    window: tuple[int, int, int, int]  # row_off, col_off, height, width
    nodata: float | None
    transform: Affine
    geoms: np.ndarray  # districts clipped to the raster, raster CRS
    areas: PixelAreas
    exact: bool
    likely: np.ndarray  # class ids and nodata expected in the mask (uint8 fast path)


@portable_errors
def _area_blocks(jobs: Sequence[_AreaJob]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Count the blocks of ``jobs`` (one mask) with one :class:`~geoseg.io.raster.BlockReader`:
    one job of the :class:`~geoseg.parallel.Runner`."""
    if not jobs:
        return []
    with BlockReader(jobs[0].mask, nodata=jobs[0].nodata) as reader:
        return [_area_block(job, reader) for job in jobs]


def _count_values(values: np.ndarray, likely: np.ndarray, nb: int) -> np.ndarray:
    """Counts of each value 0..nb-1 in a uint8 array: one compare-and-count per likely value
    (several times faster than ``bincount``), falling back to ``bincount`` if others occur."""
    counts = np.zeros(nb, np.int64)
    for v in likely.tolist():  # Python ints: comparing uint8 with an int64 scalar would widen every pixel
        counts[v] = np.count_nonzero(values == v)
    if counts.sum() != values.size:
        return np.bincount(values.ravel(), minlength=nb)
    return counts


def _buckets(arr: np.ndarray, nod: float | None, valid: np.ndarray | None, source: str) -> tuple[np.ndarray, int, int]:
    """``(bucket, nb, nodata_bucket)``: each pixel's bucket 0..nb-1 for the count, and nodata's.

    Fast path for uint8 masks with an integer nodata (every geoseg mask): the pixel value
    itself is the bucket (nodata is just one of 256), so each pixel costs one shift-or and
    one ``bincount`` slot; other masks map values and validity (``valid``: the file's
    internal mask, or None to take it from ``nod``) to buckets first.
    """
    if arr.dtype == np.uint8 and valid is None and (nod is None or (float(nod).is_integer() and 0 <= nod <= 255)):
        return arr, 256, int(nod) if nod is not None else -1
    if valid is None:
        valid = valid_mask(arr, nod)
    if arr.dtype.kind not in "iu":
        raise AreaError(f"{source}: {arr.dtype} pixels; expected integer class ids")
    vmax = 0
    if valid.any():
        vals = arr[valid]
        vmin, vmax = int(vals.min()), int(vals.max())
        if vmin < 0:
            raise AreaError(
                f"{source}: negative class value {vmin}; expected class ids >= 0 (is it the nodata value? "
                f"pass it with --nodata)"
            )
    nodata_bucket = vmax + 1  # buckets 0..vmax for classes, vmax + 1 for nodata
    return np.where(valid, arr, nodata_bucket).astype(np.int32), vmax + 2, nodata_bucket


def _area_block(job: _AreaJob, reader: BlockReader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(district index, class value or -1 for nodata, area m2) summed over one block (see the
    module notes); a block no district reaches is not read."""
    r0, c0, bh, bw = job.window
    bt = job.transform @ Affine.translation(c0, r0)
    box = shapely.box(*_bounds(bt, bh, bw))
    cand = np.flatnonzero(shapely.intersects(job.geoms, box))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(cand) == 0:
        return empty
    block = reader.read(Window(c0, r0, bw, bh))
    bucket, nb, nodata_bucket = _buckets(block.array, block.nodata, block.mask, job.mask)
    if nb * (len(cand) + 1) > 1 << 24:
        raise AreaError(
            f"{job.mask}: class values up to {nb - 2}; expected class ids below {(1 << 24) // (len(cand) + 1)} "
            f"here - renumber the classes 0..K-1"
        )
    # each pixel's ground area (m2), or one for them all (an equal-area CRS): job.areas.mean then
    px_areas = job.areas.block(r0, c0, bh, bw) if job.areas.constant is None else None
    px_area = job.areas.mean
    whole = shapely.covers(job.geoms[cand], box)
    if whole.any():  # the block lies inside one district: no burning, no boundary
        cand = cand[np.argmax(whole)][None]
        local = None
    else:
        shapes = [(g, i + 1) for i, g in enumerate(job.geoms[cand])]
        dtype = "uint8" if len(cand) < 255 and nb == 256 else "int32"
        with _RASTERIZE_LOCK:  # rasterio silences a warning with catch_warnings, which threads race on
            local = rasterize(shapes, out_shape=(bh, bw), transform=bt, fill=0, dtype=dtype, all_touched=False)
    n = (len(cand) + 1) * nb
    if px_areas is not None:
        counts = centre_counts(local, bucket, nb, len(cand) + 1, weights=px_areas)
    elif local is None and nb == 256:
        likely = np.union1d(job.likely, np.unique(bucket.ravel()[:: 97]))
        counts = _count_values(bucket, likely, n) * px_area
    else:
        counts = centre_counts(local, bucket, nb, len(cand) + 1) * px_area
    if local is None:  # everything counted for the one district
        counts = np.concatenate([np.zeros(nb), counts[:nb]])
    elif job.exact:
        rr, cc, pi, frac = boundary_coverage(job.geoms[cand], bt, (bh, bw))
        if len(rr):
            b = bucket[rr, cc].astype(np.int64)
            cell_area = px_areas[rr, cc] if px_areas is not None else np.full(len(rr), px_area)
            counts += np.bincount((pi + 1) * nb + b, weights=frac * cell_area, minlength=n)
            cell = np.unique(rr * bw + cc)
            cr, ccol = np.divmod(cell, bw)
            cell_area = px_areas[cr, ccol] if px_areas is not None else np.full(len(cell), px_area)
            counts -= np.bincount(local[cr, ccol].astype(np.int64) * nb + bucket[cr, ccol],
                                  weights=cell_area, minlength=n)
    nz = np.flatnonzero(counts)
    d, v = np.divmod(nz, nb)
    keep = d > 0
    v = np.where(v == nodata_bucket, -1, v)
    return cand[d[keep] - 1], v[keep], counts[nz][keep]


def district_areas_raster(
    mask_path: str | os.PathLike[str],
    districts: str | os.PathLike[str] | Any,
    name_field: str,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    *,
    method: str = "exact",
    block: int = DEFAULT_AREA_BLOCK,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> "pd.DataFrame":
    """Hectares of each class in each district, from a class raster.

    Parameters
    ----------
    mask_path : path
        Single-band integer class raster: a geoseg mask, or any tool's (give ``nodata``
        and ``classes`` then).
    districts : path or GeoDataFrame
        District boundaries in any CRS and format GDAL reads; reprojected to the raster.
    name_field : str
        The attribute that names a district.
    classes : ClassTable or path, optional
        Class names (default: the mask's embedded table, else ``class_<id>``).
    nodata : number, optional
        Nodata value, overriding the file's.
    method : {"exact", "centre"}
        ``exact``: boundary pixels split by their exact fractional coverage (default);
        ``centre``: each pixel counts whole to the district containing its centre.
    block : int
        Block size in pixels (memory is bounded by one block per thread).
    workers : int, optional
        Threads (default: all cores).
    progress : callable, optional
        ``progress(done, total)`` as runs of blocks finish.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`, one row per (district, class), sorted by district
        and class; every class of the table for every district that overlaps the raster.
        ``df.attrs["problems"]`` lists skipped or repaired districts (as strings).

    Raises
    ------
    AreaError
        Not a single-band integer raster, or no district overlaps it.
    geoseg.errors.DistrictError
        No such name field, no CRS, no usable polygon.

    Warns
    -----
    geoseg.errors.DistrictWarning
        Null, invalid or repeated districts.
    """

    if method not in ("exact", "centre", "center"):
        raise AreaError(f"method is {method!r}; expected 'exact' or 'centre'")
    src = str(mask_path)
    info = check_class_raster(src)
    nod = nodata if nodata is not None else info.nodata
    if nod is None:
        warn_no_nodata(info)
    table = _class_table(classes) if classes is not None else read_mask_classes(src)
    d = read_districts(districts, name_field, crs=info.crs)
    # the districts clipped to the raster; those outside it are left out of the table
    geoms = np.asarray(d.gdf.geometry.values, dtype=object)
    clipped, keep, problems = _clip_to_raster(geoms, d, info)
    # the blocks, counted on a Runner
    jobs = _area_jobs(info, clipped[keep], nodata, nod, table, method == "exact", block)
    di, cv, am = _count_blocks(jobs, workers, progress)
    # a value outside the class table is a mislabelled raster, not a new crop
    if table is not None and (found := unknown_classes(cv, am, table)):
        raise AreaError(
            f"{src}: holds class values {found} inside the districts that are not in the class table "
            f"(ids {', '.join(f'{c.id}={c.name}' for c in table)}; nodata {nod}); pass the class file the "
            f"raster was made with (--classes) or its nodata value (--nodata)"
        )
    # the table
    names = d.names[keep]
    district_m2 = areas_m2(geoms[keep], info.crs)
    inside_m2 = areas_m2(clipped[keep], info.crs)
    df = _assemble(di, cv, am, names, district_m2, inside_m2, table, observed=True)
    df.attrs["problems"] = _report(problems, set(names), d.source)
    df.attrs["source"] = src
    return df


def check_class_raster(src: str) -> RasterInfo:
    """The raster's description, once it is known to be a single-band integer raster of a sane size."""
    info = raster_info(src)
    check_size(info)
    if info.count != 1 or not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise AreaError(
            f"{src}: {info.count} band(s) of {info.dtype}; expected a single-band integer class raster "
            f"(a crop mask), e.g. `rio stack {src} --bidx 1 -o band1.tif` then `rio convert band1.tif mask.tif "
            f"--dtype uint8` (or `gdal_translate -b 1 -ot Byte {src} mask.tif`)"
        )
    return info


def zone_class_areas(info: RasterInfo, zones: np.ndarray, *, nodata: float | None = None,
                     table: ClassTable | None = None, block: int = DEFAULT_AREA_BLOCK, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(zone index, class value or -1 for nodata, m2)`` contributions of the class raster
    ``info`` inside each of ``zones`` (polygons in its CRS, clipped to it), counted as the
    district areas are: pixel centres, then the exact coverage of the pixels an outline cuts,
    each pixel at its ground area. Other zones than districts use it (parcels; a confidence
    raster's values count like classes, 0 as nodata)."""
    nod = nodata if nodata is not None else info.nodata
    return _count_blocks(_area_jobs(info, zones, nodata, nod, table, True, block), workers, progress)


def _class_table(classes: ClassTable | str | os.PathLike[str]) -> ClassTable:
    return classes if isinstance(classes, ClassTable) else load_classes(classes)


def _clip_to_raster(geoms: np.ndarray, d: Districts, info: RasterInfo) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """``(clipped, keep, problems)``: the districts clipped to the raster's footprint, the indices
    of those that overlap it, and the districts' problems with those that do not added.

    Raises
    ------
    AreaError
        No district overlaps the raster (a CRS mix-up, most likely).
    """
    h, w = info.shape
    footprint = shapely.box(*_bounds(info.transform, h, w))
    clipped = shapely.intersection(geoms, footprint)
    overlap = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
    names = d.names
    problems = list(d.problems)
    for i in np.flatnonzero(~overlap):
        problems.append(DistrictProblem(str(names[i]), "no overlap", "outside the raster; not in the table"))
    if not overlap.any():
        b = shapely.total_bounds(geoms)
        raise AreaError(
            f"none of the {len(geoms)} districts in {d.source} overlaps {info.path}: districts span "
            f"{_fmt_bounds(b)}, the raster {_fmt_bounds(footprint.bounds)} (in {info.crs.to_string()}); check "
            f"that both files have the right CRS"
        )
    n_skip = int((~overlap).sum())
    if n_skip:
        log.info("%d of %d districts do not overlap %s and are left out", n_skip, len(geoms), info.path)
    return clipped, np.flatnonzero(overlap), problems


def _area_jobs(info: RasterInfo, geoms: np.ndarray, nodata: float | None, nod: float | None,
               table: ClassTable | None, exact: bool, block: int) -> list[_AreaJob]:
    """One job per ``block x block`` block of the raster, row by row; ``nodata`` is the caller's
    override, ``nod`` the value in force."""
    h, w = info.shape
    areas = pixel_areas(info.transform, info.crs, (h, w))
    expected = {c.id for c in table if 0 <= c.id < 256} if table is not None else set()
    if nod is not None and float(nod).is_integer() and 0 <= nod < 256:
        expected.add(int(nod))
    likely = np.array(sorted(expected), dtype=np.int64)
    return [
        _AreaJob(info.path, (r, c, min(block, h - r), min(block, w - c)), None if nodata is None else float(nodata),
                 info.transform, geoms, areas, exact, likely)
        for r in range(0, h, block)
        for c in range(0, w, block)
    ]


def _count_blocks(jobs: Sequence[_AreaJob], workers: int | None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(district index, class value or -1 for nodata, m2) of every block, counted on a Runner.

    The blocks are dealt round-robin into four runs per thread, so that each thread opens
    the mask once per run and the threads stay evenly loaded. The contributions are
    concatenated run after run, so the order of the sums, and with it their last bits,
    follows the number of threads (as it always has), not which thread finished first.
    """
    nw = min(workers or os.cpu_count() or 1, len(jobs))
    runs = [jobs[k :: nw * 4] for k in range(nw * 4)] if nw > 1 else [jobs]
    results = [r for run in Runner(max(nw, 1)).map(_area_blocks, runs, progress) for r in run]
    di = np.concatenate([r[0] for r in results])
    cv = np.concatenate([r[1] for r in results])
    am = np.concatenate([r[2] for r in results])
    return di, cv, am


def _report(problems: Sequence[Any], in_table: set[str], source: str) -> list[str]:
    """Problems worth listing for this table; warn about repeated names that reached it."""
    out = [p for p in problems if p.problem != "repeated name" or p.district in in_table]
    repeated = [p for p in out if p.problem == "repeated name"]
    if repeated:
        warnings.warn(f"{source}: " + "; ".join(str(p) for p in repeated), DistrictWarning, stacklevel=3)
    return [str(p) for p in out]


def _bounds(t: Affine, h: int, w: int) -> tuple[float, float, float, float]:
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    return (min(xs), min(ys), max(xs), max(ys))


def _fmt_bounds(b: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _assemble(d: np.ndarray, v: np.ndarray, m2: np.ndarray, names: np.ndarray, district_m2: np.ndarray,
              inside_m2: np.ndarray, table: ClassTable | None, observed: bool) -> "pd.DataFrame":
    """The output table from (district index, class value or -1 for nodata, m2) contributions.

    Districts sharing a name are summed under it. Every district gets a row for every
    class of ``table`` (and every other value found), zeros included.
    """
    import pandas as pd

    uniq, of_feature = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    nn = len(uniq)
    seen = np.unique(v[v >= 0]) if len(v) else np.zeros(0, np.int64)
    ids = np.array([c.id for c in table], np.int64) if table is not None else np.zeros(0, np.int64)
    vals = np.union1d(seen.astype(np.int64), ids)
    k = len(vals)
    di = of_feature[d] if len(d) else np.zeros(0, np.int64)
    cls = v >= 0
    area = np.bincount(di[cls] * k + np.searchsorted(vals, v[cls]), weights=m2[cls], minlength=nn * k)
    unobs = np.bincount(di[~cls], weights=m2[~cls], minlength=nn)
    dist = np.bincount(of_feature, weights=district_m2, minlength=nn)
    inside = np.bincount(of_feature, weights=inside_m2, minlength=nn)
    obs = area.reshape(nn, k).sum(axis=1)
    rep = lambda a: np.repeat(a, k)  # noqa: E731 - per-district figure on each class row
    out = pd.DataFrame(
        {
            "district": rep(uniq).astype(object),
            "class_id": np.tile(vals, nn),
            "crop": np.tile(crop_names(vals, table), nn).astype(object),
            "area_ha": area / 1e4,
        }
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        if observed:
            out["share"] = np.where(rep(obs) > 0, area / rep(np.where(obs > 0, obs, 1.0)), np.nan)
            out["observed_ha"] = rep(obs) / 1e4
            out["unobserved_ha"] = rep(unobs) / 1e4
        else:
            out["share"] = np.nan
            out["observed_ha"] = np.nan
            out["unobserved_ha"] = np.nan
        out["district_ha"] = rep(dist) / 1e4
        out["coverage"] = rep(np.where(dist > 0, np.minimum(inside / np.where(dist > 0, dist, 1.0), 1.0), np.nan))
    return out


# --------------------------------------------------------------------------------------
# polygon path
def district_areas_fields(
    fields: str | os.PathLike[str] | "gpd.GeoDataFrame",
    districts: str | os.PathLike[str] | Any,
    name_field: str,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    *,
    class_field: str = "class_id",
) -> "pd.DataFrame":
    """Hectares of each class in each district, from field polygons.

    Parameters
    ----------
    fields : path or GeoDataFrame
        Field polygons with a ``class_id`` column (or a ``crop:name`` column - ``crop`` in
        older files - and ``classes``).
    districts, name_field
        As for :func:`district_areas_raster`; districts are reprojected to the fields.
    classes : ClassTable or path, optional
        Class names (default: the ``crop:name`` column's names, else ``class_<id>``).
    class_field : str
        The column with class ids.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`; ``share``, ``observed_ha`` and ``unobserved_ha`` are
        NaN (polygons do not say what was observed); ``coverage`` is the fraction of the
        district inside the fields' bounding box.
    """
    f, fsrc = _read_fields(fields)
    table, cid = _field_classes(f, _class_table(classes) if classes is not None else None, class_field, fsrc)
    d = read_districts(districts, name_field, crs=f.crs)
    geoms = np.asarray(f.geometry.values, dtype=object)
    dg = np.asarray(d.gdf.geometry.values, dtype=object)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms, cid = geoms[ok], np.asarray(cid)[ok].astype(np.int64)
    # each field's overlap with each district (cut in the CRS, where their edges are straight),
    # measured on the ground
    crs = f.crs
    fi, di, area = overlap_areas(geoms, dg, lambda g: areas_m2(g, crs))
    sel = area > 0
    # the districts no field reaches are left out of the table
    keep, problems = _reached(di[sel], d, f, fsrc)
    remap = np.full(len(dg), -1)
    remap[keep] = np.arange(len(keep))
    # the table; a district's coverage is its share inside the fields' bounding box
    names = d.names[keep]
    district_m2 = areas_m2(dg[keep], crs)
    ext = shapely.box(*shapely.total_bounds(np.asarray(f.geometry.values)))
    inside_m2 = areas_m2(shapely.intersection(dg[keep], ext), crs)
    df = _assemble(remap[di[sel]], cid[fi[sel]], area[sel], names, district_m2, inside_m2, table,
                   observed=False)
    df.attrs["problems"] = _report(problems, set(names), d.source)
    df.attrs["source"] = fsrc
    return df


def _read_fields(fields: str | os.PathLike[str] | "gpd.GeoDataFrame") -> tuple["gpd.GeoDataFrame", str]:
    """The fields and a name for them in messages; they must have a CRS."""
    import geopandas as gpd  # deferred: slow to import

    if isinstance(fields, gpd.GeoDataFrame):
        f, fsrc = fields, "<fields>"
    else:
        fsrc = str(fields)
        f = read_vector(fsrc)
    f = compatible_fields(f)  # geoseg 0.1's 'crop' is 'crop:name'
    if f.crs is None:
        raise AreaError(f"{fsrc}: the fields have no CRS; set one, e.g. `ogr2ogr -a_srs EPSG:32643 out.gpkg {fsrc}` "
                        f"(without GDAL's tools: `python -c \"import geopandas as g; g.read_file('{fsrc}')"
                        f".set_crs('EPSG:32643').to_file('fixed.gpkg')\"`)")
    return f, fsrc


def _field_classes(f: "gpd.GeoDataFrame", table: ClassTable | None, class_field: str,
                   fsrc: str) -> tuple[ClassTable | None, np.ndarray]:
    """``(table, class ids)`` of the fields: from ``class_field`` (the table then defaults to the
    ``crop:name`` column's names when they number the classes 0..K-1), else from ``crop:name``
    names looked up in ``table``."""
    if class_field in f.columns:
        cid = f[class_field].to_numpy()
        if table is None and "crop:name" in f.columns:
            pairs = sorted({(int(a), str(b)) for a, b in zip(cid, f["crop:name"])})
            ids = [p[0] for p in pairs]
            if len(set(ids)) == len(ids) and ids == list(range(len(ids))):
                table = ClassTable(tuple(CropClass(i, n, "#808080") for i, n in pairs), fsrc)
        return table, cid
    if "crop:name" in f.columns and table is not None:
        lookup = {c.name: c.id for c in table}
        unknown = sorted(set(f["crop:name"]) - set(lookup))
        if unknown:
            raise AreaError(f"{fsrc}: crops {unknown} are not in the class table {table.names}")
        return table, f["crop:name"].map(lookup).to_numpy()
    raise AreaError(
        f"{fsrc}: has no {class_field!r} column (nor 'crop:name' or 'crop' with a class file); the columns are "
        f"{[c for c in f.columns if c != f.geometry.name]}"
    )


def _reached(hit: np.ndarray, d: Districts, f: "gpd.GeoDataFrame", fsrc: str) -> tuple[np.ndarray, list[Any]]:
    """``(keep, problems)``: the indices of the districts in ``hit`` (a field overlaps them), and
    the districts' problems with the others added.

    Raises
    ------
    AreaError
        No field overlaps any district (a CRS mix-up, most likely).
    """
    dg = np.asarray(d.gdf.geometry.values, dtype=object)
    touched = np.zeros(len(dg), bool)
    touched[hit] = True
    problems = list(d.problems)
    names = d.names
    for i in np.flatnonzero(~touched):
        problems.append(DistrictProblem(str(names[i]), "no overlap", "no field in it; not in the table"))
    if not touched.any():
        raise AreaError(
            f"no field in {fsrc} overlaps any of the {len(dg)} districts in {d.source}: fields span "
            f"{_fmt_bounds(shapely.total_bounds(np.asarray(f.geometry.values)))}, districts "
            f"{_fmt_bounds(shapely.total_bounds(dg))} (in {f.crs.to_string()}); check the CRS of both files"
        )
    return np.flatnonzero(touched), problems


def district_areas(
    source: str | os.PathLike[str],
    districts: str | os.PathLike[str],
    name_field: str,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    *,
    method: str = "exact",
    progress: Callable[[int, int], None] | None = None,
) -> "pd.DataFrame":
    """District areas from a class raster or a fields file, whichever ``source`` is.

    A file GDAL opens as a raster takes :func:`district_areas_raster`; vector files
    (GeoPackage, Shapefile, GeoParquet, ...) take :func:`district_areas_fields`.
    """

    p = str(source)
    vector_exts = tuple(e for _, exts in FORMATS.values() for e in exts)
    if p.lower().endswith(vector_exts):
        if nodata is not None:
            raise AreaError(f"{p}: --nodata applies to a class raster, not to a fields file; leave it out")
        return district_areas_fields(p, districts, name_field, classes)
    return district_areas_raster(p, districts, name_field, classes, nodata, method=method, progress=progress)


def district_areas_file(
    source: str | os.PathLike[str],
    districts: str | os.PathLike[str],
    name_field: str,
    out: str | os.PathLike[str],
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    *,
    method: str = "exact",
    fmt: str | None = None,
    overwrite: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> "pd.DataFrame":
    """:func:`district_areas`, then write the table to ``out`` (``.csv``, ``.parquet`` or ``.json``).

    ``fmt`` (``csv``, ``parquet``, ``json``) overrides the extension; ``out`` ``"-"`` is standard
    output (CSV, or JSON). ``source`` and ``districts`` may be URLs or GDAL virtual paths
    (:func:`geoseg.io.paths.dataset_path`). With ``overwrite=False`` an existing ``out`` is refused.
    The format and the output are checked before any work; returns the table (with ``attrs["problems"]``).
    """
    table_format(out, fmt)
    if os.fspath(out) != STDOUT:
        check_outputs({"the area table": out}, {"the source": source, "the district file": districts,
                                                "the class file": classes if isinstance(classes, (str, os.PathLike)) else None})
    check_overwrite(out, overwrite, "the area table")
    df = district_areas(source, districts, name_field, classes, nodata, method=method, progress=progress)
    write_table(df, out, fmt)
    return df
