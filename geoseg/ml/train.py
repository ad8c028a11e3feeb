"""Train a segmentation model on one or more labelled scenes and save a geoseg checkpoint.

How it works
------------
1. **Labels** are opened on each image's grid (:mod:`geoseg.io.labels`: a raster of class
   ids, or a vector file rasterised window by window) and counted once, block by block.
2. **Spatial split.** Each scene is cut into square blocks (``block`` px, default two
   tiles). One block in five is held out for validation, on the diagonal pattern
   ``(block_row + 2 * block_col) % 5 == k``: no two validation blocks share an edge, every
   block row and column holds some, so validation samples the whole scene rather than one
   corner. Of the five patterns, one holding 10-35 % of the labelled pixels is drawn with
   the seed. **No training chip overlaps a validation block** (checked for every chip).
   Validation pixels are still autocorrelated with training pixels near the block edges,
   so validation scores are slightly optimistic for a distant region.
3. **Normalisation statistics** (per-band mean and std) come from the valid image pixels
   of up to :data:`STAT_WINDOWS` training chips - sampled windows, never the whole scene.
4. **Chips** of ``tile`` x ``tile`` px are drawn at random from the training blocks
   (a block chosen in proportion to its labelled pixels, the chip centred at a random
   point in it), read with :func:`geoseg.io.raster.read_tile`, and kept when at least half their
   pixels hold image data and one pixel holds a label. Each gets one of the 8 flips /
   90-degree rotations (the same on image and labels) and, by default, a mild per-band
   gain and offset jitter. Nothing is cached beyond GDAL's block cache: memory is bounded
   by one batch of chips (and a copy of the best weights), whatever the scene size.
5. **Training**: AdamW, linear warm-up then cosine decay, loss ``ce+dice`` (class-weighted
   cross-entropy + soft Dice; weights ``frequency ** -0.5`` from the training labels);
   255 / nodata / unlabelled pixels and image-nodata pixels are ignored. After every
   epoch the validation blocks are predicted with the tiled inference code path and
   scored; the best epoch by validation **mIoU** is kept and training stops early after
   ``patience`` epochs without improvement. bf16 autocast on CUDA.
6. **Checkpoint** (:func:`geoseg.ml.model.save_checkpoint`): weights of the best epoch and a
   model card holding the architecture, bands, normalisation statistics, class table,
   tile/overlap, the best validation scores (confusion matrix, per-class IoU/F1, mIoU,
   pixel accuracy) and the training record (epochs, seed, loss, lr, chips, time, inputs).

Defaults, and why
-----------------
They are chosen to generalise to a new region or year, not tuned to one scene:

* ``unet`` + ``resnet18``, ``encoder_depth=4``, light decoder: ~12 M parameters train
  from scratch on one scene without memorising it (no ImageNet weights are used - they
  are not available offline and do not fit 16-band time series); output stride 16 keeps
  field boundaries sharp at 10 m.
* ``tile=256``: 2.5 km of context at 10 m (several fields, roads, villages) so the model
  can use field shape and neighbourhood, while a batch still mixes 8 separate places.
* ``epochs=40`` with ``patience=8``; an epoch is about one pass over the labelled
  training area (at least 4 batches). Early stopping on *spatially held-out* mIoU,
  not on training loss, stops before the model memorises field layouts.
* ``lr=1e-3`` (AdamW's robust default for from-scratch conv nets with batch norm),
  ``weight_decay=1e-2`` (decoupled, mild), 3 % linear warm-up then cosine decay to 1 %.
* Flips and 90-degree rotations (nadir imagery has no "up") and a 5 % per-band gain /
  offset jitter, so the model leans on the *shape* of each pixel's spectral-temporal
  profile and its surroundings rather than on exact reflectance levels, which shift
  between scenes, years and processing baselines.
* ``ce+dice`` with inverse-square-root class weights: rare crops count without the
  over-correction of inverse frequency.
* ``batch_size=8``: enough for batch-norm statistics, small enough for 2 CPU cores.

Determinism: every random choice comes from the seed (numpy ``Generator`` streams for the
split, chips and augmentation; ``torch.manual_seed`` inside :func:`torch.random.fork_rng` for
the initial weights) and ``torch.use_deterministic_algorithms`` is on while training (the
caller's global RNG and determinism settings are restored afterwards). The same inputs,
seed and arguments on the same machine and thread count give bit-identical weights, losses
and scores (measured on CPU with 1 and 2 threads), and so the same ``model.safetensors``
bytes (its metadata is one fixed key). A ``time_limit`` makes the run depend on wall-clock speed (the learning-rate schedule then
follows the clock so that it always anneals before the limit), so it is reproducible only
without one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import NODATA, ClassTable, load_classes
from geoseg.core.grid import Tile, Window
from geoseg.core.metrics import ConfusionAccumulator, Scores, scores
from geoseg.errors import CheckpointError, ConfigError, LabelError, TileError
from geoseg.io.labels import RasterLabels, VectorLabels, iter_blocks, label_counts, open_labels, window_tile
from geoseg.io.raster import RasterInfo, check_size, open_raster, raster_info, read_tile
from geoseg.ml.evaluate import accumulate_confusion, window_tiles
from geoseg.ml.infer import forward_logits, normalise, pick_device
from geoseg.ml.losses import class_weights, make_loss
from geoseg.ml.model import (
    DEFAULT_ARCH,
    DEFAULT_ENCODERS,
    ModelCard,
    build_model,
    default_arch_kwargs,
    load_checkpoint,
    load_into,
    load_state_dict_file,
    read_card,
    save_checkpoint,
    tile_multiple,
)
from geoseg.parallel import tune_allocator

__all__ = [
    "TrainResult",
    "Split",
    "train",
    "make_split",
    "block_size",
    "band_statistics",
    "check_tile",
    "check_init_card",
    "resolved_arch_kwargs",
    "ChipSampler",
    "DEFAULTS",
    "STAT_WINDOWS",
    "VAL_PERIOD",
]

#: Default training settings (see "Defaults, and why" in the module docstring).
DEFAULTS: dict[str, Any] = {
    "arch": DEFAULT_ARCH,
    "tile": 256,
    "epochs": 40,
    "patience": 8,
    "batch_size": 8,
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "loss": "ce+dice",
    "jitter": 0.05,
}
#: Most chips read for the normalisation statistics.
STAT_WINDOWS = 64
#: One block in VAL_PERIOD is a validation block.
VAL_PERIOD = 5
#: A chip is kept when at least this share of its pixels hold image data.
MIN_VALID_SHARE = 0.5
#: Fewest blocks a scene is cut into; smaller scenes get blocks of one tile.
MIN_BLOCKS = 10
_WARMUP_SHARE = 0.03
_LR_FLOOR = 0.01
_MAX_TRIES = 500

Progress = Callable[[int, int, dict[str, Any]], None]


# --------------------------------------------------------------------------------------
# the spatial split
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

    def overlaps_validation(self, window: Window) -> bool:
        """True when ``window`` shares a pixel with a validation block."""
        return bool(_hits(self.val_rects, int(window.row_off), int(window.col_off),
                          int(window.height), int(window.width)))


def _hits(rects: np.ndarray, r: int, c: int, h: int, w: int) -> bool:
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


# --------------------------------------------------------------------------------------
# chips
@dataclass
class _Scene:
    image: str
    info: RasterInfo
    labels: RasterLabels | VectorLabels
    split: Split
    src: Any = None


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
        Image validity rule.
    """

    def __init__(self, scenes: Sequence[tuple[Any, Any, Split]], tile: int, rng: np.random.Generator,
                 valid_rule: str = "all") -> None:
        self.scenes = list(scenes)
        self.tile = int(tile)
        self.rng = rng
        self.valid_rule = valid_rule
        weights, index = [], []
        for s, (_, _, split) in enumerate(self.scenes):
            per_block = split.counts.sum(axis=2)
            for i, j, w in iter_blocks(split.shape, split.block):
                if not split.val[i, j] and per_block[i, j] > 0:
                    weights.append(float(per_block[i, j]))
                    index.append((s, w))
        if not index:
            names = ", ".join(str(getattr(lab, "path", "?")) for _, lab, _ in self.scenes)
            raise LabelError(
                f"{names}: no training block (outside the validation blocks) holds labels; label more of the image "
                f"or use a smaller --tile (blocks are two tiles wide)"
            )
        p = np.asarray(weights)
        self._p = p / p.sum()
        self._index = index
        self.tries = 0
        self.drawn = 0

    def window(self) -> tuple[int, Window]:
        """A random chip window (scene index, window) that overlaps no validation block."""
        t = self.tile
        for _ in range(_MAX_TRIES):
            s, b = self._index[int(self.rng.choice(len(self._index), p=self._p))]
            split = self.scenes[s][2]
            h, w = split.shape
            cr = int(b.row_off) + int(self.rng.integers(int(b.height)))
            cc = int(b.col_off) + int(self.rng.integers(int(b.width)))
            r = int(np.clip(cr - t // 2, min(0, h - t), max(0, h - t)))
            c = int(np.clip(cc - t // 2, min(0, w - t), max(0, w - t)))
            self.tries += 1
            if not _hits(split.val_rects, r, c, t, t):
                return s, Window(c, r, t, t)
        raise TileError(
            f"could not place a {t} px training chip away from the validation blocks in {_MAX_TRIES} tries; "
            f"use a smaller --tile (e.g. {max(16, t // 2)})"
        )

    def chip(self, augment: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, Window, int]:
        """One kept chip: ``(image (C, t, t), target (t, t) int64 with 255 ignored, valid (t, t), window, scene)``."""
        for _ in range(_MAX_TRIES):
            s, win = self.window()
            src, labels, _ = self.scenes[s]
            lab = labels.read(win)
            if not (lab != NODATA).any():
                continue
            td = read_tile(src, window_tile(win, src.transform), rule=self.valid_rule)  # type: ignore[arg-type]
            valid = td.valid
            if valid.mean() < MIN_VALID_SHARE:
                continue
            target = np.where(valid, lab, NODATA).astype(np.int64)
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
            f"{_MAX_TRIES} chips in a row were mostly nodata or unlabelled; the training blocks hold too little "
            f"labelled image data - check the image's nodata value and that labels and image overlap"
        )


def _d4(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate by ``k`` x 90 degrees and optionally mirror the last two axes."""
    out = np.rot90(a, k, axes=(-2, -1))
    return out[..., ::-1] if flip else out


# --------------------------------------------------------------------------------------
# results
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` wrote and how training went."""

    model_dir: Path
    card: ModelCard
    epochs_run: int
    best_epoch: int
    stop_reason: str
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, Any]:
        """The best validation scores (as stored in the card)."""
        return self.card.metrics

    def summary(self) -> str:
        m = self.card.metrics
        iou = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in m.get("per_class_iou", {}).items())
        miou = m.get("miou")
        return "\n".join([
            f"saved {self.model_dir} ({self.card.arch}/{self.card.encoder}, {self.card.in_channels} bands, "
            f"{len(self.card.classes)} classes)",
            f"best epoch {self.best_epoch} of {self.epochs_run} ({self.stop_reason}) in {self.seconds:.0f} s: "
            f"validation mIoU {miou:.3f}" if miou is not None else "no validation score",
            f"per-class IoU: {iou}",
        ])


# --------------------------------------------------------------------------------------
# helpers
def _as_list(value: Any, name: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    try:
        out = [str(v) for v in value]
    except TypeError:
        raise ConfigError(f"{name} must be a path or a list of paths, got {value!r}") from None
    if not out:
        raise ConfigError(f"{name} is empty; pass at least one file")
    return out


def resolved_arch_kwargs(arch: str, arch_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments :func:`geoseg.ml.model.build_model` ends up using (stored in the card)."""
    user = dict(arch_kwargs or {})
    kwargs = {**default_arch_kwargs(arch), **user}
    if arch.lower() == "unet" and "encoder_depth" in user and "decoder_channels" not in user:
        kwargs["decoder_channels"] = [256, 128, 64, 32, 16][5 - int(user["encoder_depth"]):]
    return kwargs


def check_tile(tile: int, arch: str, encoder: str, arch_kwargs: dict[str, Any]) -> int:
    """Raise :class:`TileError` unless ``tile`` suits the model; returns the model's multiple.

    Examples
    --------
    >>> check_tile(200, "unet", "resnet18", {"encoder_depth": 4})
    Traceback (most recent call last):
    ...
    geoseg.errors.TileError: --tile 200 is not divisible by 16, which unet/resnet18 needs (its encoder halves the image 4 times); use --tile 192 or 208
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise TileError(f"--tile must be a positive number of pixels, got {tile!r}; use e.g. 256")
    import torch

    with torch.random.fork_rng(devices=[]):  # tile_multiple builds a model: keep the caller's RNG untouched
        m = tile_multiple(arch, encoder, arch_kwargs)
    if tile % m:
        lo = (tile // m) * m
        hint = f"use --tile {lo} or {lo + m}" if lo > 0 else f"use --tile {m} or more"
        raise TileError(
            f"--tile {tile} is not divisible by {m}, which {arch}/{encoder} needs (its encoder halves the image "
            f"{m.bit_length() - 1} times); {hint}"
        )
    return m


def _band_names(info: RasterInfo) -> list[str]:
    return [d if d else f"band {i}" for i, d in enumerate(info.descriptions, start=1)]


def band_statistics(sampler: ChipSampler, n: int) -> tuple[list[float], list[float], int]:
    """Per-band mean and std of the valid pixels of ``n`` sampled training chips (float64 sums)."""
    s1 = s2 = None
    count = 0
    for _ in range(n):
        img, _, valid, _, _ = sampler.chip(augment=False)
        x = img[:, valid].astype(np.float64)
        if s1 is None:
            s1, s2 = np.zeros(x.shape[0]), np.zeros(x.shape[0])
        s1 += x.sum(axis=1)
        s2 += (x * x).sum(axis=1)
        count += x.shape[1]
    assert s1 is not None and s2 is not None
    mean = s1 / max(count, 1)
    var = np.maximum(s2 / max(count, 1) - mean * mean, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std], count


def check_init_card(src: ModelCard, path: str | os.PathLike[str], arch: str, encoder: str, in_channels: int,
                    arch_kwargs: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint ``src`` has the architecture being trained."""
    theirs = (src.arch.lower(), src.encoder, src.in_channels)
    ours = (arch.lower(), encoder, in_channels)
    if theirs != ours or resolved_arch_kwargs(src.arch, src.arch_kwargs) != arch_kwargs:
        raise CheckpointError(
            f"{path}: is a {src.arch}/{src.encoder} model with {src.in_channels} bands and options {src.arch_kwargs}, "
            f"but this training builds {arch}/{encoder} with {in_channels} bands and options {arch_kwargs}; "
            f"fine-tuning needs the same architecture - pass --arch {src.arch} --encoder {src.encoder} "
            f"(or leave them out), train on {src.in_channels}-band images, or drop --init-from"
        )


def _init_from(model: Any, path: str, card_classes: ClassTable, arch: str, encoder: str, in_channels: int,
               arch_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint's weights (fine-tuning) or an encoder state dict into ``model``."""
    p = Path(path)
    if p.is_dir():
        src = read_card(p)
        check_init_card(src, p, arch, encoder, in_channels, arch_kwargs)
        src_model, _ = load_checkpoint(p, "cpu")
        state = src_model.state_dict()
        same_classes = src.classes.names == card_classes.names
        if not same_classes:  # new class table: keep everything but the classification head
            own = model.state_dict()
            state = {**{k: v for k, v in own.items() if k.startswith("segmentation_head.")},
                     **{k: v for k, v in state.items() if not k.startswith("segmentation_head.")}}
        load_into(model, state, str(p / "model.safetensors"))
        return {"init_from": str(p), "init_kind": "checkpoint", "head_reinitialised": not same_classes}
    if not p.exists():
        raise CheckpointError(
            f"{p}: not found; --init-from takes a geoseg checkpoint directory or an encoder weights file "
            f"(.safetensors, .pt, .pth)"
        )
    state = load_state_dict_file(p)
    if state and all(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items()}
    own = model.encoder.state_dict()
    dropped = [k for k in state if k not in own and k.split(".")[0] in ("fc", "classifier", "head")]
    state = {k: v for k, v in state.items() if k not in dropped}
    adapted = []
    for k, v in list(state.items()):
        if k in own and v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1] \
                and (v.shape[0], *v.shape[2:]) == (own[k].shape[0], *own[k].shape[2:]):
            # first convolution of another band count: cycle its input channels, keep the output scale
            idx = [i % v.shape[1] for i in range(own[k].shape[1])]
            state[k] = v[:, idx] * (v.shape[1] / own[k].shape[1])
            adapted.append(k)
    load_into(model.encoder, state, str(p))
    return {"init_from": str(p), "init_kind": "encoder", "dropped_keys": dropped, "adapted_keys": adapted}


@contextlib.contextmanager
def _deterministic(enabled: bool, cuda: bool) -> Iterator[None]:
    """Deterministic torch algorithms while training; the caller's setting is restored after."""
    import torch

    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(enabled, warn_only=cuda)
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=enabled):
            yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _lr_factor(step: int, total_steps: int, elapsed: float, budget: float | None) -> float:
    """Warm-up then cosine from 1 to :data:`_LR_FLOOR`; progress is steps (or wall clock, if sooner)."""
    warm = max(1, int(_WARMUP_SHARE * total_steps))
    if step < warm:
        return (step + 1) / warm
    p = (step - warm) / max(1, total_steps - warm)
    if budget:
        p = max(p, elapsed / budget)
    p = min(1.0, p)
    return _LR_FLOOR + (1 - _LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * p))


# --------------------------------------------------------------------------------------
# train
def train(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    classes: ClassTable | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str | None = None,
    encoder: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    tile: int = DEFAULTS["tile"],
    overlap: int | None = None,
    epochs: int = DEFAULTS["epochs"],
    patience: int = DEFAULTS["patience"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    loss: str = DEFAULTS["loss"],
    seed: int = 0,
    init_from: str | os.PathLike[str] | None = None,
    label_field: str | None = None,
    device: str = "auto",
    time_limit: float | None = None,
    block: int | None = None,
    chips_per_epoch: int | None = None,
    jitter: float = DEFAULTS["jitter"],
    augment: bool = True,
    valid_rule: str = "all",
    deterministic: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model on labelled scenes and save it as a checkpoint directory ``out``.

    See the module docstring for the procedure and for why each default is what it is.

    Parameters
    ----------
    images, labels : path or sequence of paths
        The scenes and their labels, pairwise: label rasters on the image grid, or
        vector files with ``label_field`` (see :mod:`geoseg.io.labels`).
    classes : ClassTable or path
        The class file; label values are its ids (or, for vectors, its names).
    out : path
        The checkpoint directory to write (replaced atomically if it exists).
    arch, encoder, arch_kwargs
        Architecture (default ``unet``, or that of ``init_from``), smp encoder name
        (default per architecture: ``resnet18`` / ``mit_b0``) and extra smp options.
    tile : int
        Chip side in pixels; must be divisible by the model's multiple
        (:func:`geoseg.ml.model.tile_multiple`; 16 for the default U-Net).
    overlap : int, optional
        Inference halo stored in the card (default ``tile // 8``).
    epochs, patience : int
        Most epochs; stop after ``patience`` epochs without a better validation mIoU.
    batch_size, lr, weight_decay, loss
        Optimisation (AdamW, warm-up + cosine); ``loss`` is ``ce+dice``, ``ce`` or ``dice``.
    seed : int
        Seeds every random choice (split, chips, augmentation, initial weights).
    init_from : path, optional
        A geoseg checkpoint directory to fine-tune (same architecture, encoder and band
        count; a different class table re-initialises the head), or an encoder weights
        file (``.safetensors``, ``.pt``/``.pth`` read with ``weights_only=True``) loaded into
        the encoder (a first convolution for another band count is adapted by cycling
        its input channels; classifier keys ``fc.*`` are dropped).
    label_field : str, optional
        The attribute of vector labels holding the class.
    device : {"auto", "cpu", "cuda"}
    time_limit : float, optional
        Minutes of wall clock for the whole call; training stops cleanly before it,
        validates and saves the best epoch so far.
    block : int, optional
        Block side of the spatial split (default: two tiles, see :func:`block_size`).
    chips_per_epoch : int, optional
        Default: the labelled training pixels over ``tile ** 2``, at least 4 batches.
    jitter : float
        Per-band gain and offset jitter (in band standard deviations); 0 switches it off.
    augment : bool
        Flips, rotations and jitter (off: chips as read).
    valid_rule : {"all", "any"}
        Which image pixels count as observed (see :mod:`geoseg.io.raster`).
    deterministic : bool
        Use deterministic torch algorithms while training.
    progress : callable, optional
        ``progress(epoch, epochs, metrics)`` after each epoch; ``metrics`` holds
        ``loss``, ``val_miou``, ``val_pixel_accuracy``, ``lr``, ``seconds``, ``best``.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError, TileError
        Bad options (unknown architecture/encoder/loss, a tile the model cannot take...).
    GridMismatchError
        A label raster on another grid than its image.
    LabelError
        Label values outside the class table, a missing label field, too few labels.
    CheckpointError
        ``init_from`` of another architecture, or unreadable weights.
    """
    import torch

    tune_allocator()  # reuse freed activation memory instead of fresh pages per step
    t_start = time.perf_counter()
    budget_s = None if time_limit is None else float(time_limit) * 60.0
    if budget_s is not None and budget_s <= 0:
        raise ConfigError(f"--time-limit must be positive minutes, got {time_limit}")
    for name, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("patience", patience, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")
    if not (lr > 0 and weight_decay >= 0 and jitter >= 0):
        raise ConfigError(f"lr must be > 0, weight_decay and jitter >= 0; got {lr}, {weight_decay}, {jitter}")
    if valid_rule not in ("all", "any"):
        raise ConfigError(f"valid_rule must be 'all' or 'any', got {valid_rule!r}")

    make_loss(loss)  # check the name before any work
    image_list = _as_list(images, "images")
    label_list = _as_list(labels, "labels")
    if len(image_list) != len(label_list):
        raise ConfigError(
            f"{len(image_list)} images but {len(label_list)} label files; pass one --labels per --image, in the same order"
        )
    table = classes if isinstance(classes, ClassTable) else load_classes(classes)
    k = len(table)

    # -- architecture: explicit, else that of --init-from, else the defaults --
    init_card = None
    if init_from is not None and Path(init_from).is_dir():
        init_card = read_card(init_from)
    arch_ = (arch or (init_card.arch if init_card else DEFAULT_ARCH)).lower()
    if arch is None and encoder is None and init_card is not None:
        encoder_ = init_card.encoder
        kwargs_src = init_card.arch_kwargs if arch_kwargs is None else arch_kwargs
    else:
        encoder_ = encoder or DEFAULT_ENCODERS.get(arch_, "resnet18")
        kwargs_src = arch_kwargs
    kwargs = resolved_arch_kwargs(arch_, kwargs_src)
    multiple = check_tile(tile, arch_, encoder_, kwargs)
    ov = int(tile // 8 if overlap is None else overlap)
    if ov < 0 or tile - 2 * ov <= 0:
        raise TileError(f"overlap {ov} leaves no core in a {tile} px tile; use 0 <= overlap < {tile // 2}")

    infos = [raster_info(p) for p in image_list]
    for info in infos:
        check_size(info)
    c = infos[0].count
    for info in infos[1:]:
        if info.count != c:
            raise ConfigError(
                f"{info.path}: has {info.count} bands but {infos[0].path} has {c}; every training image needs the "
                f"same bands in the same order (stack them with `geoseg stack`)"
            )

    if init_card is not None:
        check_init_card(init_card, str(init_from), arch_, encoder_, c, kwargs)
    elif init_from is not None and not Path(init_from).exists():
        raise CheckpointError(
            f"{init_from}: not found; --init-from takes a geoseg checkpoint directory or an encoder weights file "
            f"(.safetensors, .pt, .pth)"
        )

    dev = pick_device(device)
    cuda = dev.startswith("cuda")
    ss = np.random.SeedSequence(int(seed))
    rng_split, rng_stats, rng_chips = (np.random.default_rng(s) for s in ss.spawn(3))

    with ExitStack() as stack:
        scenes: list[_Scene] = []
        for img, lab_path, info in zip(image_list, label_list, infos):
            lab = stack.enter_context(open_labels(lab_path, info, table, field=label_field))
            b = block_size(tuple(info.shape), tile, block)
            counts = label_counts(lab, tuple(info.shape), b)
            split = make_split(counts, tuple(info.shape), b, rng_split, source=str(lab_path))
            src = stack.enter_context(open_raster(img))
            scenes.append(_Scene(img, info, lab, split, src))
        triples = [(s.src, s.labels, s.split) for s in scenes]
        train_counts = np.sum([s.split.train_counts() for s in scenes], axis=0)
        weights = class_weights(train_counts)
        mean, std, n_stat_px = band_statistics(
            ChipSampler(triples, tile, rng_stats, valid_rule), STAT_WINDOWS)
        sampler = ChipSampler(triples, tile, rng_chips, valid_rule)
        if chips_per_epoch is None:
            per_epoch = max(4 * batch_size, math.ceil(int(train_counts.sum()) / tile**2))
        else:
            per_epoch = int(chips_per_epoch)
        steps = max(1, math.ceil(per_epoch / batch_size))
        total_steps = steps * int(epochs)
        val_tiles = [(s, window_tiles(s.info.transform, w, tile, ov, multiple))
                     for s in scenes for w in s.split.windows(True)]
        n_val_tiles = sum(len(t) for _, t in val_tiles)

        jit = float(jitter) if augment else 0.0
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"miou": -1.0, "epoch": 0, "state": None, "scores": None}
        stop_reason = "epochs"
        chips_seen = 0
        init_info: dict[str, Any] = {}
        rng_devices = [torch.device(dev).index or 0] if cuda else []
        with torch.random.fork_rng(devices=rng_devices), _deterministic(deterministic, cuda):
            torch.manual_seed(int(seed))
            model = build_model(arch_, encoder_, c, k, **kwargs)
            if init_from is not None:
                init_info = _init_from(model, str(init_from), table, arch_, encoder_, c, kwargs)
            model.to(dev)
            if cuda:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            loss_fn = make_loss(loss, weights).to(dev)
            t_train = time.perf_counter()
            train_budget = None if budget_s is None else budget_s - (t_train - t_start)
            val_seconds = 0.0
            step = 0
            epoch = 0
            for epoch in range(1, int(epochs) + 1):
                model.train()
                losses = []
                out_of_time = False
                for _ in range(steps):
                    elapsed = time.perf_counter() - t_train
                    if train_budget is not None and elapsed + 1.5 * val_seconds + 5 >= train_budget and step > 0:
                        out_of_time = True
                        break
                    factor = _lr_factor(step, total_steps, elapsed, train_budget)
                    for g in opt.param_groups:
                        g["lr"] = lr * factor
                    xb, yb = _batch(sampler, batch_size, mean, std, jit, augment)
                    # channels-last on CPU too: a training step of U-Net/ResNet-18 (8 chips of 256 px,
                    # 16 bands, 2 cores) takes 0.83 s instead of 1.22 s on NCHW batches
                    x = torch.from_numpy(xb).to(dev).contiguous(memory_format=torch.channels_last)
                    y = torch.from_numpy(yb).to(dev)
                    if cuda:
                        with torch.autocast("cuda", dtype=torch.bfloat16):
                            logits = _forward(model, x)
                    else:
                        logits = _forward(model, x)
                    batch_loss = loss_fn(logits.float(), y)
                    opt.zero_grad(set_to_none=True)
                    batch_loss.backward()
                    opt.step()
                    losses.append(float(batch_loss.detach()))
                    step += 1
                    chips_seen += batch_size
                t_val = time.perf_counter()
                val = _validate(model, val_tiles, k, mean, std, valid_rule, dev, table)
                val_seconds = time.perf_counter() - t_val
                miou = val.miou if math.isfinite(val.miou) else 0.0
                improved = miou > best["miou"]
                if improved:
                    best = {"miou": miou, "epoch": epoch, "scores": val,
                            "state": {k_: v.detach().to("cpu", copy=True) for k_, v in model.state_dict().items()}}
                record = {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else math.nan,
                    "val_miou": val.miou,
                    "val_pixel_accuracy": val.pixel_accuracy,
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t_start,
                    "best": improved,
                }
                history.append(record)
                if progress is not None:
                    progress(epoch, int(epochs), dict(record))
                if out_of_time:
                    stop_reason = "time-limit"
                    break
                if epoch - best["epoch"] >= patience:
                    stop_reason = "early-stop"
                    break
                if budget_s is not None and time.perf_counter() - t_start + 1.5 * val_seconds + 5 >= budget_s:
                    stop_reason = "time-limit"
                    break
            model.load_state_dict(best["state"])
            model.to("cpu")

        best_scores: Scores = best["scores"]
        metrics = {**best_scores.to_dict(), "epoch": best["epoch"], "split": "validation blocks"}
        seconds = time.perf_counter() - t_start
        training = {
            "epochs_run": epoch,
            "epochs_max": int(epochs),
            "best_epoch": best["epoch"],
            "stop_reason": stop_reason,
            "seed": int(seed),
            "loss": loss,
            "class_weights": [round(float(w), 6) for w in weights],
            "optimizer": "AdamW",
            "lr": lr,
            "weight_decay": weight_decay,
            "schedule": f"linear warm-up {_WARMUP_SHARE:.0%} then cosine to {_LR_FLOOR:.0%}",
            "batch_size": int(batch_size),
            "chips_per_epoch": steps * int(batch_size),
            "chips": chips_seen,
            "augment": {"d4": bool(augment), "jitter": jit},
            "patience": int(patience),
            "time_limit_minutes": time_limit,
            "seconds": round(seconds, 1),
            "device": dev,
            "deterministic": bool(deterministic),
            "torch": torch.__version__,
            "images": image_list,
            "labels": label_list,
            "label_field": label_field,
            "train_label_pixels": [int(v) for v in train_counts],
            "stat_pixels": int(n_stat_px),
            "validation": [
                {"image": s.image, "block": s.split.block, "pattern": s.split.pattern,
                 "blocks": int(s.split.val.sum()), "of_blocks": int(s.split.val.size),
                 "label_pixels": int(s.split.counts[s.split.val].sum())}
                for s in scenes
            ],
            "validation_tiles": n_val_tiles,
            "history": [{k_: _json_value(v) for k_, v in h.items()} for h in history],
            **init_info,
        }
        card = ModelCard(
            arch=arch_,
            encoder=encoder_,
            in_channels=c,
            classes=table,
            arch_kwargs=kwargs,
            bands=_band_names(infos[0]),
            band_mean=mean,
            band_std=std,
            tile=int(tile),
            overlap=ov,
            valid_rule=valid_rule,
            metrics=metrics,
            training=training,
        )
        card = save_checkpoint(out, model, card)
    return TrainResult(Path(out), card, epoch, best["epoch"], stop_reason, seconds, history)


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def _forward(model: Any, x: Any) -> Any:

    return forward_logits(model, x)


def _batch(sampler: ChipSampler, n: int, mean: Sequence[float], std: Sequence[float], jitter: float,
           augment: bool) -> tuple[np.ndarray, np.ndarray]:
    """A normalised float32 batch (n, C, t, t) and int64 targets (n, t, t) with 255 ignored."""
    xs, ys = [], []
    for _ in range(n):
        img, target, valid, _, _ = sampler.chip(augment=augment)
        x = normalise(img, valid, mean, std)
        if jitter > 0:
            cb = x.shape[0]
            gain = 1 + jitter * sampler.rng.standard_normal((cb, 1, 1)).astype(np.float32)
            offset = jitter * sampler.rng.standard_normal((cb, 1, 1)).astype(np.float32)
            x = np.where(valid, x * gain + offset, np.float32(0)).astype(np.float32)
        xs.append(x)
        ys.append(target)
    return np.stack(xs), np.stack(ys).astype(np.int64)


def _validate(model: Any, val_tiles: Sequence[tuple[_Scene, list[Tile]]], k: int, mean: Sequence[float],
              std: Sequence[float], valid_rule: str, device: str, table: ClassTable) -> Scores:
    """Predict every validation block (tiled, as at inference) and score it."""
    acc = ConfusionAccumulator(k)
    model.eval()
    for scene, tiles in val_tiles:
        accumulate_confusion(model, scene.src, scene.labels, tiles, acc, mean=mean, std=std,
                             valid_rule=valid_rule, batch_size=4, device=device)
    model.train()
    return scores(acc.matrix, table.names)
