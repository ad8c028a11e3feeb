"""A stratified random sample of reference locations drawn from a crop mask (``geoseg sample``).

The design follows Olofsson et al. (2014): strata are the map classes (every class, the
background too: it is where omitted crops hide), or map class x district with
``by_district``; the total from Cochran's formula for a target standard error of overall
accuracy, at least ``minimum`` points per stratum, optionally capped by a ``budget``
(:mod:`geoseg.core.estimate`). Only observed pixels are sampled (nodata - clouds, the collar -
is outside every stratum), and only inside the districts when districts are given.

Exact areas, exact draws
------------------------
Each stratum's area is its **ground area with the district areas' exact coverage rule**
(:mod:`geoseg.ops.areas`): a pixel's own ellipsoidal area, and a pixel cut by a district
boundary counted by the share of it inside. A point is drawn uniformly over that area: the
stratum's area is cut into a cumulative sum over blocks (pass 1, every block read once), a
uniform number in it picks a block, then a pixel within it by the pixels' areas (pass 2, only
the blocks that got a point are read again), then a uniform location within the pixel - within
the part of it inside the district, for a pixel the boundary cuts. So the population is
continuous (locations, not pixels), every location of a stratum is equally likely, and the
estimator needs no finite-population correction.

The draws depend on the seed alone, not on the number of threads or the block order. Point ids
are shuffled, so their order tells an interpreter nothing about the map class.

Outputs (:func:`write_sample`)
------------------------------
``points.gpkg`` and ``points.csv`` for the field teams (``point_id``, ``district``, ``lon``,
``lat``, ``x``, ``y`` in the mask's CRS, an empty ``reference`` column to fill in), with no map
class - interpretation stays blind; ``key.csv`` with each point's stratum and map class; and
``design.json`` (the mask and its SHA-256, the districts, the strata with their mapped areas
and sample sizes, every mapped area per district and class, the settings and seed), which
``geoseg estimate`` reads back. The folder is written under a temporary name and renamed into
place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from geoseg.classes import ClassTable, load_classes
from geoseg.core.estimate import allocate, anticipated_overall_se, cochran_total, points_for_users_accuracy
from geoseg.core.geodesy import PixelAreas, pixel_areas
from geoseg.core.grid import Window
from geoseg.errors import EstimateError, GeosegError, portable_errors
from geoseg.io.districts import read_districts
from geoseg.io.raster import BlockReader, RasterInfo, check_same_grid, read_mask_classes, write_text_atomic
from geoseg.io.vector import write_table, write_vector
from geoseg.ops.areas import check_class_raster
from geoseg.ops.coverage import grid_bounds, zone_pieces
from geoseg.parallel import Runner
from geoseg.rundir import MANIFEST, RunPaths, read_manifest, run_districts, run_outputs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "DESIGN_FORMAT",
    "POINT_COLUMNS",
    "Sample",
    "draw_sample",
    "file_sha256",
    "sample_file",
    "write_sample",
]

#: The ``format`` of a design file; ``version`` says which edition of it.
DESIGN_FORMAT = "geoseg-sample-design"
#: Columns of the points the field teams get (``reference`` left empty for them).
POINT_COLUMNS = ("point_id", "district", "lon", "lat", "x", "y", "reference")
#: The blocks the draws are defined on (fixed: a point's place must not depend on how the work is cut).
SAMPLE_BLOCK = 512
#: Tries to place a point inside the part of a boundary pixel that lies in its district.
_MAX_TRIES = 10_000


@dataclass
class Sample:
    """A drawn sample: the design (what ``design.json`` holds), the points, and their key."""

    design: dict[str, Any]
    points: pd.DataFrame
    key: pd.DataFrame
    crs: Any = None
    notes: list[str] = field(default_factory=list)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# the blocks
@dataclass(frozen=True)
class _Job:
    mask: str
    window: tuple[int, int, int, int]  # row_off, col_off, height, width
    nodata: float | None
    transform: Affine
    zones: np.ndarray | None  # district polygons clipped to the raster (raster CRS), or None: the whole raster
    areas: PixelAreas
    #: pass 2: (draw index, zone, stratum value, offset within the block's area of that zone and value)
    draws: tuple[tuple[int, int, int, float], ...] = ()
    seed: int = 0
    #: a raster of the user's strata on the mask's grid, or None: the map classes are the strata
    strata: str | None = None


_Pieces = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _pieces(job: _Job, reader: BlockReader, sreader: BlockReader | None) -> _Pieces:
    """The block as weighted pieces ``(zone, stratum value, class, weight m2, flat pixel index, cut)``:
    each observed pixel whole in one zone, and each (pixel, zone) pair of a pixel a zone boundary
    cuts with its covered area (``cut`` True). The stratum value is the user's strata raster's, or
    the class. Raster order, interior pixels first; empty when no zone reaches the block."""
    r0, c0, bh, bw = job.window
    bt = job.transform @ Affine.translation(c0, r0)
    if job.zones is None:
        z, flat = np.zeros(bh * bw, np.int64), np.arange(bh * bw, dtype=np.int64)
        frac, cut = np.ones(bh * bw), np.zeros(bh * bw, bool)
    else:
        z, flat, frac, cut = zone_pieces(job.zones, bt, (bh, bw))
        if len(z) == 0:  # no zone reaches the block: it is not read
            return (np.zeros(0, np.int64),) * 3 + (np.zeros(0),) + (np.zeros(0, np.int64),) + (np.zeros(0, bool),)
    data = reader.read(Window(c0, r0, bw, bh))
    arr = data.array
    valid = data.valid()
    if arr.dtype.kind not in "iu":
        raise EstimateError(f"{job.mask}: {arr.dtype} pixels; expected integer class ids")
    sarr = arr
    if sreader is not None:
        sdata = sreader.read(Window(c0, r0, bw, bh))
        sarr = sdata.array
        if sarr.dtype.kind not in "iu":
            raise EstimateError(f"{job.strata}: {sarr.dtype} pixels; expected integer stratum ids 0..254")
        valid = valid & sdata.valid()
    px = job.areas.block(r0, c0, bh, bw) if job.areas.constant is None else np.full((bh, bw), job.areas.mean)
    ok = valid.ravel()[flat]
    z, flat, frac, cut = z[ok], flat[ok], frac[ok], cut[ok]
    v = arr.ravel()[flat].astype(np.int64)
    st = sarr.ravel()[flat].astype(np.int64)
    wgt = frac * px.ravel()[flat]
    if len(v) and (v.min() < 0 or v.max() > 255):
        raise EstimateError(f"{job.mask}: class value {int(v.min() if v.min() < 0 else v.max())}; expected class ids "
                            f"0..254 (a geoseg mask) - give the nodata value with --nodata")
    if sreader is not None and len(st) and (st.min() < 0 or st.max() > 255):
        raise EstimateError(f"{job.strata}: stratum value {int(st.min() if st.min() < 0 else st.max())}; expected "
                            f"stratum ids 0..254 (and a nodata value for pixels in no stratum)")
    return z, st, v, wgt, flat, cut


def _readers(job: _Job) -> tuple[BlockReader, BlockReader | None]:
    return BlockReader(job.mask, nodata=job.nodata), (BlockReader(job.strata) if job.strata else None)


@portable_errors
def _totals(job: _Job) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1: ``(zone, stratum value, class, m2)`` of one block."""
    reader, sreader = _readers(job)
    with reader, (sreader or nullcontext()):
        z, st, v, w, _, _ = _pieces(job, reader, sreader)
    if len(z) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    key = (z * 256 + st) * 256 + v
    uk, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, weights=w, minlength=len(uk))
    return uk // 65536, (uk // 256) % 256, uk % 256, sums


