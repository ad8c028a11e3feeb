"""The spatial train/validation split of a training scene.

Each scene is cut into square blocks (``block`` px, default two tiles, see
:func:`block_size`). One block in :data:`VAL_PERIOD` is held out for validation, on the
diagonal pattern ``(block_row + 2 * block_col) % 5 == k``: no two validation blocks share
an edge, and every block row and column holds some, so validation samples the whole scene
rather than one corner. Of the five patterns, one holding 10-35 % of the labelled pixels is
drawn with the seed (:func:`make_split`). Training chips never overlap a validation block
(:meth:`Split.overlaps_validation`, checked for every chip by
:class:`geoseg.ml.chips.ChipSampler`). Validation pixels are still autocorrelated with
training pixels near the block edges, so validation scores are slightly optimistic for a
distant region.

Point labels (:mod:`geoseg.io.points`) are split by points: each point, with all its pixels,
goes to the side of the block that holds the point itself (:meth:`Split.holds_out`), and the
block counts the pattern is drawn from count each point's pixels in that block. A training
point's pixels that reach into a validation block are never in a training chip (chips do not
overlap validation blocks); a validation point's pixels that reach into a training block are
not training labels either (training reads only the training points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoseg.core.grid import Window
from geoseg.errors import ConfigError, LabelError
from geoseg.io.labels import iter_blocks

__all__ = ["Split", "make_split", "block_size", "VAL_PERIOD", "MIN_BLOCKS"]

#: One block in VAL_PERIOD is a validation block.
VAL_PERIOD = 5
#: Fewest blocks a scene is cut into; smaller scenes get blocks of one tile.
MIN_BLOCKS = 10


@dataclass(frozen=True)
class Split:
    """Validation blocks of one scene.

    Attributes
    ----------
    shape : (int, int)
        Scene ``(height, width)``.
    block : int
        Block side in pixels.
    val : ndarray of bool, (block rows, block cols)
        True for validation blocks.
    counts : ndarray of int64, (block rows, block cols, K)
        Labelled pixels per class in each block.
    pattern : int
        ``k`` of ``(row + 2 * col) % 5 == k``.
    """

    shape: tuple[int, int]
    block: int
    val: np.ndarray
    counts: np.ndarray
    pattern: int

    def windows(self, validation: bool) -> list[Window]:
        """The validation (or training) block windows, in row-major order."""
        return [w for i, j, w in iter_blocks(self.shape, self.block) if bool(self.val[i, j]) == validation]

    @property
    def val_rects(self) -> np.ndarray:
        """``(n, 4)`` int64 ``row0, col0, row1, col1`` (end-exclusive) of the validation blocks."""
        rects = [(int(w.row_off), int(w.col_off), int(w.row_off + w.height), int(w.col_off + w.width))
                 for w in self.windows(True)]
        return np.asarray(rects, np.int64).reshape(-1, 4)

    def train_counts(self) -> np.ndarray:
        """Labelled pixels per class over the training blocks."""
        return np.asarray(self.counts[~self.val].sum(axis=0), np.int64)

    def holds_out(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """True for the pixels ``(rows, cols)`` that lie in a validation block.

        Point labels are split with it, point by point, by the pixel under each point: a point
        and all its pixels go to validation or to training, never both.

        Examples
        --------
        >>> s = Split((10, 10), 5, np.array([[True, False], [False, False]]), np.zeros((2, 2, 1)), 0)
        >>> s.holds_out(np.array([0, 4, 7]), np.array([4, 5, 1])).tolist()
        [True, False, False]
        """
        r = np.asarray(rows, np.int64) // self.block
        c = np.asarray(cols, np.int64) // self.block
        return np.asarray(self.val[r, c], bool)

    def overlaps_validation(self, window: Window) -> bool:
        """True when ``window`` shares a pixel with a validation block."""
        return bool(_hits(self.val_rects, int(window.row_off), int(window.col_off),
                          int(window.height), int(window.width)))


def _hits(rects: np.ndarray, r: int, c: int, h: int, w: int) -> bool:
    """True when the ``h`` x ``w`` window at row ``r``, column ``c`` overlaps one of ``rects``."""
    if rects.size == 0:
        return False
    return bool(((r < rects[:, 2]) & (r + h > rects[:, 0]) & (c < rects[:, 3]) & (c + w > rects[:, 1])).any())


def block_size(shape: tuple[int, int], tile: int, block: int | None = None) -> int:
    """The split's block side: ``block`` if given, else two tiles, or one tile when two leave fewer than 10 blocks.

    Examples
    --------
    >>> block_size((2048, 2048), 256), block_size((300, 300), 64)
    (512, 64)
    """
    if block is not None:
        if block < 1:
            raise ConfigError(f"block must be a positive number of pixels, got {block}")
        return int(block)
    b = 2 * tile
    n = math.ceil(shape[0] / b) * math.ceil(shape[1] / b)
    return b if n >= MIN_BLOCKS else tile


def make_split(counts: np.ndarray, shape: tuple[int, int], block: int, rng: np.random.Generator,
               source: str = "labels") -> Split:
    """Choose the validation pattern for a scene from its per-block label counts.

    Of the five patterns ``(row + 2 * col) % 5 == k``, those holding 10-35 % of the
    labelled pixels (and leaving some for training) are candidates and one is drawn with
    ``rng``; failing that, the one closest to 20 %.

    Raises
    ------
    LabelError
        When no pattern leaves labelled pixels on both sides (labels in too few blocks).
    """
    nb_r, nb_c = counts.shape[:2]
    ii, jj = np.meshgrid(np.arange(nb_r), np.arange(nb_c), indexing="ij")
    pattern = (ii + 2 * jj) % VAL_PERIOD
    per_block = counts.sum(axis=2)
    total = int(per_block.sum())
    if total == 0:
        raise LabelError(
            f"{source}: no labelled pixels on the image (every label is nodata/255 or outside the image); "
            f"check that the labels cover the image and use the class ids of the class file"
        )
    share = np.array([per_block[pattern == k].sum() / total for k in range(VAL_PERIOD)])
    usable = [k for k in range(VAL_PERIOD) if 0 < share[k] < 1]
    if not usable:
        raise LabelError(
            f"{source}: all labelled pixels lie in one {block} px block pattern, so no block can be held out for "
            f"validation with labels left for training; label a larger area, or use a smaller --tile "
            f"(blocks are two tiles wide)"
        )
    good = [k for k in usable if 0.10 <= share[k] <= 0.35]
    k = int(rng.choice(good)) if good else min(usable, key=lambda q: abs(share[q] - 0.2))
    return Split(tuple(shape), block, pattern == k, counts, k)  # type: ignore[arg-type]
