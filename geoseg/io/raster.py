"""All raster file access: open and check, read tiles, write rasters atomically (GeoTIFF / COG).

This is the only module that opens raster files; the pure modules (grid, stitch,
vectorize, areas) take arrays, an :class:`~affine.Affine` and a CRS.

Conventions
-----------
* A pixel is **valid** when every band holds data (``rule="all"``, the default): a pixel
  clouded or missing on one date of a multi-date stack is unobserved, never guessed.
  ``rule="any"`` keeps pixels with data on at least one band. Nodata comes from the
  file's nodata value (NaN included) or, without one, from its internal mask.
* Reads outside the raster are **padded**: ``"reflect"`` (default; mirror the edge
  pixels without repeating them, like ``numpy.pad(mode="reflect")``) or ``"constant"``
  (fill value, default 0). Padded pixels are never valid.
* Writes go to a temporary file beside the target and are renamed into place only when
  complete, so no reader ever sees a half-written output.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassTable
from geoseg.core.grid import Tile, TileGrid, cache_blocks
from geoseg.core.grid import Window as GridWindow
from geoseg.core.pyramid import METHODS as PYRAMID_METHODS
from geoseg.core.pyramid import halve, halved_shape, overview_levels
from geoseg.core.stitch import trim
from geoseg.errors import (
    ConfigError,
    GridMismatchError,
    NoDataWarning,
    OutputIsInputError,
    RasterReadError,
    RasterTooLargeError,
    RasterWriteError,
    WriteError,
)
from geoseg.io.sidecars import mask_sidecars
from geoseg.types import Shape2d

__all__ = [
    "RasterInfo",
    "TileData",
    "raster_info",
    "open_raster",
    "read_tile",
    "read_periods",
    "iter_tiles",
    "BlockData",
    "read_block",
    "BlockReader",
    "decode_block_shape",
    "tile_cache_bytes",
    "writer_cache_bytes",
    "valid_mask",
    "check_same_grid",
    "check_size",
    "DEFAULT_MAX_PIXELS",
    "RasterWriter",
    "mask_writer",
    "confidence_writer",
    "confidence_bands",
    "band_by_name",
    "CONFIDENCE_EXTRAS",
    "read_mask_classes",
    "atomic_path",
    "atomic_output",
    "publish_folder",
    "check_outputs",
    "input_files",
    "write_text_atomic",
    "check_written_raster",
    "free_space_note",
    "mute_libtiff_stderr",
    "count_differences",
    "check_creation_options",
]

PadMode = Literal["reflect", "constant"]
ValidRule = Literal["all", "any", "band"]


def rio_window(window: GridWindow | Window) -> Window:
    """The rasterio window of a grid :class:`~geoseg.core.grid.Window` (or of a rasterio one).

    >>> rio_window(GridWindow(10, 20, 64, 32))
    Window(col_off=10, row_off=20, width=64, height=32)
    """
    return Window(window.col_off, window.row_off, window.width, window.height)


@dataclass(frozen=True, slots=True)
class RasterInfo:
    """What geoseg needs to know of a raster, read without reading pixels."""

    path: str
    crs: CRS
    transform: Affine
    shape: Shape2d
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    block_shape: tuple[int, int]

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))


@dataclass(frozen=True, slots=True)
class TileData:
    """Pixels of one tile's read window: ``array`` (bands, h, w) and ``valid`` (h, w) bool
    (``(bands, h, w)`` when read with ``rule="band"``)."""

    tile: Tile
    array: np.ndarray
    valid: np.ndarray


def _read_error(path: str | os.PathLike[str], err: Exception) -> RasterReadError:
    p = str(path)
    if not os.path.exists(p) and "://" not in p and not p.startswith("/vsi"):
        return RasterReadError(f"{p}: file not found; check the path")
    msg = str(err).split("\n")[0]
    return RasterReadError(
        f"{p}: cannot be read as a raster ({msg}); expected a GeoTIFF or another format GDAL reads "
        f"- check that the file is complete (not truncated) and is an image, not e.g. a vector file"
    )


def _check_georeferencing(src: Any, path: str) -> None:
    if src.crs is None:
        raise RasterReadError(
            f"{path}: has no CRS; geoseg needs georeferenced rasters to write georeferenced outputs "
            f"- assign one, e.g. `rio edit-info --crs EPSG:32643 {path}` (or `gdal_edit.py -a_srs EPSG:32643 {path}`)"
        )
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise RasterReadError(
            f"{path}: has a rotated or sheared transform {tuple(t)[:6]}; expected a north-up grid "
            f"- warp it first, e.g. `rio warp {path} northup.tif` (or `gdalwarp {path} northup.tif`)"
        )
    if t.a <= 0 or t.e >= 0:
        raise RasterReadError(
            f"{path}: pixel size ({t.a}, {t.e}) is not north-up (x must grow east, y must fall south); "
            f"warp it first, e.g. `rio warp {path} northup.tif` (or `gdalwarp {path} northup.tif`)"
        )


def _info(src: Any, path: str) -> RasterInfo:
    return RasterInfo(
        path=path,
        crs=src.crs,
        transform=src.transform,
        shape=Shape2d(src.height, src.width),
        count=src.count,
        dtype=src.dtypes[0],
        nodata=src.nodata,
        descriptions=tuple(src.descriptions),
        block_shape=tuple(src.block_shapes[0]),  # type: ignore[arg-type]
    )


@contextmanager
def open_raster(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open a raster for reading and check it is georeferenced and north-up.

    Raises
    ------
    RasterReadError
        Missing, unreadable or corrupt file; no CRS; rotated or sheared transform.
    """
    p = str(path)
    try:
        src = rasterio.open(p)
    except (RasterioIOError, RasterioError) as e:
        raise _read_error(p, e) from None
    try:
        _check_georeferencing(src, p)
        yield src
    finally:
        src.close()


def raster_info(path: str | os.PathLike[str]) -> RasterInfo:
    """Read a raster's georeferencing and layout (no pixels) and check it.

    Examples
    --------
    >>> raster_info("no/such.tif")
    Traceback (most recent call last):
    ...
    geoseg.errors.RasterReadError: no/such.tif: file not found; check the path
    """
    with open_raster(path) as src:
        return _info(src, str(path))


#: Largest raster (rows x columns) geoseg opens for work unless told otherwise: a 100,000 px
#: square, 1,000 km at 10 m. Larger declared sizes are far more often a broken or hostile
#: header (a VRT can declare any size in a few bytes) than a real scene, and planning the
#: tiles of one would exhaust memory before the first pixel is read.
DEFAULT_MAX_PIXELS = 10_000_000_000


