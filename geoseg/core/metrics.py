"""Segmentation metrics from a confusion matrix: pure numpy, no files.

Everything is derived from one ``(K, K)`` confusion matrix ``cm`` whose **rows are the
target (true) class and columns the predicted class**, so that large scenes can be scored
block by block: add the matrices of the blocks (:class:`ConfusionAccumulator`) and derive
the scores once at the end.

Rules
-----
* Pixels whose target is the ignore index (255, the mask nodata value) or that are False
  in the optional ``valid`` mask are not counted at all.
* **IoU** of class *k* is ``TP / (TP + FP + FN)``. A class that is absent from both the
  target and the prediction (``TP + FP + FN == 0``) has no IoU: NaN.
* **mIoU** is the mean IoU over the classes present in the target *or* the prediction,
  i.e. NaN entries are left out. A class that is predicted but absent from the target
  therefore counts with IoU 0 (false alarms are penalised); a class absent from both
  does not dilute the mean.
* **F1** (Dice) is ``2 TP / (2 TP + FP + FN)``, NaN under the same rule as IoU.
  **Precision** ``TP / (TP + FP)`` is NaN for a class never predicted; **recall**
  ``TP / (TP + FN)`` is NaN for a class absent from the target.
* **Pixel accuracy** is ``trace(cm) / cm.sum()``. It is reported but never the headline:
  on a background-dominated scene an all-background map scores a high pixel accuracy
  and a low mIoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoseg.classes import NODATA

__all__ = [
    "confusion_matrix",
    "ConfusionAccumulator",
    "iou",
    "mean_iou",
    "f1",
    "precision",
    "recall",
    "pixel_accuracy",
    "Scores",
    "scores",
]


def confusion_matrix(
    pred: np.ndarray,
    target: np.ndarray,
    num_classes: int,
    *,
    ignore_index: int = NODATA,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Count ``(target, prediction)`` pairs into a ``(K, K)`` int64 matrix (rows = target).

    Parameters
    ----------
    pred, target : ndarray of int
        Predicted and true class ids, same shape.
    num_classes : int
        ``K``: class ids run ``0..K-1``.
    ignore_index : int
        Target value that is not counted (default 255, the mask nodata value).
    valid : ndarray of bool, optional
        Same shape; only True pixels are counted (e.g. pixels where the image has data).

    Raises
    ------
    ValueError
        For shapes that differ, or a counted pixel whose target or prediction is not in
        ``0..K-1`` (the message lists the values found).

    Examples
    --------
    >>> t = np.array([[0, 0, 1], [1, 255, 2]])
    >>> p = np.array([[0, 1, 1], [1, 0, 2]])
    >>> confusion_matrix(p, t, 3)
    array([[1, 1, 0],
           [0, 2, 0],
           [0, 0, 1]])
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    keep = target != ignore_index
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != target.shape:
            raise ValueError(f"valid mask shape {valid.shape} differs from target shape {target.shape}")
        keep &= valid
    t = target[keep].astype(np.int64, copy=False)
    p = pred[keep].astype(np.int64, copy=False)
    for name, a in (("target", t), ("prediction", p)):
        bad = (a < 0) | (a >= num_classes)
        if bad.any():
            vals = np.unique(a[bad])[:10].tolist()
            raise ValueError(
                f"{name} holds values {vals} outside the class ids 0..{num_classes - 1} on counted pixels; "
                f"mark nodata with {ignore_index} or pass a valid mask"
            )
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class ConfusionAccumulator:
    """Add confusion matrices block by block, so memory stays bounded by one block.

    Examples
    --------
    >>> acc = ConfusionAccumulator(2)
    >>> acc.update(np.array([0, 1]), np.array([0, 0]))
    >>> acc.update(np.array([1]), np.array([1]))
    >>> acc.matrix.tolist(), acc.pixels
    ([[1, 1], [0, 1]], 3)
    """

    num_classes: int
    ignore_index: int = NODATA
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count one block (see :func:`confusion_matrix`)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, ignore_index=self.ignore_index, valid=valid)

    @property
    def pixels(self) -> int:
        """Pixels counted so far."""
        return int(self.matrix.sum())


def _parts(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got shape {cm.shape}")
    tp = np.diag(cm)
    return tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp  # tp, fp, fn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def iou(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)``; NaN for a class absent from target and prediction.

    Examples
    --------
    >>> iou(np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]])).round(3).tolist()
    [0.6, 0.333, nan]
    """
    tp, fp, fn = _parts(cm)
    return _ratio(tp, tp + fp + fn)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in the target or the prediction (NaN if none).

    Examples
    --------
    >>> round(mean_iou(np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]])), 4)
    0.4667
    """
    v = iou(cm)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def f1(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 (Dice) ``2 TP / (2 TP + FP + FN)``; NaN for a class absent from both."""
    tp, fp, fn = _parts(cm)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def precision(cm: np.ndarray) -> np.ndarray:
    """Per-class precision ``TP / (TP + FP)``; NaN for a class never predicted."""
    tp, fp, _ = _parts(cm)
    return _ratio(tp, tp + fp)


def recall(cm: np.ndarray) -> np.ndarray:
    """Per-class recall ``TP / (TP + FN)``; NaN for a class absent from the target."""
    tp, _, fn = _parts(cm)
    return _ratio(tp, tp + fn)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Share of counted pixels predicted correctly (NaN for an empty matrix). Never the headline.

    Examples
    --------
    >>> pixel_accuracy(np.array([[3, 1], [1, 1]]))
    0.6666666666666666
    """
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else math.nan


def _json_float(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class Scores:
    """All scores of one confusion matrix, with class names.

    ``to_dict`` gives a JSON-ready mapping (NaN becomes ``None``): ``miou``,
    ``per_class_iou``, ``per_class_f1``, ``per_class_precision``, ``per_class_recall``
    (by class name), ``pixel_accuracy``, ``confusion_matrix`` (rows = target),
    ``class_names`` and ``pixels``.
    """

    confusion: np.ndarray
    class_names: tuple[str, ...]

    @property
    def miou(self) -> float:
        return mean_iou(self.confusion)

    @property
    def iou(self) -> np.ndarray:
        return iou(self.confusion)

    @property
    def f1(self) -> np.ndarray:
        return f1(self.confusion)

    @property
    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.confusion)

    @property
    def pixels(self) -> int:
        return int(np.asarray(self.confusion).sum())

    def to_dict(self) -> dict[str, Any]:
        def by_name(values: np.ndarray) -> dict[str, float | None]:
            return {n: _json_float(float(v)) for n, v in zip(self.class_names, values)}

        return {
            "miou": _json_float(self.miou),
            "per_class_iou": by_name(self.iou),
            "per_class_f1": by_name(self.f1),
            "per_class_precision": by_name(precision(self.confusion)),
            "per_class_recall": by_name(recall(self.confusion)),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "confusion_matrix": np.asarray(self.confusion, dtype=np.int64).tolist(),
            "class_names": list(self.class_names),
            "pixels": self.pixels,
        }


def scores(cm: np.ndarray, class_names: Sequence[str]) -> Scores:
    """Bundle a confusion matrix with its class names (see :class:`Scores`).

    Examples
    --------
    >>> s = scores(np.array([[8, 0], [2, 0]]), ["background", "rice"])
    >>> s.to_dict()["miou"], s.to_dict()["pixel_accuracy"]
    (0.4, 0.8)
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix {cm.shape} does not fit {len(class_names)} class names")
    return Scores(cm, tuple(class_names))
