"""Mosaic several scene masks onto one output grid, counting each ground location once.

Rule: scenes are taken **in the order the workflow lists them**; an output pixel takes
the value of the first scene that has a valid (non-nodata) class there. Later scenes
only fill pixels that earlier scenes left as nodata (outside their footprint, collar,
cloud). So overlapping scenes never double count in district areas.

The output grid is in one CRS (the workflow's ``crs``, else the first scene's). Scenes in
another CRS (a neighbouring UTM zone, say) are reprojected onto it with nearest-neighbour
resampling, which keeps class values. Pixel size and pixel alignment come from the first
scene already in the output CRS (if none is, from the first scene's footprint reprojected),
and the extent covers every scene.

Work is done in blocks, read in parallel on a :class:`~geoseg.parallel.Runner`: each job
opens the scenes itself and reads a run of blocks along one row (at most
:data:`JOB_PIXELS` pixels), and the blocks are written in row order, so the output does not
depend on the number of threads. Memory is bounded by a few jobs' pixels per thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassTable
from geoseg.io.raster import (
    CONFIDENCE_EXTRAS,
    RasterInfo,
    band_by_name,
    confidence_writer,
    mask_writer,
    open_raster,
    raster_info,
    raster_tags,
)
from geoseg.parallel import Runner

__all__ = [
    "MosaicGrid",
    "mosaic_grid",
    "mosaic_masks",
    "JOB_PIXELS",
]

#: Most pixels one mosaic job reads (a run of blocks along a row): the scenes are opened once
#: per job, and memory holds a few jobs' pixels per thread however wide the mosaic.
JOB_PIXELS = 16 << 20


@dataclass(frozen=True)
class MosaicGrid:
    crs: CRS
    transform: Affine
    shape: tuple[int, int]


def mosaic_grid(infos: Sequence[RasterInfo], crs: CRS | str | None = None) -> MosaicGrid:
    """The output grid covering every scene (see the module docstring for the rule)."""
    first = infos[0]
    out_crs = CRS.from_user_input(crs) if crs is not None else first.crs
    ref = next((i for i in infos if i.crs == out_crs), None)
    if ref is not None:  # pixel size and alignment of the first scene already in the output CRS
        xres, yres = ref.res
        x0, y0 = ref.transform.c, ref.transform.f
    else:
        h, w = first.shape
        left, top = first.transform.c, first.transform.f
        right, bottom = left + w * first.transform.a, top + h * first.transform.e
        tf, _, _ = calculate_default_transform(first.crs, out_crs, w, h, left, bottom, right, top)
        xres = yres = max(abs(tf.a), abs(tf.e))
        x0, y0 = 0.0, 0.0
    lefts, bottoms, rights, tops = [], [], [], []
    for info in infos:
        h, w = info.shape
        b = (info.transform.c, info.transform.f + h * info.transform.e, info.transform.c + w * info.transform.a,
             info.transform.f)
        if info.crs != out_crs:
            b = transform_bounds(info.crs, out_crs, *b, densify_pts=21)
        lefts.append(b[0]), bottoms.append(b[1]), rights.append(b[2]), tops.append(b[3])
    left = x0 + math.floor((min(lefts) - x0) / xres + 1e-9) * xres
    top = y0 + math.ceil((max(tops) - y0) / yres - 1e-9) * yres
    width = math.ceil((max(rights) - left) / xres - 1e-9)
    height = math.ceil((top - min(bottoms)) / yres - 1e-9)
    return MosaicGrid(out_crs, Affine(xres, 0, left, 0, -yres, top), (height, width))


@dataclass(frozen=True)
class _MosaicJob:
    masks: tuple[str, ...]
    confidences: tuple[str, ...] | None  # None: no confidence written
    grid: MosaicGrid
    windows: tuple[Window, ...]  # blocks along one row, left to right
    #: Per confidence raster, the 1-based bands read (confidence, then the extras every input has).
    conf_index: tuple[tuple[int, ...], ...] = ()


def _warped(stack: ExitStack, path: str, grid: MosaicGrid, nodata: int) -> WarpedVRT:
    """``path`` on the mosaic grid (nearest neighbour, which keeps class values), kept open by ``stack``."""
    h, w = grid.shape
    src = stack.enter_context(open_raster(path))
    return stack.enter_context(WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=w, height=h,
                                         resampling=Resampling.nearest, nodata=nodata))


def _mosaic_blocks(job: _MosaicJob) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The mosaic's mask (and confidence) in each window of ``job``, by the first-valid-scene rule."""
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    with rasterio.Env(), ExitStack() as stack:
        vrts = [_warped(stack, m, job.grid, NODATA) for m in job.masks]
        cvrts = [_warped(stack, c, job.grid, 0) for c in job.confidences] if job.confidences is not None else None
        for win in job.windows:
            acc = np.full((int(win.height), int(win.width)), NODATA, np.uint8)
            nb = len(job.conf_index[0]) if job.conf_index else 1
            cacc = np.zeros((nb, *acc.shape), np.uint8) if cvrts is not None else None
            for i, vrt in enumerate(vrts):
                todo = acc == NODATA
                if not todo.any():
                    break
                v = vrt.read(1, window=win)
                take = todo & (v != NODATA)
                acc[take] = v[take]
                if cvrts is not None and cacc is not None:
                    bands = list(job.conf_index[i]) if job.conf_index else [1]
                    cacc[:, take] = cvrts[i].read(bands, window=win)[:, take]
            out.append((acc, cacc))
    return out


