"""Block-wise jobs: one :class:`Runner` for every step that works block by block, and process tuning.

A step of geoseg that works block by block (polygonising, district areas, the mosaic)
makes a list of small, picklable jobs and hands them with a function to a
:class:`Runner`, which runs them on threads of this process (``workers`` of them), or as
the tasks of a Dask client when one is given (a workflow run's cluster). Results come back
in the order of the jobs whichever finishes first, so a step that combines them in that
order gets the same output wherever and however widely its blocks ran. A job function
opens its own files (a dataset is not shared between threads) and is wrapped in
:func:`geoseg.errors.portable_errors` when it may run on a Dask worker.

The process tuning serves the same jobs. Block jobs allocate and free arrays of the same
large sizes over and over; under glibc's default thresholds (and Dask starts its workers
with ``MALLOC_TRIM_THRESHOLD_=65536``) every freed array goes back to the kernel and the
next one faults in fresh pages, which made polygonising on a worker that had run no
inference about twice as slow. :func:`tune_allocator` keeps large freed blocks for reuse;
:func:`release_memory` hands them back between the stages of a run; :func:`quick_exit`
spares processes that loaded the model libraries a long final garbage collection.

Nothing here imports Dask unless a client is given: it is slow to import, and a local
``geoseg polygonize`` or ``geoseg areas`` needs none of it.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

__all__ = [
    "Runner",
    "tune_allocator",
    "release_memory",
    "quick_exit",
]

_J = TypeVar("_J")
_R = TypeVar("_R")
_T = TypeVar("_T")


class Runner:
    """Run the jobs of a block-wise step on local threads, or as the tasks of a Dask client.

    Parameters
    ----------
    workers : int, optional
        Threads of this process (default, or 0: one per core). With a ``client`` the jobs
        run on its cluster, and ``workers`` sizes only what the caller itself does in
        parallel afterwards (merging the seams of polygonised blocks, say).
    client : distributed.Client, optional
        Run each job as a task of this client: a workflow run passes its cluster's.

    Raises
    ------
    ValueError
        ``workers`` is negative or not an int.

    Examples
    --------
    >>> runner = Runner(workers=2)
    >>> runner.workers, runner.client is None
    (2, True)
    >>> runner.map(abs, [-3, 1, -2])
    [3, 1, 2]
    >>> list(Runner(workers=1).imap(str, range(3)))
    ['0', '1', '2']
    """

    def __init__(self, workers: int | None = None, client: Any = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"workers is {workers!r}; expected a number of threads of at least 1 (or None: one "
                             f"per core)")
        self.workers: int = workers or os.cpu_count() or 1
        self.client = client

    def __repr__(self) -> str:
        where = f"client={self.client!r}" if self.client is not None else f"workers={self.workers}"
        return f"Runner({where})"

    def map(self, fn: Callable[[_J], _R], jobs: Iterable[_J],
            progress: Callable[[int, int], None] | None = None) -> list[_R]:
        """``[fn(job) for job in jobs]``, the jobs run in parallel.

        ``progress(done, total)`` is called in this thread as jobs finish. The first job
        to fail raises its error here, and the jobs not yet started are cancelled. With a
        client, tasks are named after ``fn`` and a token of the job (``pure=True``), so a
        job should tokenise deterministically (``__dask_tokenize__``).
        """
        jobs = list(jobs)
        total = len(jobs)
        if self.client is not None:
            return self._map_client(fn, jobs, progress)
        if self.workers == 1 or total <= 1:  # no thread to start for one job, or one thread
            out = []
            for i, job in enumerate(jobs, start=1):
                out.append(fn(job))
                if progress is not None:
                    progress(i, total)
            return out
        with ThreadPoolExecutor(min(self.workers, total)) as pool:
            futures = [pool.submit(fn, job) for job in jobs]
            try:
                for i, f in enumerate(as_completed(futures), start=1):
                    f.result()  # the first failure raises at once
                    if progress is not None:
                        progress(i, total)
            finally:
                for f in futures:
                    f.cancel()
            return [f.result() for f in futures]

    def map_reduce(self, fn: Callable[[_J], _R], jobs: Iterable[_J], reduce: Callable[[list[_R]], _T],
                   progress: Callable[[int, int], None] | None = None) -> _T:
        """``reduce([fn(job) for job in jobs])``. With a client the reduction is one more task on
        the cluster, whose inputs travel from worker to worker: the results of ``fn`` never come
        to this process, only what ``reduce`` returns."""
        jobs = list(jobs)
        if self.client is None:
            return reduce(self.map(fn, jobs, progress))
        return self.client.submit(reduce, self._submit(fn, jobs, progress), pure=False).result()

    def _map_client(self, fn: Callable[[_J], _R], jobs: list[_J],
                    progress: Callable[[int, int], None] | None) -> list[_R]:
        return list(self.client.gather(self._submit(fn, jobs, progress)))

    def _submit(self, fn: Callable[[_J], _R], jobs: list[_J], progress: Callable[[int, int], None] | None) -> list[Any]:
        """The client's futures of ``fn(job)`` (with ``progress``, returned once they have all finished)."""
        futures = self.client.map(fn, jobs, pure=True)
        if progress is not None:
            from distributed import as_completed as completed  # deferred: distributed is slow to import

            for i, _ in enumerate(completed(futures), start=1):
                progress(i, len(futures))
        return futures

    def imap(self, fn: Callable[[_J], _R], jobs: Iterable[_J], ahead: int | None = None) -> Iterator[_R]:
        """``fn(job)`` for each job in order, as a generator that keeps at most ``ahead`` jobs
        (default: ``workers``) started and not yet consumed, so memory holds that many
        results at most. Closing the generator early cancels the jobs not yet started.
        """
        ahead = max(1, ahead if ahead is not None else self.workers)
        if self.client is None and self.workers == 1:
            yield from map(fn, jobs)
            return
        pending: deque[Any] = deque()
        pool = ThreadPoolExecutor(min(self.workers, ahead)) if self.client is None else None
        submit = pool.submit if pool is not None else functools.partial(self.client.submit, pure=True)
        it = iter(jobs)
        try:
            for job in it:
                pending.append(submit(fn, job))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True)


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """The C library through ctypes when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


@functools.lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Keep large freed blocks for reuse in this process (glibc ``mallopt``; see the module notes).

    Returns True when the thresholds were set; False where the C library is not glibc or
    ``GEOSEG_MALLOC=default`` asks to leave it alone.
    """
    libc = _glibc()
    if libc is None or os.environ.get("GEOSEG_MALLOC", "").strip().lower() == "default":
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold, 512 << 20))


def release_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim``); False where unavailable.

    Workflow runs call it on every worker once inference is over, so that the memory kept
    for reuse by :func:`tune_allocator` does not stay resident through the later stages.
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


_QUICK_EXIT: list[bool] = []


def quick_exit() -> bool:
    """Let this process exit without a final garbage collection over everything it imported.

    With torch and segmentation-models loaded, Python spends a noticeable time at exit
    collecting their objects (a fraction of it with them frozen; the figures are in
    benchmarks/README.md); a Dask worker's close - so the end of every run on a LocalCluster -
    and the CLI's return waited for it. This registers
    :func:`gc.freeze` to run at exit (once per process): objects are still released by
    reference counting as the modules are torn down, and only cyclic garbage, which holds no
    unwritten output (every file geoseg writes is closed before its task or command
    returns), is left to the operating system. Returns True when registered by this call.
    """
    import atexit
    import gc

    if _QUICK_EXIT:
        return False
    _QUICK_EXIT.append(True)
    atexit.register(gc.freeze)
    return True
