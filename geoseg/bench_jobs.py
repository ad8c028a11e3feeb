"""The measured jobs of ``geoseg bench``, each run in a child process of its own.

:func:`geoseg.bench.run_job` writes a job (a JSON object naming its ``kind`` and inputs)
to a file and runs ``python -m geoseg.bench_jobs --job FILE``; the job prints one JSON
line with its times, and the parent adds the peak memory of the process tree.

A job starts from the state a workflow run's driver starts from: geoseg's modules
imported, torch not. So this module imports nothing that loads torch at import (not
:mod:`geoseg.bench`, which imports training): the jobs whose baseline is a whole run
(``one_process``, ``naive``) import torch inside their timed work, as the run's workers
do inside its infer stage, and the short jobs tune the allocator (``_TUNED_JOBS``)
before anything large is allocated.

The baselines (``rasterio.features.shapes`` on the whole mask, decoding the mask block by
block, plain block reads of the scene, the naive read-forward-write loop) read with
rasterio directly, as a user would write them: they are what geoseg's readers are
measured against.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window

from geoseg.core.grid import tile_grid
from geoseg.io.raster import iter_tiles, open_raster, raster_info, read_tile
from geoseg.ml.forest import fuse
from geoseg.ml.infer import _logits, normalise
from geoseg.ml.model import load_checkpoint
from geoseg.ops.areas import district_areas_raster
from geoseg.ops.polygonize import polygonize_raster
from geoseg.ops.predict import predict_scene
from geoseg.parallel import tune_allocator
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

__all__ = ["JOBS", "main"]


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _job_run(job: dict[str, Any]) -> dict[str, Any]:
    """A workflow run (``geoseg run``), timed from reading its file; the timings of its stages and tiles."""
    t = time.perf_counter()  # reading and checking the workflow is part of a run's time
    cfg = load_workflow(job["workflow"])
    res = run_workflow(cfg)
    wall = time.perf_counter() - t
    stats = {k: res.stats.get(k) for k in ("infer_worker_seconds", "tiles_per_task", "inference_precision")}
    return {"wall": wall, "timings": res.timings, "tiles": res.tiles, "run_dir": str(res.run_dir), "stats": stats}


def _job_one_process(job: dict[str, Any]) -> dict[str, Any]:
    """The run's work in this process: one thread, no Dask.

    Timed from the state a workflow run is timed from (geoseg's modules imported, torch
    not): the run's workers import torch inside its infer stage, so this process's import
    of torch is inside its time too.
    """
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _set_threads(1)
    predict_scene(job["model"], job["scene"], out / "mask.tif", confidence=out / "confidence.tif",
                  tile=job["tile"], batch_size=job["batch_size"], device="cpu")
    t1 = time.perf_counter()
    polygonize_raster(out / "mask.tif", confidence=out / "confidence.tif", workers=1,
                      districts=job["districts"], name_field="district")
    t2 = time.perf_counter()
    district_areas_raster(out / "mask.tif", job["districts"], "district", workers=1)
    t3 = time.perf_counter()
    return {"wall": t3 - t0, "timings": {"predict": t1 - t0, "polygonise": t2 - t1, "district_areas": t3 - t2}}


def _job_forward(job: dict[str, Any]) -> dict[str, Any]:
    """Model forward passes alone over ``tiles`` tiles (read once, in memory), ``threads`` threads,
    in the pipeline's precision and layout (bf16 channels-last where native) with its allocator settings."""
    _set_threads(job["threads"])
    import torch

    tune_allocator()  # the same allocator settings as the pipeline's forward passes
    model, card = load_checkpoint(job["model"])
    model = fuse(model, job["model"], card)  # the model a run maps with: with its per-pixel forest, if any
    info = raster_info(job["scene"])
    grid = tile_grid(info.shape, info.transform, size=job["tile"], overlap=card.overlap, multiple=card.multiple)
    b = job["batch_size"]
    with open_raster(job["scene"]) as src:
        data = [read_tile(src, t) for t in grid.tiles[:b]]
    x = normalise(np.stack([d.array for d in data]), np.stack([d.valid for d in data]), card.band_mean, card.band_std)
    n = job["tiles"]
    with torch.inference_mode():  # the pipeline's forward: its precision (bf16 where native) and layout
        _logits(model, x, "cpu")  # warm-up
        t = time.perf_counter()
        done = 0
        while done < n:
            k = min(b, n - done)
            _logits(model, x[:k], "cpu").argmax(1)
            done += k
        secs = time.perf_counter() - t
    return {"wall": secs, "tiles": n}


