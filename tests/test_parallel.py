"""The Runner: ordered results on threads or a Dask client, progress, failures, bounded look-ahead."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from geoseg.parallel import Runner


def _slow_square(x: int) -> int:
    time.sleep(0.002 * (5 - x % 5))  # later jobs finish first
    return x * x


def test_map_keeps_the_order_of_the_jobs_whoever_finishes_first():
    jobs = list(range(20))
    assert Runner(workers=4).map(_slow_square, jobs) == [x * x for x in jobs]
    assert Runner(workers=1).map(_slow_square, jobs) == [x * x for x in jobs]
    assert Runner(workers=3).map(_slow_square, []) == []


def test_progress_counts_every_job_in_the_callers_thread():
    calls: list[tuple[int, int, bool]] = []
    main = threading.get_ident()
    Runner(workers=3).map(_slow_square, range(7), progress=lambda d, t: calls.append((d, t, threading.get_ident() == main)))
    assert calls == [(i, 7, True) for i in range(1, 8)]


def test_the_first_failure_is_raised_and_the_jobs_not_started_are_cancelled():
    started: list[int] = []

    def job(x: int) -> int:
        started.append(x)
        if x == 0:
            raise KeyError("block 0")
        time.sleep(0.05)
        return x

    with pytest.raises(KeyError, match="block 0"):
        Runner(workers=2).map(job, range(40))
    assert len(started) < 40


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_workers_must_be_a_count(workers):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"workers is .*; expected a number of threads of at least 1"):
        Runner(workers=workers)


def test_no_workers_means_one_per_core():
    import os

    assert Runner().workers == Runner(workers=0).workers == (os.cpu_count() or 1)


def test_imap_yields_in_order_and_keeps_at_most_ahead_jobs_unconsumed():
    lock = threading.Lock()
    live = [0, 0]  # results made and not yet consumed, the most at once

    def job(x: int) -> int:
        time.sleep(0.002 * (x % 3))
        with lock:
            live[0] += 1
            live[1] = max(live[1], live[0])
        return x

    out = []
    for x in Runner(workers=3).imap(job, range(30), ahead=4):
        with lock:
            live[0] -= 1
        out.append(x)
    assert out == list(range(30)) and live[1] <= 4


def test_closing_imap_early_cancels_the_rest():
    started: list[int] = []

    def job(x: int) -> int:
        started.append(x)
        time.sleep(0.01)
        return x

    gen = Runner(workers=2).imap(job, range(100), ahead=2)
    assert next(gen) == 0
    gen.close()
    assert len(started) <= 4


def test_a_dask_client_runs_the_jobs_in_order():
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        runner = Runner(workers=1, client=client)
        calls: list[int] = []
        assert runner.map(_slow_square, range(6), progress=lambda d, t: calls.append(d)) == [x * x for x in range(6)]
        assert calls == list(range(1, 7))
        assert list(runner.imap(_slow_square, range(6), ahead=2)) == [x * x for x in range(6)]
        assert runner.workers == 1 and "client=" in repr(runner)


def test_importing_the_runner_loads_no_dask():
    code = "import sys, geoseg.parallel; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
