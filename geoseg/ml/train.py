"""Train a segmentation model on one or more labelled scenes and save a geoseg checkpoint.

How it works
------------
1. **Labels** are opened on each image's grid (:mod:`geoseg.io.labels`: a raster of class
   ids, or a vector file rasterised window by window) and counted once, block by block.
2. **Spatial split** (:mod:`geoseg.ml.split`). Each scene is cut into square blocks
   (``block`` px, default two tiles) and one block in five, on a diagonal pattern drawn
   with the seed, is held out for validation. **No training chip overlaps a validation
   block** (checked for every chip). Validation pixels are still autocorrelated with
   training pixels near the block edges, so validation scores are slightly optimistic for
   a distant region.
3. **Normalisation statistics** (per-band mean and std) come from the valid image pixels
   of up to :data:`geoseg.ml.chips.STAT_WINDOWS` training chips - sampled windows, never
   the whole scene.
4. **Chips** (:mod:`geoseg.ml.chips`) of ``chip`` x ``chip`` px (default: the tile) are drawn at random from
   the training blocks, kept when they hold enough image data and some label, flipped or
   rotated and, by default, given a mild per-band gain and offset jitter. Nothing is
   cached beyond GDAL's block cache: memory is bounded by one batch of chips (and a copy
   of the best weights), whatever the scene size.
5. **Training**: AdamW, linear warm-up then cosine decay, loss ``ce+dice`` (class-weighted
   cross-entropy + soft Dice; weights ``frequency ** -0.5`` from the training labels);
   255 / nodata / unlabelled pixels and image-nodata pixels are ignored. After every
   epoch the validation blocks are predicted with the tiled inference code path and
   scored; the best epoch by validation **mIoU** is kept and training stops early after
   ``patience`` epochs without improvement. bf16 autocast on CUDA.
6. **Point labels** (GPS points of crops, :mod:`geoseg.io.points`): each point labels the
   pixel under it and those within ``point_radius`` metres; the loss counts only those
   pixels (every other pixel is 255). Points are split whole, by the block the point lies in;
   chips are placed around training points (:mod:`geoseg.ml.chips`) and an epoch draws as
   many chips as the training blocks' area would for a fully labelled scene; validation
   scores the pixels of the validation points. Points outside the image, on image nodata or
   whose every pixel is claimed by a point of another class are not used and are counted in
   :attr:`TrainResult.points` and the card's ``training.points``.
7. **Dates** (``arch="utae"``, or any architecture given a ``date_dropout``): the model reads
   the stack date by date (the band names must carry the dates, :mod:`geoseg.core.dates`). A
   chip holds a validity plane per date after its bands, clouds are simulated on top of the
   real gaps (:func:`geoseg.ml.chips.simulate_clouds`), labels count where a pixel still sees
   a date, validation scores every pixel that saw one, and the card records the dates. A
   temporal model's band statistics are pooled over the dates (it may later read others).
8. **Checkpoint** (:func:`geoseg.ml.model.save_checkpoint`): weights of the best epoch and a
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
* ``chip`` (the training chip) is the tile, except for a model that reads dates (``utae``,
  or a ``date_dropout``): 64 px. A smaller chip draws more chips per epoch from the same
  pixels, so the same epochs make many more optimiser steps, and a model that learns from
  a season's scattered observations needs them (``benchmarks/README.md``, cloudy seasons);
  the card keeps the tile and halo, so inference is the same whatever chip trained it.
* ``epochs=40`` with ``patience=8``; an epoch is about one pass over the labelled
  training area, and at least 50 batches: on a small scene one pass is a handful of
  optimiser steps, and early stopping then ends training before the network has learnt
  (``benchmarks/README.md``, real scenes). Early stopping on *spatially held-out* mIoU,
  not on training loss, stops before the model memorises field layouts.
* A **per-pixel random forest** (:mod:`geoseg.ml.forest`) is fitted on the network's input
  at labelled pixels of the training blocks and fused with the network (their class
  probabilities averaged, the forest's weight chosen on the validation blocks): on a few
  thousand labelled pixels a forest reads each pixel's spectra better than a network
  trained from scratch, the network reads shapes and neighbourhoods, and their errors
  differ. A second forest also reads each pixel's neighbourhood (channel means and spreads
  over 3 x 3 and 5 x 5 px); the one whose mix scores better on the validation blocks is kept.
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
bytes (its metadata is one fixed key). A ``time_limit`` makes the run depend on wall-clock
speed (the learning-rate schedule then follows the clock so that it always anneals before
the limit), so it is reproducible only without one.

The stages above are functions of their own, run in order by :func:`train`: the options
and the architecture are checked before any pixel is read, the scenes are opened and split
(:func:`_open_scenes`), the chips and statistics are prepared (:func:`_prepare_chips`), the
network is fitted (:func:`_fit_model`, :func:`_fit`, :func:`_train_step`) and the checkpoint
is written with its record (:func:`_training_record`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.classes import NODATA, ClassTable, load_classes
from geoseg.core.dates import DateLayout, date_layout
from geoseg.core.geodesy import pixel_areas
from geoseg.core.grid import Tile, Window
from geoseg.core.instances import SEPARATION_CHOICES, Separation, boundary_value
from geoseg.core.metrics import ConfusionAccumulator, Scores, confusion_matrix, scores
from geoseg.core.objects import ObjectScores, combine_scores, mask_field_scores
from geoseg.core.sieve import DEFAULT_MIN_AREA_HA, min_area_pixels
from geoseg.errors import CheckpointError, ConfigError, GeosegError, TileError
from geoseg.io.field_polygons import FieldEdges
from geoseg.io.labels import RasterLabels, VectorLabels, label_counts, open_labels
from geoseg.io.points import PointLabels, PointReport
from geoseg.io.raster import RasterInfo, check_size, open_raster, raster_info, read_periods
from geoseg.ml.baseline import check_baseline, forest_baseline
from geoseg.ml.chips import EDGE_STEP, STAT_WINDOWS, ChipDates, ChipSampler, EdgeLabels, band_statistics, chip_batch
from geoseg.ml.evaluate import accumulate_confusion, window_tiles
from geoseg.ml.forest import CONTEXT as FOREST_CONTEXT
from geoseg.ml.forest import (
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_PIXELS,
    MAX_ROW_BYTES,
    Forest,
    choose_weight,
    fit_forest,
    fused_probabilities,
    training_pixels,
    validation_probabilities,
    with_forest,
)
from geoseg.ml.forest import TREES as FOREST_TREES
from geoseg.ml.infer import DateInput, forward_logits, pick_device
from geoseg.ml.losses import BoundaryLoss, class_weights, make_loss
from geoseg.ml.model import (
    DEFAULT_ARCH,
    DEFAULT_ENCODERS,
    TEMPORAL_ARCHS,
    ModelCard,
    build_model,
    load_checkpoint,
    load_into,
    mark_outputs,
    output_channels,
    read_card,
    resolved_arch_kwargs,
    save_checkpoint,
    tile_multiple,
)
from geoseg.ml.pretrained import freeze_encoder, load_pretrained, pretrained_encoder
from geoseg.ml.split import Split, block_size, make_split
from geoseg.parallel import tune_allocator

__all__ = [
    "TrainResult",
    "train",
    "check_tile",
    "default_chip",
    "check_init_card",
    "DEFAULTS",
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
    "date_dropout": 0.4,
    "date_chip": 64,
    "min_steps": 50,
    "freeze_epochs": 2,
}
_WARMUP_SHARE = 0.03
_LR_FLOOR = 0.01

Progress = Callable[[int, int, dict[str, Any]], None]


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
    points: tuple[PointReport, ...] = ()

    @property
    def scores(self) -> dict[str, Any]:
        """The best validation scores (as stored in the card)."""
        return self.card.metrics

    def _baseline_lines(self) -> list[str]:
        b = self.card.training.get("baseline")
        miou = self.card.metrics.get("miou")
        if not b or miou is None:
            return []
        line = (f"per-pixel random forest ({b['trees']} trees, {b['train_pixels']:,} of the same training pixels): "
                f"validation mIoU {b['miou']:.3f} on {b['validation_pixels']:,} pixels; this model "
                f"{miou - b['miou']:+.3f}")
        return [line]

    def _forest_lines(self) -> list[str]:
        f = self.card.training.get("forest")
        if not f or "network_miou" not in f:
            return [f"no per-pixel forest: {f['note']}"] if f and f.get("note") else []
        scored = (f"validation mIoU network {f['network_miou']:.3f}, forest {f['forest_miou']:.3f}, fused "
                  f"{f['fused_miou']:.3f}")
        if not self.card.forest:
            return [f"per-pixel forest not kept: the network alone fits the validation pixels best ({scored})"]
        reads = " of each pixel and its neighbourhood" if f.get("context") else ""
        return [f"fused with a per-pixel forest ({f['trees']} trees{reads}) at weight {f['weight']:.1f}: {scored}"]

    def _field_lines(self) -> list[str]:
        f = self.card.metrics.get("fields")
        if not f:
            return []
        t = f.get("separation_threshold")
        how = "not separated (that scored best)" if t is None else f"separated on the boundary band at {t:g}"
        line = (f"fields of the validation blocks, {how}: {f['predicted_fields']:,} for {f['true_fields']:,} true, "
                f"object F1 {f['f1']:.3f} (precision {f['precision']:.3f}, recall {f['recall']:.3f}) at IoU > 0.5")
        return [line]

    def _pretrained_lines(self) -> list[str]:
        t = self.card.training
        if "pretrained" not in t:
            return []
        matched, zero = t["matched_bands"], t["zero_channels"]
        line = (f"encoder from {t['pretrained']}: {len(matched)} of {len(matched) + len(zero)} input channels matched "
                f"to its bands by name, the rest learnt from zero; frozen for the first {t['freeze_epochs']} epochs")
        return [line]

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
            *self._pretrained_lines(),
            *self._forest_lines(),
            *self._field_lines(),
            *self._baseline_lines(),
            *[p.line() for p in self.points],
        ])


# --------------------------------------------------------------------------------------
# what the stages hand on
@dataclass(frozen=True)
class _Arch:
    """The network to train: architecture, encoder, resolved options, the tile multiple,
    the inference halo for the card, and the card of ``init_from`` when it is a checkpoint."""

    arch: str
    encoder: str
    kwargs: dict[str, Any]
    multiple: int
    overlap: int
    init_card: ModelCard | None


@dataclass
class _Scene:
    """One training scene, open: its image, labels and split. For point labels, ``labels`` holds
    the training points and ``val_labels`` the validation points (else both are the same)."""

    image: str
    info: RasterInfo
    labels: RasterLabels | VectorLabels | PointLabels
    split: Split
    src: Any = None
    val_labels: RasterLabels | VectorLabels | PointLabels | None = None
    points: dict[str, Any] | None = None
    #: The scene's place in the training call (its date layout's, too).
    index: int = 0
    #: The labels the training chips read: ``labels`` with field-edge targets (``fields``), else None.
    chip_labels: Any = None

    @property
    def validation_labels(self) -> RasterLabels | VectorLabels | PointLabels:
        return self.labels if self.val_labels is None else self.val_labels


@dataclass(frozen=True)
class _Chips:
    """The data side of fitting: the chip sampler, the normalisation statistics, the class
    weights and the validation tiles."""

    sampler: ChipSampler
    mean: list[float]
    std: list[float]
    stat_pixels: int
    train_counts: np.ndarray
    weights: np.ndarray
    val_tiles: list[tuple[_Scene, list[Tile]]]


@dataclass(frozen=True)
class _Plan:
    """How to fit: the optimisation settings, the seed and the clock (``t_start``, ``budget_s``)."""

    epochs: int
    steps: int  # per epoch
    batch_size: int
    lr: float
    weight_decay: float
    loss: str
    patience: int
    jitter: float  # 0 when augment is off
    augment: bool
    deterministic: bool
    seed: int
    t_start: float
    budget_s: float | None
    #: Epochs at the start in which a pretrained encoder (all but its first convolution) is frozen.
    freeze_epochs: int = 0


@dataclass
class _Fit:
    """How fitting went: the best epoch (its weights on the CPU, its scores), every epoch's
    record, the chips seen and why it stopped."""

    best_miou: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    best_scores: Scores | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    chips_seen: int = 0
    stop_reason: str = "epochs"


# --------------------------------------------------------------------------------------
# checks before any work
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


def _check_options(time_limit: float | None, epochs: int, batch_size: int, patience: int, lr: float,
                   weight_decay: float, jitter: float, valid_rule: str, loss: str) -> float | None:
    """Refuse bad settings before any work; returns the time budget in seconds (None: no limit)."""
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
    return budget_s


def _field_files(fields: Any, n: int) -> list[str]:
    """The field polygon file of each scene: none, one for all, or one per scene."""
    if fields is None:
        return []
    got = _as_list(fields, "fields")
    if len(got) == 1:
        return got * n
    if len(got) != n:
        raise ConfigError(f"{len(got)} field files for {n} images; pass one file for all images or one per image, "
                          f"in the order of the images")
    return got


def _inputs(images: Any, labels: Any) -> tuple[list[str], list[str]]:
    """The image and label paths as two lists of the same length."""
    image_list = _as_list(images, "images")
    label_list = _as_list(labels, "labels")
    if len(image_list) != len(label_list):
        raise ConfigError(
            f"{len(image_list)} images but {len(label_list)} label files; "
            f"pass one --labels per --image, in the same order"
        )
    return image_list, label_list


def check_tile(tile: int, arch: str, encoder: str, arch_kwargs: dict[str, Any], option: str = "--tile") -> int:
    """Raise :class:`TileError` unless ``tile`` suits the model; returns the model's multiple.
    ``option`` names the size in the message (``--tile`` or ``--chip``).

    Examples
    --------
    >>> check_tile(200, "unet", "resnet18", {"encoder_depth": 4})
    Traceback (most recent call last):
    ...
    geoseg.errors.TileError: --tile 200 is not divisible by 16, which unet/resnet18 needs (its encoder halves the image 4 times); use --tile 192 or 208
    """
    _check_positive(tile, option)
    import torch

    with torch.random.fork_rng(devices=[]):  # tile_multiple builds a model: keep the caller's RNG untouched
        m = tile_multiple(arch, encoder, arch_kwargs)
    _check_multiple(tile, m, arch, encoder, option)
    return m


def _check_positive(tile: int, option: str) -> None:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise TileError(f"{option} must be a positive number of pixels, got {tile!r}; use e.g. 256")


def _check_multiple(tile: int, m: int, arch: str, encoder: str, option: str) -> None:
    """Raise :class:`TileError` unless ``tile`` is a multiple of the model's ``m``, naming the sizes to use."""
    if tile % m:
        lo = (tile // m) * m
        hint = f"use {option} {lo} or {lo + m}" if lo > 0 else f"use {option} {m} or more"
        raise TileError(
            f"{option} {tile} is not divisible by {m}, which {arch}/{encoder} needs (its encoder halves the image "
            f"{m.bit_length() - 1} times); {hint}"
        )


def default_chip(tile: int, reads_dates: bool) -> int:
    """The training chip side when none is given: the tile, or for a model that reads dates
    at most ``DEFAULTS["date_chip"]`` (such a model needs many more optimiser steps, see the
    module docstring). Both are multiples of the model's (16 or 32) when the tile is.

    >>> default_chip(256, False), default_chip(256, True), default_chip(32, True)
    (256, 64, 32)
    """
    return int(min(tile, DEFAULTS["date_chip"])) if reads_dates else int(tile)


def _architecture(arch: str | None, encoder: str | None, arch_kwargs: dict[str, Any] | None,
                  init_from: str | os.PathLike[str] | None, tile: int, overlap: int | None,
                  chip: int | None = None, pretrained: str | os.PathLike[str] | None = None) -> _Arch:
    """The architecture to train: explicit, else that of ``init_from``, else the defaults (the
    encoder of a published ``pretrained`` name); ``tile``, ``overlap`` and ``chip`` checked against it."""
    if pretrained is not None and init_from is not None:
        raise ConfigError("--pretrained and --init-from both given; fine-tune a geoseg checkpoint (--init-from) or "
                          "start from pretrained encoder weights (--pretrained), not both")
    held = pretrained_encoder(pretrained) if pretrained is not None else None
    if held is not None:
        if encoder is not None and encoder != held:
            raise ConfigError(f"--pretrained {pretrained} holds a {held} encoder, but --encoder is "
                              f"{encoder}; leave --encoder out or pass --encoder {held}")
        encoder = held
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
    if chip is not None:  # against the multiple just found: building the model once is enough
        _check_positive(chip, "--chip")
        _check_multiple(chip, multiple, arch_, encoder_, "--chip")
    ov = int(tile // 8 if overlap is None else overlap)
    if ov < 0 or tile - 2 * ov <= 0:
        raise TileError(f"overlap {ov} leaves no core in a {tile} px tile; use 0 <= overlap < {tile // 2}")
    return _Arch(arch_, encoder_, kwargs, multiple, ov, init_card)


def _image_infos(image_list: Sequence[str]) -> list[RasterInfo]:
    """The images' headers, each checked for size; every image must have the first one's band count."""
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
    return infos


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


def _check_init_from(init_from: str | os.PathLike[str] | None, spec: _Arch, bands: int) -> None:
    """A checkpoint to fine-tune must exist and have the architecture being trained."""
    if spec.init_card is not None:
        check_init_card(spec.init_card, str(init_from), spec.arch, spec.encoder, bands, spec.kwargs)
    elif init_from is not None and Path(init_from).is_file():
        raise CheckpointError(
            f"{init_from}: is a file; --init-from takes a geoseg checkpoint directory - for encoder weights use "
            f"--pretrained {init_from} --pretrained-bands NAMES (the bands its first convolution reads, in order)"
        )
    elif init_from is not None:
        raise CheckpointError(f"{init_from}: not found; --init-from takes a geoseg checkpoint directory")


# --------------------------------------------------------------------------------------
# stages 1-4: labels, split, statistics, chips
def _open_scenes(stack: ExitStack, image_list: Sequence[str], label_list: Sequence[str], infos: Sequence[RasterInfo],
                 table: ClassTable, *, tile: int, block: int | None, label_field: str | None,
                 rng: np.random.Generator, point_radius: float | None = None,
                 valid_rule: str = "all") -> list[_Scene]:
    """Open each scene's labels and image (closed with ``stack``), count its labels block by
    block and draw its validation blocks with ``rng``, scene after scene. Point labels are
    split point by point (:meth:`geoseg.ml.split.Split.holds_out`)."""
    scenes: list[_Scene] = []
    for img, lab_path, info in zip(image_list, label_list, infos):
        lab = stack.enter_context(open_labels(lab_path, info, table, field=label_field, point_radius=point_radius,
                                              valid_rule=valid_rule))
        b = block_size(tuple(info.shape), tile, block)
        counts = label_counts(lab, tuple(info.shape), b)
        split = make_split(counts, tuple(info.shape), b, rng, source=str(lab_path))
        src = stack.enter_context(open_raster(img))
        if isinstance(lab, PointLabels):
            val = split.holds_out(lab.rows, lab.cols)
            record = {**lab.report.to_dict(), "train_points": int((~val).sum()), "validation_points": int(val.sum())}
            scenes.append(_Scene(img, info, lab.subset(~val), split, src, lab.subset(val), record, len(scenes)))
        else:
            scenes.append(_Scene(img, info, lab, split, src, index=len(scenes)))
    return scenes


def _date_layouts(infos: Sequence[RasterInfo], arch: str, date_dropout: float | None) -> ChipDates | None:
    """How the chips read dates: for a temporal architecture, or any other given a ``date_dropout``
    (None: the stack's bands are anonymous channels). Every scene must name its dates and hold as
    many dates of the same bands."""
    temporal = arch.lower() in TEMPORAL_ARCHS
    if not temporal and date_dropout is None:
        return None
    p = DEFAULTS["date_dropout"] if date_dropout is None else date_dropout
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"date_dropout {p!r}: expected a probability from 0 (real gaps only) to below 1, e.g. 0.4")
    why = "a temporal model reads them" if temporal else "--date-dropout makes the model read them"
    layouts: list[DateLayout] = []
    for info in infos:
        try:
            layouts.append(date_layout(info.descriptions, read_periods(info.path), source=info.path))
        except GeosegError as e:
            raise type(e)(f"{e} (training needs each band's date: {why})") from None
    first = layouts[0]
    for info, lay in zip(infos[1:], layouts[1:]):
        if (lay.n_dates, lay.bands) != (first.n_dates, first.bands):
            raise ConfigError(
                f"{info.path}: holds {lay.n_dates} dates of bands {list(lay.bands)}, but {infos[0].path} holds "
                f"{first.n_dates} dates of {list(first.bands)}; train on scenes with the same number of dates of the "
                f"same bands"
            )
    return ChipDates(tuple(layouts), float(p), pooled=temporal)


def _prepare_chips(scenes: Sequence[_Scene], tile: int, spec: _Arch, rng_stats: np.random.Generator,
                   rng_chips: np.random.Generator, valid_rule: str, dates: ChipDates | None = None,
                   chip: int | None = None) -> _Chips:
    """Class weights from the training labels, band statistics from ``tile``-sized windows drawn
    with ``rng_stats``, the sampler of ``chip``-sized training chips (``rng_chips``; default
    ``tile``) and the validation tiles (``tile`` and the card's halo, as at inference)."""
    triples = [(s.src, s.labels if s.chip_labels is None else s.chip_labels, s.split) for s in scenes]
    train_counts = np.sum([s.split.train_counts() for s in scenes], axis=0)
    weights = class_weights(train_counts)
    mean, std, n_stat_px = band_statistics(ChipSampler(triples, tile, rng_stats, valid_rule, dates), STAT_WINDOWS)
    sampler = ChipSampler(triples, tile if chip is None else chip, rng_chips, valid_rule, dates)
    val_tiles = []
    for s in scenes:
        for w in s.split.windows(True):
            tiles = window_tiles(s.info.transform, w, tile, spec.overlap, spec.multiple)
            if isinstance(s.val_labels, PointLabels):  # only the tiles holding validation points
                tiles = [t for t in tiles if s.val_labels.holds_labels(t.core)]
            if tiles:
                val_tiles.append((s, tiles))
    return _Chips(sampler, mean, std, n_stat_px, train_counts, weights, val_tiles)


def _epoch_area(scenes: Sequence[_Scene], train_counts: np.ndarray) -> int:
    """The pixels an epoch covers: the labelled training pixels, except that for point labels
    (a few pixels per point) it is the area of the training blocks, so that an epoch of points
    draws as many chips as one of a fully labelled scene of the same size."""
    if not any(isinstance(s.labels, PointLabels) for s in scenes):
        return int(train_counts.sum())
    area = 0
    for s in scenes:
        if isinstance(s.labels, PointLabels):
            area += sum(int(w.height) * int(w.width) for w in s.split.windows(False))
        else:
            area += int(s.split.train_counts().sum())
    return area


def _steps_per_epoch(area: int, tile: int, batch_size: int, chips_per_epoch: int | None) -> int:
    """Optimiser steps per epoch: ``chips_per_epoch`` chips, by default about one pass over
    ``area`` pixels (:func:`_epoch_area`) and at least ``DEFAULTS["min_steps"]`` batches."""
    if chips_per_epoch is None:
        per_epoch = max(DEFAULTS["min_steps"] * batch_size, math.ceil(int(area) / tile**2))
    else:
        per_epoch = int(chips_per_epoch)
    return max(1, math.ceil(per_epoch / batch_size))


# --------------------------------------------------------------------------------------
# stage 5: fitting
def _init_from(model: Any, path: str, card_classes: ClassTable, arch: str, encoder: str, in_channels: int,
               arch_kwargs: dict[str, Any], boundary: bool = False) -> dict[str, Any]:
    """Load a geoseg checkpoint's weights into ``model`` (fine-tuning); a new class table, or a
    boundary output where the checkpoint has none (or the reverse), keeps the head's."""
    p = Path(path)
    src = read_card(p)
    check_init_card(src, p, arch, encoder, in_channels, arch_kwargs)
    src_model, _ = load_checkpoint(p, "cpu")
    state = src_model.state_dict()
    same_classes = src.classes.names == card_classes.names and src.boundary == boundary
    if not same_classes:  # new class table: keep everything but the classification head
        own = model.state_dict()
        state = {**{k: v for k, v in own.items() if k.startswith("segmentation_head.")},
                 **{k: v for k, v in state.items() if not k.startswith("segmentation_head.")}}
    load_into(model, state, str(p / "model.safetensors"))
    return {"init_from": str(p), "init_kind": "checkpoint", "head_reinitialised": not same_classes}


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


def _fit_model(spec: _Arch, bands: int, table: ClassTable, chips: _Chips, plan: _Plan, *,
               init_from: str | os.PathLike[str] | None, valid_rule: str, device: str,
               progress: Progress | None, pretrained: str | os.PathLike[str] | None = None,
               pretrained_bands: Sequence[str] | None = None,
               channel_names: Sequence[str | None] = (), boundary: bool = False) -> tuple[Any, _Fit, dict[str, Any]]:
    """Build the network (weights seeded, loaded from ``init_from``, or its encoder from
    ``pretrained`` adapted to ``channel_names``), fit it, and return it on the CPU holding the
    best epoch's weights, with how fitting went and what was loaded.

    Runs inside :func:`torch.random.fork_rng` and :func:`_deterministic`, so the caller's
    random state and determinism setting are as they were afterwards.
    """
    import torch

    cuda = device.startswith("cuda")
    init_info: dict[str, Any] = {}
    rng_devices = [torch.device(device).index or 0] if cuda else []
    with torch.random.fork_rng(devices=rng_devices), _deterministic(plan.deterministic, cuda):
        torch.manual_seed(plan.seed)
        dates = chips.sampler.dates
        channels = bands if dates is None else (
            dates.layouts[0].n_bands if spec.arch.lower() in TEMPORAL_ARCHS else bands + dates.layouts[0].n_dates)
        model = mark_outputs(build_model(spec.arch, spec.encoder, channels, output_channels(len(table), boundary),
                                         **spec.kwargs), boundary)
        if init_from is not None:
            init_info = _init_from(model, str(init_from), table, spec.arch, spec.encoder, bands, spec.kwargs,
                                   boundary)
        first = None
        if pretrained is not None:
            init_info = {**load_pretrained(model, pretrained, channel_names, pretrained_bands),
                         "freeze_epochs": plan.freeze_epochs}
            first = init_info["first_conv"]
        model.to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
        loss_fn = make_loss(plan.loss, chips.weights)
        if boundary:
            loss_fn = BoundaryLoss(loss_fn, EDGE_STEP)
        loss_fn = loss_fn.to(device)
        fit = _fit(model, opt, loss_fn, chips, plan, valid_rule=valid_rule, device=device, table=table,
                   progress=progress, first_conv=first)
        model.load_state_dict(fit.best_state)
        model.to("cpu")
    return model, fit, init_info


def _fit(model: Any, opt: Any, loss_fn: Any, chips: _Chips, plan: _Plan, *, valid_rule: str, device: str,
         table: ClassTable, progress: Progress | None, first_conv: str | None = None) -> _Fit:
    """The epochs: steps on training chips, then the validation blocks scored; keeps the best
    epoch by validation mIoU, stops after ``plan.patience`` epochs without a better one, and
    stops in time for one more validation before the time budget runs out. A pretrained
    encoder (``first_conv`` set) is frozen but for that convolution for ``plan.freeze_epochs``."""
    fit = _Fit()
    t_train = time.perf_counter()
    train_budget = None if plan.budget_s is None else plan.budget_s - (t_train - plan.t_start)
    total_steps = plan.steps * plan.epochs
    val_seconds = 0.0
    step = 0
    epoch = 0
    for epoch in range(1, plan.epochs + 1):
        model.train()
        if first_conv is not None and plan.freeze_epochs:
            freeze_encoder(model, first_conv, frozen=epoch <= plan.freeze_epochs)
        losses = []
        out_of_time = False
        for _ in range(plan.steps):
            elapsed = time.perf_counter() - t_train
            if train_budget is not None and elapsed + 1.5 * val_seconds + 5 >= train_budget and step > 0:
                out_of_time = True
                break
            lr = plan.lr * _lr_factor(step, total_steps, elapsed, train_budget)
            losses.append(_train_step(model, opt, loss_fn, chips, plan, lr, device))
            step += 1
            fit.chips_seen += plan.batch_size
        t_val = time.perf_counter()
        val = _validate(model, chips.val_tiles, len(table), chips.mean, chips.std, valid_rule, device, table,
                        chips.sampler.dates)
        val_seconds = time.perf_counter() - t_val
        miou = val.miou if math.isfinite(val.miou) else 0.0
        improved = miou > fit.best_miou
        if improved:
            fit.best_miou, fit.best_epoch, fit.best_scores = miou, epoch, val
            fit.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else math.nan,
            "val_miou": val.miou,
            "val_pixel_accuracy": val.pixel_accuracy,
            "lr": opt.param_groups[0]["lr"],
            "encoder_frozen": first_conv is not None and epoch <= plan.freeze_epochs,
            "seconds": time.perf_counter() - plan.t_start,
            "best": improved,
        }
        fit.history.append(record)
        if progress is not None:
            progress(epoch, plan.epochs, dict(record))
        if out_of_time:
            fit.stop_reason = "time-limit"
            break
        if epoch - fit.best_epoch >= plan.patience:
            fit.stop_reason = "early-stop"
            break
        if plan.budget_s is not None and time.perf_counter() - plan.t_start + 1.5 * val_seconds + 5 >= plan.budget_s:
            fit.stop_reason = "time-limit"
            break
    fit.epochs_run = epoch
    return fit


