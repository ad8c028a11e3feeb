"""True field polygons burnt onto a raster grid: as field ids (for the object-level field scores),
and as field edges window by window (the boundary targets of ``train --fields``).

A pixel takes the id of the polygon holding its centre (1, 2, ... in file order; 0 for none),
as GDAL's rasterisation does. The crop of each field comes from an attribute holding a class
id or name of the class table. A field's **edge** pixels are those with a 4-neighbour outside
it (:func:`geoseg.core.objects.boundary_pixels`): between two touching fields, a line two
pixels wide, one on each side.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.transform import array_bounds

from geoseg.classes import ClassTable
from geoseg.core.grid import Window
from geoseg.core.objects import boundary_pixels
from geoseg.errors import LabelError
from geoseg.io.label_values import class_ids
from geoseg.io.vector import read_vector

__all__ = ["FieldEdges", "burn_fields"]


def _polygons(path: str | os.PathLike[str], crs: Any) -> Any:
    """The polygons of ``path`` in ``crs`` (a GeoDataFrame), refused without a CRS or polygons."""
    where = str(path)
    truth = read_vector(path)
    if truth.crs is None:
        raise LabelError(f"{where}: has no CRS, so its fields cannot be placed on the grid ({crs}); assign one, "
                         f"e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {where}`")
    truth = truth[truth.geometry.notna() & truth.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if truth.empty:
        raise LabelError(f"{where}: holds no field polygons; expected the fields as polygons")
    return truth.to_crs(crs)


class FieldEdges:
    """Field polygons read once, their edges burnt window by window (training chips).

    Parameters
    ----------
    path : path
        The field polygons (any vector format, any CRS).
    transform, crs : the image grid
    """

    def __init__(self, path: str | os.PathLike[str], transform: Affine, crs: Any) -> None:
        self.path = str(path)
        self.transform = transform
        geoms = _polygons(path, crs).geometry.to_numpy()
        self._geoms = geoms
        self._tree = shapely.STRtree(geoms)
        self.n = len(geoms)

    def ids(self, window: Window, margin: int = 0) -> np.ndarray:
        """The field ids (1-based polygon index, 0 none; int32) of ``window`` grown by ``margin``
        pixels on every side."""
        h, w = int(window.height) + 2 * margin, int(window.width) + 2 * margin
        t = self.transform @ Affine.translation(int(window.col_off) - margin, int(window.row_off) - margin)
        hits = self._tree.query(shapely.box(*array_bounds(h, w, t)))
        if not len(hits):
            return np.zeros((h, w), np.int32)
        hits = np.sort(hits)
        return rasterize(zip(self._geoms[hits], hits + 1, strict=True), out_shape=(h, w), transform=t, fill=0,
                         dtype="int32")

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(edge, inside)``, (h, w) bool each: the window's field-edge pixels, and its pixels
        inside a field polygon."""
        ids = self.ids(window, margin=1)  # one pixel more: the edges need neighbours
        edge = boundary_pixels(ids)[1:-1, 1:-1]
        return edge, ids[1:-1, 1:-1] > 0


def burn_fields(path: str | os.PathLike[str], shape: tuple[int, int], transform: Affine, crs: Any,
                class_field: str | None = None,
                classes: ClassTable | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(ids (h, w) int32, crop class of each id or None)`` of the field polygons in ``path``.

    ``classes[i]`` is the class id of field ``i`` (index 0, no field, holds -1; a field without
    a crop -2); None without ``class_field``.

    Raises
    ------
    LabelError
        No CRS, no polygon, a missing ``class_field``, crop values outside ``classes``.
    VectorReadError
        A missing or unreadable file.
    """
    where = str(path)
    truth = _polygons(path, crs)
    ids = rasterize(zip(truth.geometry, range(1, len(truth) + 1), strict=True), out_shape=shape,
                    transform=transform, fill=0, dtype="int32")
    if class_field is None:
        return ids, None
    if class_field not in truth.columns:
        cols = [c for c in truth.columns if c != truth.geometry.name]
        raise LabelError(f"{where}: has no attribute {class_field!r}; its attributes are {cols} - pass the one "
                         f"holding the crop (class id or name) with --fields-class")
    if classes is None:
        raise LabelError(f"{where}: the crops of --fields-class need a class table; pass the class file "
                         f"(--classes classes.yaml)")
    cid, known = class_ids(truth[class_field].to_numpy(object), classes, where, class_field)
    return ids, np.r_[-1, np.where(known, cid, -2)]
