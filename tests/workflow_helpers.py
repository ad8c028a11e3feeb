"""Small inputs for workflow tests: scenes, a random-weight checkpoint, a workflow file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine

from geoseg.classes import default_classes
from geoseg.ml.model import ModelCard, build_from_card, save_checkpoint

BANDS = [f"2024-06-15 {b}" for b in ["B", "G", "R", "NIR"]]


def write_scene(path: Path, h: int, w: int, transform: Affine, crs: str = "EPSG:32643", seed: int = 0) -> np.ndarray:
    """A smooth 4-band uint16 scene (fields-like blobs), nodata 0 on a 3 px collar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([
        1000 + 800 * np.sin(xx / 17.0 + k) * np.cos(yy / 23.0 - k) + rng.normal(0, 40, (h, w)) for k in range(4)
    ]).clip(1, 60000).astype("uint16")
    a[:, :3, :] = 0
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=4, dtype="uint16", nodata=0, crs=crs,
                       transform=transform, tiled=True, blockxsize=64, blockysize=64) as d:
        d.write(a)
        for i, n in enumerate(BANDS, start=1):
            d.set_band_description(i, n)
    return a


def write_model(path: Path, seed: int = 0, boundary: bool = False) -> Path:
    torch.manual_seed(seed)
    card = ModelCard(arch="unet", encoder="resnet18", in_channels=4, classes=default_classes(),
                     arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}, bands=BANDS,
                     band_mean=[1000.0] * 4, band_std=[600.0] * 4, tile=64, overlap=16,
                     outputs=["classes", "boundary"] if boundary else ["classes"])
    save_checkpoint(path, build_from_card(card), card)
    return path


def write_workflow(path: Path, **overrides: Any) -> Path:
    wf: dict[str, Any] = {
        "name": "t",
        "scenes": ["scene.tif"],
        "model": "model",
        "tile": 64,
        "overlap": 16,
        "tiles_per_task": 4,
        "batch_size": 2,
        "outputs": {"fields": [], "district_areas": False},
        "cluster": {"workers": 2, "threads_per_worker": 1, "dashboard": False},
        "store": "store",
        "runs_dir": "runs",
    }
    wf.update(overrides)
    path.write_text(yaml.safe_dump(wf, sort_keys=False))
    return path


def write_districts(path: Path, split_x: float, bounds: tuple[float, float, float, float],
                    crs: str = "EPSG:32643") -> Path:
    """Two rectangular districts, 'West' and 'East', split at ``split_x`` (on pixel edges)."""
    import geopandas as gpd
    from shapely.geometry import box

    x0, y0, x1, y1 = bounds
    gdf = gpd.GeoDataFrame({"district": ["West", "East"]},
                           geometry=[box(x0, y0, split_x, y1), box(split_x, y0, x1, y1)], crs=crs)
    gdf.to_file(path, driver="GPKG")
    return path


def mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a fresh tmpfs of ``size`` (e.g. "16k") on ``where``: a real, small, full-able disk.

    Needs root (as the tests and CI run here); False where mounting is not allowed.
    """
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, timeout=20)


def run_geoseg(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m geoseg.cli.main ARGS`` in ``cwd``; a run that hangs fails with every thread's stack.

    The child runs with Python's faulthandler on: past ``timeout`` it gets SIGABRT, which makes
    faulthandler print the stack of each of its threads to stderr before it dies, and the test
    fails with that tail instead of a bare time-out.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(f"geoseg {' '.join(args)} hung for {timeout:.0f} s; its threads:\n{err[-12000:]}\n{out[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
