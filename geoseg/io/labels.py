"""Training and evaluation labels on an image's grid, read window by window.

Labels come from either

* a **raster** on exactly the image's grid (checked with :func:`geoseg.io.raster.check_same_grid`),
  holding class ids ``0..K-1`` of the class file; its nodata value (and 255) means
  "no label". Float rasters are accepted when every value is a whole number; or
* a **vector file of points** (GPS points of crops), read by :mod:`geoseg.io.points`; or
* a **vector file of polygons** (GeoPackage, GeoJSON, Shapefile, anything GDAL reads) whose attribute
  ``field`` holds each feature's class, as a class id (int) or a class name of the class
  file. Features are reprojected to the image's CRS once and rasterised window by window
  onto the window's transform (pixel-centre rule; where features overlap, the later one
  wins). Pixels covered by no feature carry no label, so sparsely labelled fields work.

Either way :meth:`Labels.read` returns a ``(h, w)`` uint8 array of class ids with 255
(:data:`geoseg.classes.NODATA`) for "no label"; windows may reach past the raster (that
part is 255). Training turns them into int64 tensors directly - labels never pass through
an image transform that could rescale or interpolate them.

Memory is bounded by one window (plus, for vectors, the features themselves).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, Protocol

import numpy as np
from affine import Affine

from geoseg.classes import NODATA, ClassTable
from geoseg.core.grid import Tile, Window
from geoseg.errors import LabelError
from geoseg.io.label_values import bad_values_error, check_label_frame, class_ids
from geoseg.io.points import PointLabels, geometry_kind
from geoseg.io.raster import RasterInfo, check_same_grid, open_raster, raster_info, read_tile
from geoseg.io.vector import read_vector

__all__ = [
    "Labels",
    "RasterLabels",
    "VectorLabels",
    "open_labels",
    "is_vector_path",
    "window_tile",
    "label_counts",
    "iter_blocks",
]

#: File name endings read as vector labels (anything else is opened as a raster).
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet", ".kml", ".gml")


def window_tile(window: Window, transform: Affine, index: tuple[int, int] = (0, 0), halo: int = 0) -> Tile:
    """A :class:`~geoseg.core.grid.Tile` whose core is ``window`` and whose read window reaches
    ``halo`` pixels beyond it on every side (for :func:`geoseg.io.raster.read_tile`, which pads
    outside the raster).

    ``transform`` is the raster's; the tile's transform is that of the read window's top-left pixel.

    Examples
    --------
    >>> t = window_tile(Window(10, 20, 64, 32), Affine(10, 0, 500000, 0, -10, 3400000))
    >>> t.transform.c, t.transform.f, int(t.read.height)
    (500100.0, 3399800.0, 32)
    >>> t = window_tile(Window(10, 20, 64, 32), Affine(10, 0, 500000, 0, -10, 3400000), halo=3)
    >>> t.transform.c, int(t.read.row_off), int(t.read.height), int(t.core.height)
    (500070.0, 17, 38, 32)
    """
    w = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
    r = Window(w.col_off - halo, w.row_off - halo, w.width + 2 * halo, w.height + 2 * halo)
    return Tile(index=index, read=r, core=w, transform=transform @ Affine.translation(r.col_off, r.row_off))


def is_vector_path(path: str | os.PathLike[str]) -> bool:
    """True for file names that geoseg reads as vector labels (by extension)."""
    return str(path).lower().endswith(VECTOR_SUFFIXES)


class Labels(Protocol):
    """What training and evaluation need of a label source."""

    path: str
    classes: ClassTable

    def read(self, window: Window) -> np.ndarray:
        """Class ids (h, w) uint8 over ``window`` of the image grid; 255 = no label."""
        ...

    def close(self) -> None: ...


class RasterLabels:
    """Labels from a single-band raster on the image grid (see the module notes).

    Parameters
    ----------
    path : path
        The label raster.
    image : RasterInfo
        The image it must share a grid with.
    classes : ClassTable
        The class table its values must belong to.

    Raises
    ------
    GridMismatchError
        The raster is not on the image's grid (CRS, transform or size differ).
    LabelError
        More than one band, or (on :meth:`read`) values outside the class table.
    """

    def __init__(self, path: str | os.PathLike[str], image: RasterInfo, classes: ClassTable) -> None:
        self.path = str(path)
        self.classes = classes
        info = raster_info(path)
        check_same_grid(image, info)
        if info.count != 1:
            raise LabelError(
                f"{self.path}: has {info.count} bands, expected 1 band of class ids; "
                f"extract the class band, e.g. `rio stack {self.path} --bidx 1 -o labels.tif` "
                f"(or `gdal_translate -b 1 {self.path} labels.tif`)"
            )
        self.info = info
        self._stack = ExitStack()
        self._src = self._stack.enter_context(open_raster(path))
        self._transform = info.transform

    def read_raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(values, labelled)`` over ``window``: raw values (any dtype) and where they are labels."""
        td = read_tile(self._src, window_tile(window, self._transform), pad="constant", fill=NODATA)
        values = td.array[0]
        labelled = td.valid & (values != NODATA)
        if np.issubdtype(values.dtype, np.floating):
            labelled &= np.isfinite(values)
        return values, labelled

    def read(self, window: Window) -> np.ndarray:
        """Class ids (h, w) uint8 over ``window``; 255 = no label.

        Raises
        ------
        LabelError
            Naming the values in this window that are not class ids of the class file.
        """
        values, labelled = self.read_raw(window)
        out, bad = _to_ids(values, labelled, len(self.classes))
        if bad.size:
            raise bad_values_error(self.path, _fmt_values(bad), self.classes, "holds label values")
        return out

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "RasterLabels":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt_values(values: np.ndarray) -> list[Any]:
    return [int(v) if float(v).is_integer() else float(v) for v in values.tolist()]


