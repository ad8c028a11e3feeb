"""The pixels of a block that lie in each of a set of polygons, with their exact coverage.

The rule the district areas count by (:mod:`geoseg.ops.areas`), for the others that need it
pixel by pixel - a reference sample's strata (:mod:`geoseg.ops.sample`), fields' and districts'
index statistics (:mod:`geoseg.ops.features`): a pixel that no polygon outline crosses belongs
wholly to the polygon holding its centre (GDAL's burn), and a pixel an outline crosses belongs
to each polygon by the exact share of it inside (:func:`geoseg.core.overlay.boundary_coverage`).
"""

from __future__ import annotations

import threading

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.core.overlay import boundary_coverage

__all__ = ["SLIVER", "grid_bounds", "zone_pieces"]

_RASTERIZE_LOCK = threading.Lock()
#: Coverage (share of a pixel) below which a crossed pixel is no piece of a polygon: rounding along an
#: edge shared with a neighbour (about 1e-16), not area. Real slivers of 1e-12 still count, as in exactextract.
SLIVER = 1e-14


def grid_bounds(t: Affine, h: int, w: int) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of an ``h x w`` grid with transform ``t``."""
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    return (min(xs), min(ys), max(xs), max(ys))


def zone_pieces(zones: np.ndarray, transform: Affine, shape: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(zone index, flat pixel index, coverage 0..1, cut)`` of every (pixel, polygon) piece of an
    ``h x w`` block (``transform`` its own): whole pixels first in raster order (coverage 1, cut
    False), then the pixels an outline crosses, once per polygon reaching them (cut True).

    ``zones`` are polygons in the block's CRS; an index is a position in it.
    """
    h, w = int(shape[0]), int(shape[1])
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    zones = np.asarray(zones, dtype=object)
    if len(zones) == 0 or h == 0 or w == 0:
        return empty
    box = shapely.box(*grid_bounds(transform, h, w))
    cand = np.flatnonzero(shapely.intersects(zones, box))
    if len(cand) == 0:
        return empty
    whole = shapely.covers(zones[cand], box)
    if whole.any():  # the block lies inside one polygon: no burning, no outline
        flat = np.arange(h * w, dtype=np.int64)
        return np.full(h * w, int(cand[np.argmax(whole)]), np.int64), flat, np.ones(h * w), np.zeros(h * w, bool)
    shapes = [(g, i + 1) for i, g in enumerate(zones[cand])]
    with _RASTERIZE_LOCK:  # rasterio silences a warning with catch_warnings, which threads race on
        local = rasterize(shapes, out_shape=(h, w), transform=transform, fill=0, dtype="int32").ravel()
    rr, cc, pi, frac = boundary_coverage(zones[cand], transform, (h, w))
    cell = rr * w + cc
    local[cell] = 0  # a crossed pixel counts by its coverage, not by its centre
    flat = np.flatnonzero(local)
    # a neighbour's outline along a shared edge leaves rounding slivers on the far side: no piece, or a
    # field's pieces (and so its weighted quantiles, which count pieces) would depend on its window
    keep = frac > SLIVER
    return (np.concatenate([cand[local[flat] - 1], cand[pi[keep]]]).astype(np.int64),
            np.concatenate([flat, cell[keep]]).astype(np.int64),
            np.concatenate([np.ones(len(flat)), frac[keep]]),
            np.concatenate([np.zeros(len(flat), bool), np.ones(int(keep.sum()), bool)]))
