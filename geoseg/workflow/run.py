"""Execute a workflow on Dask: infer tiles -> assemble scenes -> mosaic -> fields -> district areas.

The graph: per scene, one ``infer_batch`` task per batch of tiles (annotated with the
workflow's worker resources, e.g. ``GPU: 1``), then two ``assemble_scene`` tasks (mask and
confidence COGs) once all of that scene's batches are stored; then the mosaic over all
scenes, block-wise polygonisation and district aggregation. It runs on an embedded
LocalCluster or on any scheduler address. This module wires tasks and records runs; the maths lives in the pure modules.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from geoseg.core.grid import task_batches, tile_grid
from geoseg.errors import ConfigError, DistrictWarning, GeosegError, WorkerLostError
from geoseg.io.districts import read_districts
from geoseg.io.mosaic import mosaic_masks
from geoseg.io.raster import decode_block_shape, raster_info, write_text_atomic
from geoseg.io.stack import stack_rasters
from geoseg.io.vector import write_table, write_vector
from geoseg.ml.model import read_card
from geoseg.ops.areas import district_areas_raster
from geoseg.ops.polygonize import polygonize_raster
from geoseg.parallel import release_memory
from geoseg.report import write_run_report
from geoseg.rundir import Catalog, RunLock, RunResult, read_manifest, write_manifest
from geoseg.workflow.config import RunConfig
from geoseg.workflow.store import claim_run_store
from geoseg.workflow.tasks import MAX_READERS, assemble_scene, infer_batch, usable_cores

__all__ = ["run_workflow", "connect"]

log = logging.getLogger("geoseg.run")

Progress = Callable[[int, int], None]




def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("geoseg", "numpy", "rasterio", "torch", "segmentation-models-pytorch", "dask", "distributed",
                "shapely", "geopandas", "pyogrio", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return out


def _input_record(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "mtime": st.st_mtime}


#: What the workers of the run's own LocalCluster do not log: a failed task, and a heartbeat
#: that found the scheduler (in the run's own process) gone as a failed run shut the cluster down.
_QUIET_WORKER_LOGS = ("Compute Failed", "Failed to communicate with scheduler during heartbeat")


def _not_a_task_failure(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_QUIET_WORKER_LOGS)


def quiet_task_failures() -> None:
    """In a worker of the run's own LocalCluster: do not log a failed task ("Compute Failed",
    with the task's traceback, on the terminal of whoever started the run), nor, when the run
    fails with tasks still running, the traceback of a heartbeat to the scheduler the run has
    just closed. The run raises the task's error in the client, where the command line reports
    it as one line; workers of a cluster you started yourself keep their logs."""
    logger = logging.getLogger("distributed.worker")
    if _not_a_task_failure not in logger.filters:
        logger.addFilter(_not_a_task_failure)


def connect(cfg: RunConfig, stack: ExitStack) -> Any:
    """A distributed Client: an embedded LocalCluster, or the workflow's scheduler address."""
    from distributed import Client, LocalCluster

    c = cfg.cluster
    if c.is_local:
        import dask

        # Workers of an embedded cluster: one malloc arena (tasks run on a worker thread, and glibc
        # gives threads other than the main one arenas of at most 64 MiB heaps, so large activations
        # would be mmap'd afresh for every batch whatever tune_allocator sets: model compute 1.3 x
        # slower, measured), and no statistical profiler (a stack sample of every thread every
        # 10 ms: 6 % of the infer stage) unless a performance report, whose profile pages it fills,
        # is asked for; the dashboard's task stream and progress pages still work.
        environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), "MALLOC_ARENA_MAX": 1}
        stack.enter_context(dask.config.set({
            "distributed.nanny.pre-spawn-environ": environ,
            "distributed.worker.profile.enabled": c.performance_report,
        }))
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=c.workers,
                threads_per_worker=c.threads_per_worker,
                processes=True,
                memory_limit=c.memory_limit if c.memory_limit != "auto" else "auto",
                resources=c.resources or None,
                dashboard_address=":0",  # any free port (the HTTP server also runs without the dashboard)
                scheduler_kwargs={"dashboard": c.dashboard},  # bokeh's dashboard: ~0.3 s of start-up
                silence_logs=logging.ERROR,
            )
        )
        client = stack.enter_context(Client(cluster))
        client.run(quiet_task_failures)  # the run reports a failed task itself, as one line
    else:
        try:
            client = stack.enter_context(Client(c.scheduler, timeout="20s"))
        except OSError as e:
            raise ConfigError(
                f"{cfg.path}: cannot reach the Dask scheduler at {c.scheduler} ({e}); start it with "
                f"`dask scheduler` and workers with `dask worker {c.scheduler}`, or use cluster.scheduler: local"
            ) from None
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise ConfigError(
                f"{cfg.path}: the scheduler at {c.scheduler} has no workers after 60 s; start some with "
                f"`dask worker {c.scheduler}`"
            ) from None
    _check_resources(cfg, client)
    return client


