"""The stages of a run, one function each, in the order :func:`geoseg.workflow.run.run_workflow` calls them.

1. :func:`plan_scenes` and :func:`check_districts` - the scenes (stacking per-date files) on
   their tile grids, and the boundary file read and checked before any inference;
2. :func:`batch_tasks` - the tiles of each inference task;
3. :func:`infer` - one Dask task per batch of tiles into the tile store;
4. :func:`assemble` - each scene's mask and confidence from the store, then the mosaic;
5. :func:`polygonize_fields` and :func:`sum_district_areas` - fields and the district table;
6. :func:`write_report` - quicklooks, chart and ``report.html``.

Each stage wires library functions (``io``, ``ops``, the Dask tasks of
:mod:`geoseg.workflow.tasks`) to the run's folders; the computing is theirs. File names come
from :class:`geoseg.rundir.RunPaths` and :func:`geoseg.workflow.store.run_store`.
"""

from __future__ import annotations

import heapq
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rasterio.crs import CRS

from geoseg.core.grid import Tile, TileGrid, task_batches, tile_grid
from geoseg.errors import DistrictWarning, GeosegError
from geoseg.io.districts import Districts, read_districts
from geoseg.io.mosaic import mosaic_masks
from geoseg.io.raster import (
    RasterInfo,
    atomic_path,
    decode_block_shape,
    publish_folder,
    raster_info,
    raster_tags,
)
from geoseg.io.sidecars import sidecar_paths
from geoseg.io.stac import StacAsset, stac_item, write_stac_item
from geoseg.io.stack import stack_rasters
from geoseg.io.vector import write_table, write_vector_parts
from geoseg.ml.model import ModelCard
from geoseg.ops.areas import district_areas_raster
from geoseg.ops.composite import clear_path_for, composite_season
from geoseg.ops.features import PartFeatures, SceneFootprint, district_crop_timeseries, part_features
from geoseg.ops.parcels import parcel_dataset
from geoseg.ops.polygonize import polygonize_dataset
from geoseg.parallel import Runner
from geoseg.report import write_run_report
from geoseg.rundir import AREA_FORMATS, RunPaths, district_areas_key, fields_key, read_manifest
from geoseg.workflow.config import RunConfig
from geoseg.workflow.exchange import Exchange
from geoseg.workflow.store import TASKS_FILE, read_store_json, run_store, scene_store, write_store_json
from geoseg.workflow.tasks import assemble_scene, infer_batch

__all__ = [
    "InferTally",
    "Scene",
    "assemble",
    "batch_tasks",
    "check_districts",
    "districts_on_mask",
    "infer",
    "plan_scenes",
    "polygonize_fields",
    "sum_district_areas",
    "task_tiles",
    "write_report",
]

log = logging.getLogger("geoseg.run")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Scene:
    """One scene of a run: the raster inference reads, its tile grid and, once sized, its tasks' tiles."""

    name: str
    path: Path | str  # str: read where it is (/vsis3/...), by the client and every worker
    info: RasterInfo
    grid: TileGrid
    batches: tuple[list[Tile], ...] = ()


# ------------------------------------------------------------------ 1. plan


def composite_seasons(cfg: RunConfig, paths: RunPaths, client: Any, say: Callable[[str], None]) -> dict[str, str]:
    """Each season scene composited on the run's cluster into the run folder (``inputs/<name>.tif``).

    A resumed run keeps a composite that is complete and was made from the same season spec
    (its ``GEOSEG_SEASON_SPEC`` tag), so it gives the result of a run that never stopped.
    """
    outputs: dict[str, str] = {}
    for s in cfg.scenes:
        if s.season is None:
            continue
        target = paths.season_scene(s.name)
        if _same_season(target, s.season.token) and clear_path_for(target).exists():
            say(f"season {s.name}: composite kept from the interrupted attempt")
        else:
            say(f"season {s.name}: compositing {', '.join(s.season.sources) or s.season.stac_api}")
            composite_season(target, runner=Runner(client=client), overwrite=True,
                             tags={"GEOSEG_SEASON_SPEC": s.season.token}, **s.season.kwargs())
        outputs[f"season_{s.name}"] = str(target)
        outputs[f"season_{s.name}_clear"] = str(clear_path_for(target))
    return outputs


