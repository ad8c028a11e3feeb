"""Crop areas per district, from a class raster or from field polygons.

Ground areas
------------
* **Projected CRS**: areas from the geometry (pixel size x pixel size, or polygon area), in
  the CRS's linear unit converted to metres.
* **Geographic CRS** (EPSG:4326 rasters exist in the wild): never square degrees. A pixel
  row's cells are bounded by two meridians and two parallels, and their ellipsoidal area
  has a closed form (the authalic-latitude zone formula, :func:`row_pixel_areas`); polygons
  are measured in a cylindrical equal-area projection on the CRS's own ellipsoid, where
  meridians and parallels stay straight, so pixel-shaped polygons keep their exact area;
  perimeters are geodesic (:class:`pyproj.Geod`).

Raster path (:func:`district_areas_raster`)
-------------------------------------------
The mask is read block by block (memory bounded by one block per thread) and every pixel
is decoded once. Per block, districts are burnt at pixel centres (GDAL), pixels are counted
per (district, class) with one ``bincount``, and pixels cut by a district boundary are then
corrected to their **exact fractional coverage**: each boundary's edges are split at the
grid lines and their signed trapezoids summed per cell (the scan-converter of font
renderers), so a pixel half in Ludhiana and half in Sangrur counts half to each, and totals
carry no pixel-grid bias. Pixels that are nodata (collar, cloud) count as the district's
unobserved area. ``method="centre"`` skips the correction (each pixel to the district
containing its centre), which is how :func:`geoseg.synth.synthesize` counts its truth.

Polygon path (:func:`district_areas_fields`)
--------------------------------------------
Fields x districts through an STRtree; fields inside one district keep their own area, the
others are intersected. A fields file says nothing about what was observed, so
``share``, ``observed_ha`` and ``unobserved_ha`` are NaN there.

Output table: one row per (district, class) with ``district``, ``class_id``, ``crop``,
``area_ha``, ``share`` (of the district's observed area), ``observed_ha``,
``unobserved_ha`` (nodata / cloud inside the raster), ``district_ha`` (the whole district)
and ``coverage`` (fraction of the district inside the raster footprint).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from .classes import ClassTable
from .errors import GeosegError

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "AreaError",
    "TABLE_COLUMNS",
    "row_pixel_areas",
    "equal_area_crs",
    "areas_m2",
    "perimeters_m",
    "largest_overlap",
    "boundary_coverage",
    "district_areas_raster",
    "district_areas_fields",
    "district_areas",
    "district_areas_file",
    "unknown_classes",
]

log = logging.getLogger(__name__)

#: Columns of every district area table, in order.
TABLE_COLUMNS = ("district", "class_id", "crop", "area_ha", "share", "observed_ha", "unobserved_ha",
                 "district_ha", "coverage")
_RASTERIZE_LOCK = threading.Lock()
#: Default block size (pixels) for the raster path.
DEFAULT_AREA_BLOCK = 1024


class AreaError(GeosegError, ValueError):
    """An input that cannot give a district area table (no overlap, wrong raster type...)."""


# --------------------------------------------------------------------------------------
# ground areas and lengths (pure)
def _to_pyproj(crs: Any) -> Any:
    import pyproj

    if isinstance(crs, pyproj.CRS):
        return crs
    wkt = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    return pyproj.CRS.from_user_input(wkt)


def _unit_factor(crs: Any) -> float:
    """Metres per CRS unit of a projected CRS."""
    pc = _to_pyproj(crs)
    axis = pc.axis_info[0] if pc.axis_info else None
    f = getattr(axis, "unit_conversion_factor", None)
    return float(f) if f else 1.0


def _zone(lat_deg: np.ndarray, a: float, b: float) -> np.ndarray:
    """Ellipsoid area between the equator and latitude ``lat`` per radian of longitude (m2)."""
    s = np.sin(np.radians(lat_deg))
    e2 = 1.0 - (b * b) / (a * a)
    if e2 <= 0:
        return a * a * s
    e = math.sqrt(e2)
    return (b * b / 2.0) * (s / (1.0 - e2 * s * s) + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e))


def row_pixel_areas(transform: Affine, crs: Any, height: int) -> np.ndarray:
    """Ground area (m2) of one pixel in each of ``height`` rows.

    Projected CRS: the pixel size squared, in metres. Geographic CRS: the exact area of a
    cell bounded by two meridians and two parallels on the CRS's ellipsoid.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> row_pixel_areas(Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(32643), 2).tolist()
    [100.0, 100.0]
    >>> a = row_pixel_areas(Affine(1, 0, 0, 0, -1, 1), CRS.from_epsg(4326), 1)  # 1 x 1 degree at the equator
    >>> round(float(a[0]) / 1e6, 1)
    12308.5
    """
    if transform.b != 0 or transform.d != 0:
        raise AreaError(f"rotated grid {tuple(transform)[:6]}; warp it north-up first")
    pc = _to_pyproj(crs)
    if pc.is_geographic:
        unit = pc.axis_info[0].unit_name if pc.axis_info else "degree"
        if "degree" not in unit:
            raise AreaError(f"geographic CRS in {unit!r}; expected degrees - reproject the raster to EPSG:4326 first")
        ell = pc.ellipsoid
        a, b = ell.semi_major_metre, ell.semi_minor_metre
        rows = np.arange(height + 1, dtype=np.float64)
        lat = transform.f + rows * transform.e
        z = _zone(np.clip(lat, -90, 90), a, b)
        return np.abs(np.diff(z)) * math.radians(abs(transform.a))
    f = _unit_factor(pc)
    return np.full(height, abs(transform.a * transform.e) * f * f)


def equal_area_crs(crs: Any, lon_0: float = 0.0) -> Any:
    """A cylindrical equal-area CRS on ``crs``'s ellipsoid (for measuring geographic polygons)."""
    import pyproj

    ell = _to_pyproj(crs).ellipsoid
    return pyproj.CRS.from_proj4(
        f"+proj=cea +lon_0={lon_0:.6f} +lat_ts=0 +x_0=0 +y_0=0 +a={ell.semi_major_metre!r} "
        f"+b={ell.semi_minor_metre!r} +units=m +no_defs +type=crs"
    )


