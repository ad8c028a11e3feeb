"""The tile grid: pure arithmetic over a raster's shape and affine transform.

A :class:`TileGrid` cuts a raster of ``(height, width)`` pixels into tiles. Each
:class:`Tile` has

* a **core** window: the pixels this tile is responsible for. Core windows never
  overlap and together cover every pixel of the raster exactly once;
* a **read** window of exactly ``size`` pixels that contains the core plus at least
  ``overlap`` pixels of context on every side. Read windows may extend past the
  raster's edges; the reader pads those pixels (see :func:`geoseg.io.raster.read_tile`).

The core stride is ``size - 2 * overlap``. The last tile along an axis has a shorter
core; its read window is shifted back into the raster where the raster is large
enough, so it reads real pixels instead of padding (its near-side context is then
*more* than ``overlap``). Stitching keeps each tile's core only, so every output
pixel comes from a tile where it had at least ``overlap`` pixels of context: no
seams, no blending, bit-exact.

Nothing here opens a file or imports rasterio: windows are this module's own
:class:`Window`, with rasterio's field names and order, converted at the I/O edge
(:func:`geoseg.io.raster.rio_window`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from affine import Affine

from geoseg.errors import TileError
from geoseg.types import Shape2d, SomeShape, pair_, shape_

__all__ = [
    "Window",
    "Tile",
    "TileGrid",
    "tile_grid",
    "blocks_touched",
    "lru_decodes",
    "cache_blocks",
    "band_order",
    "task_batches",
    "DEFAULT_TILE",
    "DEFAULT_OVERLAP",
]

#: Default tile size (pixels): divisible by 16 and by 32.
DEFAULT_TILE = 512
#: Default overlap (halo) on each side of a tile, in pixels.
DEFAULT_OVERLAP = 32


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: offsets and size, in rasterio's order (``col_off, row_off, width, height``).

    Offsets may be negative and the rectangle may reach past the raster (a tile's read
    window near an edge). A value object of the core: reading and writing convert it to
    a rasterio window at the I/O edge.

    >>> w = Window(10, 20, 64, 32)
    >>> w
    Window(col_off=10, row_off=20, width=64, height=32)
    >>> w.toslices()
    (slice(20, 52, None), slice(10, 74, None))
    """

    col_off: int
    row_off: int
    width: int
    height: int

    def flatten(self) -> tuple[int, int, int, int]:
        """``(col_off, row_off, width, height)``."""
        return (self.col_off, self.row_off, self.width, self.height)

    def toslices(self) -> tuple[slice, slice]:
        """Row and column slices of the window in array coordinates."""
        return (slice(self.row_off, self.row_off + self.height), slice(self.col_off, self.col_off + self.width))


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes
    ----------
    index : tuple[int, int]
        ``(row, col)`` of the tile in the grid.
    read : Window
        The window to read: exactly tile size; may extend past the raster.
    core : Window
        The pixels this tile writes; inside the raster; cores partition the raster.
    transform : Affine
        The affine transform of the read window's top-left pixel.
    """

    index: tuple[int, int]
    read: Window
    core: Window
    transform: Affine

    @property
    def key(self) -> str:
        """A short, stable name for the tile, e.g. ``'r003_c012'`` (used in file names)."""
        return f"r{self.index[0]:03d}_c{self.index[1]:03d}"

    @property
    def core_in_read(self) -> tuple[slice, slice]:
        """Row and column slices of the core inside an array of the read window."""
        r0 = int(self.core.row_off - self.read.row_off)
        c0 = int(self.core.col_off - self.read.col_off)
        return (slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width)))

    def __dask_tokenize__(self) -> Any:
        return (
            "geoseg.Tile",
            self.index,
            tuple(int(v) for v in self.read.flatten()),
            tuple(int(v) for v in self.core.flatten()),
            tuple(self.transform),
        )


def _axis(length: int, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """Return ``(core_start, core_len, read_start)`` for one axis."""
    stride = size - 2 * overlap
    out = []
    for core_start in range(0, length, stride):
        core_len = min(stride, length - core_start)
        # Normally the read window starts `overlap` before the core. The last tile is
        # shifted back so that it ends `overlap` past the raster, but never so far that
        # it starts more than `overlap` before the raster (small rasters: pad both sides).
        read_start = max(-overlap, min(core_start - overlap, length + overlap - size))
        out.append((core_start, core_len, read_start))
    return out


@dataclass(frozen=True, slots=True)
class TileGrid:
    """Tiles over a raster of ``shape`` pixels with georeferencing ``transform``.

    Build one with :func:`tile_grid`, which checks its arguments.
    """

    shape: Shape2d
    transform: Affine
    size: tuple[int, int]
    overlap: tuple[int, int]
    tiles: tuple[Tile, ...] = field(repr=False)
    grid_shape: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def __getitem__(self, i: int) -> Tile:
        return self.tiles[i]

    @property
    def stride(self) -> tuple[int, int]:
        """Core size of a full tile: ``size - 2 * overlap`` on each axis."""
        return (self.size[0] - 2 * self.overlap[0], self.size[1] - 2 * self.overlap[1])

    @property
    def pixels_read(self) -> int:
        """Pixels pushed through a model: tiles x tile area."""
        return len(self.tiles) * self.size[0] * self.size[1]

    @property
    def read_ratio(self) -> float:
        """``pixels_read`` over the raster's pixel count (1.0 would be no overhead)."""
        return self.pixels_read / max(1, self.shape.height * self.shape.width)

    def __dask_tokenize__(self) -> Any:
        return ("geoseg.TileGrid", tuple(self.shape), tuple(self.transform), self.size, self.overlap)


