"""Execute a workflow on Dask: infer tiles -> assemble scenes -> mosaic -> fields -> district areas.

The graph: per scene, one ``infer_batch`` task per batch of tiles (annotated with the
workflow's worker resources, e.g. ``GPU: 1``), then two ``assemble_scene`` tasks (mask and
confidence COGs) once all of that scene's batches are stored; then the mosaic over all
scenes, block-wise polygonisation and district aggregation. It runs on an embedded
LocalCluster or on any scheduler address (:mod:`geoseg.workflow.cluster`).

This module keeps the run's records - the lock, the manifest, the catalog, ``run.log`` and
the ``latest`` link (:mod:`geoseg.rundir`) - and calls the stages of
:mod:`geoseg.workflow.stages` in order, timing each; the stages wire library functions, and
the maths lives in the pure modules.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import rasterio

from geoseg.errors import ConfigError, GeosegError
from geoseg.io.objects import is_object_url, join, object_prefix
from geoseg.io.raster import atomic_output
from geoseg.ml.model import ModelCard, read_card
from geoseg.parallel import release_memory
from geoseg.rundir import (
    CATALOG,
    LATEST,
    LOCK,
    MANIFEST,
    Catalog,
    RunLock,
    RunPaths,
    RunResult,
    read_manifest,
    write_manifest,
)
from geoseg.rundir_store import ObjectCatalog, ObjectRunLock, point_latest, publish_run, unfinished_runs
from geoseg.workflow import stages
from geoseg.workflow.cluster import connect, inference_workers, performance_report, read_ahead, worker_lost
from geoseg.workflow.config import RunConfig
from geoseg.workflow.exchange import Exchange
from geoseg.workflow.store import claim_run_store, run_store

__all__ = ["connect", "run_workflow"]

log = logging.getLogger("geoseg.run")

Progress = Callable[[int, int], None]


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
    remote = _Remote(cfg) if cfg.runs_url else None
    catalog: Catalog | ObjectCatalog = remote.catalog if remote else Catalog(cfg.runs_dir / CATALOG)
    lock = remote.lock() if remote else RunLock(runs_root / LOCK)
    with lock, ExitStack() as logs:
        catalog.check()  # a damaged catalog fails the run before it starts
        attempt = _open_attempt(cfg, runs_root, resume, say, remote)
        run_id, paths = attempt.run_id, attempt.paths
        lock.hold_for(run_id)
        paths.logs.mkdir(exist_ok=True)
        logs.enter_context(_run_log(paths.run_log))
        say = _logged(say)
        log.info("run %s of %s (%s)", run_id, cfg.path, "resumed" if attempt.previous else "new")
        if attempt.removed:
            log.info("removed %d partial file(s) left by the interrupted attempt", attempt.removed)
        card = read_card(cfg.model)
        manifest = _first_manifest(cfg, card, attempt)
        write_manifest(paths.root, manifest)
        run_url = remote.run_url(run_id) if remote else None
        if run_url:  # a resume on another machine finds the run by its manifest
            remote.put_manifest(paths, run_url)
        catalog.upsert(run_id=run_id, name=cfg.name, status="running", scenes=len(cfg.scenes), tiles_done=0,
                       tiles_total=0, started=attempt.started, ended=None, seconds=None,
                       run_dir=run_url or str(paths.root), workflow=str(cfg.path), error=None)
        ex = Exchange(paths.root, run_url)
        t_start = time.perf_counter()
        try:
            try:
                result = _execute(cfg, card, run_id, paths.root, catalog, progress, say, ex)
            except Exception as e:
                lost = worker_lost(cfg, e)
                if lost is None:
                    raise
                raise lost from None
        except BaseException as e:
            _record_failure(cfg, catalog, paths, manifest, e, time.perf_counter() - t_start, remote)
            raise
        if remote:
            def publish() -> None:
                logs.close()  # run.log complete before it is put
                remote.publish(paths, run_id)

            _record_done(cfg, catalog, paths, manifest, result, publish, run_url)
            result = remote.finish(result, ex)
        else:
            _record_done(cfg, catalog, paths, manifest, result)
            _point_latest(runs_root, run_id)
        result.stale_lock = lock.stale_taken
        return result


# ------------------------------------------------------------------ the stages, timed


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[stage]`` (when it ends without an error)."""
    t = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - t


