"""Throughput and peak memory of ``geoseg composite`` on a small area and on one 4 x larger.

Writes a season of Sentinel-2 L2A-like items (Earth Search layout: per-band COGs, B02/B03/B04/B08
at 10 m, B11 at 20 m, SCL at 20 m with cloud blobs, STAC item JSONs with raster:bands
scale/offset) over a square of ``--size`` pixels and one of ``2 x --size`` (4 x the area), then
composites each in a fresh process (``geoseg composite ... --json``) and reads that process's
peak resident memory (``ru_maxrss`` of the child). Throughput is output pixel-bands per second
per core: ``width x height x periods x bands / seconds / workers``.

Run::

    .venv/bin/python benchmarks/composite_throughput.py --size 1024 --looks 12 --workers 2

The memory target of the issue: peak(4 x area) / peak(area) <= 1.1 (a window-by-window design
holds one window's looks of one band at a time, whatever the area).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

CRS = "EPSG:32643"
KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16"}


def _cog(path: Path, arr: np.ndarray, transform: Affine) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape
    with rasterio.open(path, "w", driver="COG", height=h, width=w, count=1, dtype=arr.dtype.name, crs=CRS,
                       transform=transform, nodata=0, compress="deflate", blocksize=512) as dst:
        dst.write(arr, 1)


def write_season(folder: Path, size: int, looks: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t10 = Affine(10, 0, 600000.0, 0, -10, 3400000.0)
    t20 = t10 @ Affine.scale(2)
    yy, xx = np.mgrid[0:size // 2, 0:size // 2] / (size / 2)
    for i in range(looks):
        day = f"2024-{6 + i * 4 // looks:02d}-{1 + (i * 7) % 27:02d}"
        iid = f"S2A_43RFQ_{day.replace('-', '')}_{i}_L2A"
        assets = {}
        for band, key in KEYS.items():
            is20 = band == "B11"
            n = size // 2 if is20 else size
            arr = (rng.integers(300, 4000, (n, n)) + 1000).astype(np.uint16)
            _cog(folder / iid / f"{band}.tif", arr, t20 if is20 else t10)
            assets[key] = {"href": f"./{iid}/{band}.tif", "eo:bands": [{"name": band}],
                           "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
        cx, cy = rng.random(2)
        cloud = (xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(0.01, 0.1)
        scl = np.where(cloud, 9, 4).astype(np.uint8)
        _cog(folder / iid / "SCL.tif", scl, t20)
        assets["scl"] = {"href": f"./{iid}/SCL.tif"}
        w, s, e, n_ = transform_bounds(CRS, "EPSG:4326", 600000, 3400000 - 10 * size, 600000 + 10 * size, 3400000)
        item = {"type": "Feature", "stac_version": "1.0.0", "id": iid, "bbox": [w, s, e, n_],
                "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n_], [w, n_], [w, s]]]},
                "properties": {"datetime": f"{day}T05:30:00Z", "platform": "sentinel-2a", "proj:epsg": 32643,
                               "s2:processing_baseline": "05.10", "sat:relative_orbit": i},
                "assets": assets, "links": []}
        (folder / f"{iid}.json").write_text(json.dumps(item))


def run_one(folder: Path, out: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "geoseg.cli.main", "-q", "composite", str(out), str(folder), "--bands",
           "B02,B03,B04,B08,B11", "--start", "2024-06-01", "--end", "2024-10-01", "--workers", str(workers),
           "--json", "--overwrite"]
    # a wrapper process per run, so that each run's peak is its own (RUSAGE_CHILDREN keeps the maximum)
    wrap = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrap, *cmd], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr)
    peak = int(proc.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    px = doc["width"] * doc["height"] * len(doc["bands"])
    return {"seconds": seconds, "peak_mb": peak / 1024, "pixel_bands": px,
            "mpx_per_s_per_core": px / seconds / workers / 1e6, "size": f"{doc['width']}x{doc['height']}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--looks", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.size, 2 * args.size):
            folder = Path(tmp) / f"s{size}"
            write_season(folder, size, args.looks)
            rows.append(run_one(folder, Path(tmp) / f"o{size}.tif", args.workers))
    print(f"{'area':>11} {'seconds':>8} {'Mpx/s/core':>11} {'peak MB':>8}")
    for r in rows:
        print(f"{r['size']:>11} {r['seconds']:8.1f} {r['mpx_per_s_per_core']:11.2f} {r['peak_mb']:8.0f}")
    print(f"memory ratio (4x area / area): {rows[1]['peak_mb'] / rows[0]['peak_mb']:.3f}; "
          f"cpu count {os.cpu_count()}, workers {args.workers}")


if __name__ == "__main__":
    main()