@portable_errors
def _locate(job: _Job) -> list[tuple[int, float, float, int, int]]:
    """Pass 2: ``(draw index, x, y, zone, map class)`` of each draw in one block."""
    reader, sreader = _readers(job)
    with reader, (sreader or nullcontext()):
        z, st, v, w, flat, cut = _pieces(job, reader, sreader)
    r0, c0, _, bw = job.window
    t = job.transform
    out = []
    groups: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for draw, zone, cls, offset in job.draws:
        if (zone, cls) not in groups:  # the pieces of this zone and class, and their running area
            sel = np.flatnonzero((z == zone) & (st == cls))
            groups[zone, cls] = (sel, np.cumsum(w[sel]))
        sel, cum = groups[zone, cls]
        i = sel[min(int(np.searchsorted(cum, offset, side="right")), len(sel) - 1)]
        r, c = divmod(int(flat[i]), bw)
        rng = np.random.default_rng([job.seed, draw])
        fx, fy = rng.random(2)
        if cut[i]:  # a pixel the district boundary cuts: a location in its part inside the district
            poly = job.zones[zone]
            for _ in range(_MAX_TRIES):
                x, y = t @ (c0 + c + fx, r0 + r + fy)
                if shapely.contains_xy(poly, x, y):
                    break
                fx, fy = rng.random(2)
            else:  # a sliver: its representative point
                cellbox = shapely.box(*grid_bounds(t @ Affine.translation(c0 + c, r0 + r), 1, 1))
                pt = shapely.point_on_surface(shapely.intersection(cellbox, poly))
                x, y = pt.x, pt.y
        else:
            x, y = t @ (c0 + c + fx, r0 + r + fy)
        out.append((draw, float(x), float(y), int(zone), int(v[i])))
    return out


