"""Cloudy seasons: today's channel-stacked U-Net against date-aware models, on monsoon and cloud-free regions.

Protocol
--------
* Regions from :func:`geoseg.synth.synthesize` with ``--dates`` (6) dates. A **training
  region** (``--train-size`` px, seed 1 as in the demo) and **mapped regions** (``--size`` px,
  seeds ``--seeds``: 0, the demo's, and 2, never looked at while choosing any setting). Each
  region is made twice: as a **monsoon** season (``--clouds``, per-date cloud and shadow
  fractions drawn around it, see ``geoseg synth``) and **cloud-free** (``--clouds 0``). The
  two share every field and every clear pixel value; ``labels.tif`` holds the crop under
  the clouds too, and ``clouds.tif`` each date's sky.
* **Models**, each trained with :func:`geoseg.ml.train.train`'s defaults, the same seed and the
  same budget of chips (``--epochs``, early stopping as usual):

  ``today``
      The channel-stacked U-Net as geoseg trained it before dates were read
      (``valid_rule="all"``), on the cloud-free training region: the best that model can be
      given (on the monsoon training region too few chips hold every date).
  ``stacked+dropout``
      The same U-Net reading the dates (a validity plane per date) and trained with date
      drop-out (``date_dropout=0.4``) on the monsoon training region.
  ``temporal``
      ``--arch utae`` (:class:`geoseg.ml.temporal.TemporalUNet`) on the monsoon training region.
  ``stacked+dropout/clear``, ``temporal/clear`` (``--models``)
      The same two trained on the cloud-free training region, as ``today`` is: the clouds they
      learn from are the simulated ones only.

* Each model maps each mapped region with :func:`geoseg.ops.predict.predict_scene`
  (``min_dates=1``) and is scored against the truth:

  ``mapped``
      Mapped pixels as a share of the land (``labels.tif`` not nodata) that is clear on at
      least one date (``clouds.tif``).
  ``mIoU``
      Over every mapped pixel with a label.
  ``ha error``
      Per district and crop of at least 100 ha in ``truth.csv`` (background left out): the
      mapped hectares (mask pixels x the truth's hectares per pixel of that district) against
      the truth, as a share of the truth; the largest and the mean of their absolute values.
  ``tiles/s``
      512 px tiles per second of :func:`predict_scene` (model load included), this machine's CPU.

Run::

    .venv/bin/python benchmarks/cloudy_season.py [--size 1024] [--train-size 1536] [--epochs 40] [--patience N]
        [--tile N] [--chip N] [--batch-size N] [--lr X] [--loss L] [--tag T] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from geoseg.classes import NODATA, load_classes
from geoseg.core.metrics import ConfusionAccumulator, scores
from geoseg.demo import MAP_SEED, TRAIN_SEED
from geoseg.errors import EmptySceneError
from geoseg.ml.model import read_card
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize

MODELS = {
    "today": {"arch": "unet", "region": "clear"},
    "stacked+dropout": {"arch": "unet", "region": "monsoon", "date_dropout": 0.4},
    "temporal": {"arch": "utae", "region": "monsoon"},
    "stacked+dropout/clear": {"arch": "unet", "region": "clear", "date_dropout": 0.4},
    "temporal/clear": {"arch": "utae", "region": "clear"},
}
DEFAULT_MODELS = ["today", "stacked+dropout", "temporal"]


@contextmanager
def regions_at(args: argparse.Namespace) -> Iterator[tuple[Path, dict[tuple[str, int], Path]]]:
    """``(work, regions)``: ``args.work`` (a temporary folder, removed after, when None) and the
    protocol's regions there (:func:`make_regions`)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        yield work, make_regions(work, args)


