"""One field per field: touching fields of the same crop separated on a boundary map. Pure arrays.

A class mask alone cannot tell two neighbouring wheat fields apart: they are one 4-connected
region of one class. A model with a boundary output (``train --fields``) also gives, per pixel,
the probability that the pixel lies on a field's edge. :func:`separate_fields` turns the two
into field labels:

1. **Cut**: a field pixel (valid, of a class that makes fields) is *cut* when its boundary
   value is at least ``threshold``, or when a 4-neighbour is a field pixel of another class
   (a change of crop is an edge too).
2. **Seeds**: the uncut pixels, shrunk by ``erode`` pixels (4-neighbour erosion: a gap of an
   edge line narrower than twice that no longer joins two fields), then their 4-connected
   components (each holds one class, since uncut neighbours share it) of at least
   ``seed_pixels`` pixels. Smaller ones (noise inside a boundary line, a speck of another
   crop) seed nothing.
3. **Growth**: for ``grow`` steps, each field pixel that is not yet in a field joins one of its
   4-neighbours that joined in an earlier step: preferably one of its own class, then the
   one with the lowest boundary value, then the first of up, left, right, down. A two-pixel
   boundary line between two fields is thus split down the middle, each side joining the
   field it belongs to, and a speck of another crop inside a field joins that field.
4. **The rest**: field pixels no seed reached within ``grow`` steps form fields of their own,
   4-connected components of one class, as without a boundary map.

A field may thus hold a few pixels of another class: its crop is the majority of its pixels
(the caller counts them), and its class shares say how pure it is.

Block-wise equals whole-raster
------------------------------
Every decision above about a pixel depends only on pixels within a bounded distance: whether
a seed is large needs ``seed_pixels`` pixels around it, erosion ``erode``, growth ``grow``
more. A component
that reaches the open edge of a read window is taken as large. So with a halo of
:func:`separation_halo` pixels, labels inside the core and the links between a core pixel
and its outer neighbours (:func:`links`) are those the whole raster gives; a property test
checks that blocks merged along those links give the whole raster's fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.core.sieve import label_runs
from geoseg.errors import PolygonizeError

__all__ = [
    "DEFAULT_BOUNDARY_THRESHOLD",
    "DEFAULT_ERODE",
    "DEFAULT_GROW",
    "DEFAULT_SEED_PIXELS",
    "Separation",
    "boundary_value",
    "check_separation",
    "class_counts",
    "links",
    "majority",
    "separate_fields",
    "separation_halo",
]

#: Boundary value (probability x 254 + 1, as models store it) from which a pixel is cut:
#: probability 0.05. Low on purpose: a field is seeded only where the model is sure there is no
#: edge, so that a faint stretch of an edge does not join two fields' seeds; growth then gives
#: the cut pixels back (benchmarks/README.md, "Fields, not pixels", measured the choice).
DEFAULT_BOUNDARY_THRESHOLD = 14
#: Smallest seed, in pixels (a 2 x 2 interior: a 0.2 ha field at 10 m keeps one).
DEFAULT_SEED_PIXELS = 4
#: Growth steps: cut bands up to twice as wide are split between the fields on either side.
DEFAULT_GROW = 12
#: Erosion of the uncut regions before they seed fields: a gap of one or two pixels in an edge
#: line no longer joins the seeds of the fields on either side.
DEFAULT_ERODE = 1

# the 4-neighbours in the tie-break order: up, left, right, down
_OFFSETS = ((-1, 0), (0, -1), (0, 1), (1, 0))


@dataclass(frozen=True)
class Separation:
    """How fields are separated: see the module notes."""

    threshold: int = DEFAULT_BOUNDARY_THRESHOLD
    seed_pixels: int = DEFAULT_SEED_PIXELS
    grow: int = DEFAULT_GROW
    erode: int = DEFAULT_ERODE


def boundary_value(probability: float) -> int:
    """The stored boundary value (probability x 254 + 1, as models write it) of a probability.

    >>> boundary_value(0.5), boundary_value(1.0)
    (128, 255)
    """
    return int(np.clip(round(float(probability) * 254 + 1), 1, 255))


def check_separation(sep: Separation) -> Separation:
    """``sep`` when its values are usable, else a :class:`PolygonizeError` naming the bad one.

    >>> check_separation(Separation(threshold=0))
    Traceback (most recent call last):
    ...
    geoseg.errors.PolygonizeError: boundary threshold 0: expected a whole number from 1 to 255 (probability x 255; 128 is 0.5)
    """
    for name, value, lo, hi, hint in (
        ("boundary threshold", sep.threshold, 1, 255, "(probability x 255; 128 is 0.5)"),
        ("seed_pixels", sep.seed_pixels, 1, 1_000_000, "(the smallest field interior that starts a field)"),
        ("grow", sep.grow, 0, 64, "(steps a field grows into its boundary)"),
        ("erode", sep.erode, 0, 16, "(pixels the uncut regions shrink by before they seed fields)"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise PolygonizeError(f"{name} {value!r}: expected a whole number from {lo} to {hi} {hint}")
    return sep


def separation_halo(sep: Separation) -> int:
    """Pixels a block's read window must reach beyond its core (on top of the sieve's halo).

    >>> separation_halo(Separation())
    19
    """
    return int(sep.seed_pixels) + int(sep.grow) + int(sep.erode) + 2


def _shifted(a: np.ndarray, dr: int, dc: int, fill: int | bool) -> np.ndarray:
    """``out[r, c] = a[r + dr, c + dc]`` (``fill`` outside)."""
    out = np.full(a.shape, fill, a.dtype)
    h, w = a.shape
    out[max(0, -dr):h - max(0, dr), max(0, -dc):w - max(0, dc)] = a[max(0, dr):h - max(0, -dr) or h,
                                                                    max(0, dc):w - max(0, -dc) or w]
    return out


def _class_edges(cls: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Field pixels with a 4-neighbour that is a field pixel of another class."""
    out = np.zeros(cls.shape, bool)
    v = field[:-1] & field[1:] & (cls[:-1] != cls[1:])
    out[:-1] |= v
    out[1:] |= v
    h = field[:, :-1] & field[:, 1:] & (cls[:, :-1] != cls[:, 1:])
    out[:, :-1] |= h
    out[:, 1:] |= h
    return out


