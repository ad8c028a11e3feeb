"""Shared fixtures. No test touches the network: Hugging Face hub access is switched off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
