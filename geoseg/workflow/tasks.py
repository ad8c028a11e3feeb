"""Functions that run on Dask workers. Each opens what it needs inside ``rasterio.Env``.

The model is loaded once per worker process and cached (keyed by checkpoint path,
weights hash and device). On a GPU, inference reads the next batch of tiles on a thread
while the model computes the current one; on CPUs it does so only when told that cores
are free (``read_ahead``): where every core already runs a worker's model thread, a
reader thread only takes time slices and cache from the model, and the task is slower
with it (benchmarks/README.md, "Read-ahead only where cores are free"). The reading and
the model are :mod:`geoseg.ml.infer`'s (:func:`~geoseg.ml.infer.read_batch`,
:func:`~geoseg.ml.infer.predict_tiles`); a task adds the threads and the tile store.

Tiles are read through a GDAL block cache sized by :func:`geoseg.io.raster.tile_cache_bytes`,
so the blocks that neighbouring tiles of a task share are decoded once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from geoseg.classes import NODATA, ClassTable
from geoseg.core.grid import Tile, TileGrid
from geoseg.errors import portable_errors
from geoseg.io.objects import is_object_url, local_copy, written_to
from geoseg.io.raster import (
    MAX_CACHE_BYTES,
    confidence_bands,
    confidence_writer,
    mask_writer,
    open_raster,
    raster_info,
    tile_cache_bytes,
    writer_cache_bytes,
)
from geoseg.ml.forest import Forest, card_forest, with_forest
from geoseg.ml.infer import (
    TileBatch,
    date_input,
    empty_scene_error,
    inference_precision,
    pick_device,
    predict_tiles,
    read_batch,
    statistics,
    tile_batches,
)
from geoseg.ml.model import ModelCard, load_checkpoint, read_card
from geoseg.ml.tta import with_tta
from geoseg.parallel import quick_exit
from geoseg.workflow.store import SceneStore

__all__ = ["MAX_READERS", "assemble_scene", "cached_model", "infer_batch", "readers_for", "usable_cores"]

_MODELS: dict[tuple[str, str, str], tuple[Any, ModelCard]] = {}
_LOCK = threading.Lock()
#: How many times this process has loaded a model (tests check "once per worker").
LOADS = {"count": 0}


def cached_model(model_dir: str | Path, device: str) -> tuple[Any, ModelCard]:
    """The checkpoint's model on ``device``, loaded once per process."""
    card = read_card(model_dir)
    key = (str(Path(model_dir).resolve()), card.weights_sha256, device)
    with _LOCK:
        if key not in _MODELS:
            quick_exit()  # the worker's close need not wait for a final collection of torch's objects
            _MODELS[key] = load_checkpoint(model_dir, device)
            LOADS["count"] += 1
        return _MODELS[key]


_FORESTS: dict[tuple[str, str], Forest | None] = {}


def cached_forest(model_dir: str | Path, card: ModelCard) -> Forest | None:
    """The checkpoint's per-pixel forest (None without one), loaded once per process."""
    key = (str(Path(model_dir).resolve()), str(card.forest.get("sha256", "")))
    with _LOCK:
        if key not in _FORESTS:
            _FORESTS[key] = card_forest(model_dir, card)
        return _FORESTS[key]


#: Most reader threads one inference task starts (a GPU worker reading for its device).
MAX_READERS = 8


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def readers_for(device: str, threads: int = 1) -> int:
    """Reader threads for a task on ``device`` when nobody said: on a GPU, one per core this
    process may use beyond its ``threads`` (at least 1, at most :data:`MAX_READERS`), since
    decoding the tiles, not the device, bounds a GPU worker; none on a CPU, whose cores run
    the model."""
    if not device.startswith("cuda"):
        return 0
    return max(1, min(MAX_READERS, usable_cores() - max(1, threads)))


