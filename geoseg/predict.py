"""Predict a whole scene with a checkpoint, tile by tile, into a mask COG (and a confidence COG).

Memory stays bounded by one batch of tiles, whatever the scene size. The single-process
loop here is what ``geoseg predict`` runs; ``geoseg run`` distributes the same per-batch
work (:func:`predict_tiles`) over Dask workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, EmptySceneError, TileError
from .grid import DEFAULT_TILE, Tile, TileGrid, tile_grid
from .infer import pick_device, predict_batch
from .io import (
    DEFAULT_MAX_PIXELS,
    RasterInfo,
    check_outputs,
    check_size,
    confidence_writer,
    mask_writer,
    open_raster,
    raster_info,
    read_tile,
)
from .model import ModelCard, load_checkpoint, read_card

__all__ = ["PredictResult", "check_batch_size", "check_input", "empty_scene_error", "predict_tiles", "predict_scene", "scene_grid"]


@dataclass(frozen=True, slots=True)
class PredictResult:
    """Where a prediction went and what it cost."""

    mask: Path
    confidence: Path | None
    tiles: int
    read_ratio: float
    device: str
    seconds: float


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
    if info.count != card.in_channels:
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
    if card.bands and all(names) and names != card.bands and sorted(names) == sorted(card.bands):
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
        f"check the nodata value with `gdalinfo {image}` (fix it with `gdal_edit.py -a_nodata VALUE`) "
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


def _batches(items: Sequence[Tile], n: int) -> Iterator[Sequence[Tile]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def predict_tiles(
    model: Any, card: ModelCard, src: Any, tiles: Sequence[Tile], device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``tiles`` from an open dataset and predict them as one batch.

    Returns ``(classes, confidence)``, each (B, size, size) uint8 over the read windows.
    """
    data = [read_tile(src, t, rule=card.valid_rule) for t in tiles]  # type: ignore[arg-type]
    arrays = np.stack([d.array for d in data])
    valids = np.stack([d.valid for d in data])
    return predict_batch(model, arrays, valids, card.band_mean, card.band_std, device)


def predict_scene(
    model_dir: str | Path,
    image: str | Path,
    out_mask: str | Path,
    *,
    confidence: str | Path | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PredictResult:
    """Predict ``image`` with the checkpoint in ``model_dir``.

    Parameters
    ----------
    model_dir : path
        A checkpoint directory (``model.safetensors`` + ``model.json``).
    image : path
        A georeferenced raster with the bands the model expects, in its order.
    out_mask : path
        The class mask to write (COG, uint8, 255 = nodata, the image's grid).
    confidence : path, optional
        Also write the confidence raster (COG, uint8 max softmax x 255, 0 = nodata).
    tile, overlap : int, optional
        Tile size (default 512) and overlap (default: the model card's).
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda"}
    progress : callable, optional
        ``progress(done, total)`` after each batch.
    max_pixels : int
        Refuse an image that declares more pixels (a broken or hostile header) before any work.

    Raises
    ------
    OutputIsInputError
        An output names the image, the model or the other output.
    RasterTooLargeError
        The image declares more than ``max_pixels`` pixels.
    TileError
        A tile size, overlap or batch size that cannot work.
    """
    t0 = time.perf_counter()
    check_outputs({"the mask": out_mask, "the confidence raster": confidence},
                  {"the image": image, "the model": [Path(model_dir) / "model.safetensors", Path(model_dir) / "model.json"]})
    check_batch_size(batch_size)
    card = read_card(model_dir)  # the image and the tiling are checked against the card before the weights load
    info = raster_info(image)
    check_size(info, max_pixels, "pass a larger --max-pixels (max_pixels) if the image is really this large")
    check_input(card, info, model_dir)
    grid = scene_grid(card, info, tile, overlap)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev)
    conf_path = Path(confidence) if confidence is not None else None
    confs: Any = None

    def both_or_neither(exc_type: Any, exc: Any, tb: Any) -> bool:
        # pushed first, so it runs after both writers have finished or failed: a mask that failed
        # after its confidence was published takes the confidence with it
        if exc_type is not None and confs is not None and confs.published:
            Path(conf_path).unlink(missing_ok=True)  # type: ignore[arg-type]
        return False

    with ExitStack() as stack:
        stack.push(both_or_neither)
        src = stack.enter_context(open_raster(image))
        masks = stack.enter_context(
            mask_writer(out_mask, shape=info.shape, transform=info.transform, crs=info.crs, classes=card.classes,
                        tags={"GEOSEG_MODEL_SHA256": card.weights_sha256})
        )
        if conf_path is not None:
            confs = stack.enter_context(
                confidence_writer(conf_path, shape=info.shape, transform=info.transform, crs=info.crs)
            )
        done = 0
        observed = False
        for batch in _batches(grid.tiles, batch_size):
            classes, conf = predict_tiles(model, card, src, batch, dev)
            observed = observed or bool((conf > 0).any())
            for t, c, p in zip(batch, classes, conf):
                masks.write_tile(t, c)
                if confs is not None:
                    confs.write_tile(t, p)
            done += len(batch)
            if progress:
                progress(done, len(grid))
        if not observed:  # raised inside the writers' block: nothing is left at the targets
            raise empty_scene_error(image, info.nodata)
    return PredictResult(Path(out_mask), conf_path, len(grid), grid.read_ratio, dev, time.perf_counter() - t0)