def _jobs(masks: Sequence[str | Path], confidences: Sequence[str | Path] | None, grid: MosaicGrid,
          block: int, conf_index: tuple[tuple[int, ...], ...] = ()) -> list[_MosaicJob]:
    """Runs of ``block`` px blocks along each row of blocks, at most :data:`JOB_PIXELS` pixels each, in row order."""
    h, w = grid.shape
    per_job = max(1, JOB_PIXELS // (block * block))
    ms = tuple(str(m) for m in masks)
    cs = tuple(str(c) for c in confidences) if confidences is not None else None
    jobs = []
    for r in range(0, h, block):
        cols = list(range(0, w, block))
        for k in range(0, len(cols), per_job):
            wins = tuple(Window(c, r, min(block, w - c), min(block, h - r)) for c in cols[k : k + per_job])
            jobs.append(_MosaicJob(ms, cs, grid, wins, conf_index))
    return jobs


def mosaic_masks(
    masks: Sequence[str | Path],
    out_mask: str | Path,
    *,
    confidences: Sequence[str | Path] | None = None,
    out_confidence: str | Path | None = None,
    classes: ClassTable,
    crs: CRS | str | None = None,
    block: int = 1024,
    workers: int | None = None,
) -> MosaicGrid:
    """Mosaic class masks (and their confidence rasters) by the first-valid-scene rule.

    ``workers`` threads (default: one per core) read the scenes; see the module notes. When
    every confidence raster has a ``dates_seen`` or ``boundary`` band
    (:data:`geoseg.io.raster.CONFIDENCE_EXTRAS`), so has the mosaic's.
    """
    infos = [raster_info(m) for m in masks]
    extras: list[str] = []
    separation = None
    conf_index: tuple[tuple[int, ...], ...] = ()
    if confidences is not None:  # every input is checked before an output is started
        cinfos = [raster_info(c) for c in confidences]
        extras = [n for n in CONFIDENCE_EXTRAS if cinfos and all(band_by_name(i, n) for i in cinfos)]
        separation = raster_tags(confidences[0]).get("GEOSEG_SEPARATION") if "boundary" in extras else None
        conf_index = tuple((1, *(int(band_by_name(i, n) or 0) for n in extras)) for i in cinfos)
    grid = mosaic_grid(infos, crs)
    h, w = grid.shape
    with_conf = confidences is not None and out_confidence is not None
    jobs = _jobs(masks, confidences if with_conf else None, grid, block, conf_index)
    with ExitStack() as stack:
        out = stack.enter_context(mask_writer(out_mask, shape=(h, w), transform=grid.transform, crs=grid.crs,
                                              classes=classes))
        cout = None
        if confidences is not None and out_confidence is not None:
            cout = stack.enter_context(confidence_writer(out_confidence, shape=(h, w), transform=grid.transform,
                                                         crs=grid.crs, dates_seen="dates_seen" in extras,
                                                         boundary="boundary" in extras, separation=separation))
        for job, blocks in zip(jobs, Runner(workers).imap(_mosaic_blocks, jobs)):
            for win, (acc, cacc) in zip(job.windows, blocks):
                out.write(acc, win)
                if cout is not None and cacc is not None:
                    cout.write(cacc if extras else cacc[0], win)
    return grid
