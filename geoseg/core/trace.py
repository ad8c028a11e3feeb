"""Trace labelled fields into polygons: pure arrays plus an Affine, no files.

Conventions
-----------
* **Fields** are 4-connected regions of one class (like ``rasterio.features.shapes`` and
  GDAL's polygonizer with their default connectivity 4). Nodata is never a field. Pixels
  of excluded classes (non-crop classes such as ``background`` by default) take part in
  sieving but make no polygon.
* **Polygons** have one vertex per corner (no collinear vertices), exteriors
  counter-clockwise and holes clockwise in map coordinates, and are always valid: where
  a field touches itself diagonally, its rings touch at that point (hole-shell or
  hole-hole), as GDAL >= 3.7 makes them; after :func:`shapely.normalize` they are
  identical, vertex for vertex, to ``rasterio.features.shapes`` on the same array.
* **field_id** is the row-major index (``row * width + col``) of the field's top-left-most
  pixel in the raster: the same whatever the block size or worker order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine

from geoseg.classes import NODATA
from geoseg.core.sieve import FieldRuns, label_runs
from geoseg.errors import PolygonizeError

__all__ = [
    "vectorize_block",
    "drop_collinear",
    "Fields",
    "vectorize",
]


# --------------------------------------------------------------------------------------
# tracing (pure)
def _first_ge(sorted_ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_ids, q, side="left")


def _last_le(sorted_ids: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_ids, q, side="right") - 1


def _trace_corners(runs: FieldRuns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every corner of every field outline, linked to the next corner of its ring.

    ``runs.code`` holds a non-zero code per class (0 = no field). Pixel ``(r, c)`` covers ``[c, c+1] x [r, r+1]`` in pixel coordinates (x right,
    y down). Each boundary edge is directed so that its field lies on its right (pixel
    coordinates), which makes exteriors counter-clockwise on a north-up map. A straight
    run of edges ends at a *stop* edge, after which the outline turns; the stops are the
    corners. Edge-adjacent pixels of one class always belong to one field, so the dense
    work compares the (small) class codes; labels are looked up only at saddles, where a
    field's pixels meet diagonally: if both belong to the same field the outline turns
    left, across the saddle (the field is treated as connected there, the other two pixels
    as separate, which keeps every ring simple), otherwise it turns right.

    Edges live on four dense grids, each with row-major ids along the direction of
    travel: East and West on horizontal lines (``y * w + c``), South and North on
    vertical lines, stored column-major (``x * h + r``) so that a straight run is a
    contiguous range of ids. The next corner after a turn is then one ``searchsorted``
    away: no per-edge linking, no Python loop.

    Returns ``(succ, x, y, pixel)``: for each corner, the index of the next corner in its
    ring, the corner's integer pixel coordinates and the flat index of a pixel of its field
    (look labels up once per ring, not per corner).
    """
    code = runs.code
    h, w = code.shape
    P = np.zeros((h + 2, w + 2), code.dtype)
    P[1:-1, 1:-1] = code
    # horizontal lines y = 0..h, segments c = 0..w-1: up = P[y, c+1], dn = P[y+1, c+1]
    up = P[:-1, 1:-1]
    dn = P[1:, 1:-1]
    hd = up != dn
    # East edges (field below), end (c+1, y): ahead-left NE = P[y, c+2], ahead-right SE = P[y+1, c+2]
    e_left = P[:-1, 2:] == dn
    e_ar = P[1:, 2:] == dn
    e_stop = hd & (dn != 0) & (e_left | ~e_ar)
    # West edges (field above), end (c, y): ahead-left SW = P[y+1, c], ahead-right NW = P[y, c]
    w_left = P[1:, :-2] == up
    w_ar = P[:-1, :-2] == up
    w_stop = hd & (up != 0) & (w_left | ~w_ar)
    # vertical lines x = 0..w, segments r = 0..h-1, column-major: PT[x, r] = P[r, x]
    PT = np.ascontiguousarray(P.T)
    lf = PT[:-1, 1:-1]  # lf[x, r] = P[r+1, x]   (pixel left of the line)
    rt = PT[1:, 1:-1]  # rt[x, r] = P[r+1, x+1] (pixel right of the line)
    vd = lf != rt
    # South edges (field left of the line), end (x, r+1): ahead-left SE = P[r+2, x+1], ahead-right SW = P[r+2, x]
    s_left = PT[1:, 2:] == lf
    s_ar = PT[:-1, 2:] == lf
    s_stop = vd & (lf != 0) & (s_left | ~s_ar)
    # North edges (field right of the line), end (x, r): ahead-left NW = P[r, x], ahead-right NE = P[r, x+1]
    n_left = PT[:-1, :-2] == rt
    n_ar = PT[1:, :-2] == rt
    n_stop = vd & (rt != 0) & (n_left | ~n_ar)

    id_e = np.flatnonzero(e_stop)
    id_w = np.flatnonzero(w_stop)
    id_s = np.flatnonzero(s_stop)
    id_n = np.flatnonzero(n_stop)
    ne, nw, ns = len(id_e), len(id_w), len(id_s)
    o_w, o_s = ne, ne + nw
    o_n = o_s + ns
    n = o_n + len(id_n)
    succ = np.empty(n, np.int64)
    vx = np.empty(n, np.int64)
    vy = np.empty(n, np.int64)
    pix = np.empty(n, np.int64)
    L = runs.at

    def turn_left(left: np.ndarray, ar: np.ndarray, ids: np.ndarray, own: tuple[np.ndarray, np.ndarray],
                  other: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        lt = left.ravel()[ids]
        saddle = lt & ~ar.ravel()[ids]
        if saddle.any():  # same class diagonally: left only if it is the same field
            k = np.flatnonzero(saddle)
            lt[k] = L(own[0][k], own[1][k]) == L(other[0][k], other[1][k])
        return lt

    def link(dst: slice, lt: np.ndarray, left_to: tuple[int, np.ndarray, np.ndarray, Callable[..., Any]],
             right_to: tuple[int, np.ndarray, np.ndarray, Callable[..., Any]]) -> None:
        s = np.empty(len(lt), np.int64)
        off, ids, q, fn = left_to
        s[lt] = off + fn(ids, q[lt])
        off, ids, q, fn = right_to
        s[~lt] = off + fn(ids, q[~lt])
        succ[dst] = s

    # East stops (field pixel (y, c)): left -> North edge up from (c+1, y) = N[x=c+1, r=y-1];
    # right -> South edge down from (c+1, y); saddle pixel NE = (y-1, c+1)
    y, c = np.divmod(id_e, w)
    sl = slice(0, ne)
    vx[sl], vy[sl], pix[sl] = c + 1, y, y * w + c
    lt = turn_left(e_left, e_ar, id_e, (y, c), (y - 1, c + 1))
    base = (c + 1) * h + y
    link(sl, lt, (o_n, id_n, base - 1, _last_le), (o_s, id_s, base, _first_ge))
    # West stops (field pixel (y-1, c)): end (c, y); left -> South from (c, y) = S[x=c, r=y];
    # right -> North from (c, y) = N[x=c, r=y-1]; saddle pixel SW = (y, c-1)
    y, c = np.divmod(id_w, w)
    sl = slice(o_w, o_s)
    vx[sl], vy[sl], pix[sl] = c, y, (y - 1) * w + c
    lt = turn_left(w_left, w_ar, id_w, (y - 1, c), (y, c - 1))
    base = c * h + y
    link(sl, lt, (o_s, id_s, base, _first_ge), (o_n, id_n, base - 1, _last_le))
    # South stops (field pixel (r, x-1)): end (x, r+1); left -> East from (x, r+1) = E[y=r+1, c=x];
    # right -> West to (x-1, r+1) = W[r+1, x-1]; saddle pixel SE = (r+1, x)
    x, r = np.divmod(id_s, h)
    sl = slice(o_s, o_n)
    vx[sl], vy[sl], pix[sl] = x, r + 1, r * w + x - 1
    lt = turn_left(s_left, s_ar, id_s, (r, x - 1), (r + 1, x))
    base = (r + 1) * w + x
    link(sl, lt, (0, id_e, base, _first_ge), (o_w, id_w, base - 1, _last_le))
    # North stops (field pixel (r, x)): end (x, r); left -> West to (x-1, r) = W[r, x-1];
    # right -> East from (x, r) = E[r, x]; saddle pixel NW = (r-1, x-1)
    x, r = np.divmod(id_n, h)
    sl = slice(o_n, n)
    vx[sl], vy[sl], pix[sl] = x, r, r * w + x
    lt = turn_left(n_left, n_ar, id_n, (r, x), (r - 1, x - 1))
    base = r * w + x
    link(sl, lt, (o_w, id_w, base - 1, _last_le), (0, id_e, base, _first_ge))
    return succ, vx, vy, pix


def _order_rings(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order the nodes of a permutation by cycle, each cycle from its smallest node.

    Cycles come from ``connected_components`` (C, linear); each node's distance to the
    end of its cycle from pointer jumping (O(n log L) NumPy work for cycles of at most L
    nodes). Returns ``(order, ring_of_ordered, ring_sizes)``.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(succ)
    itype = np.int32 if n < 2**31 - 1 else np.int64
    nxt = succ.astype(itype)
    ids = np.arange(n, dtype=itype)
    graph = csr_matrix((np.ones(n, np.int8), nxt, np.arange(n + 1, dtype=itype)), shape=(n, n))
    n_rings, ring = connected_components(graph, directed=True, connection="weak")
    head = np.full(n_rings, n, itype)
    np.minimum.at(head, ring, ids)
    pred = np.empty_like(nxt)
    pred[nxt] = ids
    tail = pred[head]
    jump = nxt.copy()
    jump[tail] = tail
    dist = np.ones(n, itype)
    dist[tail] = 0
    while True:
        dist = dist + dist[jump]
        j2 = jump[jump]
        if np.array_equal(j2, jump):
            break
        jump = j2
    # rings numbered in order of their smallest node, as connected_components numbers them
    rank = np.argsort(head, kind="stable")
    rid = np.empty(n_rings, np.int64)
    rid[rank] = np.arange(n_rings)
    ring = rid[ring]
    size = np.bincount(ring, minlength=n_rings)
    start = np.zeros(n_rings, np.int64)
    np.cumsum(size[:-1], out=start[1:])
    pos = start[ring] + (size[ring] - 1 - dist)
    order = np.empty(n, np.int64)
    order[pos] = np.arange(n)
    return order, ring[order], size


@dataclass(frozen=True)
class Fields:
    """Fields vectorised from one array (or merged from blocks): parallel arrays.

    Attributes
    ----------
    geometry : ndarray of shapely Polygons
    class_id : ndarray of int
    pixels : ndarray of int64
        Pixel count of each field.
    area_m2 : ndarray of float64
        Ground area (pixel areas summed; per-row geodesic areas on geographic grids).
    first_pixel : ndarray of int64
        Row-major index of the top-left-most pixel in the full raster (the field id).
    conf_sum, conf_count : ndarray of float64, optional
        Sum and count of valid confidence values over each field's pixels.
    class_counts : ndarray (n, k) of int64, optional
        Pixels of each class in each field, for fields separated on a boundary map
        (:mod:`geoseg.core.instances`), which may hold a few pixels of another class; the
        field's ``class_id`` is then their majority.
    """

    geometry: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    area_m2: np.ndarray
    first_pixel: np.ndarray
    conf_sum: np.ndarray | None = None
    conf_count: np.ndarray | None = None
    class_counts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.geometry)

    def take(self, idx: np.ndarray) -> "Fields":
        """The fields at ``idx``."""
        pick = (lambda a: None if a is None else a[idx])  # noqa: E731
        return Fields(self.geometry[idx], self.class_id[idx], self.pixels[idx], self.area_m2[idx],
                      self.first_pixel[idx], pick(self.conf_sum), pick(self.conf_count), pick(self.class_counts))

    @property
    def confidence(self) -> np.ndarray | None:
        """Mean confidence (0..1) per field, NaN where no pixel had one; None without a confidence raster."""
        if self.conf_sum is None or self.conf_count is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.conf_count > 0, self.conf_sum / np.maximum(self.conf_count, 1) / 255.0, np.nan)