def _job_naive(job: dict[str, Any]) -> dict[str, Any]:
    """A straightforward loop: read a window, forward, argmax, write the window (all threads).

    As a user would write it: float32, default layout and allocator. With ``same_settings``
    the model runs as the pipeline runs it (precision, channels-last, allocator), which
    separates the pipeline's design from those settings. Timed, like the workflow run, from
    geoseg's modules imported: torch's import and the checkpoint's load are inside.
    """
    t = time.perf_counter()
    import torch

    same = bool(job.get("same_settings"))
    if same:
        tune_allocator()
    model, card = load_checkpoint(job["model"])
    model = fuse(model, job["model"], card)  # what a run maps with, so both sides do the same work
    size, multiple = job["tile"], card.multiple
    with rasterio.open(job["scene"]) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255, "tiled": True, "blockxsize": 512,
                   "blockysize": 512, "compress": "deflate"}
        with rasterio.open(job["out"], "w", **profile) as dst, torch.inference_mode():
            for r in range(0, src.height, size):
                for c in range(0, src.width, size):
                    w = Window(c, r, min(size, src.width - c), min(size, src.height - r))
                    a = src.read(window=w)
                    valid = src.read_masks(window=w).min(axis=0) > 0
                    h, wd = a.shape[1:]
                    ph, pw = -h % multiple, -wd % multiple
                    x = normalise(np.pad(a, ((0, 0), (0, ph), (0, pw))), np.pad(valid, ((0, ph), (0, pw))),
                                  card.band_mean, card.band_std)
                    logits = (_logits(model, x[None], "cpu") if same  # a plain loop's batch is NCHW in memory
                              else model(torch.from_numpy(np.ascontiguousarray(x[None]))))
                    pred = logits.argmax(1)[0, :h, :wd].numpy().astype("uint8")
                    pred[~valid] = 255
                    dst.write(pred, 1, window=w)
    return {"wall": time.perf_counter() - t}


def _typical(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """The median of ``repeat`` timed calls after one untimed call (which warms imports and
    caches), and the last result. A median, not the shortest: a machine sometimes runs a
    short call at about twice its usual speed, and a shortest-of-n would catch such a call
    on one side only."""
    out = fn()
    times = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def _job_polygonise(job: dict[str, Any]) -> dict[str, Any]:
    """geoseg's block-wise polygonise against ``rasterio.features.shapes`` on the whole mask (same polygons)."""

    def shapes_whole() -> list[Any]:
        with rasterio.open(job["mask"]) as src:
            a = src.read(1)
            return [(shapely.geometry.shape(g), v) for g, v in
                    rasterio.features.shapes(a, mask=a != 255, transform=src.transform, connectivity=4)]

    ours, gdf = _typical(lambda: polygonize_raster(job["mask"], min_area_ha=0, exclude=(), workers=job["threads"]))
    base, shapes = _typical(shapes_whole)
    same_count = len(shapes) == len(gdf)
    same_area = abs(sum(g.area for g, _ in shapes) - float(shapely.area(gdf.geometry.values).sum())) < 1e-3
    return {"ours": ours, "shapes": base, "polygons": len(gdf), "shapes_polygons": len(shapes),
            "identical_count_and_area": bool(same_count and same_area)}


def _job_areas(job: dict[str, Any]) -> dict[str, Any]:
    """District areas against decoding the same mask once, block by block."""

    def decode() -> None:
        with rasterio.open(job["mask"]) as src:
            for _, w in src.block_windows(1):
                src.read(1, window=w)

    base, _ = _typical(decode, 9)
    ours, _ = _typical(lambda: district_areas_raster(job["mask"], job["districts"], "district",
                                                     workers=job["threads"]), 9)
    return {"ours": ours, "decode": base}


def _job_reader(job: dict[str, Any]) -> dict[str, Any]:
    """geoseg's tiled reader (halos and padding included) against plain block-aligned reads of the scene."""
    info = raster_info(job["scene"])
    grid = tile_grid(info.shape, info.transform, size=job["tile"], overlap=job["overlap"])

    def tiled() -> int:
        px = 0
        with open_raster(job["scene"]) as src:
            for d in iter_tiles(src, grid):
                px += d.array.shape[-1] * d.array.shape[-2]
        return px

    def plain() -> int:
        px = 0
        with rasterio.open(job["scene"]) as src:
            for _, w in src.block_windows(1):
                a = src.read(window=w)
                src.read_masks(1, window=w)
                px += a.shape[-1] * a.shape[-2]
        return px

    ours, px = _typical(tiled, 3)
    base, plain_px = _typical(plain, 3)
    return {"ours": ours, "ours_px": px, "plain": base, "plain_px": plain_px}


#: Short jobs that time geoseg and its baseline in one process start with the allocator tuned
#: (:func:`geoseg.parallel.tune_allocator`), so that both sides run with the same allocator state.
#: Untuned, glibc may hand freed blocks back to the system after each call, and whether it does
#: depends on what the process allocated before: the same file decoded with the same code took
#: twice as long in some processes as in others, which made the areas baseline flip between the
#: two from one run to the next (benchmarks/README.md, "Areas vs decoding").
_TUNED_JOBS = ("polygonise", "areas", "reader")

JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "run": _job_run, "one_process": _job_one_process, "forward": _job_forward, "naive": _job_naive,
    "polygonise": _job_polygonise, "areas": _job_areas, "reader": _job_reader,
}


def main(argv: list[str]) -> int:
    """Run the job in the file ``argv`` names (``--job FILE``) and print its result as one JSON line."""
    if len(argv) == 2 and argv[0] == "--job":
        job = json.loads(Path(argv[1]).read_text())
        tuned = None
        if job["kind"] in _TUNED_JOBS:

            tuned = tune_allocator()
        print(json.dumps({**JOBS[job["kind"]](job), "allocator_tuned": tuned}))
        return 0
    print("usage: python -m geoseg.bench_jobs --job JOB.json (internal); use `geoseg bench`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
