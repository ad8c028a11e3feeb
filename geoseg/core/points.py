"""Which pixels GPS points label, and how points are scored: pure numpy, no files.

A point labels **the pixel under it and every pixel whose centre lies within** ``radius``
(in the CRS units of the grid) **of it** (:func:`point_pixels`). With ``radius=0`` that is
the one pixel under the point; a point on a pixel edge belongs to the pixel to its right /
below (the floor of its fractional pixel coordinates, as GDAL's pixel lookup does).

Where the pixels of points of **different** classes overlap, those pixels are dropped (no
label) and counted (:func:`resolve_conflicts`); pixels shared by points of the same class
are kept. A point whose every pixel is dropped is not used.

A point is scored as one point (:func:`point_votes`): its predicted class is the majority of
the predictions over its labelled, observed pixels; a tie goes to the prediction of the
pixel under the point when it is among the tied classes, else to the smallest tied id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

__all__ = ["PointPixels", "point_pixels", "resolve_conflicts", "block_counts", "point_votes"]

#: Most candidate pixels examined at once (bounds memory for many points with a large radius).
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class PointPixels:
    """The pixels a set of points covers on one grid.

    Attributes
    ----------
    inside : ndarray of bool, (n,)
        True for points that lie in the grid (their own pixel is a pixel of it).
    row, col : ndarray of int64, (n,)
        The pixel under each point (meaningful where ``inside``).
    point, prow, pcol : ndarray of int64, (m,)
        One entry per (point, pixel) pair of inside points: the point's index and the pixel,
        grouped by point in point order; pixels outside the grid are left out.
    centre : ndarray of bool, (m,)
        True where the pixel is the one under its point.
    """

    inside: np.ndarray
    row: np.ndarray
    col: np.ndarray
    point: np.ndarray
    prow: np.ndarray
    pcol: np.ndarray
    centre: np.ndarray


def point_pixels(x: np.ndarray, y: np.ndarray, transform: Affine, shape: tuple[int, int],
                 radius: float = 0.0) -> PointPixels:
    """The pixels of a ``shape`` grid with ``transform`` that points ``(x, y)`` label.

    Parameters
    ----------
    x, y : array_like of float
        Point coordinates in the grid's CRS.
    transform : Affine
        Pixel to CRS coordinates (any affine transform, rotated ones included).
    shape : (int, int)
        Grid ``(height, width)``.
    radius : float
        In CRS units; a pixel is labelled when its centre lies within ``radius`` of the
        point (inclusive), and the pixel under the point always is.

    Returns
    -------
    PointPixels

    Raises
    ------
    ValueError
        For a negative or non-finite radius, or ``x`` and ``y`` of different lengths.

    Examples
    --------
    >>> tf = Affine(10, 0, 0, 0, -10, 100)
    >>> p = point_pixels([15.0, 500.0], [85.0, 50.0], tf, (10, 10))
    >>> p.inside.tolist(), p.prow.tolist(), p.pcol.tolist()
    ([True, False], [1], [1])
    >>> q = point_pixels([15.0], [85.0], tf, (10, 10), radius=10)
    >>> sorted(zip(q.prow.tolist(), q.pcol.tolist()))
    [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]
    """
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise ValueError(f"x and y differ in length ({xs.size} and {ys.size})")
    r = float(radius)
    if not (math.isfinite(r) and r >= 0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    h, w = int(shape[0]), int(shape[1])
    inv = ~transform
    fc, fr = inv @ (xs, ys)
    fc, fr = np.asarray(fc, np.float64), np.asarray(fr, np.float64)
    finite = np.isfinite(fc) & np.isfinite(fr)
    col = np.where(finite, np.floor(np.where(finite, fc, 0)), -1).astype(np.int64)
    row = np.where(finite, np.floor(np.where(finite, fr, 0)), -1).astype(np.int64)
    inside = finite & (row >= 0) & (row < h) & (col >= 0) & (col < w)
    idx = np.flatnonzero(inside)
    if r == 0 or idx.size == 0:
        one = np.ones(idx.size, bool)
        return PointPixels(inside, row, col, idx.astype(np.int64), row[idx], col[idx], one)
    # half-extent of the circle in pixel units along columns and rows (bounding box of its image)
    kc = int(math.ceil(r * math.hypot(inv.a, inv.b))) + 1
    kr = int(math.ceil(r * math.hypot(inv.d, inv.e))) + 1
    dr, dc = np.meshgrid(np.arange(-kr, kr + 1), np.arange(-kc, kc + 1), indexing="ij")
    dr, dc = dr.ravel(), dc.ravel()
    cells = dr.size
    step = max(1, _CHUNK_CELLS // cells)
    parts_p, parts_r, parts_c, parts_k = [], [], [], []
    r2 = r * r
    for s in range(0, idx.size, step):
        sel = idx[s:s + step]
        rr = row[sel, None] + dr[None, :]
        cc = col[sel, None] + dc[None, :]
        cx, cy = transform @ (cc + 0.5, rr + 0.5)
        d2 = (np.asarray(cx) - xs[sel, None]) ** 2 + (np.asarray(cy) - ys[sel, None]) ** 2
        own = (dr == 0) & (dc == 0)
        keep = ((d2 <= r2) | own[None, :]) & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        pi, ci = np.nonzero(keep)
        parts_p.append(sel[pi])
        parts_r.append(rr[pi, ci])
        parts_c.append(cc[pi, ci])
        parts_k.append(own[ci])
    return PointPixels(inside, row, col, np.concatenate(parts_p).astype(np.int64),
                       np.concatenate(parts_r).astype(np.int64), np.concatenate(parts_c).astype(np.int64),
                       np.concatenate(parts_k))


def resolve_conflicts(lin: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """True for (point, pixel) entries whose pixel is claimed by points of another class too.

    Parameters
    ----------
    lin : ndarray of int
        Linear pixel index of each entry (``row * width + col``).
    cls : ndarray of int
        Class of the entry's point.

    Examples
    --------
    >>> resolve_conflicts(np.array([5, 5, 7, 7, 9]), np.array([1, 2, 3, 3, 1])).tolist()
    [True, True, False, False, False]
    """
    lin = np.asarray(lin)
    cls = np.asarray(cls, dtype=np.int64)
    if lin.size == 0:
        return np.zeros(0, bool)
    u, inv = np.unique(lin, return_inverse=True)
    lo = np.full(u.size, np.iinfo(np.int64).max)
    hi = np.full(u.size, np.iinfo(np.int64).min)
    np.minimum.at(lo, inv, cls)
    np.maximum.at(hi, inv, cls)
    return np.asarray((lo != hi)[inv], bool)


def block_counts(row: np.ndarray, col: np.ndarray, cls: np.ndarray, weight: np.ndarray,
                 shape: tuple[int, int], block: int, k: int) -> np.ndarray:
    """Per block and class, the summed ``weight`` of points, each in the block of its own pixel.

    ``(block rows, block cols, k)`` int64, as :func:`geoseg.io.labels.label_counts` returns
    for rasters: a point's pixels count in the block holding the point, even where its
    radius reaches into the next one, so that a spatial split keeps each point whole.

    Examples
    --------
    >>> block_counts(np.array([0, 70]), np.array([0, 10]), np.array([1, 0]), np.array([5, 1]),
    ...              (100, 100), 64, 2).tolist()
    [[[0, 5], [0, 0]], [[1, 0], [0, 0]]]
    """
    h, w = int(shape[0]), int(shape[1])
    nb_r, nb_c = -(-h // block), -(-w // block)
    flat = (np.asarray(row) // block * nb_c + np.asarray(col) // block) * k + np.asarray(cls)
    out = np.bincount(flat.astype(np.int64), weights=np.asarray(weight, np.float64), minlength=nb_r * nb_c * k)
    return np.rint(out).astype(np.int64).reshape(nb_r, nb_c, k)


def point_votes(point: np.ndarray, pred: np.ndarray, valid: np.ndarray, centre: np.ndarray,
                n: int, k: int) -> np.ndarray:
    """Each point's predicted class from the predictions over its pixels (see the module notes).

    Parameters
    ----------
    point : ndarray of int, (m,)
        The point (``0..n-1``) each entry belongs to.
    pred : ndarray of int, (m,)
        Predicted class ``0..k-1`` at the entry's pixel.
    valid : ndarray of bool, (m,)
        Entries that count (pixel observed and predicted).
    centre : ndarray of bool, (m,)
        The entry is the pixel under its point.
    n, k : int
        Number of points and of classes.

    Returns
    -------
    ndarray of int64, (n,)
        The predicted class, or -1 for a point without a valid pixel.

    Examples
    --------
    >>> point_votes(np.array([0, 0, 0, 1, 1, 2]), np.array([2, 2, 1, 0, 1, 1]),
    ...             np.array([True, True, True, True, True, False]),
    ...             np.array([False, False, True, False, True, True]), 3, 3).tolist()
    [2, 1, -1]
    """
    point = np.asarray(point, np.int64)
    pred = np.asarray(pred, np.int64)
    v = np.asarray(valid, bool)
    votes = np.bincount(point[v] * k + pred[v], minlength=n * k).reshape(n, k)
    best = votes.max(axis=1)
    tied = (votes == best[:, None]) & (best[:, None] > 0)
    out = np.where(best > 0, np.argmax(tied, axis=1), -1).astype(np.int64)  # smallest tied id
    c = v & np.asarray(centre, bool)
    cp, cc = point[c], pred[c]
    wins = tied[cp, cc]
    out[cp[wins]] = cc[wins]
    return out
