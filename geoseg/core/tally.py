"""Pixels per zone and class, each pixel counted whole in the zone that holds its centre.

The centre rule of district areas: a zone raster (which district holds each pixel's
centre; the caller burns it, e.g. with GDAL's ``rasterize``, later shapes winning where
zones overlap) and a class raster in, one count per (zone, class) out. The synthetic
region counts its truth (``truth.csv``) with it and :func:`geoseg.ops.areas.district_areas_raster`
its ``method="centre"`` tables (and the first pass of ``method="exact"``, which then corrects
the pixels a boundary crosses), so the two count alike by construction.

Each pair is packed into one integer key, ``zone * n_values + value``, and counted with a
single ``np.bincount``: one pass over the pixels, whatever the number of zones and classes.
Where zones and values are both uint8 and there are 256 values, the key is
``(zone << 8) | value`` in 16 bits, half the memory traffic of a 32-bit key. Pure numpy; no files.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centre_counts"]


def _keys(zones: np.ndarray | None, values: np.ndarray, n_values: int, n_zones: int) -> np.ndarray:
    """``zone * n_values + value`` for each pixel, in the narrowest type that holds every key."""
    if zones is None:
        return values
    if n_values == 256 and zones.dtype == np.uint8 and values.dtype == np.uint8:
        return (zones.astype(np.uint16) << 8) | values
    dtype = np.int32 if n_zones * n_values <= np.iinfo(np.int32).max else np.int64
    return zones.astype(dtype) * n_values + values


def centre_counts(
    zones: np.ndarray | None,
    values: np.ndarray,
    n_values: int,
    n_zones: int,
    *,
    valid: np.ndarray | None = None,
    row_weights: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """How many pixels of each value lie in each zone (the zone holding each pixel's centre).

    Parameters
    ----------
    zones : ndarray of int, shape (h, w), or None
        The zone of each pixel, ``0 .. n_zones - 1`` (the caller chooses what zone 0 means,
        e.g. "in no district"). None puts every pixel in zone 0.
    values : ndarray of int, shape (h, w)
        The value (class id, or a bucket such as nodata) of each pixel, ``0 .. n_values - 1``.
    n_values, n_zones : int
        How many values and zones there are; they size the result.
    valid : ndarray of bool, shape (h, w), optional
        Pixels to count; the others are left out (default: all).
    row_weights : ndarray of float, shape (h,), optional
        What a pixel of each row counts for, such as its ground area in a geographic CRS
        (default: 1 each).
    weights : ndarray of float, shape (h, w), optional
        What each pixel counts for, such as its ground area
        (:meth:`geoseg.core.geodesy.PixelAreas.block`); not with ``row_weights``.

    Returns
    -------
    ndarray, shape (n_zones * n_values,)
        The count of zone ``z`` and value ``v`` at ``z * n_values + v``: int64 pixel counts,
        or float64 sums of ``row_weights`` or ``weights``.

    Raises
    ------
    ValueError
        ``zones`` and ``values`` (or ``valid`` or ``weights``) differ in shape, ``row_weights`` is not one
        per row, or both kinds of weights are given.

    Examples
    --------
    >>> zones = np.array([[0, 1], [1, 1]], np.uint8)
    >>> values = np.array([[2, 0], [2, 2]], np.uint8)
    >>> centre_counts(zones, values, n_values=3, n_zones=2).reshape(2, 3)
    array([[0, 0, 1],
           [1, 0, 2]])
    >>> centre_counts(zones, values, 3, 2, valid=values != 0, row_weights=np.array([10.0, 20.0])).reshape(2, 3)
    array([[ 0.,  0., 10.],
           [ 0.,  0., 40.]])
    """
    if zones is not None and zones.shape != values.shape:
        raise ValueError(f"zones have shape {zones.shape} and values {values.shape}; expected one zone per pixel")
    if valid is not None and valid.shape != values.shape:
        raise ValueError(f"valid has shape {valid.shape} and values {values.shape}; expected one flag per pixel")
    if row_weights is not None and (row_weights.ndim != 1 or len(row_weights) != values.shape[0]):
        raise ValueError(f"row_weights has shape {row_weights.shape}; expected one weight per row ({values.shape[0]})")
    if weights is not None and (weights.shape != values.shape or row_weights is not None):
        raise ValueError(f"weights have shape {weights.shape} and values {values.shape}; expected one weight per "
                         f"pixel, and no row_weights with them")
    n = n_zones * n_values
    if row_weights is not None:
        weights = np.repeat(row_weights, values.shape[1])
    elif weights is not None:
        weights = weights.ravel()
    if valid is not None:  # leave the others out before packing: fewer keys to make
        zones = None if zones is None else zones[valid]
        values = values[valid]
        weights = None if weights is None else weights[valid.ravel()]
    key = _keys(zones, values, n_values, n_zones).ravel()
    if weights is None:
        return np.bincount(key, minlength=n)
    # bincount gives int64 zeros for no pixels at all, weights or not
    return np.bincount(key, weights=weights, minlength=n).astype(np.float64, copy=False)
