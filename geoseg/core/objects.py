"""Object-level scores of field maps: whole fields matched, not pixels counted. Pure numpy.

A crop map can score a high pixel mIoU while its "fields" are blobs of several real fields
that grow the same crop. These scores compare two **instance rasters** on one grid: each
pixel holds the id of the field it belongs to (0: no field), the predicted fields and the true
ones (rasterised field polygons).

Rules
-----
* Only pixels where ``valid`` is True count; a field with no such pixel is not a field here.
* **Match**: a predicted and a true field match when their IoU (shared pixels over the pixels
  of either) is above 0.5. Above 0.5 no field can match two others, so the matching is unique
  without any assignment step (the rule Fields of The World scores with).
* **Object precision** = matched predicted fields / predicted fields; **recall** = matched
  true fields / true fields; **F1** their harmonic mean. The class-aware variant counts a match
  only when both fields carry the same crop class.
* **Over-segmentation** of a true field *t*: ``1 - |t & p| / |t|`` with *p* the predicted field
  sharing most pixels with *t* (1 when none does); **under-segmentation**: ``1 - |t & p| / |p|``
  (left out when no field shares a pixel). Both are means over the true fields (Clinton et
  al. 2010; Persello et al. 2019): 0 is perfect.
* **Boundary F1 at a tolerance of d pixels**: a field pixel is a boundary pixel when a
  4-neighbour holds another id (or lies outside the raster or ``valid``); boundary precision is
  the share of predicted boundary pixels within d pixels (Euclidean) of a true boundary pixel,
  recall the converse.
* **Extent IoU**: the pixel IoU of "any field" between the two rasters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from geoseg.core.instances import Separation, class_counts, majority, separate_fields
from geoseg.core.sieve import label_fields, sieve

__all__ = ["ObjectScores", "boundary_pixels", "combine_scores", "mask_field_scores", "object_scores"]


@dataclass(frozen=True)
class ObjectScores:
    """Object-level scores of predicted fields against true fields (see the module notes)."""

    true_fields: int
    predicted_fields: int
    matched: int
    precision: float
    recall: float
    f1: float
    over_segmentation: float
    under_segmentation: float
    boundary_precision: float
    boundary_recall: float
    boundary_f1: float
    tolerance_px: float
    extent_iou: float
    #: Matches of the same crop class and the class-aware scores (None without classes).
    matched_same_class: int | None = None
    class_precision: float | None = None
    class_recall: float | None = None
    class_f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        """One line for a terminal."""
        cls = "" if self.class_f1 is None else f", same crop F1 {self.class_f1:.3f}"
        return (f"fields: {self.predicted_fields:,} predicted, {self.true_fields:,} true, {self.matched:,} matched at "
                f"IoU > 0.5: precision {self.precision:.3f}, recall {self.recall:.3f}, F1 {self.f1:.3f}{cls}; "
                f"over-/under-segmentation {self.over_segmentation:.3f}/{self.under_segmentation:.3f}; boundary F1 "
                f"{self.boundary_f1:.3f} within {self.tolerance_px:g} px; extent IoU {self.extent_iou:.3f}")


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else (0.0 if math.isfinite(p) and math.isfinite(r) else math.nan)


def boundary_pixels(ids: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Field pixels with a 4-neighbour of another id (or off the raster, or not valid).

    Examples
    --------
    >>> ids = np.array([[1, 1, 1, 2], [1, 1, 1, 2], [1, 1, 1, 2], [0, 0, 0, 0]])
    >>> boundary_pixels(ids).astype(int).tolist()
    [[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    """
    ok = np.ones(ids.shape, bool) if valid is None else valid.astype(bool)
    lab = np.where(ok, ids, -1)
    padded = np.pad(lab, 1, constant_values=-1)
    inner = padded[1:-1, 1:-1]
    edge = np.zeros(ids.shape, bool)
    for sl in ((slice(None, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
               (slice(1, -1), slice(None, -2)), (slice(1, -1), slice(2, None))):
        edge |= padded[sl] != inner
    return edge & (lab > 0)


def object_scores(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None, *,
                  pred_class: np.ndarray | None = None, true_class: np.ndarray | None = None,
                  tolerance_px: float = 1.0) -> ObjectScores:
    """Score predicted field instances ``pred`` against true ones ``truth`` (see the module notes).

    Parameters
    ----------
    pred, truth : (h, w) integer arrays
        Field ids, 0 for no field (ids need not be consecutive).
    valid : (h, w) bool array, optional
        The pixels to score (default: all).
    pred_class, true_class : 1-D integer arrays, optional
        The crop class of each id (``pred_class[id]``), for the class-aware scores.
    tolerance_px : float
        The boundary tolerance in pixels.

    Examples
    --------
    Two true fields side by side; the prediction merges them into one blob:

    >>> truth = np.array([[1, 1, 2, 2]] * 3)
    >>> s = object_scores(np.ones_like(truth), truth)
    >>> s.matched, s.recall, s.over_segmentation, s.under_segmentation
    (0, 0.0, 0.0, 0.5)
    >>> object_scores(truth, truth).f1
    1.0
    """
    if pred.shape != truth.shape:
        raise ValueError(f"the predicted fields are {pred.shape} px and the true fields {truth.shape} px; "
                         f"expected both on one grid")
    ok = np.ones(pred.shape, bool) if valid is None else valid.astype(bool)
    p = np.where(ok, pred, 0).astype(np.int64).ravel()
    t = np.where(ok, truth, 0).astype(np.int64).ravel()
    if (p < 0).any() or (t < 0).any():
        raise ValueError("field ids must be >= 0 (0: no field)")
    p_area = np.bincount(p)
    t_area = np.bincount(t)
    p_ids = np.flatnonzero(p_area[1:]) + 1
    t_ids = np.flatnonzero(t_area[1:]) + 1
    both = (p > 0) & (t > 0)
    width = int(t.max()) + 1
    pairs, inter = np.unique(p[both] * width + t[both], return_counts=True)
    pp, tt = pairs // width, pairs % width
    iou = inter / (p_area[pp] + t_area[tt] - inter)
    hit = iou > 0.5
    matched = int(hit.sum())
    precision, recall = _ratio(matched, p_ids.size), _ratio(matched, t_ids.size)

    # over/under-segmentation: each true field against the predicted field sharing most of it
    over = np.ones(t_ids.size)
    under = np.full(t_ids.size, np.nan)
    if pairs.size:
        order = np.lexsort((-inter, tt))  # by true id, largest overlap first
        first = order[np.r_[True, tt[order][1:] != tt[order][:-1]]]
        pos = np.searchsorted(t_ids, tt[first])
        over[pos] = 1 - inter[first] / t_area[tt[first]]
        under[pos] = 1 - inter[first] / p_area[pp[first]]

    bp, br = _boundary(pred, truth, ok, tolerance_px)
    fp, ft = p > 0, t > 0
    union = int((fp | ft).sum())
    kw: dict[str, Any] = {}
    if pred_class is not None and true_class is not None:
        pc, tc = np.asarray(pred_class), np.asarray(true_class)
        same = int((hit & (pc[pp] == tc[tt])).sum())
        cp, cr = _ratio(same, p_ids.size), _ratio(same, t_ids.size)
        kw = {"matched_same_class": same, "class_precision": cp, "class_recall": cr, "class_f1": _f1(cp, cr)}
    return ObjectScores(
        true_fields=int(t_ids.size), predicted_fields=int(p_ids.size), matched=matched,
        precision=precision, recall=recall, f1=_f1(precision, recall),
        over_segmentation=float(over.mean()) if over.size else math.nan,
        under_segmentation=float(np.nanmean(under)) if np.isfinite(under).any() else math.nan,
        boundary_precision=bp, boundary_recall=br, boundary_f1=_f1(bp, br), tolerance_px=float(tolerance_px),
        extent_iou=_ratio(int((fp & ft).sum()), union), **kw,
    )


def _boundary(pred: np.ndarray, truth: np.ndarray, ok: np.ndarray, tolerance: float) -> tuple[float, float]:
    """Boundary precision and recall within ``tolerance`` pixels."""
    from scipy.ndimage import distance_transform_edt

    bp, bt = boundary_pixels(pred, ok), boundary_pixels(truth, ok)
    if not bp.any() or not bt.any():
        return (_ratio(0, int(bp.sum())), _ratio(0, int(bt.sum())))
    near_t = distance_transform_edt(~bt) <= tolerance
    near_p = distance_transform_edt(~bp) <= tolerance
    return float(near_t[bp].mean()), float(near_p[bt].mean())


def mask_field_scores(mask: np.ndarray, valid: np.ndarray, true_ids: np.ndarray, *, min_pixels: int,
                      exclude: tuple[int, ...] = (), true_class: np.ndarray | None = None,
                      tolerance_px: float = 1.0, boundary: np.ndarray | None = None,
                      separation: Separation | None = None) -> ObjectScores:
    """The fields of a class ``mask`` scored against true field ids (:func:`object_scores`).

    The predicted fields are those ``geoseg polygonize`` traces: the mask sieved at
    ``min_pixels`` (:func:`geoseg.core.sieve.sieve`), then its 4-connected regions of one class,
    ``exclude`` classes making none (:func:`geoseg.core.sieve.label_fields`); with a
    ``boundary`` map (uint8, probability x 255), the fields separated on it
    (:func:`geoseg.core.instances.separate_fields`), each of its majority class. ``true_class``
    (the crop of each true id) adds the same-crop scores.
    """
    sieved = sieve(mask, min_pixels, valid=valid)
    if boundary is None:
        ids, classes = label_fields(sieved, valid, exclude)
    else:
        field = valid & ~np.isin(sieved, np.asarray(exclude, np.int64)) if exclude else valid
        ids = separate_fields(sieved, field, boundary, separation or Separation())
        n = int(ids.max(initial=0))
        classes = majority(class_counts(ids, sieved, n, int(sieved[field].max(initial=0)) + 1))
    pred_class = np.r_[-1, classes.astype(np.int64)] if true_class is not None else None
    return object_scores(ids, true_ids, valid, pred_class=pred_class, true_class=true_class,
                         tolerance_px=tolerance_px)


def combine_scores(parts: list[ObjectScores]) -> ObjectScores:
    """The scores of several windows (validation blocks) as one: fields and matches summed, so
    precision, recall and F1 are those of all the windows' fields; over-/under-segmentation,
    boundary precision/recall and extent IoU averaged over the windows, weighted by their true
    fields (predicted fields for boundary precision).

    >>> a = ObjectScores(10, 8, 6, 0.75, 0.6, 0.667, 0.1, 0.2, 0.9, 0.8, 0.847, 1.0, 0.95)
    >>> c = combine_scores([a, a])
    >>> (c.true_fields, c.matched, c.precision, c.recall, round(c.over_segmentation, 3))
    (20, 12, 0.75, 0.6, 0.1)
    """
    parts = [p for p in parts if p.true_fields or p.predicted_fields]
    if not parts:
        return object_scores(np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64))
    t = sum(p.true_fields for p in parts)
    n = sum(p.predicted_fields for p in parts)
    m = sum(p.matched for p in parts)

    def mean(attr: str, weight: str) -> float:
        pairs = [(getattr(p, attr), getattr(p, weight)) for p in parts
                 if getattr(p, weight) and math.isfinite(getattr(p, attr))]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else math.nan

    bp, br = mean("boundary_precision", "predicted_fields"), mean("boundary_recall", "true_fields")
    prec, rec = _ratio(m, n), _ratio(m, t)
    same = None
    cp = cr = cf = None
    if all(p.matched_same_class is not None for p in parts):
        same = sum(int(p.matched_same_class or 0) for p in parts)
        cp, cr = _ratio(same, n), _ratio(same, t)
        cf = _f1(cp, cr)
    return ObjectScores(t, n, m, prec, rec, _f1(prec, rec), mean("over_segmentation", "true_fields"),
                        mean("under_segmentation", "true_fields"), bp, br, _f1(bp, br), parts[0].tolerance_px,
                        mean("extent_iou", "true_fields"), same, cp, cr, cf)
