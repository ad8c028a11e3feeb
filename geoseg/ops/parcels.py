"""The user's own parcels: each parcel's crop from a class mask, instead of polygons traced from it.

A cadastral, LPIS or Fields of The World parcel layer already says where each field is; what
it lacks is the crop. :func:`parcel_crops` gives every parcel the ground area of each class
inside it, counted with the same rule the district areas use (:mod:`geoseg.ops.areas`: pixels
burnt at their centres, then the pixels a parcel's outline cuts corrected to their **exact
fractional coverage**, each pixel weighted by its own ground area), and from them:

* ``class_id`` / ``crop:name``: the class with the largest observed area in the parcel (its
  majority; ties: the lowest id);
* ``class_share``: that class's share of the observed area, and ``share:<class>`` for every
  class of the table;
* ``observed``: the share of the parcel's ground area the mask observed (not nodata, cloud or
  outside the raster);
* ``confidence``: the mean confidence over the observed area (with a confidence raster),
  coverage-weighted the same way;
* ``area_ha``, ``metrics:area``, ``metrics:perimeter``: the parcel polygon's own ground area and
  outline on the ellipsoid.

Parcels with no observed pixel have no crop and are left out of the result (counted in its
``attrs["unobserved"]``). Parcels are read in any vector format and CRS; invalid outlines are
repaired, non-polygons and empty geometries skipped (counted in ``attrs["skipped"]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from rasterio.transform import array_bounds

from geoseg.classes import ClassTable, crop_names, load_classes
from geoseg.core.geodesy import areas_m2, perimeters_m
from geoseg.core.overlay import largest_overlap
from geoseg.errors import AreaError, LabelError, portable_errors
from geoseg.io.districts import read_districts
from geoseg.io.fiboa import code_list_id, determination_column
from geoseg.io.objects import join, written_to
from geoseg.io.paths import STDOUT, check_overwrite
from geoseg.io.raster import check_outputs, check_same_grid, raster_info, read_mask_classes
from geoseg.io.vector import check_stream_vector, feature_count, read_vector, vector_driver, write_vector
from geoseg.ops.areas import check_class_raster, zone_class_areas
from geoseg.ops.polygonize import observed_time
from geoseg.parallel import Runner

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd

__all__ = ["DEFAULT_PARCELS_PER_PART", "DEFAULT_PARCEL_BLOCK", "ParcelResult", "parcel_crops", "parcel_crops_file",
           "parcel_dataset", "part_name"]

#: Block side for counting parcels: a block's parcels are burnt together, and thousands of
#: small parcels fit one 1024 px block.
DEFAULT_PARCEL_BLOCK = 1024
#: fiboa's ``determination:method`` of boundaries someone else drew: geoseg cannot know how.
PARCEL_METHOD = "unknown"


def _read_parcels(parcels: Any, id_field: str | None, crs: Any, first: int = 0,
                  count: int | None = None) -> tuple[gpd.GeoDataFrame, np.ndarray, int, np.ndarray]:
    """The usable parcels in ``crs`` (outlines repaired), their ids as text, how many were skipped,
    and each one's position in the file (0-based; features ``first`` to ``first + count`` are read)."""
    import geopandas as gpd

    if isinstance(parcels, gpd.GeoDataFrame):
        gdf = parcels.iloc[first:None if count is None else first + count] if first or count is not None else parcels
    else:
        gdf = read_vector(parcels, skip=first, count=count)
    src = "the parcels" if isinstance(parcels, gpd.GeoDataFrame) else str(parcels)
    if gdf.crs is None:
        raise LabelError(f"{src}: has no CRS, so its parcels cannot be placed on the mask ({crs}); assign one, e.g. "
                         f"`ogr2ogr -a_srs EPSG:4326 fixed.gpkg {src}`")
    if id_field is not None and id_field not in gdf.columns:
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        raise LabelError(f"{src}: has no attribute {id_field!r}; its attributes are {cols} - pass the one that "
                         f"identifies a parcel (--parcel-id), or none to number them 1, 2, ...")
    ids = (gdf[id_field].astype(str).to_numpy(object) if id_field is not None
           else np.arange(first + 1, first + len(gdf) + 1).astype(str).astype(object))
    geom = gdf.geometry.to_numpy()
    ok = ~(shapely.is_missing(geom) | shapely.is_empty(geom))
    bad = ok & ~shapely.is_valid(np.where(ok, geom, None))
    if bad.any():
        fixed = shapely.make_valid(geom[bad])
        geom = geom.copy()
        geom[bad] = [_polygonal(g) for g in fixed]
    poly = ok & np.isin(shapely.get_type_id(geom), [3, 6]) & ~shapely.is_empty(geom)
    if not poly.any() and first == 0 and count is None:
        raise LabelError(f"{src}: holds no parcel polygons ({len(gdf)} features); expected the parcels as polygons")
    out = gpd.GeoDataFrame({"_id": ids[poly]}, geometry=geom[poly], crs=gdf.crs).to_crs(crs)
    return out.reset_index(drop=True), ids[poly], int((~poly).sum()), first + np.flatnonzero(poly)