def _execute(
    cfg: RunConfig, card: ModelCard, run_id: str, run_dir: Path, catalog: Catalog | ObjectCatalog,
    progress: Progress | None, say: Callable[[str], None], ex: Exchange,
) -> RunResult:
    """The stages of :mod:`geoseg.workflow.stages` in order, each timed; the cluster lives from the
    first inference task to the last district area, and the report is written after it closes."""
    paths = RunPaths(run_dir)
    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}
    seasons = any(s.season is not None for s in cfg.scenes)
    with _timed(timings, "plan"):
        scenes = [] if seasons else stages.plan_scenes(cfg, card, paths, ex)  # seasons: once composited, below
        boundaries = stages.check_districts(cfg)  # a wrong name field or a broken file fails now, not after inference

    with ExitStack() as stack:
        with _timed(timings, "cluster"):
            client = connect(cfg, stack)
            if cfg.cluster.performance_report:  # written when the stack closes, before the client does
                stack.enter_context(performance_report(paths.dask_report))
                outputs["dask_report"] = str(paths.dask_report)
            dashboard = client.dashboard_link if cfg.cluster.dashboard else None
            if dashboard:
                say(f"Dask dashboard: {dashboard}")
        if seasons:
            with _timed(timings, "composite"):
                outputs.update(stages.composite_seasons(cfg, paths, client, say))
                scenes = stages.plan_scenes(cfg, card, paths, ex)
        stats: dict[str, Any] = {"scenes": {s.name: str(s.path) for s in scenes}}
        total = sum(len(s.grid) for s in scenes)
        n, scenes = stages.batch_tasks(cfg, run_id, scenes, inference_workers(cfg, client))
        stats["tiles_per_task"] = n
        readers = read_ahead(cfg)
        with _timed(timings, "infer"):
            tally = stages.infer(cfg, run_id, scenes, client, readers, progress)
            catalog.upsert(run_id=run_id, tiles_done=tally.done, tiles_total=total, run_dir=str(run_dir),
                           name=cfg.name, status="running")
        with _timed(timings, "mosaic"):
            outputs.update(stages.assemble(cfg, card, run_id, paths, scenes, client, ex))
        client.run(release_memory)  # workers give back the memory they kept for inference before polygonising
        stats.update(model_loads_per_worker=tally.loads, infer_tasks_per_worker=tally.tasks,
                     inference_precision=tally.precision)
        districts = stages.districts_on_mask(cfg, paths.mask, boundaries, stats)  # read once for both stages
        if cfg.outputs.fields:
            with _timed(timings, "polygonise"):
                say("polygonising fields")
                fields = stages.polygonize_fields(cfg, card, run_id, paths, client, districts, ex)
            if cfg.outputs.features:
                with _timed(timings, "features"):
                    say(f"growth features ({', '.join(cfg.outputs.features)}) per field")
                    outputs.update(stages.field_features(cfg, paths, scenes, fields, client, stats, ex))
            with _timed(timings, "write_fields"):
                outputs.update(stages.write_fields(cfg, card, paths, fields))
        if cfg.outputs.district_areas and districts is not None:
            with _timed(timings, "district_areas"):
                say("summing district areas")
                outputs.update(stages.sum_district_areas(cfg, card, paths, districts, stats))
            if cfg.outputs.features:
                with _timed(timings, "district_profiles"):
                    say("growth profiles per district and crop")
                    outputs.update(stages.district_profiles(cfg, card, paths, scenes, districts, client, ex))
    stats["infer_compute_seconds"] = tally.seconds["model"]
    stats["infer_worker_seconds"] = tally.seconds  # which part of inference bounds the run (skipped tasks add 0)
    if cfg.outputs.report:
        with _timed(timings, "report"):
            say("writing the report")
            outputs.update(stages.write_report(paths, outputs, timings, total, tally.skipped, stats, say))
    return RunResult(run_id, run_dir, "done", outputs, timings, total, tally.skipped, dashboard, stats=stats)


# ------------------------------------------------------------------ a new run, or the one resumed


@dataclass(frozen=True)
class _Attempt:
    """The run an attempt works on: a new one, or an unfinished one it resumes."""

    run_id: str
    paths: RunPaths
    started: str
    previous: dict[str, Any]  # the manifest of the run resumed; {} for a new run
    removed: int = 0  # partial files an interrupted attempt left, removed


def _open_attempt(cfg: RunConfig, runs_root: Path, resume: bool, say: Callable[[str], None],
                  remote: _Remote | None) -> _Attempt:
    """A new run, or with ``resume`` the newest unfinished one (a new run when there is none)."""
    find = remote.resumable if remote is not None else _resumable
    run_dir = find(runs_root) if resume else None
    if resume and run_dir is None:
        say(f"nothing to resume under {remote.workflow_url if remote else runs_root}: starting a new run")
    if run_dir is None:
        return _new_run(cfg, runs_root, remote)
    return _resumed_run(cfg, run_dir, remote)


