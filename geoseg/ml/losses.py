"""Training losses for segmentation: class-weighted cross-entropy, soft Dice, and their sum.

All losses take logits ``(B, K, H, W)`` and integer targets ``(B, H, W)`` (int64), and
leave out pixels whose target is ``ignore_index`` (255: label nodata, image nodata,
unlabelled): they change neither the value nor the gradient.

* **Cross-entropy** is weighted per class so that rare crops count; weights come from
  :func:`class_weights` (inverse square root of the training pixel frequency, a milder
  correction than inverse frequency, which over-fits the rarest class's few fields).
* **Soft Dice** is ``1 - mean_k 2 sum(p_k t_k) / (sum p_k + sum t_k)`` over the classes
  present in the batch's target, with softmax probabilities ``p``; it optimises overlap
  directly and is insensitive to class imbalance.
* **ce+dice** (default for training) adds them: CE gives well-behaved per-pixel gradients
  from the first step, Dice pulls the small classes' overlap up.
* A model with a **boundary output** (``train --fields``; its last channel) adds
  :class:`BoundaryLoss`: binary cross-entropy of that channel against the field-edge targets
  the chips carry (:data:`geoseg.ml.chips.EDGE_STEP`), plus a soft Dice of the edge pixels (a
  thin line is a small share of a chip: Dice keeps the model from predicting none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import NODATA
from geoseg.errors import ConfigError

__all__ = [
    "LOSSES",
    "class_weights",
    "WeightedCrossEntropy",
    "SoftDiceLoss",
    "CombinedLoss",
    "BoundaryLoss",
    "make_loss",
]

#: Loss names accepted by :func:`make_loss` (and ``geoseg train --loss``).
LOSSES = ("ce+dice", "ce", "dice")


def class_weights(counts: Sequence[int] | np.ndarray, *, power: float = 0.5, floor: float = 1e-4) -> np.ndarray:
    """Class weights ``frequency ** -power``, normalised so that their pixel-weighted mean is 1.

    With the default ``power=0.5`` (inverse square root) a class 100 times rarer weighs
    10 times more. A class with no training pixels gets the largest weight of the others
    (it cannot affect cross-entropy, which only sees target pixels). Frequencies below
    ``floor`` are raised to it, bounding the weights.

    Examples
    --------
    >>> class_weights([75, 25]).round(3).tolist()
    [0.845, 1.464]
    >>> class_weights([10, 0, 10]).tolist()
    [1.0, 1.0, 1.0]
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or (c < 0).any():
        raise ValueError(f"counts must be a non-empty 1-D array of non-negative numbers, got {counts!r}")
    total = c.sum()
    if total <= 0:
        return np.ones_like(c)
    freq = c / total
    present = freq > 0
    w = np.ones_like(c)
    w[present] = np.maximum(freq[present], floor) ** -power
    w /= float((freq * w).sum())
    if (~present).any():
        w[~present] = w[present].max()
    return w


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with optional class weights, ignoring ``ignore_index`` pixels.

    The mean is weighted (``sum w_t * ce / sum w_t`` over counted pixels), as in
    :func:`torch.nn.functional.cross_entropy`. A batch with no counted pixel gives 0
    (with a gradient of zero), not NaN.
    """

    def __init__(self, weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
                 ignore_index: int = NODATA) -> None:
        super().__init__()
        w = None if weight is None else torch.as_tensor(np.asarray(weight, dtype=np.float32))
        self.register_buffer("weight", w)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = target != self.ignore_index
        if not bool(keep.any()):
            return logits.sum() * 0.0
        w = None if self.weight is None else self.weight.to(dtype=logits.dtype)
        return F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore_index)


class SoftDiceLoss(nn.Module):
    """Soft multi-class Dice loss over softmax probabilities, ignoring ``ignore_index`` pixels.

    ``1 - mean_k (2 I_k + s) / (P_k + T_k + s)`` where, over counted pixels of the whole
    batch, ``I_k = sum p_k t_k``, ``P_k = sum p_k`` and ``T_k = sum t_k`` (``t`` one-hot);
    the mean runs over the classes present in the batch's target. ``smooth`` (``s``) keeps
    it finite; a batch with no counted pixel gives 0.
    """

    def __init__(self, ignore_index: int = NODATA, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        keep = target != self.ignore_index
        if not bool(keep.any()):
            return logits.sum() * 0.0
        prob = torch.softmax(logits.float(), dim=1)
        keep_f = keep.unsqueeze(1).to(prob.dtype)  # (B, 1, H, W)
        safe = torch.where(keep, target, torch.zeros_like(target))
        onehot = F.one_hot(safe, k).permute(0, 3, 1, 2).to(prob.dtype) * keep_f
        prob = prob * keep_f
        dims = (0, 2, 3)
        inter = (prob * onehot).sum(dims)
        card = prob.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (card + self.smooth)
        present = onehot.sum(dims) > 0
        return 1.0 - dice[present].mean()


class CombinedLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice`` (see the module notes)."""

    def __init__(self, ce: WeightedCrossEntropy, dice: SoftDiceLoss, ce_weight: float = 1.0,
                 dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ce = ce
        self.dice = dice
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def make_loss(name: str = "ce+dice", weight: Sequence[float] | np.ndarray | None = None,
              ignore_index: int = NODATA) -> Any:
    """Build the loss called ``name`` (one of :data:`LOSSES`).

    Raises
    ------
    ConfigError
        For an unknown name (the message lists the choices).

    Examples
    --------
    >>> make_loss("dice").__class__.__name__
    'SoftDiceLoss'
    >>> make_loss("focal")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: unknown loss 'focal'; choose one of ce+dice, ce, dice
    """
    key = str(name).lower().replace(" ", "")
    if key == "ce":
        return WeightedCrossEntropy(weight, ignore_index)
    if key == "dice":
        return SoftDiceLoss(ignore_index)
    if key in ("ce+dice", "dice+ce"):
        return CombinedLoss(WeightedCrossEntropy(weight, ignore_index), SoftDiceLoss(ignore_index))
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


class BoundaryLoss(nn.Module):
    """The class loss on all channels but the last, plus ``weight x`` (binary cross-entropy + soft
    Dice) of the last (the boundary logit) on the pixels whose edge state is known.

    Targets are ``class + step x state`` (state 0: not an edge, 1: an edge, 2: unknown) or
    ``ignore_index``.
    """

    def __init__(self, class_loss: nn.Module, step: int, weight: float = 1.0, ignore_index: int = NODATA) -> None:
        super().__init__()
        self.class_loss = class_loss
        self.step = int(step)
        self.weight = float(weight)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignored = target == self.ignore_index
        state = torch.where(ignored, torch.full_like(target, 2), target // self.step)
        classes = torch.where(ignored, target, target % self.step)
        loss = self.class_loss(logits[:, :-1], classes)
        known = state < 2
        if not bool(known.any()):
            return loss + logits[:, -1].sum() * 0.0
        z = logits[:, -1][known].float()
        t = (state[known] == 1).float()
        bce = F.binary_cross_entropy_with_logits(z, t)
        p = torch.sigmoid(z)
        dice = 1.0 - (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
        return loss + self.weight * (bce + dice)
