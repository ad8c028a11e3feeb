"""Class values of label files: class ids or class names of the class table, checked.

Shared by the label readers (:mod:`geoseg.io.labels` for rasters and polygons,
:mod:`geoseg.io.points` for GPS points): which class an attribute value names, the checks a
vector label file must pass (the class attribute, a CRS), and the one error that names every
value outside the class table with the table's ids and names and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.classes import NODATA, ClassTable
from geoseg.errors import LabelError

__all__ = ["bad_values_error", "class_of", "class_ids", "check_label_frame"]


def bad_values_error(path: str, values: Sequence[Any], classes: ClassTable, what: str,
                      fix: str | None = None) -> LabelError:
    shown = ", ".join(repr(v) for v in list(values)[:12]) + (", ..." if len(values) > 12 else "")
    fix = fix or (f"recode the labels to these ids (nodata/unlabelled = {NODATA} or the file's nodata value) "
                  f"or use the class file they were made with")
    return LabelError(
        f"{path}: {what} {shown} not in the class file {classes.source} (ids 0..{len(classes) - 1}: "
        f"{', '.join(f'{c.id}={c.name}' for c in classes)}); {fix}"
    )


def class_of(value: Any, classes: ClassTable) -> int | None:
    """The class id a vector attribute value stands for, or None when it names no class."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= int(value) < len(classes) else None
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return int(f) if f.is_integer() and 0 <= f < len(classes) else None
    if isinstance(value, str):
        s = value.strip()
        if s in classes.names:
            return classes.id_of(s)
        if s.lstrip("-").isdigit():
            i = int(s)
            return i if 0 <= i < len(classes) else None
    return None


def check_label_frame(gdf: Any, path: str, field: str | None, image: Any) -> None:
    """Raise :class:`LabelError` unless the vector labels ``gdf`` have the attribute ``field`` and a CRS.

    ``image`` is the :class:`geoseg.io.raster.RasterInfo` of the image the labels are for (its CRS is named).
    """
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if field is None:
        raise LabelError(
            f"{path}: a vector label file needs the attribute holding the class; pass "
            f"--label-field (label_field=) naming one of its attributes {columns}"
        )
    if field not in gdf.columns:
        raise LabelError(
            f"{path}: has no attribute {field!r}; its attributes are {columns} - pass the one holding "
            f"the class id or class name with --label-field"
        )
    if gdf.crs is None:
        raise LabelError(
            f"{path}: has no CRS, so it cannot be placed on the image grid ({image.crs.to_string()}); "
            f"assign one, e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {path}` (without GDAL's tools: "
            f"`python -c \"import geopandas as g; g.read_file('{path}').set_crs('EPSG:4326')"
            f".to_file('fixed.gpkg')\"`)"
        )


def class_ids(raw: np.ndarray, classes: ClassTable, path: str, field: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int64, known bool)`` of attribute values (class ids or names); -1 where the value is null.

    Raises
    ------
    LabelError
        Naming every value that is neither a class id nor a class name of ``classes``.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> ids, known = class_ids(np.array(["rice", 2, None], dtype=object), default_classes(), "p.gpkg", "crop")
    >>> ids.tolist(), known.tolist()
    ([1, 2, -1], [True, True, False])
    """
    known = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in raw], bool)
    ids = [class_of(v, classes) if k else None for v, k in zip(raw, known)]
    bad = known & np.array([i is None for i in ids], bool)
    if bad.any():
        vals = sorted({str(v) for v in raw[bad]})
        raise bad_values_error(
            path, vals, classes, f"attribute {field!r} holds values",
            "write each as one of these class names or ids (spelling and case as in the class file; "
            "leave a value empty to skip the feature), or pass the class file the labels were made with",
        )
    return np.array([-1 if i is None else int(i) for i in ids], np.int64), known