def _new_run(cfg: RunConfig, runs_root: Path, remote: _Remote | None) -> _Attempt:
    """A new run id, its tile-store folder claimed and its run folder created."""
    run_id = _new_run_id(cfg)
    run_dir = runs_root / run_id
    claim_run_store(run_store(cfg.store, cfg.name, run_id), run_dir=remote.run_url(run_id) if remote else run_dir,
                    resume=False)
    run_dir.mkdir(parents=True, exist_ok=False)
    return _Attempt(run_id, RunPaths(run_dir), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), {})


def _resumed_run(cfg: RunConfig, run_dir: Path, remote: _Remote | None) -> _Attempt:
    """The unfinished run in ``run_dir``, if the workflow is unchanged, without its partial files."""
    run_id = run_dir.name
    previous = read_manifest(run_dir)
    if previous.get("workflow_sha256") != cfg.sha256:
        raise ConfigError(
            f"{cfg.path}: the workflow changed since run {run_id} started; resuming would mix two "
            f"configurations - start a new run (without --resume)"
        )
    store = run_store(cfg.store, cfg.name, run_id)
    claim_run_store(store, run_dir=remote.run_url(run_id) if remote else run_dir, resume=True)
    # an object store has no partial objects: a put is whole or absent
    removed = _remove_partials(run_dir, *([] if is_object_url(store) else [store]))
    return _Attempt(run_id, RunPaths(run_dir), previous.get("started", ""), previous, removed)


