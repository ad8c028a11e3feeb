"""Ground areas and perimeters of pixels and polygons in any CRS: pure arrays, no files.

Every area is a **ground area on the CRS's ellipsoid**, every length a geodesic one, whatever
the CRS: a projected CRS's grid area is not the ground area (UTM: -0.08 % on the central
meridian, up to about +0.2 % at a zone's edge near the equator).

* **Pixels** (:func:`pixel_areas`): in a geographic CRS a row's cells are bounded by two
  meridians and two parallels, and their area has a closed form (the authalic-latitude zone
  formula, :func:`row_pixel_areas`). In a projected CRS the ground area of one pixel cell is
  measured, by transforming its four corners into a Lambert azimuthal equal-area projection
  on the CRS's own datum, at the nodes of a lattice at most ``spacing_m`` (1 km) apart;
  between nodes it is interpolated bilinearly (the areal scale is smooth: the error is about
  1e-8 of the area). :meth:`PixelAreas.factors` hands a block's areas out as a few row and
  column factors, so a block's per-pixel areas (or their prefix sums along a traced outline)
  cost two short vectors rather than an image.
* **Polygons** (:func:`areas_m2`): edges densified to at most 100 m (0.001 degree), so that a
  straight edge of the CRS keeps its shape, then measured in an equal-area projection on the
  CRS's own datum centred on the data: Lambert azimuthal equal-area for a projected CRS, the
  cylindrical equal-area projection for a geographic one (meridians and parallels stay
  straight there, so pixel-shaped polygons keep their exact area).
* **Perimeters** (:func:`perimeters_m`): geodesic (:class:`pyproj.Geod`): between consecutive
  vertices in a geographic CRS; in a projected one each edge (in pieces of at most 1 km) is
  measured with the CRS's metric on the ellipsoid, itself measured by geodesics on a lattice.

A CRS with no datum (a local engineering CRS) is a plane: its areas stay planar, in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from affine import Affine

from geoseg.errors import AreaError

__all__ = [
    "PixelAreas",
    "pixel_areas",
    "to_equal_area",
    "unit_factor",
    "row_pixel_areas",
    "equal_area_crs",
    "areas_m2",
    "perimeters_m",
]

#: Longest polygon edge (metres; 0.001 degree in a geographic CRS) measured as a straight line
#: in the equal-area projection. A straight edge of a UTM grid bends away from that line by
#: L^2 / 8 x (2.5e-9 / m 100 km from the central meridian, 8e-9 / m 330 km from it): at most
#: 10 um over 100 m, which moves a field of a few pixels by about 1e-7 of its area and a bigger
#: one by less (a 10 ha field with 500 m edges by 5e-7, were they not densified).
DENSIFY_M = 100.0
_DENSIFY_DEG = 0.001
#: Largest spacing (metres) of the lattice on which pixel areas are measured and between
#: whose nodes they are interpolated, and the most nodes along one side.
LATTICE_M = 1000.0
_MAX_NODES = 1025


# --------------------------------------------------------------------------------------
# CRSs (pure)
def _to_pyproj(crs: Any) -> Any:
    import pyproj

    if isinstance(crs, pyproj.CRS):
        return crs
    wkt = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    return pyproj.CRS.from_user_input(wkt)


def unit_factor(crs: Any) -> float:
    """Metres per CRS unit of a projected CRS."""
    pc = _to_pyproj(crs)
    axis = pc.axis_info[0] if pc.axis_info else None
    f = getattr(axis, "unit_conversion_factor", None)
    return float(f) if f else 1.0


def _check_degrees(pc: Any) -> None:
    unit = pc.axis_info[0].unit_name if pc.axis_info else "degree"
    if "degree" not in unit:
        raise AreaError(f"geographic CRS in {unit!r}; expected degrees - reproject the data to EPSG:4326 first")


def equal_area_crs(crs: Any, lon_0: float = 0.0, lat_0: float = 0.0) -> Any:
    """An equal-area CRS on ``crs``'s own datum, centred at ``(lon_0, lat_0)`` (degrees).

    Cylindrical equal-area (``lat_0`` unused) for a geographic ``crs``, Lambert azimuthal
    equal-area for a projected one. On the same datum, going there is an inverse projection
    and a forward one, never a datum shift.

    Raises
    ------
    AreaError
        ``crs`` has no datum (a local engineering CRS).
    """
    from pyproj.crs import CoordinateOperation, ProjectedCRS

    pc = _to_pyproj(crs)
    if pc.geodetic_crs is None:
        raise AreaError(f"CRS {pc.name!r} has no datum; expected a geographic or projected CRS")
    if pc.is_geographic:
        conv = CoordinateOperation.from_string(f"+proj=cea +lon_0={float(lon_0)!r} +lat_ts=0")
    else:
        conv = CoordinateOperation.from_string(f"+proj=laea +lon_0={float(lon_0)!r} +lat_0={float(lat_0)!r}")
    return ProjectedCRS(conv, geodetic_crs=pc.geodetic_crs)


def _transformer(src: Any, dst: Any) -> Any:
    import pyproj

    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def _equal_area_transformer(pc: Any, lon_0: float, lat_0: float) -> Any:
    """A transformer from ``pc`` to :func:`equal_area_crs` at about ``(lon_0, lat_0)``: the centre is
    rounded to 0.01 degree and the transformer kept, as making one takes ~40 ms (any centre
    gives the same areas; a near one keeps straight edges nearly straight)."""
    return _cached_equal_area_transformer(pc.to_wkt(), round(float(lon_0), 2), round(float(lat_0), 2))


@lru_cache(maxsize=16)
def _cached_equal_area_transformer(wkt: str, lon_0: float, lat_0: float) -> Any:
    import pyproj

    pc = pyproj.CRS.from_wkt(wkt)
    return _transformer(pc, equal_area_crs(pc, lon_0, lat_0))


def _centre_lonlat(pc: Any, bounds: Any) -> tuple[float, float]:
    """Longitude and latitude of the middle of ``bounds`` (CRS units); (0, 0) if they are not finite."""
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        return 0.0, 0.0
    x, y = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if pc.is_geographic:
        return float(x), float(y)
    lon, lat = _transformer(pc, pc.geodetic_crs).transform(x, y)
    return float(lon), float(lat)


def _xy(tr: Any) -> Any:
    return lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))


# --------------------------------------------------------------------------------------
# pixels (pure)
def _zone(lat_deg: np.ndarray, a: float, b: float) -> np.ndarray:
    """Ellipsoid area between the equator and latitude ``lat`` per radian of longitude (m2)."""
    s = np.sin(np.radians(lat_deg))
    e2 = 1.0 - (b * b) / (a * a)
    if e2 <= 0:
        return a * a * s
    e = math.sqrt(e2)
    return (b * b / 2.0) * (s / (1.0 - e2 * s * s) + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e))


def _check_north_up(transform: Affine) -> None:
    if transform.b != 0 or transform.d != 0:
        raise AreaError(f"rotated grid {tuple(transform)[:6]}; warp it north-up first")


def row_pixel_areas(transform: Affine, crs: Any, height: int) -> np.ndarray:
    """Ground area (m2) of one pixel in each of ``height`` rows of a geographic grid.

    The exact area of a cell bounded by two meridians and two parallels on the CRS's
    ellipsoid. (In a projected CRS a pixel's ground area changes along a row too: see
    :func:`pixel_areas`.)

    Raises
    ------
    AreaError
        A rotated grid, a projected CRS, or a geographic CRS not in degrees.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> a = row_pixel_areas(Affine(1, 0, 0, 0, -1, 1), CRS.from_epsg(4326), 1)  # 1 x 1 degree at the equator
    >>> round(float(a[0]) / 1e6, 1)
    12308.5
    """
    _check_north_up(transform)
    pc = _to_pyproj(crs)
    if not pc.is_geographic:
        raise AreaError(f"CRS {pc.name!r} is not geographic; the ground areas of its pixels come from pixel_areas")
    _check_degrees(pc)
    ell = pc.ellipsoid
    a, b = ell.semi_major_metre, ell.semi_minor_metre
    rows = np.arange(height + 1, dtype=np.float64)
    lat = transform.f + rows * transform.e
    z = _zone(np.clip(lat, -90, 90), a, b)
    return np.abs(np.diff(z)) * math.radians(abs(transform.a))


@dataclass(frozen=True, eq=False)
class PixelAreas:
    """The ground area (m2) of every pixel of a north-up grid, made by :func:`pixel_areas`.

    Measured at the nodes of a lattice (pixel-centre coordinates ``rows`` x ``cols``, the
    pixel ``(r, c)`` at ``(r + 0.5, c + 0.5)``) and interpolated bilinearly between them: a
    geographic grid has a node in every row (its exact row areas) and one column.

    Attributes
    ----------
    rows, cols : ndarray of float64
        The lattice's node positions, increasing.
    values : ndarray of float64, shape (len(rows), len(cols))
        Ground area of the pixel at each node (m2).
    constant : float or None
        The area of every pixel when they are all alike (an equal-area CRS such as Albers,
        or a CRS with no datum), else None.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    constant: float | None = None

    @property
    def mean(self) -> float:
        """The mean of the nodes' pixel areas (m2): a typical pixel's."""
        return float(self.constant if self.constant is not None else self.values.mean())

    def factors(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The ground areas of a block's pixels as ``A @ B.T``: ``A`` (height, k), ``B`` (width, k).

        The block's lattice is factored by a singular value decomposition, keeping the
        factors down to 1e-9 of the largest (``k`` is 1 to 3 for real projections), and
        each factor is interpolated linearly between the nodes: the product is the bilinear
        interpolation of the nodes' areas.

        Examples
        --------
        >>> pa = PixelAreas(np.array([0.5, 9.5]), np.array([0.5]), np.array([[100.0], [109.0]]))
        >>> a, b = pa.factors(0, 0, 10, 3)
        >>> (a @ b.T)[:3, 0].tolist(), (a @ b.T).shape
        ([100.0, 101.0, 102.0], (10, 3))
        """
        h, w = int(height), int(width)
        if self.constant is not None:
            return np.full((h, 1), float(self.constant)), np.ones((w, 1))
        r = np.arange(h, dtype=np.float64) + (row_off + 0.5)
        c = np.arange(w, dtype=np.float64) + (col_off + 0.5)
        i0, i1 = _span(self.rows, r)
        j0, j1 = _span(self.cols, c)
        sub = self.values[i0:i1, j0:j1]
        if sub.shape[1] == 1:  # one column of nodes (a geographic grid's rows): no factoring to do
            return np.interp(r, self.rows[i0:i1], sub[:, 0])[:, None], np.ones((w, 1))
        u, s, vt = np.linalg.svd(sub, full_matrices=False)
        k = max(1, int(np.count_nonzero(s > s[0] * 1e-9)))
        a = np.column_stack([np.interp(r, self.rows[i0:i1], u[:, q] * s[q]) for q in range(k)])
        b = np.column_stack([np.interp(c, self.cols[j0:j1], vt[q]) for q in range(k)])
        return a, b

    def block(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """The ground area (m2) of each pixel of a block, shape (height, width)."""
        a, b = self.factors(row_off, col_off, height, width)
        return a @ b.T


def _span(nodes: np.ndarray, pos: np.ndarray) -> tuple[int, int]:
    """``(i0, i1)``: the nodes ``nodes[i0:i1]`` that bracket the positions ``pos``."""
    if len(pos) == 0 or len(nodes) == 1:
        return 0, len(nodes)
    i0 = max(int(np.searchsorted(nodes, pos[0], "right")) - 1, 0)
    i1 = min(int(np.searchsorted(nodes, pos[-1], "left")) + 1, len(nodes))
    return i0, max(i1, i0 + 1)


def _nodes(n_px: int, size_m: float, spacing_m: float) -> np.ndarray:
    """Lattice positions along one side of ``n_px`` pixels of ``size_m`` metres: both end pixels'
    centres and at most ``spacing_m`` apart (every pixel's, if they are larger)."""
    n = min(n_px, _MAX_NODES, max(2, math.ceil(n_px * size_m / spacing_m) + 1))
    if n_px <= 1 or n <= 1:
        return np.array([n_px / 2.0])
    return np.linspace(0.5, n_px - 0.5, n)


def pixel_areas(transform: Affine, crs: Any, shape: tuple[int, int], *,
                spacing_m: float = LATTICE_M) -> PixelAreas:
    """The ground area (m2) of every pixel of a ``shape`` (height, width) grid in ``crs``.

    Geographic CRS: each row's exact area (:func:`row_pixel_areas`). Projected CRS: each
    lattice node's pixel cell, its four corners taken into a Lambert azimuthal equal-area
    projection on the CRS's datum centred on the grid, measured there; nodes at most
    ``spacing_m`` apart. A CRS with no datum: the planar pixel area in metres.

    Parameters
    ----------
    transform : Affine
        The grid's north-up transform.
    crs : CRS
        Any CRS pyproj reads (a rasterio or pyproj CRS, WKT, ``"EPSG:32643"``).
    shape : (height, width)
        The grid's size in pixels.
    spacing_m : float
        Largest distance between the lattice's nodes (metres).

    Returns
    -------
    PixelAreas
        Hand a block's areas out with :meth:`PixelAreas.block` or :meth:`PixelAreas.factors`.

    Raises
    ------
    AreaError
        A rotated grid, a geographic CRS not in degrees, or pixels that do not map to the ground.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> t = Affine(10, 0, 600_000, 0, -10, 3_380_000)  # UTM 43N, 100 km east of the central meridian
    >>> pa = pixel_areas(t, CRS.from_epsg(32643), (100, 100))
    >>> round(float(pa.block(0, 0, 1, 1)[0, 0]), 3)  # not 100 m2: the grid's areal scale here
    100.055
    >>> pixel_areas(Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(3035), (5, 5)).constant  # LAEA Europe
    100.0
    """
    _check_north_up(transform)
    h, w = int(shape[0]), int(shape[1])
    pc = _to_pyproj(crs)
    planar = abs(transform.a * transform.e)
    if pc.is_geographic:
        area = row_pixel_areas(transform, pc, h)
        return PixelAreas(np.arange(h) + 0.5, np.array([w / 2.0]), area[:, None])
    f = unit_factor(pc)
    planar *= f * f
    if pc.geodetic_crs is None:
        return PixelAreas(np.array([h / 2.0]), np.array([w / 2.0]), np.array([[planar]]), planar)
    rows = _nodes(h, abs(transform.e) * f, spacing_m)
    cols = _nodes(w, abs(transform.a) * f, spacing_m)
    lon0, lat0 = _centre_lonlat(pc, _grid_bounds(transform, h, w))
    tr = _equal_area_transformer(pc, lon0, lat0)
    cc, rr = np.meshgrid(cols, rows)
    xs, ys = [], []
    for dc, dr in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        x, y = transform @ (cc + dc, rr + dr)
        xs.append(x)
        ys.append(y)
    X, Y = tr.transform(np.stack(xs), np.stack(ys))
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise AreaError(f"the grid's pixels do not all map to the ground in {pc.name!r}; check the grid's CRS")
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)  # each cell about its centre: no cancellation
    values = np.abs(0.5 * sum(X[i] * Y[(i + 1) % 4] - X[(i + 1) % 4] * Y[i] for i in range(4)))
    spread = float(np.ptp(values) / values.mean())
    if spread < 1e-8:  # every pixel alike: an equal-area CRS (the planar area then, exactly)
        c = planar if abs(values.mean() / planar - 1) < 1e-8 else float(values.mean())
        return PixelAreas(np.array([h / 2.0]), np.array([w / 2.0]), np.array([[c]]), c)
    return PixelAreas(rows, cols, values)


def _grid_bounds(t: Affine, h: int, w: int) -> tuple[float, float, float, float]:
    xs = [t.c, t.c + t.a * w]
    ys = [t.f, t.f + t.e * h]
    return (min(xs), min(ys), max(xs), max(ys))


# --------------------------------------------------------------------------------------
# polygons (pure)
def to_equal_area(geoms: np.ndarray, crs: Any, *, bounds: Any = None) -> np.ndarray:
    """``geoms`` (in ``crs``) in the equal-area CRS of :func:`equal_area_crs`, centred on ``bounds``.

    Edges are first densified to at most :data:`DENSIFY_M` metres (0.001 degree in a
    geographic CRS), so that a straight edge of ``crs`` keeps its shape. Give the same
    ``bounds`` (CRS units; default: those of ``geoms``) to geometries that are to be
    overlaid. A CRS with no datum: coordinates scaled to metres.
    """
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if pc.geodetic_crs is None:
        f = unit_factor(pc)
        return shapely.transform(geoms, lambda xy: xy * f)
    if pc.is_geographic:
        _check_degrees(pc)
    if bounds is None:
        valid = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        bounds = shapely.total_bounds(geoms[valid]) if valid.any() else None
    lon0, lat0 = _centre_lonlat(pc, bounds)
    step = _DENSIFY_DEG if pc.is_geographic else DENSIFY_M / unit_factor(pc)
    dense = shapely.segmentize(geoms, step)
    return shapely.transform(dense, _xy(_equal_area_transformer(pc, lon0, lat0)))


def areas_m2(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground areas (m2) of polygons on the CRS's ellipsoid, in any CRS (NaN for missing ones).

    As :func:`to_equal_area` then planar areas, computed on the rings' coordinates without
    building geometries: edges longer than :data:`DENSIFY_M` get points at equal steps, all
    vertices go through one transform, and each ring's shoelace area (holes subtracted) is
    summed per geometry. Planar (in metres) for a CRS with no datum.

    Parameters
    ----------
    geoms : array of (Multi)Polygons
        In ``crs``; None gives NaN, other geometries 0.
    crs : CRS
        Any CRS pyproj reads.

    Returns
    -------
    ndarray of float64
        One ground area (m2) per geometry.

    Raises
    ------
    AreaError
        A geographic CRS not in degrees.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> g = np.array([shapely.box(600_000, 3_370_000, 601_000, 3_371_000)])  # 1 km2 of UTM 43N's grid
    >>> round(float(areas_m2(g, CRS.from_epsg(32643))[0]))
    1000551
    """
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if pc.geodetic_crs is None:
        return shapely.area(geoms) * unit_factor(pc) ** 2
    if pc.is_geographic:
        _check_degrees(pc)
    out = np.where(shapely.is_missing(geoms), np.nan, 0.0)
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    if len(rings) == 0:
        return out
    exterior = np.r_[True, ring_part[1:] != ring_part[:-1]]  # each part's first ring
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    step = _DENSIFY_DEG if pc.is_geographic else DENSIFY_M / unit_factor(pc)
    xy, ridx = _densify(xy, ridx, step)
    lon0, lat0 = _centre_lonlat(pc, (xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
    X, Y = _equal_area_transformer(pc, lon0, lat0).transform(xy[:, 0], xy[:, 1])
    starts = np.flatnonzero(np.r_[True, ridx[1:] != ridx[:-1]])
    X = X - np.repeat(X[starts], np.diff(np.r_[starts, len(X)]))  # about each ring's first vertex
    Y = Y - np.repeat(Y[starts], np.diff(np.r_[starts, len(Y)]))
    same = np.r_[ridx[1:] == ridx[:-1], False]
    cross = np.where(same, X * np.roll(Y, -1) - np.roll(X, -1) * Y, 0.0)
    ring_area = np.zeros(len(rings))
    ring_area[ridx[starts]] = np.abs(np.add.reduceat(cross, starts)) / 2
    signed = np.where(exterior, ring_area, -ring_area)
    out += np.bincount(part_of[ring_part], weights=signed, minlength=len(geoms))
    return out


def _densify(xy: np.ndarray, ridx: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring coordinates with points added at equal steps along every edge longer than ``step``."""
    d = np.hypot(*np.diff(xy, axis=0).T)
    same = ridx[1:] == ridx[:-1]
    n = np.ones(len(xy), np.int64)  # points each vertex stands for: itself plus those after it
    n[:-1] = np.where(same, np.maximum(np.ceil(d / step), 1), 1).astype(np.int64)
    if (n == 1).all():
        return xy, ridx
    src = np.repeat(np.arange(len(xy)), n)
    k = np.arange(len(src)) - np.repeat(np.cumsum(n) - n, n)
    t = (k / np.repeat(n, n))[:, None]
    nxt = np.minimum(src + 1, len(xy) - 1)
    return xy[src] + t * (xy[nxt] - xy[src]), ridx[src]


#: Geometries measured at once by :func:`perimeters_m`.
_PERIMETER_CHUNK = 4096


def perimeters_m(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground lengths (m) of polygon outlines (exterior plus holes): geodesic, in any CRS.

    Geographic CRS: the geodesic distance between consecutive vertices on the CRS's
    ellipsoid. Projected CRS: each edge (split into pieces of at most 1 km) is measured with
    the CRS's metric on the ellipsoid at its middle (:func:`_metric`), which gives the
    geodesic length of short pieces to about 1e-9 without taking every vertex to longitude
    and latitude. Planar (in metres) for a CRS with no datum.

    Parameters
    ----------
    geoms : array of (Multi)Polygons
        In ``crs``.
    crs : CRS
        Any CRS pyproj reads.

    Returns
    -------
    ndarray of float64
        One length (m) per geometry, 0 for missing or empty ones.

    Raises
    ------
    AreaError
        A geographic CRS not in degrees.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> g = np.array([shapely.box(600_000, 3_370_000, 601_000, 3_371_000)])  # 4 km of UTM 43N's grid
    >>> round(float(perimeters_m(g, CRS.from_epsg(32643))[0]), 2)
    4001.1
    """
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) > _PERIMETER_CHUNK:  # bounded memory: every vertex of a chunk is held several times over
        return np.concatenate([perimeters_m(geoms[i:i + _PERIMETER_CHUNK], crs)
                               for i in range(0, len(geoms), _PERIMETER_CHUNK)])
    pc = _to_pyproj(crs)
    if pc.geodetic_crs is None:
        return shapely.length(geoms) * unit_factor(pc)
    out = np.zeros(len(geoms))
    if len(geoms) == 0:
        return out
    parts, part_of = shapely.get_parts(geoms, return_index=True)  # get_rings skips MultiPolygons
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    gidx = part_of[ring_part]
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    if len(xy) < 2:
        return out
    if pc.is_geographic:
        _check_degrees(pc)
        same = ridx[1:] == ridx[:-1]
        _, _, dist = pc.get_geod().inv(xy[:-1][same, 0], xy[:-1][same, 1], xy[1:][same, 0], xy[1:][same, 1])
        return np.bincount(gidx[ridx[:-1][same]], weights=dist, minlength=len(geoms))
    xy, ridx = _densify(xy, ridx, 1000.0 / unit_factor(pc))
    same = ridx[1:] == ridx[:-1]
    d = (xy[1:] - xy[:-1])[same]
    mid = ((xy[1:] + xy[:-1]) / 2)[same]
    e, f, g = _metric(pc, mid)
    dist = np.sqrt(np.maximum(e * d[:, 0] ** 2 + 2 * f * d[:, 0] * d[:, 1] + g * d[:, 1] ** 2, 0.0))
    return np.bincount(gidx[ridx[:-1][same]], weights=dist, minlength=len(geoms))


def _metric(pc: Any, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(E, F, G)`` of a projected CRS at the points ``at`` (n, 2): a step ``(dx, dy)`` in CRS
    units there is ``sqrt(E dx^2 + 2F dx dy + G dy^2)`` metres on the ellipsoid.

    Measured by geodesics of 10 m steps (along x, along y, diagonally) centred on the nodes of
    a lattice over the points, at most 1 km apart (257 a side), and interpolated bilinearly.
    """
    f = unit_factor(pc)
    lo, hi = at.min(axis=0), at.max(axis=0)
    n = np.clip(np.ceil((hi - lo) * f / 1000.0).astype(np.int64) + 1, 2, 257)
    xs, ys = np.linspace(lo[0], hi[0], n[0]), np.linspace(lo[1], hi[1], n[1])
    nx, ny = (a.ravel() for a in np.meshgrid(xs, ys))
    h = 5.0 / f  # half a 10 m step, in CRS units
    steps = ((h, 0.0), (0.0, h), (h, h))
    px = np.concatenate([np.r_[nx - a, nx + a] for a, _ in steps])
    py = np.concatenate([np.r_[ny - b, ny + b] for _, b in steps])
    lon, lat = _transformer(pc, pc.geodetic_crs).transform(px, py)
    k = len(nx)
    lon, lat = lon.reshape(3, 2, k), lat.reshape(3, 2, k)
    _, _, dist = pc.get_geod().inv(lon[:, 0].ravel(), lat[:, 0].ravel(), lon[:, 1].ravel(), lat[:, 1].ravel())
    lx, ly, ld = (dist.reshape(3, k) / (2 * h))
    e, g = lx * lx, ly * ly
    fm = (ld * ld - e - g) / 2
    # bilinear interpolation on the regular lattice: four gathers of the three values at once
    tx = np.clip((at[:, 0] - lo[0]) / max(xs[1] - xs[0], 1e-300), 0, n[0] - 1)
    ty = np.clip((at[:, 1] - lo[1]) / max(ys[1] - ys[0], 1e-300), 0, n[1] - 1)
    i0, j0 = np.minimum(tx.astype(np.int64), n[0] - 2), np.minimum(ty.astype(np.int64), n[1] - 2)
    wx, wy = tx - i0, ty - j0
    v = np.stack([e, fm, g])
    k00 = j0 * n[0] + i0
    top = v[:, k00] + wx * (v[:, k00 + 1] - v[:, k00])
    bottom = v[:, k00 + n[0]] + wx * (v[:, k00 + n[0] + 1] - v[:, k00 + n[0]])
    out = top + wy * (bottom - top)
    return out[0], out[1], out[2]