def _same_season(path: Path, token: str) -> bool:
    if not path.exists():
        return False
    try:
        return raster_tags(path).get("GEOSEG_SEASON_SPEC") == token
    except GeosegError:  # unreadable: composite again
        return False


def season_observed(cfg: RunConfig, paths: RunPaths) -> str | None:
    """The day of the last look composited into the run's seasons (the fields' ``determination:datetime``),
    or None when the run has no season scene."""
    days: list[str] = []
    for s in cfg.scenes:
        if s.season is not None and paths.season_scene(s.name).exists():
            days += json.loads(raster_tags(paths.season_scene(s.name)).get("GEOSEG_DATES", "[]"))
    return f"{max(days)}T00:00:00" if days else None


def plan_scenes(cfg: RunConfig, card: ModelCard, paths: RunPaths, ex: Exchange) -> list[Scene]:
    """The workflow's scenes on their tile grids; a scene of several files is stacked into a VRT in the run folder,
    a season is the composite :func:`composite_seasons` made (both shared with the workers: ``ex``)."""
    rasters: list[tuple[str, Path | str]] = []
    for s in cfg.scenes:
        if s.season is not None:
            rasters.append((s.name, ex.shared(paths.season_scene(s.name))))
        elif s.is_stack:
            stack_rasters(paths.stacked_scene(s.name), list(s.paths), overwrite=True)  # a resumed run writes it again
            ex.forget(paths.stacked_scene(s.name))
            rasters.append((s.name, ex.shared(paths.stacked_scene(s.name))))
        else:
            rasters.append((s.name, s.paths[0]))
    scenes = []
    for name, path in rasters:
        info = raster_info(path)
        grid = tile_grid(info.shape, info.transform, size=cfg.tile, overlap=cfg.overlap, multiple=card.multiple)
        scenes.append(Scene(name, path, info, grid))
    return scenes


def check_districts(cfg: RunConfig) -> Districts | None:
    """The workflow's boundary file read and checked (name field, CRS, usable polygons), or None.

    Called while planning, so that a wrong name field or a broken file fails the run now, not
    after inference.
    """
    if cfg.districts is None:
        return None
    return read_districts(cfg.districts, cfg.name_field, warn=False)


# ------------------------------------------------------------------ 2. tasks


def task_tiles(counts: list[int], workers: int, most: int, batch_size: int) -> int:
    """Tiles per inference task: at most ``most``, chosen to finish soonest on ``workers`` workers.

    Tasks take ``n`` tiles at a time from each scene (``counts`` tiles per scene; in the order
    of :func:`geoseg.core.grid.task_batches`, which does not change their sizes). Candidate
    sizes are multiples of ``batch_size`` up to ``most`` (and ``most`` itself); for each, the
    tasks are dealt to the least-loaded worker, largest first, and the size whose busiest
    worker has the fewest tiles wins, the largest such size on ties (fewer, longer tasks).
    A 9-tile scene on 2 workers is split 4 + 4 + 1 rather than sent whole to one worker;
    144 tiles make 12 tasks of 12 rather than 9 of 16 (5 against 4 for the two workers).

    >>> task_tiles([9], 2, 16, 4), task_tiles([144], 2, 16, 4), task_tiles([144], 1, 16, 4)
    (4, 12, 16)
    """
    sizes = sorted({k for k in range(batch_size, most + 1, batch_size)} | {most})
    best, best_span = most, None
    for n in sizes:
        tasks = sorted((min(n, c - i) for c in counts for i in range(0, c, n)), reverse=True)
        loads = [0] * max(1, workers)
        for size in tasks:
            heapq.heapreplace(loads, loads[0] + size)
        span = max(loads)
        if best_span is None or span <= best_span:
            best, best_span = n, span
    return best


