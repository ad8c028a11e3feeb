"""Which pixels points label, against a plain numpy reference; conflicts, block counts, point votes."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from geoseg.core.points import block_counts, point_pixels, point_votes, resolve_conflicts

TF = Affine(10, 0, 500_000, 0, -10, 3_400_000)  # 10 m pixels, north up, UTM 43N
SHAPE = (40, 50)


def _reference(x: float, y: float, tf: Affine, shape: tuple[int, int], radius: float) -> set[tuple[int, int]]:
    """Every pixel of the grid: its centre within ``radius``, or the pixel the point is in."""
    h, w = shape
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pc, pr = ~tf @ (x, y)  # the point is in the pixel whose [c, c+1) x [r, r+1) holds its pixel coordinates
    under = (c <= pc) & (pc < c + 1) & (r <= pr) & (pr < r + 1)
    cx, cy = tf @ (c + 0.5, r + 0.5)
    near = (cx - x) ** 2 + (cy - y) ** 2 <= radius**2
    rr, cc = np.nonzero(under | near)
    return set(zip(rr.tolist(), cc.tolist()))


def _pixels_of(p, i: int) -> set[tuple[int, int]]:  # type: ignore[no-untyped-def]
    m = p.point == i
    return set(zip(p.prow[m].tolist(), p.pcol[m].tolist()))


@pytest.mark.parametrize("radius", [0.0, 4.9, 5.0, 10.0, 14.2, 23.0])
def test_pixels_equal_the_brute_force_reference(radius: float) -> None:
    rng = np.random.default_rng(7)
    # inside, on pixel edges and corners, near and past the grid's edges
    x = np.concatenate([rng.uniform(500_000 - 30, 500_000 + 530, 40), [500_010.0, 500_000.0, 500_500.0, 500_020.0]])
    y = np.concatenate([rng.uniform(3_399_570, 3_400_030, 40), [3_399_990.0, 3_400_000.0, 3_399_600.0, 3_399_600.0]])
    p = point_pixels(x, y, TF, SHAPE, radius)
    for i in range(x.size):
        pc, pr = ~TF @ (x[i], y[i])
        inside = 0 <= pc < SHAPE[1] and 0 <= pr < SHAPE[0]
        assert bool(p.inside[i]) == inside, (x[i], y[i])
        if inside:
            assert _pixels_of(p, i) == _reference(x[i], y[i], TF, SHAPE, radius), (i, radius)
            assert (int(p.row[i]), int(p.col[i])) == (int(np.floor(pr)), int(np.floor(pc)))
        else:
            assert _pixels_of(p, i) == set()
    # exactly one entry per point is its own pixel
    assert np.bincount(p.point[p.centre], minlength=x.size)[p.inside].tolist() == [1] * int(p.inside.sum())


def test_radius_zero_is_the_pixel_under_the_point_with_edges_going_right_and_down() -> None:
    p = point_pixels([500_010.0, 500_019.999, 500_000.0], [3_399_990.0, 3_399_980.001, 3_400_000.0], TF, SHAPE)
    assert list(zip(p.prow.tolist(), p.pcol.tolist())) == [(1, 1), (1, 1), (0, 0)]


def test_a_rotated_grid_uses_true_distances() -> None:
    tf = Affine.translation(100, 200) @ Affine.rotation(30) @ Affine.scale(10, -10)
    x, y = tf @ (7.3, 4.6)
    p = point_pixels([x], [y], tf, (12, 12), 16.0)
    assert _pixels_of(p, 0) == _reference(x, y, tf, (12, 12), 16.0)


def test_bad_radius_is_refused() -> None:
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        point_pixels([0.0], [0.0], TF, SHAPE, -1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.02, 49.98), st.floats(0.02, 39.98)), min_size=1, max_size=30),
       st.sampled_from([0.0, 10.0, 25.0]))
def test_points_given_in_another_crs_land_on_the_same_pixels(pts, radius) -> None:  # type: ignore[no-untyped-def]
    """Points in EPSG:4326 reprojected to the grid's EPSG:32643 label the same pixels as the points given in it."""
    frac = np.asarray(pts)
    # keep away from pixel edges by more than the reprojection round trip moves a point (micrometres)
    frac = np.floor(frac) + np.clip(frac - np.floor(frac), 0.01, 0.99)
    x, y = TF @ (frac[:, 0], frac[:, 1])
    x, y = np.asarray(x), np.asarray(y)
    to_geo = Transformer.from_crs("EPSG:32643", "EPSG:4326", always_xy=True)
    back = Transformer.from_crs("EPSG:4326", "EPSG:32643", always_xy=True)
    lon, lat = to_geo.transform(x, y)
    x2, y2 = back.transform(lon, lat)
    a, b = point_pixels(x, y, TF, SHAPE, radius), point_pixels(np.asarray(x2), np.asarray(y2), TF, SHAPE, radius)
    assert a.inside.tolist() == b.inside.tolist()
    for i in range(len(x)):
        pa, pb = _pixels_of(a, i), _pixels_of(b, i)
        # a pixel centre exactly at the radius may flip by the round trip's micrometres: allow only those
        sym = pa ^ pb
        for r, c in sym:
            cx, cy = TF @ (c + 0.5, r + 0.5)
            assert abs(np.hypot(cx - x[i], cy - y[i]) - radius) < 1e-3


def test_conflicting_pixels_are_those_claimed_by_two_classes() -> None:
    lin = np.array([1, 1, 1, 2, 2, 3])
    cls = np.array([4, 4, 5, 4, 4, 0])
    assert resolve_conflicts(lin, cls).tolist() == [True, True, True, False, False, False]
    assert resolve_conflicts(np.zeros(0, int), np.zeros(0, int)).size == 0


def test_block_counts_put_each_point_in_the_block_of_its_own_pixel() -> None:
    rows, cols = np.array([0, 63, 64, 130]), np.array([0, 63, 10, 199])
    cls, weight = np.array([1, 1, 0, 2]), np.array([5, 9, 1, 2])
    out = block_counts(rows, cols, cls, weight, (150, 200), 64, 3)
    assert out.shape == (3, 4, 3)
    ref = np.zeros((3, 4, 3), np.int64)
    for r, c, k, w in zip(rows, cols, cls, weight):
        ref[r // 64, c // 64, k] += w
    np.testing.assert_array_equal(out, ref)


def test_votes_are_the_majority_and_ties_go_to_the_pixel_under_the_point() -> None:
    point = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
    pred = np.array([2, 2, 1, 0, 1, 1, 0, 4, 3, 1])
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], bool)
    centre = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 1], bool)
    # point 0: majority 2 over the centre's 1; point 1: tie 0/1, centre says 1; point 2: tie 3/4, centre
    # absent -> smallest id 3; point 3: no valid pixel -> -1
    assert point_votes(point, pred, valid, centre, 4, 5).tolist() == [2, 1, 3, -1]