def raster_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The dataset metadata tags of a raster (GDAL's default domain)."""
    with open_raster(path) as src:
        return dict(src.tags())


def check_size(info: RasterInfo, max_pixels: int = DEFAULT_MAX_PIXELS,
               fix: str = "cut a raster that is really this large into scenes first (``rio clip --bounds`` or "
                          "``gdal_translate -srcwin``)") -> None:
    """Refuse a raster that declares more than ``max_pixels`` pixels, before any work is planned.

    Raises
    ------
    RasterTooLargeError
        Naming the file, its declared size, the limit and ``fix`` (how to go on).

    Examples
    --------
    >>> info = RasterInfo("huge.vrt", None, Affine.identity(), Shape2d(10**6, 10**6), 1, "uint8", None, (), (1, 1))
    >>> check_size(info)
    Traceback (most recent call last):
    ...
    geoseg.errors.RasterTooLargeError: huge.vrt: declares 1,000,000 x 1,000,000 px (1,000,000,000,000 pixels), more than the limit of 10,000,000,000; check the size with ``rio info huge.vrt`` (a broken or hostile header?), or cut a raster that is really this large into scenes first (``rio clip --bounds`` or ``gdal_translate -srcwin``)
    """
    h, w = info.shape
    if h * w > max_pixels:
        raise RasterTooLargeError(
            f"{info.path}: declares {w:,} x {h:,} px ({w * h:,} pixels), more than the limit of {max_pixels:,}; "
            f"check the size with ``rio info {info.path}`` (a broken or hostile header?), or {fix}"
        )


def valid_mask(array: np.ndarray, nodata: float | None, rule: ValidRule = "all") -> np.ndarray:
    """Return a ``(h, w)`` bool mask of pixels holding data in ``array`` (bands, h, w): in all its
    bands (``rule="all"``) or in any; ``rule="band"`` gives each band's own mask, ``(bands, h, w)``.

    In floating-point data NaN and ±inf never hold data, whatever the nodata value: no
    reflectance is infinite, and a model fed one would give its pixel a class anyway.

    Examples
    --------
    >>> a = np.array([[[0, 5]], [[3, 0]]], dtype="uint16")
    >>> valid_mask(a, 0).tolist(), valid_mask(a, 0, "any").tolist()
    ([[False, False]], [[True, True]])
    >>> valid_mask(np.array([[1.0, np.inf, -np.inf, np.nan]], "float32"), None).tolist()
    [[True, False, False, False]]
    """
    if array.ndim == 2:
        array = array[None]
    if nodata is None:
        nod = np.zeros(array.shape, bool)
        if np.issubdtype(array.dtype, np.floating):
            nod = ~np.isfinite(array)
    elif np.isnan(nodata):
        nod = ~np.isfinite(array)
    elif np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if float(nodata).is_integer() and info.min <= nodata <= info.max:
            nod = array == array.dtype.type(nodata)
        else:  # a nodata value the dtype cannot hold marks nothing
            nod = np.zeros(array.shape, bool)
    else:
        nod = (array == nodata) | ~np.isfinite(array)
    if rule == "all":
        return ~nod.any(axis=0)
    if rule == "any":
        return ~nod.all(axis=0)
    if rule == "band":
        return ~nod
    raise ValueError(f"rule must be 'all', 'any' or 'band', got {rule!r}")


def read_periods(path: str | os.PathLike[str]) -> dict[str, tuple[date, date]]:
    """The periods a ``geoseg composite`` stack records (its ``GEOSEG_PERIODS`` tag): label -> (start, end).

    Empty for a raster without the tag (or one that cannot be read here: reading it later says why).
    """
    try:
        with rasterio.open(path) as src:
            text = src.tags().get("GEOSEG_PERIODS")
        items = json.loads(text) if text else []
        return {str(p["label"]): (date.fromisoformat(p["start"]), date.fromisoformat(p["end"])) for p in items}
    except (RasterioIOError, RasterioError, ValueError, KeyError, TypeError):
        return {}


def gdal_reason(e: BaseException) -> str:
    """GDAL's own words for a rasterio error, for a one-line message.

    rasterio's read and write errors often say only "See previous exception for details";
    the chain behind them names the block and the codec's complaint, e.g. ``band 1:
    IReadBlock failed at X offset 3, Y offset 1: TIFFReadEncodedTile() failed; ZIPDecode:
    Decoding error at scanline 192``.

    >>> try:
    ...     try:
    ...         raise OSError("ZIPDecode:Decoding error at scanline 192")
    ...     except OSError as inner:
    ...         raise OSError("Read failed. See previous exception for details.") from inner
    ... except OSError as e:
    ...     gdal_reason(e)
    'ZIPDecode:Decoding error at scanline 192'
    """
    parts: list[str] = []
    c: BaseException | None = e
    while c is not None and len(parts) < 4:
        text = str(c).strip()
        first = text.splitlines()[0].rstrip(".") if text else ""
        if first and "see previous exception" not in first.lower() and not any(first in p for p in parts):
            parts.append(first)
        c = c.__cause__ or c.__context__
    return "; ".join(parts) or type(e).__name__


def read_tile(
    src: Any,
    tile: Tile,
    pad: PadMode = "reflect",
    fill: float = 0,
    rule: ValidRule = "all",
    indexes: Sequence[int] | None = None,
) -> TileData:
    """Read ``tile.read`` from an open dataset, padding outside the raster.

    Only the part of the window inside the raster is read (block-aligned reads when
    tiles match the file's blocks); the rest is padded with ``pad``. The valid mask comes
    from the nodata value, NaN, or the dataset's internal mask, and is False on padding.

    Parameters
    ----------
    src : rasterio dataset
        Open for reading (see :func:`open_raster`).
    tile : Tile
        From :func:`geoseg.core.grid.tile_grid` over this raster's shape.
    pad : {"reflect", "constant"}
        How pixels outside the raster are filled.
    fill : number
        The fill value for ``pad="constant"``.
    rule : {"all", "any", "band"}
        A pixel is valid when all (or any) of its bands hold data; ``"band"``: ``valid`` is each
        band's own mask (bands, h, w).
    indexes : sequence of int, optional
        1-based band indexes to read (all bands by default).
    """
    if pad not in ("reflect", "constant"):
        raise ValueError(f"pad must be 'reflect' or 'constant', got {pad!r}")
    h, w = src.height, src.width
    r = tile.read
    r0, c0 = int(r.row_off), int(r.col_off)
    r1, c1 = r0 + int(r.height), c0 + int(r.width)
    ir0, ic0, ir1, ic1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
    if ir0 >= ir1 or ic0 >= ic1:
        raise ValueError(f"tile {tile.key} does not intersect the raster of shape {(h, w)}; was it made for it?")
    inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
    idx = list(indexes) if indexes is not None else list(range(1, src.count + 1))
    try:
        arr = src.read(idx, window=inner)
    except (RasterioIOError, RasterioError) as e:
        raise RasterReadError(
            f"{src.name}: reading window {tile.key} {inner} failed ({gdal_reason(e)}); "
            f"the file may be truncated or corrupt - re-download or re-export it"
        ) from None
    if src.nodata is None and not np.issubdtype(arr.dtype, np.floating) and any(
        MaskFlags.per_dataset in f for f in src.mask_flag_enums
    ):
        valid = src.read_masks(1, window=inner) > 0
        if rule == "band":
            valid = np.broadcast_to(valid, arr.shape).copy()
    else:
        valid = valid_mask(arr, src.nodata, rule)
    widths = ((ir0 - r0, r1 - ir1), (ic0 - c0, c1 - ic1))
    if any(v for pair in widths for v in pair):
        if pad == "reflect":
            arr = np.pad(arr, ((0, 0), *widths), mode="reflect")
        else:
            arr = np.pad(arr, ((0, 0), *widths), mode="constant", constant_values=fill)
        valid = np.pad(valid, ((0, 0),) * (valid.ndim - 2) + widths, mode="constant", constant_values=False)
    return TileData(tile, arr, valid)


@dataclass(frozen=True, slots=True)
class BlockData:
    """One band's pixels in a window, as :func:`read_block` reads them.

    ``array`` (h, w) holds the pixels; ``nodata`` is the value in force (the caller's, else
    the file's); ``mask`` (h, w) bool is the file's internal mask (True = data) when that,
    not a nodata value, says which pixels hold data, else None. :meth:`valid` combines them;
    a caller that can use the nodata value itself (a uint8 count, say) need not build it.
    """

    array: np.ndarray
    nodata: float | None
    mask: np.ndarray | None

    def valid(self) -> np.ndarray:
        """``(h, w)`` bool: pixels holding data (the internal mask, else :func:`valid_mask`)."""
        return self.mask if self.mask is not None else valid_mask(self.array, self.nodata)


def read_block(src: Any, window: GridWindow | Window, *, nodata: float | None = None, band: int = 1) -> BlockData:
    """Read one band of ``window`` (inside the raster) from an open dataset, with what says which
    pixels hold data: ``nodata`` (default: the file's), else the file's internal mask.

    Unlike :func:`read_tile` nothing is padded: block-wise steps read their windows clipped
    to the raster. Errors are rasterio's, as the steps that call this always raised them.
    """
    win = rio_window(window)
    array = src.read(band, window=win)
    nod = nodata if nodata is not None else src.nodata
    internal = nod is None and any(MaskFlags.per_dataset in f for f in src.mask_flag_enums)
    mask = src.read_masks(band, window=win) > 0 if internal else None
    return BlockData(array, nod, mask)


class BlockReader:
    """A raster kept open, in its own ``rasterio.Env``, to read blocks of one band from.

    A block job (on a thread or a Dask worker) opens its own: a dataset is never shared
    between threads. Use as a context manager.

    Parameters
    ----------
    path : path
        The raster.
    nodata : number, optional
        Nodata value, overriding the file's.
    band : int
        The 1-based band to read.

    Examples
    --------
    >>> path = "/vsimem/geoseg-doc-block.tif"
    >>> with rasterio.open(path, "w", driver="GTiff", width=3, height=2, count=1, dtype="uint8", nodata=255,
    ...                    crs="EPSG:32643", transform=Affine(10, 0, 600_000, 0, -10, 3_380_000)) as dst:
    ...     dst.write(np.array([[1, 255, 2], [3, 4, 255]], "uint8"), 1)
    >>> with BlockReader(path) as reader:
    ...     shape = reader.shape
    ...     block = reader.read(GridWindow(1, 0, 2, 2))
    ...     row = reader.read_array(GridWindow(0, 1, 3, 1))
    >>> shape, block.array.tolist(), block.valid().tolist(), row.tolist()
    (Shape2d(height=2, width=3), [[255, 2], [4, 255]], [[False, True], [True, False]], [[3, 4, 255]])
    >>> rasterio.shutil.delete(path)
    """

    def __init__(self, path: str | os.PathLike[str], *, nodata: float | None = None, band: int = 1) -> None:
        self.path = str(path)
        self.nodata = nodata
        self.band = band
        self._stack: ExitStack | None = None
        self._src: Any = None

    def __enter__(self) -> "BlockReader":
        with ExitStack() as stack:
            stack.enter_context(rasterio.Env())
            self._src = stack.enter_context(open_raster(self.path))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack, self._src = self._stack, None, None
        if stack is not None:
            stack.close()

    @property
    def shape(self) -> Shape2d:
        """``(height, width)`` of the raster."""
        src = self._open()
        return Shape2d(src.height, src.width)

    def read(self, window: GridWindow | Window) -> BlockData:
        """The band in ``window`` with what says which pixels hold data (:func:`read_block`)."""
        return read_block(self._open(), window, nodata=self.nodata, band=self.band)

    def read_array(self, window: GridWindow | Window, band: int | None = None) -> np.ndarray:
        """The band's (or ``band``'s) pixels in ``window``, nothing else."""
        return self._open().read(self.band if band is None else band, window=rio_window(window))

    def _open(self) -> Any:
        if self._src is None:
            raise RuntimeError("BlockReader used outside its `with` block")
        return self._src


#: GDAL block-cache bounds for :func:`tile_cache_bytes` and :func:`writer_cache_bytes`.
MIN_CACHE_BYTES = 32 << 20
MAX_CACHE_BYTES = 1 << 30


def decode_block_shape(block_shape: Sequence[int]) -> tuple[int, int]:
    """The block (height, width) a raster's tiles are decoded in: the file's own, at least 512 px
    (a VRT - a multi-date stack - reports 128 px blocks while its sources' blocks are larger)."""
    return (max(int(block_shape[0]), 512), max(int(block_shape[1]), 512))


def tile_cache_bytes(src: Any, tiles: Sequence[Tile]) -> int:
    """A GDAL block-cache size (bytes) that lets ``tiles``, read in their order, decode each block once.

    The cache holds the smallest least-recently-used working set that decodes every block the
    tiles touch once (:func:`geoseg.core.grid.cache_blocks`, simulated on the tiles' windows: 4
    blocks for a strip of 512 px tiles over 512 px blocks, 5-7 for a band of three tile rows
    walked column by column), plus one block and a quarter of slack (GDAL counts each band's
    block apart and evicts them one by one). The size depends on the tiles' order and
    alignment, not on the scene's size; it is bounded by :data:`MIN_CACHE_BYTES` and
    :data:`MAX_CACHE_BYTES`. Pass it as ``rasterio.Env(GDAL_CACHEMAX=n)``: rasterio takes an
    integer as **bytes** (``256`` would be a 256-byte cache, which decodes every block again
    for every read).

    Blocks are taken as :func:`decode_block_shape` gives them; a VRT caches both its own
    blocks and its sources'.
    """

    if not tiles:
        return MIN_CACHE_BYTES
    bh, bw = decode_block_shape(src.block_shapes[0])
    blocks = cache_blocks(tiles, (src.height, src.width), (bh, bw)) + 1
    item = max(np.dtype(d).itemsize for d in src.dtypes)
    need = blocks * bh * bw * src.count * item * (2 if src.driver == "VRT" else 1)
    return int(min(max(need + need // 4, MIN_CACHE_BYTES), MAX_CACHE_BYTES))


def writer_cache_bytes(shape: tuple[int, int], blocksize: int, count: int = 1, itemsize: int = 1) -> int:
    """A GDAL block-cache size (bytes) for writing a raster of ``shape`` window by window in row order.

    Windows that do not fill whole blocks (tile cores) leave blocks half-written; the cache
    must hold the two rows of blocks a row of windows straddles (three are allowed, for
    slack), or each block is compressed, flushed, read back and decompressed for every
    window that touches it. Bounded like :func:`tile_cache_bytes`.
    """
    need = 3 * blocksize * (-(-int(shape[1]) // blocksize) * blocksize) * count * itemsize
    return int(min(max(need, MIN_CACHE_BYTES), MAX_CACHE_BYTES))


def iter_tiles(
    src: Any,
    grid: TileGrid,
    pad: PadMode = "reflect",
    rule: ValidRule = "all",
    indexes: Sequence[int] | None = None,
) -> Iterator[TileData]:
    """Read every tile of ``grid`` from an open dataset, in grid order (see :func:`read_tile`)."""
    if (src.height, src.width) != tuple(grid.shape):
        raise ValueError(
            f"{src.name}: raster is {src.height}x{src.width} px but the grid was made for "
            f"{grid.shape.height}x{grid.shape.width}; build the grid from this raster"
        )
    for tile in grid:
        yield read_tile(src, tile, pad=pad, rule=rule, indexes=indexes)


def check_same_grid(a: RasterInfo, b: RasterInfo, tolerance: float = 1e-6) -> None:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` share CRS, transform and size."""
    problems = []
    if tuple(a.shape) != tuple(b.shape):
        problems.append(f"size {b.shape.width}x{b.shape.height} (expected {a.shape.width}x{a.shape.height})")
    if a.crs != b.crs:
        problems.append(f"CRS {b.crs.to_string()} (expected {a.crs.to_string()})")
    if not a.transform.almost_equals(b.transform, precision=tolerance * max(a.res)):
        problems.append(f"transform {tuple(b.transform)[:6]} (expected {tuple(a.transform)[:6]})")
    if problems:
        raise GridMismatchError(
            f"{b.path} is not on the grid of {a.path}: " + "; ".join(problems)
            + f" - resample it onto the grid, e.g. `rio warp {b.path} aligned.tif --like {a.path}` "
            f"(or `gdalwarp -te <bounds> -tr <res> -t_srs <crs> {b.path} aligned.tif`)"
        )


def count_differences(a: str | os.PathLike[str], b: str | os.PathLike[str], block: int = 1024) -> int:
    """Count pixels that differ between two rasters on the same grid, block by block.

    Memory stays bounded by one ``block x block`` window of each raster.
    """
    check_same_grid(raster_info(a), raster_info(b))
    diff = 0
    with open_raster(a) as sa, open_raster(b) as sb:
        if sa.count != sb.count:
            raise GridMismatchError(f"{b} has {sb.count} bands (expected {sa.count}, like {a})")
        for r in range(0, sa.height, block):
            for c in range(0, sa.width, block):
                win = Window(c, r, min(block, sa.width - c), min(block, sa.height - r))
                x, y = sa.read(window=win), sb.read(window=win)
                same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
                diff += int((~same.all(axis=0)).sum())
    return diff


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):  # hard links and symlinks alike
            return True
    except OSError:  # one does not exist (yet): compare the resolved names
        pass
    return a.resolve() == b.resolve()


def input_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and, for a raster GDAL opens, every file it reads (a VRT's sources, ``.aux.xml``, ``.ovr``).

    >>> [p.name for p in input_files("no/such.tif")]
    ['such.tif']
    """
    p = Path(path)
    files = [p]
    if p.is_file():
        try:
            with rasterio.open(p) as src:
                files += [Path(f) for f in src.files]
        except Exception:  # noqa: BLE001 - not a raster (a vector or table input): the path alone
            pass
    return files


def check_outputs(outputs: Mapping[str, str | os.PathLike[str] | None],
                  inputs: Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None]) -> None:
    """Refuse an output that would replace one of the inputs, or another output.

    Each mapping goes from a role ("the mask", "input 2") to a path; an input role may map
    to several paths. A raster input counts with every file it reads (a VRT's sources
    included), and two names count as one file when they resolve to it (``..``, symbolic
    and hard links), as ``gdal_translate`` checks before writing.

    Raises
    ------
    OutputIsInputError
        Naming both roles and the file, with the fix.

    Examples
    --------
    >>> check_outputs({"the mask": "a/s.tif"}, {"the image": "a/../a/s.tif"})
    Traceback (most recent call last):
    ...
    geoseg.errors.OutputIsInputError: a/s.tif: the mask would replace the image (a/../a/s.tif, the same file); choose another output path
    """
    seen: list[tuple[str, Path, Path]] = []  # (role, named path, file)
    for role, value in inputs.items():
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value or [])
        for named in paths:
            seen += [(role, Path(named), f) for f in input_files(named)]
    for role, out in outputs.items():
        if out is None:
            continue
        o = Path(out)
        for other, named, f in seen:
            if _same_file(o, f):
                via = "the same file" if f == named else f"which reads {f}"
                raise OutputIsInputError(f"{o}: {role} would replace {other} ({named}, {via}); choose another output path")
        seen.append((role, o, o))


def atomic_path(path: str | os.PathLike[str]) -> Path:
    """A unique temporary name beside ``path`` (same directory, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.partial-{uuid.uuid4().hex[:12]}{p.suffix}")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` (:func:`atomic_path`) to write any file (or link) to; when the
    block ends without an error it is renamed to ``path``, replacing what was there. Either way no
    temporary file is left: readers of ``path`` see the old file or the new one whole, never half of it.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "chart.png"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_bytes(b"PNG")
    >>> target.read_bytes(), [p.name for p in target.parent.iterdir()]
    (b'PNG', ['chart.png'])
    """
    target = Path(path)
    tmp = atomic_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def publish_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Rename a finished folder (written under :func:`atomic_path`'s name) onto ``target``. A folder or
    file already there is moved aside first and removed after: readers see the old one or the new
    one whole."""
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = atomic_path(target)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return target


#: Below this many free bytes a failed write is put down to a full disk.
FULL_DISK_BYTES = 64 << 20

#: GDAL's block cache while a finished raster is copied into its COG (bytes). The copy reads each
#: source block once, all bands together, in output-block order, so a cache buys it no speed; a
#: small one of its own keeps the copy's memory flat with the raster's size, whatever cache the
#: caller opened for writing (a VRT over the levels caches its blocks and its sources' again).
COG_COPY_CACHE_BYTES = 1 << 20


def free_space_note(path: str | os.PathLike[str]) -> str:
    """A clause saying the disk holding ``path`` is (nearly) full, or ``""`` when it has room.

    GDAL and libtiff report a full disk as "Write error at scanline N" or say nothing at
    all; the free space of the directory tells the user what actually went wrong.

    >>> free_space_note("/no/such/dir/x.tif")
    ''
    """
    d = Path(path).parent
    try:
        st = os.statvfs(d)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= FULL_DISK_BYTES:
        return ""
    return f"; the disk holding {d} is full (only {free:,} bytes free)"


@functools.cache
def _loaded_libs(stem: str) -> tuple[Any, ...]:
    """The shared libraries named ``stem*`` that this process has loaded, through ctypes."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = {line.split()[-1] for line in f if f"/{stem}" in line and ".so" in line}
    except OSError:  # not Linux: nothing to adjust
        return ()
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return tuple(libs)


@functools.cache
def mute_libtiff_stderr() -> bool:
    """Stop libtiff printing its own lines on standard error; True when it was found.

    GDAL routes libtiff's errors into its own (which rasterio raises), except those of
    its file I/O callbacks: a full disk prints "_tiffWriteProc: No space left on device."
    once per block straight to standard error, besides the error geoseg raises. Those
    lines go through libtiff's process-wide handler, which this clears (GDAL's routed
    messages do not use it). A no-op where no libtiff is loaded.
    """
    import ctypes

    done = False
    for lib in _loaded_libs("libtiff"):
        handler = getattr(lib, "TIFFSetErrorHandler", None)
        if handler is not None:
            handler.restype = ctypes.c_void_p
            handler.argtypes = [ctypes.c_void_p]
            handler(None)
            done = True
    return done


@contextmanager
def gdal_errors_muted() -> Iterator[None]:
    """Drop GDAL's error lines inside the block (this thread only).

    For closing a dataset that is being thrown away after a failure: GDAL flushes its
    cached blocks on close and, outside rasterio's error capture, prints "ERROR 1: ..."
    for each that cannot be written. geoseg has already raised the error that matters.
    """
    gdal = next((lib for lib in _loaded_libs("libgdal") if hasattr(lib, "CPLPushErrorHandler")), None)
    if gdal is None:
        yield
        return
    gdal.CPLPushErrorHandler(gdal.CPLQuietErrorHandler)
    try:
        yield
    finally:
        gdal.CPLPopErrorHandler()


def check_written_raster(
    path: str | os.PathLike[str], *, shape: tuple[int, int], count: int, dtype: str,
    target: str | os.PathLike[str] | None = None,
) -> None:
    """Re-open a raster just written and decode every block of every band and overview.

    GDAL and libtiff log some write failures (a full disk while a COG is copied, a
    directory that could not be flushed) instead of raising them, leaving a truncated
    file behind an exit status of 0; reading it all back is the one check that catches
    every such case before the file is published. ``target`` names the file in the
    message when ``path`` is its temporary name.

    Raises
    ------
    RasterWriteError
        The file cannot be opened, has another layout than was written, or a block fails to
        decode; the message says whether the disk is full.
    """
    p = Path(path)
    mute_libtiff_stderr()
    expected = ((int(shape[0]), int(shape[1])), count, np.dtype(dtype).name)
    found: str | None = None
    try:
        with rasterio.open(p) as src:
            got = ((src.height, src.width), src.count, src.dtypes[0])
            levels = len(src.overviews(1))
            if got != expected:
                found = f"size, bands and type {got}, expected {expected}"
            else:
                for _, win in src.block_windows(1):
                    src.read(window=win)
        for level in range(levels if found is None else 0):
            with rasterio.open(p, overview_level=level) as ov:
                for _, win in ov.block_windows(1):
                    ov.read(window=win)
    except Exception as e:  # noqa: BLE001 - rasterio's and GDAL's CPLE errors alike: the file is bad
        found = gdal_reason(e).replace(f"{p.name}, ", "").replace(f"{p.name}: ", "")
    if found is not None:
        name = Path(target) if target is not None else p
        raise RasterWriteError(
            f"{name}: the file written does not read back ({found}){free_space_note(p)}; "
            f"check free disk space, then run again"
        )


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\n`` line ends) to ``path`` under a temporary name, then rename it into place.

    Raises
    ------
    WriteError
        The text cannot be written (e.g. the disk is full); nothing is left at ``path``.
    """
    target = Path(path)
    try:
        with atomic_output(target) as tmp:
            tmp.write_text(text, encoding="utf-8", newline="\n")
    except OSError as e:
        raise WriteError(
            f"{target}: writing failed ({e.strerror or e}){free_space_note(target)}; "
            f"check free disk space and permissions, then run again"
        ) from None
    return target


class RasterWriter:
    """Write a raster window by window, atomically; optionally as a Cloud-Optimised GeoTIFF.

    Use as a context manager. Pixels are written to a tiled, DEFLATE-compressed temporary
    GeoTIFF beside the target; on a clean exit it is converted to a COG (internal tiles,
    overviews) when ``cog=True`` and renamed into place. On an error nothing is left at the
    target and the temporary file is removed. Memory stays bounded by what you pass to
    :meth:`write` plus GDAL's block cache.

    Parameters
    ----------
    path : path
        The target file.
    shape, transform, crs
        The grid of the output (copy them from the input to keep georeferencing exact).
    count, dtype, nodata
        Bands, data type and nodata value.
    colormap : mapping, optional
        A GDAL colour table for band 1 (``{value: (r, g, b, a)}``).
    tags : mapping, optional
        Dataset metadata tags.
    band_descriptions : sequence of str, optional
        One description per band.
    cog : bool
        Write a Cloud-Optimised GeoTIFF (default) or a plain tiled GeoTIFF.
    overview_resampling : str
        ``"mode"`` for class masks, ``"average"`` for reflectance.
    blocksize : int
        Internal tile size.
    predictor : int, optional
        DEFLATE predictor (default: 1 for uint8, 2 otherwise).
    level : int
        DEFLATE level of the COG (1-9; GDAL's default 6).
    fast : bool
        A plain GeoTIFF compressed with ZSTD level 1 instead of DEFLATE: about 3 x quicker to
        write and a third quicker to read, about as small for class masks; for files geoseg
        reads back itself (the tile store), since some GIS tools lack ZSTD.
    scale : float or sequence of float, optional
        GDAL scale of every band, or of each: stored value x scale + offset = physical value.
    offset : sequence of float, optional
        GDAL offset of each band (default 0), with ``scale``.
    sidecars : mapping, optional
        Files published with the raster, ``{path: text}`` (a mask's ``.aux.xml`` and ``.qml``,
        see :func:`geoseg.io.sidecars.mask_sidecars`). They are written under temporary names
        once the raster is complete and renamed into place just before it, so a reader who sees
        the new raster sees its sidecars. A ``<path>.aux.xml`` that is not among them is removed
        before the raster is replaced (it described the old file, as GDAL's own drivers do on
        create).
    creation_options : mapping, optional
        GDAL creation options (``{"COMPRESS": "ZSTD"}``) over geoseg's own, checked by
        :func:`check_creation_options`: of the COG driver when ``cog``, else of GTiff.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        shape: tuple[int, int],
        transform: Affine,
        crs: CRS | str,
        count: int = 1,
        dtype: str = "uint8",
        nodata: float | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        tags: Mapping[str, str] | None = None,
        band_descriptions: Sequence[str] | None = None,
        cog: bool = True,
        overview_resampling: str = "mode",
        blocksize: int = 512,
        predictor: int | None = None,
        fast: bool = False,
        level: int = 6,
        scale: float | Sequence[float] | None = None,
        sidecars: Mapping[str | os.PathLike[str], str] | None = None,
        creation_options: Mapping[str, str] | None = None,
        offset: Sequence[float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.creation_options = check_creation_options(creation_options, cog=cog, path=path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.transform = transform
        self.crs = crs
        self.count = count
        self.dtype = np.dtype(dtype).name
        self.nodata = nodata
        self.colormap = dict(colormap) if colormap else None
        self.tags = dict(tags) if tags else {}
        self.band_descriptions = list(band_descriptions) if band_descriptions else None
        self.cog = cog
        self.overview_resampling = overview_resampling
        self.blocksize = blocksize
        self.fast = fast
        self.level = level
        self.scale = scale
        self.offset = offset
        self.sidecars = {Path(k): v for k, v in (sidecars or {}).items()}
        self.predictor = predictor if predictor is not None else (1 if self.dtype == "uint8" else 2)
        self._tmp: Path | None = None
        self._ds: Any = None
        self.published = False  # True once the finished file is renamed into place

    def __enter__(self) -> "RasterWriter":
        parent = self.path.parent
        if parent.exists() and not parent.is_dir():
            raise RasterWriteError(
                f"{self.path}: {parent} is a file, not a directory; choose an output path inside a directory"
            )
        if not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RasterWriteError(
                    f"{self.path}: cannot create the output directory {parent} ({e.strerror}); "
                    f"choose a writable location"
                ) from None
        if not os.access(parent, os.W_OK):
            raise RasterWriteError(
                f"{self.path}: the directory {parent} is not writable; choose another output path "
                f"or fix its permissions"
            )
        self._tmp = atomic_path(self.path.with_suffix(".tif"))
        mute_libtiff_stderr()  # a failed write raises one error here, not a libtiff line per block
        bs = self.blocksize
        profile = dict(
            driver="GTiff",
            height=self.shape[0],
            width=self.shape[1],
            count=self.count,
            dtype=self.dtype,
            crs=self.crs,
            transform=self.transform,
            nodata=self.nodata,
            tiled=True,
            blockxsize=bs,
            blockysize=bs,
            bigtiff="IF_SAFER",
            interleave="pixel" if self.count > 1 else "band",
        )
        if self.cog or self.fast:  # a scratch file recompressed into the COG, or one only geoseg reads
            profile.update(compress="ZSTD", zstd_level=1)
        else:
            profile.update(compress="DEFLATE", predictor=self.predictor)
            profile.update({k.lower(): v for k, v in self.creation_options.items()})
        try:
            self._ds = rasterio.open(self._tmp, "w", **profile)
            if self.colormap:
                self._ds.write_colormap(1, self.colormap)
            if self.tags:
                self._ds.update_tags(**self.tags)
            if self.band_descriptions:
                for i, d in enumerate(self.band_descriptions, start=1):
                    self._ds.set_band_description(i, d)
            if self.scale is not None:  # readers that apply GDAL's scale/offset get physical values
                self._ds.scales = (tuple(float(v) for v in self.scale) if isinstance(self.scale, Sequence)
                                   else (self.scale,) * self.count)
                self._ds.offsets = (tuple(float(v) for v in self.offset) if self.offset is not None
                                    else (0.0,) * self.count)
        except (RasterioIOError, RasterioError, OSError) as e:
            self._abort()
            raise RasterWriteError(f"{self.path}: cannot create the output ({e}); check free space and permissions") from None
        return self

    def write(self, array: np.ndarray, window: GridWindow | Window, indexes: int | Sequence[int] | None = None) -> None:
        """Write ``array`` ((bands,) h, w) at ``window`` (inside the raster)."""
        if self._ds is None:
            raise RuntimeError("RasterWriter.write() called outside its `with` block")
        window = rio_window(window)
        try:
            if array.ndim == 2:
                self._ds.write(array, indexes if indexes is not None else 1, window=window)
            else:
                self._ds.write(array, indexes, window=window)
        except Exception as e:  # noqa: BLE001 - rasterio's and GDAL's CPLE errors alike
            raise RasterWriteError(
                f"{self.path}: writing window {window} failed ({gdal_reason(e)}){free_space_note(self._tmp or self.path)}; "
                f"check free disk space, then run again"
            ) from None

    def write_tile(self, tile: Tile, array: np.ndarray) -> None:
        """Write the core of a tile output ``array`` (over the tile's read window) in place."""
        self.write(trim(tile, array), tile.core)

    def _abort(self, *extra: Path) -> None:
        if self._ds is not None:
            try:
                with gdal_errors_muted():  # the failure that matters is being raised already
                    self._ds.close()
            except Exception:  # noqa: BLE001 - closing a broken dataset while failing anyway
                pass
            self._ds = None
        for tmp in (self._tmp, *extra):
            if tmp is None:
                continue
            for f in (tmp, Path(str(tmp) + ".aux.xml")):
                try:
                    f.unlink(missing_ok=True)
                except OSError:  # e.g. the directory went away; nothing of ours is left there
                    pass

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
            return
        assert self._tmp is not None
        final_tmp = self._tmp
        side_tmps: list[tuple[Path, Path]] = []  # (temporary name, target) of each sidecar
        extra: list[Path] = []  # overview levels and the VRT that joins them, removed whatever happens
        try:
            with gdal_errors_muted():  # GDAL prints some flush failures besides raising the last one
                self._ds.close()
            self._ds = None
            if self.cog:
                final_tmp = atomic_path(self.path)
                options = dict(
                    COMPRESS="DEFLATE",
                    PREDICTOR="YES" if self.predictor == 2 else "NO",
                    LEVEL=str(self.level),
                    BLOCKSIZE=str(self.blocksize),
                    RESAMPLING=self.overview_resampling.upper(),
                    OVERVIEWS="AUTO",
                    BIGTIFF="IF_SAFER",
                    NUM_THREADS="ALL_CPUS",
                )
                if self.creation_options.get("COMPRESS", "DEFLATE") not in ("DEFLATE", "ZSTD", "LERC_DEFLATE",
                                                                             "LERC_ZSTD"):
                    del options["LEVEL"]  # only those compressions have a level
                options.update(self.creation_options)  # the user's --co over geoseg's own
                source: Path = self._tmp
                method = options.get("OVERVIEW_RESAMPLING", options["RESAMPLING"]).lower()
                if options["OVERVIEWS"].upper() == "AUTO" and method in PYRAMID_METHODS:
                    # geoseg's own overviews, tile by tile: GDAL's multi-band builder holds strips
                    # as wide as the raster, so its memory grows with the width and its time faster
                    # than the area
                    count = options.pop("OVERVIEW_COUNT", None)
                    factors = overview_levels(*self.shape, int(options["BLOCKSIZE"]),
                                              int(count) if count is not None else None)
                    if factors:
                        levels = _write_pyramid(self._tmp, len(factors), method, self.nodata,
                                                int(options["BLOCKSIZE"]), extra)
                        source = _vrt_with_overviews(self._tmp, levels, extra)
                        options["OVERVIEWS"] = "FORCE_USE_EXISTING"
                with rasterio.Env(GDAL_CACHEMAX=COG_COPY_CACHE_BYTES):
                    rasterio.shutil.copy(source, final_tmp, driver="COG", **options)
                for f in (self._tmp, *extra):
                    f.unlink(missing_ok=True)
                extra.clear()
            # GDAL logs some failures (a full disk during the COG copy) without raising: read it all back
            check_written_raster(final_tmp, shape=self.shape, count=self.count, dtype=self.dtype, target=self.path)
            for target, text in self.sidecars.items():  # every sidecar written before any file is replaced
                side_tmps.append((atomic_path(target), target))
                side_tmps[-1][0].write_text(text, encoding="utf-8", newline="\n")
            for tmp, target in side_tmps:
                os.replace(tmp, target)
            stale_pam = Path(str(self.path) + ".aux.xml")
            if stale_pam not in self.sidecars:
                stale_pam.unlink(missing_ok=True)
            os.replace(final_tmp, self.path)
            self.published = True
        except RasterWriteError:
            self._abort(final_tmp, *(t for t, _ in side_tmps), *extra)
            raise
        except Exception as e:  # noqa: BLE001 - rasterio's, GDAL's CPLE and OS errors alike
            self._abort(final_tmp, *(t for t, _ in side_tmps), *extra)
            given = (f"check the creation options ({', '.join(f'{k}={v}' for k, v in self.creation_options.items())}) "
                     f"and free disk space" if self.creation_options else "check free disk space")
            raise RasterWriteError(
                f"{self.path}: finishing the output failed ({gdal_reason(e)}){free_space_note(self.path)}; "
                f"{given}, then run again"
            ) from None


def _write_pyramid(base: Path, count: int, method: str, nodata: float | None, blocksize: int,
                   made: list[Path]) -> list[Path]:
    """``count`` overview levels of the GeoTIFF ``base``, each a GeoTIFF beside it made from the
    level below, one output tile at a time (:func:`geoseg.core.pyramid.halve`). Each file is
    appended to ``made`` as soon as it exists, so that the caller removes it whatever happens."""
    levels: list[Path] = []
    below = base
    for _ in range(count):
        with rasterio.open(below) as src:
            oh, ow = halved_shape(src.height, src.width)
            path = below.with_name(f"{base.name}.ovr{len(levels) + 1}.tif")
            made.append(path)
            profile = dict(driver="GTiff", height=oh, width=ow, count=src.count, dtype=src.dtypes[0], crs=src.crs,
                           transform=src.transform @ Affine.scale(src.width / ow, src.height / oh),
                           nodata=src.nodata, tiled=True, blockxsize=blocksize, blockysize=blocksize,
                           compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER",
                           interleave="pixel" if src.count > 1 else "band")
            with rasterio.open(path, "w", **profile) as dst:
                for r in range(0, oh, blocksize):
                    for c in range(0, ow, blocksize):
                        # the output tile from its 4 quadrants, each from one source tile, so that
                        # the tile is complete (and leaves the block cache) after 4 writes
                        for dr in (0, blocksize // 2):
                            for dc in (0, blocksize // 2):
                                orow, ocol = r + dr, c + dc
                                if orow >= oh or ocol >= ow:
                                    continue
                                srow, scol = 2 * orow, 2 * ocol
                                sh, sw = min(blocksize, src.height - srow), min(blocksize, src.width - scol)
                                block = src.read(window=Window(scol, srow, sw, sh))
                                # band by band: halve's float temporaries stay one band's size
                                out = np.stack([halve(band, nodata, method) for band in block])
                                dst.write(out, window=Window(ocol, orow, (sw + 1) // 2, (sh + 1) // 2))
        levels.append(path)
        below = path
    return levels


def _vrt_with_overviews(base: Path, levels: Sequence[Path], made: list[Path]) -> Path:
    """A VRT of ``base`` (its metadata, scales, nodata, colours) whose bands have ``levels`` as
    their overviews, for GDAL's COG driver to copy them as they are."""
    vrt = base.with_name(f"{base.name}.vrt")
    made.append(vrt)
    rasterio.shutil.copy(base, vrt, driver="VRT")
    text = vrt.read_text(encoding="utf-8")

    def add(match: re.Match[str]) -> str:
        band = match.group(1)
        return match.group(0) + "".join(
            f'<Overview><SourceFilename relativeToVRT="1">{html.escape(p.name)}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand></Overview>" for p in levels)

    text, n = re.subn(r'<VRTRasterBand\b[^>]*\bband="(\d+)"[^>]*>', add, text)
    if n == 0:  # pragma: no cover - GDAL's VRT writer always names its bands
        raise RasterWriteError(f"{vrt}: GDAL wrote a VRT without <VRTRasterBand band=...> elements, so the "
                               f"overviews of {base} cannot be attached; write without overviews "
                               f"(--co OVERVIEWS=NONE) and report this GDAL version")
    vrt.write_text(text, encoding="utf-8")
    return vrt


#: Creation options a user may set on a COG geoseg writes (GDAL's COG driver), and on a plain GeoTIFF.
COG_OPTIONS = ("COMPRESS", "LEVEL", "PREDICTOR", "BLOCKSIZE", "BIGTIFF", "NUM_THREADS", "OVERVIEWS", "OVERVIEW_COUNT",
               "RESAMPLING", "OVERVIEW_RESAMPLING", "MAX_Z_ERROR", "SPARSE_OK", "STATISTICS", "GEOTIFF_VERSION")
GTIFF_OPTIONS = ("COMPRESS", "PREDICTOR", "ZLEVEL", "ZSTD_LEVEL", "LZMA_PRESET", "MAX_Z_ERROR", "BLOCKXSIZE",
                 "BLOCKYSIZE", "TILED", "BIGTIFF", "NUM_THREADS", "INTERLEAVE", "SPARSE_OK", "GEOTIFF_VERSION")
#: Compressions that keep every value (a class id, a reflectance); JPEG and WEBP do not.
LOSSLESS = ("NONE", "DEFLATE", "LZW", "ZSTD", "LZMA", "PACKBITS", "LERC", "LERC_DEFLATE", "LERC_ZSTD")
_COG_LAYOUT = {"TILED": "a COG is always tiled", "BLOCKXSIZE": "a COG has square tiles: use BLOCKSIZE",
               "BLOCKYSIZE": "a COG has square tiles: use BLOCKSIZE", "INTERLEAVE": "geoseg's COGs keep its layout",
               "COPY_SRC_OVERVIEWS": "the COG driver builds the overviews itself"}


def check_creation_options(options: Mapping[str, str] | None, *, cog: bool = True,
                           path: str | os.PathLike[str] = "the output") -> dict[str, str]:
    """Creation options with upper-case keys, once each key is one geoseg lets a user set.

    Keys are those of GDAL's COG driver (``cog=True``) or GTiff driver (:data:`COG_OPTIONS`,
    :data:`GTIFF_OPTIONS`); values are GDAL's to check, except ``COMPRESS``, which must be lossless
    (:data:`LOSSLESS`): JPEG or WEBP would change class ids and reflectances.

    Raises
    ------
    ConfigError
        An unknown key, one that would break the COG layout, or a lossy compression.

    Examples
    --------
    >>> check_creation_options({"compress": "zstd", "level": "9"})
    {'COMPRESS': 'ZSTD', 'LEVEL': '9'}
    >>> check_creation_options({"TILED": "NO"}, path="mask.tif")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: mask.tif: creation option TILED cannot be set on this COG (a COG is always tiled); leave it out
    """
    out: dict[str, str] = {}
    allowed = COG_OPTIONS if cog else GTIFF_OPTIONS
    kind = "COG" if cog else "GeoTIFF"
    for key, value in (options or {}).items():
        k = str(key).strip().upper()
        v = str(value).strip()
        if cog and k in _COG_LAYOUT:
            raise ConfigError(f"{path}: creation option {k} cannot be set on this COG ({_COG_LAYOUT[k]}); leave it out")
        if k not in allowed:
            raise ConfigError(f"{path}: unknown creation option {k!r} for a {kind}; expected one of {', '.join(allowed)} "
                              f"(GDAL's {'COG' if cog else 'GTiff'} driver options, described at "
                              f"https://gdal.org/drivers/raster/{'cog' if cog else 'gtiff'}.html)")
        if k == "COMPRESS":
            v = v.upper()
            if v not in LOSSLESS:
                raise ConfigError(f"{path}: COMPRESS={v} would change pixel values (geoseg's rasters hold class ids "
                                  f"and measurements, not pictures); use one of {', '.join(LOSSLESS)}")
        out[k] = v
    return out


def mask_writer(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int],
    transform: Affine,
    crs: CRS | str,
    classes: ClassTable,
    tags: Mapping[str, str] | None = None,
    creation_options: Mapping[str, str] | None = None,
) -> RasterWriter:
    """A :class:`RasterWriter` for a class mask: uint8, nodata 255, class colours, COG.

    The class table is stored in the metadata tag ``GEOSEG_CLASSES`` (JSON) so that any
    mask geoseg writes carries its class names and colours; GIS tools get them from the
    sidecars published with it (:func:`geoseg.io.sidecars.mask_sidecars`): GDAL category
    names and a raster attribute table in ``<mask>.aux.xml``, a QGIS style in ``<mask stem>.qml``.
    """
    all_tags = {"GEOSEG_CLASSES": json.dumps(classes.to_dict()["classes"])}
    all_tags.update(tags or {})
    return RasterWriter(
        path,
        shape=shape,
        transform=transform,
        crs=crs,
        count=1,
        dtype="uint8",
        nodata=NODATA,
        colormap=classes.colormap(),
        tags=all_tags,
        band_descriptions=["class"],
        cog=True,
        overview_resampling="mode",
        sidecars=mask_sidecars(path, classes),
        creation_options=creation_options,
    )


#: Bands a confidence raster may hold after ``confidence``, in this order (each only for a model
#: that has it): the dates each pixel saw, and the field-boundary probability.
CONFIDENCE_EXTRAS = ("dates_seen", "boundary")


def confidence_bands(dates_seen: bool = False, boundary: bool = False) -> list[str]:
    """The band names of a confidence raster (see :data:`CONFIDENCE_EXTRAS`).

    >>> confidence_bands(), confidence_bands(boundary=True)
    (['confidence'], ['confidence', 'boundary'])
    """
    return ["confidence"] + (["dates_seen"] if dates_seen else []) + (["boundary"] if boundary else [])


def band_by_name(info: RasterInfo, name: str) -> int | None:
    """The 1-based index of the band described as ``name`` (a geoseg confidence raster's
    ``boundary``, ...), or None."""
    for i, d in enumerate(info.descriptions, start=1):
        if d == name:
            return i
    return None


def confidence_writer(
    path: str | os.PathLike[str], *, shape: tuple[int, int], transform: Affine, crs: CRS | str,
    creation_options: Mapping[str, str] | None = None, dates_seen: bool = False, boundary: bool = False,
    separation: str | None = None,
) -> RasterWriter:
    """A :class:`RasterWriter` for a confidence raster: uint8 max softmax x 255, nodata 0, COG.

    With ``dates_seen`` (a model that reads dates) a band ``dates_seen`` follows: how many of its
    dates each pixel saw (scale 1; 0 where it saw none). With ``boundary`` (a model with a
    boundary output) a band ``boundary`` comes last: the probability that the pixel lies on a
    field's edge, x 254 + 1 (scale 1/254, offset -1/254; 0 = nodata), which ``polygonize``
    separates touching fields on; ``separation`` (the model's choice: a threshold probability such as
    ``"0.05"``, or ``"none"``) goes in the tag ``GEOSEG_SEPARATION``, which ``polygonize`` follows.

    The confidence band's scale is 1/255 (offset 0), so GDAL-based readers that apply scale and
    offset (``gdal_translate -unscale``, QGIS's identify tool, ``rasterio``'s ``scales``) give the
    probability itself, 1/255 to 1.

    Compressed with DEFLATE level 1 after horizontal differencing: quicker to write than level 6
    without it and no larger (confidence varies smoothly; a higher level gains little on it;
    the figures are in benchmarks/README.md).
    """
    names = confidence_bands(dates_seen, boundary)
    scales = {"confidence": 1 / 255, "dates_seen": 1.0, "boundary": 1 / 254}
    tags = {"GEOSEG_CONFIDENCE": "max softmax probability x 255; 0 = nodata"}
    if dates_seen:
        tags["GEOSEG_DATES_SEEN"] = f"band {names.index('dates_seen') + 1}: dates observed at the pixel"
    if boundary:
        tags["GEOSEG_BOUNDARY"] = (f"band {names.index('boundary') + 1}: probability of a field edge x 254 + 1; "
                                   f"0 = nodata")
        if separation:
            tags["GEOSEG_SEPARATION"] = separation
    return RasterWriter(
        path,
        shape=shape,
        transform=transform,
        crs=crs,
        dtype="uint8",
        nodata=0,
        count=len(names),
        band_descriptions=names,
        overview_resampling="average",
        tags=tags,
        predictor=2,
        level=1,
        scale=tuple(scales[n] for n in names) if len(names) > 1 else 1 / 255,
        offset=tuple(-1 / 254 if n == "boundary" else 0.0 for n in names) if boundary else None,
        creation_options=creation_options,
    )


def read_mask_classes(path: str | os.PathLike[str]) -> ClassTable | None:
    """The class table embedded in a mask written by geoseg, or None for other masks."""
    with open_raster(path) as src:
        raw = src.tags().get("GEOSEG_CLASSES")
    if raw is None:
        return None
    return ClassTable.from_dict(json.loads(raw), f"{path} (GEOSEG_CLASSES tag)")


def warn_no_nodata(info: RasterInfo) -> None:
    """Warn that ``info`` has no nodata value, so every pixel counts as observed."""
    if info.nodata is None:
        warnings.warn(
            f"{info.path}: no nodata value set; every pixel is taken as observed "
            f"(set one with `rio edit-info --nodata 0 {info.path}` or `gdal_edit.py -a_nodata 0 {info.path}` "
            f"if it has a collar)",
            NoDataWarning,
            stacklevel=2,
        )
