"""GPS points as labels: each point labels the pixels around it on the image's grid.

The commonest ground truth for crops in India is a point recorded in the field with the crop
grown there. A point file (GeoPackage, GeoJSON, Shapefile, CSV with geometry - anything GDAL
reads, in any CRS) with an attribute ``field`` holding each point's class (a class id or a
class name of the class file) is read once, reprojected to the image's CRS, and turned into
labelled pixels with :func:`geoseg.core.points.point_pixels`:

* a point labels **the pixel under it and every pixel whose centre lies within**
  ``radius_m`` metres of it (default 0: the one pixel under the point);
* **points outside the image** are not used, nor are **pixels outside it**;
* **image nodata**: pixels where the image holds no data (the valid rule of training or of the
  model) are dropped, and a point left without a pixel is reported as *on nodata*;
* **overlaps**: pixels claimed by points of *different* classes are dropped (no label) and
  counted; a point left without a pixel is reported as *conflicting*. Pixels shared by points of
  the same class stay labelled;
* a point with an empty class value is skipped and counted.

What was dropped is in :attr:`PointLabels.report` (:class:`PointReport`), whose
:meth:`PointReport.warning` line the command line prints. Multi-points count as one point per
part.

:meth:`PointLabels.read` gives class ids over a window like every label source of
:mod:`geoseg.io.labels`, so training and pixel scoring read points as they read rasters.
Memory: a few int64 per labelled pixel; no raster of the scene is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from affine import Affine

from geoseg.classes import NODATA, ClassTable
from geoseg.core.grid import Tile, Window
from geoseg.core.points import block_counts, point_pixels, resolve_conflicts
from geoseg.errors import LabelError
from geoseg.io.label_values import check_label_frame, class_ids
from geoseg.io.raster import RasterInfo, open_raster, read_tile
from geoseg.io.vector import read_vector

__all__ = ["PointLabels", "PointReport", "geometry_kind", "POINT_TYPES", "LINE_TYPES", "NODATA_BLOCK"]

#: Geometry types read as points.
POINT_TYPES = ("Point", "MultiPoint")
#: Geometry types refused as labels.
LINE_TYPES = ("LineString", "MultiLineString", "LinearRing")
#: Side of the windows in which the image's validity at the points is read.
NODATA_BLOCK = 512


@dataclass(frozen=True)
class PointReport:
    """What became of the points of one file on one image.

    Attributes
    ----------
    path : str
        The point file.
    total : int
        Points read (parts of multi-points counted one by one).
    used : int
        Points with at least one labelled pixel.
    outside : int
        Points outside the image.
    on_nodata : int
        Points inside whose every pixel is image nodata.
    no_class : int
        Points with an empty class value.
    conflicting : int
        Points whose every remaining pixel was claimed by a point of another class too.
    conflict_pixels : int
        Pixels dropped because points of different classes claim them.
    pixels : int
        Labelled pixels.
    radius_m : float
        The point radius in metres.
    """

    path: str
    total: int
    used: int
    outside: int
    on_nodata: int
    no_class: int
    conflicting: int
    conflict_pixels: int
    pixels: int
    radius_m: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "total": self.total, "used": self.used, "outside": self.outside,
            "on_nodata": self.on_nodata, "no_class": self.no_class, "conflicting": self.conflicting,
            "conflict_pixels": self.conflict_pixels, "pixels": self.pixels, "radius_m": self.radius_m,
        }

    @property
    def dropped(self) -> int:
        """Points not used."""
        return self.total - self.used

    def line(self) -> str:
        """One line: the points used and, if any, why the others were not.

        Examples
        --------
        >>> PointReport("p.gpkg", 10, 7, 2, 1, 0, 0, 0, 7, 0.0).line()
        'p.gpkg: 7 of 10 points used (7 labelled pixels, radius 0 m); not used: 2 outside the image, 1 on image nodata'
        """
        head = (f"{self.path}: {self.used:,} of {self.total:,} points used ({self.pixels:,} labelled pixels, "
                f"radius {self.radius_m:g} m)")
        why = [f"{n:,} {what}" for n, what in (
            (self.outside, "outside the image"), (self.on_nodata, "on image nodata"),
            (self.no_class, "with an empty class value"),
            (self.conflicting, "covered by points of another class"),
        ) if n]
        tail = []
        if why:
            tail.append("not used: " + ", ".join(why))
        if self.conflict_pixels:
            tail.append(f"{self.conflict_pixels:,} pixels claimed by points of different classes dropped")
        return head + ("; " + "; ".join(tail) if tail else "")

    def warning(self) -> str | None:
        """The line to warn with when points or pixels were dropped; None when every point was used."""
        if self.dropped == 0 and self.conflict_pixels == 0:
            return None
        return "warning: " + self.line()


def _geometry_types(gdf: Any) -> list[str]:
    g = gdf.geometry
    return sorted({str(t) for t in g[g.notna() & ~g.is_empty].geom_type.unique()})


class PointLabels:
    """Labels from GPS points (see the module notes).

    Parameters
    ----------
    path : path
        The point file.
    field : str
        The attribute holding each point's class id or class name.
    image : RasterInfo
        The image whose grid the points label (its file is read at the points' pixels to
        drop image nodata unless ``check_nodata`` is False).
    classes : ClassTable
        The class table.
    layer : str or int, optional
        The layer to read.
    radius_m : float
        Each point labels the pixels whose centre lies within this many metres (and the pixel
        under it).
    valid_rule : {"all", "any"}
        Which image pixels hold data (see :func:`geoseg.io.raster.read_tile`).
    check_nodata : bool
        Read the image to drop nodata pixels (off: only the grid is used).
    frame : GeoDataFrame, optional
        The file's features, when already read.

    Raises
    ------
    LabelError
        No ``field`` or no such attribute, no CRS, an empty layer, geometries other than
        points, class values outside the class table, a radius on an image in degrees.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        field: str | None,
        image: RasterInfo,
        classes: ClassTable,
        layer: str | int | None = None,
        *,
        radius_m: float = 0.0,
        valid_rule: str = "all",
        check_nodata: bool = True,
        frame: Any = None,
    ) -> None:
        self.path = str(path)
        self.classes = classes
        self.field = field
        self.info = image
        r = float(radius_m)
        if not (np.isfinite(r) and r >= 0):
            raise LabelError(f"{self.path}: point radius {radius_m!r} m; expected a number of metres >= 0 "
                             f"(0: the pixel under each point)")
        self.radius_m = r
        gdf = read_vector(path, layer=layer) if frame is None else frame
        check_label_frame(gdf, self.path, field, image)
        assert field is not None
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        if len(gdf) == 0:
            raise LabelError(
                f"{self.path}: holds no points (the layer is empty or every geometry is empty); expected points "
                f"with the class in {field!r} - check the layer (--layer) and that the export kept the geometries"
            )
        if geometry_kind(gdf, self.path) != "points":
            raise LabelError(
                f"{self.path}: holds polygons, not points; open it with geoseg.io.labels.open_labels, which reads "
                f"polygons as field labels"
            )
        gdf = gdf.explode(index_parts=False)
        ids, known = class_ids(gdf[field].to_numpy(dtype=object), classes, self.path, field)
        total = len(gdf)
        if gdf.crs != image.crs:
            gdf = gdf.to_crs(image.crs)
        if r > 0 and image.crs.is_geographic:
            raise LabelError(
                f"{self.path}: --point-radius {r:g} m on an image in degrees ({image.crs.to_string()}); a radius "
                f"needs an image in a projected CRS - warp it (`gdalwarp -t_srs EPSG:32643 ...`) or use radius 0"
            )
        unit = 1.0
        if r > 0 and image.crs.linear_units_factor:
            unit = float(image.crs.linear_units_factor[1])
        xs = np.asarray(gdf.geometry.x, np.float64)
        ys = np.asarray(gdf.geometry.y, np.float64)
        h, w = int(image.shape[0]), int(image.shape[1])
        px = point_pixels(xs, ys, image.transform, (h, w), r / unit)
        keep = known[px.point]  # points without a class label nothing
        point, prow, pcol, centre = px.point[keep], px.prow[keep], px.pcol[keep], px.centre[keep]
        lin = prow * w + pcol
        # image nodata at the pixels
        had = np.zeros(total, bool)
        had[point] = True
        if check_nodata and point.size:
            ok = _observed(image, prow, pcol, valid_rule)
            point, lin, centre = point[ok], lin[ok], centre[ok]
        after_nodata = np.zeros(total, bool)
        after_nodata[point] = True
        # different classes on one pixel: drop those pixels
        clash = resolve_conflicts(lin, ids[point])
        conflict_pixels = int(np.unique(lin[clash]).size)
        point, lin, centre = point[~clash], lin[~clash], centre[~clash]
        used = np.zeros(total, bool)
        used[point] = True
        # keep the used points only, renumbered 0..n-1 in file order
        order = np.flatnonzero(used)
        renum = np.full(total, -1, np.int64)
        renum[order] = np.arange(order.size)
        self.ids = ids[order].astype(np.uint8)
        self.rows = px.row[order]
        self.cols = px.col[order]
        self._width = w
        self._set_members(renum[point], lin, centre)
        self.report = PointReport(
            path=self.path, total=total, used=int(order.size),
            outside=int((known & ~px.inside).sum()),
            on_nodata=int((known & px.inside & had & ~after_nodata).sum()),
            no_class=int((~known).sum()),
            conflicting=int((after_nodata & ~used).sum()),
            conflict_pixels=conflict_pixels, pixels=int(self._lin.size), radius_m=r,
        )

    def _set_members(self, point: np.ndarray, lin: np.ndarray, centre: np.ndarray) -> None:
        """Store the (point, pixel) entries sorted by pixel, and the unique labelled pixels."""
        o = np.lexsort((point, lin))
        self.member_point, self.member_lin, self.member_centre = point[o], lin[o], centre[o]
        self._lin, first = np.unique(self.member_lin, return_index=True)
        self._cls = self.ids[self.member_point[first]] if first.size else np.zeros(0, np.uint8)

    # ----------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Points used."""
        return int(self.ids.size)

    @property
    def pixels_per_point(self) -> np.ndarray:
        """Labelled pixels of each point (int64, ``(n,)``)."""
        return np.bincount(self.member_point, minlength=self.n).astype(np.int64)

    @property
    def anchors(self) -> np.ndarray:
        """``(n, 2)`` int64 ``row, col`` of the pixel under each point (where training chips are placed)."""
        return np.stack([self.rows, self.cols], axis=1)

    def subset(self, keep: np.ndarray) -> "PointLabels":
        """The labels of the points where ``keep`` is True (the report is the whole file's)."""
        keep = np.asarray(keep, bool)
        if keep.shape != (self.n,):
            raise ValueError(f"keep has shape {keep.shape}, expected ({self.n},)")
        out = object.__new__(PointLabels)
        out.__dict__.update(self.__dict__)
        renum = np.full(self.n, -1, np.int64)
        renum[keep] = np.arange(int(keep.sum()))
        out.ids, out.rows, out.cols = self.ids[keep], self.rows[keep], self.cols[keep]
        m = keep[self.member_point]
        out._set_members(renum[self.member_point[m]], self.member_lin[m], self.member_centre[m])
        out.report = replace(self.report)
        return out

    @property
    def member_rows(self) -> np.ndarray:
        """Row of each (point, pixel) entry."""
        return self.member_lin // self._width

    @property
    def member_cols(self) -> np.ndarray:
        """Column of each (point, pixel) entry."""
        return self.member_lin % self._width

    def members_in(self, window: Window) -> np.ndarray:
        """Indices of the (point, pixel) entries whose pixel lies in ``window``."""
        return _in_window(self.member_lin, self._width, window)

    def read(self, window: Window) -> np.ndarray:
        """Class ids (h, w) uint8 over ``window`` of the image grid; 255 where no point labels a pixel."""
        h, w = int(window.height), int(window.width)
        out = np.full((h, w), NODATA, np.uint8)
        sel = _in_window(self._lin, self._width, window)
        if sel.size:
            lin = self._lin[sel]
            out[lin // self._width - int(window.row_off), lin % self._width - int(window.col_off)] = self._cls[sel]
        return out

    def holds_labels(self, window: Window) -> bool:
        """True when a labelled pixel lies in ``window``."""
        return bool(_in_window(self._lin, self._width, window).size)

    def block_counts(self, shape: tuple[int, int], block: int) -> np.ndarray:
        """Labelled pixels per ``block`` and class, each point's pixels in the block of the point itself."""
        return block_counts(self.rows, self.cols, self.ids, self.pixels_per_point, shape, block, len(self.classes))

    def close(self) -> None:
        pass

    def __enter__(self) -> "PointLabels":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _in_window(lin: np.ndarray, width: int, window: Window) -> np.ndarray:
    """Indices into the sorted linear pixel indices ``lin`` that fall in ``window``."""
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    r0, c0, c1 = max(r0, 0), max(c0, 0), min(c1, width)
    if r1 <= r0 or c1 <= c0 or lin.size == 0:
        return np.zeros(0, np.int64)
    lo, hi = np.searchsorted(lin, [r0 * width, r1 * width])
    idx = np.arange(lo, hi)
    col = lin[idx] % width
    return idx[(col >= c0) & (col < c1)]


def _observed(image: RasterInfo, rows: np.ndarray, cols: np.ndarray, valid_rule: str) -> np.ndarray:
    """True where the image holds data at the pixels ``(rows, cols)``, read window by window."""
    ok = np.zeros(rows.size, bool)
    b = NODATA_BLOCK
    key = rows // b * (-(-int(image.shape[1]) // b)) + cols // b
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    with open_raster(image.path) as src:
        for grp in np.split(order, bounds):
            rr, cc = rows[grp], cols[grp]
            r0, c0 = int(rr.min()), int(cc.min())
            win = Window(c0, r0, int(cc.max()) - c0 + 1, int(rr.max()) - r0 + 1)
            tile = Tile(index=(0, 0), read=win, core=win, transform=image.transform @ Affine.translation(c0, r0))
            td = read_tile(src, tile, pad="constant", rule=valid_rule)  # type: ignore[arg-type]
            ok[grp] = td.valid[rr - r0, cc - c0]
    return ok


def geometry_kind(gdf: Any, path: str) -> str:
    """``"points"`` or ``"polygons"`` for a label file's geometries; lines and mixtures are errors.

    Raises
    ------
    LabelError
        Lines, or points mixed with polygons, or no geometry at all.
    """
    kinds = _geometry_types(gdf)
    if not kinds:
        raise LabelError(
            f"{path}: holds no geometries (an empty layer, or every geometry empty); expected points or polygons "
            f"with their class in an attribute - check the layer and the export"
        )
    if set(kinds) & set(LINE_TYPES):
        raise LabelError(
            f"{path}: holds {', '.join(kinds)} geometries; labels are points (GPS points of crops) or polygons "
            f"(fields), not lines - buffer the lines into polygons (e.g. `ogr2ogr -dialect sqlite -sql "
            f"\"SELECT ST_Buffer(geom, 5), * FROM layer\" fields.gpkg {path}`) or use the points they were made from"
        )
    if set(kinds) <= set(POINT_TYPES):
        return "points"
    if set(kinds) <= {"Polygon", "MultiPolygon"}:
        return "polygons"
    raise LabelError(
        f"{path}: mixes {', '.join(kinds)} geometries; a label file holds either points or polygons - split it by "
        f"geometry type (e.g. `ogr2ogr -where \"OGR_GEOMETRY='POINT'\" points.gpkg {path}`)"
    )