def _kept_task_tiles(cfg: RunConfig, run_id: str, counts: list[int], workers: int) -> int:
    """:func:`task_tiles` for this run; a resumed run keeps the size its first attempt chose."""
    root = run_store(cfg.store, cfg.name, run_id)
    try:
        n = int((read_store_json(root, TASKS_FILE) or {})["tiles_per_task"])
        if n >= 1:
            return n
    except (ValueError, KeyError, TypeError):
        pass
    n = task_tiles(counts, workers, cfg.tiles_per_task, cfg.batch_size)
    write_store_json(root, TASKS_FILE, {"tiles_per_task": n})
    return n


def batch_tasks(cfg: RunConfig, run_id: str, scenes: list[Scene], workers: int) -> tuple[int, list[Scene]]:
    """The tiles per task (sized so that each of ``workers`` gets a fair share; kept on resume) and
    the scenes with their tasks' tiles: compact bands of tiles, walked column by column, so that
    fewer file blocks are decoded twice."""
    n = _kept_task_tiles(cfg, run_id, [len(s.grid) for s in scenes], workers)
    batched = [replace(s, batches=tuple(task_batches(s.grid, n, decode_block_shape(s.info.block_shape))))
               for s in scenes]
    return n, batched


# ------------------------------------------------------------------ 3. infer


@dataclass
class InferTally:
    """What the inference tasks reported, summed: tiles done and reused from the store, worker
    seconds by part (skipped tasks add 0), and per worker the model loads, tasks and precision."""

    done: int = 0
    skipped: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "model": 0.0, "setup": 0.0, "write": 0.0})
    loads: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, int] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)

    def add(self, rec: dict[str, Any]) -> None:
        """Count one task's record (what :func:`geoseg.workflow.tasks.infer_batch` returns)."""
        worker = str(rec.get("worker"))
        self.done += rec["tiles"]
        self.skipped += rec["tiles"] if rec["skipped"] else 0
        for part, key in (("read", "read"), ("model", "compute"), ("setup", "setup"), ("write", "write")):
            self.seconds[part] += rec.get(f"{key}_seconds", 0.0)
        self.loads[worker] = rec["loads"]
        self.tasks[worker] = self.tasks.get(worker, 0) + 1
        if "precision" in rec:
            self.precision[worker] = f"{rec['device']} {rec['precision']}"


def infer(cfg: RunConfig, run_id: str, scenes: list[Scene], client: Any, read_ahead: int | None,
          progress: Progress | None) -> InferTally:
    """One task per batch of tiles (annotated with the workflow's worker resources) into the tile
    store; ``progress(done, total)`` as they finish."""
    from distributed import as_completed  # deferred: see geoseg.workflow.cluster

    total = sum(len(s.grid) for s in scenes)
    futures = []
    for s in scenes:
        root = scene_store(run_store(cfg.store, cfg.name, run_id), s.name)
        for b, tiles in enumerate(s.batches):
            futures.append(client.submit(
                infer_batch, str(s.path), cfg.model_source, str(root), b, tiles,
                batch_size=cfg.batch_size, device=cfg.device, threads=cfg.cluster.threads_per_worker,
                read_ahead=read_ahead, min_dates=cfg.min_dates, tta=cfg.tta, forest=cfg.forest,
                resources=cfg.cluster.resources or None, key=f"infer-{s.name}-{b:05d}-{run_id}", pure=False,
            ))
    tally = InferTally()
    for fut in as_completed(futures):
        tally.add(fut.result())
        if progress:
            progress(tally.done, total)
    return tally


# ------------------------------------------------------------------ 4. assemble and mosaic


