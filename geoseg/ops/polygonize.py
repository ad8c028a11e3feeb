"""Polygonise a class-mask file into fields, block by block, with no splits at block seams.

:func:`polygonize_raster` reads the mask (and a confidence raster) in blocks with a halo
of :func:`~geoseg.core.sieve.sieve_halo` pixels (:class:`~geoseg.io.raster.BlockReader`),
sieves and traces each block with the pure core (:mod:`geoseg.core.sieve`,
:mod:`geoseg.core.trace`), the blocks in parallel on a :class:`~geoseg.parallel.Runner`,
and merges the pieces of fields cut by block seams (:mod:`geoseg.core.merge`), so that its
result equals vectorising the whole sieved raster at once; it then adds each field's
class, ground area and perimeter (:mod:`geoseg.core.geodesy`), mean confidence and
district. :func:`polygonize_file` writes the result in any GIS format. The conventions for
fields, polygons and ``field_id`` are in :mod:`geoseg.core.trace`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from geoseg.classes import ClassTable, crop_names, load_classes, unknown_classes
from geoseg.core.geodesy import PixelAreas, perimeters_m, pixel_areas
from geoseg.core.grid import Tile, TileGrid, Window, tile_grid
from geoseg.core.instances import (
    Separation,
    check_separation,
    class_counts,
    field_graph,
    majority,
    separation_from_tag,
    separation_halo,
)
from geoseg.core.merge import merge_pieces, seam_pairs
from geoseg.core.overlay import largest_overlap
from geoseg.core.sieve import (
    DEFAULT_MIN_AREA_HA,
    DEFAULT_SIEVE_PASSES,
    min_area_pixels,
    runs_of_labels,
    sieve,
    sieve_halo,
)
from geoseg.core.trace import Fields, vectorize_block
from geoseg.errors import PolygonizeError, portable_errors
from geoseg.io.districts import Districts, read_districts
from geoseg.io.fiboa import DETERMINATION_METHOD, code_list_id, determination_column
from geoseg.io.objects import download_folder, join, written_to
from geoseg.io.paths import STDOUT, check_overwrite
from geoseg.io.raster import (
    BlockReader,
    RasterInfo,
    atomic_path,
    band_by_name,
    check_outputs,
    check_same_grid,
    check_size,
    publish_folder,
    raster_info,
    raster_tags,
    read_mask_classes,
    warn_no_nodata,
)
from geoseg.io.vector import check_stream_vector, vector_driver, write_vector
from geoseg.parallel import Runner, tune_allocator

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd

__all__ = [
    "DEFAULT_BLOCK",
    "exclude_ids",
    "observed_time",
    "polygonize_raster",
    "resolve_separation",
    "polygonize_file",
    "polygonize_dataset",
    "FieldDataset",
    "PolygonizeResult",
    "SEAM_PART",
]

log = logging.getLogger(__name__)
#: Default block (core) size in pixels for :func:`polygonize_raster`. Fewer seams mean
#: fewer pieces to merge: on field masks 2048 px blocks are quicker than 1024 px ones
#: (benchmarks/README.md, "Seam merge"); on pure noise, where the output rather than the
#: seams dominates, 1024 px blocks are.
DEFAULT_BLOCK = 2048

#: The labels along a block core's four edges, 1-based piece index or 0 (for the seams).
Edges = dict[str, np.ndarray]


# --------------------------------------------------------------------------------------
# one block: read (geoseg.io.raster), sieve and trace (geoseg.core)
@dataclass(frozen=True)
class _BlockJob:
    mask: str
    confidence: str | None
    tile: Tile
    nodata: float | None
    exclude: tuple[int, ...]
    min_pixels: int
    passes: int
    width: int
    transform: Affine
    areas: PixelAreas
    #: The confidence raster's boundary band and how to separate fields on it (None: fields are
    #: 4-connected regions of one class); ``n_classes`` sizes the class counts of such fields.
    boundary_band: int | None = None
    separation: Separation | None = None
    n_classes: int = 256

    def __dask_tokenize__(self) -> Any:
        return ("geoseg._BlockJob", self.mask, self.confidence, self.tile.__dask_tokenize__(), self.nodata,
                self.exclude, self.min_pixels, self.passes, self.boundary_band, self.separation)


def _inside(window: Window, height: int, width: int) -> Window:
    """The part of ``window`` inside a raster of ``height x width`` pixels."""
    r0, c0 = max(int(window.row_off), 0), max(int(window.col_off), 0)
    r1 = min(int(window.row_off + window.height), height)
    c1 = min(int(window.col_off + window.width), width)
    return Window(c0, r0, c1 - c0, r1 - r0)


@portable_errors
def _run_block(job: _BlockJob) -> tuple[Fields, Edges]:
    """Read one block (plus halo, clipped to the raster), sieve, vectorise its core.

    Returns the core's pieces and the labels along the core's four edges (for the seams).
    Keeps freed memory for reuse first (:func:`geoseg.parallel.tune_allocator`): a Dask
    worker that has run no inference would otherwise polygonise at about half speed (see
    :mod:`geoseg.parallel`).
    """
    tune_allocator()
    core = job.tile.core
    with BlockReader(job.mask, nodata=job.nodata) as reader:
        H, W = reader.shape
        inner = _inside(job.tile.read, H, W)
        block = reader.read(inner)
        arr, valid = block.array, block.valid()
    conf = bnd = None
    if job.confidence is not None:
        with BlockReader(job.confidence) as reader:
            conf = reader.read_array(core)
            if job.boundary_band is not None:
                bnd = reader.read_array(inner, band=job.boundary_band)
    r0, c0, r1, c1 = inner.row_off, inner.col_off, inner.row_off + inner.height, inner.col_off + inner.width
    open_edges = (r0 > 0, r1 < H, c0 > 0, c1 < W)  # only the sides cut out of the raster are open
    if job.min_pixels > 1:
        arr = sieve(arr, job.min_pixels, valid=valid, passes=job.passes, open_edges=open_edges)
    cr, cc = int(core.row_off) - r0, int(core.col_off) - c0
    rows, cols = slice(cr, cr + int(core.height)), slice(cc, cc + int(core.width))
    core_arr, cvalid = arr[rows, cols], valid[rows, cols]
    area_factors = job.areas.factors(int(core.row_off), int(core.col_off), int(core.height), int(core.width))
    offset = (int(core.row_off), int(core.col_off))
    if bnd is None or job.separation is None:
        fields, runs = vectorize_block(core_arr, job.transform, nodata=None, valid=cvalid, exclude=job.exclude,
                                       confidence=conf, offset=offset, raster_width=job.width, row_areas=None,
                                       area_factors=area_factors)
        links_out: dict[str, np.ndarray] = {}
    else:  # fields separated on the boundary map: traced from their labels, classes counted
        field = valid & ~np.isin(arr, np.asarray(job.exclude, np.int64)) if job.exclude else valid
        if field.any() and (top := int(arr[field].max())) >= job.n_classes:
            raise PolygonizeError(f"{job.mask}: holds class value {top}, which is not in the class table ({job.n_classes} "
                                  f"classes); pass the class file the mask was made with (--classes), or its nodata "
                                  f"value (--nodata)")
        graph = field_graph(arr, field, bnd, job.separation, open_edges)
        del field, bnd, valid
        ce, cre = cr + int(core.height), cc + int(core.width)  # just past the core, inside the read window
        links_out = {}
        if ce < arr.shape[0]:
            links_out["bottom_link"] = graph.links(0, slice(ce - 1, ce), cols)[0]
        if cre < arr.shape[1]:
            links_out["right_link"] = graph.links(1, rows, slice(cre - 1, cre))[:, 0]
        core_arr = np.ascontiguousarray(core_arr)
        core_lab = graph.labels(rows, cols)  # the core's fields: joined by links inside the core only
        del graph, arr
        fields, runs = vectorize_block(core_lab, job.transform, nodata=None, valid=None, exclude=(),
                                       confidence=conf, offset=offset, raster_width=job.width, row_areas=None,
                                       area_factors=area_factors, runs=runs_of_labels(core_lab))
        counts = class_counts(core_lab, core_arr, fields.class_id.size, job.n_classes)  # = runs.dense()
        fields = Fields(fields.geometry, majority(counts).astype(np.int64), fields.pixels, fields.area_m2,
                        fields.first_pixel, fields.conf_sum, fields.conf_count, counts)
    h, w = core_arr.shape
    rr, ccs = np.arange(h), np.arange(w)
    edges = {"top": runs.at(np.zeros(w, np.int64), ccs), "bottom": runs.at(np.full(w, h - 1), ccs),
             "left": runs.at(rr, np.zeros(h, np.int64)), "right": runs.at(rr, np.full(h, w - 1)), **links_out}
    return fields, edges


def _resolve_classes(classes: ClassTable | str | os.PathLike[str] | None, mask: str) -> ClassTable | None:
    if classes is None:
        return read_mask_classes(mask)
    if isinstance(classes, ClassTable):
        return classes
    return load_classes(classes)


def exclude_ids(exclude: Sequence[str | int] | None, table: ClassTable | None, source: str) -> tuple[int, ...]:
    """Class ids to leave out of the fields, from names or ids; ``None``: the table's non-crop classes.

    Raises
    ------
    PolygonizeError
        A name the class table does not hold (or any name, without a table).
    """
    if exclude is None:
        return table.no_field_ids if table is not None else ()
    out = []
    for e in exclude:
        if isinstance(e, (int, np.integer)) and not isinstance(e, bool):
            out.append(int(e))
            continue
        name = str(e)
        if name.isdigit():
            out.append(int(name))
        elif table is not None and name in table.names:
            out.append(table.id_of(name))
        elif table is None:
            raise PolygonizeError(
                f"{source}: cannot exclude class {name!r}: the mask carries no class names; "
                f"pass a class file (--classes classes.yaml) or exclude by id (e.g. 0)"
            )
        else:
            raise PolygonizeError(f"{source}: no class named {name!r} to exclude; the classes are {table.names}")
    return tuple(sorted(set(out)))


def polygonize_raster(
    mask_path: str | os.PathLike[str],
    *,
    confidence: str | os.PathLike[str] | None = None,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    nodata: float | None = None,
    min_area_ha: float = DEFAULT_MIN_AREA_HA,
    exclude: Sequence[str | int] | None = None,
    block: int = DEFAULT_BLOCK,
    client: Any = None,
    workers: int | None = None,
    passes: int = DEFAULT_SIEVE_PASSES,
    districts: str | os.PathLike[str] | Any | None = None,
    name_field: str | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
    simplify_m: float | None = None,
    max_area_change: float = 0.01,
    observed: Any = None,
    progress: Callable[[int, int], None] | None = None,
    separate: bool = True,
    separation: Separation | None = None,
    max_area_ha: float | None = None,
) -> "gpd.GeoDataFrame":
    """Polygonise a class mask block by block into per-field polygons with attributes.

    Blocks of ``block x block`` pixels (plus a halo of :func:`sieve_halo` pixels) are
    read, sieved and vectorised in parallel on a :class:`~geoseg.parallel.Runner` (local
    threads, or the tasks of a Dask client); fields cut by block seams are merged
    exactly, so the result does not depend on ``block``: the same polygons as
    vectorising the whole sieved mask at once (see the module notes). Memory is bounded
    by one block per worker plus the output.

    Parameters
    ----------
    mask_path : path
        Single-band integer class raster (a geoseg mask, or any other tool's).
    confidence : path, optional
        Confidence raster on the same grid (uint8, max softmax x 255, 0 = nodata): adds
        the ``confidence`` column (mean over the field's pixels, 0..1). When it has a
        ``boundary`` band (a model trained with field polygons), touching fields of one crop
        are separated on it (``separate``).
    separate : bool
        Separate fields on the confidence raster's ``boundary`` band when it has one
        (:mod:`geoseg.core.instances`): each field then takes the majority class of its
        pixels, and ``class_share`` says which share of them that is. Without the band, or
        with ``separate=False``, a field is a 4-connected region of one class.
    separation : Separation, optional
        The boundary threshold, smallest seed, erosion and growth steps. Default: what the
        model chose on its validation blocks (the confidence raster's ``GEOSEG_SEPARATION``
        tag: a threshold, or no separation when its fields scored better unseparated), else
        :class:`~geoseg.core.instances.Separation`.
    classes : ClassTable or path, optional
        Class names and colours. Default: the table embedded in a geoseg mask, else names
        ``class_<id>``.
    nodata : number, optional
        Mask nodata value, overriding the file's.
    min_area_ha : float
        Minimum mapping unit in hectares: specks below it are sieved; 0 turns sieving off.
        Of fields separated on a boundary band, any still smaller is dropped.
    max_area_ha : float, optional
        Fields larger than this are dropped (e.g. 10 for smallholder fields; a large region of
        one crop that no boundary splits is not one field).
    exclude : sequence of str or int, optional
        Classes (names or ids) that make no polygon. Default: the class table's non-crop
        classes (``crop: false``, e.g. ``background``); ``()`` keeps every class.
    block : int
        Block (core) size in pixels.
    client : dask.distributed.Client, optional
        Run the blocks on this cluster; default: local threads.
    workers : int, optional
        Threads of this process (default: all cores): they run the blocks when no
        ``client`` is given, and merge the seams.
    passes : int
        Sieve passes.
    districts : path or GeoDataFrame, optional
        District boundaries (any CRS): adds ``district``, the district with the largest
        overlap (needs ``name_field``).
    name_field : str, optional
        The districts' attribute that names a district.
    run_id, model_id : str, optional
        Added as columns when given; ``run_id`` also names the fiboa ``collection``
        (default ``geoseg``).
    simplify_m : float, optional
        Simplify outlines with this tolerance in metres, keeping shared edges shared
        (topology-preserving coverage simplification). The tolerance is halved until no
        field's geometric area changes by more than ``max_area_change`` (relative); if
        that fails, outlines stay unsimplified. ``area_ha`` is always the pixels' area.
    max_area_change : float
        See ``simplify_m``.
    observed : str, date or datetime, optional
        When the imagery was taken (its last date, e.g. the end of the season): fiboa's
        ``determination:datetime`` ("the last timestamp at which the field was observed"; a
        date without a time zone is UTC). Default: unknown, left null - not the run's time,
        which fiboa rules out for boundaries made by ML.
    progress : callable, optional
        ``progress(done, total)`` as blocks finish.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per field, sorted by ``field_id``, with fiboa 0.3's columns and geoseg's
        (:mod:`geoseg.io.fiboa` lists them): ``id``, ``collection``, ``field_id`` (int64),
        ``class_id``, ``crop:code``, ``crop:name``, ``crop:code_list``, ``area_ha`` (ground
        area on the ellipsoid: its pixels' ground areas, :func:`~geoseg.core.geodesy.pixel_areas`, summed), ``metrics:area`` (m²), ``metrics:perimeter`` (geodesic length of the outline, m),
        ``confidence`` and ``district`` where applicable, ``determination:method``,
        ``determination:datetime``, ``determination:details``, then ``run_id`` and
        ``model_id`` when given; in the mask's CRS.

    Raises
    ------
    PolygonizeError
        Bad arguments, non-integer masks, unknown class names.
    geoseg.errors.RasterReadError
        Unreadable mask or confidence raster.
    geoseg.errors.GridMismatchError
        A confidence raster on another grid.
    """
    plan = _plan(mask_path, confidence=confidence, classes=classes, nodata=nodata, min_area_ha=min_area_ha,
                 exclude=exclude, block=block, passes=passes, districts=districts, name_field=name_field,
                 run_id=run_id, model_id=model_id, simplify_m=simplify_m, max_area_change=max_area_change,
                 observed=observed, separate=separate, separation=separation, max_area_ha=max_area_ha)
    runner = Runner(workers, client)
    results = runner.map(_run_block, plan.jobs, progress)
    # the seams: pieces of one field in several blocks merged
    fields = _merge_blocks(plan.grid, results, plan.areas, plan.with_conf, runner.workers)
    return _finish(fields, plan.attrs)


@dataclass(frozen=True)
class _Plan:
    """The checked inputs of a polygonisation: the block grid, a job per block, and what finishes
    the fields."""

    grid: TileGrid
    jobs: list[_BlockJob]
    areas: PixelAreas
    with_conf: bool
    attrs: _Attrs


def _plan(mask_path: str | os.PathLike[str], *, confidence: str | os.PathLike[str] | None = None,
          classes: ClassTable | str | os.PathLike[str] | None = None, nodata: float | None = None,
          min_area_ha: float = DEFAULT_MIN_AREA_HA, exclude: Sequence[str | int] | None = None,
          block: int = DEFAULT_BLOCK, passes: int = DEFAULT_SIEVE_PASSES,
          districts: str | os.PathLike[str] | Any | None = None, name_field: str | None = None,
          run_id: str | None = None, model_id: str | None = None, simplify_m: float | None = None,
          max_area_change: float = 0.01, observed: Any = None, separate: bool = True,
          separation: Separation | None = None, max_area_ha: float | None = None) -> _Plan:
    """Check every input before any work (see :func:`polygonize_raster`) and plan the blocks, each
    sieved and traced on its own."""
    src = str(mask_path)
    info = _check_mask(src, block, passes)
    if (nodata if nodata is not None else info.nodata) is None:
        warn_no_nodata(info)
    conf_path = None
    if confidence is not None:
        conf_path = str(confidence)
        check_same_grid(info, raster_info(conf_path))
    table = _resolve_classes(classes, src)
    excl = exclude_ids(exclude, table, src)
    sep, boundary_band = resolve_separation(conf_path, separate, separation)
    _check_max_area(max_area_ha, min_area_ha)
    observed_at = observed_time(observed, src)
    dist = None
    if districts is not None:
        if not name_field:
            raise PolygonizeError("districts given without name_field; pass the attribute that names a district")
        dist = read_districts(districts, name_field, crs=info.crs)
    areas = pixel_areas(info.transform, info.crs, (info.shape.height, info.shape.width))
    min_px = min_area_pixels(min_area_ha, areas.mean)
    grid, jobs = _plan_blocks(info, conf_path, nodata, excl, min_px, passes, block, areas,
                              (boundary_band, sep, len(table) if table is not None else 256))
    if boundary_band is not None:
        log.info("%s: fields separated on the boundary band %d of %s", src, boundary_band, conf_path)
    return _Plan(grid, jobs, areas, conf_path is not None,
                 _attrs(info, table, min_px, boundary_band, max_area_ha, simplify_m, max_area_change, dist,
                        observed_at, run_id, model_id))


@dataclass(frozen=True)
class _Attrs:
    """What turns merged field pieces into output rows: the same on the client (seam fields) and
    on the workers (fields inside one block, :func:`polygonize_dataset`)."""

    info: RasterInfo
    table: ClassTable | None
    min_px: int  # the sieve's threshold
    keep_px: int  # the area filter's (min_px for separated fields, else 1)
    max_area_ha: float | None
    simplify_m: float | None
    max_area_change: float
    districts: Districts | None
    observed: Any
    details: str
    run_id: str | None
    model_id: str | None
    #: Without a class table, the class values the code list names (None: those of the fields at hand).
    code_ids: tuple[int, ...] | None = None


def _attrs(info: RasterInfo, table: ClassTable | None, min_px: int, boundary_band: int | None,
           max_area_ha: float | None, simplify_m: float | None, max_area_change: float, dist: Districts | None,
           observed: Any, run_id: str | None, model_id: str | None,
           code_ids: tuple[int, ...] | None = None) -> _Attrs:
    details = f"geoseg: traced from the class mask {Path(info.path).name}" + (f" (model {model_id})" if model_id else "")
    return _Attrs(info, table, min_px, min_px if boundary_band is not None else 1, max_area_ha, simplify_m,
                  max_area_change, dist, observed, details, run_id, model_id, code_ids)


def _finish(fields: Fields, a: _Attrs) -> "gpd.GeoDataFrame":
    """The output rows of merged fields: class check, area filter, attributes, fiboa columns."""
    _check_classes(fields, a.table, a.info.path)
    fields = _area_filter(fields, a.keep_px, a.max_area_ha)
    gdf = _to_frame(fields, a.info, a.table, a.simplify_m, a.max_area_change)
    if a.districts is not None:
        gdf["district"] = _district_names(gdf, a.districts)
    gdf = _fiboa_columns(gdf, a.table, a.observed, a.details, a.code_ids)
    if a.run_id is not None:
        gdf["run_id"] = str(a.run_id)
    if a.model_id is not None:
        gdf["model_id"] = str(a.model_id)
    gdf["collection"] = str(a.run_id) if a.run_id else "geoseg"
    gdf.attrs["min_area_pixels"] = a.min_px
    return gdf


# --------------------------------------------------------------------------------------
# fields written where they are made: a GeoParquet dataset, one part per block
#: The part of a dataset that holds the fields merged across block seams.
SEAM_PART = "part-seams.parquet"


@dataclass(frozen=True)
class _PartJob:
    block: _BlockJob
    index: tuple[int, int]  # the block's (row, col) in the block grid
    grid_shape: tuple[int, int]
    attrs: _Attrs
    folder: str  # the dataset's staging folder

    def __dask_tokenize__(self) -> Any:
        return ("polygonize-part", self.block.__dask_tokenize__(), self.index, self.folder)


@portable_errors
def _run_part(job: _PartJob) -> tuple[Fields, Edges, dict[int, tuple[int, float]]]:
    """One block: its fields that reach no seam finished and written as the block's part of the
    dataset; the pieces that reach a seam (re-numbered, with their edges) returned for the merge,
    with ``{class_id: (fields, hectares)}`` of what was written."""
    fields, edges = _run_block(job.block)
    fields = _exact_areas(fields, job.block.areas)
    (i, j), (rows, cols) = job.index, job.grid_shape
    reach = np.zeros(len(fields) + 1, bool)
    for side, open_ in (("top", i > 0), ("bottom", i < rows - 1), ("left", j > 0), ("right", j < cols - 1)):
        if open_:
            reach[edges[side]] = True
    reach = reach[1:]
    seam = np.flatnonzero(reach)
    renumber = np.zeros(len(fields) + 1, np.int64)
    renumber[seam + 1] = np.arange(1, len(seam) + 1)
    edges = {k: (renumber[v] if k in ("top", "bottom", "left", "right") else v) for k, v in edges.items()}
    gdf = _finish(fields.take(np.flatnonzero(~reach)), job.attrs)
    _write_part(gdf, join(job.folder, f"part-{i:05d}-{j:05d}.parquet"))
    return fields.take(seam), edges, _tally(gdf)


@portable_errors
def _merge_seams(results: list[tuple[Fields, Edges, dict[int, tuple[int, float]]]], *, grid: TileGrid,
                 areas: PixelAreas, with_conf: bool, workers: int, attrs: _Attrs,
                 folder: str) -> list[dict[int, tuple[int, float]]]:
    """The seam pieces of all blocks merged, finished and written as :data:`SEAM_PART`; every
    block's tally and the seam part's."""
    tallies = [r[2] for r in results]
    seams = _merge_blocks(grid, [(f, e) for f, e, _ in results], areas, with_conf, workers)
    del results
    gdf = _finish(seams, attrs)
    # a dataset without fields still has one (empty) part, so that readers find its columns (a block
    # writes its part only when it has fields, so a tally says whether it did)
    _write_part(gdf, join(folder, SEAM_PART), keep_empty=not any(tallies))
    return [*tallies, _tally(gdf)]


def _tally(gdf: "gpd.GeoDataFrame") -> dict[int, tuple[int, float]]:
    if not len(gdf):
        return {}
    g = gdf.groupby("class_id")["area_ha"].agg(["size", "sum"])
    return {int(c): (int(r["size"]), float(r["sum"])) for c, r in g.iterrows()}


def _write_part(gdf: "gpd.GeoDataFrame", target: str, keep_empty: bool = False) -> None:
    """One part of the dataset (a local file, or an object a worker puts); none for no fields unless
    ``keep_empty`` (an empty part's columns of no value have no type of their own, which other
    parts' would contradict)."""
    if len(gdf) or keep_empty:
        with written_to(target) as path:
            write_vector(gdf, path)


@dataclass(frozen=True)
class FieldDataset:
    """What :func:`polygonize_dataset` wrote: the folder, its field count and hectares per class."""

    path: Path
    fields: int
    parts: int
    hectares: dict[str, float]
    min_area_pixels: int

    def lines(self) -> list[str]:
        first = PolygonizeResult(self.path, self.fields, self.hectares, self.min_area_pixels).lines()
        return [first[0] + f", in {self.parts} GeoParquet files", *first[1:]]


def polygonize_dataset(mask_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                       overwrite: bool = True, client: Any = None, workers: int | None = None,
                       progress: Callable[[int, int], None] | None = None, exchange: str | None = None,
                       **kwargs: Any) -> FieldDataset:
    """:func:`polygonize_raster`'s fields written where they are made: a GeoParquet dataset.

    ``out`` becomes a folder of GeoParquet files (fiboa's columns, bbox covering column): each
    block's fields that reach none of its seams are finished and written by the worker that
    traced them (``part-<row>-<col>.parquet``); only the pieces that reach a seam go on, to one
    more task that merges them and writes those fields (:data:`SEAM_PART`; with a Dask client
    the pieces travel from worker to worker). This process holds no fields, so its memory does
    not grow with their number. Read as one
    table (``geopandas.read_parquet(out)``, DuckDB's ``read_parquet('out/*.parquet')``), sorted
    by ``field_id``, the dataset equals :func:`polygonize_raster`'s result. The folder is
    written under a temporary name and renamed when complete.

    Keyword arguments are :func:`polygonize_raster`'s, but for ``simplify_m``: coverage
    simplification needs every field's neighbours at once. ``exchange``, an object-store folder
    (``s3://...``), is where workers that do not share this machine's disk put their parts; they
    are copied into ``out`` before it is published.

    Raises
    ------
    PolygonizeError
        As :func:`polygonize_raster`; ``simplify_m`` given; ``out`` exists and ``overwrite`` is False.
    """
    if kwargs.get("simplify_m"):
        raise PolygonizeError(f"{out}: simplify_m cannot be used when fields are written block by block (a "
                              f"dataset); simplify a single file instead (geoseg polygonize --simplify)")
    target = Path(out)
    dist_in = kwargs.get("districts")
    check_outputs({"the fields dataset": target},
                  {"the mask": mask_path, "the confidence raster": kwargs.get("confidence"),
                   "the district file": dist_in if isinstance(dist_in, (str, os.PathLike)) else None})
    check_overwrite(target, overwrite, "the fields dataset")
    plan = _plan(mask_path, **kwargs)
    attrs = plan.attrs
    if attrs.table is None:  # the code list names the classes found: the same in every part
        attrs = replace(attrs, code_ids=_classes_found(plan.jobs, workers, client))
    runner = Runner(workers, client)
    staging = atomic_path(target)
    staging.mkdir(parents=True)
    try:
        folder = exchange or str(staging)
        part_jobs = [_PartJob(b, t.index, plan.grid.grid_shape, attrs, folder)
                     for b, t in zip(plan.jobs, plan.grid, strict=True)]
        # the seam pieces are merged and written by one more task: on a cluster they stay there
        merge = partial(_merge_seams, grid=plan.grid, areas=plan.areas, with_conf=plan.with_conf,
                        workers=runner.workers, attrs=attrs, folder=folder)
        tallies = runner.map_reduce(_run_part, part_jobs, merge, progress)
        if exchange:
            download_folder(exchange, staging)
        publish_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    total: dict[int, list[float]] = {}
    for t in tallies:
        for c, (n, ha) in t.items():
            acc = total.setdefault(c, [0, 0.0])
            acc[0] += n
            acc[1] += ha
    names = crop_names(np.asarray(sorted(total), np.int64), attrs.table)
    return FieldDataset(target, int(sum(v[0] for v in total.values())), len(list(target.glob("*.parquet"))),
                        {str(n): total[c][1] for n, c in zip(names, sorted(total), strict=True)}, attrs.min_px)


@portable_errors
def _block_classes(job: _BlockJob) -> np.ndarray:
    with BlockReader(job.mask, nodata=job.nodata) as reader:
        b = reader.read(job.tile.core)
    return np.unique(b.array[b.valid()])


def _classes_found(jobs: Sequence[_BlockJob], workers: int | None, client: Any) -> tuple[int, ...]:
    """The class values in a mask that carries no class table (one read of its blocks' cores)."""
    found = np.unique(np.concatenate([np.zeros(0, np.int64)] + Runner(workers, client).map(_block_classes, jobs)))
    return tuple(int(i) for i in found)


def observed_time(observed: Any, src: str) -> Any:
    """``observed`` as a UTC timestamp (a date without a zone is UTC), or None."""
    import pandas as pd

    if observed is None:
        return None
    try:
        ts = pd.Timestamp(observed)
    except (TypeError, ValueError):
        ts = pd.NaT
    if ts is pd.NaT or not (1900 <= ts.year <= 2200):
        raise PolygonizeError(
            f"{src}: the observation time is {observed!r}; expected a date or time of the imagery, e.g. "
            f"2024-10-31 or 2024-10-31T10:30:00Z (the last image of the season)"
        )
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fiboa_columns(gdf: "gpd.GeoDataFrame", table: ClassTable | None, observed: Any,
                   details: str, code_ids: Sequence[int] | None = None) -> "gpd.GeoDataFrame":
    """The fields with fiboa's columns (:mod:`geoseg.io.fiboa`) in their documented order."""
    import geopandas as gpd  # deferred: slow to import

    n = len(gdf)
    cid = gdf["class_id"].to_numpy()
    data: dict[str, Any] = {
        "id": gdf["field_id"].astype(str).to_numpy(dtype=object),
        "collection": np.full(n, "geoseg", dtype=object),  # named by polygonize_raster
        "field_id": gdf["field_id"].to_numpy(),
        "class_id": cid,
        "crop:code": cid.astype(str).astype(object),
        "crop:name": crop_names(cid, table).astype(object),
        "crop:code_list": np.full(n, code_list_id(table, cid if code_ids is None else code_ids), dtype=object),
        "area_ha": gdf["area_ha"].to_numpy(),
        "metrics:area": (gdf["area_ha"].to_numpy() * 10_000.0).astype(np.float32),
        "metrics:perimeter": gdf["perimeter_m"].to_numpy().astype(np.float32),
    }
    for extra in ("confidence", "class_share", "district"):
        if extra in gdf.columns:
            data[extra] = gdf[extra].to_numpy()
    data["determination:method"] = np.full(n, DETERMINATION_METHOD, dtype=object)
    data["determination:datetime"] = determination_column(observed, n)
    data["determination:details"] = np.full(n, details, dtype=object)
    return gpd.GeoDataFrame(data, geometry=gdf.geometry.values, crs=gdf.crs)


def _check_mask(src: str, block: int, passes: int) -> RasterInfo:
    """The mask's description, once it is known to be a single-band integer raster and the
    block and passes make sense."""
    info = raster_info(src)
    check_size(info)
    if info.count != 1:
        raise PolygonizeError(
            f"{src}: has {info.count} bands; expected a single-band class mask - extract the class band first, "
            f"e.g. `rio stack {src} --bidx 1 -o mask.tif` (or `gdal_translate -b 1 {src} mask.tif`)"
        )
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        raise PolygonizeError(
            f"{src}: has {info.dtype} pixels; expected integer class codes (uint8 usually) - a probability or "
            f"reflectance raster is not a class mask"
        )
    if isinstance(block, bool) or not isinstance(block, int) or block < 16:
        raise PolygonizeError(f"block is {block!r}; expected an int of at least 16 pixels (e.g. {DEFAULT_BLOCK})")
    if passes < 0:
        raise PolygonizeError(f"passes is {passes}; expected 0 or more")
    return info


def _plan_blocks(info: RasterInfo, conf_path: str | None, nodata: float | None, exclude: tuple[int, ...],
                 min_px: int, passes: int, block: int, areas: PixelAreas,
                 separating: tuple[int | None, Separation, int] = (None, Separation(), 256),
                 ) -> tuple[TileGrid, list[_BlockJob]]:
    """The block grid (cores of ``block`` px, a halo wide enough for the sieve, and for the
    separation of fields on a boundary band when there is one) and a job per block."""
    band, sep, n_classes = separating
    halo = sieve_halo(min_px, passes) + (separation_halo(sep) if band is not None else 0)
    grid = tile_grid(info.shape, info.transform, size=block + 2 * halo, overlap=halo, multiple=1)
    jobs = [
        _BlockJob(info.path, conf_path, t, None if nodata is None else float(nodata), exclude, min_px, passes,
                  info.shape.width, info.transform, areas, band, sep if band is not None else None, n_classes)
        for t in grid
    ]
    log.info("polygonising %s: %d blocks of %d px (halo %d), specks < %d px sieved", info.path, len(jobs), block,
             halo, min_px)
    return grid, jobs


def _merge_blocks(grid: TileGrid, results: Sequence[tuple[Fields, Edges]], areas: PixelAreas,
                  with_conf: bool, workers: int) -> Fields:
    """The fields of the whole mask from the blocks' pieces: global piece offsets, then the union
    of pieces that touch across a seam (:mod:`geoseg.core.merge`)."""
    blocks = []
    parts = []
    offset = 0
    for t, (f, edges) in zip(grid, results):
        blocks.append((t.index, offset, f, edges))
        parts.append(f)
        offset += len(f)
    pieces = _exact_areas(_concat(parts, with_conf=with_conf), areas)
    return merge_pieces(pieces, seam_pairs(blocks), workers=workers)


def _exact_areas(pieces: Fields, areas: PixelAreas) -> Fields:
    """Where every pixel has the same ground area (an equal-area CRS): exactly pixels x that."""
    if areas.constant is None:
        return pieces
    return Fields(pieces.geometry, pieces.class_id, pieces.pixels, pieces.pixels * areas.constant,
                  pieces.first_pixel, pieces.conf_sum, pieces.conf_count, pieces.class_counts)


def _check_classes(fields: Fields, table: ClassTable | None, src: str) -> None:
    """Refuse class values the table lacks: fields named "class_9" would reach the outputs from a
    mislabelled mask, or the wrong class file."""
    if table is not None and (found := unknown_classes(fields.class_id, fields.area_m2, table)):
        raise PolygonizeError(
            f"{src}: holds class values {found} that are not in the class table "
            f"({', '.join(f'{c.id}={c.name}' for c in table)}; from {table.source}); pass the class file the mask "
            f"was made with (--classes), or its nodata value (--nodata)"
        )


def _to_frame(fields: Fields, info: RasterInfo, table: ClassTable | None, simplify_m: float | None,
              max_area_change: float) -> "gpd.GeoDataFrame":
    """One row per field: outline (simplified when asked), ids, class, ground area and perimeter, confidence."""
    import geopandas as gpd  # deferred: slow to import

    geom = fields.geometry
    if simplify_m:
        geom = _simplify(geom, simplify_m, max_area_change, info.crs, info.transform)
    data: dict[str, Any] = {
        "field_id": fields.first_pixel.astype(np.int64),
        "class_id": fields.class_id.astype(np.int32),
        "crop": crop_names(fields.class_id, table),
        "area_ha": fields.area_m2 / 10_000.0,
        "perimeter_m": perimeters_m(geom, info.crs),
    }
    conf = fields.confidence
    if conf is not None:
        data["confidence"] = conf
    if fields.class_counts is not None:
        total = np.maximum(fields.class_counts.sum(axis=1), 1)
        data["class_share"] = fields.class_counts[np.arange(len(fields)), fields.class_id] / total
    return gpd.GeoDataFrame(data, geometry=geom, crs=info.crs)


def resolve_separation(confidence: str | os.PathLike[str] | None, separate: bool,
                       separation: Separation | None) -> tuple[Separation, int | None]:
    """``(separation, boundary band)`` for a confidence raster: the band is None (no separation)
    without a ``boundary`` band, with ``separate`` False, or when the model chose not to separate
    and no ``separation`` is given (see :func:`polygonize_raster`)."""
    if confidence is None or not separate:
        return Separation(), None
    info = raster_info(confidence)
    band = band_by_name(info, "boundary")
    if band is None:
        return Separation(), None
    if separation is not None:
        return check_separation(separation), band
    chosen = separation_from_tag(raster_tags(confidence).get("GEOSEG_SEPARATION"))
    return (Separation(), None) if chosen is None else (chosen, band)


def _check_max_area(max_area_ha: float | None, min_area_ha: float) -> None:
    if max_area_ha is None:
        return
    ok = isinstance(max_area_ha, (int, float)) and not isinstance(max_area_ha, bool) and math.isfinite(max_area_ha)
    if not ok or max_area_ha <= 0 or max_area_ha < min_area_ha:
        raise PolygonizeError(f"max_area_ha is {max_area_ha!r}; expected a positive area in hectares no smaller than "
                              f"min_area_ha ({min_area_ha}), e.g. 10, or none")


def _area_filter(fields: Fields, min_pixels: int, max_area_ha: float | None) -> Fields:
    """The fields of at least ``min_pixels`` pixels (the sieve's threshold) and at most
    ``max_area_ha`` of ground area."""
    keep = fields.pixels >= min_pixels
    if max_area_ha is not None:
        keep &= fields.area_m2 / 10_000.0 <= max_area_ha
    return fields if keep.all() else fields.take(np.flatnonzero(keep))


def _district_names(gdf: "gpd.GeoDataFrame", dist: Districts) -> np.ndarray:
    """Each field's district: the one it overlaps most (None outside every district)."""
    idx = largest_overlap(gdf.geometry.values, dist.gdf.geometry.values)
    col = np.full(len(gdf), None, dtype=object)
    col[idx >= 0] = dist.names[idx[idx >= 0]]
    return col


def _concat(parts: Sequence[Fields], with_conf: bool) -> Fields:
    if not parts:
        e = np.zeros(0, np.int64)
        return Fields(np.empty(0, dtype=object), e, e, np.zeros(0), e)
    cat = np.concatenate
    counted = all(p.class_counts is not None for p in parts)
    return Fields(
        cat([p.geometry for p in parts]),
        cat([p.class_id for p in parts]),
        cat([p.pixels for p in parts]),
        cat([p.area_m2 for p in parts]),
        cat([p.first_pixel for p in parts]),
        cat([p.conf_sum for p in parts]) if with_conf else None,  # type: ignore[misc]
        cat([p.conf_count for p in parts]) if with_conf else None,  # type: ignore[misc]
        cat([p.class_counts for p in parts]) if counted else None,  # type: ignore[misc]
    )


def _simplify(geom: np.ndarray, tolerance_m: float, max_change: float, crs: Any, transform: Affine) -> np.ndarray:
    """Coverage-simplify (shared edges stay shared), halving the tolerance until areas hold."""
    if tolerance_m < 0:
        raise PolygonizeError(f"simplify tolerance is {tolerance_m} m; expected a positive distance in metres")
    if len(geom) == 0:
        return geom
    tol = float(tolerance_m)
    if crs.is_geographic:  # metres -> degrees of latitude (the smaller of the two degree lengths)
        tol = tol / 111_320.0
    else:
        tol = tol / float(crs.linear_units_factor[1]) if crs.linear_units_factor else tol
    before = shapely.area(geom)
    for _ in range(6):
        out = shapely.coverage_simplify(geom, tol, simplify_boundary=True)
        change = np.abs(shapely.area(out) - before) / np.maximum(before, 1e-300)
        if bool(np.all(change <= max_change)) and bool(shapely.is_valid(out).all()):
            return out
        tol /= 2
    log.warning("simplification kept unsimplified outlines: no tolerance kept every field's area within %.1f%%",
                100 * max_change)
    return geom


@dataclass(frozen=True)
class PolygonizeResult:
    """What :func:`polygonize_file` wrote."""

    path: Path
    fields: int
    hectares: dict[str, float]
    min_area_pixels: int

    def lines(self) -> list[str]:
        crops = ", ".join(f"{k} {v:,.1f}" for k, v in sorted(self.hectares.items(), key=lambda kv: -kv[1]))
        sieve = (f"specks under {self.min_area_pixels} px sieved" if self.min_area_pixels > 1 else "no sieving")
        return [f"{self.path}: {self.fields:,} fields ({sieve})", f"  hectares: {crops or '(none)'}"]


def polygonize_file(
    mask_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    driver: str | None = None,
    overwrite: bool = True,
    **kwargs: Any,
) -> PolygonizeResult:
    """:func:`polygonize_raster`, then :func:`geoseg.io.vector.write_vector` to ``out``.

    ``out``'s extension (or ``driver``) picks the format; the class colours go into the
    QGIS style. ``out`` ``"-"`` is standard output, as GeoJSON (the other formats cannot
    stream). With ``overwrite=False`` an existing ``out`` is refused. Keyword arguments are
    those of :func:`polygonize_raster`.
    """

    if os.fspath(out) == STDOUT:
        check_stream_vector(driver)
    else:
        vector_driver(out, driver)  # an unknown format fails before any work
        check_outputs({"the fields file": out}, {"the mask": mask_path, "the confidence raster": kwargs.get("confidence"),
                                                 "the district file": kwargs.get("districts")})
        check_overwrite(out, overwrite, "the fields file")
    gdf = polygonize_raster(mask_path, **kwargs)
    classes = kwargs.get("classes")
    table = _resolve_classes(classes, str(mask_path))
    path = write_vector(gdf, out, driver=driver, classes=table)
    ha = gdf.groupby("crop:name")["area_ha"].sum().to_dict() if len(gdf) else {}
    return PolygonizeResult(Path(path), len(gdf), {str(k): float(v) for k, v in ha.items()},
                            int(gdf.attrs.get("min_area_pixels", 1)))
