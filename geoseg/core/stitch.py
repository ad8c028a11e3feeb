"""Stitch per-tile outputs back into one raster: pure array work, no files.

Each tile's output covers its read window; stitching keeps only the tile's **core**
(see :mod:`geoseg.core.grid`), whose pixels had at least ``overlap`` pixels of context. The
cores partition the raster, so the stitched result is exact and seamless: no pixel is
written twice, none is left out, and no blending is needed. Pixels the input had no data
for are set to the mask nodata value (255) with :func:`apply_nodata`.

Writing to a file window by window (bounded memory) is done by
:meth:`geoseg.io.raster.RasterWriter.write_tile`, which calls :func:`trim`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from geoseg.classes import NODATA
from geoseg.core.grid import Tile, TileGrid

__all__ = [
    "trim",
    "apply_nodata",
    "stitch",
]


def trim(tile: Tile, array: np.ndarray) -> np.ndarray:
    """Return the core of a tile output ``array`` of shape ``(..., size_y, size_x)``.

    Examples
    --------
    >>> from geoseg.core.grid import tile_grid
    >>> g = tile_grid((40, 40), size=32, overlap=8)
    >>> out = np.zeros((32, 32))
    >>> trim(g[0], out).shape, trim(g[-1], out).shape
    ((16, 16), (8, 8))
    """
    h, w = int(tile.read.height), int(tile.read.width)
    if array.shape[-2:] != (h, w):
        raise ValueError(
            f"tile {tile.key}: output shape {array.shape[-2:]} does not match the read window {(h, w)}; "
            f"a model must return one value per input pixel (upsample reduced-resolution outputs first)"
        )
    rows, cols = tile.core_in_read
    return array[..., rows, cols]


def apply_nodata(array: np.ndarray, valid: np.ndarray, nodata: int | float = NODATA) -> np.ndarray:
    """Return a copy of ``array`` with ``nodata`` wherever ``valid`` is False.

    Examples
    --------
    >>> apply_nodata(np.array([1, 2, 3], "uint8"), np.array([True, False, True])).tolist()
    [1, 255, 3]
    """
    out = np.array(array, copy=True)
    out[..., ~valid] = nodata
    return out


def stitch(
    grid: TileGrid,
    outputs: Iterable[tuple[Tile, np.ndarray]],
    *,
    fill: int | float = NODATA,
    dtype: np.dtype | str | None = None,
) -> np.ndarray:
    """Assemble tile outputs into one in-memory array of the grid's shape.

    For scenes that fit in memory (tests, small regions). Large scenes are written
    window by window with :meth:`geoseg.io.raster.RasterWriter.write_tile` instead.

    Parameters
    ----------
    grid : TileGrid
        The grid the tiles come from.
    outputs : iterable of (Tile, array)
        Each tile with its output over the read window, ``(h, w)`` or ``(bands, h, w)``.
    fill : number
        Value of pixels no tile wrote (there are none when every tile is given).
    dtype : dtype, optional
        Output dtype (default: that of the first output).

    Raises
    ------
    ValueError
        If a tile is given twice or outputs disagree in band count.
    """
    out: np.ndarray | None = None
    seen: set[tuple[int, int]] = set()
    for tile, arr in outputs:
        if tile.index in seen:
            raise ValueError(f"tile {tile.key} given twice; each tile's core must be written once")
        seen.add(tile.index)
        core = trim(tile, arr)
        if out is None:
            out = np.full((*arr.shape[:-2], *grid.shape), fill, dtype=dtype or arr.dtype)
        elif core.shape[:-2] != out.shape[:-2]:
            raise ValueError(f"tile {tile.key} has {core.shape[:-2]} bands, others have {out.shape[:-2]}")
        r0, c0 = int(tile.core.row_off), int(tile.core.col_off)
        out[..., r0 : r0 + core.shape[-2], c0 : c0 + core.shape[-1]] = core
    if out is None:
        raise ValueError("no tile outputs to stitch")
    return out