def _check_resources(cfg: RunConfig, client: Any) -> None:
    """Fail fast when no worker offers the resources inference tasks need (Dask would wait forever)."""
    need = cfg.cluster.resources
    if not need:
        return
    workers = client.scheduler_info()["workers"]
    if not _offering(workers, need):
        offered = {a: w.get("resources", {}) for a, w in workers.items()}
        raise ConfigError(
            f"{cfg.path}: inference tasks need worker resources {need}, but no worker offers them "
            f"(workers: {offered or 'none'}); start workers with `dask worker {cfg.cluster.scheduler} "
            f"--resources GPU=1`, or remove cluster.resources from the workflow"
        )


def _offering(workers: dict[str, Any], need: dict[str, float]) -> list[str]:
    """Addresses of the workers (``scheduler_info()["workers"]``) that offer the resources ``need``."""
    return [a for a, w in workers.items() if all(w.get("resources", {}).get(k, 0) >= v for k, v in need.items())]


def _inference_workers(cfg: RunConfig, client: Any) -> int:
    """How many workers can run inference tasks (those offering the workflow's resources)."""
    return max(1, len(_offering(client.scheduler_info()["workers"], cfg.cluster.resources)))


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
    import heapq

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


def _task_tiles(cfg: RunConfig, run_id: str, counts: list[int], workers: int) -> int:
    """:func:`task_tiles` for this run; a resumed run keeps the size its first attempt chose."""
    import json

    path = cfg.store / cfg.name / run_id / "tasks.json"
    try:
        n = int(json.loads(path.read_text())["tiles_per_task"])
        if n >= 1:
            return n
    except (OSError, ValueError, KeyError, TypeError):
        pass
    n = task_tiles(counts, workers, cfg.tiles_per_task, cfg.batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"tiles_per_task": n}))
    return n


