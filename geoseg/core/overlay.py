"""Polygons over polygons and over the pixel grid: overlap areas, largest overlap, exact coverage.

:func:`boundary_coverage` gives the exact fraction of each pixel that a polygon covers,
for the pixels its boundary crosses: the boundary's edges are split at the grid lines and
their signed trapezoids summed per cell (the scan-converter of font renderers), so a pixel
half inside a district counts half. Pure arrays plus an Affine; no files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely
from affine import Affine

__all__ = [
    "largest_overlap",
    "boundary_coverage",
]


def overlap_areas(
    geoms: np.ndarray, districts: np.ndarray, measure: Callable[[np.ndarray], np.ndarray] = shapely.area
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every intersecting (geometry, district) pair and the area they share.

    Returns ``(gi, di, area)``: indices into ``geoms`` and ``districts`` and the shared area
    as ``measure`` gives it (default: planar, in CRS units squared; e.g. ground areas with
    :func:`geoseg.core.geodesy.areas_m2`); pairs that only touch have area 0. A geometry
    wholly inside a district is not intersected, just measured.

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
    area = np.zeros(len(gi))
    area[inside] = measure(geoms[gi[inside]])
    rest = np.flatnonzero(~inside)
    hit = np.ones(len(gi), bool)
    if len(rest):
        cross = shapely.intersects(districts[di[rest]], geoms[gi[rest]])
        hit[rest[~cross]] = False
        rest = rest[cross]
        area[rest] = measure(shapely.intersection(geoms[gi[rest]], districts[di[rest]]))
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
