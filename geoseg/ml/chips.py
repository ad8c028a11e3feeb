"""Training chips: random windows of the training blocks, their band statistics, and batches.

Chips of ``tile`` x ``tile`` px are drawn at random from the training blocks of a
:class:`geoseg.ml.split.Split` (a block chosen in proportion to its labelled pixels, the
chip centred at a random point in it), read with :func:`geoseg.io.raster.read_tile`, and
kept when at least half their pixels hold image data and one pixel holds a label. Each
gets one of the 8 flips / 90-degree rotations (the same on image and labels) and, in a
training batch, a mild per-band gain and offset jitter. Nothing is cached beyond GDAL's
block cache: memory is bounded by one batch of chips, whatever the scene size.

The normalisation statistics (per-band mean and std) come from the valid image pixels of up
to :data:`STAT_WINDOWS` chips - sampled windows, never the whole scene.

**Point labels** (:mod:`geoseg.io.points`) label a few pixels per point, so a chip placed at
random in a block would often hold none (2,000 points on a 2048 px scene leave most 64 px
chips empty) and be read only to be skipped. For them a chip is placed **around a training
point** instead: a point is drawn in proportion to its labelled pixels and the chip is put so
that the point lies at a uniformly random position inside it (not always at its centre, so
the model learns no "the label is in the middle" rule), then kept under the same rules as
above. Every chip then holds at least that point, plus whatever other training points fall
in it.

**Dates** (a model that reads the stack date by date, :class:`ChipDates`): a chip's pixels
are read band by band and each date counts as observed where all its bands hold data; a chip
is kept when at least half its pixels saw one date. In a training batch, clouds are then
**simulated** on top of the real gaps (:func:`simulate_clouds`): each date is dropped whole
with probability ``dropout`` (scaled by the share of the chip's pixel-dates the real sky left
clear), and each date kept is covered with cloud blobs with the same probability, at least one
date of the chip kept. Labels stay where a pixel still sees a date,
so one model learns to classify any subset of the season's dates. A model that reads dates
gets a validity plane per date after the bands (:func:`geoseg.ml.infer.with_validity`).

Every random choice comes from the sampler's ``numpy.random.Generator``, so the same seed
gives the same chips in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.classes import NODATA
from geoseg.core.dates import DateLayout
from geoseg.core.grid import Window
from geoseg.errors import LabelError, TileError
from geoseg.io.labels import iter_blocks, window_tile
from geoseg.io.raster import read_tile
from geoseg.ml.infer import normalise, with_validity
from geoseg.ml.split import Split

__all__ = ["ChipSampler", "ChipDates", "EdgeLabels", "EDGE_STEP",
           "band_statistics", "chip_batch", "simulate_clouds", "STAT_WINDOWS",
           "MIN_VALID_SHARE", "MAX_TRIES", "BLOB_CELL"]

#: Most chips read for the normalisation statistics.
STAT_WINDOWS = 64
#: A chip is kept when at least this share of its pixels hold image data.
MIN_VALID_SHARE = 0.5
#: Most tries at placing a chip, or at finding a chip worth keeping, before giving up.
MAX_TRIES = 500
#: Simulated cloud blobs vary over about this many pixels (320 m at 10 m: the size of small cumulus).
BLOB_CELL = 32
#: Targets of a model with a boundary output: ``class + EDGE_STEP x state``, state 0 (not on a
#: field's edge), 1 (on one) or 2 (unknown: a crop pixel no field polygon covers); 255 stays
#: "no label" (:class:`geoseg.ml.losses.BoundaryLoss` decodes them).
EDGE_STEP = 256


class EdgeLabels:
    """Labels whose targets also say which pixels lie on a field's edge (``train --fields``).

    ``read(window)`` gives ``labels.read(window) + EDGE_STEP x state`` (uint16; see
    :data:`EDGE_STEP`) from the field polygons' edges (:class:`geoseg.io.field_polygons.FieldEdges`):
    a labelled pixel inside a field is an edge pixel or not; outside every field, a pixel of a
    class that makes no field (``crop: false``) is not on an edge, and a crop pixel is unknown
    (its field was not drawn). Anything else (points' anchors, ``path``) is the labels'.
    """

    def __init__(self, labels: Any, edges: Any, crop_ids: Sequence[int]) -> None:
        self.labels = labels
        self.edges = edges
        self.crop = np.zeros(256, bool)
        self.crop[list(crop_ids)] = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.labels, name)

    def read(self, window: Window) -> np.ndarray:
        lab = self.labels.read(window)
        edge, inside = self.edges.read(window)
        state = np.where(inside, edge.astype(np.uint16), np.where(self.crop[lab], np.uint16(2), np.uint16(0)))
        return np.where(lab == NODATA, np.uint16(NODATA), lab.astype(np.uint16) + np.uint16(EDGE_STEP) * state)


@dataclass(frozen=True)
class ChipDates:
    """How chips are read for a model that reads dates.

    Attributes
    ----------
    layouts : sequence of DateLayout
        Each scene's dates (the same number of dates and bands in every scene).
    dropout : float
        Probability of dropping a date whole, and of covering a kept date with cloud blobs
        (:func:`simulate_clouds`); 0 trains on the real gaps only.
    pooled : bool
        Band statistics shared by every date (a temporal model, which may later read other
        dates), else one per band of the stack.
    """

    layouts: Sequence[DateLayout]
    dropout: float = 0.4
    pooled: bool = False


def _blobs(h: int, w: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A (h, w) bool mask of smooth random blobs covering about ``share`` of the pixels."""
    from scipy.ndimage import zoom

    gh, gw = h // BLOB_CELL + 2, w // BLOB_CELL + 2
    field = zoom(rng.standard_normal((gh, gw)), (h / gh * 1.0001, w / gw * 1.0001), order=1)[:h, :w]
    return field > np.quantile(field, 1.0 - share)


def simulate_clouds(observed: np.ndarray, dropout: float, rng: np.random.Generator) -> np.ndarray:
    """``observed`` (T, h, w) with simulated clouds on top: each date dropped whole with
    probability ``dropout`` x the share of the chip's pixel-dates observed; each date kept
    covered with blobs (10-60 % of it) with the same probability; one date always kept whole
    from the drop. Scaling by what the chip saw keeps a chip that real clouds already took
    half of from losing most of the rest: the simulated clouds go mostly where the sky was clear.

    Examples
    --------
    >>> obs = np.ones((6, 64, 64), bool)
    >>> out = simulate_clouds(obs, 0.5, np.random.default_rng(1))
    >>> bool(out.any(axis=(1, 2)).any()), bool((out <= obs).all()), bool(0 < out.mean() < 1)
    (True, True, True)
    >>> bool((simulate_clouds(obs, 0.0, np.random.default_rng(1)) == obs).all())
    True
    """
    if dropout <= 0:
        return observed
    t, h, w = observed.shape
    out = observed.copy()
    dropout = dropout * float(observed.mean())
    drop = rng.random(t) < dropout
    if drop.all():
        drop[int(rng.integers(t))] = False
    out[drop] = False
    for i in np.flatnonzero(~drop):
        if rng.random() < dropout:
            out[i] &= ~_blobs(h, w, float(rng.uniform(0.1, 0.6)), rng)
    return out


class ChipSampler:
    """Draw training chips from the training blocks of one or more scenes (see the module notes).

    Parameters
    ----------
    scenes : sequence of (open dataset, labels, Split)
        Each scene's open image, its labels and its split.
    tile : int
        Chip side in pixels.
    rng : numpy.random.Generator
        All randomness (block, position, augmentation) comes from it.
    valid_rule : {"all", "any"}
        Image validity rule (not used with ``dates``).
    dates : ChipDates, optional
        For a model that reads dates: chips then carry which dates each pixel saw (see the
        module notes).
    """

    def __init__(self, scenes: Sequence[tuple[Any, Any, Split]], tile: int, rng: np.random.Generator,
                 valid_rule: str = "all", dates: ChipDates | None = None) -> None:
        self.scenes = list(scenes)
        self.tile = int(tile)
        self.rng = rng
        self.valid_rule = valid_rule
        self.dates = dates
        weights: list[np.ndarray] = []
        index: list[np.ndarray] = []  # rows: scene, kind (0 block, 1 point), row, col, height, width
        for s, (_, labels, split) in enumerate(self.scenes):
            anchors = getattr(labels, "anchors", None)
            if anchors is not None:  # point labels: chips around the training points
                px = np.asarray(labels.pixels_per_point, np.float64)
                a = np.asarray(anchors, np.int64).reshape(-1, 2)
                index.append(np.column_stack([np.full(len(a), s), np.ones(len(a), np.int64), a,
                                              np.ones((len(a), 2), np.int64)]).astype(np.int64))
                weights.append(px)
                continue
            per_block = split.counts.sum(axis=2)
            for i, j, w in iter_blocks(split.shape, split.block):
                if not split.val[i, j] and per_block[i, j] > 0:
                    weights.append(np.array([float(per_block[i, j])]))
                    index.append(np.array([[s, 0, int(w.row_off), int(w.col_off), int(w.height), int(w.width)]],
                                          np.int64))
        p = np.concatenate(weights) if weights else np.zeros(0)
        if not p.size or p.sum() <= 0:
            names = ", ".join(str(getattr(lab, "path", "?")) for _, lab, _ in self.scenes)
            raise LabelError(
                f"{names}: no training block (outside the validation blocks) holds labels; label more of the image "
                f"or use a smaller --tile (blocks are two tiles wide)"
            )
        self._p = p / p.sum()
        self._index = np.concatenate(index)
        self.tries = 0
        self.drawn = 0

    def window(self) -> tuple[int, Window]:
        """A random chip window (scene index, window) that overlaps no validation block."""
        t = self.tile
        for _ in range(MAX_TRIES):
            s, kind, br, bc, bh, bw = (int(v) for v in self._index[int(self.rng.choice(len(self._index), p=self._p))])
            split = self.scenes[s][2]
            h, w = split.shape
            if kind:  # a point: anywhere inside the chip
                r, c = br - int(self.rng.integers(t)), bc - int(self.rng.integers(t))
            else:  # a block: the chip centred at a random pixel of it
                r = br + int(self.rng.integers(bh)) - t // 2
                c = bc + int(self.rng.integers(bw)) - t // 2
            r = int(np.clip(r, min(0, h - t), max(0, h - t)))
            c = int(np.clip(c, min(0, w - t), max(0, w - t)))
            self.tries += 1
            win = Window(c, r, t, t)
            if not split.overlaps_validation(win):
                return s, win
        raise TileError(
            f"could not place a {t} px training chip away from the validation blocks in {MAX_TRIES} tries; "
            f"use a smaller --tile (e.g. {max(16, t // 2)})"
        )

    def chip(self, augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, Window, int]:
        """One kept chip: ``(image (C, t, t), target (t, t) int64 with 255 ignored, valid (t, t), window, scene)``.

        With :attr:`dates`, ``valid`` is which dates each pixel saw, (T, t, t), with simulated
        clouds when ``augment``; the target keeps the pixels that still see a date.
        """
        for _ in range(MAX_TRIES):
            s, win = self.window()
            src, labels, _ = self.scenes[s]
            lab = labels.read(win)
            if not (lab != NODATA).any():
                continue
            if self.dates is None:
                td = read_tile(src, window_tile(win, src.transform), rule=self.valid_rule)  # type: ignore[arg-type]
                valid = seen = td.valid
                if valid.mean() < MIN_VALID_SHARE:
                    continue
            else:
                td = read_tile(src, window_tile(win, src.transform), rule="band")
                valid = self.dates.layouts[s].observed(td.valid)
                if valid.any(axis=0).mean() < MIN_VALID_SHARE:  # judged on the real gaps
                    continue
                if augment:
                    valid = simulate_clouds(valid, self.dates.dropout, self.rng)
                seen = valid.any(axis=0)
            target = np.where(seen, lab, NODATA).astype(np.int64)
            if not (target != NODATA).any():
                continue
            img = td.array
            if augment:
                k = int(self.rng.integers(4))
                flip = bool(self.rng.integers(2))
                img, target, valid = (_d4(a, k, flip) for a in (img, target, valid))
            self.drawn += 1
            return np.ascontiguousarray(img), np.ascontiguousarray(target), np.ascontiguousarray(valid), win, s
        raise LabelError(
            f"{MAX_TRIES} chips in a row were mostly nodata or unlabelled; the training blocks hold too little "
            f"labelled image data - check the image's nodata value and that labels and image overlap"
        )


def _d4(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate by ``k`` x 90 degrees and optionally mirror the last two axes.

    Examples
    --------
    >>> _d4(np.array([[1, 2], [3, 4]]), 1, False).tolist(), _d4(np.array([[1, 2], [3, 4]]), 0, True).tolist()
    ([[2, 4], [1, 3]], [[2, 1], [4, 3]])
    """
    out = np.rot90(a, k, axes=(-2, -1))
    return out[..., ::-1] if flip else out


def band_statistics(sampler: ChipSampler, n: int) -> tuple[list[float], list[float], int]:
    """Per-band mean and std of the valid pixels of ``n`` sampled training chips (float64 sums).

    Returns ``(mean, std, pixels counted)``; a band without spread gets std 1. For a model
    that reads dates each band counts the pixels where its date is observed, and with
    ``dates.pooled`` each band's statistics are pooled over the dates (the same on every date).
    """
    s1 = s2 = n_px = None
    count = 0
    dates = sampler.dates
    for _ in range(n):
        img, _, valid, _, s = sampler.chip(augment=False)
        if dates is None:
            x = img[:, valid].astype(np.float64)
            c1, c2, cn = x.sum(axis=1), (x * x).sum(axis=1), np.full(x.shape[0], x.shape[1], np.float64)
            count += x.shape[1]
        else:
            band_valid = dates.layouts[s].band_valid(valid)
            x = np.where(band_valid, img.astype(np.float64), 0.0)
            c1, c2, cn = x.sum(axis=(1, 2)), (x * x).sum(axis=(1, 2)), band_valid.sum(axis=(1, 2)).astype(np.float64)
            count += int(valid.any(axis=0).sum())
        if s1 is None:
            s1, s2, n_px = np.zeros(c1.shape[0]), np.zeros(c1.shape[0]), np.zeros(c1.shape[0])
        s1 += c1
        s2 += c2
        n_px += cn
    assert s1 is not None and s2 is not None and n_px is not None
    if dates is not None and dates.pooled:
        c = dates.layouts[0].n_bands
        t = s1.size // c
        s1, s2, n_px = (np.tile(v.reshape(t, c).sum(axis=0), t) for v in (s1, s2, n_px))
    mean = s1 / np.maximum(n_px, 1)
    var = np.maximum(s2 / np.maximum(n_px, 1) - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std], count


def chip_batch(sampler: ChipSampler, n: int, mean: Sequence[float], std: Sequence[float], jitter: float,
               augment: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A normalised float32 batch (n, C, t, t), int64 targets (n, t, t) with 255 ignored, and
    for a model that reads dates the chips' day numbers (n, T) (else None).

    Each chip is normalised as at inference (:func:`geoseg.ml.infer.normalise`); with
    ``jitter`` > 0 its bands then get a random gain ``1 + jitter * N(0, 1)`` and offset
    ``jitter * N(0, 1)`` (in band standard deviations), drawn from the sampler's generator.
    A model that reads dates gets a validity plane per date after the bands, so C is T*B + T.
    """
    xs, ys, days = [], [], []
    for _ in range(n):
        img, target, valid, _, s = sampler.chip(augment=augment)
        band_valid = valid if sampler.dates is None else sampler.dates.layouts[s].band_valid(valid)
        x = normalise(img, band_valid, mean, std)
        if jitter > 0:
            cb = x.shape[0]
            gain = 1 + jitter * sampler.rng.standard_normal((cb, 1, 1)).astype(np.float32)
            offset = jitter * sampler.rng.standard_normal((cb, 1, 1)).astype(np.float32)
            x = np.where(band_valid, x * gain + offset, np.float32(0)).astype(np.float32)
        if sampler.dates is not None:
            x = with_validity(x[None], valid[None])[0]
            days.append(sampler.dates.layouts[s].days())
        xs.append(x)
        ys.append(target)
    return np.stack(xs), np.stack(ys).astype(np.int64), (np.stack(days) if days else None)
