"""District boundaries: read, check and repair them, and check they reach the scenes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from rasterio.warp import transform_bounds

from geoseg.errors import DistrictError, DistrictWarning, VectorReadError
from geoseg.io.vector import attribute_columns, read_vector

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd

__all__ = [
    "check_districts_reach",
    "DistrictProblem",
    "Districts",
    "read_districts",
]


@dataclass(frozen=True)
class DistrictProblem:
    """One district that was skipped, repaired or is otherwise worth a note."""

    district: str
    problem: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.district}: {self.problem}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Districts:
    """District polygons ready for area sums: valid, non-empty, in the requested CRS."""

    gdf: "gpd.GeoDataFrame"
    name_field: str
    source: str
    problems: tuple[DistrictProblem, ...] = field(default=())

    @property
    def names(self) -> np.ndarray:
        return np.asarray(self.gdf[self.name_field].astype(object).to_numpy(), dtype=object)


def read_districts(
    source: str | os.PathLike[str] | "gpd.GeoDataFrame",
    name_field: str,
    *,
    crs: Any = None,
    layer: str | int | None = None,
    warn: bool = True,
) -> Districts:
    """Read district boundaries, check them, repair what can be repaired and report the rest.

    * A missing ``name_field`` or a file without CRS is an error naming what exists.
    * Null and empty geometries (the real India file has two), and non-polygon features,
      are skipped; invalid geometries are repaired (``make_valid``, polygon parts kept).
      Each is listed in ``problems`` and, with ``warn``, in one :class:`DistrictWarning`.
    * Repeated names are listed in ``problems`` but not warned about here: the area
      functions warn about those that reach their table (their areas are summed under
      one name).
    * Boundaries are reprojected to ``crs`` when given.

    Raises
    ------
    VectorReadError
        Missing or unreadable file.
    DistrictError
        No such attribute, no CRS, or no usable polygon at all.
    """
    import geopandas as gpd  # deferred: slow to import (pandas, pyproj), and a workflow file is read without it

    gdf, src = _read_checked(source, name_field, layer)
    names, geom, keep, problems = _usable(gdf, name_field)
    out = gpd.GeoDataFrame({name_field: names[keep].to_numpy()}, geometry=geom[keep], crs=gdf.crs)
    out = out.reset_index(drop=True)
    if len(out) == 0:
        raise DistrictError(
            f"{src}: no usable district polygon ({len(gdf)} features: "
            + "; ".join(str(p) for p in problems[:5]) + ("; ..." if len(problems) > 5 else "")
            + "); expected polygons with a name in " + repr(name_field)
        )
    if crs is not None and out.crs != crs:
        out = out.to_crs(crs)
        bad = ~shapely.is_valid(out.geometry.values)
        if bad.any():  # reprojection can fold a few rings
            out.loc[bad, "geometry"] = shapely.make_valid(out.geometry.values[bad], method="structure",
                                                          keep_collapsed=False)
    if warn and problems:
        shown = [p for p in problems if p.problem not in ("no overlap", "repeated name")]
        if shown:
            warnings.warn(
                f"{src}: {len(shown)} district problem(s): " + "; ".join(str(p) for p in shown[:8])
                + ("; ..." if len(shown) > 8 else ""),
                DistrictWarning,
                stacklevel=2,
            )
    return Districts(out, name_field, src, tuple(problems))


def _read_checked(source: str | os.PathLike[str] | "gpd.GeoDataFrame", name_field: str,
                  layer: str | int | None) -> tuple["gpd.GeoDataFrame", str]:
    """The boundaries (a copy of a GeoDataFrame given) and how messages name them, once they are
    known to have the ``name_field`` attribute and a CRS."""
    import geopandas as gpd  # deferred: see read_districts

    if isinstance(source, gpd.GeoDataFrame):
        gdf, src = source.copy(), "<districts>"
    else:
        src = str(source)
        gdf = read_vector(src, layer=layer)
    if not name_field:
        raise DistrictError(f"{src}: no name field given; pass the attribute that names a district "
                            f"(one of {attribute_columns(gdf)})")
    if name_field not in gdf.columns:
        close = [c for c in gdf.columns if c.lower() == name_field.lower()]
        hint = f" - did you mean {close[0]!r}?" if close else ""
        raise DistrictError(
            f"{src}: has no attribute {name_field!r}; the attributes are {attribute_columns(gdf)}{hint}; pass the one "
            f"that names the districts (--name-field, or districts.name_field in a workflow)"
        )
    if gdf.crs is None:
        raise DistrictError(
            f"{src}: has no CRS, so it cannot be matched to the raster; set one, e.g. "
            f"`ogr2ogr -a_srs EPSG:4326 fixed.gpkg {src}` (without GDAL's tools: "
            f"`python -c \"import geopandas as g; g.read_file('{src}').set_crs('EPSG:4326').to_file('fixed.gpkg')\"`)"
        )
    return gdf, src


def _usable(gdf: "gpd.GeoDataFrame", name_field: str) -> tuple[Any, np.ndarray, np.ndarray, list[DistrictProblem]]:
    """The names (strings or None), the geometries with invalid ones repaired, which features to
    keep (a named polygon or multipolygon), and a problem for each feature skipped, repaired or named twice."""
    problems: list[DistrictProblem] = []
    names = gdf[name_field].astype(object).where(gdf[name_field].notna(), None)
    names = names.map(lambda v: None if v is None else str(v))
    geom = gdf.geometry.values.to_numpy() if hasattr(gdf.geometry.values, "to_numpy") else np.asarray(gdf.geometry.values)
    geom = np.asarray(geom, dtype=object)
    keep = np.ones(len(gdf), bool)

    def label(i: int) -> str:
        return names.iloc[i] if names.iloc[i] is not None else f"feature #{i}"

    null = shapely.is_missing(geom) | shapely.is_empty(geom)
    for i in np.flatnonzero(null):
        problems.append(DistrictProblem(label(i), "null geometry", "skipped"))
    keep &= ~null
    nonpoly = keep & ~np.isin(shapely.get_type_id(geom), [3, 6])
    for i in np.flatnonzero(nonpoly):
        problems.append(DistrictProblem(label(i), "not a polygon",
                                        f"{shapely.get_type_id(geom[i])!r} geometry type skipped"))
    keep &= ~nonpoly
    invalid = keep & ~shapely.is_valid(geom)
    if invalid.any():
        reasons = shapely.is_valid_reason(geom[invalid])
        fixed = shapely.make_valid(geom[invalid], method="structure", keep_collapsed=False)
        geom = geom.copy()
        geom[invalid] = fixed
        for i, why in zip(np.flatnonzero(invalid), reasons):
            problems.append(DistrictProblem(label(i), "invalid geometry repaired", str(why)))
        empty_now = keep & (shapely.is_empty(geom) | ~np.isin(shapely.get_type_id(geom), [3, 6, 7]))
        for i in np.flatnonzero(empty_now & invalid):
            problems.append(DistrictProblem(label(i), "invalid geometry", "nothing polygonal left; skipped"))
        keep &= ~empty_now
    if names.isna().any():
        for i in np.flatnonzero(names.isna().to_numpy() & keep):
            problems.append(DistrictProblem(label(i), "no name", f"{name_field} is empty; skipped"))
        keep &= names.notna().to_numpy()
    counts = names[keep].value_counts()
    for name, n in counts[counts > 1].items():
        problems.append(DistrictProblem(str(name), "repeated name",
                                        f"{n} features; their areas are summed - use a unique name field"))
    return names, geom, keep, problems


def check_districts_reach(path: str | os.PathLike[str], rasters: Sequence[Any]) -> None:
    """Check, from the file's extent alone, that some district can overlap one of ``rasters``.

    Reads only the layer's bounds and CRS (no geometry), so a workflow can refuse a
    boundary file in the wrong CRS or of another region when it loads, not hours later
    after inference. ``rasters`` are :class:`geoseg.io.raster.RasterInfo`. Passing this check
    is necessary, not sufficient: the exact overlap is checked when areas are summed.

    Raises
    ------
    DistrictError
        The file's extent misses every raster (the message gives both extents).
    VectorReadError
        The file cannot be read.
    """
    import pyogrio  # deferred: slow to import, and only this check needs it here

    src = str(path)
    try:
        info = pyogrio.read_info(src, force_total_bounds=True)
    except Exception as e:  # noqa: BLE001 - GDAL's errors become one line
        raise VectorReadError(f"{src}: cannot be read as a vector file ({str(e).splitlines()[0] if str(e) else e}); "
                              f"expected a GeoPackage, Shapefile, GeoJSON, FlatGeobuf, GeoParquet or another format "
                              f"GDAL reads") from None
    crs, bounds = info.get("crs"), info.get("total_bounds")
    if not crs or bounds is None or not np.all(np.isfinite(bounds)) or not rasters:
        return  # no CRS or no features: read_districts says what is wrong in its own words
    spans = []
    for r in rasters:
        h, w = r.shape
        t = r.transform
        rb = (t.c, t.f + h * t.e, t.c + w * t.a, t.f)
        try:
            db = transform_bounds(crs, r.crs, *bounds, densify_pts=21)
        except Exception:  # noqa: BLE001 - a CRS pair GDAL cannot transform: the exact check decides later
            return
        if db[0] < rb[2] and rb[0] < db[2] and db[1] < rb[3] and rb[1] < db[3]:
            return
        spans.append(f"{Path(r.path).name} spans ({rb[0]:.6g}, {rb[1]:.6g}, {rb[2]:.6g}, {rb[3]:.6g}), the districts "
                     f"({db[0]:.6g}, {db[1]:.6g}, {db[2]:.6g}, {db[3]:.6g}) in {r.crs.to_string()}")
    raise DistrictError(
        f"{src}: no district can overlap the scenes ({'; '.join(spans[:3])}); check that the boundary file covers "
        f"the region and that both files have the right CRS"
    )