def assemble(cfg: RunConfig, card: ModelCard, run_id: str, paths: RunPaths, scenes: list[Scene],
             client: Any, ex: Exchange) -> dict[str, str]:
    """Each scene's mask (and confidence) COG from the tile store, then the mosaic of the scenes.

    A single scene in the run's CRS is assembled straight into the run's ``mask.tif``; several
    are assembled under ``scenes/<name>/`` and mosaicked. Returns the outputs (``mask``,
    ``confidence``).
    """
    single = len(scenes) == 1 and (cfg.crs is None or scenes[0].info.crs == CRS.from_user_input(cfg.crs))
    if single:
        pairs = [(paths.mask, paths.confidence if cfg.outputs.confidence else None)]
    else:
        pairs = [(paths.scene_mask(s.name), paths.scene_confidence(s.name)) for s in scenes]
    _assemble_scenes(card, run_id, run_store(cfg.store, cfg.name, run_id), scenes, pairs, client, ex)
    if not single:
        mosaic_masks([m for m, _ in pairs], paths.mask, confidences=[c for _, c in pairs],
                     out_confidence=paths.confidence if cfg.outputs.confidence else None,
                     classes=card.classes, crs=cfg.crs)
    outputs = {"mask": str(paths.mask)}
    if cfg.outputs.confidence:
        outputs["confidence"] = str(paths.confidence)
    outputs["stac_item"] = str(_write_stac_item(cfg, card, run_id, paths))
    return outputs


def _write_stac_item(cfg: RunConfig, card: ModelCard, run_id: str, paths: RunPaths) -> Path:
    """The STAC item of the run's mask (with its classes) and confidence (:mod:`geoseg.io.stac`)."""
    assets = {"mask": StacAsset(paths.mask, "Crop class mask", ("data",), card.classes)}
    if cfg.outputs.confidence:
        assets["confidence"] = StacAsset(paths.confidence, "Confidence (max softmax probability)", ("data",))
    item = stac_item(paths.stac_item, run_id, assets,
                     properties={"geoseg:workflow": cfg.name, "geoseg:model_sha256": card.weights_sha256})
    return write_stac_item(paths.stac_item, item)


def _assemble_scenes(card: ModelCard, run_id: str, store: Path | str, scenes: list[Scene],
                     pairs: list[tuple[Path, Path | None]], client: Any, ex: Exchange) -> None:
    """The mask and confidence of each scene as two tasks (two workers compress at once), each
    COG (and its sidecars) in the run folder once all are done; a failed run leaves neither file
    of any pair."""
    futures = []
    for s, (m, c) in zip(scenes, pairs):
        jobs = [("mask", ex.out(m), None)] + ([("confidence", None, ex.out(c))] if c is not None else [])
        for kind, out_m, out_c in jobs:
            futures.append(client.submit(
                assemble_scene, scene_store(store, s.name), s.grid, s.info.crs.to_wkt(), card.classes.to_dict(),
                out_m, out_c, key=f"assemble-{kind}-{s.name}-{run_id}", pure=False, scene=str(s.path),
                dates_seen=bool(card.dates), boundary=card.boundary, separation=card.separation_tag,
            ))
    try:
        client.gather(futures)
    except Exception:
        # the other COG of a pair may have been finished by its own task: a failed run leaves neither
        from distributed import wait  # deferred: see geoseg.workflow.cluster

        wait(futures)
        for m, c in pairs:
            for out_path in (m, c, *sidecar_paths(m)):
                if out_path is not None:
                    Path(out_path).unlink(missing_ok=True)
        raise
    for m, c in pairs:
        for p in (m, c):
            if p is not None:
                ex.pull(p)
        for side in sidecar_paths(m):
            ex.pull(side, missing_ok=True)


# ------------------------------------------------------------------ 5. fields and district areas


def districts_on_mask(cfg: RunConfig, mask: Path, checked: Districts | None, stats: dict[str, Any]) -> Any:
    """The checked districts (:func:`check_districts`) in the mask's CRS, as a GeoDataFrame, or
    None; skipped or repaired ones go to ``stats["district_problems"]``. Read once for both stages."""
    if checked is None:
        return None
    d = read_districts(checked.gdf, cfg.name_field, crs=raster_info(mask).crs, warn=False)
    problems = [str(p) for p in checked.problems]
    problems += [q for q in (str(p) for p in d.problems) if q not in problems]
    stats["district_problems"] = problems
    return d.gdf


