"""The `geoseg run` process's own memory as the number of fields grows (10k to 200k fields).

Two scenes of rectangular patches (6-14 px a side, each with its own random 4-band reflectance,
10 m UTM grid; 600 x 600 and 2,700 x 2,700 px) are mapped by a random-weight U-Net (ResNet-18
encoder, the test suite's kind of checkpoint): its classes follow the patches, so the masks
hold about 10,000 and 200,000 fields. Each run is a full `geoseg run` (LocalCluster, 2 worker
processes started by the measuring process and given to the run as its scheduler; tiles of 512
px; fields as GeoParquet, no sieving, no district table, no report) in a fresh process; printed:
the fields written, the run's seconds and stage timings, the run process's peak resident memory
(VmHWM; it also hosts the scheduler, as a run's own LocalCluster does) and the largest worker's.

The random model maps one class (``cotton``) over most of the larger scene as a single region
of about 67,000 ha with 150,000 holes; the runs leave that class out of the fields
(``exclude_classes``), since a "field" of that size is no field and merging it is a memory cost
of its own (printed with ``--keep-all``). ``--features`` adds the growth features (NDVI of the
scene's one date) of every field. ``--parcels`` makes the fields a parcel layer instead (each
patch cut in quarters: about 14,000 and 290,000 parcels, ``outputs.parcels``).

Run::

    .venv/bin/python benchmarks/run_client_memory.py [--work DIR] [--keep-all] [--features] [--parcels]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
import yaml
from affine import Affine

from geoseg.classes import default_classes
from geoseg.ml.model import ModelCard, build_from_card, save_checkpoint

BANDS = [f"2024-06-15 {b}" for b in ["B", "G", "R", "NIR"]]

_CHILD = r'''
import json, sys, time
import pyarrow.dataset as pads
from dask.distributed import Client, LocalCluster
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024

if __name__ == "__main__":
    # the run's cluster, started here (as the run would) so that the workers' peaks can be read after it
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"MALLOC_ARENA_MAX": "1"}) as cluster, Client(cluster) as client:
        t = time.perf_counter()
        res = run_workflow(load_workflow(sys.argv[1], scheduler=cluster.scheduler_address))
        seconds = time.perf_counter() - t
        workers = client.run(peak)
    n = pads.dataset(str(res.run_dir / "fields.parquet"), format="parquet").count_rows()
    print(json.dumps({"fields": n, "peak_mib": peak(), "seconds": seconds, "worker_peak_mib": max(workers.values()),
                      "timings": {k: round(v, 1) for k, v in res.timings.items()}}))
'''


def scene(path: Path, patches: int, seed: int = 0, parcels: Path | None = None) -> None:
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(patches))
    rows, cols = rng.integers(6, 15, side), rng.integers(6, 15, side)
    i = np.repeat(np.arange(side), rows)
    j = np.repeat(np.arange(side), cols)
    if parcels is not None:
        write_parcels(parcels, rows, cols)
    vals = rng.integers(300, 3000, (4, side, side))
    a = np.stack([vals[k][i][:, j] for k in range(4)]).astype("uint16")
    a += rng.integers(0, 30, a.shape).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=4, dtype="uint16",
                       nodata=0, crs="EPSG:32643", transform=Affine(10, 0, 560_000, 0, -10, 3_420_000), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        dst.write(a)
        for k, name in enumerate(BANDS, start=1):
            dst.set_band_description(k, name)


def write_parcels(path: Path, rows: np.ndarray, cols: np.ndarray) -> None:
    """Each patch cut in four (its quarters, on pixel edges where they fall), as a parcel layer."""
    import geopandas as gpd
    import shapely

    r = np.r_[0, np.cumsum(rows)]
    c = np.r_[0, np.cumsum(cols)]
    r = np.unique(np.sort(np.r_[r, (r[:-1] + r[1:]) // 2]))
    c = np.unique(np.sort(np.r_[c, (c[:-1] + c[1:]) // 2]))
    left, right = np.meshgrid(560_000 + 10.0 * c[:-1], r[:-1])[0], np.meshgrid(560_000 + 10.0 * c[1:], r[:-1])[0]
    top = np.meshgrid(c[:-1], 3_420_000 - 10.0 * r[:-1])[1]
    bottom = np.meshgrid(c[:-1], 3_420_000 - 10.0 * r[1:])[1]
    boxes = shapely.box(left.ravel(), bottom.ravel(), right.ravel(), top.ravel())
    gpd.GeoDataFrame({"parcel": np.arange(1, len(boxes) + 1)}, geometry=boxes, crs="EPSG:32643").to_file(path)


def model(path: Path) -> None:
    torch.manual_seed(1)
    card = ModelCard(arch="unet", encoder="resnet18", in_channels=4, classes=default_classes(),
                     arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}, bands=BANDS,
                     band_mean=[1000.0] * 4, band_std=[600.0] * 4, tile=64, overlap=16)
    save_checkpoint(path, build_from_card(card), card)


def workflow(path: Path, model_dir: Path, keep_all: bool, features: bool = False, parcels: bool = False) -> None:
    outputs = {"fields": ["parquet"], "district_areas": False, "min_area_ha": 0.0, "report": False,
               "exclude_classes": ["background"] if keep_all else ["background", "cotton"]}
    if parcels:
        outputs["parcels"] = "parcels.gpkg"
        outputs["parcel_id"] = "parcel"
    if features:
        outputs["features"] = ["ndvi"]
    wf = {"name": "mem", "scenes": ["scene.tif"], "model": str(model_dir), "tile": 512, "overlap": 32,
          "tiles_per_task": 4, "batch_size": 4, "outputs": outputs,
          "cluster": {"workers": 2, "threads_per_worker": 1, "dashboard": False}, "store": "store", "runs_dir": "runs"}
    path.write_text(yaml.safe_dump(wf, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-run-memory"))
    ap.add_argument("--keep-all", action="store_true", help="keep every crop class, the giant region too")
    ap.add_argument("--features", action="store_true", help="with the growth features (NDVI) of every field")
    ap.add_argument("--parcels", action="store_true",
                    help="the fields are a parcel layer (each patch in quarters: ~14,000 and ~290,000 parcels)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = args.work / "model"
    if not (model_dir / "model.json").exists():
        model(model_dir)
    print("| patches | fields | run s | polygonise s | features s | run process peak MiB | largest worker peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    peaks = []
    for patches in (3_600, 73_000):
        folder = args.work / f"r{patches}"
        folder.mkdir(exist_ok=True)
        if not (folder / "scene.tif").exists() or (args.parcels and not (folder / "parcels.gpkg").exists()):
            scene(folder / "scene.tif", patches, parcels=folder / "parcels.gpkg" if args.parcels else None)
        workflow(folder / "wf.yaml", model_dir, args.keep_all, args.features, args.parcels)
        out = subprocess.run([sys.executable, "-c", _CHILD, "wf.yaml"], cwd=folder, capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peaks.append(r["peak_mib"])
        print(f"| {patches:,} | {r['fields']:,} | {r['seconds']:.1f} | {r['timings'].get('polygonise', 0):.1f} | "
              f"{r['timings'].get('features', 0):.1f} | "
              f"{r['peak_mib']:.0f} | {r['worker_peak_mib']:.0f} |")
    print(f"run process peak, larger / smaller: {peaks[1] / peaks[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