def _set_threads(threads: int) -> None:
    import torch

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@portable_errors
def infer_batch(
    scene: str,
    model_dir: str,
    store_root: str,
    batch: int,
    tiles: Sequence[Tile],
    *,
    batch_size: int = 4,
    device: str = "auto",
    threads: int = 1,
    read_ahead: int | None = None,
    min_dates: int = 1,
    tta: str = "none",
    forest: bool = True,
) -> dict[str, Any]:
    """Predict one batch of tiles of ``scene`` into the tile store (skipped when already done).

    ``read_ahead``: how many reader threads read the next groups of ``batch_size`` tiles
    while the model runs (0 or False: the model's thread reads, between forward passes).
    ``None`` (the default) reads ahead on GPUs only, with one reader per core this process
    may use beyond its ``threads``, at most :data:`MAX_READERS` (see :func:`readers_for`).

    ``model_dir`` may be an object-store URL (``s3://...``): the worker copies it once per machine.

    Returns a small record: batch number, tile count, whether it was skipped, seconds,
    the device and the model load count of this worker process.
    """
    t0 = time.perf_counter()
    store = SceneStore(store_root)
    if store.batch_done(batch, tiles):
        return {"batch": batch, "tiles": len(tiles), "worker": _worker_address(), "skipped": True, "seconds": 0.0,
                "loads": LOADS["count"]}
    dev = pick_device(device)
    _set_threads(threads)
    tm = time.perf_counter()
    if is_object_url(model_dir):  # a model on object storage: this machine's copy (made once)
        model_dir = str(local_copy(model_dir, "model directory"))
    model, card = cached_model(model_dir, dev)
    model = with_forest(with_tta(model, tta), cached_forest(model_dir, card) if forest else None,
                        float(card.forest.get("weight", 0.0)))
    dates = date_input(card, raster_info(scene), min_dates, model_dir)
    mean, std, days = statistics(card, dates)
    setup = time.perf_counter() - tm  # imports and the checkpoint on a worker's first task, ~0 after
    groups = tile_batches(tiles, batch_size)
    classes: list[np.ndarray] = []
    confidence: list[np.ndarray] = []
    seen: list[np.ndarray] = []
    edges: list[np.ndarray] = []
    compute = 0.0
    reading = [0.0]  # seconds reading tiles (summed over the reader threads when reading ahead)
    readers = readers_for(dev, threads) if read_ahead is None else int(read_ahead)
    lock = threading.Lock()
    handles = ExitStack()  # each reader thread's dataset, closed when the pool is done
    local = threading.local()

    def reader_src() -> Any:
        src = getattr(local, "src", None)
        if src is None:  # GDAL datasets are not thread-safe: one per reader thread
            with lock:
                src = local.src = handles.enter_context(open_raster(scene))
        return src

    def load(src: Any, group: Sequence[Tile]) -> TileBatch:
        tr = time.perf_counter()
        out = read_batch(src, group, card.valid_rule, dates)
        with lock:
            reading[0] += time.perf_counter() - tr
        return out

    with rasterio.Env(), open_raster(scene) as src:
        one = tile_cache_bytes(src, tiles)  # each reader's working set, so shared blocks are decoded once
        with rasterio.Env(GDAL_CACHEMAX=max(one, min(one * max(1, readers), MAX_CACHE_BYTES))):
            crs = src.crs
            if readers <= 0:
                batches: Iterator[TileBatch] = (load(src, g) for g in groups)
            else:
                batches = _reading_ahead(readers, groups, lambda g: load(reader_src(), g), handles)
            with closing(batches):  # a failed batch stops the readers and closes their datasets here
                for pred in predict_tiles(model, batches, mean, std, dev, days):
                    compute += pred.seconds
                    classes.extend(pred.classes)
                    confidence.extend(pred.confidence)
                    if pred.dates_seen is not None:
                        seen.extend(pred.dates_seen)
                    if pred.boundary is not None:
                        edges.extend(pred.boundary)
    tw = time.perf_counter()
    store.write_batch(batch, tiles, classes, confidence, crs, seen if dates else None, edges if card.boundary else None)
    write = time.perf_counter() - tw
    return {
        "batch": batch,
        "tiles": len(tiles),
        "worker": _worker_address(),
        "skipped": False,
        "seconds": time.perf_counter() - t0,
        "compute_seconds": compute,
        "read_seconds": reading[0],
        "setup_seconds": setup,
        "write_seconds": write,
        "device": dev,
        "precision": inference_precision(dev),
        "loads": LOADS["count"],
    }


