"""Model inference on batches of tiles: read, normalise, forward, class + confidence. torch only.

:func:`predict_tiles` is the one inference loop: ``geoseg predict``, ``geoseg evaluate``,
training's validation and the workflow's tasks all predict through it. Each caller decides
where the pixels come from (:func:`read_batches` reads them in line; a workflow task reads
ahead on threads with :func:`read_batch`) and what becomes of the answers (written, scored,
stored).

On a GPU the raw pixels are sent as they are read (uint16 is half the bytes of float32) and
the device normalises them (:func:`normalise_tensor`, the same values as :func:`normalise`);
on a CPU numpy normalises, which is several times quicker there than torch on one thread.

Confidence is the maximum softmax probability scaled to uint8 (1..255); 0 marks nodata.
Classes are uint8 with 255 for nodata. Batches run channels-last under
:func:`torch.inference_mode`, in the precision :func:`inference_precision` picks: bf16
autocast on CUDA and on CPUs with native bf16 matrix instructions (Intel AMX, AVX512-BF16),
float32 elsewhere. Set ``GEOSEG_PRECISION=fp32`` (or ``bf16``) in the environment of the
processes that predict (Dask workers inherit it) to force one. On the demo model, bf16 and
float32 masks agree on 99.97 % of pixels, and bf16 is the quicker on CPUs with native bf16
instructions (benchmarks/README.md has the figures).

Memory allocator: a batch allocates and frees tens of large arrays (activations of 10-100
MB). glibc serves allocations above its mmap threshold with fresh pages from the kernel
each time, and Dask workers start with ``MALLOC_TRIM_THRESHOLD_=65536``, which pins that
threshold at 128 KiB; every batch then pays page faults for all its activations.
:func:`geoseg.parallel.tune_allocator` (called before the first batch, and by training) raises the mmap
threshold to 256 MiB and the trim threshold to 512 MiB with ``mallopt`` (glibc only), so
freed activations are reused instead of faulted in afresh (benchmarks/README.md, "Allocator",
has the gain). Set ``GEOSEG_MALLOC=default`` to leave the allocator alone. This reaches threads other than the main one only when the process
has a single malloc arena (``MALLOC_ARENA_MAX=1``; glibc's per-thread arenas hand out heaps of
at most 64 MiB): Dask tasks run on worker threads, so workflow runs start their LocalCluster
workers with it (see :func:`geoseg.workflow.cluster.connect`). :func:`geoseg.parallel.release_memory` gives the
kept memory back when inference is over.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import NODATA
from geoseg.core.dates import DateLayout, date_layout, split_band_name
from geoseg.core.grid import DEFAULT_TILE, Tile, TileGrid, tile_grid
from geoseg.errors import CheckpointError, ConfigError, DateLayoutError, EmptySceneError, TileError
from geoseg.io.raster import RasterInfo, read_periods, read_tile
from geoseg.ml.model import ModelCard
from geoseg.parallel import tune_allocator

__all__ = [
    "pick_device",
    "inference_precision",
    "normalise",
    "normalise_tensor",
    "network_input",
    "forward_logits",
    "predict_proba",
    "predict_batch",
    "predict_outputs",
    "has_boundary",
    "class_logits",
    "boundary_uint8",
    "check_batch_size",
    "check_input",
    "empty_scene_error",
    "scene_grid",
    "TileBatch",
    "TilePrediction",
    "DateInput",
    "date_input",
    "with_validity",
    "tile_batches",
    "read_batch",
    "read_batches",
    "predict_tiles",
    "statistics",
]

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (``amx_bf16`` or ``avx512_bf16``; Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def inference_precision(device: str = "cpu") -> str:
    """``"bf16"`` or ``"fp32"`` for inference on ``device`` (see the module notes).

    Raises
    ------
    ConfigError
        ``GEOSEG_PRECISION`` holds something other than auto, fp32 or bf16.
    """
    want = os.environ.get("GEOSEG_PRECISION", "auto").strip().lower()
    if want not in PRECISIONS:
        raise ConfigError(f"GEOSEG_PRECISION={want!r}; expected one of {', '.join(PRECISIONS)} (or leave it unset)")
    if want != "auto":
        return want
    if device.startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def pick_device(device: str = "auto") -> str:
    """``"cuda"`` when asked for (or ``"auto"`` and a GPU is present), else ``"cpu"``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    return device


