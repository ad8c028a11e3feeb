"""Where a run computes: an embedded Dask LocalCluster or a scheduler's workers.

:func:`connect` starts (or reaches) the cluster and checks that some worker offers the
resources inference tasks need; :func:`read_ahead` and :func:`inference_workers` size the
work to it; :func:`worker_lost` turns Dask's ``KilledWorker`` into a message that says what
to change; :func:`performance_report` records Dask's own report of a run.

``distributed`` (and ``dask``) are imported inside the functions that use them: they are slow
to import, and ``geoseg --help``, ``geoseg runs`` and reading a workflow file do not need them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, WorkerLostError
from geoseg.workflow.config import RunConfig
from geoseg.workflow.tasks import MAX_READERS, usable_cores

__all__ = ["connect", "inference_workers", "performance_report", "quiet_task_failures", "read_ahead", "worker_lost"]

log = logging.getLogger("geoseg.run")

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
    """A distributed Client: an embedded LocalCluster, or the workflow's scheduler address.

    The cluster and the client close with ``stack``.

    Raises
    ------
    ConfigError
        The scheduler cannot be reached, has no workers, or no worker offers the resources
        inference tasks need.
    """
    client = _local_client(cfg, stack) if cfg.cluster.is_local else _scheduler_client(cfg, stack)
    _check_resources(cfg, client)
    return client


def _local_client(cfg: RunConfig, stack: ExitStack) -> Any:
    """A client of a LocalCluster of the workflow's size, started for this run."""
    import dask
    from distributed import Client, LocalCluster

    c = cfg.cluster
    # Workers of an embedded cluster: one malloc arena (tasks run on a worker thread, and glibc
    # gives threads other than the main one arenas of at most 64 MiB heaps, so large activations
    # would be mmap'd afresh for every batch whatever tune_allocator sets, and the model would run
    # slower; benchmarks/README.md has the figures), and no statistical profiler (a stack sample of
    # every thread every 10 ms, a measurable share of the infer stage) unless a performance report,
    # whose profile pages it fills, is asked for; the dashboard's task stream and progress pages
    # still work.
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
            scheduler_kwargs={"dashboard": c.dashboard},  # bokeh's dashboard costs start-up time: only when asked
            silence_logs=logging.ERROR,
        )
    )
    client = stack.enter_context(Client(cluster))
    client.run(quiet_task_failures)  # the run reports a failed task itself, as one line
    return client


def _scheduler_client(cfg: RunConfig, stack: ExitStack) -> Any:
    """A client of the workflow's scheduler, once it has a worker."""
    from distributed import Client

    c = cfg.cluster
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


def inference_workers(cfg: RunConfig, client: Any) -> int:
    """How many workers can run inference tasks (those offering the workflow's resources)."""
    return max(1, len(_offering(client.scheduler_info()["workers"], cfg.cluster.resources)))


def read_ahead(cfg: RunConfig) -> int | None:
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


def worker_lost(cfg: RunConfig, e: BaseException) -> WorkerLostError | None:
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


@contextmanager
def performance_report(path: Path) -> Iterator[None]:
    """Dask's performance report of the block (task stream, worker profiles, bandwidth), written to
    ``path`` whole, under a temporary name first, also when the block fails (a failed run's report
    shows where it was). A report that cannot be written is a warning: it never fails a run, nor
    hides the error that did.

    Unlike :func:`geoseg.io.raster.atomic_output`, the file is published when the block fails
    too, and its temporary name must be known before the block starts (Dask writes the report
    as the block ends), so the rename is spelled out here.
    """
    from distributed import performance_report as dask_performance_report

    tmp = path.with_name(f".{path.name}.partial")
    report = dask_performance_report(filename=str(tmp))
    report.__enter__()
    try:
        yield
    finally:
        try:
            report.__exit__(*sys.exc_info())  # the run's error, if it failed
            os.replace(tmp, path)
        except Exception as e:  # the scheduler gone with the run, a full disk...
            log.warning("the Dask performance report could not be written to %s: %s", path, e)