def separate_fields(
    cls: np.ndarray,
    field: np.ndarray,
    boundary: np.ndarray,
    sep: Separation = Separation(),
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> np.ndarray:
    """Field labels (h, w) int64, 1.. per field, 0 outside fields (see the module notes).

    Parameters
    ----------
    cls : ndarray (h, w) int
        Class per pixel (already sieved).
    field : ndarray (h, w) bool
        Pixels that belong to fields: valid, of a class that makes fields.
    boundary : ndarray (h, w) uint8
        Boundary probability x 255 (0: unknown, taken as no boundary).
    sep : Separation
        Threshold, smallest seed, growth steps.
    open_edges : (top, bottom, left, right)
        Sides of the array that are cut out of a larger raster: a seed touching one is large.

    Examples
    --------
    Two wheat fields side by side, a boundary line between them (columns 2 and 3):

    >>> cls = np.ones((3, 6), np.uint8)
    >>> b = np.zeros((3, 6), np.uint8); b[:, 2:4] = 255
    >>> separate_fields(cls, np.ones((3, 6), bool), b, Separation(seed_pixels=2)).tolist()
    [[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2]]
    """
    if cls.shape != field.shape or cls.shape != boundary.shape:
        raise PolygonizeError(f"class {cls.shape}, field {field.shape} and boundary {boundary.shape} arrays differ "
                              f"in shape; expected one grid")
    h, w = cls.shape
    labels = np.zeros((h, w), np.int64)
    if h == 0 or w == 0 or not field.any():
        return labels
    cut = field & ((boundary >= sep.threshold) | _class_edges(cls, field))
    interior = field & ~cut
    for _ in range(sep.erode):  # 4-neighbour erosion (outside the array counts as inside)
        p = np.pad(interior, 1, mode="edge")
        interior = interior & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    # seeds: large uncut components (one class each)
    runs = label_runs(cls, interior)
    if runs.n:
        lengths = np.diff(np.r_[runs.starts, cls.size])
        size = np.bincount(runs.run_label, weights=lengths, minlength=runs.n + 1)[1:]
        large = size >= sep.seed_pixels
        dense = runs.dense()
        top, bottom, left, right = open_edges
        for flag, line in ((top, dense[0]), (bottom, dense[-1]), (left, dense[:, 0]), (right, dense[:, -1])):
            if flag:
                large[line[line > 0] - 1] = True
        keep = np.r_[0, np.cumsum(large)] * np.r_[False, large]  # renumbered 1.. for the large ones
        labels = keep[dense]
    n_seeds = int(labels.max(initial=0))
    # growth: one synchronous step at a time, on the pixels still to place
    if sep.grow > 0 and n_seeds:
        pad_lab = np.zeros((h + 2, w + 2), np.int64)
        pad_cls = np.zeros((h + 2, w + 2), np.int64)
        pad_b = np.zeros((h + 2, w + 2), np.int64)
        pad_cls[1:-1, 1:-1] = cls
        pad_b[1:-1, 1:-1] = boundary
        pad_lab[1:-1, 1:-1] = labels
        flat_lab, flat_cls, flat_b = pad_lab.ravel(), pad_cls.ravel(), pad_b.ravel()
        rr, cc = np.nonzero(field & (labels == 0))
        todo = (rr + 1) * (w + 2) + (cc + 1)
        steps = np.array([dr * (w + 2) + dc for dr, dc in _OFFSETS], np.int64)
        for _ in range(sep.grow):
            if not todo.size:
                break
            nb = todo[:, None] + steps[None, :]  # (n, 4)
            nlab = flat_lab[nb]
            other = (flat_cls[nb] != flat_cls[todo][:, None]).astype(np.int64)
            key = (other * 256 + flat_b[nb]) * 4 + np.arange(4)[None, :]
            key[nlab == 0] = np.iinfo(np.int64).max
            best = key.argmin(axis=1)
            got = nlab[np.arange(len(todo)), best]
            placed = got > 0
            flat_lab[todo[placed]] = got[placed]
            todo = todo[~placed]
        labels = pad_lab[1:-1, 1:-1].copy()
    # the rest: components of one class among the pixels no seed reached
    rest = field & (labels == 0)
    if rest.any():
        more = label_runs(cls, rest)
        d = more.dense().astype(np.int64)
        labels[rest] = d[rest] + n_seeds
    return labels


def links(labels: np.ndarray, axis: int) -> np.ndarray:
    """Whether each pixel and its next neighbour along ``axis`` (0: below, 1: right) are linked:
    both in a field and in the same one. Shape: one less along ``axis``.

    >>> links(np.array([[1, 1, 2], [0, 1, 2]]), 1).tolist()
    [[True, False], [False, False]]
    """
    if axis == 0:
        a, b = labels[:-1], labels[1:]
    else:
        a, b = labels[:, :-1], labels[:, 1:]
    return (a > 0) & (a == b)


def class_counts(labels: np.ndarray, cls: np.ndarray, n: int, k: int) -> np.ndarray:
    """Pixels of each class in each field: ``(n, k)`` int64, row ``i`` for label ``i + 1``.

    >>> class_counts(np.array([[1, 1, 2]]), np.array([[0, 2, 2]]), 2, 3).tolist()
    [[1, 0, 1], [0, 0, 1]]
    """
    sel = labels > 0
    code = (labels[sel].astype(np.int64) - 1) * k + cls[sel].astype(np.int64)
    return np.bincount(code, minlength=n * k).reshape(n, k)


def majority(counts: np.ndarray) -> np.ndarray:
    """Each field's class: the one with most pixels (ties: the lowest id).

    >>> majority(np.array([[1, 0, 1], [0, 0, 3]])).tolist()
    [0, 2]
    """
    return counts.argmax(axis=1)