def _band_stats(mean: Sequence[float], std: Sequence[float], bands: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band means and stds as float32 (bands, 1, 1) arrays, stds at least 1e-6."""
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    if m.size != bands or s.size != bands:
        raise ValueError(f"normalisation has {m.size} means / {s.size} stds for {bands} bands")
    return m.reshape(bands, 1, 1), np.maximum(s, np.float32(1e-6)).reshape(bands, 1, 1)


def normalise(
    array: np.ndarray, valid: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Standardise ``array`` ((B,) C, H, W) per band; invalid pixels become 0 (the band mean).

    The result has the shape of ``array`` but is laid out channels-last in memory (a
    transposed view of an (..., H, W, C) float32 array), the layout the model runs in: torch
    takes it without the reordering copy it would otherwise make of every batch. The values
    are float32 ``(float32(pixel) - mean) / std``, computed as written.

    Examples
    --------
    >>> a = np.array([[[10.0, 0.0]], [[4.0, 0.0]]])  # 2 bands, 1 x 2 pixels
    >>> normalise(a, np.array([[True, False]]), [6.0, 2.0], [2.0, 1.0]).tolist()
    [[[2.0, 0.0]], [[2.0, 0.0]]]
    """
    m, s = _band_stats(mean, std, array.shape[-3])
    nd = array.ndim
    last = (*range(nd - 3), nd - 2, nd - 1, nd - 3)  # (..., C, H, W) -> (..., H, W, C)
    back = (*range(nd - 3), nd - 1, nd - 3, nd - 2)
    t = array.transpose(last)
    x = np.empty(t.shape, np.float32)
    np.subtract(t, m.reshape(-1), out=x, dtype=np.float32)  # each pixel made float32 first, then the float32 maths
    np.divide(x, s.reshape(-1), out=x)
    bad = ~valid[..., None] if valid.ndim == nd - 1 else ~valid.transpose(last)
    if array.dtype.kind not in "iub":  # integers give finite values (std >= 1e-6); floats may hold inf or nan
        bad = bad | ~np.isfinite(x)
    np.copyto(x, np.float32(0), where=bad)
    return x.transpose(back)


def normalise_tensor(array: np.ndarray, valid: np.ndarray, mean: Sequence[float], std: Sequence[float],
                     device: str) -> Any:
    """:func:`normalise` done by torch on ``device``: the raw pixels travel (uint16: half the
    bytes of float32) and the device converts them. Gives the same float32 values as
    :func:`normalise`. On a GPU this takes the per-batch float conversion (several passes over
    ~270 MB for 16 tiles of 16 bands) off the worker's CPU thread, which also reads tiles.

    Examples
    --------
    >>> a = np.array([[[10, 0]], [[4, 0]]], dtype=np.uint16)
    >>> normalise_tensor(a, np.array([[True, False]]), [6.0, 2.0], [2.0, 1.0], "cpu").tolist()
    [[[2.0, 0.0]], [[2.0, 0.0]]]
    """
    import torch

    m, s = _band_stats(mean, std, array.shape[-3])
    a = np.ascontiguousarray(array)
    if a.dtype == np.uint16:  # torch's uint16 has few kernels: move the bits as int16, widen there
        t = torch.from_numpy(a.view(np.int16)).to(device, non_blocking=True).to(torch.int32) & 0xFFFF
    elif a.dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        t = torch.from_numpy(a).to(device, non_blocking=True)
    else:  # uint32 and the like: convert here
        t = torch.from_numpy(a.astype(np.float32)).to(device, non_blocking=True)
    v = torch.from_numpy(np.ascontiguousarray(valid)).to(device, non_blocking=True)
    x = (t.to(torch.float32) - torch.from_numpy(m).to(device)) / torch.from_numpy(s).to(device)
    bad = ~v.unsqueeze(-3) if v.dim() == x.dim() - 1 else ~v
    return x.masked_fill_(bad | ~torch.isfinite(x), 0.0)


def with_validity(x: Any, observed: np.ndarray) -> Any:
    """The input of a model that reads dates: the normalised bands ``x`` (B, T*C, H, W), then one
    0/1 plane per date (``observed`` (B, T, H, W)); channels-last in memory, like :func:`normalise`'s
    output. ``x`` may be a numpy array or a torch tensor (then the planes go to its device).

    Examples
    --------
    >>> x = np.full((1, 2, 1, 2), 5.0, np.float32)  # 2 dates of 1 band, 1 x 2 pixels
    >>> with_validity(x, np.array([[[[True, False]], [[True, True]]]])).tolist()
    [[[[5.0, 5.0]], [[5.0, 5.0]], [[1.0, 0.0]], [[1.0, 1.0]]]]
    """
    if isinstance(x, np.ndarray):
        b, tc, h, w = x.shape
        out = np.empty((b, h, w, tc + observed.shape[1]), np.float32)
        out[..., :tc] = x.transpose(0, 2, 3, 1)
        out[..., tc:] = observed.transpose(0, 2, 3, 1)
        return out.transpose(0, 3, 1, 2)
    import torch

    v = torch.from_numpy(np.ascontiguousarray(observed)).to(x.device, non_blocking=True)
    return torch.cat([x, v.to(x.dtype)], dim=1)


def network_input(arrays: np.ndarray, valids: np.ndarray, mean: Sequence[float], std: Sequence[float],
                  observed: np.ndarray | None = None) -> np.ndarray:
    """What the network reads for raw tiles ``arrays`` (B, C, H, W) (see :func:`predict_batch`):
    the bands normalised (:func:`normalise`, 0 where not observed) and, for a model that reads
    dates (``observed`` (B, T, H, W)), a validity plane per date (:func:`with_validity`)."""
    band_valid = valids if observed is None else np.repeat(observed, arrays.shape[1] // observed.shape[1], axis=1)
    x = normalise(arrays, band_valid, mean, std)
    return x if observed is None else with_validity(x, observed)


def forward_logits(model: Any, x: Any, days: Any = None) -> Any:
    """Logits at the input's resolution: reduced-resolution outputs are upsampled bilinearly.
    A model that reads dates (``takes_days``) gets their day numbers ``days`` (T,) too."""
    import torch
    import torch.nn.functional as F

    if getattr(model, "takes_days", False):
        if days is None:
            raise ValueError("this model reads the dates of its input: pass their day numbers (days)")
        logits = model(x, torch.as_tensor(np.asarray(days, np.float32), device=x.device))
    else:
        logits = model(x)
    if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def predict_proba(model: Any, x: np.ndarray, device: str = "cpu", days: Any = None) -> np.ndarray:
    """Class probabilities (B, K, H, W) float32 for a normalised batch ``x`` (B, C, H, W)."""
    import torch

    with torch.inference_mode():
        return torch.softmax(class_logits(model, _logits(model, x, device, days)), dim=1).cpu().numpy()


def has_boundary(model: Any) -> bool:
    """True when ``model``'s last output channel is the field-boundary logit (a model trained
    with field polygons; :func:`geoseg.ml.model.mark_outputs`)."""
    return bool(getattr(model, "geoseg_boundary", False))


def class_logits(model: Any, logits: Any) -> Any:
    """The class channels of ``model``'s output ``logits`` (B, C, H, W): all but a boundary channel."""
    return logits[:, :-1] if has_boundary(model) else logits


def boundary_uint8(logit: Any) -> Any:
    """A boundary logit (B, H, W) as the stored value: probability x 254 + 1, rounded (1..255),
    so that 0 stays free for nodata."""
    import torch

    return torch.round(torch.sigmoid(logit.float()) * 254 + 1).to(torch.uint8)


def _logits(model: Any, x: Any, device: str, days: Any = None) -> Any:
    """Float32 logits for a normalised batch (numpy, or a tensor already on ``device``):
    channels-last input, bf16 autocast where chosen."""
    import torch

    if not isinstance(x, torch.Tensor) and any(st < 0 for st in x.strides):
        x = np.ascontiguousarray(x)  # torch takes any layout but reversed axes
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x).to(device, non_blocking=True)
    t = t.contiguous(memory_format=torch.channels_last)  # no copy for a batch from normalise
    if t.dim() == 4:  # a size-1 axis may carry any stride (numpy's x[None]: 0), which sends oneDNN down a slow path
        n, c, h, w = t.shape
        dense = (h * w * c, 1, w * c, c)
        if t.stride() != dense:
            t = t.as_strided(t.shape, dense)
    if inference_precision(device) == "bf16":
        with torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
            return forward_logits(model, t, days).float()
    return forward_logits(model, t, days).float()


def predict_batch(model: Any, arrays: np.ndarray, valids: np.ndarray, *args: Any,
                  **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predict a batch of raw tiles: ``(classes, confidence)`` of :func:`predict_outputs` (the same
    arguments), without a boundary model's edge band."""
    classes, confidence, _ = predict_outputs(model, arrays, valids, *args, **kwargs)
    return classes, confidence


def predict_outputs(
    model: Any,
    arrays: np.ndarray,
    valids: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    device: str = "cpu",
    observed: np.ndarray | None = None,
    days: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predict a batch of raw tiles: classes, confidence and, for a model with a boundary output,
    its edge band.

    Parameters
    ----------
    arrays : ndarray (B, C, H, W)
        Raw pixel values as read from the raster.
    valids : ndarray (B, H, W) bool
        Valid-data masks of the tiles.
    mean, std : sequence of float
        Per-band normalisation statistics from the model card.
    observed : ndarray (B, T, H, W) bool, optional
        For a model that reads dates: which dates each pixel saw. A missing date's bands are
        filled with 0 (the band mean) after normalisation and a validity plane per date follows
        the bands (:func:`with_validity`).
    days : sequence of float, optional
        The dates' day numbers, for a temporal model.

    Returns
    -------
    classes : ndarray (B, H, W) uint8, 255 where invalid
    confidence : ndarray (B, H, W) uint8, max softmax x 255 (at least 1), 0 where invalid
    boundary : ndarray (B, H, W) uint8 or None
        A boundary model's edge probability (:func:`boundary_uint8`), 0 where invalid; None for
        other models.

    Raises
    ------
    CheckpointError
        The model's outputs are NaN or infinite at valid pixels (it overflows on this input or its
        weights are damaged); the message names the model's checkpoint directory when it was
        loaded with :func:`geoseg.ml.model.load_checkpoint`.
    """
    import torch

    tune_allocator()
    with torch.inference_mode():
        # on a GPU the device normalises (same values); on a CPU numpy does, which measured quicker there
        if device.startswith("cuda"):
            band_valid = valids if observed is None else np.repeat(observed, arrays.shape[1] // observed.shape[1], 1)
            x = normalise_tensor(arrays, band_valid, mean, std, device)
            if observed is not None:
                x = with_validity(x, observed)
        else:
            x = network_input(arrays, valids, mean, std, observed)
        logits = _logits(model, x, device, days)
        conf, cls = torch.softmax(class_logits(model, logits), dim=1).max(dim=1)
        _check_finite_outputs(model, conf, valids)
        classes = cls.to(torch.uint8).cpu().numpy()
        confidence = torch.clamp(torch.round(conf * 255), 1, 255).to(torch.uint8).cpu().numpy()
        boundary = boundary_uint8(logits[:, -1]).cpu().numpy() if has_boundary(model) else None
    classes[~valids] = NODATA
    confidence[~valids] = 0
    if boundary is not None:
        boundary[~valids] = 0
    return classes, confidence, boundary


def _check_finite_outputs(model: Any, conf: Any, valids: np.ndarray) -> None:
    """Raise when the top class probability ``conf`` (B, H, W) is NaN at a valid pixel: softmax
    gives NaN exactly where a logit is NaN or +inf (or all are -inf), and such a pixel would
    otherwise come out with confidence 0, as nodata."""
    import torch

    bad = torch.isnan(conf)
    if not bool(bad.any()):
        return
    n_bad = int((bad.cpu().numpy() & valids).sum())
    if n_bad:
        where = getattr(model, "geoseg_checkpoint", None)
        head = f"{where}: the model" if where else "The model"
        raise CheckpointError(
            f"{head} produced non-finite outputs (NaN or infinity) for {n_bad} of the {int(valids.sum())} valid "
            f"pixels of a batch, so they cannot be classified; this is not a nodata problem: the model overflows on "
            f"this input or its weights are damaged - check that the image is on the scale the model was trained on "
            f"(band_mean and band_std in model.json), else retrain the model or restore it from its source"
        )


def check_input(card: ModelCard, info: RasterInfo, model_dir: str | Path = "the model") -> None:
    """Raise :class:`CheckpointError` when ``info``'s bands do not fit what ``card`` expects."""
    try:
        dt = np.dtype(info.dtype)
        real = np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)
    except TypeError:  # GDAL types numpy lacks, e.g. complex_int16
        real = False
    if not real:
        raise CheckpointError(
            f"{info.path}: holds {info.dtype} pixels; expected real numbers (integer or floating-point reflectance) - "
            f"convert the image first, e.g. ``gdal_translate -ot Float32 {info.path} real.tif`` (for complex data, "
            f"take the amplitude first)"
        )
    # a temporal model takes any number of dates: date_input checks the bands of each
    if not card.temporal and info.count != card.in_channels:
        if card.dates:
            try:
                found = date_layout(info.descriptions, source=info.path)
                what = f"{found.n_dates} dates of {found.n_bands} bands"
            except DateLayoutError:
                what = f"{info.count} bands"
            raise CheckpointError(
                f"{info.path}: holds {what}, but {model_dir} is a channel-stacked {card.arch} trained on "
                f"{len(card.dates)} dates of {card.bands_per_date} bands ({card.in_channels} bands in all; "
                f"{card.dates[0]}..{card.dates[-1]}); such a model reads exactly its own number of dates - stack "
                f"{len(card.dates)} dates like those, or train a temporal model (--arch utae), which takes any "
                f"number of dates"
            )
        expected = f" ({', '.join(card.bands[:6])}{', ...' if len(card.bands) > 6 else ''})" if card.bands else ""
        raise CheckpointError(
            f"{info.path}: has {info.count} bands, but {model_dir} expects {card.in_channels}{expected}; "
            f"stack the inputs in the model's band order (`geoseg stack OUT.vrt FILE...`) or use a model "
            f"trained on {info.count}-band images"
        )
    if np.issubdtype(dt, np.integer) and card.band_mean:
        top = int(np.iinfo(dt).max)
        low = [i for i, m in enumerate(card.band_mean) if m > top]
        if low:
            i = low[0]
            raise CheckpointError(
                f"{info.path}: holds {dt.name} pixels (at most {top}), but {model_dir} was trained on values "
                f"around {card.band_mean[i]:g} (band {i + 1} mean; {len(low)} of {len(card.band_mean)} band means "
                f"exceed {top}), so every prediction would be wrong; supply the image on the model's scale "
                f"(e.g. reflectance x 10000 as uint16) or use a model trained on {dt.name} images"
            )
    names = list(info.descriptions)
    if not card.temporal and card.bands and all(names) and names != card.bands and sorted(names) == sorted(card.bands):
        first = next(i for i, (a, b) in enumerate(zip(names, card.bands)) if a != b)
        raise CheckpointError(
            f"{info.path}: band order differs from what {model_dir} expects (band {first + 1} is "
            f"{names[first]!r}, expected {card.bands[first]!r}); re-stack the bands in the model's order"
        )


def empty_scene_error(image: str | Path, nodata: float | None) -> EmptySceneError:
    """The error for a scene in which no pixel holds data (so no mask or area would mean anything)."""
    what = f"nodata value {nodata:g}" if nodata is not None else "its internal mask or NaN"
    return EmptySceneError(
        f"{image}: every pixel is nodata ({what}, in at least one band), so there is nothing to predict; "
        f"check the nodata value with `rio info {image}` (fix it with `rio edit-info --nodata VALUE {image}` or "
        f"`gdal_edit.py -a_nodata VALUE`) "
        f"or leave this scene out"
    )


def scene_grid(card: ModelCard, info: RasterInfo, tile: int | None = None, overlap: int | None = None) -> TileGrid:
    """The inference tile grid for a scene: 512 px tiles by default, the card's overlap."""
    return tile_grid(
        info.shape,
        info.transform,
        size=DEFAULT_TILE if tile is None else tile,
        overlap=card.overlap if overlap is None else overlap,
        multiple=card.multiple,
    )


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` when it is a whole number of tiles of at least 1.

    >>> check_batch_size(-1)
    Traceback (most recent call last):
    ...
    geoseg.errors.TileError: batch size -1: expected a whole number of tiles per forward pass, at least 1 (e.g. 4)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise TileError(f"batch size {batch_size!r}: expected a whole number of tiles per forward pass, at least 1 (e.g. 4)")
    return int(batch_size)


def tile_batches(tiles: Sequence[Tile], n: int) -> list[Sequence[Tile]]:
    """``tiles`` in consecutive groups of ``n``, one forward pass each (the last group possibly
    shorter). Not to be confused with :func:`geoseg.core.grid.task_batches`, which cuts a
    scene's grid into the workflow's tasks.

    Examples
    --------
    >>> tile_batches("abcde", 2)
    ['ab', 'cd', 'e']
    """
    return [tiles[i : i + n] for i in range(0, len(tiles), n)]


@dataclass(frozen=True, slots=True)
class TileBatch:
    """Tiles as read for the model (by :func:`read_batch`): raw pixels and where they hold data.

    Attributes
    ----------
    tiles : sequence of Tile
    pixels : ndarray (B, C, H, W)
        Pixel values over the tiles' read windows, as read from the raster.
    valid : ndarray (B, H, W) bool
        Where the pixels hold data, by the model card's valid rule.
    """

    tiles: Sequence[Tile]
    pixels: np.ndarray
    valid: np.ndarray
    #: (B, T, H, W) bool, for a model that reads dates: which dates each pixel saw (None otherwise).
    observed: np.ndarray | None = None


@dataclass(frozen=True)
class DateInput:
    """How a model that reads dates reads one stack (made by :func:`date_input`).

    Attributes
    ----------
    layout : DateLayout
        The stack's dates and the bands of each.
    min_dates : int
        A pixel is mapped when at least this many of its dates are observed (all of a date's
        bands hold data); others are nodata.
    mean, std : list of float
        Normalisation statistics for each band of this stack.
    """

    layout: DateLayout
    min_dates: int
    mean: list[float]
    std: list[float]

    @property
    def days(self) -> np.ndarray:
        return self.layout.days()


def statistics(card: ModelCard, dates: DateInput | None) -> tuple[list[float], list[float], np.ndarray | None]:
    """``(mean, std, days)`` to normalise and read a stack with: those of ``dates`` for a model
    that reads dates, else the card's band statistics and no day numbers."""
    if dates is not None:
        return dates.mean, dates.std, dates.days
    return list(card.band_mean), list(card.band_std), None


def _card_bands(card: ModelCard) -> tuple[str, ...] | None:
    """The bands of each date of a card's training stack, from its band names (None when they do not say)."""
    c = card.bands_per_date
    parsed = [split_band_name(b) for b in card.bands[:c]]
    names = tuple(p[2] for p in parsed if p is not None)
    return names if len(names) == c and len(set(names)) == c else None


def _card_layout(card: ModelCard) -> DateLayout:
    """The layout of the stack a card's model was trained on."""
    bands = _card_bands(card) or tuple(f"band {i}" for i in range(1, card.bands_per_date + 1))
    return DateLayout(tuple(date.fromisoformat(d) for d in card.dates), bands)


def date_input(card: ModelCard, info: RasterInfo, min_dates: int = 1,
               model_dir: str | Path = "the model") -> DateInput | None:
    """How ``card``'s model reads the stack ``info`` date by date; None for a model that does not read dates.

    A temporal model takes any number of dates, named in the band descriptions (see
    :mod:`geoseg.core.dates`), each with the bands it was trained on; its band statistics are
    the same on every date. A channel-stacked model that reads dates takes its own number of
    dates (:func:`check_input` refuses others); band names without dates are then read in the
    card's layout.

    Raises
    ------
    DateLayoutError
        A temporal model given band names that carry no dates, or dates out of order.
    CheckpointError
        A stack whose dates hold other bands than the model's.
    ConfigError
        ``min_dates`` below 1 or above the stack's dates.
    """
    if not card.dates:
        return None
    c = card.bands_per_date
    if card.temporal:
        try:
            layout = date_layout(info.descriptions, read_periods(info.path), source=info.path)
        except DateLayoutError as e:
            raise DateLayoutError(f"{e} ({model_dir} is a temporal model: it reads each band's date)") from None
        if layout.n_bands != c:
            raise CheckpointError(
                f"{info.path}: each date holds {layout.n_bands} bands {list(layout.bands)}, but {model_dir} reads "
                f"{c} per date; stack the bands the model was trained on, date by date"
            )
        own = _card_bands(card)
        if own is not None and set(own) == set(layout.bands) and own != layout.bands:
            raise CheckpointError(
                f"{info.path}: each date holds its bands in the order {list(layout.bands)}, but {model_dir} reads "
                f"{list(own)}; re-stack each date's bands in the model's order"
            )
        mean = list(card.band_mean[:c]) * layout.n_dates
        std = list(card.band_std[:c]) * layout.n_dates
    else:
        try:
            layout = date_layout(info.descriptions, read_periods(info.path), source=info.path)
        except DateLayoutError:
            layout = _card_layout(card)
        if layout.n_dates * layout.n_bands != info.count or layout.n_dates != len(card.dates):
            layout = _card_layout(card)
        mean, std = list(card.band_mean), list(card.band_std)
    if isinstance(min_dates, bool) or not isinstance(min_dates, (int, np.integer)) or not (
            1 <= min_dates <= layout.n_dates):
        raise ConfigError(
            f"min_dates {min_dates!r}: expected a whole number of dates from 1 to {layout.n_dates} (the dates of "
            f"{info.path}); a pixel is mapped when at least that many of its dates are observed"
        )
    return DateInput(layout, int(min_dates), mean, std)


@dataclass(frozen=True, slots=True)
class TilePrediction:
    """The model's answer for one :class:`TileBatch` (see :func:`predict_batch`).

    Attributes
    ----------
    tiles : sequence of Tile
    classes : ndarray (B, H, W) uint8
        Class ids over the read windows, 255 where the pixels hold no data.
    confidence : ndarray (B, H, W) uint8
        Max softmax x 255 (at least 1), 0 where the pixels hold no data.
    valid : ndarray (B, H, W) bool
        The batch's valid masks.
    seconds : float
        Time spent normalising, in the forward pass and on class and confidence (not reading).
    dates_seen : ndarray (B, H, W) uint8 or None
        For a model that reads dates: how many dates each pixel saw.
    boundary : ndarray (B, H, W) uint8 or None
        For a model with a boundary output: the probability that the pixel lies on a field's
        edge, x 254 + 1 (:func:`boundary_uint8`), 0 where the pixels hold no data.
    """

    tiles: Sequence[Tile]
    classes: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    seconds: float
    dates_seen: np.ndarray | None = None
    boundary: np.ndarray | None = None


def read_batch(src: Any, tiles: Sequence[Tile], valid_rule: str = "all", dates: DateInput | None = None) -> TileBatch:
    """Read ``tiles`` from the open dataset ``src`` (:func:`geoseg.io.raster.read_tile`: padded
    where a read window reaches outside the raster; ``valid_rule`` as in the model card).

    With ``dates`` (a model that reads dates), each pixel's observed dates are read too and a
    pixel is valid when at least ``dates.min_dates`` of them are observed; ``valid_rule`` is
    then not used.

    A workflow task calls it on reader threads, each with a dataset of its own (GDAL datasets
    are not thread-safe).
    """
    if dates is None:
        data = [read_tile(src, t, rule=valid_rule) for t in tiles]  # type: ignore[arg-type]
        return TileBatch(tiles, np.stack([d.array for d in data]), np.stack([d.valid for d in data]))
    data = [read_tile(src, t, rule="band") for t in tiles]
    observed = np.stack([dates.layout.observed(d.valid) for d in data])
    valid = observed.sum(axis=1, dtype=np.int16) >= dates.min_dates
    return TileBatch(tiles, np.stack([d.array for d in data]), valid, observed)


def read_batches(src: Any, tiles: Sequence[Tile], batch_size: int, valid_rule: str = "all",
                 dates: DateInput | None = None) -> Iterator[TileBatch]:
    """:func:`read_batch` over ``tiles`` in groups of ``batch_size``, each group read when it is asked for
    (so memory holds one batch at a time)."""
    for group in tile_batches(tiles, batch_size):
        yield read_batch(src, group, valid_rule, dates)


def predict_tiles(
    model: Any,
    batches: Iterable[TileBatch],
    mean: Sequence[float],
    std: Sequence[float],
    device: str = "cpu",
    days: Any = None,
) -> Iterator[TilePrediction]:
    """Predict each batch of tiles as it comes (:func:`predict_batch`), yielding one
    :class:`TilePrediction` per batch, in order.

    The inference loop of every caller: ``batches`` come from :func:`read_batches` (read in
    line) or from the caller's own readers (a workflow task reads ahead on threads); the
    caller writes, scores or stores the answers. ``mean`` and ``std`` are the model card's
    band statistics (:class:`DateInput`'s for a model that reads dates, with ``days`` its day
    numbers); the model must be in eval mode.

    Raises
    ------
    CheckpointError
        The model's outputs are NaN or infinite at valid pixels (see :func:`predict_batch`).

    Examples
    --------
    A "model" whose logits are the normalised bands, on one tile of 1 x 2 pixels, the second nodata:

    >>> import torch
    >>> pixels = np.array([[[[1, 5]], [[3, 2]]]], np.uint16)  # (1 tile, 2 bands, 1, 2)
    >>> batch = TileBatch(["tile"], pixels, np.array([[[True, False]]]))
    >>> [(p.tiles, p.classes.tolist(), p.confidence.tolist())
    ...  for p in predict_tiles(torch.nn.Identity(), [batch], [0.0, 0.0], [1.0, 1.0])]
    [(['tile'], [[[1, 255]]], [[[225, 0]]])]
    """
    for batch in batches:
        t0 = time.perf_counter()
        classes, confidence, boundary = predict_outputs(model, batch.pixels, batch.valid, mean, std, device,
                                                        batch.observed, days)
        seen = None if batch.observed is None else batch.observed.sum(axis=1, dtype=np.uint8)
        yield TilePrediction(batch.tiles, classes, confidence, batch.valid, time.perf_counter() - t0, seen, boundary)