def _jobs(info: RasterInfo, zones: np.ndarray | None, nodata: float | None, block: int,
          areas: PixelAreas, strata: str | None) -> list[_Job]:
    h, w = info.shape
    return [_Job(info.path, (r, c, min(block, h - r), min(block, w - c)), nodata, info.transform, zones, areas,
                 strata=strata) for r in range(0, h, block) for c in range(0, w, block)]


# --------------------------------------------------------------------------------------
# the design
def _accuracy_per_class(users_accuracy: float | dict[str, float], table: ClassTable) -> dict[int, float]:
    if isinstance(users_accuracy, dict):
        unknown = sorted(set(users_accuracy) - set(table.names) - {"default"})
        if unknown:
            raise EstimateError(f"anticipated user's accuracy given for {unknown}, which are not classes; the classes "
                                f"are {table.names} (and 'default' for the rest)")
        default = float(users_accuracy.get("default", 0.8))
        return {c.id: float(users_accuracy.get(c.name, default)) for c in table}
    return {c.id: float(users_accuracy) for c in table}


def draw_sample(
    mask: str | os.PathLike[str],
    *,
    districts: str | os.PathLike[str] | Any = None,
    name_field: str = "district",
    by_district: bool = False,
    target_se: float = 0.01,
    target_ua_se: float | None = None,
    users_accuracy: float | dict[str, float] = 0.8,
    minimum: int = 50,
    budget: int | None = None,
    seed: int = 0,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    strata: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    run_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sample:
    """Draw a stratified random sample of reference locations from a class mask.

    Parameters
    ----------
    mask : path
        A single-band class raster (a run's ``mask.tif``).
    districts, name_field : path or GeoDataFrame, str
        District boundaries: the sample stays inside them, each point records its district,
        and the design records the mapped area of every district and class.
    by_district : bool
        Strata are map class x district (each district gets its own sample size from the target,
        so district estimates are as precise as the map's); else the map classes.
    target_se : float
        Target standard error of overall accuracy for Cochran's formula (per district with
        ``by_district``).
    target_ua_se : float, optional
        Size each stratum instead for a target standard error of its user's accuracy
        (``n_h = U_h (1 - U_h) / SE^2 + 1``, at least ``minimum``); the budget still caps the total.
    users_accuracy : float or {class name: float}
        Anticipated user's accuracy per class (``"default"`` for the rest).
    minimum, budget : int
        At least ``minimum`` points per stratum; at most ``budget`` points in all.
    seed : int
        The draws depend on it alone (and the mask), not on ``workers``.
    strata : path, optional
        The user's strata: a single-band integer raster (ids 0..254) on the mask's grid, e.g.
        agro-climatic zones or last season's map; its ids replace the map classes as strata (x
        district with ``by_district``), and pixels where it is nodata are not sampled. Each
        stratum's anticipated user's accuracy is ``users_accuracy``'s default.

    Raises
    ------
    EstimateError
        No observed pixel inside the districts; a budget too small for the strata; bad settings.
    """
    import pandas as pd
    import pyproj

    src = str(mask)
    info = check_class_raster(src)
    table = (classes if isinstance(classes, ClassTable) else load_classes(classes)) if classes is not None \
        else read_mask_classes(src)
    if table is None:
        raise EstimateError(f"{src}: no class table embedded; give the class file the mask was made with (--classes)")
    nod = nodata if nodata is not None else info.nodata
    zones = None
    names: list[str] = []
    dsrc = None
    if districts is not None:
        d = read_districts(districts, name_field, crs=info.crs, warn=False)
        footprint = shapely.box(*grid_bounds(info.transform, *info.shape))
        clipped = shapely.intersection(np.asarray(d.gdf.geometry.values, dtype=object), footprint)
        keep = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
        if not keep.any():
            raise EstimateError(f"none of the districts in {d.source} overlaps {src}; check both files' CRS")
        zones = clipped[keep]
        names = [str(n) for n in d.names[keep]]
        dsrc = d.source
    elif by_district:
        raise EstimateError(f"{src}: strata by district need the district boundaries (--districts FILE "
                            f"--name-field ATTR)")
    spath = None
    if strata is not None:
        spath = str(strata)
        sinfo = check_class_raster(spath)
        try:
            check_same_grid(info, sinfo)
        except GeosegError as e:
            raise EstimateError(f"{spath}: the strata raster is not on the mask's grid ({e}); warp it onto "
                                f"{src}'s grid first, e.g. `gdalwarp -r near -te ... -tr ... strata.tif out.tif`") from None
    areas = pixel_areas(info.transform, info.crs, info.shape)
    jobs = _jobs(info, zones, None if nod is None else float(nod), SAMPLE_BLOCK, areas, spath)
    nw = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    totals = Runner(nw).map(_totals, jobs, progress)
    # pieces of (block, zone, stratum value, class) with their m2, in block order
    cb = np.concatenate([np.full(len(t[0]), b, np.int64) for b, t in enumerate(totals)])
    cz, cs, cv = (np.concatenate([t[i] for t in totals]).astype(np.int64) for i in range(3))
    ca = np.concatenate([t[3] for t in totals])
    if len(ca) == 0 or ca.sum() <= 0:
        raise EstimateError(f"{src}: no observed pixel {'inside the districts' if zones is not None else ''}; "
                            f"nothing to sample")
    known = {c.id for c in table}
    if (bad := sorted({int(x) for x in cv} - known)):
        raise EstimateError(f"{src}: holds class values {bad} that are not in its class table ({table.names}); "
                            f"give the class file the mask was made with (--classes) or its nodata (--nodata)")
    # every mapped area per district (or the whole map) and class
    mz = np.bincount(cz * 256 + cv, weights=ca)
    mapped = [{"district": names[int(i) // 256] if zones is not None else None, "class_id": int(i) % 256,
               "area_ha": float(mz[i]) / 1e4} for i in np.flatnonzero(mz)]
    # the cells a point is drawn from: (block, zone, stratum value), and the strata
    ck, cinv = np.unique((cb * (1 << 20) + cz) * 256 + cs, return_inverse=True)
    ca = np.bincount(cinv, weights=ca, minlength=len(ck))
    cb, cz, cs = ck // (256 << 20), (ck // 256) % (1 << 20), ck % 256
    skey = cz * 256 + cs if by_district else cs
    strata_keys = np.unique(skey)
    stratum_of_cell = np.searchsorted(strata_keys, skey)
    stratum_m2 = np.bincount(stratum_of_cell, weights=ca, minlength=len(strata_keys))
    s_value = (strata_keys % 256) if by_district else strata_keys
    s_zone = (strata_keys // 256) if by_district else np.full(len(strata_keys), -1)
    ua = _accuracy_per_class(users_accuracy, table)
    if spath is None:
        s_ua = np.array([ua[int(c)] for c in s_value])
    else:
        default = float(users_accuracy.get("default", 0.8)) if isinstance(users_accuracy, dict) else float(users_accuracy)
        s_ua = np.full(len(strata_keys), default)
    try:
        if target_ua_se is not None:
            n_h = np.maximum(points_for_users_accuracy(s_ua, target_ua_se), minimum)
            if budget is not None and n_h.sum() > budget:
                n_h = allocate(budget, n_h.astype(float), min(minimum, budget // len(n_h)), budget=budget)
        else:
            n_h = _sizes(by_district, s_zone, stratum_m2, s_ua, target_se, minimum, budget)
    except EstimateError as e:
        raise EstimateError(f"{src}: {e}") from None
    # the draws: per stratum, uniform numbers in its area, located in a cell, then a pixel, then a place
    rng = np.random.default_rng(seed)
    draws_by_block: dict[int, list[tuple[int, int, int, float]]] = {}
    draw_stratum = []
    k = 0
    for h in range(len(strata_keys)):
        sel = np.flatnonzero(stratum_of_cell == h)
        cum = np.cumsum(ca[sel])
        u = rng.random(int(n_h[h])) * cum[-1]
        at = np.minimum(np.searchsorted(cum, u, side="right"), len(sel) - 1)
        for uu, j in zip(u.tolist(), at.tolist(), strict=True):
            cell = sel[j]
            before = cum[j - 1] if j > 0 else 0.0
            draws_by_block.setdefault(int(cb[cell]), []).append((k, int(cz[cell]), int(cs[cell]), uu - before))
            draw_stratum.append(h)
            k += 1
    located = Runner(nw).map(_locate, [replace(jobs[b], draws=tuple(d), seed=seed)
                                       for b, d in sorted(draws_by_block.items())])
    n = k
    xs, ys, zs, cls = np.zeros(n), np.zeros(n), np.full(n, -1, np.int64), np.zeros(n, np.int64)
    for part in located:
        for i, x, y, z, c in part:
            xs[i], ys[i], zs[i], cls[i] = x, y, z, c
    draw_stratum_a = np.array(draw_stratum, np.int64)
    point_ids = rng.permutation(n) + 1  # ids say nothing about the stratum
    lon, lat = pyproj.Transformer.from_crs(info.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    district = [names[z] if z >= 0 else "" for z in zs] if zones is not None else [""] * n
    points = pd.DataFrame({"point_id": point_ids, "district": district, "lon": np.round(lon, 7),
                           "lat": np.round(lat, 7), "x": xs, "y": ys, "reference": [""] * n})
    points = points.sort_values("point_id", kind="stable").reset_index(drop=True)
    stratum_name = [_stratum_name(table, int(s_value[h]), names[s_zone[h]] if s_zone[h] >= 0 else None,
                                  user=spath is not None) for h in range(len(strata_keys))]
    key = pd.DataFrame({"point_id": point_ids, "stratum": draw_stratum_a,
                        "stratum_name": [stratum_name[h] for h in draw_stratum_a],
                        "class_id": cls, "crop": [table[int(c)].name for c in cls],
                        "unit": zs if zones is not None else np.full(n, -1)})
    key = key.sort_values("point_id", kind="stable").reset_index(drop=True)
    design = {
        "format": DESIGN_FORMAT,
        "version": 1,
        "mask": {"path": os.path.abspath(src), "sha256": file_sha256(src), "width": info.shape[1],
                 "height": info.shape[0], "crs": info.crs.to_wkt(), "transform": list(info.transform)[:6],
                 "nodata": None if nod is None else float(nod)},
        "run_id": run_id,
        "districts": None if zones is None else {"path": dsrc, "name_field": name_field, "names": names},
        "classes": [{"id": c.id, "name": c.name} for c in table],
        "strata_by": ("strata" if spath else "class") + ("_district" if by_district else ""),
        "strata_raster": None if spath is None else {"path": os.path.abspath(spath), "sha256": file_sha256(spath)},
        "settings": {"target_se": target_se, "target_ua_se": target_ua_se, "users_accuracy": users_accuracy, "minimum": minimum,
                     "budget": budget, "seed": seed},
        "total_area_ha": float(stratum_m2.sum()) / 1e4,
        "anticipated_overall_se": (anticipated_overall_se(stratum_m2, s_ua, n_h)
                                   if not by_district and spath is None else None),
        "strata": [{"stratum": h, "name": stratum_name[h], ("value" if spath else "class_id"): int(s_value[h]),
                    "district": names[s_zone[h]] if s_zone[h] >= 0 else None,
                    "area_ha": float(stratum_m2[h]) / 1e4, "n": int(n_h[h])} for h in range(len(strata_keys))],
        "mapped": mapped,
        "points": n,
    }
    return Sample(design, points, key, info.crs)


def _sizes(by_district: bool, s_zone: np.ndarray, stratum_m2: np.ndarray, s_ua: np.ndarray, target_se: float,
           minimum: int, budget: int | None) -> np.ndarray:
    """Points per stratum: Cochran's total (per district with ``by_district``), then the allocation."""
    if not by_district:
        return allocate(cochran_total(stratum_m2, s_ua, target_se), stratum_m2, minimum, budget=budget)
    n_h = np.zeros(len(stratum_m2), np.int64)
    for zi in np.unique(s_zone):
        sel = s_zone == zi
        n_h[sel] = allocate(cochran_total(stratum_m2[sel], s_ua[sel], target_se), stratum_m2[sel], minimum)
    if budget is not None and n_h.sum() > budget:
        n_h = allocate(budget, stratum_m2, min(minimum, budget // len(n_h)), budget=budget)
    return n_h


def _stratum_name(table: ClassTable, value: int, district: str | None, *, user: bool = False) -> str:
    if user:
        name = f"stratum {value}"
    else:
        name = table[value].name if 0 <= value < len(table) else f"class_{value}"
    return f"{name} / {district}" if district is not None else name


# --------------------------------------------------------------------------------------
# writing, and the command's entry point
def _refuse_existing(out: Path, overwrite: bool) -> None:
    if (out / "design.json").exists() and not overwrite:
        raise EstimateError(
            f"{out}: holds a sample already ({out / 'design.json'}); points labelled for it would not match a "
            f"new one - choose another --out, or pass --overwrite to replace it"
        )


def write_sample(sample: Sample, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``design.json``, ``points.gpkg``, ``points.csv`` and ``key.csv`` into ``out_dir``, all
    or nothing: into a temporary folder beside it, renamed into place when complete.

    Raises
    ------
    EstimateError
        ``out_dir`` holds a sample already and ``overwrite`` is False (labels collected for
        it would no longer match).
    """
    import geopandas as gpd

    out = Path(out_dir)
    _refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        gdf = gpd.GeoDataFrame(sample.points, geometry=gpd.points_from_xy(sample.points.x, sample.points.y),
                               crs=sample.crs)
        write_vector(gdf, tmp / "points.gpkg", layer="points")
        write_table(sample.points, tmp / "points.csv")
        write_table(sample.key, tmp / "key.csv")
        write_text_atomic(tmp / "design.json", json.dumps(sample.design, indent=1) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def sample_file(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    districts: str | os.PathLike[str] | None = None,
    name_field: str | None = None,
    overwrite: bool = False,
    **kw: Any,
) -> tuple[Path, Sample]:
    """``geoseg sample``: draw from a run folder (its mask and districts; written to its ``sample/``)
    or from a mask file (``out`` required), write it (:func:`write_sample`) and return its folder.

    Raises
    ------
    EstimateError
        A mask without ``out``; a run folder without a mask; the errors of :func:`draw_sample`.
    """
    p = Path(source)
    run_id = None
    if p.is_dir():
        if not (p / MANIFEST).exists():
            raise EstimateError(f"{p}: no {MANIFEST}; expected a run folder (runs/<name>/latest) or a mask file")
        manifest = read_manifest(p)
        mask = run_outputs(p, manifest).get("mask") or RunPaths(p).mask
        if not Path(mask).exists():
            raise EstimateError(f"{p}: the run has no mask ({mask}); finish it with `geoseg run WORKFLOW --resume`")
        if districts is None:
            d_path, d_field = run_districts(p, manifest)
            if d_path is not None and d_path.exists():
                districts, name_field = d_path, name_field or d_field
        run_id = manifest.get("run_id")
        target = Path(out) if out is not None else RunPaths(p).sample
    else:
        if out is None:
            raise EstimateError(f"{p}: a mask file; give the folder to write the sample to (--out DIR)")
        mask = p
        target = Path(out)
    _refuse_existing(target, overwrite)  # before the draw, which reads the whole mask
    sample = draw_sample(mask, districts=districts, name_field=name_field or "district", run_id=run_id, **kw)
    return write_sample(sample, target, overwrite=overwrite), sample

