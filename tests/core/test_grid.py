"""Tile grid: cores partition the raster, read windows are tile-sized with enough context."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.grid import band_order, blocks_touched, cache_blocks, lru_decodes, task_batches, tile_grid
from geoseg.errors import TileError


@st.composite
def grids(draw):  # type: ignore[no-untyped-def]
    size = draw(st.integers(1, 12)) * 16
    overlap = draw(st.integers(0, (size - 1) // 2))
    h = draw(st.integers(1, 700))
    w = draw(st.integers(1, 700))
    return (h, w), size, overlap


@settings(max_examples=300, deadline=None)
@given(grids())
def test_cores_partition_raster_exactly(args):  # type: ignore[no-untyped-def]
    shape, size, overlap = args
    g = tile_grid(shape, size=size, overlap=overlap)
    cover = np.zeros(shape, dtype=np.int32)
    for t in g:
        r0, c0 = int(t.core.row_off), int(t.core.col_off)
        assert t.core.height > 0 and t.core.width > 0
        cover[r0 : r0 + int(t.core.height), c0 : c0 + int(t.core.width)] += 1
    assert cover.min() == 1 and cover.max() == 1  # every pixel exactly once
    assert len(g) == g.grid_shape[0] * g.grid_shape[1]


@settings(max_examples=300, deadline=None)
@given(grids())
def test_read_windows_are_tile_sized_and_hold_context(args):  # type: ignore[no-untyped-def]
    (h, w), size, overlap = args
    g = tile_grid((h, w), size=size, overlap=overlap)
    for t in g:
        assert (t.read.height, t.read.width) == (size, size)
        rows, cols = t.core_in_read
        # The core lies in the read window ...
        assert 0 <= rows.start and rows.stop <= size and 0 <= cols.start and cols.stop <= size
        # ... with at least `overlap` pixels of context on each side (real or padding).
        assert rows.start >= overlap and size - rows.stop >= overlap
        assert cols.start >= overlap and size - cols.stop >= overlap
        # Padding never exceeds what a scene edge needs: a read window never lies wholly outside.
        assert t.read.row_off < h and t.read.row_off + size > 0
        assert t.read.row_off >= -max(overlap, size)


def test_last_tile_is_shifted_into_the_raster():
    g = tile_grid((1000, 1000), size=512, overlap=32)
    last = g[-1]
    # Core 896..1000; the read window ends `overlap` past the raster, not 448 px past it.
    assert (last.core.row_off, last.core.height) == (896, 104)
    assert last.read.row_off + 512 == 1000 + 32
    assert last.core_in_read[0] == slice(896 - 520, 896 - 520 + 104)


def test_tile_transform_is_the_read_window_origin():
    tf = Affine(10, 0, 500000, 0, -10, 3400000)
    g = tile_grid((300, 300), tf, size=128, overlap=16)
    t = g[1]
    assert t.transform == tf @ Affine.translation(t.read.col_off, t.read.row_off)
    assert t.transform.c == 500000 + 10 * t.read.col_off


def test_default_tile_reads_at_most_140_percent_of_a_sentinel2_scene():
    g = tile_grid((10980, 10980))
    assert g.size == (512, 512) and g.overlap == (32, 32)
    assert g.read_ratio == pytest.approx(625 * 512 * 512 / 10980**2)
    assert g.read_ratio <= 1.40


def test_tile_keys_and_tokens_are_stable():
    from dask.base import tokenize

    a = tile_grid((500, 400), size=256, overlap=32)
    b = tile_grid((500, 400), size=256, overlap=32)
    assert [t.key for t in a][:2] == ["r000_c000", "r000_c001"]
    assert tokenize(a[3]) == tokenize(b[3]) and tokenize(a[3]) != tokenize(a[2])
    assert tokenize(a) == tokenize(b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 100}, r"tile size \(100, 100\) is not divisible by 16; use 96 or 112"),
        ({"size": 8}, r"not divisible by 16; use 16 or more"),
        ({"size": (256, 250)}, r"not divisible by 16"),
        ({"size": 64, "overlap": 32}, r"overlap \(32, 32\) leaves no core in a tile of \(64, 64\)"),
        ({"size": 64, "overlap": -1}, r"overlap \(-1, -1\) is negative"),
        ({"size": 80, "multiple": 32}, r"not divisible by 32; use 64 or 96 \(the model halves the image 5 times"),
    ],
)
def test_bad_tile_arguments_say_what_to_use(kwargs, message):  # type: ignore[no-untyped-def]
    with pytest.raises(TileError, match=message):
        tile_grid((1000, 1000), **kwargs)


def test_empty_shape_is_refused():
    with pytest.raises(TileError, match="empty"):
        tile_grid((0, 10), size=16, overlap=0)


def test_tile_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        tile_grid((10, 10), size=17)


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 3000), w=st.integers(1, 3000), size=st.sampled_from([64, 128, 256, 512]),
    frac=st.floats(0, 0.45), n=st.integers(1, 20), bh=st.sampled_from([128, 256, 512]),
    bw=st.sampled_from([128, 256, 512]),
)
def test_task_batches_cover_every_tile_once_in_fixed_sizes_and_decode_no_more(h, w, size, frac, n, bh, bw):
    g = tile_grid((h, w), size=size, overlap=int(size * frac) // 16 * 16 // 2 * 2)
    tasks = task_batches(g, n, (bh, bw))
    keys = [t.key for task in tasks for t in task]
    assert sorted(keys) == sorted(t.key for t in g.tiles) and len(keys) == len(set(keys))
    # the sizes are those of cutting the grid into runs of n, which the task-size balance assumes
    assert [len(t) for t in tasks] == [min(n, len(g) - i) for i in range(0, len(g), n)]
    row_major = [list(g.tiles[i : i + n]) for i in range(0, len(g), n)]
    cost = sum(blocks_touched(t, g.shape, (bh, bw)) for t in tasks)
    assert cost <= sum(blocks_touched(t, g.shape, (bh, bw)) for t in row_major)
    assert cost >= blocks_touched(g.tiles, g.shape, (bh, bw))  # each block at least once


def test_task_batches_walk_bands_column_by_column_and_decode_a_fifth_less():
    g = tile_grid((5376, 5376), size=512, overlap=32)  # the bench's 16x scene: 12 x 12 tiles, 11 x 11 blocks
    tasks = task_batches(g, 12, (512, 512))
    assert [t.index for t in tasks[0][:4]] == [(0, 0), (1, 0), (2, 0), (0, 1)]  # bands of 3 rows, walked down
    assert [t.index for t in tasks[0]] == [t.index for t in band_order(g, 3)[:12]]
    decoded = sum(blocks_touched(t, g.shape, (512, 512)) for t in tasks)
    strips = sum(blocks_touched(list(g.tiles[i : i + 12]), g.shape, (512, 512)) for i in range(0, 144, 12))
    assert (decoded, strips) == (196, 253)
    with pytest.raises(TileError, match="at least 1 tile per task"):
        task_batches(g, 0, (512, 512))
    with pytest.raises(TileError, match="at least 1 tile row"):
        band_order(g, 0)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 2500), w=st.integers(1, 2500), size=st.sampled_from([64, 128, 256, 512]),
       rows=st.integers(1, 4), start=st.integers(0, 200), n=st.integers(1, 20), b=st.sampled_from([128, 256, 512]))
def test_cache_blocks_is_the_smallest_cache_that_decodes_each_block_once(h, w, size, rows, start, n, b):
    g = tile_grid((h, w), size=size, overlap=size // 8)
    tiles = band_order(g, rows)[start : start + n]
    need, c = blocks_touched(tiles, g.shape, (b, b)), cache_blocks(tiles, g.shape, (b, b))
    assert lru_decodes(tiles, g.shape, (b, b), c) == need
    if c > 0:
        assert lru_decodes(tiles, g.shape, (b, b), c - 1) > need
    assert lru_decodes(tiles, g.shape, (b, b), 10**6) == need
