"""A STAC item (JSON) describing the rasters geoseg publishes, so STAC catalogues can index them.

The item follows STAC 1.0.0 with three extensions, all at version 1.1.0 (the versions most
catalogues and clients read):

* ``projection``: on each asset, ``proj:epsg`` (or ``proj:wkt2`` when the CRS has no EPSG
  code), ``proj:shape`` (rows, columns) and ``proj:transform`` (the GDAL affine, six numbers);
* ``raster``: ``raster:bands`` of each asset with ``data_type``, ``nodata``, ``scale`` and
  ``offset`` (a confidence raster: scale 1/255, offset 0, nodata 0; a mask: nodata 255) and
  the pixel size as ``spatial_resolution`` when the CRS is in metres;
* ``classification``: ``classification:classes`` on the mask asset, one ``{value, name,
  description, color_hint}`` per class (nodata is not a class).

The item's ``geometry`` is the footprint of the first raster (its outline, densified, in
EPSG:4326) and ``bbox`` that outline's bounds. Asset ``href``\\ s are relative to the item's
folder, so a folder moved elsewhere (a run folder) keeps a valid item. ``datetime`` is when the
item was written: geoseg's inputs carry no acquisition date.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from geoseg.classes import ClassTable
from geoseg.io.raster import open_raster, write_text_atomic

__all__ = [
    "STAC_VERSION",
    "STAC_EXTENSIONS",
    "COG_MEDIA_TYPE",
    "StacAsset",
    "stac_item",
    "write_stac_item",
]

#: The STAC version of the items written.
STAC_VERSION = "1.0.0"
#: The schema URLs of the extensions the items use.
STAC_EXTENSIONS = (
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
)
#: The media type of a Cloud-Optimised GeoTIFF.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

#: Points per raster edge when its outline is reprojected to EPSG:4326.
_EDGE_POINTS = 21


@dataclass(frozen=True, slots=True)
class StacAsset:
    """One raster of an item: its file, a title, its roles and, for a class mask, the class table."""

    path: Path
    title: str
    roles: tuple[str, ...] = ("data",)
    classes: ClassTable | None = None


def _outline(transform: Any, shape: tuple[int, int]) -> list[tuple[float, float]]:
    """The raster's outline in its CRS, counter-clockwise from the top-left corner, closed."""
    h, w = shape
    n = _EDGE_POINTS - 1
    cols_rows = (
        [(0.0, h * i / n) for i in range(n)]  # left edge, downwards
        + [(w * i / n, float(h)) for i in range(n)]  # bottom edge, eastwards
        + [(float(w), h * (n - i) / n) for i in range(n)]  # right edge, upwards
        + [(w * (n - i) / n, 0.0) for i in range(n)]  # top edge, westwards
    )
    pts = [transform @ cr for cr in cols_rows]
    return pts + [pts[0]]


def _raster_fields(path: Path, classes: ClassTable | None) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The projection, raster (and classification) fields of one asset, and its outline in EPSG:4326."""
    with open_raster(path) as src:
        crs: CRS = src.crs
        transform, shape = src.transform, (src.height, src.width)
        epsg = crs.to_epsg()
        fields: dict[str, Any] = {"proj:epsg": epsg}
        if epsg is None:
            fields["proj:wkt2"] = crs.to_wkt()
        fields["proj:shape"] = [int(shape[0]), int(shape[1])]
        fields["proj:transform"] = [float(v) for v in tuple(transform)[:6]]
        bands = []
        for i in range(src.count):
            band: dict[str, Any] = {"data_type": src.dtypes[i]}
            if src.nodata is not None:
                band["nodata"] = src.nodata if not float(src.nodata).is_integer() else int(src.nodata)
            band["scale"], band["offset"] = float(src.scales[i]), float(src.offsets[i])
            if crs.is_projected and crs.linear_units_factor[1] == 1.0:
                band["spatial_resolution"] = float(abs(transform.a))
            bands.append(band)
        fields["raster:bands"] = bands
    if classes is not None:
        fields["classification:classes"] = [
            {"value": c.id, "name": c.name, "description": c.name + ("" if c.crop else " (not a crop)"),
             "color_hint": c.color.lstrip("#").upper()}
            for c in classes
        ]
    xs, ys = zip(*_outline(transform, shape))
    lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    return fields, list(zip(lon, lat))


def stac_item(item_path: str | os.PathLike[str], item_id: str, assets: Mapping[str, StacAsset], *,
              properties: Mapping[str, Any] | None = None, when: _dt.datetime | None = None) -> dict[str, Any]:
    """The STAC item of ``assets`` (rasters), to be written at ``item_path`` (hrefs are relative to its folder).

    Parameters
    ----------
    item_path : path
        Where the item will be written; asset hrefs are relative to its folder.
    item_id : str
        The item's id (a run id, a mask's name).
    assets : mapping
        Asset key (``mask``, ``confidence``) to :class:`StacAsset`; the first gives the geometry.
    properties : mapping, optional
        More item properties (``geoseg:...`` fields).
    when : datetime, optional
        The item's ``datetime`` and ``created`` (default: now, UTC).

    Raises
    ------
    RasterReadError
        An asset's raster cannot be read.
    """
    folder = Path(item_path).parent
    stamp = (when or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    out_assets: dict[str, Any] = {}
    footprint: list[tuple[float, float]] | None = None
    for key, a in assets.items():
        fields, outline = _raster_fields(Path(a.path), a.classes)
        footprint = footprint or outline
        out_assets[key] = {"href": Path(os.path.relpath(a.path, folder)).as_posix(), "type": COG_MEDIA_TYPE,
                           "title": a.title, "roles": list(a.roles), **fields}
    if footprint is None:
        raise ValueError("a STAC item needs at least one asset")
    lons, lats = [p[0] for p in footprint], [p[1] for p in footprint]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(STAC_EXTENSIONS),
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[float(x), float(y)] for x, y in footprint]]},
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": {"datetime": iso, "created": iso, **(properties or {})},
        "links": [],
        "assets": out_assets,
    }


def write_stac_item(path: str | os.PathLike[str], item: Mapping[str, Any]) -> Path:
    """Write ``item`` as JSON at ``path``, atomically (:func:`geoseg.io.raster.write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(item, indent=2) + "\n")