def _reading_ahead(
    readers: int,
    groups: Sequence[Sequence[Tile]],
    load: Callable[[Sequence[Tile]], TileBatch],
    handles: ExitStack,
) -> Iterator[TileBatch]:
    """The loaded ``groups``, in order, while ``readers`` threads load the next ones.

    Each reader loads a whole group (adjacent tiles, which share file blocks) and
    ``readers`` groups are in flight; the readers' datasets (``handles``) are closed
    when the pool is done, and groups not yet started are cancelled when the caller
    stops early (closes this generator, e.g. because the model failed).
    """
    with handles, ThreadPoolExecutor(readers) as pool:  # the pool is done before the datasets close
        pending = deque(pool.submit(load, g) for g in groups[:readers])
        try:
            for i in range(len(groups)):
                out = pending.popleft().result()
                if i + readers < len(groups):
                    pending.append(pool.submit(load, groups[i + readers]))
                yield out
        finally:
            for f in pending:
                f.cancel()


@portable_errors
def assemble_scene(
    store_root: str,
    grid: TileGrid,
    crs_wkt: str,
    classes_dict: dict[str, Any],
    out_mask: str,
    out_confidence: str | None,
    *_deps: Any,
    scene: str | None = None,
    dates_seen: bool = False,
    boundary: bool = False,
    separation: str | None = None,
) -> dict[str, Any]:
    """Write the stored tile cores of one scene into a mask COG and/or a confidence COG (with
    ``dates_seen``, a band of the dates each pixel saw; with ``boundary``, the boundary band:
    :func:`geoseg.io.raster.confidence_writer`).

    A run submits the two as separate tasks (``out_mask`` or ``out_confidence`` None), so
    that two workers compress them at once. Raises :class:`~geoseg.errors.EmptySceneError`
    (leaving no output) when not one pixel of the scene (``scene``: its path, for the
    message) holds data.
    """
    t0 = time.perf_counter()
    store = SceneStore(store_root)
    classes = ClassTable.from_dict(classes_dict)
    shape = tuple(grid.shape)
    cache = writer_cache_bytes(shape, 512, count=1, itemsize=1)  # type: ignore[arg-type]
    with rasterio.Env(GDAL_CACHEMAX=cache), ExitStack() as stack:  # half-written blocks stay in the cache
        masks = confs = None
        if out_mask:  # written_to: a worker without the client's disk puts the COG on object storage
            masks = stack.enter_context(
                mask_writer(stack.enter_context(written_to(out_mask)), shape=shape, transform=grid.transform, crs=crs_wkt, classes=classes)  # type: ignore[arg-type]
            )
        if out_confidence:
            confs = stack.enter_context(
                confidence_writer(stack.enter_context(written_to(out_confidence)), shape=shape, transform=grid.transform, crs=crs_wkt,  # type: ignore[arg-type]
                                  dates_seen=dates_seen, boundary=boundary, separation=separation)
            )
        conf_bands = list(range(2, 2 + len(confidence_bands(dates_seen, boundary))))
        bands = ([1] if masks is not None else []) + (conf_bands if confs is not None else [])
        observed = False
        for t in grid:
            data = store.read_tile(t, bands)
            if masks is not None:
                observed = observed or bool((data[0] != NODATA).any())
                masks.write(data[0], t.core)
            if confs is not None:
                c = data[-len(conf_bands):]
                observed = observed or bool((c[0] > 0).any())
                confs.write(c if len(conf_bands) > 1 else c[0], t.core)
        if not observed:  # inside the writers' block: neither COG is left behind
            raise empty_scene_error(scene or store_root, _scene_nodata(scene))
    return {"mask": out_mask, "confidence": out_confidence, "seconds": time.perf_counter() - t0}


def _scene_nodata(scene: str | None) -> float | None:
    if scene is None:
        return None
    with open_raster(scene) as src:
        return src.nodata  # type: ignore[no-any-return]


def _worker_address() -> str | None:
    """The address of the Dask worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except ValueError:
        return None
