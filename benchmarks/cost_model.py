"""What a state or the country would cost: seconds per km2 and per field of each stage of a run,
measured here, extrapolated to Punjab and to all India for N workers.

A full `geoseg run` maps a synthetic scene (the rectangular patches of
``run_client_memory.py``: 10 m pixels, 4 bands, one date; ``--side`` px a side) with a
random-weight model of ``geoseg train``'s default architecture (U-Net, ResNet-18 encoder of
depth 4; the weights do not change the cost). Its stage timings (LocalCluster of ``--workers`` processes, 1 thread each)
become worker-seconds per km2 (and per 1,000 fields for the stages that work per field); these
are extrapolated linearly to an area mapped by N workers: ``hours = worker-seconds per km2 x
km2 / N / 3600``. What is measured and what is extrapolated is printed with each figure.

Assumptions, printed too: the stages scale with area (inference, mosaic, areas) or with fields
(polygonise, features) as measured here; workers add up without loss (the scheduler and the
shared storage keep up); a GPU worker's inference is ``--gpu-speedup`` times a CPU worker's
when no GPU figure is given (``--gpu-tile-seconds``: seconds per 512 px tile measured on a GPU
with ``geoseg bench --gpu``); a season's compositing is not included (it reads every look of
every band: measure it with ``benchmarks/composite_throughput.py``) unless ``--season``.

``--season``: the run a state's crop statisticians would schedule instead - the synthetic region
of ``geoseg synth`` (``--side`` px a side, its fields and districts) as a season of Sentinel-2
L2A products (Earth Search STAC items and per-band COGs, ``--acquisitions`` looks 10 days apart
from 15 June, clouds, SCL), composited monthly in the run (10 bands), mapped by a U-Net/ResNet-18
that reads the whole stack (bands x months), with the district table, the fields' NDVI growth
features and the district profiles. Every stage of that run is timed and extrapolated.

Run::

    .venv/bin/python benchmarks/cost_model.py [--side 2700] [--workers 2] [--gpu-tile-seconds S]
    .venv/bin/python benchmarks/cost_model.py --season [--side 2048] [--acquisitions 12]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from run_client_memory import model, scene  # the sibling benchmark (this runs as a script)

#: Sentinel-2 L2A bands a season run composites (the 10 m and 20 m ones).
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Areas extrapolated to (km2): Punjab (India) and India's geographical area.
AREAS = {"Punjab": 50_362, "India": 3_287_263}

_CHILD = r'''
import json, sys
import pyarrow.dataset as pads
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

if __name__ == "__main__":
    res = run_workflow(load_workflow(sys.argv[1]))
    n = pads.dataset(str(res.run_dir / "fields.parquet"), format="parquet").count_rows()
    print(json.dumps({"fields": n, "tiles": res.tiles, "timings": res.timings}))
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=2700, help="scene side in pixels (10 m)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gpu-tile-seconds", type=float, default=None)
    ap.add_argument("--gpu-speedup", type=float, default=20.0)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 64], help="worker counts to extrapolate to")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-cost-model"))
    ap.add_argument("--season", action="store_true", help="a season of Sentinel-2 products, composited in the run")
    ap.add_argument("--acquisitions", type=int, default=12, help="--season: looks, 10 days apart")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cluster = {"workers": args.workers, "threads_per_worker": 1, "dashboard": False}
    if args.season:
        folder, wf, which = _season_case(args)
        stages = ("composite", "infer", "mosaic", "polygonise", "features", "write_fields", "district_areas",
                  "district_profiles")
    else:
        folder, wf, which = _scene_case(args)
        stages = ("infer", "mosaic", "polygonise", "write_fields")
    wf.update({"tile": 512, "overlap": 32, "tiles_per_task": 4, "batch_size": 4, "cluster": cluster,
               "store": "store", "runs_dir": "runs"})
    (folder / "wf.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    shutil.rmtree(folder / "runs", ignore_errors=True)
    shutil.rmtree(folder / "store", ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", _CHILD, "wf.yaml"], cwd=folder, capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    km2 = (args.side * 10 / 1000) ** 2
    fields, tiles, t = r["fields"], r["tiles"], r["timings"]
    print(f"measured: {args.side} x {args.side} px at 10 m = {km2:,.0f} km2, {tiles} tiles of 512 px, "
          f"{fields:,} fields ({fields / km2:,.0f} per km2), {which}, {args.workers} CPU worker(s)")
    print("| stage | measured s | worker-s per km2 | worker-s per 1,000 fields |")
    print("|---|---:|---:|---:|")
    per_km2 = {}
    for stage in stages:
        sec = float(t.get(stage, 0.0))
        per_km2[stage] = sec * args.workers / km2
        print(f"| {stage} | {sec:.1f} | {per_km2[stage]:.3f} | {sec * args.workers / max(fields, 1) * 1000:.3f} |")
    infer_cpu_tile = t.get("infer", 0.0) * args.workers / max(tiles, 1)
    infer_gpu_tile = args.gpu_tile_seconds or infer_cpu_tile / args.gpu_speedup
    source = "measured on a GPU" if args.gpu_tile_seconds else f"CPU figure / {args.gpu_speedup:g} (assumed)"
    print(f"inference per tile: CPU worker {infer_cpu_tile:.2f} s (measured); GPU worker {infer_gpu_tile:.3f} s "
          f"({source})")
    tiles_per_km2 = tiles / km2
    print("| area | km2 | workers | inference h (GPU workers) | other stages h (CPU workers) | total h |")
    print("|---|---:|---:|---:|---:|---:|")
    other = sum(v for k, v in per_km2.items() if k != "infer")
    for name, area in AREAS.items():
        for n in args.nodes:
            inf = tiles_per_km2 * area * infer_gpu_tile / n / 3600
            rest = other * area / n / 3600
            print(f"| {name} | {area:,} | {n} | {inf:.2f} | {rest:.2f} | {inf + rest:.2f} |")
    print("extrapolated: linear in area and fields, workers without loss, fields at the measured density")
    return 0


def _scene_case(args: argparse.Namespace) -> tuple[Path, dict, str]:
    """One date of four bands: the patches of ``run_client_memory.py``."""
    model_dir, which = args.work / "model", "U-Net/ResNet-18 (random weights)"
    if not (model_dir / "model.json").exists():
        model(model_dir)
    folder = args.work / f"side-{args.side}"
    folder.mkdir(exist_ok=True)
    if not (folder / "scene.tif").exists():
        scene(folder / "scene.tif", int((args.side / 10) ** 2))
    outputs = {"fields": ["parquet"], "district_areas": False, "min_area_ha": 0.0, "report": False}
    return folder, {"name": "cost", "scenes": ["scene.tif"], "model": str(model_dir), "outputs": outputs}, which


def _season_case(args: argparse.Namespace) -> tuple[Path, dict, str]:
    """A season of Sentinel-2 products of the synthetic region, composited monthly in the run."""
    import datetime as dt

    import torch

    from geoseg.classes import default_classes
    from geoseg.ml.model import ModelCard, build_from_card, save_checkpoint

    folder = args.work / f"season-{args.side}-{args.acquisitions}"
    if not (folder / "products" / "stac").is_dir():
        subprocess.run([sys.executable, "-m", "geoseg.cli.main", "synth", str(folder), "--height", str(args.side),
                        "--width", str(args.side), "--products", "stac", "--acquisitions", str(args.acquisitions),
                        "--spacing", "10", "--overwrite", "--json"], check=True, capture_output=True)
    first = dt.date(2024, 6, 15)
    last = first + dt.timedelta(days=10 * (args.acquisitions - 1))
    months = sorted({(first + dt.timedelta(days=d)).strftime("%Y-%m") for d in range((last - first).days + 1)})
    names = [f"{m}_{b}" for m in months for b in S2_BANDS]
    model_dir = folder / "model"
    if not (model_dir / "model.json").exists():
        torch.manual_seed(1)
        card = ModelCard(arch="unet", encoder="resnet18", in_channels=len(names), classes=default_classes(),
                         arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}, bands=names,
                         band_mean=[1500.0] * len(names), band_std=[800.0] * len(names), tile=64, overlap=16)
        save_checkpoint(model_dir, build_from_card(card), card)
    season = {"sources": ["products/stac"], "bands": list(S2_BANDS), "start": f"{months[0]}-01",
              "end": (dt.date.fromisoformat(f"{months[-1]}-01") + dt.timedelta(days=31)).replace(day=1).isoformat(),
              "periods": "monthly"}
    outputs = {"fields": ["parquet"], "district_areas": True, "min_area_ha": 0.0, "report": False,
               "features": ["ndvi"]}
    wf = {"name": "cost-season", "scenes": [{"name": "kharif", "season": season}], "model": str(model_dir),
          "districts": {"path": "districts.gpkg", "name_field": "district"}, "outputs": outputs}
    which = (f"U-Net/ResNet-18 (random weights) on {len(names)} channels ({len(S2_BANDS)} bands x {len(months)} "
             f"months) composited from {args.acquisitions} Sentinel-2 looks")
    return folder, wf, which


if __name__ == "__main__":
    sys.exit(main())