def make_regions(work: Path, args: argparse.Namespace) -> dict[tuple[str, int], Path]:
    """The monsoon and cloud-free regions of the protocol under ``work``, keyed ``(kind, seed)``;
    made once (a folder with its ``truth.csv`` is reused). ``args`` holds ``size``,
    ``train_size``, ``dates``, ``clouds`` and ``seeds``."""
    regions: dict[tuple[str, int], Path] = {}
    for kind, clouds in (("monsoon", args.clouds), ("clear", 0.0)):
        for seed, size in [(TRAIN_SEED, args.train_size)] + [(s, args.size) for s in args.seeds]:
            d = work / f"{kind}-{seed}"
            if not (d / "truth.csv").exists():
                synthesize(d, height=size, width=size, seed=seed, dates=args.dates, cloud_fraction=clouds)
            regions[(kind, seed)] = d
    return regions


def cloud_per_date(region: Path) -> list[float]:
    """Each date's share of the scene under a cloud or its shadow (``clouds.tif``, collar left out)."""
    with rasterio.open(region / "clouds.tif") as s:
        sky = s.read()
    scene = sky[0] != 255
    return [round(float((d[scene] > 0).mean()), 3) for d in sky]


def score_map(region: Path, mask_path: Path, classes: Any) -> dict[str, Any]:
    """Mapped share, mIoU over mapped pixels and district hectare errors of one mask against a region's truth."""
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(region / "labels.tif") as s:
        lab = s.read(1)
        transform, shape = s.transform, (s.height, s.width)
    with rasterio.open(mask_path) as s:
        mask = s.read(1)
    with rasterio.open(region / "clouds.tif") as s:
        sky = s.read()
    land = lab != NODATA
    clear_once = (sky == 0).any(axis=0)
    mapped = mask != NODATA
    acc = ConfusionAccumulator(len(classes))
    both = mapped & land
    acc.update(mask[both], lab[both])
    sc = scores(acc.matrix, classes.names)
    districts = gpd.read_file(region / "districts.gpkg")
    ids = rasterize(((g, i + 1) for i, g in enumerate(districts.geometry)), out_shape=shape, transform=transform,
                    fill=0, dtype="int32")
    truth = pd.read_csv(region / "truth.csv")
    errors = []
    for i, name in enumerate(districts["district"], start=1):
        rows = truth[truth["district"] == name]
        if rows.empty:
            continue
        ha_per_px = float(rows["hectares"].sum() / rows["pixels"].sum())
        in_d = ids == i
        counts = np.bincount(mask[in_d & mapped], minlength=len(classes))
        for _, r in rows.iterrows():
            if r["crop"] == "background" or r["hectares"] < 100:
                continue
            got = counts[int(r["class_id"])] * ha_per_px
            errors.append({"district": name, "crop": r["crop"], "truth_ha": round(float(r["hectares"]), 1),
                           "mapped_ha": round(float(got), 1),
                           "error": round(float((got - r["hectares"]) / r["hectares"]), 4)})
    abs_err = [abs(e["error"]) for e in errors]
    seen = (sky == 0).sum(axis=0)
    by_seen = {}
    for k in range(1, sky.shape[0] + 1):
        sel = both & (seen == k)
        if sel.any():
            a = ConfusionAccumulator(len(classes))
            a.update(mask[sel], lab[sel])
            by_seen[k] = {"share": round(float(sel.sum() / max(1, land.sum())), 4),
                          "miou": round(float(scores(a.matrix, classes.names).miou), 4)}
    return {
        "mapped": float((mapped & land & clear_once).sum() / max(1, (land & clear_once).sum())),
        "mapped_of_land": float((mapped & land).sum() / max(1, land.sum())),
        "clear_once": float((land & clear_once).sum() / max(1, land.sum())),
        "miou": float(sc.miou) if both.any() else float("nan"),
        "ha_error_max": max(abs_err) if abs_err else None,
        "ha_error_mean": float(np.mean(abs_err)) if abs_err else None,
        "ha_errors": errors,
        "by_dates_seen": by_seen,
    }


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (the others keep geoseg train's defaults)."""
    given = {"patience": args.patience, "tile": args.tile, "chip": args.chip, "batch_size": args.batch_size, "lr": args.lr,
             "loss": args.loss}
    return {k: v for k, v in given.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="mapped regions' side in pixels")
    ap.add_argument("--train-size", type=int, default=1536, help="training region's side in pixels")
    ap.add_argument("--dates", type=int, default=6)
    ap.add_argument("--clouds", type=float, default=0.4, help="geoseg synth --clouds of the monsoon regions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[MAP_SEED, 2])
    ap.add_argument("--epochs", type=int, default=20, help="training epochs per model (the same chips for each)")
    ap.add_argument("--minutes", type=float, default=None, help="a training time limit per model (default: none)")
    ap.add_argument("--patience", type=int, default=None,
                    help="early-stopping patience in epochs (default: geoseg train's)")
    ap.add_argument("--tile", type=int, default=None,
                    help="the card's inference tile, and the training chip unless --chip (default: geoseg train's)")
    ap.add_argument("--chip", type=int, default=None, help="training chip size (default: the tile)")
    ap.add_argument("--batch-size", type=int, default=None, help="chips per step (default: geoseg train's)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: geoseg train's)")
    ap.add_argument("--loss", default=None, help="training loss (default: geoseg train's)")
    ap.add_argument("--tag", default="", help="suffix of the model and mask names, to keep variants apart in --work")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    ap.add_argument("--work", type=Path, default=None, help="keep regions and models here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="use the models already in --work (measure maps only)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with regions_at(args) as (work, regions):
        classes = load_classes(regions[("clear", TRAIN_SEED)] / "classes.yaml")
        per_date = cloud_per_date(regions[("monsoon", TRAIN_SEED)])
        out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "train_region_cloud_per_date":
                               [round(v, 3) for v in per_date], "models": {}}
        print(f"training region: per-date cloud+shadow {', '.join(f'{v:.0%}' for v in per_date)}", flush=True)
        for name in args.models:
            spec = MODELS[name]
            tr = regions[(spec["region"], TRAIN_SEED)]
            slug = name.replace('+', '-').replace('/', '-') + (f"-{args.tag}" if args.tag else "")
            model_dir = work / f"model-{slug}"
            if args.reuse and (model_dir / "model.json").exists():
                card = read_card(model_dir)
            else:
                card = train(tr / "scene.tif", tr / "labels.tif", tr / "classes.yaml", model_dir, arch=spec["arch"],
                             date_dropout=spec.get("date_dropout"), epochs=args.epochs, time_limit=args.minutes,
                             seed=0, **train_options(args)).card
            rec: dict[str, Any] = {"train_seconds": card.training.get("seconds"),
                                   "epochs": card.training.get("epochs_run"),
                                   "best_epoch": card.training.get("best_epoch"), "val_miou": card.metrics.get("miou"),
                                   "chips": card.training.get("chips"), "maps": {}}
            print(f"{name}: trained {rec['epochs']} epochs ({rec['chips']} chips) in "
                  f"{rec['train_seconds']:.0f} s, validation mIoU {rec['val_miou']:.3f}", flush=True)
            for seed in args.seeds:
                for kind in ("monsoon", "clear"):
                    region = regions[(kind, seed)]
                    mask = work / f"mask-{slug}-{kind}-{seed}.tif"
                    try:
                        p = predict_scene(model_dir, region / "scene.tif", mask)
                    except EmptySceneError:  # no pixel holds every date: the model maps nothing
                        m = {"mapped": 0.0, "mapped_of_land": 0.0, "miou": float("nan"), "ha_error_max": 1.0,
                             "ha_error_mean": 1.0, "tiles_per_s": float("nan")}
                    else:
                        m = score_map(region, mask, classes)
                        m["tiles_per_s"] = round(p.tiles / p.seconds, 3)
                    m["cloud_per_date"] = cloud_per_date(region)
                    rec["maps"][f"{kind}-{seed}"] = m
                    print(f"  {kind:7s} seed {seed}: mapped {m['mapped']:.1%} of land clear once "
                          f"({m['mapped_of_land']:.1%} of all land), mIoU {m['miou']:.3f}, ha error max "
                          f"{m['ha_error_max']:.1%} mean {m['ha_error_mean']:.1%}, {m['tiles_per_s']:.2f} tiles/s",
                          flush=True)
            out["models"][name] = rec
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