def polygonize_fields(cfg: RunConfig, card: ModelCard, run_id: str, paths: RunPaths, client: Any,
                      districts: Any, ex: Exchange) -> Path:
    """The mask's fields as a GeoParquet dataset in a staging folder beside ``fields.parquet``
    (:func:`write_fields` publishes it): traced block by block on the cluster, each block's inner
    fields written by its worker (:func:`geoseg.ops.polygonize.polygonize_dataset`). With
    ``outputs.parcels`` the fields are the user's parcels, each with its crop, counted in parts
    of the parcel file on the cluster (:func:`geoseg.ops.parcels.parcel_dataset`)."""
    staging = atomic_path(paths.fields("parquet"))
    model_id = (card.weights_sha256 or "")[:16] or None
    observed = cfg.outputs.observed or season_observed(cfg, paths)
    mask = ex.shared(paths.mask)  # workers read the rasters where they can
    confidence = ex.shared(paths.confidence) if cfg.outputs.confidence else None
    if cfg.outputs.parcels is not None:
        staging.mkdir(parents=True)
        parcel_dataset(
            mask, cfg.outputs.parcels, ex.out(staging), client=client, id_field=cfg.outputs.parcel_id,
            confidence=confidence, classes=card.classes,
            districts=districts, name_field=cfg.name_field, run_id=run_id, model_id=model_id, observed=observed,
        )
        ex.pull_folder(staging)
        return staging
    polygonize_dataset(
        mask, staging,
        exchange=ex.out(staging) if ex.remote else None,
        confidence=confidence,
        classes=card.classes,
        min_area_ha=cfg.outputs.min_area_ha,
        exclude=cfg.outputs.exclude_classes,
        client=client,
        districts=districts,
        name_field=cfg.name_field,
        run_id=run_id,
        model_id=model_id,
        observed=observed,
        separate=cfg.outputs.separate_fields,
        max_area_ha=cfg.outputs.max_area_ha,
    )
    return staging


def _parts(dataset: Path) -> list[Path]:
    return sorted(dataset.glob("*.parquet"))


def field_features(cfg: RunConfig, paths: RunPaths, scenes: list[Scene], dataset: Path, client: Any,
                   stats: dict[str, Any], ex: Exchange) -> dict[str, str]:
    """Growth features (``outputs.features``) of the fields, a task per part of the fields dataset
    on the cluster (:func:`geoseg.ops.features.part_features`): each field's index statistics per
    date from the scene whose footprint holds its representative point (the first listed),
    written as the dataset ``field_timeseries.parquet`` (a part per part of the fields), and each
    field's phenology added to its part as columns. Returns the outputs."""
    import pyarrow.parquet as pq

    staging = atomic_path(paths.field_timeseries)
    staging.mkdir(parents=True)
    footprints = tuple(SceneFootprint(str(sc.path), tuple(sc.info.shape), sc.info.transform, sc.info.crs)
                       for sc in scenes)
    jobs, first = [], 1
    for part in _parts(dataset):
        jobs.append(PartFeatures(ex.out(part), ex.out(staging / part.name), footprints, tuple(cfg.outputs.features),
                                 first))
        first += pq.read_metadata(part).num_rows
    try:
        done = Runner(None, client).map(part_features, jobs)
        if not any(d["written"] for d in done):
            return {}
        ex.pull_folder(staging)
        ex.pull_folder(dataset)  # the parts, with their phenology columns
        publish_folder(staging, paths.field_timeseries)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    notes = sorted({n for d in done for n in d["notes"]})
    if notes:
        stats["features_notes"] = notes
    stats["features_fields_outside"] = sum(d["outside"] for d in done)
    return {"field_timeseries": str(paths.field_timeseries)}