def _train_step(model: Any, opt: Any, loss_fn: Any, chips: _Chips, plan: _Plan, lr: float, device: str) -> float:
    """One optimiser step at learning rate ``lr`` on a fresh batch of chips; returns its loss."""
    import torch

    for g in opt.param_groups:
        g["lr"] = lr
    xb, yb, days = chip_batch(chips.sampler, plan.batch_size, chips.mean, chips.std, plan.jitter, plan.augment)
    # channels-last on the CPU too: a U-Net step runs markedly quicker on such batches than on
    # NCHW ones (benchmarks/README.md, "Channels-last batches")
    x = torch.from_numpy(xb).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(yb).to(device)
    if device.startswith("cuda"):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = forward_logits(model, x, days)
    else:
        logits = forward_logits(model, x, days)
    batch_loss = loss_fn(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    batch_loss.backward()
    opt.step()
    return float(batch_loss.detach())


def _validate(model: Any, val_tiles: Sequence[tuple[_Scene, list[Tile]]], k: int, mean: Sequence[float],
              std: Sequence[float], valid_rule: str, device: str, table: ClassTable,
              dates: ChipDates | None = None) -> Scores:
    """Predict every validation block (tiled, as at inference, every pixel that saw a date for a
    model that reads dates) and score it."""
    acc = ConfusionAccumulator(k)
    model.eval()
    for scene, tiles in val_tiles:
        di = None if dates is None else DateInput(dates.layouts[scene.index], 1, list(mean), list(std))
        accumulate_confusion(model, scene.src, scene.validation_labels, tiles, acc, mean=mean, std=std,
                             valid_rule=valid_rule, batch_size=4, device=device, dates=di)
    model.train()
    return scores(acc.matrix, table.names)


def _fit_forest(model: Any, scenes: Sequence[_Scene], chips: _Chips, table: ClassTable, valid_rule: str,
                dates: ChipDates | None, device: str, seed: int,
                context: bool) -> tuple[Forest | None, dict[str, Any], Scores | None]:
    """The per-pixel forest (:mod:`geoseg.ml.forest`): fitted on the network's input at labelled
    pixels of the training blocks, on each pixel's values and, with ``context``, a second one on
    those and their neighbourhood's (:data:`~geoseg.ml.forest.CONTEXT`); the kind and the weight
    chosen on the validation blocks with the fitted network (the lowest Brier score of the fused
    probabilities), then that kind fitted again on the labelled pixels of every block. Returns
    that forest (None when the chosen weight is 0 or it cannot be fitted), the card's record of
    it and the fused validation scores (of the forest that never saw the validation blocks)."""
    t0 = time.perf_counter()

    def date_input(s: _Scene) -> DateInput | None:
        return None if dates is None else DateInput(dates.layouts[s.index], 1, list(chips.mean), list(chips.std))

    # the same share of every block's labelled pixels (the split counted them), from a stream of its own
    labelled = sum(int(s.split.train_counts().sum()) for s in scenes)

    def pixels(context: tuple[int, ...], validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The training blocks' rows (and with ``validation`` the validation blocks' after them),
        drawn from a stream of their own: the same pixels for each kind of forest (a share of them
        where a context forest's rows would pass :data:`~geoseg.ml.forest.MAX_ROW_BYTES`)."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0F0E57]))
        features = len(chips.mean) * (1 + 2 * len(context))
        share = min(MAX_PIXELS, MAX_ROW_BYTES // (4 * features)) / max(1, labelled)
        parts = [training_pixels([(s.src, s.validation_labels if v else s.labels, s.split.windows(v), date_input(s))
                                  for s in scenes], chips.mean, chips.std, valid_rule, share, rng, context)
                 for v in ((False, True) if validation else (False,))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    kinds: list[tuple[int, ...]] = [(), FOREST_CONTEXT] if context else [()]
    record: dict[str, Any] = {"trees": FOREST_TREES, "max_leaves": MAX_LEAVES, "max_depth": MAX_DEPTH}
    forests = []
    for radii in kinds:
        x, y = pixels(radii)
        record.setdefault("pixels", int(y.size))  # the pixel forest's
        record.setdefault("pixels_by_kind", {})["context" if radii else "pixel"] = int(y.size)
        if np.unique(y).size < 2:
            return None, {**record, "weight": 0.0, "note": "fewer than 2 classes among the training pixels"}, None
        forests.append(fit_forest(x, y, len(table), seed, context=radii))
        del x
    model.eval()
    pn, pfs, yv = validation_probabilities(
        model, forests, [(s.src, s.validation_labels, tiles, date_input(s)) for s, tiles in chips.val_tiles],
        chips.mean, chips.std, valid_rule, device)
    if yv.size == 0:
        return None, {**record, "weight": 0.0, "note": "no validation pixels to choose its weight on"}, None
    # each kind's weight and scores; kept: the lowest Brier score at its weight (the pixel forest on a tie)
    choices = [(f, pf, *choose_weight(pn, pf, yv, table.names)) for f, pf in zip(forests, pfs)]
    trees, pf, weight, loss, miou = min(choices, key=lambda c: c[3][c[2]])
    radii = trees.context
    fused = scores(confusion_matrix(fused_probabilities(pn, pf, weight).argmax(axis=1), yv, len(table)), table.names)
    record.update(context=list(radii), weight=weight, validation_pixels=int(yv.size),
                  network_miou=round(miou[0.0], 6), forest_miou=round(miou[1.0], 6), fused_miou=round(miou[weight], 6),
                  miou_by_weight={f"{w:.1f}": round(m, 6) for w, m in miou.items()},
                  brier_by_weight={f"{w:.1f}": round(v, 6) for w, v in loss.items()},
                  brier_by_kind={"context" if f.context else "pixel": round(lo[w], 6) for f, _, w, lo, _ in choices})
    del pn, pfs, pf, choices, forests
    if weight > 0:  # the weight is chosen: the validation pixels can teach the forest now
        x, y = pixels(radii, validation=True)  # read again: one kind's rows in memory at a time
        trees = fit_forest(x, y, len(table), seed, context=radii)
        record["pixels_refit"] = int(y.size)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    return (trees if weight > 0 else None), record, fused


def _validation_fields(model: Any, chips: _Chips, table: ClassTable, valid_rule: str, device: str,
                       dates: ChipDates | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """How the model's fields are best separated, chosen on the validation blocks: the fields of
    each block, as ``polygonize`` makes them (default sieve and non-crop classes) separated at
    each threshold of :data:`~geoseg.core.instances.SEPARATION_CHOICES` (and not at all), scored
    against the field polygons burnt on the block, the blocks combined
    (:func:`geoseg.core.objects.combine_scores`). Returns the card's ``separation`` (the best
    object F1's threshold) and the scores of that choice, with every choice's F1."""
    blocks = []
    model.eval()
    for s, tiles in chips.val_tiles:
        if s.chip_labels is None or not tiles:
            continue
        r0 = min(int(t.core.row_off) for t in tiles)
        c0 = min(int(t.core.col_off) for t in tiles)
        r1 = max(int(t.core.row_off + t.core.height) for t in tiles)
        c1 = max(int(t.core.col_off + t.core.width) for t in tiles)
        win = Window(c0, r0, c1 - c0, r1 - r0)
        mapped = np.full((r1 - r0, c1 - c0), NODATA, np.uint8)
        edges = np.zeros(mapped.shape, np.uint8)
        di = None if dates is None else DateInput(dates.layouts[s.index], 1, list(chips.mean), list(chips.std))
        accumulate_confusion(model, s.src, s.validation_labels, tiles, ConfusionAccumulator(len(table)),
                             mean=chips.mean, std=chips.std, valid_rule=valid_rule, batch_size=4, device=device,
                             dates=di, out=(mapped, win), boundary_out=edges)
        tf = s.info.transform @ Affine.translation(c0, r0)
        min_px = min_area_pixels(DEFAULT_MIN_AREA_HA, pixel_areas(tf, s.info.crs, mapped.shape).mean)
        blocks.append((mapped, edges, s.chip_labels.edges.ids(win), min_px))
    by_choice: dict[float | None, ObjectScores] = {}
    for p in SEPARATION_CHOICES:
        sep = Separation(threshold=boundary_value(p)) if p is not None else None
        by_choice[p] = combine_scores([
            mask_field_scores(m, m != NODATA, ids, min_pixels=min_px, exclude=table.no_field_ids,
                              boundary=None if sep is None else e, separation=sep)
            for m, e, ids, min_px in blocks])
    f1 = {p: (s.f1 if math.isfinite(s.f1) else -1.0) for p, s in by_choice.items()}
    best = max(SEPARATION_CHOICES, key=lambda p: f1[p])  # ties: the first (the lowest threshold)
    scores_ = {**by_choice[best].to_dict(), "separation_threshold": best,
               "f1_by_threshold": {("none" if p is None else f"{p:g}"): round(v, 6) for p, v in f1.items()}}
    return {"threshold": best, "f1": round(f1[best], 6)}, scores_


# --------------------------------------------------------------------------------------
# stage 6: the checkpoint's record
def _band_names(info: RasterInfo) -> list[str]:
    return [d if d else f"band {i}" for i, d in enumerate(info.descriptions, start=1)]


def _channel_names(info: RasterInfo, arch: str, dates: ChipDates | None) -> list[str | None]:
    """The band each input channel of the network reads (None for a date's validity plane)."""
    if dates is None:
        return list(info.descriptions)
    if arch.lower() in TEMPORAL_ARCHS:
        return list(dates.layouts[0].bands)
    return [*info.descriptions, *([None] * dates.layouts[0].n_dates)]


def _name_list(names: Sequence[str] | str | None) -> list[str] | None:
    """``"red, green,blue"`` or a sequence as a list of names (None when none are given)."""
    if names is None:
        return None
    items = names.split(",") if isinstance(names, str) else [str(n) for n in names]
    return [n.strip() for n in items if n.strip()] or None


def _freeze_epochs(freeze_epochs: int | None, pretrained: str | os.PathLike[str] | None) -> int:
    """Epochs with a frozen pretrained encoder: as given, else :data:`DEFAULTS` ``freeze_epochs``
    with ``pretrained`` and 0 without."""
    if freeze_epochs is None:
        return DEFAULTS["freeze_epochs"] if pretrained is not None else 0
    if isinstance(freeze_epochs, bool) or not isinstance(freeze_epochs, int) or freeze_epochs < 0:
        raise ConfigError(f"--freeze-epochs is {freeze_epochs!r}; expected a whole number >= 0")
    if freeze_epochs and pretrained is None:
        raise ConfigError("--freeze-epochs without --pretrained: only a pretrained encoder is frozen; "
                          "add --pretrained or drop --freeze-epochs")
    return freeze_epochs


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def _training_record(plan: _Plan, fit: _Fit, chips: _Chips, scenes: Sequence[_Scene], *, seconds: float,
                     device: str, images: list[str], labels: list[str], label_field: str | None,
                     time_limit: float | None, init_info: dict[str, Any],
                     point_radius: float | None = None) -> dict[str, Any]:
    """The card's ``training`` record: settings, seed, inputs, the split and every epoch."""
    import torch

    return {
        "epochs_run": fit.epochs_run,
        "epochs_max": plan.epochs,
        "best_epoch": fit.best_epoch,
        "stop_reason": fit.stop_reason,
        "seed": plan.seed,
        "loss": plan.loss,
        "class_weights": [round(float(w), 6) for w in chips.weights],
        "optimizer": "AdamW",
        "lr": plan.lr,
        "weight_decay": plan.weight_decay,
        "schedule": f"linear warm-up {_WARMUP_SHARE:.0%} then cosine to {_LR_FLOOR:.0%}",
        "batch_size": plan.batch_size,
        "chip": chips.sampler.tile,
        "chips_per_epoch": plan.steps * plan.batch_size,
        "chips": fit.chips_seen,
        "augment": {"d4": plan.augment, "jitter": plan.jitter},
        "date_dropout": chips.sampler.dates.dropout if chips.sampler.dates else None,
        "patience": plan.patience,
        "time_limit_minutes": time_limit,
        "seconds": round(seconds, 1),
        "device": device,
        "deterministic": plan.deterministic,
        "torch": torch.__version__,
        "images": images,
        "labels": labels,
        "label_field": label_field,
        "train_label_pixels": [int(v) for v in chips.train_counts],
        "stat_pixels": int(chips.stat_pixels),
        "validation": [
            {"image": s.image, "block": s.split.block, "pattern": s.split.pattern,
             "blocks": int(s.split.val.sum()), "of_blocks": int(s.split.val.size),
             "label_pixels": int(s.split.counts[s.split.val].sum())}
            for s in scenes
        ],
        "points": [s.points for s in scenes if s.points is not None],
        "point_radius_m": point_radius,
        "validation_tiles": sum(len(t) for _, t in chips.val_tiles),
        "history": [{k: _json_value(v) for k, v in h.items()} for h in fit.history],
        **init_info,
    }


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
    chip: int | None = None,
    epochs: int = DEFAULTS["epochs"],
    patience: int = DEFAULTS["patience"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    loss: str = DEFAULTS["loss"],
    seed: int = 0,
    init_from: str | os.PathLike[str] | None = None,
    label_field: str | None = None,
    point_radius: float | None = None,
    device: str = "auto",
    time_limit: float | None = None,
    block: int | None = None,
    chips_per_epoch: int | None = None,
    jitter: float = DEFAULTS["jitter"],
    augment: bool = True,
    valid_rule: str = "all",
    date_dropout: float | None = None,
    deterministic: bool = True,
    baseline: str | None = None,
    forest: bool = True,
    forest_context: bool = True,
    pretrained: str | os.PathLike[str] | None = None,
    pretrained_bands: Sequence[str] | str | None = None,
    freeze_epochs: int | None = None,
    fields: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model on labelled scenes and save it as a checkpoint directory ``out``.

    See the module docstring for the procedure and for why each default is what it is.

    Parameters
    ----------
    images, labels : path or sequence of paths
        The scenes and their labels, pairwise: label rasters on the image grid, or
        vector files of polygons or points with ``label_field`` (see :mod:`geoseg.io.labels`
        and :mod:`geoseg.io.points`).
    classes : ClassTable or path
        The class file; label values are its ids (or, for vectors, its names).
    out : path
        The checkpoint directory to write (replaced atomically if it exists).
    arch, encoder, arch_kwargs
        Architecture (default ``unet``, or that of ``init_from``), smp encoder name
        (default per architecture: ``resnet18`` / ``mit_b0``) and extra smp options.
    tile : int
        Inference tile side stored in the card, used to predict the validation blocks, and the
        training chip side unless ``chip`` is given; must be divisible by the model's multiple
        (:func:`geoseg.ml.model.tile_multiple`; 16 for the default U-Net).
    overlap : int, optional
        Inference halo stored in the card (default ``tile // 8``).
    chip : int, optional
        Training chip side (default :func:`default_chip`: ``tile``, or 64 px for a model that
        reads dates), a multiple of the model's too. Smaller chips
        give more optimiser steps per epoch for the same pixels; the card's tile and halo,
        which inference uses, do not change with it.
    epochs, patience : int
        Most epochs; stop after ``patience`` epochs without a better validation mIoU.
    batch_size, lr, weight_decay, loss
        Optimisation (AdamW, warm-up + cosine); ``loss`` is ``ce+dice``, ``ce`` or ``dice``.
    seed : int
        Seeds every random choice (split, chips, augmentation, initial weights).
    init_from : path, optional
        A geoseg checkpoint directory to fine-tune (same architecture, encoder and band
        count; a different class table re-initialises the head).
    pretrained : path or name, optional
        Encoder weights to start from (:mod:`geoseg.ml.pretrained`): a weights file
        (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``) or a published
        name (:data:`geoseg.ml.pretrained.PUBLISHED`, downloaded once into the cache; it sets the
        encoder). The first convolution is adapted to the stack's bands by band name.
    pretrained_bands : names, optional
        The bands the weights' first convolution reads, in order (``"red,green,blue"``); needed
        for a file, known for a published name.
    freeze_epochs : int, optional
        Epochs in which the pretrained encoder, but for its first convolution, does not learn
        (default 2 with ``pretrained``).
    fields : path or sequence of paths, optional
        Field polygons (one file for every scene, or one per scene): the model also learns to
        find field edges (:class:`geoseg.ml.losses.BoundaryLoss`), a last output channel that
        ``polygonize`` separates touching fields of one crop on (:mod:`geoseg.core.instances`).
        Crop pixels outside every polygon teach no edge.
    label_field : str, optional
        The attribute of vector labels holding the class.
    point_radius : float, optional
        For point labels (:mod:`geoseg.io.points`): each point labels the pixels whose
        centre lies within this many metres, and the pixel under it (default 0: that pixel
        only). Points are held out for validation whole, by the block they lie in.
    device : {"auto", "cpu", "cuda"}
    time_limit : float, optional
        Minutes of wall clock for the network's training; it stops cleanly before it,
        validates and saves the best epoch so far. The per-pixel forests are fitted after it,
        in a time that grows with the labelled pixels (up to 200,000) and the bands.
    block : int, optional
        Block side of the spatial split (default: two tiles, see :func:`geoseg.ml.split.block_size`).
    chips_per_epoch : int, optional
        Default: the labelled training pixels over ``chip ** 2``, at least 50 batches.
    jitter : float
        Per-band gain and offset jitter (in band standard deviations); 0 switches it off.
    augment : bool
        Flips, rotations and jitter (off: chips as read).
    valid_rule : {"all", "any"}
        Which image pixels count as observed (see :mod:`geoseg.io.raster`); not used by a model
        that reads dates.
    date_dropout : float, optional
        Makes the model read the stack's dates (named in its band descriptions, see
        :mod:`geoseg.core.dates`): a validity plane per date, and clouds simulated while training
        - each date of a chip dropped, or covered with blobs, with this probability
        (:func:`geoseg.ml.chips.simulate_clouds`; 0: the real gaps only). A temporal
        architecture (``utae``) always reads dates, with a default of 0.4.
    baseline : {None, "rf"}
        Also train a per-pixel random forest on the same training pixels and score it on the
        same validation blocks (:mod:`geoseg.ml.baseline`); its scores go in the card's
        ``training.baseline`` and the summary.
    forest : bool
        Fuse a per-pixel random forest with the network (:mod:`geoseg.ml.forest`; default on):
        fitted on the network's input at labelled pixels of the training blocks (on each pixel's
        values, and on those and its neighbourhood's where ``overlap`` is at least 2 px), the
        kind and its weight in the averaged probabilities chosen on the validation blocks (0: no
        forest is kept). Not for a temporal architecture (``utae``), whose input has no fixed
        channels.
    forest_context : bool
        Also try the forest that reads each pixel's neighbourhood (default); False: the pixel's
        own values only (for maps of thin things, roads or buildings, that a neighbourhood
        blurs).
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

    tune_allocator()  # reuse freed activation memory instead of fresh pages per step
    t_start = time.perf_counter()
    budget_s = _check_options(time_limit, epochs, batch_size, patience, lr, weight_decay, jitter, valid_rule, loss)
    image_list, label_list = _inputs(images, labels)
    field_list = _field_files(fields, len(image_list))
    table = classes if isinstance(classes, ClassTable) else load_classes(classes)
    spec = _architecture(arch, encoder, arch_kwargs, init_from, tile, overlap, chip, pretrained)
    freeze = _freeze_epochs(freeze_epochs, pretrained)
    wbands = _name_list(pretrained_bands)
    infos = _image_infos(image_list)
    bands = infos[0].count
    _check_init_from(init_from, spec, bands)

    check_baseline(baseline)
    date_spec = _date_layouts(infos, spec.arch, date_dropout)
    chip_ = default_chip(tile, date_spec is not None) if chip is None else int(chip)
    dev = pick_device(device)
    ss = np.random.SeedSequence(int(seed))
    rng_split, rng_stats, rng_chips = (np.random.default_rng(s) for s in ss.spawn(3))
    with ExitStack() as stack:
        scenes = _open_scenes(stack, image_list, label_list, infos, table, tile=tile, block=block,
                              label_field=label_field, rng=rng_split, point_radius=point_radius,
                              valid_rule="any" if date_spec else valid_rule)
        for s, path in zip(scenes, field_list):
            s.chip_labels = EdgeLabels(s.labels, FieldEdges(path, s.info.transform, s.info.crs),
                                       [c.id for c in table if c.crop])
        chips = _prepare_chips(scenes, tile, spec, rng_stats, rng_chips, valid_rule, date_spec, chip_)
        plan = _Plan(
            epochs=int(epochs),
            steps=_steps_per_epoch(_epoch_area(scenes, chips.train_counts), chip_, batch_size, chips_per_epoch),
            batch_size=int(batch_size), lr=lr, weight_decay=weight_decay, loss=loss, patience=int(patience),
            jitter=float(jitter) if augment else 0.0, augment=bool(augment), deterministic=bool(deterministic),
            seed=int(seed), t_start=t_start, budget_s=budget_s, freeze_epochs=freeze,
        )
        model, fit, init_info = _fit_model(spec, bands, table, chips, plan, init_from=init_from,
                                           valid_rule=valid_rule, device=dev, progress=progress,
                                           pretrained=pretrained, pretrained_bands=wbands,
                                           channel_names=_channel_names(infos[0], spec.arch, date_spec),
                                           boundary=bool(field_list))
        assert fit.best_scores is not None  # every epoch is scored, and the first one is the best so far
        metrics: dict[str, Any] = {**fit.best_scores.to_dict(), "epoch": fit.best_epoch}
        trees, forest_card = None, {}
        if forest and not getattr(model, "takes_days", False):
            # a halo narrower than the context's reach would read less of it at tile edges
            context = forest_context and spec.overlap >= max(FOREST_CONTEXT)
            trees, record, fused = _fit_forest(model, scenes, chips, table, valid_rule, date_spec, dev, int(seed),
                                               context)
            init_info = {**init_info, "forest": record}
            if trees is not None:
                forest_card = {"weight": record["weight"]}
                metrics = {**fused.to_dict(), "epoch": fit.best_epoch, "network_miou": fit.best_scores.miou}
        separation: dict[str, Any] = {}
        if field_list:
            fused_model = with_forest(model, trees, float(forest_card.get("weight", 0.0)))
            separation, metrics["fields"] = _validation_fields(fused_model, chips, table, valid_rule, dev, date_spec)
        if baseline is not None:
            base = forest_baseline([(s.src, s.labels, s.validation_labels, s.split) for s in scenes], table.names,
                                   int(seed), baseline, every_band=date_spec is None and valid_rule == "all")
            init_info = {**init_info, "baseline": base.to_dict()}
        seconds = time.perf_counter() - t_start
        reports = tuple(s.labels.report for s in scenes if isinstance(s.labels, PointLabels))
        card = ModelCard(
            arch=spec.arch,
            encoder=spec.encoder,
            in_channels=bands,
            classes=table,
            arch_kwargs=spec.kwargs,
            bands=_band_names(infos[0]),
            band_mean=chips.mean,
            band_std=chips.std,
            tile=int(tile),
            overlap=spec.overlap,
            valid_rule=valid_rule,
            dates=[d.isoformat() for d in date_spec.layouts[0].dates] if date_spec else [],
            outputs=["classes", "boundary"] if field_list else ["classes"],
            metrics={**metrics, "split": "validation blocks" + (" (pixels of the validation points)" if reports else "")},
            training=_training_record(plan, fit, chips, scenes, seconds=seconds, device=dev, images=image_list,
                                      labels=label_list, label_field=label_field, time_limit=time_limit,
                                      init_info={**init_info, "fields": field_list or None},
                                      point_radius=point_radius),
        )
        card = save_checkpoint(out, model, dataclasses.replace(card, forest=forest_card, separation=separation),
                               forest=trees)
    return TrainResult(Path(out), card, fit.epochs_run, fit.best_epoch, fit.stop_reason, seconds, fit.history,
                       reports)
