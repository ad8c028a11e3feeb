"""Field separation on a boundary map: hand-made cases, and block-wise against whole-raster."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geoseg.core.instances import (
    _COUNT_CHUNK,
    Separation,
    check_separation,
    class_counts,
    field_graph,
    separate_fields,
    separation_halo,
)
from geoseg.errors import PolygonizeError


def partition(labels: np.ndarray) -> set[frozenset[int]]:
    """The fields as sets of flat pixel indices (labels' numbering does not matter)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    cuts = np.flatnonzero(np.diff(flat[order])) + 1
    return {frozenset(g.tolist()) for g in np.split(order, cuts) if flat[g[0]] > 0}


def blockwise(cls: np.ndarray, field: np.ndarray, boundary: np.ndarray, sep: Separation, block: int) -> np.ndarray:
    """The fields computed block by block: each block's window separated on its own, its core
    labelled by the links inside the core, joined across seams by the window's links from the
    core's bottom and right edges to the pixels beyond; joined with a union-find into one
    label per field."""
    h, w = cls.shape
    halo = separation_halo(sep)
    node = np.zeros((h, w), np.int64)  # a global node per (block, core label)
    parent: list[int] = [0]

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    pairs = []
    for r0 in range(0, h, block):
        for c0 in range(0, w, block):
            r1, c1 = min(r0 + block, h), min(c0 + block, w)
            wr0, wc0, wr1, wc1 = max(r0 - halo, 0), max(c0 - halo, 0), min(r1 + halo, h), min(c1 + halo, w)
            g = field_graph(cls[wr0:wr1, wc0:wc1], field[wr0:wr1, wc0:wc1], boundary[wr0:wr1, wc0:wc1], sep,
                            open_edges=(wr0 > 0, wr1 < h, wc0 > 0, wc1 < w))
            rows, cols = slice(r0 - wr0, r1 - wr0), slice(c0 - wc0, c1 - wc0)
            core = g.labels(rows, cols)
            base = len(parent)
            parent.extend(range(base, base + int(core.max(initial=0)) + 1))
            node[r0:r1, c0:c1] = np.where(core > 0, core + base, 0)
            if r1 < h:
                ok = g.links(0, slice(r1 - 1 - wr0, r1 - wr0), cols)[0]
                pairs += [((r1 - 1, c), (r1, c)) for c in np.flatnonzero(ok) + c0]
            if c1 < w:
                ok = g.links(1, rows, slice(c1 - 1 - wc0, c1 - wc0))[:, 0]
                pairs += [((r, c1 - 1), (r, c1)) for r in np.flatnonzero(ok) + r0]
    for a, b in pairs:
        na, nb = find(int(node[a])), find(int(node[b]))
        assert na and nb
        parent[max(na, nb)] = min(na, nb)
    roots = np.array([find(i) for i in range(len(parent))])
    return np.where(node > 0, roots[node], 0)


def scene(h: int, w: int, seed: int, k: int, noise: float, holes: float, threshold: int, seed_pixels: int, grow: int,
          erode: int, block: int) -> tuple:
    """Blocky classes (fields of a few pixels) with noise; random boundary lines and noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, k, (h // 3 + 1, w // 3 + 1))
    cls = np.kron(coarse, np.ones((3, 3), np.int64))[:h, :w]
    cls = np.where(rng.random((h, w)) < noise, rng.integers(0, k, (h, w)), cls).astype(np.uint8)
    field = rng.random((h, w)) > holes
    lines = np.zeros((h, w), bool)
    lines[rng.integers(0, h, 3), :] = True
    lines[:, rng.integers(0, w, 3)] = True
    boundary = np.where(lines, 200, rng.integers(0, 140, (h, w))).astype(np.uint8)
    return cls, field, boundary, Separation(threshold, seed_pixels, grow, erode), block


@st.composite
def scenes(draw):
    return scene(draw(st.integers(4, 40)), draw(st.integers(4, 40)), draw(st.integers(0, 2**31)),
                 draw(st.integers(1, 3)), draw(st.sampled_from([0.0, 0.05, 0.2])),
                 draw(st.sampled_from([0.0, 0.1, 0.3])), draw(st.sampled_from([100, 128, 180])),
                 draw(st.integers(1, 6)), draw(st.integers(0, 5)), draw(st.integers(0, 2)), draw(st.integers(3, 17)))


@settings(max_examples=150, deadline=None)
@given(scenes())
# two seeds joined only by a path near a window's edge shared one window label: a block that
# took window labels for fields joined them (fixed: fields are connected sets of local links)
@example(scene(13, 8, 1234666716, 2, 0.2, 0.1, 128, 1, 0, 0, 6))
@example(scene(19, 18, 1992314543, 1, 0.2, 0.0, 128, 1, 1, 1, 3))
# a grown pixel beside another seed that its window had joined to its own: the core's pieces
# traced from window labels joined them too
@example(scene(23, 23, 526724743, 1, 0.0, 0.1, 180, 1, 2, 1, 3))
def test_blockwise_equals_whole(case) -> None:
    cls, field, boundary, sep, block = case
    whole = separate_fields(cls, field, boundary, sep)
    assert partition(blockwise(cls, field, boundary, sep, block)) == partition(whole)
    # every field pixel is in a field, and only field pixels
    assert np.array_equal(whole > 0, field)


def test_touching_fields_of_one_crop_split_on_their_boundary() -> None:
    cls = np.ones((6, 12), np.uint8)
    b = np.zeros((6, 12), np.uint8)
    b[:, 5:7] = 230  # the line between two wheat fields, two pixels wide
    lab = separate_fields(cls, np.ones_like(cls, bool), b)
    assert lab.max() == 2
    assert (lab[:, :6] == lab[0, 0]).all() and (lab[:, 6:] == lab[0, 11]).all()  # split down the middle


def test_a_speck_of_another_crop_joins_its_field_and_a_crop_change_is_an_edge() -> None:
    cls = np.ones((8, 16), np.uint8)
    cls[:, 8:] = 2  # rice | wheat: no boundary predicted, the crop change cuts
    cls[3, 3] = 2  # one pixel of wheat inside the rice field
    lab = separate_fields(cls, np.ones_like(cls, bool), np.zeros_like(cls))
    assert lab.max() == 2
    assert lab[3, 3] == lab[0, 0] != lab[0, 15]
    assert (lab[:, :8] == lab[0, 0]).all()


def test_pixels_no_seed_reaches_keep_their_own_fields() -> None:
    cls = np.ones((5, 5), np.uint8)
    lab = separate_fields(cls, np.ones_like(cls, bool), np.full(cls.shape, 255, np.uint8))  # all boundary
    assert lab.max() == 1 and (lab == 1).all()  # no seed: one field, as without a boundary map
    field = np.ones_like(cls, bool)
    field[2] = False
    assert separate_fields(cls, field, np.zeros_like(cls)).max() == 2  # nodata row: two fields


def test_unknown_boundary_is_no_boundary_and_shapes_are_checked() -> None:
    cls = np.ones((4, 4), np.uint8)
    assert separate_fields(cls, np.ones_like(cls, bool), np.zeros_like(cls)).max() == 1
    with pytest.raises(PolygonizeError, match=r"differ in shape"):
        separate_fields(cls, np.ones((4, 5), bool), np.zeros_like(cls))


@pytest.mark.parametrize(("kw", "match"), [({"threshold": 256}, "boundary threshold 256"),
                                           ({"seed_pixels": 0}, "seed_pixels 0"),
                                           ({"grow": -1}, "grow -1"), ({"grow": True}, "grow True"),
                                           ({"erode": 17}, "erode 17")])
def test_bad_separation_values_are_named(kw, match) -> None:
    with pytest.raises(PolygonizeError, match=match):
        check_separation(Separation(**kw))


def test_class_counts_over_several_chunks_equal_a_plain_count():
    """Counted a chunk at a time (more pixels than one chunk, labels cut across chunks), the
    counts equal a plain count per field and class; class values at or above k outside fields
    do not count."""
    rng = np.random.default_rng(3)
    h, w, n, k = 1500, 1500, 40, 5
    assert h * w > 2 * _COUNT_CHUNK
    labels = rng.integers(0, n + 1, (h, w)).astype(np.int32)
    cls = rng.integers(0, k, (h, w)).astype(np.uint8)
    cls[labels == 0] = 200  # outside fields: anything
    want = np.zeros((n, k), np.int64)
    for i in range(1, n + 1):
        want[i - 1] = np.bincount(cls[labels == i], minlength=k)
    got = class_counts(labels, cls, n, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert got.sum() == int((labels > 0).sum())
