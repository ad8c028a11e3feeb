"""Shared fixtures. No test touches the network: Hugging Face hub access is switched off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# pytest-xdist runs one process per core: each one's torch (and the OpenMP in it), and the processes
# the tests start, take their share of the cores rather than all of them (oversubscribed OpenMP
# threads spin waiting for each other, which slows every training test).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _THREADS = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
    import torch

    torch.set_num_threads(_THREADS)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def rgb_tif() -> Path:
    """Landsat RGB with a nodata (0) collar and an odd pixel size."""
    return DATA / "RGB.byte.tif"


@pytest.fixture(scope="session")
def s2_tif() -> Path:
    """Sentinel-2 13-band float32 patch with NaN nodata and non-square pixels."""
    return DATA / "TestEOPatch_S2L1C_composite_13band.tif"


@pytest.fixture(scope="module")
def s3():  # type: ignore[no-untyped-def]
    """moto's S3 server on 127.0.0.1 (one per test module), its settings in this process's environment."""
    from .remote_servers import s3_server

    with s3_server({}) as server:
        old = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)  # this process talks to it too
        try:
            yield server
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
