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
