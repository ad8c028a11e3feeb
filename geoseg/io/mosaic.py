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
Work is done in blocks: memory is bounded by one block per scene.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassTable
from geoseg.io.raster import RasterInfo, confidence_writer, mask_writer, open_raster, raster_info

__all__ = [
    "MosaicGrid",
    "mosaic_grid",
    "mosaic_masks",
]


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


def mosaic_masks(
    masks: Sequence[str | Path],
    out_mask: str | Path,
    *,
    confidences: Sequence[str | Path] | None = None,
    out_confidence: str | Path | None = None,
    classes: ClassTable,
    crs: CRS | str | None = None,
    block: int = 1024,
) -> MosaicGrid:
    """Mosaic class masks (and their confidence rasters) by the first-valid-scene rule."""
    infos = [raster_info(m) for m in masks]
    grid = mosaic_grid(infos, crs)
    h, w = grid.shape
    with ExitStack() as stack:
        vrts = []
        cvrts = []
        for i, m in enumerate(masks):
            src = stack.enter_context(open_raster(m))
            vrts.append(stack.enter_context(WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=w, height=h,
                                                      resampling=Resampling.nearest, nodata=NODATA)))
            if confidences is not None:
                csrc = stack.enter_context(open_raster(confidences[i]))
                cvrts.append(stack.enter_context(WarpedVRT(csrc, crs=grid.crs, transform=grid.transform, width=w,
                                                           height=h, resampling=Resampling.nearest, nodata=0)))
        out = stack.enter_context(mask_writer(out_mask, shape=(h, w), transform=grid.transform, crs=grid.crs,
                                              classes=classes))
        cout = None
        if confidences is not None and out_confidence is not None:
            cout = stack.enter_context(confidence_writer(out_confidence, shape=(h, w), transform=grid.transform,
                                                         crs=grid.crs))
        for r in range(0, h, block):
            for c in range(0, w, block):
                win = Window(c, r, min(block, w - c), min(block, h - r))
                acc = np.full((int(win.height), int(win.width)), NODATA, np.uint8)
                cacc = np.zeros_like(acc)
                for i, vrt in enumerate(vrts):
                    todo = acc == NODATA
                    if not todo.any():
                        break
                    v = vrt.read(1, window=win)
                    take = todo & (v != NODATA)
                    acc[take] = v[take]
                    if cout is not None:
                        cacc[take] = cvrts[i].read(1, window=win)[take]
                out.write(acc, win)
                if cout is not None:
                    cout.write(cacc, win)
    return grid
