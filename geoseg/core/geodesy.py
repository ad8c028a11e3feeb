"""Ground areas and perimeters of pixels and polygons in any CRS: pure arrays, no files.

* **Projected CRS**: areas from the geometry (pixel size x pixel size, or polygon area), in
  the CRS's linear unit converted to metres.
* **Geographic CRS** (EPSG:4326 rasters exist in the wild): never square degrees. A pixel
  row's cells are bounded by two meridians and two parallels, and their ellipsoidal area
  has a closed form (the authalic-latitude zone formula, :func:`row_pixel_areas`); polygons
  are measured in a cylindrical equal-area projection on the CRS's own ellipsoid, where
  meridians and parallels stay straight, so pixel-shaped polygons keep their exact area;
  perimeters are geodesic (:class:`pyproj.Geod`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from affine import Affine

from geoseg.errors import AreaError

__all__ = [
    "to_equal_area",
    "unit_factor",
    "row_pixel_areas",
    "equal_area_crs",
    "areas_m2",
    "perimeters_m",
]


# --------------------------------------------------------------------------------------
# ground areas and lengths (pure)
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


def _zone(lat_deg: np.ndarray, a: float, b: float) -> np.ndarray:
    """Ellipsoid area between the equator and latitude ``lat`` per radian of longitude (m2)."""
    s = np.sin(np.radians(lat_deg))
    e2 = 1.0 - (b * b) / (a * a)
    if e2 <= 0:
        return a * a * s
    e = math.sqrt(e2)
    return (b * b / 2.0) * (s / (1.0 - e2 * s * s) + np.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e))


def row_pixel_areas(transform: Affine, crs: Any, height: int) -> np.ndarray:
    """Ground area (m2) of one pixel in each of ``height`` rows.

    Projected CRS: the pixel size squared, in metres. Geographic CRS: the exact area of a
    cell bounded by two meridians and two parallels on the CRS's ellipsoid.

    Examples
    --------
    >>> from rasterio.crs import CRS
    >>> row_pixel_areas(Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(32643), 2).tolist()
    [100.0, 100.0]
    >>> a = row_pixel_areas(Affine(1, 0, 0, 0, -1, 1), CRS.from_epsg(4326), 1)  # 1 x 1 degree at the equator
    >>> round(float(a[0]) / 1e6, 1)
    12308.5
    """
    if transform.b != 0 or transform.d != 0:
        raise AreaError(f"rotated grid {tuple(transform)[:6]}; warp it north-up first")
    pc = _to_pyproj(crs)
    if pc.is_geographic:
        unit = pc.axis_info[0].unit_name if pc.axis_info else "degree"
        if "degree" not in unit:
            raise AreaError(f"geographic CRS in {unit!r}; expected degrees - reproject the raster to EPSG:4326 first")
        ell = pc.ellipsoid
        a, b = ell.semi_major_metre, ell.semi_minor_metre
        rows = np.arange(height + 1, dtype=np.float64)
        lat = transform.f + rows * transform.e
        z = _zone(np.clip(lat, -90, 90), a, b)
        return np.abs(np.diff(z)) * math.radians(abs(transform.a))
    f = unit_factor(pc)
    return np.full(height, abs(transform.a * transform.e) * f * f)


def equal_area_crs(crs: Any, lon_0: float = 0.0) -> Any:
    """A cylindrical equal-area CRS on ``crs``'s ellipsoid (for measuring geographic polygons)."""
    import pyproj

    ell = _to_pyproj(crs).ellipsoid
    return pyproj.CRS.from_proj4(
        f"+proj=cea +lon_0={lon_0:.6f} +lat_ts=0 +x_0=0 +y_0=0 +a={ell.semi_major_metre!r} "
        f"+b={ell.semi_minor_metre!r} +units=m +no_defs +type=crs"
    )


def to_equal_area(geoms: np.ndarray, crs: Any) -> np.ndarray:
    import pyproj

    pc = _to_pyproj(crs)
    valid = ~shapely.is_missing(geoms)
    lon0 = 0.0
    if valid.any():
        b = shapely.total_bounds(geoms[valid])
        if np.all(np.isfinite(b)):
            lon0 = float((b[0] + b[2]) / 2)
    tr = pyproj.Transformer.from_crs(pc, equal_area_crs(pc, lon0), always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def areas_m2(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground areas (m2) of polygons: planar in a projected CRS, equal-area for geographic ones."""
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if pc.is_geographic:
        return shapely.area(to_equal_area(geoms, pc))
    f = unit_factor(pc)
    return shapely.area(geoms) * f * f


def perimeters_m(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Ground lengths (m) of polygon outlines (exterior plus holes); geodesic for geographic CRSs."""
    geoms = np.asarray(geoms, dtype=object)
    pc = _to_pyproj(crs)
    if not pc.is_geographic:
        return shapely.length(geoms) * unit_factor(pc)
    out = np.zeros(len(geoms))
    if len(geoms) == 0:
        return out
    parts, part_of = shapely.get_parts(geoms, return_index=True)  # get_rings skips MultiPolygons
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    gidx = part_of[ring_part]
    xy, ridx = shapely.get_coordinates(rings, return_index=True)
    same = ridx[1:] == ridx[:-1]
    if not same.any():
        return out
    geod = pc.get_geod()
    _, _, dist = geod.inv(xy[:-1][same, 0], xy[:-1][same, 1], xy[1:][same, 0], xy[1:][same, 1])
    return np.bincount(gidx[ridx[:-1][same]], weights=dist, minlength=len(geoms))
