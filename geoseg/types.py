"""Type aliases and argument normalisers, applied once at the edge of the API."""

from __future__ import annotations

from typing import NamedTuple, Union

__all__ = ["Shape2d", "SomeShape", "shape_", "pair_"]


class Shape2d(NamedTuple):
    """A 2-D raster shape: ``(height, width)`` in pixels (rows, columns)."""

    height: int
    width: int


SomeShape = Union[int, tuple[int, int], Shape2d]


def pair_(value: int | tuple[int, int] | list[int], name: str = "value") -> tuple[int, int]:
    """Return ``value`` as a ``(y, x)`` pair of ints; a single int is used for both axes.

    Examples
    --------
    >>> pair_(32)
    (32, 32)
    >>> pair_((16, 8))
    (16, 8)
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got the bool {value!r}")
    if isinstance(value, int):
        return (value, value)
    try:
        y, x = value
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be an int or a pair (y, x) of ints, got {value!r}"
        ) from None
    if not (isinstance(y, int) and isinstance(x, int)) or isinstance(y, bool) or isinstance(x, bool):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    return (int(y), int(x))


def shape_(value: SomeShape) -> Shape2d:
    """Return ``value`` as a :class:`Shape2d`; a single int makes a square.

    Examples
    --------
    >>> shape_(512)
    Shape2d(height=512, width=512)
    >>> shape_((300, 400))
    Shape2d(height=300, width=400)
    """
    h, w = pair_(value, "shape")  # type: ignore[arg-type]
    if h < 0 or w < 0:
        raise ValueError(f"shape must not be negative, got {(h, w)}")
    return Shape2d(h, w)
