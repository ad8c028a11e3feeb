"""One overview level from the level below it: each output pixel from a 2 x 2 block of input pixels.

Pure array code (no I/O): :mod:`geoseg.io.raster` builds a COG's overviews with it window by
window, so that memory stays one tile whatever the raster's size (GDAL's own multi-band overview
builder holds strips as wide as the raster). Level ``k`` is made from level ``k - 1``, so an
``average`` overview several levels up is an average of averages: exactly the average of the
valid full-resolution pixels where every pixel is valid, a display approximation near nodata.
"""

from __future__ import annotations

import numpy as np

#: The ways an overview pixel is made from its 2 x 2 block.
METHODS = ("average", "mode", "nearest")


def halved_shape(height: int, width: int) -> tuple[int, int]:
    """The shape of the next overview level (odd sizes round up, as GDAL's do)."""
    return (height + 1) // 2, (width + 1) // 2


def overview_levels(height: int, width: int, blocksize: int, count: int | None = None) -> list[int]:
    """Decimation factors (2, 4, 8, ...) down to the first level that fits in one ``blocksize`` tile,
    or exactly ``count`` levels.

    Examples
    --------
    >>> overview_levels(1200, 1200, 512)
    [2, 4]
    >>> overview_levels(512, 300, 512)
    []
    >>> overview_levels(4096, 10, 512, count=1)
    [2]
    """
    factors: list[int] = []
    h, w = height, width
    while (count is None and max(h, w) > blocksize) or (count is not None and len(factors) < count):
        if h == 1 and w == 1:
            break
        h, w = halved_shape(h, w)
        factors.append(2 ** (len(factors) + 1))
    return factors


def _blocks(arr: np.ndarray, fill: float) -> np.ndarray:
    """The 4 pixels of each 2 x 2 block, as (4, bands, h/2, w/2); odd edges padded with ``fill``."""
    b, h, w = arr.shape
    oh, ow = halved_shape(h, w)
    if (h, w) != (2 * oh, 2 * ow):
        padded = np.full((b, 2 * oh, 2 * ow), fill, dtype=arr.dtype)
        padded[:, :h, :w] = arr
        arr = padded
    return np.stack([arr[:, 0::2, 0::2], arr[:, 0::2, 1::2], arr[:, 1::2, 0::2], arr[:, 1::2, 1::2]])


def halve(arr: np.ndarray, nodata: float | None = None, method: str = "average") -> np.ndarray:
    """The next overview level of ``arr`` ((bands,) height, width), same dtype.

    ``average``: the mean of the block's valid pixels (not ``nodata``, not NaN), rounded to
    the nearest integer for integer types; ``mode``: the most frequent valid value, the smallest
    on a tie (class masks); ``nearest``: the block's top-left pixel. A block with no valid pixel
    is ``nodata``. Pixels past an odd edge do not count.

    Examples
    --------
    >>> halve(np.array([[1, 2], [3, 0]], np.uint16), nodata=0).tolist()
    [[2]]
    >>> halve(np.array([[5, 5, 7], [2, 9, 7]], np.uint8), nodata=9, method="mode").tolist()
    [[5, 7]]
    """
    if method not in METHODS:
        raise ValueError(f"overview method {method!r}: expected one of {', '.join(METHODS)}")
    two_d = arr.ndim == 2
    a = arr[None] if two_d else arr
    if a.ndim != 3:
        raise ValueError(f"expected a (bands,) height, width array, got shape {arr.shape}")
    is_float = np.issubdtype(a.dtype, np.floating)
    nan_nodata = nodata is not None and is_float and np.isnan(nodata)
    # padding: a value that counts as invalid (nodata, or NaN for floats), else marked by a mask
    _, h, w = a.shape
    inside = _blocks(np.ones((1, h, w), bool), False)  # (4, 1, oh, ow): within the raster
    blocks = _blocks(a, 0)
    if nodata is None:
        valid = np.broadcast_to(inside, blocks.shape)
        if is_float:
            valid = valid & ~np.isnan(blocks)
    elif nan_nodata:
        valid = inside & ~np.isnan(blocks)
    else:
        valid = inside & (blocks != a.dtype.type(nodata))
        if is_float:
            valid &= ~np.isnan(blocks)
    fill = a.dtype.type(nodata) if nodata is not None else (a.dtype.type(np.nan) if is_float else a.dtype.type(0))
    any_valid = valid.any(axis=0)
    if method == "nearest":
        out = np.where(valid[0], blocks[0], fill)
        return out[0] if two_d else out
    if method == "average":
        n = valid.sum(axis=0)
        total = np.where(valid, blocks.astype(np.float64), 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / np.maximum(n, 1)
        if not is_float:
            info = np.iinfo(a.dtype)
            mean = np.clip(np.floor(mean + 0.5), info.min, info.max)
        out = np.where(any_valid, mean, fill).astype(a.dtype)
        return out[0] if two_d else out
    # mode: for each of the 4 candidates, how many valid pixels of the block equal it
    counts = np.zeros(blocks.shape, np.int8)
    for i in range(4):
        for j in range(4):
            counts[i] += (valid[j] & (blocks[j] == blocks[i])).astype(np.int8)
    counts = np.where(valid, counts, -1)
    best = counts.max(axis=0)
    # among the candidates with the best count, the smallest value
    big = np.array(np.inf if is_float else np.iinfo(a.dtype).max, dtype=np.float64)
    cand = np.where(counts == best, blocks.astype(np.float64), big)
    out = np.where(any_valid, cand.min(axis=0), np.float64(fill))
    out = out.astype(a.dtype)
    return out[0] if two_d else out