def district_profiles(cfg: RunConfig, card: ModelCard, paths: RunPaths, scenes: list[Scene], districts: Any,
                      client: Any, ex: Exchange) -> dict[str, str]:
    """Per district, crop and date, the index statistics over the pixels mapped as that crop
    (``outputs.features``), from each scene's own mask (one set of rows per scene, in a ``scene``
    column; where scenes overlap, a pixel counts in each that saw it)."""
    import pandas as pd

    tables = []
    for sc in scenes:
        mask = paths.scene_mask(sc.name) if paths.scene_mask(sc.name).exists() else paths.mask
        df = district_crop_timeseries(sc.path, ex.shared(mask), districts, cfg.name_field, indices=cfg.outputs.features,
                                      classes=card.classes, client=client)
        df.insert(0, "scene", sc.name)
        tables.append(df)
    write_table(pd.concat(tables, ignore_index=True), paths.district_crop_timeseries)
    return {"district_crop_timeseries": str(paths.district_crop_timeseries)}


def write_fields(cfg: RunConfig, card: ModelCard, paths: RunPaths, dataset: Path) -> dict[str, str]:
    """The fields in each of the workflow's formats, streamed part by part from the dataset
    (:func:`~geoseg.io.vector.write_vector_parts`), then the dataset itself published as
    ``fields.parquet`` (which ``geoseg query`` reads); returns the outputs (``fields_<fmt>``)."""
    import geopandas as gpd

    out = {}
    try:
        for fmt in cfg.outputs.fields:
            if fmt == "parquet":
                continue
            write_vector_parts((gpd.read_parquet(p) for p in _parts(dataset)), paths.fields(fmt),
                               classes=card.classes)
            out[fields_key(fmt)] = str(paths.fields(fmt))
        publish_folder(dataset, paths.fields("parquet"))
    finally:
        if dataset.exists():
            shutil.rmtree(dataset, ignore_errors=True)
    out[fields_key("parquet")] = str(paths.fields("parquet"))
    return out


def sum_district_areas(cfg: RunConfig, card: ModelCard, paths: RunPaths, districts: Any,
                       stats: dict[str, Any]) -> dict[str, str]:
    """Hectares per district and class from the mask, as CSV and Parquet; problems go to
    ``stats["district_problems"]``. Returns the outputs (``district_areas_<ext>``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DistrictWarning)  # repeated names: reported through df.attrs["problems"]
        df = district_areas_raster(paths.mask, districts, cfg.name_field, classes=card.classes)
    problems = stats.setdefault("district_problems", [])
    problems.extend(p for p in df.attrs.get("problems", []) if p not in problems)
    out = {}
    for ext in AREA_FORMATS:
        write_table(df, paths.district_areas(ext))
        out[district_areas_key(ext)] = str(paths.district_areas(ext))
    return out


# ------------------------------------------------------------------ 6. report


def write_report(paths: RunPaths, outputs: dict[str, str], timings: dict[str, float], tiles: int, skipped: int,
                 stats: dict[str, Any], say: Callable[[str], None]) -> dict[str, str]:
    """Quicklooks, district chart and report.html, from the manifest the run is about to write;
    a failure here is reported (and recorded in ``stats["report_error"]``), not fatal to the run."""
    manifest = {**read_manifest(paths.root), "status": "done", "outputs": dict(outputs), "timings": dict(timings),
                "tiles": tiles, "tiles_skipped": skipped, "stats": stats}
    try:
        return write_run_report(paths.root, manifest=manifest, say=say)
    except Exception as e:  # noqa: BLE001 - the mask, fields and areas are done; the run stays usable
        stats["report_error"] = f"{type(e).__name__}: {e}"
        log.warning("%s: the report could not be written (%s: %s); the run's outputs are complete - rebuild "
                    "it with `geoseg report %s`", paths.root, type(e).__name__, e, paths.root)
        return {}
