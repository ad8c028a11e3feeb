"""Does the client's memory grow with the number of fields? One fields file against a dataset.

A field-like class mask is written for each asked field count: rectangular fields of 6 to 14
px a side on a 10 m UTM grid, no two neighbours of one crop (so every rectangle is one field),
six crops. Each mask is then polygonised on a Dask LocalCluster (2 worker processes, 1 thread
each), in a fresh client process per measurement:

``file``
    ``geoseg.ops.polygonize.polygonize_file`` to one GeoParquet file: every field travels to the
    client, which merges the seams and writes the file;
``dataset``
    ``geoseg.ops.polygonize.polygonize_dataset``: the workers write each block's fields, only the
    pieces that reach a block seam travel to the client.

Printed per mask and mode: fields, seconds, and the client process's peak resident memory
(VmHWM; the workers are other processes), and the ratio of the peaks of the largest and the
smallest mask.

Run::

    .venv/bin/python benchmarks/field_dataset_memory.py [--fields 10000 200000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

_CHILD = r'''
import json, sys, time
from dask.distributed import Client, LocalCluster
from geoseg.classes import default_classes
from geoseg.ops.polygonize import polygonize_dataset, polygonize_file

def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024

if __name__ == "__main__":
    mode, mask, out = sys.argv[1:4]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        base = peak()
        t = time.perf_counter()
        kw = dict(classes=default_classes(), min_area_ha=0, client=client, block=1024)
        res = (polygonize_dataset if mode == "dataset" else polygonize_file)(mask, out, **kw)
        seconds = time.perf_counter() - t
    print(json.dumps({"fields": res.fields, "seconds": seconds, "peak_mib": peak(), "before_mib": base}))
'''


def field_mask(path: Path, n_fields: int, seed: int = 0) -> Path:
    """A mask of about ``n_fields`` rectangular fields (6-14 px a side), neighbours of other crops."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n_fields))
    widths = rng.integers(6, 15, side)
    heights = rng.integers(6, 15, side)
    i = np.repeat(np.arange(side), heights)
    j = np.repeat(np.arange(side), widths)
    ii, jj = np.meshgrid(i, j, indexing="ij")
    extra = rng.integers(0, 2, (side, side))  # rice/wheat/sugarcane or cotton/maize/fallow, same residue mod 3
    mask = ((ii + 2 * jj) % 3 + 1 + 3 * extra[ii, jj]).astype(np.uint8)
    profile = {"driver": "GTiff", "height": mask.shape[0], "width": mask.shape[1], "count": 1, "dtype": "uint8", "nodata": 255,
                   "crs": "EPSG:32643", "transform": Affine(10, 0, 560_000, 0, -10, 3_420_000), "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, nargs="+", default=[10_000, 200_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-field-dataset"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    print("| mask fields | mode | fields written | seconds | client peak MiB |")
    print("|---:|---|---:|---:|---:|")
    peaks: dict[str, list[float]] = {"file": [], "dataset": []}
    for n in args.fields:
        mask = args.work / f"mask-{n}.tif"
        if not mask.exists():
            field_mask(mask, n)
        for mode in ("file", "dataset"):
            out = args.work / f"fields-{n}-{mode}.parquet"
            res = subprocess.run([sys.executable, "-c", _CHILD, mode, str(mask), str(out)], capture_output=True,
                                 text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            peaks[mode].append(r["peak_mib"])
            print(f"| {n:,} | {mode} | {r['fields']:,} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    for mode, p in peaks.items():
        print(f"{mode}: client peak, largest / smallest mask: {p[-1] / p[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
