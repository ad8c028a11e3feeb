"""What separating touching fields costs in ``polygonize``: time and peak memory, with and without.

The 16x region of ``geoseg bench`` (4 x the demo's side; ``--size``) mapped by a model trained
with ``--fields`` (``--model DIR``: its mask and confidence with the boundary band, from
``geoseg predict``); without a model, the region's true labels as the mask and a band made from
the true fields' edges (0.9 on them, 0.02 elsewhere, blurred over a pixel). Each mode runs in a fresh process (``--one MODE``), so that its peak resident
memory is its own; the time is the median (and the fastest) of ``--repeats`` calls of
:func:`geoseg.ops.polygonize.polygonize_raster` in that process (default blocks, 2 threads).

Run::

    .venv/bin/python benchmarks/field_separation_cost.py [--model DIR] [--size 4096] [--repeats 3] [--pairs 9] [--work DIR]

The machine's speed drifts between the two processes, so the ratio is also measured as the
median of ``--pairs`` back-to-back pairs of calls (4-connected, then separated) in one process.

``--filed-tree DIR`` also times the 4-connected ``polygonize`` of another geoseg tree (e.g. a
``git worktree`` of the commit before field separation existed: the issue's "today's
polygonise time"), in a fresh process of its own, and prints separated / that.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage

# the one import a child needs: a --filed-tree child runs an older geoseg, without the rest
from geoseg.ops.polygonize import polygonize_raster


def prepare(work: Path, size: int, model: Path | None) -> tuple[Path, Path]:
    from geoseg.core.objects import boundary_pixels
    from geoseg.io.field_polygons import burn_fields
    from geoseg.ops.predict import predict_scene
    from geoseg.synth import synthesize

    region = synthesize(work / f"region-{size}", height=size, width=size, seed=0, cloud_fraction=0.0)
    if model is not None:
        mask, conf = work / f"region-{size}" / "mask.tif", work / f"region-{size}" / "confidence.tif"
        if not conf.exists():
            predict_scene(model, region.scene, mask, confidence=conf)
        return mask, conf
    conf = work / f"region-{size}" / "confidence-from-truth.tif"
    if not conf.exists():
        with rasterio.open(region.labels) as src:
            labels, profile = src.read(1), src.profile
        ids, _ = burn_fields(region.fields, labels.shape, profile["transform"], profile["crs"])
        edge = boundary_pixels(ids)
        p = ndimage.gaussian_filter(np.where(edge, 0.9, 0.02), 1.0)
        band = np.round(p * 254 + 1).astype(np.uint8)
        nodata = labels == 255
        profile.update(count=2, dtype="uint8", nodata=0, compress="deflate", tiled=True, blockxsize=512,
                       blockysize=512)
        with rasterio.open(conf, "w", **profile) as dst:
            dst.write(np.where(nodata, 0, 200).astype(np.uint8), 1)
            dst.write(np.where(nodata, 0, band), 2)
            dst.set_band_description(1, "confidence")
            dst.set_band_description(2, "boundary")
    return region.labels, conf


def one(mode: str, mask: str, conf: str, repeats: int) -> dict[str, float]:
    import inspect

    # a tree from before field separation has no ``separate`` (its fields are 4-connected)
    kw = {"separate": mode == "separated"} if "separate" in inspect.signature(polygonize_raster).parameters else {}
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        gdf = polygonize_raster(mask, confidence=conf, workers=2, **kw)
        times.append(time.perf_counter() - t)
        n = len(gdf)
    # VmHWM, not ru_maxrss: the latter survives fork + exec, so this child would report the peak of
    # its parent, which made the region
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return {"seconds": float(np.median(times)), "min_seconds": float(np.min(times)), "fields": n,
            "peak_mib": peak / 1024}


def interleaved(mask: str, conf: str, rounds: int) -> list[float]:
    """Separated / 4-connected time of each of ``rounds`` back-to-back pairs of calls in one
    process: on a shared machine whose speed drifts, a pair sees the same machine."""
    ratios = []
    for _ in range(rounds):
        t = []
        for separate in (False, True):
            t0 = time.perf_counter()
            polygonize_raster(mask, confidence=conf, workers=2, separate=separate)
            t.append(time.perf_counter() - t0)
        ratios.append(t[1] / t[0])
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-separation-cost"))
    ap.add_argument("--model", type=Path, default=None, help="a checkpoint trained with --fields")
    ap.add_argument("--pairs", type=int, default=9, help="back-to-back pairs of calls for the paired ratio")
    ap.add_argument("--filed-tree", type=Path, default=None,
                    help="also time the 4-connected polygonise of the geoseg tree in this folder")
    ap.add_argument("--one", nargs=3, metavar=("MODE", "MASK", "CONF"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.one[2], args.repeats)))
        return 0
    mask, conf = prepare(args.work, args.size, args.model)
    res = {}
    # (row name, the child's mode, the geoseg tree it imports: None for this one)
    runs: list[tuple[str, str, Path | None]] = [("4-connected", "4-connected", None), ("separated", "separated", None)]
    if args.filed_tree:
        runs.insert(0, ("4-connected, filed tree", "4-connected", args.filed_tree.resolve()))
    for name, mode, tree in runs:
        env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
        out = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--one", mode, str(mask),
                              str(conf)], check=True, capture_output=True, text=True, env=env)
        res[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"| mode | fields | seconds (median of {args.repeats}) | fastest | peak MiB |")
    print("|---|---|---|---|---|")
    for mode, r in res.items():
        print(f"| {mode} | {r['fields']:,} | {r['seconds']:.2f} | {r['min_seconds']:.2f} | {r['peak_mib']:.0f} |")
    a, b = res["4-connected"], res["separated"]
    print(f"time ratio separated / 4-connected: {b['seconds'] / a['seconds']:.2f} (medians), "
          f"{b['min_seconds'] / a['min_seconds']:.2f} (fastest calls); "
          f"peak memory ratio: {b['peak_mib'] / a['peak_mib']:.2f}")
    if args.filed_tree:
        f = res["4-connected, filed tree"]
        print(f"separated / the filed tree's 4-connected: time {b['seconds'] / f['seconds']:.2f} (medians), "
              f"{b['min_seconds'] / f['min_seconds']:.2f} (fastest calls); peak memory {b['peak_mib'] / f['peak_mib']:.2f}")
    if args.pairs:
        r = interleaved(str(mask), str(conf), args.pairs)
        print(f"paired ratio over {len(r)} back-to-back pairs: median {np.median(r):.2f} "
              f"(min {min(r):.2f}, max {max(r):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
