"""The independent reference for ground areas and lengths: pyproj.Geod on densified lon/lat polygons.

A polygon's straight edges in its CRS are densified to ``step`` metres (CRS units converted),
so that the geodesic edges Geod assumes follow them, then taken to longitude and latitude
on the CRS's own datum and measured with ``Geod.geometry_area_perimeter`` on its ellipsoid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyproj
import shapely


def geod_area_perimeter(geoms: Any, crs: Any, step_m: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """``(areas m2, perimeters m)`` of ``geoms`` (in ``crs``) by pyproj.Geod; perimeters include holes."""
    pc = pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    geoms = np.atleast_1d(np.asarray(geoms, dtype=object))
    if pc.is_geographic:
        ll = shapely.segmentize(geoms, step_m / 111_000.0)
    else:
        f = pc.axis_info[0].unit_conversion_factor
        tr = pyproj.Transformer.from_crs(pc, pc.geodetic_crs, always_xy=True)
        ll = shapely.transform(shapely.segmentize(geoms, step_m / f),
                               lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    geod = pc.get_geod()
    area = np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in ll])
    # every ring's length (geometry_area_perimeter leaves holes out of the perimeter)
    perimeter = np.array([sum(geod.geometry_length(r) for r in shapely.get_rings(shapely.get_parts(g)))
                          for g in ll])
    return area, perimeter
