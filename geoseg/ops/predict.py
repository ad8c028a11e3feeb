"""Predict a whole scene with a checkpoint, tile by tile, into a mask COG (and a confidence COG).

Memory stays bounded by one batch of tiles, whatever the scene size. The single-process
loop here is what ``geoseg predict`` runs; ``geoseg run`` distributes the same per-batch
work (:func:`geoseg.ml.infer.predict_tiles`) over Dask workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.io.paths import check_overwrite, refuse_stdout
from geoseg.io.raster import (
    DEFAULT_MAX_PIXELS,
    check_creation_options,
    check_outputs,
    check_size,
    confidence_writer,
    mask_writer,
    open_raster,
    raster_info,
)
from geoseg.ml.forest import fuse
from geoseg.ml.infer import (
    check_batch_size,
    check_input,
    date_input,
    empty_scene_error,
    pick_device,
    predict_tiles,
    read_batches,
    scene_grid,
    statistics,
)
from geoseg.ml.model import CARD, FOREST, WEIGHTS, load_checkpoint, read_card
from geoseg.ml.tta import check_tta, with_tta

__all__ = [
    "PredictResult",
    "predict_scene",
]


@dataclass(frozen=True, slots=True)
class PredictResult:
    """Where a prediction went and what it cost."""

    mask: Path
    confidence: Path | None
    tiles: int
    read_ratio: float
    device: str
    seconds: float


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
    creation_options: Mapping[str, str] | None = None,
    overwrite: bool = True,
    min_dates: int = 1,
    tta: str | None = None,
    forest: bool = True,
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
        Also write the confidence raster (COG, uint8 max softmax x 255, 0 = nodata); for a model
        that reads dates, with a band holding how many dates each pixel saw; for a model with a
        boundary output (``train --fields``), with a last band ``boundary``, which ``polygonize``
        separates touching fields on (:func:`geoseg.io.raster.confidence_writer`).
    tile, overlap : int, optional
        Tile size (default 512) and overlap (default: the model card's).
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda"}
    progress : callable, optional
        ``progress(done, total)`` after each batch.
    max_pixels : int
        Refuse an image that declares more pixels (a broken or hostile header) before any work.
    creation_options : mapping, optional
        GDAL COG creation options for both outputs (``{"COMPRESS": "ZSTD"}``), checked by
        :func:`geoseg.io.raster.check_creation_options` before any work.
    overwrite : bool
        Replace existing outputs (``False``: refuse them, as ``geoseg predict`` does without
        ``--overwrite``).
    min_dates : int
        For a model that reads dates: a pixel is mapped when at least this many of its dates
        are observed (others are nodata). Not used by other models.
    tta : {None, "none", "flips", "d4"}
        Test-time augmentation: logits averaged over 4 flips or the 8 flips and rotations of
        each tile (:mod:`geoseg.ml.tta`), at 4 or 8 times the forward passes.
    forest : bool
        Fuse the model's per-pixel forest with the network, when its checkpoint has one
        (:mod:`geoseg.ml.forest`); False: the network alone.

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
    for out in (out_mask, confidence):
        refuse_stdout(out, "a COG", "its header and overviews are written after the pixels, with seeks back into "
                      "the file", "--out mask.tif, then `rio info mask.tif`")
    check_creation_options(creation_options, cog=True, path=out_mask)
    check_outputs({"the mask": out_mask, "the confidence raster": confidence},
                  {"the image": image, "the model": [Path(model_dir) / n for n in (WEIGHTS, CARD, FOREST)]})
    for out in (out_mask, confidence):  # after check_outputs, which names the input an output would replace
        check_overwrite(out, overwrite)
    check_batch_size(batch_size)
    check_tta(tta)
    card = read_card(model_dir)  # the image and the tiling are checked against the card before the weights load
    info = raster_info(image)
    check_size(info, max_pixels, "pass a larger --max-pixels (max_pixels) if the image is really this large")
    check_input(card, info, model_dir)
    dates = date_input(card, info, min_dates, model_dir)
    grid = scene_grid(card, info, tile, overlap)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev)
    model = fuse(with_tta(model, tta), model_dir, card, forest)
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
                        tags={"GEOSEG_MODEL_SHA256": card.weights_sha256}, creation_options=creation_options)
        )
        if conf_path is not None:
            confs = stack.enter_context(
                confidence_writer(conf_path, shape=info.shape, transform=info.transform, crs=info.crs,
                                  creation_options=creation_options, dates_seen=dates is not None,
                                  boundary=card.boundary, separation=card.separation_tag)
            )
        done = 0
        observed = False
        batches = read_batches(src, grid.tiles, batch_size, card.valid_rule, dates)
        mean, std, days = statistics(card, dates)
        for pred in predict_tiles(model, batches, mean, std, dev, days):
            observed = observed or bool((pred.confidence > 0).any())
            for i, (t, c, p) in enumerate(zip(pred.tiles, pred.classes, pred.confidence)):
                masks.write_tile(t, c)
                if confs is not None:
                    extra = [b[i] for b in (pred.dates_seen, pred.boundary) if b is not None]
                    confs.write_tile(t, np.stack([p, *extra]) if extra else p)
            done += len(pred.tiles)
            if progress:
                progress(done, len(grid))
        if not observed:  # raised inside the writers' block: nothing is left at the targets
            raise empty_scene_error(image, info.nodata)
    return PredictResult(Path(out_mask), conf_path, len(grid), grid.read_ratio, dev, time.perf_counter() - t0)