def _to_equal_area(geoms: np.ndarray, crs: Any) -> np.ndarray:
    import pyproj

    pc = _to_pyproj(crs)
    valid = ~shapely.is_missing(geoms)
    lon0 = 0.0
    if valid.any():
        b = shapely.total_bounds(geoms[valid])
        if np.all(np.isfinite(b)):
            lon0 = float((b[0] + b[2]) / 2)
    tr = pyproj.Transformer.from_crs(pc, equal_area_crs(pc, lon0), always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def areas_m2(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground areas (m2) of polygons: planar in a projected CRS, equal-area for geographic ones."""
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if pc.is_geographic:
        return shapely.area(_to_equal_area(geoms, pc))
    f = _unit_factor(pc)
    return shapely.area(geoms) * f * f


def perimeters_m(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground lengths (m) of polygon outlines (exterior plus holes); geodesic for geographic CRSs."""
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if not pc.is_geographic:
        return shapely.length(geoms) * _unit_factor(pc)
    out = np.zeros(len(geoms))
    if len(geoms) == 0:
        return out
    parts, part_of = shapely.get_parts(geoms, return_index=True)  # get_rings skips MultiPolygons
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    gidx = part_of[ring_part]
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    same = ridx[1:] == ridx[:-1]
    if not same.any():
        return out
    geod = pc.get_geod()
    _, _, dist = geod.inv(xy[:-1][same, 0], xy[:-1][same, 1], xy[1:][same, 0], xy[1:][same, 1])
    return np.bincount(gidx[ridx[:-1][same]], weights=dist, minlength=len(geoms))


def overlap_areas(geoms: np.ndarray, districts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every intersecting (geometry, district) pair and the planar area they share.

    Returns ``(gi, di, area)``: indices into ``geoms`` and ``districts`` and the shared area
    in CRS units squared (pairs that only touch have area 0). A geometry wholly inside a
    district is not intersected, just measured.

    Bounding-box candidates are tested against the prepared districts: first the
    geometry's bounding box (a district that covers the box covers the geometry: 4
    vertices instead of a pixel outline's hundreds), then the geometry, and only pairs
    that truly cross are intersected. On 15,089 fields and 4 districts: 0.37 s -> 0.22 s.
    """
    tree = shapely.STRtree(districts)
    gi, di = tree.query(geoms)
    if len(gi) == 0:
        return gi, di, np.zeros(0)
    shapely.prepare(districts)
    b = shapely.bounds(geoms[gi])
    inside = shapely.covers(districts[di], shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
    rest = np.flatnonzero(~inside)
    inside[rest] = shapely.covers(districts[di[rest]], geoms[gi[rest]])
    area = np.where(inside, shapely.area(geoms[gi]), 0.0)
    rest = np.flatnonzero(~inside)
    hit = np.ones(len(gi), bool)
    if len(rest):
        cross = shapely.intersects(districts[di[rest]], geoms[gi[rest]])
        hit[rest[~cross]] = False
        rest = rest[cross]
        area[rest] = shapely.area(shapely.intersection(geoms[gi[rest]], districts[di[rest]]))
    return gi[hit], di[hit], area[hit]


def largest_overlap(geoms: np.ndarray, districts: np.ndarray) -> np.ndarray:
    """For each geometry, the index of the district it overlaps most (-1 for none).

    Vectorised: STRtree candidate pairs; a geometry covered by one district takes it
    without an intersection; the others compare intersection areas. Ties go to the
    lower district index.

    Examples
    --------
    >>> d = np.array([shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)])
    >>> f = np.array([shapely.box(1, 1, 2, 2), shapely.box(8, 1, 14, 2), shapely.box(30, 0, 31, 1)])
    >>> largest_overlap(f, d).tolist()
    [0, 1, -1]
    """
    geoms = np.asarray(geoms, dtype=object)
    districts = np.asarray(districts, dtype=object)
    out = np.full(len(geoms), -1, np.int64)
    if len(geoms) == 0 or len(districts) == 0:
        return out
    fi, di, area = overlap_areas(geoms, districts)
    if len(fi) == 0:
        return out
    ok = area > 0
    fi, di, area = fi[ok], di[ok], area[ok]
    order = np.lexsort((di, -area, fi))
    first = np.r_[True, fi[order][1:] != fi[order][:-1]]
    out[fi[order][first]] = di[order][first]
    return out


# --------------------------------------------------------------------------------------
# exact fractional coverage of grid cells (pure)
def _crossings(a0: np.ndarray, a1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameters t in (0, 1) where segments a0 -> a1 cross integer grid lines."""
    lo, hi = np.minimum(a0, a1), np.maximum(a0, a1)
    first = np.floor(lo) + 1
    cnt = np.maximum(0, np.ceil(hi) - first).astype(np.int64)
    seg = np.repeat(np.arange(len(a0)), cnt)
    within = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    k = first[seg] + within
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (k - a0[seg]) / (a1[seg] - a0[seg])
    return seg, t


def boundary_coverage(
    polygons: np.ndarray, transform: Affine, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact fraction of each boundary cell of a grid covered by each polygon.

    Every polygon edge is split where it crosses grid lines; each piece adds its signed
    trapezoid to its own cell and its height to the cells beyond it in the row; a running
    sum along each row then gives the exact area. Only cells that some edge passes
    through are returned: every other cell is wholly inside or outside each polygon,
    which a pixel-centre test decides exactly.

    Parameters
    ----------
    polygons : array of (Multi)Polygons
        In the grid's CRS.
    transform : Affine
        North-up grid transform.
    shape : (height, width)

    Returns
    -------
    rows, cols, index, fraction : arrays
        One entry per (cell, polygon) pair: the polygon's index and its coverage (0..1).

    Examples
    --------
    >>> r, c, i, f = boundary_coverage(np.array([shapely.box(0.5, 0, 2, 1)]), Affine(1, 0, 0, 0, -1, 1), (1, 3))
    >>> sorted(zip(c.tolist(), f.tolist()))
    [(0, 0.5), (1, 1.0), (2, 0.0)]
    """
    h, w = int(shape[0]), int(shape[1])
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)
    polygons = np.asarray(polygons, dtype=object)
    if len(polygons) == 0 or h == 0 or w == 0:
        return empty  # type: ignore[return-value]
    inv = ~transform
    ia, ib, ic, id_, ie, if_ = tuple(inv)[:6]
    px = shapely.transform(polygons, lambda xy: np.column_stack(
        [ia * xy[:, 0] + ib * xy[:, 1] + ic, id_ * xy[:, 0] + ie * xy[:, 1] + if_]))
    px = shapely.clip_by_rect(px, 0, 0, w, h)
    px = shapely.orient_polygons(px, exterior_cw=False)  # counter-clockwise in (col, row) numbers
    parts, part_of = shapely.get_parts(px, return_index=True)  # get_rings skips MultiPolygons
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    pidx = part_of[ring_part]
    if len(rings) == 0:
        return empty  # type: ignore[return-value]
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    same = ridx[1:] == ridx[:-1]
    x0, y0 = xy[:-1][same, 0], xy[:-1][same, 1]
    x1, y1 = xy[1:][same, 0], xy[1:][same, 1]
    poly = pidx[ridx[:-1][same]]
    n = len(x0)
    sx, tx = _crossings(x0, x1)
    sy, ty = _crossings(y0, y1)
    seg = np.concatenate([np.arange(n), np.arange(n), sx, sy])
    t = np.concatenate([np.zeros(n), np.ones(n), tx, ty])
    o = np.lexsort((t, seg))
    seg, t = seg[o], t[o]
    ok = (seg[1:] == seg[:-1]) & (t[1:] > t[:-1])
    s, ta, tb = seg[:-1][ok], t[:-1][ok], t[1:][ok]
    dx, dyy = x1[s] - x0[s], y1[s] - y0[s]
    tm = (ta + tb) / 2
    xm, ym = x0[s] + tm * dx, y0[s] + tm * dyy
    dy = (tb - ta) * dyy
    r = np.floor(ym).astype(np.int64)
    c = np.floor(xm).astype(np.int64)
    keep = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    r, c, dy, xm, p = r[keep], c[keep], dy[keep], xm[keep], poly[s][keep]
    if len(r) == 0:
        return empty  # type: ignore[return-value]
    key = (p * h + r) * w + c
    o = np.argsort(key, kind="stable")
    key, r, c, dy, xm, p = key[o], r[o], c[o], dy[o], xm[o], p[o]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    inside_cell = np.add.reduceat(dy * (c + 1 - xm), starts)
    height = np.add.reduceat(dy, starts)
    gr, gc, gp = r[starts], c[starts], p[starts]
    line = gp * h + gr
    ls = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
    before = np.cumsum(height) - height
    before -= np.repeat(before[ls], np.diff(np.r_[ls, len(line)]))
    frac = np.clip(-(before + inside_cell), 0.0, 1.0) + 0.0  # no -0.0
    return gr, gc, gp, frac


# --------------------------------------------------------------------------------------
# raster path
@dataclass(frozen=True)
class _AreaJob:
    mask: str
    window: tuple[int, int, int, int]  # row_off, col_off, height, width
    nodata: float | None
    transform: Affine
    geoms: np.ndarray  # districts clipped to the raster, raster CRS
    row_areas: np.ndarray
    exact: bool
    likely: np.ndarray  # class ids and nodata expected in the mask (uint8 fast path)


def _area_blocks(jobs: Sequence[_AreaJob]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run :func:`_area_block_env` over ``jobs`` (one mask) with one open dataset, in its own ``rasterio.Env``."""
    import rasterio

    from .io import open_raster

    if not jobs:
        return []
    with rasterio.Env(), open_raster(jobs[0].mask) as src:
        return [_area_block_env(job, src) for job in jobs]


def _count_values(values: np.ndarray, likely: np.ndarray, nb: int) -> np.ndarray:
    """Counts of each value 0..nb-1 in a uint8 array: one compare-and-count per likely value
    (several times faster than ``bincount``), falling back to ``bincount`` if others occur."""
    counts = np.zeros(nb, np.int64)
    for v in likely.tolist():  # Python ints: comparing uint8 with an int64 scalar would widen every pixel
        counts[v] = np.count_nonzero(values == v)
    if counts.sum() != values.size:
        return np.bincount(values.ravel(), minlength=nb)
    return counts


def _area_block_env(job: _AreaJob, src: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(district index, class value or -1 for nodata, area m2) summed over one block.

    Fast path for uint8 masks with an integer nodata (every geoseg mask): the pixel value
    itself is the bucket (nodata is just one of 256), so each pixel costs one shift-or and
    one ``bincount`` slot; other masks map values and validity to buckets first.
    """
    from rasterio.enums import MaskFlags
    from rasterio.features import rasterize
    from rasterio.windows import Window

    from .io import valid_mask

    r0, c0, bh, bw = job.window
    win = Window(c0, r0, bw, bh)
    bt = job.transform @ Affine.translation(c0, r0)
    box = shapely.box(*_bounds(bt, bh, bw))
    cand = np.flatnonzero(shapely.intersects(job.geoms, box))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(cand) == 0:
        return empty
    arr = src.read(1, window=win)
    nod = job.nodata if job.nodata is not None else src.nodata
    internal = nod is None and any(MaskFlags.per_dataset in f for f in src.mask_flag_enums)
    valid = src.read_masks(1, window=win) > 0 if internal else None
    if arr.dtype == np.uint8 and valid is None and (nod is None or (float(nod).is_integer() and 0 <= nod <= 255)):
        bucket = arr
        nb = 256
        nodata_bucket = int(nod) if nod is not None else -1
    else:
        if valid is None:
            valid = valid_mask(arr, nod)
        if arr.dtype.kind not in "iu":
            raise AreaError(f"{job.mask}: {arr.dtype} pixels; expected integer class ids")
        vmax = 0
        if valid.any():
            vals = arr[valid]
            vmin, vmax = int(vals.min()), int(vals.max())
            if vmin < 0:
                raise AreaError(
                    f"{job.mask}: negative class value {vmin}; expected class ids >= 0 (is it the nodata value? "
                    f"pass it with --nodata)"
                )
        nb = vmax + 2  # buckets 0..vmax for classes, vmax + 1 for nodata
        nodata_bucket = vmax + 1
        bucket = np.where(valid, arr, nodata_bucket).astype(np.int32)
    if nb * (len(cand) + 1) > 1 << 24:
        raise AreaError(
            f"{job.mask}: class values up to {nb - 2}; expected class ids below {(1 << 24) // (len(cand) + 1)} "
            f"here - renumber the classes 0..K-1"
        )
    areas_row = job.row_areas[r0 : r0 + bh]
    geographic = bool(np.any(areas_row != areas_row[0]))
    whole = shapely.covers(job.geoms[cand], box)
    if whole.any():  # the block lies inside one district: no burning, no boundary
        cand = cand[np.argmax(whole)][None]
        key = bucket
        local = None
    else:
        shapes = [(g, i + 1) for i, g in enumerate(job.geoms[cand])]
        dtype = "uint8" if len(cand) < 255 and nb == 256 else "int32"
        with _RASTERIZE_LOCK:  # rasterio silences a warning with catch_warnings, which threads race on
            local = rasterize(shapes, out_shape=(bh, bw), transform=bt, fill=0, dtype=dtype, all_touched=False)
        if nb == 256 and len(cand) < 255:
            key = (local.astype(np.uint16) << 8) | bucket
        else:
            key = local.astype(np.int32) * nb + bucket
    n = (len(cand) + 1) * nb
    if geographic:
        counts = np.bincount(key.ravel(), weights=np.repeat(areas_row, bw), minlength=n)
    elif local is None and nb == 256:
        likely = np.union1d(job.likely, np.unique(bucket.ravel()[:: 97]))
        counts = _count_values(bucket, likely, n) * areas_row[0]
    else:
        counts = np.bincount(key.ravel(), minlength=n) * areas_row[0]
    if local is None:  # everything counted for the one district
        counts = np.concatenate([np.zeros(nb), counts[:nb]])
    elif job.exact:
        rr, cc, pi, frac = boundary_coverage(job.geoms[cand], bt, (bh, bw))
        if len(rr):
            b = bucket[rr, cc].astype(np.int64)
            counts += np.bincount((pi + 1) * nb + b, weights=frac * areas_row[rr], minlength=n)
            cell = np.unique(rr * bw + cc)
            cr, ccol = np.divmod(cell, bw)
            counts -= np.bincount(local[cr, ccol].astype(np.int64) * nb + bucket[cr, ccol],
                                  weights=areas_row[cr], minlength=n)
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
    geoseg.vector_io.DistrictError
        No such name field, no CRS, no usable polygon.

    Warns
    -----
    geoseg.vector_io.DistrictWarning
        Null, invalid or repeated districts.
    """
    from .io import check_size, raster_info, read_mask_classes, warn_no_nodata
    from .vector_io import DistrictProblem, read_districts

    if method not in ("exact", "centre", "center"):
        raise AreaError(f"method is {method!r}; expected 'exact' or 'centre'")
    src = str(mask_path)
    info = raster_info(src)
    check_size(info)
    if info.count != 1 or not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise AreaError(
            f"{src}: {info.count} band(s) of {info.dtype}; expected a single-band integer class raster "
            f"(a crop mask), e.g. `gdal_translate -b 1 -ot Byte {src} mask.tif`"
        )
    nod = nodata if nodata is not None else info.nodata
    if nod is None:
        warn_no_nodata(info)
    if isinstance(classes, ClassTable):
        table: ClassTable | None = classes
    elif classes is not None:
        from .classes import load_classes

        table = load_classes(classes)
    else:
        table = read_mask_classes(src)
    d = read_districts(districts, name_field, crs=info.crs)
    h, w = info.shape
    footprint = shapely.box(*_bounds(info.transform, h, w))
    geoms = np.asarray(d.gdf.geometry.values, dtype=object)
    clipped = shapely.intersection(geoms, footprint)
    overlap = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
    names = d.names
    problems = list(d.problems)
    for i in np.flatnonzero(~overlap):
        problems.append(DistrictProblem(str(names[i]), "no overlap", "outside the raster; not in the table"))
    if not overlap.any():
        b = shapely.total_bounds(geoms)
        raise AreaError(
            f"none of the {len(geoms)} districts in {d.source} overlaps {src}: districts span "
            f"{_fmt_bounds(b)}, the raster {_fmt_bounds(footprint.bounds)} (in {info.crs.to_string()}); check "
            f"that both files have the right CRS"
        )
    n_skip = int((~overlap).sum())
    if n_skip:
        log.info("%d of %d districts do not overlap %s and are left out", n_skip, len(geoms), src)
    keep = np.flatnonzero(overlap)
    row_area = row_pixel_areas(info.transform, info.crs, h)
    expected = {c.id for c in table if 0 <= c.id < 256} if table is not None else set()
    if nod is not None and float(nod).is_integer() and 0 <= nod < 256:
        expected.add(int(nod))
    likely = np.array(sorted(expected), dtype=np.int64)
    jobs = [
        _AreaJob(src, (r, c, min(block, h - r), min(block, w - c)), None if nodata is None else float(nodata),
                 info.transform, clipped[keep], row_area, method == "exact", likely)
        for r in range(0, h, block)
        for c in range(0, w, block)
    ]
    nw = min(workers or os.cpu_count() or 1, len(jobs))
    chunks = [jobs[k :: nw * 4] for k in range(nw * 4)] if nw > 1 else [jobs]
    if nw > 1:
        with ThreadPoolExecutor(nw) as ex:
            results = [r for part in ex.map(_area_blocks, chunks) for r in part]
    else:
        results = _area_blocks(jobs)
    di = np.concatenate([r[0] for r in results])
    cv = np.concatenate([r[1] for r in results])
    am = np.concatenate([r[2] for r in results])
    # a value outside the class table is a mislabelled raster, not a new crop
    if table is not None and (found := unknown_classes(cv, am, table)):
        raise AreaError(
            f"{src}: holds class values {found} inside the districts that are not in the class table "
            f"(ids {', '.join(f'{c.id}={c.name}' for c in table)}; nodata {nod}); pass the class file the "
            f"raster was made with (--classes) or its nodata value (--nodata)"
        )
    district_m2 = areas_m2(geoms[keep], info.crs)
    inside_m2 = areas_m2(clipped[keep], info.crs)
    df = _assemble(di, cv, am, names[keep], district_m2, inside_m2, table, observed=True)
    df.attrs["problems"] = _report(problems, set(names[keep]), d.source)
    df.attrs["source"] = src
    return df


def _report(problems: Sequence[Any], in_table: set[str], source: str) -> list[str]:
    """Problems worth listing for this table; warn about repeated names that reached it."""
    import warnings

    from .vector_io import DistrictWarning

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

    from .vectorize import crop_names

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
        Field polygons with a ``class_id`` column (or a ``crop`` column and ``classes``).
    districts, name_field
        As for :func:`district_areas_raster`; districts are reprojected to the fields.
    classes : ClassTable or path, optional
        Class names (default: the ``crop`` column's names, else ``class_<id>``).
    class_field : str
        The column with class ids.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`; ``share``, ``observed_ha`` and ``unobserved_ha`` are
        NaN (polygons do not say what was observed); ``coverage`` is the fraction of the
        district inside the fields' bounding box.
    """
    import geopandas as gpd

    from .classes import CropClass, load_classes
    from .vector_io import DistrictProblem, read_districts, read_vector

    if isinstance(fields, gpd.GeoDataFrame):
        f, fsrc = fields, "<fields>"
    else:
        fsrc = str(fields)
        f = read_vector(fsrc)
    if f.crs is None:
        raise AreaError(f"{fsrc}: the fields have no CRS; set one, e.g. `ogr2ogr -a_srs EPSG:32643 out.gpkg {fsrc}`")
    table: ClassTable | None
    if isinstance(classes, ClassTable):
        table = classes
    elif classes is not None:
        table = load_classes(classes)
    else:
        table = None
    if class_field in f.columns:
        cid = f[class_field].to_numpy()
        if table is None and "crop" in f.columns:
            pairs = sorted({(int(a), str(b)) for a, b in zip(cid, f["crop"])})
            ids = [p[0] for p in pairs]
            if len(set(ids)) == len(ids) and ids == list(range(len(ids))):
                table = ClassTable(tuple(CropClass(i, n, "#808080") for i, n in pairs), fsrc)
    elif "crop" in f.columns and table is not None:
        lookup = {c.name: c.id for c in table}
        unknown = sorted(set(f["crop"]) - set(lookup))
        if unknown:
            raise AreaError(f"{fsrc}: crops {unknown} are not in the class table {table.names}")
        cid = f["crop"].map(lookup).to_numpy()
    else:
        raise AreaError(
            f"{fsrc}: has no {class_field!r} column (nor 'crop' with a class file); the columns are "
            f"{[c for c in f.columns if c != f.geometry.name]}"
        )
    d = read_districts(districts, name_field, crs=f.crs)
    geoms = np.asarray(f.geometry.values, dtype=object)
    dg = np.asarray(d.gdf.geometry.values, dtype=object)
    ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms, cid = geoms[ok], np.asarray(cid)[ok].astype(np.int64)
    crs = f.crs
    if crs.is_geographic:  # measure in an equal-area projection
        geoms = _to_equal_area(geoms, crs)
        dg_m = _to_equal_area(dg, crs)
        factor = 1.0
    else:
        dg_m = dg
        factor = _unit_factor(crs) ** 2
    fi, di, area = overlap_areas(geoms, dg_m)
    touched = np.zeros(len(dg), bool)
    touched[di[area > 0]] = True
    problems = list(d.problems)
    names = d.names
    for i in np.flatnonzero(~touched):
        problems.append(DistrictProblem(str(names[i]), "no overlap", "no field in it; not in the table"))
    if not touched.any():
        raise AreaError(
            f"no field in {fsrc} overlaps any of the {len(dg)} districts in {d.source}: fields span "
            f"{_fmt_bounds(shapely.total_bounds(np.asarray(f.geometry.values)))}, districts "
            f"{_fmt_bounds(shapely.total_bounds(dg))} (in {crs.to_string()}); check the CRS of both files"
        )
    keep = np.flatnonzero(touched)
    remap = np.full(len(dg), -1)
    remap[keep] = np.arange(len(keep))
    sel = area > 0
    district_m2 = areas_m2(dg[keep], crs)
    ext = shapely.box(*shapely.total_bounds(np.asarray(f.geometry.values)))
    inside_m2 = areas_m2(shapely.intersection(dg[keep], ext), crs)
    df = _assemble(remap[di[sel]], cid[fi[sel]], area[sel] * factor, names[keep], district_m2, inside_m2, table,
                   observed=False)
    df.attrs["problems"] = _report(problems, set(names[keep]), d.source)
    df.attrs["source"] = fsrc
    return df


def district_areas(
    source: str | os.PathLike[str],
    districts: str | os.PathLike[str],
    name_field: str,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    *,
    method: str = "exact",
) -> "pd.DataFrame":
    """District areas from a class raster or a fields file, whichever ``source`` is.

    A file GDAL opens as a raster takes :func:`district_areas_raster`; vector files
    (GeoPackage, Shapefile, GeoParquet, ...) take :func:`district_areas_fields`.
    """
    from .vector_io import FORMATS

    p = str(source)
    vector_exts = tuple(e for _, exts in FORMATS.values() for e in exts)
    if p.lower().endswith(vector_exts):
        if nodata is not None:
            raise AreaError(f"{p}: --nodata applies to a class raster, not to a fields file; leave it out")
        return district_areas_fields(p, districts, name_field, classes)
    return district_areas_raster(p, districts, name_field, classes, nodata, method=method)


def unknown_classes(class_ids: np.ndarray, area_m2: np.ndarray, table: ClassTable) -> str | None:
    """The class values (with their hectares) that ``table`` lacks, for a message; None when all are known.

    Negative ids mean "no class" and are ignored; at most five values are listed.

    >>> from geoseg.classes import default_classes
    >>> unknown_classes(np.array([1, 9, 9, 12, -1]), np.array([100.0, 50, 50, 100, 7]), default_classes())
    '9 (0.01 ha), 12 (0.01 ha)'
    """
    cid = np.asarray(class_ids)
    extra = np.setdiff1d(np.unique(cid[cid >= 0]), [c.id for c in table])
    if not extra.size:
        return None
    ha = [float(area_m2[cid == v].sum()) / 1e4 for v in extra[:5]]
    more = f" and {extra.size - 5} more" if extra.size > 5 else ""
    return ", ".join(f"{int(v)} ({h:.2f} ha)" for v, h in zip(extra[:5], ha)) + more


def district_areas_file(
    source: str | os.PathLike[str],
    districts: str | os.PathLike[str],
    name_field: str,
    out: str | os.PathLike[str],
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    *,
    method: str = "exact",
) -> "pd.DataFrame":
    """:func:`district_areas`, then write the table to ``out`` (``.csv``, ``.parquet`` or ``.json``).

    The extension is checked before any work; returns the table (with ``attrs["problems"]``).
    """
    from pathlib import Path

    from .io import check_outputs  # file-level wrapper: the I/O layer stays out of the pure module's imports
    from .vector_io import VectorFormatError, write_table

    if Path(out).suffix.lower() not in (".csv", ".parquet", ".json"):
        raise VectorFormatError(
            f"{out}: cannot tell the table format from the extension {Path(out).suffix or '(none)'!r}; "
            f"use .csv, .parquet or .json"
        )
    check_outputs({"the area table": out}, {"the source": source, "the district file": districts,
                                            "the class file": classes if isinstance(classes, (str, os.PathLike)) else None})
    df = district_areas(source, districts, name_field, classes, nodata, method=method)
    write_table(df, out)
    return df
