"""A mask's fields scored against true field polygons, object by object.

The predicted fields are those ``geoseg polygonize`` traces from the mask (same sieve, same
classes left out: :func:`geoseg.core.objects.mask_field_scores`; a test checks they are the
polygons burnt back, pixel for pixel); the true fields are burnt onto the mask's grid (a pixel
belongs to the polygon holding its centre, :func:`geoseg.io.field_polygons.burn_fields`). The
whole mask is held in memory: this is for the areas one evaluates on, not for a state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from geoseg.classes import ClassTable, load_classes
from geoseg.core.geodesy import pixel_areas
from geoseg.core.instances import Separation
from geoseg.core.objects import ObjectScores, mask_field_scores
from geoseg.core.sieve import DEFAULT_MIN_AREA_HA, min_area_pixels
from geoseg.errors import LabelError
from geoseg.io.field_polygons import burn_fields
from geoseg.io.raster import check_same_grid, open_raster, raster_info, read_mask_classes
from geoseg.ops.polygonize import exclude_ids, resolve_separation

__all__ = ["MAX_PIXELS", "field_scores"]

#: The largest mask scored at once (the mask and two int32 id rasters in memory).
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
    confidence: str | os.PathLike[str] | None = None,
    separation: Separation | None = None,
) -> ObjectScores:
    """Object-level scores of the fields polygonised from ``mask`` against ``true_fields``.

    Parameters
    ----------
    mask : path
        A class mask (a geoseg mask, or any single-band class raster with a nodata value).
    true_fields : path
        The true field polygons (any vector format, any CRS).
    classes : ClassTable or path, optional
        The class table (default: the mask's): which classes make no field, and the names
        ``class_field`` may use.
    class_field : str, optional
        The true fields' attribute holding the crop (class id or name): adds the
        class-aware scores (a match of the same crop).
    min_area_ha, exclude
        As :func:`geoseg.ops.polygonize.polygonize_raster` takes them.
    tolerance_px : float
        Boundary tolerance, pixels.
    confidence : path, optional
        The mask's confidence raster: when it has a ``boundary`` band, the fields are separated
        on it, as ``polygonize`` separates them (``separation``: as
        :func:`geoseg.ops.polygonize.polygonize_raster` takes it).

    Raises
    ------
    LabelError
        True fields without a CRS or polygons, a missing ``class_field``, crop values outside
        the class table; a mask too large to hold.
    PolygonizeError, RasterReadError, VectorReadError
        Bad ``min_area_ha``/``exclude``; unreadable files.
    """
    info = raster_info(mask)
    h, w = info.shape.height, info.shape.width
    if h * w > MAX_PIXELS:
        raise LabelError(f"{mask}: {h} x {w} px is more than the {MAX_PIXELS:,} px scored at once; score a window "
                         f"of it (geoseg evaluate --window, or cut the mask with gdal_translate -srcwin)")
    table = classes if isinstance(classes, ClassTable) else (
        load_classes(classes) if classes is not None else read_mask_classes(str(mask)))
    excl = exclude_ids(exclude, table, str(mask))
    min_px = min_area_pixels(min_area_ha, pixel_areas(info.transform, info.crs, (h, w)).mean)
    true_ids, true_class = burn_fields(true_fields, (h, w), info.transform, info.crs, class_field, table)
    with open_raster(mask) as src:
        arr, valid = src.read(1), src.read_masks(1) > 0
    boundary = None
    sep = Separation()
    if confidence is not None:
        check_same_grid(info, raster_info(confidence))
        sep, band = resolve_separation(confidence, True, separation)
        if band is not None:
            with open_raster(confidence) as src:
                boundary = src.read(band)
    return mask_field_scores(arr, valid, true_ids, min_pixels=min_px, exclude=excl, true_class=true_class,
                             tolerance_px=tolerance_px, boundary=boundary, separation=sep)
