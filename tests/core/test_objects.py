"""Object-level field scores against a plain per-field loop, and on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geoseg.core.objects import boundary_pixels, object_scores


def reference(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, pc: np.ndarray, tc: np.ndarray,
              tol: float) -> dict[str, float]:
    """Every score by brute force: each pair of fields compared as pixel sets, boundaries by
    checking each pixel's neighbours and each boundary pixel's distance to every other."""
    p = np.where(valid, pred, 0)
    t = np.where(valid, truth, 0)
    pids = [i for i in np.unique(p) if i > 0]
    tids = [i for i in np.unique(t) if i > 0]
    matched = same = 0
    over, under = [], []
    for j in tids:
        tj = t == j
        best, best_i = 0, None
        for i in pids:
            pi = p == i
            inter = int((pi & tj).sum())
            if inter / int((pi | tj).sum()) > 0.5:
                matched += 1
                same += int(pc[i] == tc[j])
            if inter > best:
                best, best_i = inter, i
        over.append(1 - best / tj.sum())
        if best_i is not None:
            under.append(1 - best / (p == best_i).sum())

    def edges(ids: np.ndarray) -> list[tuple[int, int]]:
        h, w = ids.shape
        out = []
        for r in range(h):
            for c in range(w):
                if ids[r, c] <= 0 or not valid[r, c]:
                    continue
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    rr, cc = r + dr, c + dc
                    if not (0 <= rr < h and 0 <= cc < w) or not valid[rr, cc] or ids[rr, cc] != ids[r, c]:
                        out.append((r, c))
                        break
        return out

    ep, et = edges(p), edges(t)

    def near(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> float:
        if not a:
            return math.nan
        return float(np.mean([any(math.dist(x, y) <= tol for y in b) for x in a])) if b else 0.0

    def f1(a: float, b: float) -> float:
        if math.isnan(a) or math.isnan(b):
            return math.nan
        return 2 * a * b / (a + b) if a + b > 0 else 0.0

    prec = matched / len(pids) if pids else math.nan
    rec = matched / len(tids) if tids else math.nan
    return {"matched": matched, "precision": prec, "recall": rec, "f1": f1(prec, rec),
            "over_segmentation": float(np.mean(over)) if over else math.nan,
            "under_segmentation": float(np.mean(under)) if under else math.nan,
            "boundary_precision": near(ep, et), "boundary_recall": near(et, ep),
            "extent_iou": ((p > 0) & (t > 0)).sum() / ((p > 0) | (t > 0)).sum() if ((p > 0) | (t > 0)).any()
            else math.nan, "matched_same_class": same}


ids = arrays(np.int64, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 5))


@settings(max_examples=150, deadline=None)
@given(ids, ids, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 1.0, 1.5, 3.0]))
def test_object_scores_equal_a_brute_force_count(pred, truth, seed, tol) -> None:  # type: ignore[no-untyped-def]
    h = min(pred.shape[0], truth.shape[0])
    w = min(pred.shape[1], truth.shape[1])
    pred, truth = pred[:h, :w], truth[:h, :w]
    rng = np.random.default_rng(seed)
    valid = rng.random((h, w)) > 0.2
    pc, tc = rng.integers(0, 3, 6), rng.integers(0, 3, 6)
    got = object_scores(pred, truth, valid, pred_class=pc, true_class=tc, tolerance_px=tol)
    ref = reference(pred, truth, valid, pc, tc, tol)
    for k, v in ref.items():
        g = getattr(got, k)
        assert (math.isnan(v) and math.isnan(g)) if isinstance(v, float) and math.isnan(v) else g == pytest.approx(v), k


def test_merged_and_split_fields() -> None:
    """Four true fields of 10 x 10 px in a 2 x 2 layout."""
    truth = np.zeros((20, 20), int)
    truth[:10, :10], truth[:10, 10:], truth[10:, :10], truth[10:, 10:] = 1, 2, 3, 4
    # one blob for the top two (same crop), the bottom two each split in half
    pred = np.zeros_like(truth)
    pred[:10] = 1
    pred[10:, :5], pred[10:, 5:10], pred[10:, 10:15], pred[10:, 15:] = 2, 3, 4, 5
    s = object_scores(pred, truth)
    assert (s.true_fields, s.predicted_fields, s.matched) == (4, 5, 0)
    assert s.over_segmentation == pytest.approx((0 + 0 + 0.5 + 0.5) / 4)
    assert s.under_segmentation == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    # the merge loses a true boundary (recall), the splits draw false ones (precision)
    assert s.extent_iou == 1.0 and s.boundary_recall < 1.0 and s.boundary_precision < 1.0
    # a perfect map, its classes swapped for one field
    cls = np.array([0, 1, 1, 2, 2])
    s = object_scores(truth, truth, pred_class=np.array([0, 1, 1, 2, 3]), true_class=cls)
    assert (s.f1, s.boundary_f1, s.matched_same_class, s.class_recall) == (1.0, 1.0, 3, 0.75)
    assert "F1 1.000" in s.line() and "same crop F1 0.750" in s.line()


def test_edges_of_the_raster_and_of_nodata_are_boundaries() -> None:
    ids = np.ones((3, 3), int)
    valid = np.ones((3, 3), bool)
    valid[1, 2] = False
    assert boundary_pixels(ids, valid).astype(int).tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match=r"\(3, 3\) px and the true fields \(2, 3\) px"):
        object_scores(ids, ids[:2])
    with pytest.raises(ValueError, match="field ids must be >= 0"):
        object_scores(-ids, ids)
    empty = object_scores(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert empty.true_fields == 0 and math.isnan(empty.f1) and empty.to_dict()["f1"] is None
