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
A field is a connected set of *links* between 4-neighbours (:class:`FieldGraph`): two seeds,
or two rest pixels, of one class; a grown pixel and the neighbour it joined. Labels themselves
are not local (two seeds joined by a path that only exists near a window's edge would share a
window label), but each link is: with ``d`` the pixels between a pixel and a window's open
edge, a cut is right from ``d >= 1``, the eroded interior from ``1 + erode``, whether a seed is
large from ``seed_pixels + erode + 1`` (a small seed lies within ``seed_pixels - 1`` of each of
its pixels), the growth step from ``grow`` more, the neighbour a pixel joins from one more. The
pixel just beyond a block's core needs all of it, so :func:`separation_halo` is
``seed_pixels + grow + erode + 3``: a block labels its core by the links inside the core
(:meth:`FieldGraph.labels`) and reports the links from its core's edges to the pixels beyond
(:meth:`FieldGraph.links`); pieces joined along those links are the whole raster's fields (a
property test over random masks and block sizes checks it).
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
    "SEPARATION_CHOICES",
    "FieldGraph",
    "Separation",
    "boundary_value",
    "check_separation",
    "class_counts",
    "field_graph",
    "majority",
    "separate_fields",
    "separation_from_tag",
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


#: The thresholds ``train --fields`` tries on its validation blocks (None: no separation); it keeps
#: the one whose fields score the best object F1 there, so a model with a weak band separates less.
SEPARATION_CHOICES: tuple[float | None, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, None)


