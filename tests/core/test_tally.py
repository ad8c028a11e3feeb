"""Centre-rule counting: every key packing gives what a plain loop over the pixels gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.tally import centre_counts


def _loop(zones, values, n_values, n_zones, valid=None, row_weights=None, weights=None):
    out = np.zeros(n_zones * n_values)
    for (r, c), v in np.ndenumerate(values):
        if valid is None or valid[r, c]:
            z = 0 if zones is None else int(zones[r, c])
            w = weights[r, c] if weights is not None else 1.0 if row_weights is None else row_weights[r]
            out[z * n_values + int(v)] += w
    return out


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), n_zones=st.integers(1, 300), wide=st.booleans(),
       masked=st.booleans(), weighted=st.sampled_from([None, "rows", "pixels"]), seed=st.integers(0, 2**16))
def test_counts_equal_a_loop_over_the_pixels(h, w, n_zones, wide, masked, weighted, seed):
    """uint8 zones and values with 256 values take the 16-bit key; the rest a 32-bit one: same counts."""
    rng = np.random.default_rng(seed)
    n_values = 256 if wide else int(rng.integers(1, 20))
    zones = rng.integers(0, n_zones, (h, w)).astype(np.uint8 if n_zones <= 256 else np.int32)
    values = rng.integers(0, n_values, (h, w)).astype(np.uint8 if n_values <= 256 else np.int32)
    valid = rng.random((h, w)) < 0.7 if masked else None
    rows = rng.uniform(50, 150, h) if weighted == "rows" else None
    pixels = rng.uniform(50, 150, (h, w)) if weighted == "pixels" else None  # e.g. ground areas
    got = centre_counts(zones, values, n_values, n_zones, valid=valid, row_weights=rows, weights=pixels)
    want = _loop(zones, values, n_values, n_zones, valid, rows, pixels)
    assert got.shape == (n_zones * n_values,)
    assert got.dtype == (np.float64 if weighted else np.int64)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_no_zones_counts_everything_in_zone_0():
    values = np.array([[3, 1], [3, 0]], np.uint8)
    assert centre_counts(None, values, 4, 2).tolist() == [1, 1, 0, 2, 0, 0, 0, 0]


def test_mismatched_shapes_are_refused_naming_both():
    values = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match=r"zones have shape \(3, 2\) and values \(2, 3\)"):
        centre_counts(np.zeros((3, 2), np.uint8), values, 1, 1)
    with pytest.raises(ValueError, match=r"valid has shape \(2,\)"):
        centre_counts(None, values, 1, 1, valid=np.ones(2, bool))
    with pytest.raises(ValueError, match=r"row_weights has shape \(3,\); expected one weight per row \(2\)"):
        centre_counts(None, values, 1, 1, row_weights=np.ones(3))
    with pytest.raises(ValueError, match=r"weights have shape \(3, 2\) and values \(2, 3\); expected one weight per "
                                         r"pixel, and no row_weights with them"):
        centre_counts(None, values, 1, 1, weights=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"and no row_weights with them"):
        centre_counts(None, values, 1, 1, weights=np.ones((2, 3)), row_weights=np.ones(2))
