"""Pure geometry helpers for drawing: polygon rings as coordinate runs, simplified to a pixel size.

No file access; shapely arrays in, numpy arrays out (vectorised, no per-polygon Python loop
for the geometry work).
"""

from __future__ import annotations

import numpy as np
import shapely

__all__ = ["prepare", "rings"]


def prepare(geoms: np.ndarray, bounds: tuple[float, float, float, float], tolerance: float) -> np.ndarray:
    """Clip ``geoms`` to ``bounds`` (a little padded) and simplify them to ``tolerance`` (CRS units).

    Geometries that end up empty become None, so the result aligns with the input.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> out = prepare(np.array([box(0, 0, 10, 10), box(50, 50, 60, 60)]), (0, 0, 20, 20), 1.0)
    >>> out[0].bounds, out[1]
    ((0.0, 0.0, 10.0, 10.0), None)
    """
    x0, y0, x1, y1 = bounds
    pad = 2 * tolerance
    g = shapely.clip_by_rect(np.asarray(geoms, dtype=object), x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    if tolerance > 0:
        g = shapely.simplify(g, tolerance, preserve_topology=True)
    g = np.asarray(g, dtype=object)
    g[shapely.is_missing(g) | shapely.is_empty(g)] = None
    return g


def rings(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ring of every (multi)polygon: ``(coords, starts, owner)``.

    ``coords`` is (n, 2); ring ``k`` is ``coords[starts[k]:starts[k + 1]]`` and belongs to
    ``geoms[owner[k]]``. Missing geometries have no rings.

    Examples
    --------
    >>> from shapely.geometry import box
    >>> c, s, o = rings(np.array([box(0, 0, 1, 1), None, box(2, 2, 3, 3)]))
    >>> c.shape, s.tolist(), o.tolist()
    ((10, 2), [0, 5, 10], [0, 2])
    """
    g = np.asarray(geoms, dtype=object)
    ok = ~shapely.is_missing(g)
    parts, part_owner = shapely.get_parts(g[ok], return_index=True)
    part_owner = np.flatnonzero(ok)[part_owner]
    polys = shapely.get_type_id(parts) == 3
    parts, part_owner = parts[polys], part_owner[polys]
    rs, ring_part = shapely.get_rings(parts, return_index=True)
    coords, ring_of = shapely.get_coordinates(rs, return_index=True)
    counts = np.bincount(ring_of, minlength=len(rs))
    starts = np.concatenate([[0], np.cumsum(counts)])
    return coords, starts, part_owner[ring_part]