def tile_grid(
    shape: SomeShape,
    transform: Affine | None = None,
    size: int | tuple[int, int] = DEFAULT_TILE,
    overlap: int | tuple[int, int] = DEFAULT_OVERLAP,
    multiple: int = 16,
) -> TileGrid:
    """Cut a raster of ``shape`` into tiles of ``size`` with ``overlap`` pixels of halo.

    Parameters
    ----------
    shape : int or (int, int)
        Raster ``(height, width)`` in pixels; any size, including primes.
    transform : Affine, optional
        The raster's affine transform (identity if omitted); each tile gets its own.
    size : int or (int, int)
        Tile (read window) size; must be divisible by ``multiple``.
    overlap : int or (int, int)
        Context pixels on each side of the core; ``size - 2 * overlap`` must be positive.
    multiple : int
        What the tile size must be divisible by: 16 for a U-Net that pools 4 times,
        32 for encoders with output stride 32.

    Returns
    -------
    TileGrid

    Raises
    ------
    TileError
        For a tile size not divisible by ``multiple``, a negative overlap, or an
        overlap that leaves no core.

    Examples
    --------
    >>> g = tile_grid((1000, 700), size=256, overlap=32)
    >>> len(g), g.grid_shape, g.stride
    (24, (6, 4), (192, 192))
    >>> t = g[0]
    >>> (t.read.row_off, t.read.col_off, t.read.height), (t.core.row_off, t.core.height)
    ((-32, -32, 256), (0, 192))
    >>> tile_grid((100, 100), size=100)
    Traceback (most recent call last):
    ...
    geoseg.errors.TileError: tile size (100, 100) is not divisible by 16; use 96 or 112 (the model halves the image 4 times, so each side must be a multiple of 16)
    """
    shp = shape_(shape)
    tf = Affine.identity() if transform is None else transform
    sy, sx = pair_(size, "size")
    oy, ox = pair_(overlap, "overlap")
    if multiple < 1:
        raise TileError(f"multiple must be a positive int, got {multiple}")
    for s in (sy, sx):
        if s <= 0 or s % multiple:
            lo = (max(s, 0) // multiple) * multiple
            hint = f"use {lo} or {lo + multiple}" if lo > 0 else f"use {multiple} or more"
            raise TileError(
                f"tile size {(sy, sx)} is not divisible by {multiple}; {hint} "
                f"(the model halves the image {multiple.bit_length() - 1} times, so each side must be a multiple of {multiple})"
            )
    if oy < 0 or ox < 0:
        raise TileError(f"overlap {(oy, ox)} is negative; use 0 or more pixels")
    if sy - 2 * oy <= 0 or sx - 2 * ox <= 0:
        raise TileError(
            f"overlap {(oy, ox)} leaves no core in a tile of {(sy, sx)}: the core is size - 2 x overlap; "
            f"use an overlap below {(sy // 2, sx // 2)} (e.g. {sy // 8})"
        )
    if shp.height == 0 or shp.width == 0:
        raise TileError(f"raster shape {tuple(shp)} is empty; nothing to tile")

    rows = _axis(shp.height, sy, oy)
    cols = _axis(shp.width, sx, ox)
    tiles = []
    for i, (cr, ch, rr) in enumerate(rows):
        for j, (cc, cw, rc) in enumerate(cols):
            tiles.append(
                Tile(
                    index=(i, j),
                    read=Window(rc, rr, sx, sy),
                    core=Window(cc, cr, cw, ch),
                    transform=tf @ Affine.translation(rc, rr),
                )
            )
    return TileGrid(shp, tf, (sy, sx), (oy, ox), tuple(tiles), (len(rows), len(cols)))


def blocks_touched(tiles: Sequence[Tile], shape: SomeShape, block: tuple[int, int]) -> int:
    """How many of a raster's ``block`` (height, width) blocks the read windows of ``tiles``
    touch together (the parts inside a raster of ``shape``): what reading them decodes when
    each block is decoded once.

    >>> g = tile_grid((1024, 1024), size=512, overlap=32)
    >>> blocks_touched(g.tiles[:1], g.shape, (512, 512)), blocks_touched(g.tiles, g.shape, (512, 512))
    (1, 4)
    """
    shp = shape_(shape)
    bh, bw = (max(1, int(b)) for b in block)
    seen = {key for t in tiles for key in _window_blocks(t, shp, bh, bw)}
    return len(seen)


def _window_blocks(t: Tile, shape: Shape2d, bh: int, bw: int) -> list[tuple[int, int]]:
    """The blocks (row, col) under a tile's read window, inside the raster, in row-major order."""
    r0, c0 = max(int(t.read.row_off), 0), max(int(t.read.col_off), 0)
    r1 = min(int(t.read.row_off + t.read.height), shape.height)
    c1 = min(int(t.read.col_off + t.read.width), shape.width)
    if r1 <= r0 or c1 <= c0:
        return []
    return [(br, bc) for br in range(r0 // bh, (r1 - 1) // bh + 1) for bc in range(c0 // bw, (c1 - 1) // bw + 1)]


def lru_decodes(tiles: Sequence[Tile], shape: SomeShape, block: tuple[int, int], capacity: int) -> int:
    """Block decodes when ``tiles`` are read in order through a least-recently-used cache of
    ``capacity`` blocks (GDAL's block cache).

    >>> g = tile_grid((1024, 1024), size=512, overlap=32)
    >>> lru_decodes(g.tiles, g.shape, (512, 512), 1), lru_decodes(g.tiles, g.shape, (512, 512), 4)
    (12, 4)
    """
    from collections import OrderedDict

    shp = shape_(shape)
    bh, bw = (max(1, int(b)) for b in block)
    cache: OrderedDict[tuple[int, int], None] = OrderedDict()
    decodes = 0
    for t in tiles:
        for key in _window_blocks(t, shp, bh, bw):
            if key in cache:
                cache.move_to_end(key)
            else:
                decodes += 1
                cache[key] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
    return decodes


def cache_blocks(tiles: Sequence[Tile], shape: SomeShape, block: tuple[int, int]) -> int:
    """The smallest least-recently-used cache, in blocks, through which reading ``tiles`` in
    order decodes every block they touch once (0 for no tiles).

    Row-major strips of 512 px tiles over 512 px blocks need 4 (a window's 2 x 2); bands of
    three tile rows walked column by column need about two columns of the band's blocks (5-7).
    The answer depends on the tiles' order and alignment, not on the scene's size.

    >>> g = tile_grid((5376, 5376), size=512, overlap=32)
    >>> cache_blocks(g.tiles[12:24], g.shape, (512, 512)), cache_blocks(band_order(g, 3)[36:48], g.shape, (512, 512))
    (4, 7)
    """
    need = blocks_touched(tiles, shape, block)
    lo, hi = 0, max(need, 1)
    while lo < hi:  # decodes only fall as the cache grows
        mid = (lo + hi) // 2
        if lru_decodes(tiles, shape, block, mid) <= need:
            hi = mid
        else:
            lo = mid + 1
    return lo if need else 0


def band_order(grid: TileGrid, rows: int) -> list[Tile]:
    """The grid's tiles in bands of ``rows`` tile rows, each band walked column by column
    (top to bottom within a column). ``rows=1`` is the grid's own row-major order.

    >>> [t.key for t in band_order(tile_grid((600, 600), size=256, overlap=32), 2)][:4]
    ['r000_c000', 'r001_c000', 'r000_c001', 'r001_c001']
    """
    if rows < 1:
        raise TileError(f"rows is {rows}; expected at least 1 tile row per band")
    nr, nc = grid.grid_shape
    by_index = {t.index: t for t in grid.tiles}
    return [by_index[(r, c)] for b in range(0, nr, rows) for c in range(nc) for r in range(b, min(b + rows, nr))]


def task_batches(grid: TileGrid, n: int, block: tuple[int, int]) -> list[list[Tile]]:
    """Cut the grid's tiles into tasks of ``n`` tiles (the last may hold fewer) that read the
    fewest of the file's ``block``-sized blocks.

    A task reads its tiles through a block cache, so a block shared by two tiles of one task
    is decoded once, but a block shared by two tasks is decoded by each. Tiles are taken in
    :func:`band_order`; every band height from 1 (row-major strips, a tile row's blocks shared
    with the next task's) up to ``n`` tile rows is tried, and the one whose tasks touch the
    fewest blocks in total wins (the lowest on ties: the smallest cache). Each task's tiles stay
    in walking order, so consecutive tiles share blocks. Task sizes do not depend on the
    order, so :func:`geoseg.workflow.stages.task_tiles`' balance holds.

    >>> g = tile_grid((5376, 5376), size=512, overlap=32)  # 12 x 12 tiles over 11 x 11 blocks
    >>> row_major = [list(g.tiles[i : i + 12]) for i in range(0, len(g), 12)]
    >>> sum(blocks_touched(t, g.shape, (512, 512)) for t in row_major)
    253
    >>> sum(blocks_touched(t, g.shape, (512, 512)) for t in task_batches(g, 12, (512, 512)))
    196
    """
    if n < 1:
        raise TileError(f"n is {n}; expected at least 1 tile per task")
    best: tuple[int, list[list[Tile]]] | None = None
    for rows in range(1, min(n, grid.grid_shape[0]) + 1):
        order = band_order(grid, rows)
        tasks = [order[i : i + n] for i in range(0, len(order), n)]
        cost = sum(blocks_touched(t, grid.shape, block) for t in tasks)
        if best is None or cost < best[0]:
            best = (cost, tasks)
    assert best is not None
    return best[1]