def _new_run_id(cfg: RunConfig) -> str:
    """A new run's id: the UTC second it starts, 6 hex digits of the workflow's sha256 and 6 random
    ones, e.g. ``20261203T194500Z-3f2a9c-b71e04``; sorting ids sorts runs by start, and two runs of
    one workflow text started in the same second (in two folders, say) still get two ids."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{cfg.sha256[:6]}-{secrets.token_hex(3)}"


def _resumable(runs_root: Path) -> Path | None:
    """The newest run directory of this workflow that did not finish (never the ``latest`` link)."""
    candidates = sorted((m for m in runs_root.glob(f"*/{MANIFEST}") if not m.parent.is_symlink()), reverse=True)
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
        for p in sorted(folder.rglob(".*.partial-*"), key=lambda q: len(q.parts)):
            if p.is_dir() and not p.is_symlink():  # a dataset's staging folder
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
            elif p.exists() or p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


# ------------------------------------------------------------------ a runs folder on object storage


class _Remote:
    """A runs folder on object storage (``cfg.runs_url``): its lock, catalog and run folders; the
    run is worked in ``cfg.runs_dir`` (this machine's copy) and published (:mod:`geoseg.rundir_store`)."""

    def __init__(self, cfg: RunConfig) -> None:
        assert cfg.runs_url is not None
        self.runs_url = cfg.runs_url
        self.workflow_url = join(cfg.runs_url, cfg.name)
        self.catalog = ObjectCatalog(cfg.runs_url)

    def lock(self) -> ObjectRunLock:
        return ObjectRunLock(join(self.workflow_url, LOCK))

    def run_url(self, run_id: str) -> str:
        return join(self.workflow_url, run_id)

    def resumable(self, runs_root: Path) -> Path | None:
        """The newest unfinished run of the workflow on the store, its manifest copied into this
        machine's folder for it (a resume may run on another machine than the attempt it continues)."""
        for run_id in unfinished_runs(self.workflow_url):
            run_dir = runs_root / run_id
            if object_prefix(self.run_url(run_id)).get_file(MANIFEST, run_dir / MANIFEST):
                return run_dir
        return None

    def put_manifest(self, paths: RunPaths, run_url: str) -> None:
        prefix = object_prefix(run_url)
        if paths.run_log.is_file():
            prefix.put(paths.run_log.name, paths.run_log)
        prefix.put(MANIFEST, paths.manifest)

    def publish(self, paths: RunPaths, run_id: str) -> None:
        """Every file of the run folder put on the store, the manifest last (its worker logs too)."""
        publish_run(paths.root, self.run_url(run_id))

    def finish(self, result: RunResult, ex: Exchange) -> RunResult:
        """After the catalog records the run: ``latest`` points at it, the exchange folder and this
        machine's copy of the run go, and the result names the run's objects."""
        point_latest(self.workflow_url, result.run_id)
        ex.clear()
        url = self.run_url(result.run_id)
        root = result.run_dir
        outputs = {k: (join(url, Path(v).relative_to(root).as_posix()) if Path(v).is_relative_to(root) else v)
                   for k, v in result.outputs.items()}
        shutil.rmtree(root, ignore_errors=True)
        return replace(result, outputs=outputs, run_url=url)


# ------------------------------------------------------------------ the run's records


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("geoseg", "numpy", "rasterio", "torch", "segmentation-models-pytorch", "dask", "distributed",
                "shapely", "geopandas", "pyogrio", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out["gdal"] = rasterio.__gdal_version__
    return out


def _input_record(path: Path | str) -> dict[str, Any]:
    if isinstance(path, str):  # a remote file (/vsis3/..., /vsicurl/...), read where it is
        return {"path": path, "bytes": None, "mtime": None}
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "mtime": st.st_mtime}


def _first_manifest(cfg: RunConfig, card: ModelCard, attempt: _Attempt) -> dict[str, Any]:
    """The manifest of a run as it starts (status ``running``): workflow, model, inputs, versions."""
    return {
        "run_id": attempt.run_id,
        "name": cfg.name,
        "status": "running",
        "workflow": str(cfg.path),
        "workflow_sha256": cfg.sha256,
        "workflow_text": cfg.text,
        "model": {"path": cfg.model_source, "weights_sha256": card.weights_sha256, "arch": card.arch,
                  "encoder": card.encoder, "classes": card.classes.names},
        "inputs": [_input_record(p) for s in cfg.scenes for p in s.paths],
        "versions": _versions(),
        "started": attempt.started,
        "resumed": attempt.previous.get("resumed", 0) + (1 if attempt.previous else 0),
        "host": platform.node(),
    }


def _record_failure(cfg: RunConfig, catalog: Catalog | ObjectCatalog, paths: RunPaths, manifest: dict[str, Any],
                    e: BaseException, seconds: float, remote: _Remote | None) -> None:
    """Record a failed run in its manifest and the catalog; a failure to record it is only logged,
    so that the caller sees the run's own error."""
    run_id = manifest["run_id"]
    manifest.update(status="failed", error=f"{type(e).__name__}: {e}",
                    ended=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        write_manifest(paths.root, manifest)
        if remote:
            remote.put_manifest(paths, remote.run_url(run_id))
        catalog.upsert(run_id=run_id, status="failed", error=str(e)[:500], ended=manifest["ended"],
                       seconds=seconds, run_dir=remote.run_url(run_id) if remote else str(paths.root), name=cfg.name)
    except (OSError, GeosegError) as rec:  # a full disk, say: the run's own error is what the caller must see
        log.warning("run %s failed, and recording its failure failed too (%s)", run_id, rec)
    log.info("run %s failed: %s: %s", run_id, type(e).__name__, e)  # the CLI prints the error once


def _record_done(cfg: RunConfig, catalog: Catalog | ObjectCatalog, paths: RunPaths, manifest: dict[str, Any],
                 result: RunResult, publish: Callable[[], None] | None = None, where: str | None = None) -> None:
    """Record a finished run (with its log among its outputs) in its manifest and the catalog;
    ``publish`` (a run folder on object storage: put it there, manifest last) runs between the two."""
    result.outputs["run_log"] = str(paths.run_log)
    log.info("run %s done: %s", result.run_id, ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.update(status="done", ended=ended, timings=result.timings, outputs=result.outputs,
                    tiles=result.tiles, tiles_skipped=result.tiles_skipped, stats=result.stats)
    write_manifest(paths.root, manifest)
    if publish is not None:
        publish()
    catalog.upsert(run_id=result.run_id, name=cfg.name, status="done", tiles_done=result.tiles,
                   tiles_total=result.tiles, ended=ended, seconds=sum(result.timings.values()),
                   run_dir=where or str(paths.root), error=None)


def _point_latest(runs_root: Path, run_id: str) -> None:
    """Point ``runs/<name>/latest`` at the newest finished run (a relative symlink, swapped atomically)."""
    try:
        with atomic_output(runs_root / LATEST) as tmp:
            os.symlink(run_id, tmp, target_is_directory=True)
    except OSError as e:  # filesystems without symlinks: the catalog still lists the run
        log.warning("could not point %s at %s (%s)", runs_root / LATEST, run_id, e)


# ------------------------------------------------------------------ run.log


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
