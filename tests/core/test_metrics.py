"""Metrics: hand-computed confusion matrices and scores, the ignore rule, block accumulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.metrics import (
    ConfusionAccumulator,
    confusion_matrix,
    f1,
    iou,
    mean_iou,
    pixel_accuracy,
    precision,
    recall,
    scores,
)

# 3 classes; target row-major, 255 = nodata label
TARGET = np.array([
    [0, 0, 0, 1],
    [0, 1, 1, 255],
    [2, 2, 0, 255],
])
PRED = np.array([
    [0, 0, 1, 1],
    [0, 1, 0, 2],  # the 2 falls on an ignored label
    [2, 0, 0, 0],  # the 0 too
])


def test_confusion_matrix_by_hand_with_an_ignored_label() -> None:
    cm = confusion_matrix(PRED, TARGET, 3)
    # target 0 (5 px): pred 0,0,1,0,0 -> 4 x 0, 1 x 1
    # target 1 (3 px): pred 1,1,0    -> 2 x 1, 1 x 0
    # target 2 (2 px): pred 2,0      -> 1 x 2, 1 x 0
    assert cm.tolist() == [[4, 1, 0], [1, 2, 0], [1, 0, 1]]
    assert cm.sum() == 10  # the two 255 pixels are not counted, whatever was predicted there


def test_scores_by_hand() -> None:
    cm = np.array([[4, 1, 0], [1, 2, 0], [1, 0, 1]])
    # class 0: TP 4, FP 2, FN 1; class 1: TP 2, FP 1, FN 1; class 2: TP 1, FP 0, FN 1
    np.testing.assert_allclose(iou(cm), [4 / 7, 2 / 4, 1 / 2])
    np.testing.assert_allclose(f1(cm), [8 / 11, 4 / 6, 2 / 3])
    np.testing.assert_allclose(precision(cm), [4 / 6, 2 / 3, 1 / 1])
    np.testing.assert_allclose(recall(cm), [4 / 5, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((4 / 7 + 0.5 + 0.5) / 3)
    assert pixel_accuracy(cm) == pytest.approx(7 / 10)


def test_valid_mask_excludes_pixels() -> None:
    valid = np.ones(TARGET.shape, bool)
    valid[0, 2] = False  # the one 0 -> 1 error
    cm = confusion_matrix(PRED, TARGET, 3, valid=valid)
    assert cm.tolist() == [[4, 0, 0], [1, 2, 0], [1, 0, 1]]


def test_absent_classes_are_nan_and_left_out_of_miou_but_false_alarms_count() -> None:
    # class 2 absent from target and prediction; class 3 predicted but absent from the target
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 1, 3])
    cm = confusion_matrix(p, t, 4)
    v = iou(cm)
    assert v[0] == 1.0 and v[1] == 0.5 and math.isnan(v[2]) and v[3] == 0.0
    assert mean_iou(cm) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert math.isnan(precision(cm)[2]) and math.isnan(recall(cm)[3]) and precision(cm)[3] == 0.0


def test_pixel_accuracy_is_not_the_headline_on_a_background_dominated_scene() -> None:
    target = np.zeros((100, 100), np.uint8)
    target[:5, :] = 1  # 5 % rice
    target[5:8, :] = 2  # 3 % wheat
    all_background = np.zeros_like(target)
    s = scores(confusion_matrix(all_background, target, 3), ["background", "rice", "wheat"])
    assert s.pixel_accuracy == pytest.approx(0.92)
    assert s.miou == pytest.approx(0.92 / 3)  # background IoU 0.92, rice 0, wheat 0
    assert s.miou < 0.35 < 0.9 < s.pixel_accuracy


def test_out_of_range_values_on_counted_pixels_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"prediction holds values \[7\] outside the class ids 0\.\.2"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"target holds values \[5\]"):
        confusion_matrix(np.array([0, 0]), np.array([0, 5]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_block_by_block_equals_whole(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, (n, 7))
    t[rng.random(t.shape) < 0.2] = 255
    p = rng.integers(0, k, (n, 7))
    acc = ConfusionAccumulator(k)
    for r in range(0, n, 3):
        acc.update(p[r : r + 3], t[r : r + 3])
    np.testing.assert_array_equal(acc.matrix, confusion_matrix(p, t, k))
    assert acc.pixels == int((t != 255).sum())


def test_to_dict_is_json_with_names_and_null_for_nan() -> None:
    s = scores(np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]]), ["background", "rice", "wheat"])
    d = json.loads(json.dumps(s.to_dict(), allow_nan=False))
    assert d["class_names"] == ["background", "rice", "wheat"]
    assert d["per_class_iou"] == {"background": 0.75, "rice": pytest.approx(2 / 3), "wheat": None}
    assert d["miou"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert d["pixels"] == 6 and d["confusion_matrix"][1] == [1, 2, 0]
    assert d["pixel_accuracy"] == pytest.approx(5 / 6)
