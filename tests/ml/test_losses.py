"""Losses: hand-computed values, the ignore index, class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.ml.losses import CombinedLoss, SoftDiceLoss, WeightedCrossEntropy, class_weights, make_loss


def _onehot_logits(target: torch.Tensor, k: int, scale: float = 50.0) -> torch.Tensor:
    t = torch.where(target == 255, torch.zeros_like(target), target)
    return torch.nn.functional.one_hot(t, k).permute(0, 3, 1, 2).float() * scale


def test_cross_entropy_by_hand() -> None:
    # one pixel, 2 classes, logits (0, log 3): p = (1/4, 3/4)
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)
    ce = WeightedCrossEntropy()
    assert float(ce(logits, torch.tensor([[[1]]]))) == pytest.approx(-math.log(0.75))
    assert float(ce(logits, torch.tensor([[[0]]]))) == pytest.approx(-math.log(0.25))
    # two pixels with weights (1, 3): weighted mean (1 * -log .25 + 3 * -log .75) / 4
    logits2 = logits.repeat(1, 1, 1, 2)
    wce = WeightedCrossEntropy([1.0, 3.0])
    expected = (-math.log(0.25) - 3 * math.log(0.75)) / 4
    assert float(wce(logits2, torch.tensor([[[0, 1]]]))) == pytest.approx(expected)


def test_dice_by_hand() -> None:
    # 2 pixels, 2 classes; probabilities (0.5, 0.5) everywhere; targets 0 and 1
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # per class: I = 0.5, P = 1, T = 1 -> dice = (2 * 0.5 + s) / (2 + s)
    d0 = SoftDiceLoss(smooth=0.0)(logits, target)
    assert float(d0) == pytest.approx(1 - 0.5)
    d1 = SoftDiceLoss(smooth=1.0)(logits, target)
    assert float(d1) == pytest.approx(1 - 2 / 3)


def test_perfect_prediction_gives_dice_near_zero_and_small_ce() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8))
    logits = _onehot_logits(target, 4)
    assert float(SoftDiceLoss()(logits, target)) < 1e-6
    assert float(WeightedCrossEntropy()(logits, target)) < 1e-6
    wrong = _onehot_logits((target + 1) % 4, 4)
    assert float(SoftDiceLoss(smooth=0.0)(wrong, target)) == pytest.approx(1.0, abs=1e-6)
    assert float(SoftDiceLoss()(wrong, target)) > 0.98  # smooth=1 keeps it just below 1


def test_ignored_pixels_change_neither_loss_nor_gradient() -> None:
    torch.manual_seed(1)
    target = torch.randint(0, 3, (2, 6, 6))
    target[:, :2, :] = 255
    base = torch.randn(2, 3, 6, 6)
    other = base.clone()
    other[:, :, :2, :] = torch.randn(2, 3, 2, 6) * 10  # only where ignored
    for loss in (WeightedCrossEntropy([1.0, 2.0, 0.5]), SoftDiceLoss(), make_loss("ce+dice", [1.0, 2.0, 0.5])):
        a = base.clone().requires_grad_(True)
        b = other.clone().requires_grad_(True)
        la, lb = loss(a, target), loss(b, target)
        assert float(la.detach()) == pytest.approx(float(lb.detach()), abs=1e-6)
        la.backward()
        lb.backward()
        assert a.grad is not None and b.grad is not None
        assert float(a.grad[:, :, :2, :].abs().max()) == 0.0
        torch.testing.assert_close(a.grad, b.grad)


def test_all_ignored_gives_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    for loss in (WeightedCrossEntropy(), SoftDiceLoss(), make_loss()):
        v = loss(logits, target)
        assert float(v.detach()) == 0.0
        v.backward()


def test_combined_is_the_sum() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, 5)
    target = torch.randint(0, 3, (2, 5, 5))
    w = [1.0, 2.0, 3.0]
    comb = make_loss("ce+dice", w)
    assert isinstance(comb, CombinedLoss)
    expected = WeightedCrossEntropy(w)(logits, target) + SoftDiceLoss()(logits, target)
    assert float(comb(logits, target)) == pytest.approx(float(expected))


def test_class_weights_inverse_sqrt_normalised() -> None:
    w = class_weights([900, 100, 0])
    # frequencies .9, .1 -> 1/sqrt: 1.054, 3.162; pixel-weighted mean 1.265
    np.testing.assert_allclose(w[:2], [1 / math.sqrt(0.9), 1 / math.sqrt(0.1)] / np.float64(
        0.9 / math.sqrt(0.9) + 0.1 / math.sqrt(0.1)))
    assert 0.9 * w[0] + 0.1 * w[1] == pytest.approx(1.0)
    assert w[2] == w[1]  # an absent class gets the largest weight


def test_unknown_loss_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of ce\\+dice, ce, dice"):
        make_loss("focal")