def _table(classes: ClassTable | str | os.PathLike[str] | None, mask: str) -> ClassTable | None:
    """The class table given, else the mask's own."""
    if classes is None:
        return read_mask_classes(mask)
    return classes if isinstance(classes, ClassTable) else load_classes(classes)


def _polygonal(g: Any) -> Any:
    """The polygon parts of a repaired geometry (a MultiPolygon, a Polygon, or empty)."""
    if g is None or shapely.get_type_id(g) in (3, 6):
        return g
    parts = [p for p in shapely.get_parts(g) if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def parcel_crops(
    mask_path: str | os.PathLike[str],
    parcels: str | os.PathLike[str] | gpd.GeoDataFrame,
    *,
    id_field: str | None = None,
    confidence: str | os.PathLike[str] | None = None,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    block: int = DEFAULT_PARCEL_BLOCK,
    workers: int | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
    observed: Any = None,
    districts: str | os.PathLike[str] | Any | None = None,
    name_field: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    first: int = 0,
    count: int | None = None,
) -> gpd.GeoDataFrame:
    """Each parcel's crop, class shares, observed share and confidence from a class mask (see
    the module notes).

    Parameters
    ----------
    mask_path : path
        A class mask (a geoseg mask, or any single-band class raster with a nodata value).
    parcels : path or GeoDataFrame
        The parcel polygons, any format and CRS.
    id_field : str, optional
        The parcels' attribute that identifies one (the ``id`` column); default 1, 2, ... in
        file order.
    confidence : path, optional
        The mask's confidence raster: adds ``confidence``.
    classes, nodata
        As :func:`geoseg.ops.areas.district_areas_raster` takes them.
    block, workers, progress
        Blocks of ``block`` px counted on ``workers`` threads.
    first, count
        Only the parcels ``first`` to ``first + count`` in file order (a part of a large layer,
        :func:`parcel_dataset`); none of them over the mask then gives an empty result, not an
        error. ``field_id`` is a parcel's position in the file + 1 either way.
    run_id, model_id, observed, districts, name_field
        As :func:`geoseg.ops.polygonize.polygonize_raster` takes them (``district``: the district
        each parcel overlaps most).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per observed parcel, in the mask's CRS, in the parcels' order.

    Raises
    ------
    LabelError
        Parcels without CRS or polygons, a missing ``id_field``.
    AreaError
        A mask that is not a class raster, class values outside the table, no parcel over the mask.
    """
    import geopandas as gpd

    src = str(mask_path)
    info = check_class_raster(src)
    observed = observed_time(observed, src)
    table = _table(classes, src)
    if table is None:
        raise AreaError(f"{src}: carries no class table; pass the class file (--classes classes.yaml)")
    cinfo = None
    if confidence is not None:
        cinfo = raster_info(confidence)
        check_same_grid(info, cinfo)
    dist = None
    if districts is not None:
        if not name_field:
            raise AreaError("districts given without name_field; pass the attribute that names a district")
        dist = read_districts(districts, name_field, crs=info.crs)
    part = bool(first) or count is not None
    gdf, ids, skipped, pos = _read_parcels(parcels, id_field, info.crs, first, count)
    geoms = gdf.geometry.to_numpy()
    h, w = info.shape
    footprint = shapely.box(*array_bounds(h, w, info.transform))
    clipped = shapely.intersection(geoms, footprint)
    over = np.flatnonzero(~shapely.is_empty(clipped) & (shapely.area(clipped) > 0))
    if not len(over) and part:  # a part of the layer away from the mask: nothing to count
        empty = gpd.GeoDataFrame(geometry=geoms[:0], crs=info.crs)
        empty.attrs.update(unobserved=len(geoms), skipped=skipped)
        return empty
    if not len(over):
        b = shapely.total_bounds(geoms)
        raise AreaError(f"none of the {len(geoms)} parcels overlaps {src}: parcels span {tuple(round(v, 3) for v in b)}, "
                        f"the mask {tuple(round(v, 3) for v in footprint.bounds)} (in {info.crs.to_string()}); check "
                        f"that both files have the right CRS")
    k = len(table)
    layers = non_overlapping_layers(clipped[over])
    zi, cv, m2 = _by_layers(layers, lambda z: zone_class_areas(info, z, nodata=nodata, table=table, block=block,
                                                                workers=workers, progress=progress), clipped[over])
    if len(cv) and int(cv.max(initial=-1)) >= k:
        raise AreaError(f"{src}: holds class value {int(cv.max())} inside the parcels, which is not in the class table "
                        f"({k} classes); pass the class file the mask was made with (--classes), or its nodata value "
                        f"(--nodata)")
    n = len(over)
    cls = cv >= 0
    area = np.bincount(zi[cls] * k + cv[cls], weights=m2[cls], minlength=n * k).reshape(n, k)
    obs = area.sum(axis=1)
    full_m2 = areas_m2(geoms[over], info.crs)
    seen = obs > 0
    majority = area.argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = area / np.where(seen, obs, 1.0)[:, None]
    conf = None
    if cinfo is not None:
        czi, cval, cm2 = _by_layers(layers, lambda z: zone_class_areas(cinfo, z, nodata=0, block=block,
                                                                        workers=workers), clipped[over])
        ok = cval > 0
        csum = np.bincount(czi[ok], weights=cval[ok] * cm2[ok], minlength=n)
        carea = np.bincount(czi[ok], weights=cm2[ok], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(carea > 0, csum / np.where(carea > 0, carea, 1.0) / 255.0, np.nan)
    keep = np.flatnonzero(seen)
    rows = over[keep]
    cid = majority[keep].astype(np.int32)
    names = table.names
    data: dict[str, Any] = {
        "id": ids[rows].astype(object),
        "collection": np.full(len(keep), str(run_id) if run_id else "geoseg", dtype=object),
        "field_id": pos[rows].astype(np.int64) + 1,
        "class_id": cid,
        "crop:code": cid.astype(str).astype(object),
        "crop:name": crop_names(cid, table).astype(object),
        "crop:code_list": np.full(len(keep), code_list_id(table, cid), dtype=object),
        "area_ha": full_m2[keep] / 1e4,
        "metrics:area": full_m2[keep].astype(np.float32),
        "metrics:perimeter": perimeters_m(geoms[rows], info.crs).astype(np.float32),
    }
    if conf is not None:
        data["confidence"] = conf[keep]
    if dist is not None:
        hit = largest_overlap(geoms[rows], dist.gdf.geometry.values)
        col = np.full(len(rows), None, dtype=object)
        col[hit >= 0] = dist.names[hit[hit >= 0]]
        data["district"] = col
    data["class_share"] = shares[keep, cid]
    data["observed"] = np.minimum(obs[keep] / np.where(full_m2[keep] > 0, full_m2[keep], 1.0), 1.0)
    for i, name in enumerate(names):
        data[f"share:{name}"] = shares[keep, i]
    data["determination:method"] = np.full(len(keep), PARCEL_METHOD, dtype=object)
    data["determination:datetime"] = determination_column(observed, len(keep))
    data["determination:details"] = np.full(
        len(keep), f"geoseg: crop of each parcel from the class mask {Path(src).name}"
        + (f" (model {model_id})" if model_id else ""), dtype=object)
    if run_id is not None:
        data["run_id"] = str(run_id)
    if model_id is not None:
        data["model_id"] = str(model_id)
    out = gpd.GeoDataFrame(data, geometry=geoms[rows], crs=info.crs)
    out.attrs["unobserved"] = int(n - len(keep)) + int(len(geoms) - n)
    out.attrs["skipped"] = skipped
    return out


#: Parcels per part of a run's fields dataset: a task reads, counts and writes this many.
DEFAULT_PARCELS_PER_PART = 50_000


@dataclass(frozen=True)
class _PartJob:
    mask: str
    parcels: str
    folder: str
    first: int
    count: int
    kwargs: tuple[tuple[str, Any], ...]

    def __dask_tokenize__(self) -> Any:
        # the staging folder is the run's own, so folder and first name the job
        return ("geoseg-parcel-part", self.mask, self.parcels, self.folder, self.first, self.count)


def part_name(first: int) -> str:
    """The file of the parcels dataset's part that starts at parcel ``first`` (file order)."""
    return f"part-parcels-{first:010d}.parquet"


@portable_errors
def _run_parcel_part(job: _PartJob) -> dict[str, Any]:
    """One part of the parcels: read, counted, written as ``part-parcels-<first>.parquet`` (when any
    of them lies over the mask); returns what the client tallies, never the parcels."""
    gdf = parcel_crops(job.mask, job.parcels, first=job.first, count=job.count, workers=1, **dict(job.kwargs))
    if len(gdf):
        with written_to(join(job.folder, part_name(job.first))) as path:
            write_vector(gdf, path)
    return {"parcels": len(gdf), "unobserved": int(gdf.attrs.get("unobserved", 0)),
            "skipped": int(gdf.attrs.get("skipped", 0))}


def parcel_dataset(
    mask_path: str | os.PathLike[str],
    parcels: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    per_part: int = DEFAULT_PARCELS_PER_PART,
    client: Any = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> dict[str, int]:
    """:func:`parcel_crops` of a parcel file in parts of ``per_part`` parcels (file order), each
    read, counted and written by its own task (on ``client``'s workers, or local threads) as a
    part of the GeoParquet dataset ``folder`` (a folder that exists, or an object-store folder the
    workers put their parts in): a state's LPIS layer never sits whole in one process. ``kwargs`` are :func:`parcel_crops`' (``id_field``, ``confidence``,
    ``classes``, ``districts``, ...). Returns the tally: parcels written, unobserved, skipped.

    Raises
    ------
    AreaError
        No parcel of the file lies over the mask.
    """
    if per_part < 1:
        raise AreaError(f"per_part {per_part}: expected at least 1 parcel per part")
    src = str(parcels)
    n = feature_count(src)
    jobs = [_PartJob(str(mask_path), src, str(folder), first, min(per_part, n - first), tuple(sorted(kwargs.items())))
            for first in range(0, n, per_part)]
    tallies = Runner(workers, client).map(_run_parcel_part, jobs, progress)
    out = {k: sum(t[k] for t in tallies) for k in ("parcels", "unobserved", "skipped")}
    if n and out["skipped"] == n:
        raise LabelError(f"{src}: holds no parcel polygons ({n} features); expected the parcels as polygons")
    if not out["parcels"]:
        raise AreaError(f"none of the {n} parcels of {src} lies over {mask_path} (or none was observed there); check "
                        f"that both files have the right CRS and cover the same place")
    return out


def non_overlapping_layers(geoms: np.ndarray) -> np.ndarray:
    """A layer number per polygon such that no two polygons of one layer share interior (they may
    touch): greedy, in order, so a layer without overlaps is one layer 0.

    The counting rule burns each pixel wholly inside a zone to one zone, which is right for a
    partition (districts, traced fields) but would give a pixel inside two overlapping parcels
    to only one of them; counted layer by layer, each parcel gets every pixel inside it.

    >>> b = shapely.box
    >>> non_overlapping_layers(np.array([b(0, 0, 2, 2), b(2, 0, 4, 2), b(1, 1, 3, 3), b(5, 5, 6, 6)])).tolist()
    [0, 0, 1, 0]
    """
    n = len(geoms)
    out = np.zeros(n, np.int64)
    if n < 2:
        return out
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    sel = a < b
    a, b = a[sel], b[sel]
    inner = ~shapely.touches(geoms[a], geoms[b])
    a, b = a[inner], b[inner]
    if not len(a):
        return out
    nbrs: dict[int, list[int]] = {}
    for i, j in zip(a.tolist(), b.tolist()):
        nbrs.setdefault(j, []).append(i)  # i < j: i's layer is set when j's is chosen
    for j in sorted(nbrs):
        used = {int(out[i]) for i in nbrs[j]}
        out[j] = next(L for L in range(len(used) + 1) if L not in used)
    return out


def _by_layers(layers: np.ndarray, count: Callable[[np.ndarray], tuple[np.ndarray, ...]], zones: np.ndarray
               ) -> tuple[np.ndarray, ...]:
    """``count(zones)`` (zone index first) over each layer of non-overlapping zones, the indices
    mapped back to positions in ``zones``."""
    if not layers.any():
        return count(zones)
    parts = []
    for L in np.unique(layers):
        idx = np.flatnonzero(layers == L)
        zi, *rest = count(zones[idx])
        parts.append((idx[zi], *rest))
    return tuple(np.concatenate(col) for col in zip(*parts))


@dataclass(frozen=True)
class ParcelResult:
    """What :func:`parcel_crops_file` wrote."""

    path: Path
    parcels: int
    unobserved: int
    skipped: int
    hectares: dict[str, float]

    def lines(self) -> list[str]:
        crops = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(self.hectares.items(), key=lambda kv: -kv[1]))
        extra = []
        if self.unobserved:
            extra.append(f"{self.unobserved:,} parcels with no observed pixel left out")
        if self.skipped:
            extra.append(f"{self.skipped:,} features that are not polygons skipped")
        return [f"{self.path}: {self.parcels:,} parcels with their crop" + (f" ({'; '.join(extra)})" if extra else ""),
                f"  hectares: {crops or '(none)'}"]


def parcel_crops_file(
    mask_path: str | os.PathLike[str],
    parcels: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    driver: str | None = None,
    overwrite: bool = True,
    **kwargs: Any,
) -> ParcelResult:
    """:func:`parcel_crops`, then :func:`geoseg.io.vector.write_vector` to ``out`` (any GIS format,
    ``-`` for GeoJSON on standard output)."""
    if os.fspath(out) == STDOUT:
        check_stream_vector(driver)
    else:
        vector_driver(out, driver)
        check_outputs({"the parcels file": out}, {"the mask": mask_path, "the parcels": parcels,
                                                  "the confidence raster": kwargs.get("confidence")})
        check_overwrite(out, overwrite, "the parcels file")
    gdf = parcel_crops(mask_path, parcels, **kwargs)
    table = _table(kwargs.get("classes"), str(mask_path))
    path = write_vector(gdf, out, driver=driver, classes=table)
    ha = gdf.groupby("crop:name")["area_ha"].sum().to_dict() if len(gdf) else {}
    return ParcelResult(Path(path), len(gdf), int(gdf.attrs.get("unobserved", 0)), int(gdf.attrs.get("skipped", 0)),
                        {str(k): float(v) for k, v in ha.items()})
