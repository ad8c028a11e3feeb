"""True field polygons burnt onto a raster grid, as field ids (for the object-level field scores).

A pixel takes the id of the polygon holding its centre (1, 2, ... in file order; 0 for none),
as GDAL's rasterisation does. The crop of each field comes from an attribute holding a class
id or name of the class table.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from affine import Affine
from rasterio.features import rasterize

from geoseg.classes import ClassTable
from geoseg.errors import LabelError
from geoseg.io.label_values import class_ids
from geoseg.io.vector import read_vector

__all__ = ["burn_fields"]


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
    truth = read_vector(path)
    if truth.crs is None:
        raise LabelError(f"{where}: has no CRS, so its fields cannot be placed on the grid ({crs}); assign one, "
                         f"e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {where}`")
    truth = truth[truth.geometry.notna() & truth.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if truth.empty:
        raise LabelError(f"{where}: holds no field polygons; expected the true fields as polygons")
    truth = truth.to_crs(crs)
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