def _polygons_from_runs(
    runs: FieldRuns, transform: Affine, row_off: int, col_off: int,
    cum_area: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trace the fields of ``runs`` into polygons; also pixel counts, weighted areas and first pixels.

    ``cum_area``: ``(FA, FB)``, the prefix sums (from 0) of the block's area factors along its
    rows and columns (:meth:`geoseg.core.geodesy.PixelAreas.factors`), so that the summed area
    of the pixels above row ``y`` and left of column ``x`` is ``S(y, x) = FA[y] @ FB[x]``.
    """
    n = runs.n
    if n == 0:
        e = np.zeros(0, np.int64)
        return np.empty(0, dtype=object), e, np.zeros(0), e
    succ, vx, vy, vpix = _trace_corners(runs)
    order, ring, size = _order_rings(succ)
    xs = vx[order] + col_off
    ys = vy[order] + row_off
    starts = np.zeros(len(size), np.int64)
    np.cumsum(size[:-1], out=starts[1:])
    nxt = np.arange(1, len(xs) + 1)
    nxt[starts + size - 1] = starts
    # twice the signed area, in pixels (positive for exteriors), from vertical edges: x * dy
    twice = np.add.reduceat(xs * (ys[nxt] - ys), starts)
    hole = twice < 0
    rl = runs.at_flat(vpix[order[starts]])
    pixels = np.bincount(rl - 1, weights=twice, minlength=n).astype(np.int64)
    if cum_area is None:
        area = pixels.astype(np.float64)
    else:  # sum of per-pixel areas: the same identity with x * y replaced by S(y, x), summed over vertical edges
        FA, FB = cum_area
        ly, lx = ys - row_off, xs - col_off
        fb = FB[lx]
        S = np.einsum("ij,ij->i", FA[ly[nxt]], fb) - np.einsum("ij,ij->i", FA[ly], fb)
        area = np.bincount(rl - 1, weights=np.add.reduceat(S, starts), minlength=n)
    # first pixel: smallest (y, x) corner of the exterior = top-left corner of the top-left-most pixel
    flat = ys * (1 << 31) + xs
    ring_min = np.minimum.reduceat(flat, starts)
    first = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, rl[~hole] - 1, ring_min[~hole])
    a, b, c, d, e, f = tuple(transform)[:6]
    # traced with the field on the right in pixel space (y down): walk each ring backwards
    # so that exteriors are counter-clockwise on a north-up map (holes clockwise)
    pos = np.arange(len(xs))
    rev = 2 * starts[ring] + size[ring] - 1 - pos
    xr, yr = xs[rev], ys[rev]
    X = c + xr * a + yr * b
    Y = f + xr * d + yr * e
    rings = shapely.linearrings(np.column_stack([X, Y]), indices=ring)
    o = np.lexsort((hole, rl))
    polys = shapely.polygons(rings[o], indices=rl[o] - 1)
    return polys, pixels, area, first


def vectorize(
    mask: np.ndarray,
    transform: Affine = Affine.identity(),
    *,
    nodata: int | None = NODATA,
    exclude: Sequence[int] = (),
    valid: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    offset: tuple[int, int] = (0, 0),
    raster_width: int | None = None,
    row_areas: np.ndarray | None = None,
    area_factors: tuple[np.ndarray, np.ndarray] | None = None,
) -> Fields:
    """Vectorise every 4-connected region of one class in ``mask`` into a polygon.

    Pure: arrays and an affine transform in, a :class:`Fields` of shapely polygons out.
    No sieving here (see :func:`sieve`).

    Parameters
    ----------
    mask : (h, w) integer array
        Class codes.
    transform : Affine
        Of the full raster (pixel ``(0, 0)`` at its top-left); ``offset`` places ``mask``.
    nodata : int, optional
        Mask value that is no field (ignored when ``valid`` is given).
    exclude : sequence of int
        Classes that make no polygon.
    valid : (h, w) bool, optional
        Pixels holding data.
    confidence : (h, w) uint8, optional
        Per-pixel confidence (0 = none); fills ``conf_sum`` / ``conf_count``.
    offset : (row, col)
        Where ``mask`` sits in the full raster (for block-wise use).
    raster_width : int, optional
        Width of the full raster, for ``first_pixel`` (default: ``mask``'s width).
    row_areas : (H,) float array, optional
        Ground area of one pixel in each row of the full raster (m2). Default: the
        transform's pixel area in CRS units squared.
    area_factors : ((h, k), (w, k)) float arrays, optional
        Ground area (m2) of each pixel of ``mask`` as ``A @ B.T``
        (:meth:`geoseg.core.geodesy.PixelAreas.factors` of ``mask``'s window); overrides
        ``row_areas``.

    Returns
    -------
    Fields
        One polygon per region, in label order (classes in ascending order, then raster
        order of each class's regions).

    Examples
    --------
    >>> m = np.array([[1, 1, 0], [1, 0, 0], [255, 2, 2]], "uint8")
    >>> f = vectorize(m, Affine(10, 0, 0, 0, -10, 30), exclude=[0])
    >>> f.class_id.tolist(), f.pixels.tolist(), f.first_pixel.tolist()
    ([1, 2], [3, 2], [0, 7])
    >>> f.geometry[0].wkt
    'POLYGON ((0 30, 0 10, 10 10, 10 20, 20 20, 20 30, 0 30))'
    """
    fields, _ = vectorize_block(mask, transform, nodata=nodata, exclude=exclude, valid=valid, confidence=confidence,
                           offset=offset, raster_width=raster_width, row_areas=row_areas,
                           area_factors=area_factors)
    return fields


def vectorize_block(
    mask: np.ndarray,
    transform: Affine,
    *,
    nodata: int | None,
    exclude: Sequence[int],
    valid: np.ndarray | None,
    confidence: np.ndarray | None,
    offset: tuple[int, int],
    raster_width: int | None,
    row_areas: np.ndarray | None,
    area_factors: tuple[np.ndarray, np.ndarray] | None = None,
    runs: FieldRuns | None = None,
) -> tuple[Fields, FieldRuns]:
    """:func:`vectorize`, also returning the labelling (label = 1-based field index, 0 none).
    ``runs``: ``mask``'s fields already labelled (:func:`geoseg.core.sieve.runs_of_labels`), so
    no connected-components pass is made; ``valid`` and ``exclude`` are then not used."""
    if mask.ndim != 2:
        raise PolygonizeError(f"expected a 2-D class array, got shape {mask.shape}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise PolygonizeError(
            f"class mask has dtype {mask.dtype}; expected integer class codes - round or cast the mask first"
        )
    if runs is None:
        if valid is None:
            valid = np.ones(mask.shape, bool) if nodata is None else mask != nodata
        field = valid & ~np.isin(mask, np.asarray(list(exclude), dtype=np.int64)) if len(exclude) else valid
        runs = label_runs(mask, field)
    classes = runs.classes
    r0, c0 = offset
    width = raster_width if raster_width is not None else mask.shape[1]
    if area_factors is None and row_areas is not None:
        area_factors = (row_areas[r0 : r0 + mask.shape[0], None], np.ones((mask.shape[1], 1)))
    cum = None
    if area_factors is not None:
        fa, fb = area_factors
        if fa.shape[0] != mask.shape[0] or fb.shape[0] != mask.shape[1] or fa.shape[1] != fb.shape[1]:
            raise PolygonizeError(f"area factors of shapes {fa.shape} and {fb.shape}; expected ({mask.shape[0]}, k) "
                                  f"and ({mask.shape[1]}, k) for a mask of shape {mask.shape}")
        cum = (np.vstack([np.zeros((1, fa.shape[1])), np.cumsum(fa, axis=0)]),
               np.vstack([np.zeros((1, fb.shape[1])), np.cumsum(fb, axis=0)]))
    polys, pixels, area, first = _polygons_from_runs(runs, transform, r0, c0, cum)
    if cum is None:
        area = pixels * abs(transform.a * transform.e - transform.b * transform.d)
    fy, fx = np.divmod(first, 1 << 31)
    first_pixel = fy * width + fx
    conf_sum = conf_count = None
    if confidence is not None:
        if confidence.shape != mask.shape:
            raise PolygonizeError(f"confidence shape {confidence.shape} differs from the mask's {mask.shape}")
        conf_sum = runs.run_sums(confidence.astype(np.float64))
        conf_count = runs.run_sums((confidence > 0).astype(np.float64))
    fields = Fields(polys, classes.astype(np.int64), pixels, np.asarray(area, np.float64), first_pixel,
                    conf_sum, conf_count)
    return fields, runs


# --------------------------------------------------------------------------------------
# merging block pieces (pure)
def drop_collinear(polys: np.ndarray) -> np.ndarray:
    """Remove vertices where an axis-aligned outline goes straight on (left by unions at seams).

    Only plain Polygons are rewritten (a union of 4-connected pieces is one); anything
    else is returned unchanged.
    """
    polys = np.asarray(polys, dtype=object)
    out = polys.copy()
    is_poly = shapely.get_type_id(polys) == 3
    if not is_poly.any():
        return out
    rings, pidx = shapely.get_rings(polys[is_poly], return_index=True)
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    # drop each ring's closing vertex, then test every vertex against its cyclic neighbours
    last = np.r_[ridx[1:] != ridx[:-1], True]
    xy, ridx = xy[~last], ridx[~last]
    starts = np.flatnonzero(np.r_[True, ridx[1:] != ridx[:-1]])
    ends = np.r_[starts[1:], len(ridx)] - 1
    prev = np.arange(-1, len(ridx) - 1)
    prev[starts] = ends
    nxt = np.arange(1, len(ridx) + 1)
    nxt[ends] = starts
    x, y = xy[:, 0], xy[:, 1]
    straight = ((x[prev] == x) & (x == x[nxt])) | ((y[prev] == y) & (y == y[nxt]))
    keep = ~straight
    new_rings = shapely.linearrings(xy[keep], indices=ridx[keep])
    # rings come exterior first per polygon, as polygons() with indices expects
    out[is_poly] = shapely.polygons(new_rings, indices=pidx)
    return out