def separation_from_tag(tag: str | None) -> Separation | None:
    """The separation a confidence raster's ``GEOSEG_SEPARATION`` tag asks for: ``"none"`` (the
    model separates no better than not at all): None; a threshold probability: the defaults with
    that threshold; no tag: the defaults.

    >>> separation_from_tag("none"), separation_from_tag("0.2").threshold, separation_from_tag(None).threshold
    (None, 52, 14)
    >>> separation_from_tag("often")
    Traceback (most recent call last):
    ...
    geoseg.errors.PolygonizeError: GEOSEG_SEPARATION is 'often'; expected a probability such as 0.05, or none
    """
    if tag is None:
        return Separation()
    if tag.strip().lower() == "none":
        return None
    try:
        p = float(tag)
    except ValueError:
        p = float("nan")
    if not 0 < p <= 1:
        raise PolygonizeError(f"GEOSEG_SEPARATION is {tag!r}; expected a probability such as 0.05, or none")
    return Separation(threshold=boundary_value(p))


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
    20
    """
    return int(sep.seed_pixels) + int(sep.grow) + int(sep.erode) + 3


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


@dataclass(frozen=True)
class FieldGraph:
    """What joins each pixel of a window to its 4-neighbours' fields (see the module notes).

    ``kind`` per pixel: 0 not in a field, 1 seed, 2 grown, 3 rest; a grown pixel joined the
    neighbour ``to`` (index into up, left, right, down) in growth step ``step``. Two neighbours
    are *linked* (one field) when both are seeds, or both rest, of one class, or when one of
    them is grown and joined the other. Every decision is local, so the links of pixels far
    enough from a window's open edges are the whole raster's; a field is a connected set of
    links, which is what makes the block-wise labels equal the whole raster's.
    """

    cls: np.ndarray
    kind: np.ndarray  # uint8
    step: np.ndarray  # uint8 (grown pixels), 0 otherwise
    to: np.ndarray  # int8 (grown pixels), -1 otherwise

    def labels(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """Field labels (int32, 1.., 0 outside fields) of the pixels ``[rows, cols]``: the
        connected sets of links *inside* that rectangle (a field that leaves it and comes back
        has two labels there, joined across its edges by :meth:`links`)."""
        kind, cls = self.kind[rows, cols], self.cls[rows, cols]
        h, w = kind.shape
        if kind.size == 0 or not kind.any():
            return np.zeros((h, w), np.int32)
        same = (kind == 1) | (kind == 3)
        code = cls.astype(np.int32) * 2 + (kind == 3)  # seeds and rest of one class never join
        lab = label_runs(code, same).dense().astype(np.int32, copy=False).ravel()
        del code, same
        n = int(lab.max(initial=0))
        step = np.ascontiguousarray(self.step[rows, cols]).ravel()
        top = int(step.max(initial=0))
        if top:
            to = np.ascontiguousarray(self.to[rows, cols]).ravel()
            shift = np.array([dr * w + dc for dr, dc in _OFFSETS], np.int64)
            for s in range(1, top + 1):  # step by step: a pixel joins one placed before it
                g = np.flatnonzero(step == s)  # the pixels grown in step s, a few per cent of the window
                if not g.size:
                    continue
                d = to[g]
                col = g % w
                # a pixel that joined one outside the rectangle starts a label here
                out = (((d == 0) & (g < w)) | ((d == 3) & (g >= (h - 1) * w)) | ((d == 1) & (col == 0))
                       | ((d == 2) & (col == w - 1)))
                if out.any():
                    lab[g[out]] = np.arange(n + 1, n + 1 + int(out.sum()), dtype=np.int32)
                    n += int(out.sum())
                    g, d = g[~out], d[~out]
                lab[g] = lab[g + shift[d]]
        return lab.reshape(h, w)

    def links(self, axis: int, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """Whether each pixel of ``[rows, cols]`` is linked to its next neighbour along ``axis``
        (0: below, 1: right); the rectangle (by default, every pixel with such a neighbour) must
        leave room for that neighbour.

        Rice then wheat along a row: the two pixels at the change are cut, then each joins its crop.

        >>> g = field_graph(np.array([[1, 1, 1, 2, 2, 2]]), np.ones((1, 6), bool), np.zeros((1, 6), np.uint8),
        ...                 Separation(seed_pixels=1, grow=1, erode=0))
        >>> g.kind.tolist(), g.links(1).tolist()
        ([[1, 1, 2, 2, 1, 1]], [[True, True, False, True, True]])
        """
        h, w = self.kind.shape
        r0, r1, _ = (rows or slice(0, h - 1 if axis == 0 else h)).indices(h)
        c0, c1, _ = (cols or slice(0, w - 1 if axis == 1 else w)).indices(w)
        if axis == 0:
            a, b, fwd, back = (slice(r0, r1), slice(c0, c1)), (slice(r0 + 1, r1 + 1), slice(c0, c1)), 3, 0
        else:
            a, b, fwd, back = (slice(r0, r1), slice(c0, c1)), (slice(r0, r1), slice(c0 + 1, c1 + 1)), 2, 1
        if (r1 if axis == 0 else c1) >= self.kind.shape[axis]:
            raise ValueError(f"links along axis {axis} need the pixels beyond rows {rows}, cols {cols}")
        ka, kb = self.kind[a], self.kind[b]
        same = (ka == kb) & ((ka == 1) | (ka == 3)) & (self.cls[a] == self.cls[b])
        return same | ((ka == 2) & (self.to[a] == fwd)) | ((kb == 2) & (self.to[b] == back))


def field_graph(
    cls: np.ndarray,
    field: np.ndarray,
    boundary: np.ndarray,
    sep: Separation = Separation(),
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> FieldGraph:
    """Seeds, growth and the rest of one window (steps 1-4 of the module notes), as a
    :class:`FieldGraph`; :func:`separate_fields` labels it.

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
    """
    if cls.shape != field.shape or cls.shape != boundary.shape:
        raise PolygonizeError(f"class {cls.shape}, field {field.shape} and boundary {boundary.shape} arrays differ "
                              f"in shape; expected one grid")
    h, w = cls.shape
    kind = np.zeros((h, w), np.uint8)
    step = np.zeros((h, w), np.uint8)
    to = np.full((h, w), -1, np.int8)
    if h == 0 or w == 0 or not field.any():
        return FieldGraph(cls, kind, step, to)
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
        top, bottom, left, right = open_edges
        along_row, along_col = np.arange(w, dtype=np.int64), np.arange(h, dtype=np.int64) * w
        for flag, flat in ((top, along_row), (bottom, (h - 1) * w + along_row), (left, along_col),
                           (right, along_col + (w - 1))):
            if flag:  # the flat positions of that edge's pixels
                line = runs.at_flat(flat)
                large[line[line > 0] - 1] = True
        seed_run = np.r_[False, large][runs.run_label]
        kind = np.repeat(seed_run, lengths).reshape(h, w).astype(np.uint8)
        del runs, seed_run
    if sep.grow > 0 and kind.any():
        _grow(kind, step, to, cls, field, boundary, sep.grow)
    kind[field & (kind == 0)] = 3  # the rest: pixels no seed reached
    return FieldGraph(cls, kind, step, to)


def separate_fields(
    cls: np.ndarray,
    field: np.ndarray,
    boundary: np.ndarray,
    sep: Separation = Separation(),
    open_edges: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> np.ndarray:
    """Field labels (h, w) int32, 1.. per field, 0 outside fields (see the module notes):
    ``field_graph(...).labels()``.

    Examples
    --------
    Two wheat fields side by side, a boundary line between them (columns 2 and 3):

    >>> cls = np.ones((3, 6), np.uint8)
    >>> b = np.zeros((3, 6), np.uint8); b[:, 2:4] = 255
    >>> separate_fields(cls, np.ones((3, 6), bool), b, Separation(seed_pixels=2)).tolist()
    [[1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2], [1, 1, 1, 2, 2, 2]]
    """
    return field_graph(cls, field, boundary, sep, open_edges).labels()


#: Pixels handled at once in a growth step (bounds its temporaries to a few MB).
_CHUNK = 1 << 16


def _chunks(a: np.ndarray) -> list[np.ndarray]:
    return [a[i:i + _CHUNK] for i in range(0, a.size, _CHUNK)]


def _grow(kind: np.ndarray, step: np.ndarray, to: np.ndarray, cls: np.ndarray, field: np.ndarray,
          boundary: np.ndarray, steps: int) -> None:
    """Step 3 of the module notes, breadth first, in place: marks grown pixels (``kind`` 2) with
    their step and the neighbour they joined. Each step looks only at the unplaced field
    neighbours of the pixels the step before placed (the frontier), so a step costs what it places.
    Works on flat padded copies, indexed by int32 where they fit, with one int16 rank per pixel
    (4 x its boundary value when placed, above any such value when not)."""
    h, w = kind.shape
    W = w + 2
    idx = np.int32 if (h + 2) * W < 2**31 else np.intp
    pad = lambda a, dtype: np.pad(a.astype(dtype, copy=False), 1).ravel()
    placed = pad(kind > 0, bool)
    fld = pad(field, bool)
    cl = pad(cls, cls.dtype)
    unplaced = np.int16(8192)  # above 4 x 255 + 1024 + 3, and with them below 2**15
    b4 = pad(boundary, np.int16) * np.int16(4)
    rank = np.where(placed, b4, unplaced).astype(np.int16)
    kp, sp, tp = pad(kind, np.uint8), pad(step, np.uint8), pad(to, np.int8)
    offs = np.array([dr * W + dc for dr, dc in _OFFSETS], idx)
    # the first frontier: seed pixels next to an unplaced field pixel
    free = fld & ~placed  # unplaced field pixels
    del fld
    near = np.zeros_like(free)
    for o in offs.tolist():
        if o > 0:
            near[:-o] |= free[o:]
        else:
            near[-o:] |= free[:o]
    frontier = np.flatnonzero(near & placed).astype(idx)
    del near, placed
    for s in range(1, steps + 1):
        if not frontier.size:
            break
        # the unplaced field neighbours of the frontier, each once: direction by direction, a
        # neighbour taken leaves the free pixels at once, so no later direction takes it again
        # (no sort; a step costs what its frontier touches)
        parts = []
        for f in _chunks(frontier):
            for o in offs:
                nb = f + o
                nb = nb[free[nb]]
                free[nb] = False
                parts.append(nb)
        cand = np.concatenate(parts)
        if not cand.size:
            break
        got = np.empty(cand.size, np.int8)
        for i, c in zip(range(0, cand.size, _CHUNK), _chunks(cand)):
            # key: another class last, then the lowest boundary value, then up/left/right/down;
            # rank and the class penalty are multiples of 4, so the direction is the key's low 2 bits
            own = cl[c]
            best = None
            for d, o in enumerate(offs.tolist()):
                n = c + o
                key = rank[n] + (cl[n] != own).astype(np.int16) * np.int16(1024) + np.int16(d)
                best = key if best is None else np.minimum(best, key, out=best)
            got[i:i + c.size] = best & 3  # each has a placed neighbour
        # after the whole step: it decides on the pixels placed before it
        rank[cand] = b4[cand]
        kp[cand] = 2
        sp[cand] = s
        tp[cand] = got
        frontier = cand
    kind[...] = kp.reshape(h + 2, W)[1:-1, 1:-1]
    step[...] = sp.reshape(h + 2, W)[1:-1, 1:-1]
    to[...] = tp.reshape(h + 2, W)[1:-1, 1:-1]


#: Pixels counted at once by :func:`class_counts`.
_COUNT_CHUNK = 1 << 20


def class_counts(labels: np.ndarray, cls: np.ndarray, n: int, k: int) -> np.ndarray:
    """Pixels of each class in each field: ``(n, k)`` int64, row ``i`` for label ``i + 1``
    (``cls`` must be below ``k`` in the fields; outside them it may hold anything).

    >>> class_counts(np.array([[1, 1, 2]]), np.array([[0, 2, 2]]), 2, 3).tolist()
    [[1, 0, 1], [0, 0, 1]]
    """
    dtype = np.int32 if (n + 1) * k < 2**31 else np.int64
    flat_labels, flat_cls = np.ravel(labels), np.ravel(cls)
    counts = np.zeros((n + 1) * k, np.int64)
    for i in range(0, flat_labels.size, _COUNT_CHUNK):  # a chunk at a time: bincount copies its input to int64
        code = flat_labels[i:i + _COUNT_CHUNK].astype(dtype) * dtype(k)  # label 0 (no field): the first k bins, dropped ...
        code += np.minimum(flat_cls[i:i + _COUNT_CHUNK], k - 1).astype(dtype, copy=False)  # ... whatever its class
        counts += np.bincount(code, minlength=(n + 1) * k)
    return counts[k:].reshape(n, k)


def majority(counts: np.ndarray) -> np.ndarray:
    """Each field's class: the one with most pixels (ties: the lowest id).

    >>> majority(np.array([[1, 0, 1], [0, 0, 3]])).tolist()
    [0, 2]
    """
    return counts.argmax(axis=1)