def _to_ids(values: np.ndarray, labelled: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 class ids (255 where unlabelled) and the sorted unique values that are not class ids."""
    v = values[labelled]
    if np.issubdtype(v.dtype, np.floating):
        ok = (v == np.round(v)) & (v >= 0) & (v < k)
    else:
        ok = (v >= 0) & (v < k)
    bad = np.unique(v[~ok]) if not ok.all() else np.empty(0, v.dtype)
    out = np.full(values.shape, NODATA, np.uint8)
    good = labelled.copy()
    good[labelled] = ok
    out[good] = values[good].astype(np.uint8)
    return out, bad


class VectorLabels:
    """Labels rasterised from a vector file's attribute ``field`` (see the module notes).

    Parameters
    ----------
    path : path
        GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet ...
    field : str
        The attribute holding each feature's class: a class id or a class name.
    image : RasterInfo
        The grid to rasterise onto; features are reprojected to its CRS.
    classes : ClassTable
        The class table.
    layer : str or int, optional
        The layer to read (default: the first data layer).
    frame : GeoDataFrame, optional
        The file's features, when already read (by :func:`open_labels`).

    Raises
    ------
    LabelError
        No ``field`` given or no such attribute (the message lists the attributes), a file
        without CRS, or attribute values that are neither class ids nor class names.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        field: str | None,
        image: RasterInfo,
        classes: ClassTable,
        layer: str | int | None = None,
        *,
        frame: Any = None,
    ) -> None:
        import shapely

        self.path = str(path)
        self.classes = classes
        self.field = field
        gdf = read_vector(path, layer=layer) if frame is None else frame
        check_label_frame(gdf, self.path, field, image)
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        ids, known = class_ids(gdf[field].to_numpy(dtype=object), classes, self.path, field)
        gdf = gdf[known]
        if gdf.crs != image.crs:
            gdf = gdf.to_crs(image.crs)
        self.geoms = np.asarray(gdf.geometry.values, dtype=object)
        self.ids = ids[known].astype(np.uint8)
        self.tree = shapely.STRtree(self.geoms)
        self.info = image
        self._transform = image.transform

    def read(self, window: Window) -> np.ndarray:
        """Class ids (h, w) uint8 over ``window`` of the image grid; 255 where no feature covers a pixel centre."""
        import shapely
        from rasterio.features import rasterize

        h, w = int(window.height), int(window.width)
        tf = self._transform @ Affine.translation(int(window.col_off), int(window.row_off))
        x0, y0 = tf @ (0, 0)
        x1, y1 = tf @ (w, h)
        hits = np.sort(self.tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
        if hits.size == 0:
            return np.full((h, w), NODATA, np.uint8)
        out = rasterize(
            zip(self.geoms[hits], self.ids[hits].tolist()), out_shape=(h, w), transform=tf, fill=NODATA,
            dtype="uint8",
        )
        # pixels outside the raster carry no label, like a raster label source
        r0, c0 = int(window.row_off), int(window.col_off)
        H, W = self.info.shape
        if r0 < 0 or c0 < 0 or r0 + h > H or c0 + w > W:
            rows = np.arange(r0, r0 + h)
            cols = np.arange(c0, c0 + w)
            out[(rows < 0) | (rows >= H), :] = NODATA
            out[:, (cols < 0) | (cols >= W)] = NODATA
        return np.asarray(out, dtype=np.uint8)

    def close(self) -> None:
        pass

    def __enter__(self) -> "VectorLabels":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_labels(
    path: str | os.PathLike[str],
    image: RasterInfo | str | os.PathLike[str],
    classes: ClassTable,
    *,
    field: str | None = None,
    layer: str | int | None = None,
    point_radius: float | None = None,
    valid_rule: str = "all",
) -> RasterLabels | VectorLabels | PointLabels:
    """Open labels for ``image``: a raster on its grid, or a vector file with ``field``.

    Vector files are recognised by extension (:data:`VECTOR_SUFFIXES`) and read by their
    geometries: polygons as :class:`VectorLabels`, points as
    :class:`geoseg.io.points.PointLabels` (each labelling the pixels within ``point_radius``
    metres, default 0: the pixel under it; image nodata judged by ``valid_rule``); lines, a
    mixture or an empty layer are errors. A raster given ``field``, or polygons or a raster
    given ``point_radius``, is an error (those options apply to vectors, and points).

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> open_labels("no/such.gpkg", "no/such.tif", default_classes())
    Traceback (most recent call last):
    ...
    geoseg.errors.RasterReadError: no/such.tif: file not found; check the path
    """
    info = image if isinstance(image, RasterInfo) else raster_info(image)
    if is_vector_path(path):
        gdf = read_vector(path, layer=layer)
        if geometry_kind(gdf, str(path)) == "points":
            return PointLabels(path, field, info, classes, layer, radius_m=point_radius or 0.0,
                               valid_rule=valid_rule, frame=gdf)
        if point_radius is not None:
            raise LabelError(
                f"{path}: --point-radius {point_radius:g} applies to point labels, but this file holds polygons "
                f"(fields, labelled wherever they cover a pixel centre); drop --point-radius"
            )
        return VectorLabels(path, field, info, classes, layer, frame=gdf)
    if field is not None or point_radius is not None:
        opt = f"--label-field {field!r}" if field is not None else f"--point-radius {point_radius:g}"
        raise LabelError(
            f"{path}: {opt} applies to vector label files (.gpkg, .geojson, .shp, ...), "
            f"but this is read as a raster of class ids; drop {opt.split()[0]} or pass the vector file"
        )
    return RasterLabels(path, info, classes)


def iter_blocks(shape: tuple[int, int], block: int) -> Iterator[tuple[int, int, Window]]:
    """``(block row, block col, window)`` over a raster of ``shape`` in ``block`` x ``block`` pieces."""
    h, w = shape
    for i, r in enumerate(range(0, h, block)):
        for j, c in enumerate(range(0, w, block)):
            yield i, j, Window(c, r, min(block, w - c), min(block, h - r))


def label_counts(labels: RasterLabels | VectorLabels | PointLabels, shape: tuple[int, int], block: int) -> np.ndarray:
    """Pixels per class in each ``block`` x ``block`` block: int64 ``(block rows, block cols, K)``.

    Reads the labels once, block by block. A point's pixels all count in the block that
    holds the point itself (:meth:`geoseg.io.points.PointLabels.block_counts`). For a raster, every value that is not a class
    id is collected over the whole file and reported in one error.

    Raises
    ------
    LabelError
        Naming all the label values found outside the class table.
    """
    if isinstance(labels, PointLabels):
        return labels.block_counts(shape, block)
    k = len(labels.classes)
    h, w = shape
    out = np.zeros((-(-h // block), -(-w // block), k), np.int64)
    bad: set[Any] = set()
    for i, j, win in iter_blocks(shape, block):
        if isinstance(labels, RasterLabels):
            values, labelled = labels.read_raw(win)
            ids, b = _to_ids(values, labelled, k)
            bad.update(_fmt_values(b))
        else:
            ids = labels.read(win)
        out[i, j] = np.bincount(ids[ids != NODATA], minlength=k)[:k]
    if bad:
        raise bad_values_error(labels.path, sorted(bad, key=float), labels.classes, "holds label values")
    return out