def _read_ahead(cfg: RunConfig) -> int | None:
    """Reader threads per inference task. On a local cluster: the cores its workers leave free,
    shared among them, at most 8 each (0 when every core runs a worker thread: those already read
    in parallel).
    For an external scheduler ``None``: each worker decides from its own cores (readers on GPUs,
    none on CPUs; see :func:`geoseg.workflow.tasks.readers_for`)."""
    c = cfg.cluster
    if not c.is_local:
        return None
    free = usable_cores() - c.workers * c.threads_per_worker
    return min(MAX_READERS, max(1, free // c.workers)) if free > 0 else 0


def _new_run_id(cfg: RunConfig) -> str:
    """A new run's id: the UTC second it starts, 6 hex digits of the workflow's sha256 and 6 random
    ones, e.g. ``20261203T194500Z-3f2a9c-b71e04``; sorting ids sorts runs by start, and two runs of
    one workflow text started in the same second (in two folders, say) still get two ids."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{cfg.sha256[:6]}-{secrets.token_hex(3)}"


def _resumable(runs_root: Path) -> Path | None:
    """The newest run directory of this workflow that did not finish (never the ``latest`` link)."""
    candidates = sorted((m for m in runs_root.glob("*/manifest.json") if not m.parent.is_symlink()), reverse=True)
    for m in candidates:
        try:
            if read_manifest(m.parent).get("status") != "done":
                return m.parent
        except GeosegError:
            continue
    return None


def _remove_partials(*folders: Path) -> int:
    """Delete the temporary files (``.<name>.partial-*``, see :func:`geoseg.io.raster.atomic_path`) that an
    interrupted attempt left in ``folders`` and below; they are never outputs. Returns how many."""
    removed = 0
    for folder in folders:
        for p in folder.rglob(".*.partial-*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def run_workflow(
    cfg: RunConfig,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    say: Callable[[str], None] = lambda s: None,
) -> RunResult:
    """Run ``cfg``; with ``resume``, continue the newest unfinished run of the workflow.

    ``progress(done, total)`` is called as tile batches finish; ``say`` receives status lines
    (the dashboard address, stage names).
    """
    runs_root = cfg.runs_dir / cfg.name
    catalog = Catalog(cfg.runs_dir / "catalog.sqlite")
    with RunLock(runs_root / ".lock") as lock, ExitStack() as logs:
        catalog.check()  # a damaged catalog fails the run before it starts
        run_dir = _resumable(runs_root) if resume else None
        if resume and run_dir is None:
            say(f"nothing to resume under {runs_root}: starting a new run")
        removed = 0
        if run_dir is None:
            run_id = _new_run_id(cfg)
            run_dir = runs_root / run_id
            claim_run_store(cfg.store / cfg.name / run_id, run_dir=run_dir, resume=False)
            run_dir.mkdir(parents=True, exist_ok=False)
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            previous: dict[str, Any] = {}
        else:
            run_id = run_dir.name
            previous = read_manifest(run_dir)
            if previous.get("workflow_sha256") != cfg.sha256:
                raise ConfigError(
                    f"{cfg.path}: the workflow changed since run {run_id} started; resuming would mix two "
                    f"configurations - start a new run (without --resume)"
                )
            started = previous.get("started", "")
            claim_run_store(cfg.store / cfg.name / run_id, run_dir=run_dir, resume=True)
            removed = _remove_partials(run_dir, cfg.store / cfg.name / run_id)
        lock.hold_for(run_id)
        (run_dir / "logs").mkdir(exist_ok=True)
        logs.enter_context(_run_log(run_dir / "run.log"))
        say = _logged(say)
        log.info("run %s of %s (%s)", run_id, cfg.path, "resumed" if previous else "new")
        if removed:
            log.info("removed %d partial file(s) left by the interrupted attempt", removed)
        card = read_card(cfg.model)
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "name": cfg.name,
            "status": "running",
            "workflow": str(cfg.path),
            "workflow_sha256": cfg.sha256,
            "workflow_text": cfg.text,
            "model": {"path": str(cfg.model), "weights_sha256": card.weights_sha256, "arch": card.arch,
                      "encoder": card.encoder, "classes": card.classes.names},
            "inputs": [_input_record(p) for s in cfg.scenes for p in s.paths],
            "versions": _versions(),
            "started": started,
            "resumed": previous.get("resumed", 0) + (1 if previous else 0),
            "host": platform.node(),
        }
        write_manifest(run_dir, manifest)
        catalog.upsert(run_id=run_id, name=cfg.name, status="running", scenes=len(cfg.scenes), tiles_done=0,
                       tiles_total=0, started=started, ended=None, seconds=None, run_dir=str(run_dir),
                       workflow=str(cfg.path), error=None)
        t_start = time.perf_counter()
        try:
            try:
                result = _execute(cfg, card, run_id, run_dir, catalog, progress, say)
            except Exception as e:
                lost = _worker_lost(cfg, e)
                if lost is None:
                    raise
                raise lost from None
        except BaseException as e:
            manifest.update(status="failed", error=f"{type(e).__name__}: {e}",
                            ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            try:
                write_manifest(run_dir, manifest)
                catalog.upsert(run_id=run_id, status="failed", error=str(e)[:500], ended=manifest["ended"],
                               seconds=time.perf_counter() - t_start, run_dir=str(run_dir), name=cfg.name)
            except OSError as rec:  # a full disk, say: the run's own error is what the caller must see
                log.warning("run %s failed, and recording its failure failed too (%s)", run_id, rec)
            log.info("run %s failed: %s: %s", run_id, type(e).__name__, e)  # the CLI prints the error once
            raise
        result.outputs["run_log"] = str(run_dir / "run.log")
        log.info("run %s done: %s", run_id, ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
        ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        manifest.update(status="done", ended=ended, timings=result.timings, outputs=result.outputs,
                        tiles=result.tiles, tiles_skipped=result.tiles_skipped, stats=result.stats)
        write_manifest(run_dir, manifest)
        catalog.upsert(run_id=run_id, name=cfg.name, status="done", tiles_done=result.tiles,
                       tiles_total=result.tiles, ended=ended, seconds=sum(result.timings.values()),
                       run_dir=str(run_dir), error=None)
        _point_latest(runs_root, run_id)
        result.stale_lock = lock.stale_taken
        return result


def _worker_lost(cfg: RunConfig, e: BaseException) -> WorkerLostError | None:
    """Dask's ``KilledWorker`` as a message that says what to change, or None for other errors."""
    from distributed import KilledWorker

    if not isinstance(e, KilledWorker):
        return None
    key = str(e.task)
    what = "inference task" if key.startswith("infer-") else "task"
    c = cfg.cluster
    if c.is_local:
        budget = (f"a worker of the run's LocalCluster is restarted when it passes 95 % of its memory limit "
                  f"(cluster.memory_limit: {c.memory_limit}, for each of {c.workers} workers)")
        more = "raise cluster.memory_limit, or run fewer workers"
    else:
        budget = f"the workers of {c.scheduler} are restarted by their nannies when they pass their memory limit"
        more = "give those workers more memory (dask worker --memory-limit)"
    return WorkerLostError(
        f"{cfg.path}: the {what} {key} killed the {e.allowed_failures + 1} workers that ran it in turn, out of memory "
        f"most likely: {budget}; lower batch_size ({cfg.batch_size}) or tiles_per_task, or {more}, and run "
        f"`geoseg run {cfg.path}` again (if more memory comes without changing the workflow, add --resume to "
        f"keep the finished batches)"
    )


def _logged(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` that also logs each status line (so that it reaches run.log)."""

    def both(s: str) -> None:
        log.info(s)
        say(s)

    return both


class _Forward(logging.Handler):
    """Pass records on to the root logger's handlers (what propagation would have done)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


@contextmanager
def _performance_report(path: Path) -> Iterator[None]:
    """Dask's performance report of the block (task stream, worker profiles, bandwidth), written to
    ``path`` whole, under a temporary name first, also when the block fails (a failed run's report
    shows where it was). A report that cannot be written is a warning: it never fails a run, nor
    hides the error that did."""
    from distributed import performance_report

    tmp = path.with_name(f".{path.name}.partial")
    report = performance_report(filename=str(tmp))
    report.__enter__()
    try:
        yield
    finally:
        try:
            report.__exit__(*sys.exc_info())  # the run's error, if it failed
            os.replace(tmp, path)
        except Exception as e:  # the scheduler gone with the run, a full disk...
            log.warning("the Dask performance report could not be written to %s: %s", path, e)


@contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Copy the ``geoseg`` loggers' records (INFO and up) to ``path`` while a run lasts.

    Records below the level the session already showed (WARNING without ``-v``) go to the
    file only: the logger stops propagating and forwards, through a handler at the old
    level, exactly what it forwarded before. Everything is restored on exit.
    """
    logger = logging.getLogger("geoseg")
    old_level, old_propagate = logger.level, logger.propagate
    effective = logger.getEffectiveLevel()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    forward = _Forward(level=effective)
    logger.addHandler(handler)
    if old_propagate:
        logger.addHandler(forward)
        logger.propagate = False
    logger.setLevel(min(effective, logging.INFO))
    try:
        yield
    finally:
        logger.setLevel(old_level)
        logger.propagate = old_propagate
        logger.removeHandler(forward)
        logger.removeHandler(handler)
        handler.close()


def _point_latest(runs_root: Path, run_id: str) -> None:
    """Point ``runs/<name>/latest`` at the newest finished run (a relative symlink, swapped atomically)."""
    import uuid

    tmp = runs_root / f".latest-{uuid.uuid4().hex[:12]}"
    try:
        os.symlink(run_id, tmp, target_is_directory=True)
        os.replace(tmp, runs_root / "latest")
    except OSError as e:  # filesystems without symlinks: the catalog still lists the run
        log.warning("could not point %s at %s (%s)", runs_root / "latest", run_id, e)
        tmp.unlink(missing_ok=True)


def _execute(
    cfg: RunConfig, card: Any, run_id: str, run_dir: Path, catalog: Catalog, progress: Progress | None,
    say: Callable[[str], None],
) -> RunResult:
    from distributed import as_completed

    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}
    t = time.perf_counter()
    # --- plan: scenes (stacking per-date files), grids, batches
    scenes: list[tuple[str, Path]] = []
    for s in cfg.scenes:
        if s.is_stack:
            vrt = run_dir / "inputs" / f"{s.name}.vrt"
            stack_rasters(vrt, list(s.paths), overwrite=True)  # a resumed run writes it again
            scenes.append((s.name, vrt))
        else:
            scenes.append((s.name, s.paths[0]))
    stats: dict[str, Any] = {"scenes": {name: str(path) for name, path in scenes}}
    grids = []
    total = 0
    for name, path in scenes:
        info = raster_info(path)
        grid = tile_grid(info.shape, info.transform, size=cfg.tile, overlap=cfg.overlap, multiple=card.multiple)
        grids.append((name, path, info, grid))
        total += len(grid)
    boundaries = _check_districts(cfg)  # a wrong name field or a broken file fails now, not after inference
    timings["plan"] = time.perf_counter() - t

    with ExitStack() as stack:
        t = time.perf_counter()
        client = connect(cfg, stack)
        if cfg.cluster.performance_report:  # written when the stack closes, before the client does
            stack.enter_context(_performance_report(run_dir / "dask-report.html"))
            outputs["dask_report"] = str(run_dir / "dask-report.html")
        dashboard = client.dashboard_link if cfg.cluster.dashboard else None
        if dashboard:
            say(f"Dask dashboard: {dashboard}")
        timings["cluster"] = time.perf_counter() - t

        # --- batches of tiles per task: sized so that every worker gets a fair share (kept on resume)
        n = _task_tiles(cfg, run_id, [len(g[3]) for g in grids], _inference_workers(cfg, client))
        # tasks as compact bands of tiles, walked column by column: fewer file blocks decoded twice
        plans = [(name, path, info, grid, task_batches(grid, n, decode_block_shape(info.block_shape)))
                 for name, path, info, grid in grids]
        stats["tiles_per_task"] = n
        read_ahead = _read_ahead(cfg)

        # --- infer: one task per batch of tiles, resource-annotated
        t = time.perf_counter()
        futures = {}
        store_roots = {}
        for name, path, info, grid, batches in plans:
            root = cfg.store / cfg.name / run_id / name
            store_roots[name] = root
            for b, tiles in enumerate(batches):
                fut = client.submit(
                    infer_batch, str(path), str(cfg.model), str(root), b, tiles,
                    batch_size=cfg.batch_size, device=cfg.device, threads=cfg.cluster.threads_per_worker,
                    read_ahead=read_ahead,
                    resources=cfg.cluster.resources or None, key=f"infer-{name}-{b:05d}-{run_id}", pure=False,
                )
                futures[fut] = (name, b)
        done = skipped = 0
        infer_parts = {"read": 0.0, "model": 0.0, "setup": 0.0, "write": 0.0}  # worker seconds, summed
        loads: dict[str, int] = {}
        workers: dict[str, int] = {}
        precision: dict[str, str] = {}
        for fut in as_completed(list(futures)):
            rec = fut.result()
            done += rec["tiles"]
            skipped += rec["tiles"] if rec["skipped"] else 0
            for part, key in (("read", "read"), ("model", "compute"), ("setup", "setup"), ("write", "write")):
                infer_parts[part] += rec.get(f"{key}_seconds", 0.0)
            loads[str(rec.get("worker"))] = rec["loads"]
            workers[str(rec.get("worker"))] = workers.get(str(rec.get("worker")), 0) + 1
            if "precision" in rec:
                precision[str(rec.get("worker"))] = f"{rec['device']} {rec['precision']}"
            if progress:
                progress(done, total)
        catalog.upsert(run_id=run_id, tiles_done=done, tiles_total=total, run_dir=str(run_dir), name=cfg.name,
                       status="running")
        timings["infer"] = time.perf_counter() - t

        # --- assemble each scene from the store, then mosaic
        t = time.perf_counter()
        single = len(plans) == 1 and (cfg.crs is None or plans[0][2].crs == _crs(cfg.crs))
        scene_outputs = []
        assemble_futures = []
        for name, path, info, grid, batches in plans:
            if single:
                m, c = run_dir / "mask.tif", (run_dir / "confidence.tif" if cfg.outputs.confidence else None)
            else:
                m, c = run_dir / "scenes" / name / "mask.tif", run_dir / "scenes" / name / "confidence.tif"
            scene_outputs.append((m, c))
            # mask and confidence as two tasks: two workers compress at once
            pairs = [("mask", str(m), None)] + ([("confidence", None, str(c))] if c is not None else [])
            for kind, out_m, out_c in pairs:
                assemble_futures.append(client.submit(
                    assemble_scene, str(store_roots[name]), grid, info.crs.to_wkt(), card.classes.to_dict(),
                    out_m, out_c, key=f"assemble-{kind}-{name}-{run_id}", pure=False, scene=str(path),
                ))
        try:
            client.gather(assemble_futures)
        except Exception:
            # the other COG of a pair may have been finished by its own task: a failed run leaves neither
            from distributed import wait

            wait(assemble_futures)
            for m, c in scene_outputs:
                for out_path in (m, c):
                    if out_path is not None:
                        Path(out_path).unlink(missing_ok=True)
            raise
        if not single:

            mosaic_masks([m for m, _ in scene_outputs], run_dir / "mask.tif",
                         confidences=[c for _, c in scene_outputs],
                         out_confidence=run_dir / "confidence.tif" if cfg.outputs.confidence else None,
                         classes=card.classes, crs=cfg.crs)
        outputs["mask"] = str(run_dir / "mask.tif")
        if cfg.outputs.confidence:
            outputs["confidence"] = str(run_dir / "confidence.tif")
        timings["mosaic"] = time.perf_counter() - t

        # workers give back the memory they kept for inference before polygonising
        client.run(release_memory)
        # --- fields and district areas (the boundary file is read, checked and reprojected once)
        stats.update(model_loads_per_worker=loads, infer_tasks_per_worker=workers, inference_precision=precision)
        districts = _districts(cfg, run_dir / "mask.tif", stats, boundaries)
        if cfg.outputs.fields:
            t = time.perf_counter()
            say("polygonising fields")
            outputs.update(_fields(cfg, card, run_id, run_dir, client, districts))
            timings["polygonise"] = time.perf_counter() - t
        if cfg.outputs.district_areas and districts is not None:
            t = time.perf_counter()
            say("summing district areas")
            outputs.update(_district_areas(cfg, card, run_dir, districts, stats))
            timings["district_areas"] = time.perf_counter() - t
    stats["infer_compute_seconds"] = infer_parts["model"]
    stats["infer_worker_seconds"] = infer_parts  # which part of inference bounds the run (skipped tasks add 0)
    if cfg.outputs.report:
        t = time.perf_counter()
        say("writing the report")
        outputs.update(_report(run_dir, outputs, timings, total, skipped, stats, say))
        timings["report"] = time.perf_counter() - t
    return RunResult(run_id, run_dir, "done", outputs, timings, total, skipped, dashboard, stats=stats)


def _report(run_dir: Path, outputs: dict[str, str], timings: dict[str, float], tiles: int, skipped: int,
            stats: dict[str, Any], say: Callable[[str], None]) -> dict[str, str]:
    """Quicklooks, district chart and report.html; a failure here is reported, not fatal to the run."""

    manifest = {**read_manifest(run_dir), "status": "done", "outputs": dict(outputs), "timings": dict(timings),
                "tiles": tiles, "tiles_skipped": skipped, "stats": stats}
    try:
        return write_run_report(run_dir, manifest=manifest, say=say)
    except Exception as e:  # noqa: BLE001 - the mask, fields and areas are done; the run stays usable
        stats["report_error"] = f"{type(e).__name__}: {e}"
        log.warning("%s: the report could not be written (%s: %s); the run's outputs are complete - rebuild "
                    "it with `geoseg report %s`", run_dir, type(e).__name__, e, run_dir)
        return {}


def _crs(value: str) -> Any:
    from rasterio.crs import CRS

    return CRS.from_user_input(value)


def _check_districts(cfg: RunConfig) -> Any:
    """The workflow's boundary file read and checked (name field, CRS, usable polygons), or None."""
    if cfg.districts is None:
        return None

    return read_districts(cfg.districts, cfg.name_field, warn=False)


def _districts(cfg: RunConfig, mask: Path, stats: dict[str, Any], checked: Any) -> Any:
    """The checked districts (:func:`_check_districts`) in the mask's CRS, or None; skipped or
    repaired ones go to the stats."""
    if checked is None:
        return None

    d = read_districts(checked.gdf, cfg.name_field, crs=raster_info(mask).crs, warn=False)
    problems = [str(p) for p in checked.problems]
    problems += [q for q in (str(p) for p in d.problems) if q not in problems]
    stats["district_problems"] = problems
    return d.gdf


def _fields(cfg: RunConfig, card: Any, run_id: str, run_dir: Path, client: Any, districts: Any) -> dict[str, str]:

    gdf = polygonize_raster(
        run_dir / "mask.tif",
        confidence=run_dir / "confidence.tif" if cfg.outputs.confidence else None,
        classes=card.classes,
        min_area_ha=cfg.outputs.min_area_ha,
        exclude=cfg.outputs.exclude_classes,
        client=client,
        districts=districts,
        name_field=cfg.name_field,
        run_id=run_id,
        model_id=(card.weights_sha256 or "")[:16] or None,
    )
    out = {}
    for fmt in cfg.outputs.fields:
        path = run_dir / f"fields.{fmt}"
        write_vector(gdf, path, classes=card.classes)
        out[f"fields_{fmt}"] = str(path)
    if "parquet" not in cfg.outputs.fields:  # the query engine reads the Parquet copy
        write_vector(gdf, run_dir / "fields.parquet", classes=card.classes)
        out["fields_parquet"] = str(run_dir / "fields.parquet")
    return out


def _district_areas(cfg: RunConfig, card: Any, run_dir: Path, districts: Any, stats: dict[str, Any]) -> dict[str, str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DistrictWarning)  # repeated names: reported through df.attrs["problems"]
        df = district_areas_raster(run_dir / "mask.tif", districts, cfg.name_field, classes=card.classes)
    problems = stats.setdefault("district_problems", [])
    problems.extend(p for p in df.attrs.get("problems", []) if p not in problems)
    out = {}
    for ext in ("csv", "parquet"):
        path = run_dir / f"district_areas.{ext}"
        write_table(df, path)
        out[f"district_areas_{ext}"] = str(path)
    return out

