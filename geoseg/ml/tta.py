"""Test-time augmentation: a model's logits averaged over flips and rotations of its input.

Nadir imagery has no "up", and training already shows the model every flip and 90-degree
rotation of a chip (:mod:`geoseg.ml.chips`); at inference, the same tile seen under each of
those transforms gives slightly different logits, and their mean is a steadier prediction at
a proportional cost in forward passes. Modes:

``flips``
    identity, left-right, up-down and both (a 180-degree rotation): 4 passes.
``d4``
    the 8 symmetries of the square (``flips`` and their 90-degree rotations): 8 passes.

Each transformed input's logits are transformed back before they are averaged, so the mean is
taken pixel by pixel on the input's grid. Rotations by 90 degrees swap the tile's height and
width, which any tile size the model takes allows (both are multiples of its stride).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from geoseg.errors import ConfigError

__all__ = ["TTA_MODES", "TestTimeAugmented", "check_tta", "with_tta"]

#: Modes and their (rotations by 90 degrees, flip left-right) pairs, applied in that order.
TTA_MODES: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, False), (2, True)),
    "d4": tuple((k, f) for k in range(4) for f in (False, True)),
}


def check_tta(mode: str | None) -> str | None:
    """``mode`` when it names a mode (or is None), else :class:`ConfigError` listing them."""
    if mode is not None:
        _transforms(mode)
    return mode


def _transforms(mode: str) -> tuple[tuple[int, bool], ...]:
    try:
        return TTA_MODES[mode]
    except (KeyError, TypeError):
        raise ConfigError(f"tta {mode!r}: expected one of {', '.join(TTA_MODES)} "
                          f"(none: one pass; flips: 4 passes; d4: 8 passes)") from None


@cache  # one class for the process: a run's workers wrap the model for every task
def _class() -> Any:
    import torch

    class _TestTimeAugmented(torch.nn.Module):
        """``model`` whose forward returns its logits averaged over ``mode``'s transforms."""

        def __init__(self, model: Any, mode: str) -> None:
            super().__init__()
            self.model = model
            self.mode = mode
            self.transforms = _transforms(mode)
            self.takes_days = bool(getattr(model, "takes_days", False))
            self.geoseg_boundary = bool(getattr(model, "geoseg_boundary", False))  # averaged like the classes
            if hasattr(model, "geoseg_checkpoint"):  # named in the errors of geoseg.ml.infer
                self.geoseg_checkpoint = model.geoseg_checkpoint

        def forward(self, x: Any, *args: Any) -> Any:
            total = None
            for k, flip in self.transforms:
                t = torch.rot90(x, k, dims=(-2, -1)) if k else x
                t = torch.flip(t, dims=(-1,)) if flip else t
                y = self.model(t, *args)
                y = torch.flip(y, dims=(-1,)) if flip else y  # undo in reverse order
                y = torch.rot90(y, -k, dims=(-2, -1)) if k else y
                total = y.float() if total is None else total + y.float()
            return total / len(self.transforms)

    return _TestTimeAugmented


def TestTimeAugmented(model: Any, mode: str) -> Any:  # named as the class it builds on first use (torch is deferred)
    """A :class:`torch.nn.Module` wrapping ``model`` whose logits are averaged over ``mode``'s
    transforms (see the module docstring)."""
    return _class()(model, mode)


def with_tta(model: Any, mode: str | None) -> Any:
    """``model`` itself for ``None`` or ``"none"``, else wrapped in :func:`TestTimeAugmented`.

    >>> with_tta("a model", None), with_tta("a model", "none")
    ('a model', 'a model')
    >>> with_tta("a model", "rot")
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: tta 'rot': expected one of none, flips, d4 (none: one pass; flips: 4 passes; d4: 8 passes)
    """
    if mode is None or _transforms(mode) == TTA_MODES["none"]:
        return model
    wrapped = TestTimeAugmented(model, mode)
    wrapped.train(model.training)
    return wrapped
