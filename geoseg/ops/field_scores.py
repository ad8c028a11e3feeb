"""A mask's fields scored against true field polygons, object by object.

The predicted fields are those ``geoseg polygonize`` makes of the mask (same sieve, same
classes left out), burnt back onto the mask's grid (a traced outline follows pixel edges, so
each field gets exactly its pixels); the true fields are burnt onto the same grid (a pixel
belongs to the polygon holding its centre). Both id rasters then go to
:func:`geoseg.core.objects.object_scores`. The whole mask is held in memory: this is for the
areas one evaluates on, not for a state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from geoseg.classes import ClassTable
from geoseg.core.objects import ObjectScores, object_scores
from geoseg.core.sieve import DEFAULT_MIN_AREA_HA
from geoseg.errors import LabelError
from geoseg.io.label_values import class_ids
from geoseg.io.raster import open_raster, raster_info
from geoseg.io.vector import read_vector
from geoseg.ops.polygonize import polygonize_raster

__all__ = ["MAX_PIXELS", "field_scores"]

#: The largest mask scored at once (two int32 id rasters and the mask in memory).
MAX_PIXELS = 400_000_000


def field_scores(
    mask: str | os.PathLike[str],
    true_fields: str | os.PathLike[str],
    *,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    class_field: str | None = None,
    min_area_ha: float = DEFAULT_MIN_AREA_HA,
    exclude: Sequence[str | int] | None = None,
    tolerance_px: float = 1.0,
    workers: int | None = None,
) -> ObjectScores:
    """Object-level scores of the fields polygonised from ``mask`` against ``true_fields``.

    Parameters
    ----------
    mask : path
        A class mask (a geoseg mask, or any single-band class raster with a nodata value).
    true_fields : path
        The true field polygons (any vector format, any CRS).
    classes : ClassTable or path, optional
        The class table (default: the mask's); needed for ``class_field`` names.
    class_field : str, optional
        The true fields' attribute holding the crop (class id or name): adds the
        class-aware scores (a match of the same crop).
    min_area_ha, exclude
        As :func:`geoseg.ops.polygonize.polygonize_raster` takes them: the predicted fields
        are exactly those it makes.
    tolerance_px : float
        Boundary tolerance, pixels.

    Raises
    ------
    LabelError
        True fields without a CRS or polygons, a missing ``class_field``, crop values outside
        the class table.
    PolygonizeError, RasterReadError, VectorReadError
        As polygonising and reading raise them.
    """
    from rasterio.features import rasterize

    info = raster_info(mask)
    h, w = info.shape.height, info.shape.width
    if h * w > MAX_PIXELS:
        raise LabelError(f"{mask}: {h} x {w} px is more than the {MAX_PIXELS:,} px scored at once; score a window "
                         f"of it (geoseg evaluate --window, or cut the mask with gdal_translate -srcwin)")
    pred = polygonize_raster(mask, classes=classes, min_area_ha=min_area_ha, exclude=exclude, workers=workers)
    shape = (h, w)

    def burn(geoms: Sequence[object]) -> np.ndarray:
        if not len(geoms):
            return np.zeros(shape, np.int32)
        return rasterize(zip(geoms, range(1, len(geoms) + 1), strict=True), out_shape=shape,
                         transform=info.transform, fill=0, dtype="int32")

    pred_ids = burn(list(pred.geometry))
    pred_class = np.r_[-1, pred["class_id"].to_numpy(np.int64)]
    truth = read_vector(true_fields)
    where = str(true_fields)
    if truth.crs is None:
        raise LabelError(f"{where}: has no CRS, so its fields cannot be placed on the mask's grid "
                         f"({info.crs.to_string()}); assign one, e.g. `ogr2ogr -a_srs EPSG:4326 fixed.gpkg {where}`")
    truth = truth[truth.geometry.notna() & truth.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if truth.empty:
        raise LabelError(f"{where}: holds no field polygons; expected the true fields as polygons")
    truth = truth.to_crs(info.crs)
    true_ids = burn(list(truth.geometry))
    true_class = None
    if class_field is not None:
        if class_field not in truth.columns:
            cols = [c for c in truth.columns if c != truth.geometry.name]
            raise LabelError(f"{where}: has no attribute {class_field!r}; its attributes are {cols} - pass the one "
                             f"holding the crop (class id or name) with --fields-class")
        ids, known = class_ids(truth[class_field].to_numpy(object), _table(classes, mask), where, class_field)
        true_class = np.r_[-1, np.where(known, ids, -2)]
    with open_raster(mask) as src:
        valid = src.read_masks(1) > 0
    return object_scores(pred_ids, true_ids, valid, pred_class=pred_class if true_class is not None else None,
                         true_class=true_class, tolerance_px=tolerance_px)


def _table(classes: ClassTable | str | os.PathLike[str] | None, mask: str | os.PathLike[str]) -> ClassTable:
    from geoseg.classes import load_classes
    from geoseg.io.raster import read_mask_classes

    if isinstance(classes, ClassTable):
        return classes
    if classes is not None:
        return load_classes(classes)
    table = read_mask_classes(str(mask))
    if table is None:
        raise LabelError(f"{mask}: carries no class table; pass the class file (--classes classes.yaml) to read the "
                         f"true fields' crop names")
    return table
