"""Real labelled scenes: geoseg's defaults against per-pixel random forest and gradient boosting.

Every labelled real scene at hand is cut into two spatially separate halves (west: train,
east: test; each half its own GeoTIFF, so no model sees a test pixel while training) and
three models are trained on the western half, for each seed:

``geoseg``
    :func:`geoseg.ml.train.train` with its defaults, except the tile: the largest multiple
    of 16 up to 64 px that fits the half (a 256 px chip would be mostly padding on these
    scenes). One block in five of the western half is held out for early stopping and for
    choosing the kind (each pixel's values, or those and its neighbourhood's) and the weight
    of the per-pixel forest fused with the network, as always.
``geoseg+d4``
    The same model, each test tile predicted with test-time augmentation (logits averaged
    over the 8 flips and rotations; :mod:`geoseg.ml.tta`).
``network``, ``network+d4``
    The same model without its forest (``forest=False``): the network alone.
``rf``
    scikit-learn ``RandomForestClassifier(n_estimators=100)``: the per-pixel tool crop
    mappers use today (Earth Engine's ``smileRandomForest`` defaults to 100 trees), on every
    labelled western pixel (at most 200,000, drawn with the seed), each pixel's band values.
``hgb``
    scikit-learn ``HistGradientBoostingClassifier`` (its defaults, early stopping on a 10 %
    hold-out) on the same pixels.

With ``--pretrain``, every geoseg model above starts from the encoder of a network geoseg
trained on a *different* real scene (:data:`PRETRAIN_SOURCE`: another sensor, another place,
other classes; both halves of it, seed 0, the network alone), its first convolution matched
to the target's bands by name (``train(pretrained=...)``, :mod:`geoseg.ml.pretrained`). No
published weights can be downloaded where this runs; the table then shows the pretrained path
itself on and off (the same seeds without ``--pretrain``).

All three are scored with :mod:`geoseg.core.metrics` on the same eastern pixels (labelled,
every band holding data): per-class IoU and **mIoU over the classes the test half holds** (the
same classes for every model: the usual "present in the target or the prediction" would
reward a model for never predicting a class that only its rivals confuse others with).

Scenes
------
``nc_landsat``
    ``tests/data/nc_landsat``: Landsat 7, 6 bands, 28.5 m, 489 x 443 px; 7 land-cover strata
    (see ``benchmarks/nc_landsat_rf.py`` for the CRS note).
``slovenia``
    ``eolearn_slovenia`` (``--shared``, default ``../shared/data``): Sentinel-2 L1C, 13 bands,
    10 m, 101 x 100 px; GLC30 land cover (forest, grassland, shrubland, artificial, 11 px of
    cultivated land).
``worldcereal-<patch>`` (only with ``--worldcereal DIR``)
    64 x 64 px Sentinel-2 L2A patches of Flanders with per-pixel crop types of the Flemish
    parcel register (WorldCereal's former test data, see ``benchmarks/README.md``), the clear
    dates stacked (``image_<patch>_clear.tif``, ``label_<patch>_CT.tif``; crop code 0 is
    unlabelled). Not in this repository: the labels' licence is not confirmed. Made from the
    netCDF files of ``WorldCereal/worldcereal-classification`` @ b1f44be4,
    ``tests/worldcerealtests/testresources/worldcerealtraining/<patch>/`` by
    ``--prepare-worldcereal SRC DST`` (:func:`prepare_worldcereal`).

Run (scikit-learn is needed for this script only)::

    .venv/bin/pip install scikit-learn
    .venv/bin/python benchmarks/real_scenes.py [--seeds 0 1 2] [--scenes ...] [--worldcereal DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from nc_landsat_rf import write_halves  # this folder
from rasterio.windows import Window

from geoseg.core.metrics import confusion_matrix, scores
from geoseg.ml.evaluate import evaluate
from geoseg.ml.train import train

ROOT = Path(__file__).resolve().parents[1]
MAX_TRAIN_PIXELS = 200_000
MODELS = ["geoseg", "geoseg+d4", "network", "network+d4", "rf", "hgb"]
PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4"]


def split_scene(image: Path, labels: Path, lookup: dict[int, int], names: list[str], work: Path,
                band_names: list[str] | None = None) -> dict[str, Path]:
    """West/east halves of ``image`` and of ``labels`` (label values mapped through ``lookup`` to
    class ids, every other value 255) and a class file; returns their paths."""
    work.mkdir(parents=True, exist_ok=True)
    with rasterio.open(image) as s, rasterio.open(labels) as lab:
        if s.transform != lab.transform or s.shape != lab.shape:
            raise SystemExit(f"{labels} is not on the grid of {image}")
        img, prof, desc = s.read(), s.profile, s.descriptions
        raw = lab.read(1)
    ids = np.full(raw.shape, 255, np.uint8)
    for value, cid in lookup.items():
        ids[raw == value] = cid
    h, w = raw.shape
    cut = w // 2
    paths: dict[str, Path] = {}
    for name, c0, c1 in (("west", 0, cut), ("east", cut, w)):
        tf = rasterio.windows.transform(Window(c0, 0, c1 - c0, h), prof["transform"])
        p = {**prof, "driver": "GTiff", "width": c1 - c0, "height": h, "transform": tf, "tiled": False}
        p.pop("blockxsize", None)
        p.pop("blockysize", None)
        with rasterio.open(work / f"{name}.tif", "w", **p) as d:
            d.write(img[:, :, c0:c1])
            for i, n in enumerate(band_names or desc, start=1):
                d.set_band_description(i, n or f"band {i}")
        lp = {**p, "count": 1, "dtype": "uint8", "nodata": 255}
        with rasterio.open(work / f"{name}_labels.tif", "w", **lp) as d:
            d.write(ids[:, c0:c1], 1)
        paths[name], paths[f"{name}_labels"] = work / f"{name}.tif", work / f"{name}_labels.tif"
    (work / "classes.yaml").write_text("classes:\n" + "".join(
        f"  - {{id: {i}, name: '{n}', color: '{PALETTE[i % len(PALETTE)]}'}}\n" for i, n in enumerate(names)))
    paths["classes"] = work / "classes.yaml"
    return paths


def nc_landsat(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    paths, _ = write_halves(ROOT / "tests" / "data" / "nc_landsat", work)
    return paths


def slovenia(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    d = args.shared / "eolearn_slovenia"
    glc = {1: "cultivated", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial"}
    return split_scene(d / "TestEOPatch_S2L1C_composite_13band.tif", d / "TestEOPatch_LULC_GLC30.tif",
                       {v: i for i, v in enumerate(glc)}, list(glc.values()), work)


def worldcereal(patch: str) -> Callable[[Path, argparse.Namespace], dict[str, Path]]:
    def make(work: Path, args: argparse.Namespace) -> dict[str, Path]:
        image, labels = args.worldcereal / f"image_{patch}_clear.tif", args.worldcereal / f"label_{patch}_CT.tif"
        with rasterio.open(labels) as s:
            codes = [int(c) for c in np.unique(s.read(1)) if c != 0]
        return split_scene(image, labels, {c: i for i, c in enumerate(codes)}, [f"ct_{c}" for c in codes], work)
    return make


WC_10M = ["B02", "B03", "B04", "B08"]
WC_20M = ["B05", "B06", "B07", "B8A", "B11", "B12"]


def _netcdf(path: Path, var: str) -> tuple[np.ndarray, dict[str, str]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # the grid is in the attributes
        with rasterio.open(f"netcdf:{path}:{var}") as s:
            return s.read(), s.tags()


def prepare_worldcereal(src: Path, dst: Path, patches: list[str], clear_share: float = 0.99) -> None:
    """One GeoTIFF of the clear dates (every band of every date whose scene classification is
    vegetation, bare soil or water on ``clear_share`` of the patch; 20 m bands repeated to 10 m;
    reflectance x 10,000 as uint16, 0 nodata) and one of the crop codes, per patch."""
    import datetime as dt

    dst.mkdir(parents=True, exist_ok=True)
    for patch in patches:
        f10, f20, fout = (next(src.glob(f"{p}_{patch}_*.nc")) for p in ("S2_L2A_10m", "S2_L2A_20m",
                                                                         "OUTPUT_POLY-110_10m"))
        bands, tags = [], {}
        for b in WC_10M:
            a, tags = _netcdf(f10, b)
            bands.append(a)
        for b in WC_20M:
            bands.append(np.kron(_netcdf(f20, b)[0], np.ones((1, 2, 2), a.dtype)))
        x = np.stack(bands, axis=1)  # (dates, 10, 64, 64), digital numbers (reflectance x 10,000)
        scl = np.kron(_netcdf(f20, "SCL")[0], np.ones((1, 2, 2), np.uint8))
        clear = np.isin(scl, [4, 5, 6]).mean(axis=(1, 2)) >= clear_share
        since = dt.datetime.strptime(tags["timestamp#units"].split("since ")[1], "%Y-%m-%d %H:%M:%S")
        days = [since + dt.timedelta(seconds=int(v)) for v in tags["NETCDF_DIM_timestamp_VALUES"].strip("{}").split(",")]
        meta = _netcdf(f10, "B02")[1]
        bounds = [float(v) for v in meta["NC_GLOBAL#bounds"].strip("()").split(",")]
        h, w = x.shape[-2:]
        profile = {"driver": "GTiff", "width": w, "height": h, "crs": f"EPSG:{meta['NC_GLOBAL#epsg']}",
                   "transform": rasterio.transform.from_bounds(*bounds, w, h), "nodata": 0, "dtype": "uint16"}
        kept = x[clear]
        with rasterio.open(dst / f"image_{patch}_clear.tif", "w", count=kept.shape[0] * kept.shape[1],
                           **profile) as d:
            d.write(kept.reshape(-1, h, w).astype(np.uint16))
            names = [f"{days[t].date()}_{b}" for t in np.flatnonzero(clear) for b in WC_10M + WC_20M]
            for i, n in enumerate(names, start=1):
                d.set_band_description(i, n)
        with rasterio.open(dst / f"label_{patch}_CT.tif", "w", count=1, **profile) as d:
            d.write(_netcdf(fout, "CT")[0][:1].astype(np.uint16))
        print(f"{patch}: {int(clear.sum())} clear dates of {len(days)}")


def pixels(image: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Band values (n, bands) and class ids (n,) of the labelled pixels where every band holds data."""
    with rasterio.open(image) as s, rasterio.open(labels) as lab:
        a, y, nod = s.read(), lab.read(1), s.nodata
    ok = np.isfinite(a).all(axis=0) & (y != 255)
    if nod is not None and not np.isnan(nod):
        ok &= (a != nod).all(axis=0)
    return a[:, ok].T.astype(np.float32), y[ok].astype(np.int64)


def tile_for(image: Path) -> int:
    with rasterio.open(image) as s:
        side = min(s.height, s.width)
    return max(16, min(64, side // 16 * 16))


def pretrain_source(name: str, paths: dict[str, Path], work: Path) -> Path:
    """A network trained on both halves of scene ``name`` (seed 0, no forest), for --pretrain."""
    out = work / f"source-{name}"
    if not (out / "model.json").is_file():
        t0 = time.perf_counter()
        train([paths["west"], paths["east"]], [paths["west_labels"], paths["east_labels"]], paths["classes"], out,
              tile=tile_for(paths["west"]), seed=0, forest=False)
        print(f"pretraining source {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def run_scene(name: str, paths: dict[str, Path], seeds: list[int], work: Path,
              train_kw: dict[str, Any] | None = None, baselines: bool = True) -> dict[str, Any]:
    import yaml
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    classes = [c["name"] for c in yaml.safe_load(paths["classes"].read_text())["classes"]]
    xw, yw = pixels(paths["west"], paths["west_labels"])
    xe, ye = pixels(paths["east"], paths["east_labels"])
    tile = tile_for(paths["west"])
    out: dict[str, Any] = {"classes": classes, "tile": tile, "train_pixels": int(yw.size), "test_pixels": int(ye.size),
                           "test_counts": np.bincount(ye, minlength=len(classes)).tolist(), "runs": {}}
    print(f"{name}: {yw.size:,} training pixels (west), {ye.size:,} test pixels (east), {len(classes)} classes, "
          f"{xw.shape[1]} bands, geoseg tile {tile}", flush=True)
    for seed in seeds:
        run: dict[str, Any] = {}
        t0 = time.perf_counter()
        res = train(paths["west"], paths["west_labels"], paths["classes"], work / f"model-{seed}",
                    **{"tile": tile, "seed": seed, **(train_kw or {})})
        ev = evaluate(work / f"model-{seed}", paths["east"], paths["east_labels"], device="cpu").scores
        if ev.pixels != ye.size:
            raise SystemExit(f"{name}: geoseg scored {ev.pixels} pixels, the per-pixel models {ye.size}")
        counts = out["test_counts"]
        run["geoseg"] = {**ev.to_dict(), "test_miou": test_miou(ev.to_dict(), classes, counts),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                         "forest": res.card.training.get("forest")}
        for key, kw in (("geoseg+d4", {"tta": "d4"}), ("network", {"forest": False}),
                        ("network+d4", {"tta": "d4", "forest": False})):
            ev = evaluate(work / f"model-{seed}", paths["east"], paths["east_labels"], device="cpu", **kw).scores
            run[key] = {**ev.to_dict(), "test_miou": test_miou(ev.to_dict(), classes, counts)}
        rng = np.random.default_rng(seed)
        sel = rng.permutation(yw.size)[:MAX_TRAIN_PIXELS]
        for key, model in () if not baselines else (("rf", RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)),
                           ("hgb", HistGradientBoostingClassifier(random_state=seed))):
            t0 = time.perf_counter()
            model.fit(xw[sel], yw[sel])
            s = scores(confusion_matrix(model.predict(xe), ye, len(classes)), classes)
            run[key] = {**s.to_dict(), "test_miou": test_miou(s.to_dict(), classes, counts), "seconds": round(time.perf_counter() - t0, 1)}
        out["runs"][seed] = run
        fr = run["geoseg"]["forest"] or {}
        print(f"  seed {seed}: mIoU " + "  ".join(f"{m} {run[m]['test_miou']:.3f}" for m in MODELS if m in run)
              + f"  (forest weight {fr.get('weight', 'none')}, best epoch {res.best_epoch}/{res.epochs_run})",
              flush=True)
    return out


def test_miou(s: dict[str, Any], classes: list[str], counts: list[int]) -> float:
    """Mean IoU over the classes with test pixels (their IoU is always defined)."""
    return float(np.mean([s["per_class_iou"][c] or 0.0 for c, n in zip(classes, counts) if n > 0]))


def summary(name: str, r: dict[str, Any]) -> None:
    """Per-class IoU and mIoU, mean over seeds (and each seed's mIoU), per model."""
    models = [m for m in MODELS if all(m in run for run in r["runs"].values())]
    runs = list(r["runs"].values())
    print(f"\n{name} (test px per class; IoU mean over {len(runs)} seeds)")
    print(f"{'class':<16} {'test px':>8} " + " ".join(f"{m:>13}" for m in models))
    for i, c in enumerate(r["classes"]):
        vals = []
        for m in models:
            v = [run[m]["per_class_iou"].get(c) for run in runs]
            v = [x for x in v if x is not None]
            vals.append(f"{np.mean(v):13.3f}" if v else f"{'n/a':>13}")
        print(f"{c:<16} {r['test_counts'][i]:>8,} " + " ".join(vals))
    print(f"{'mIoU':<16} {'':>8} " + " ".join(f"{np.mean([run[m]['test_miou'] for run in runs]):13.3f}"
                                                for m in models))
    for m in models:
        print(f"  {m}: " + " / ".join(f"{run[m]['test_miou']:.3f}" for run in runs))


SCENES: dict[str, Callable[[Path, argparse.Namespace], dict[str, Path]]] = {
    "nc_landsat": nc_landsat, "slovenia": slovenia}
WORLDCEREAL_PATCHES = ["00002806639B424A", "0000280849BAC91C"]
#: --pretrain: the scene whose network starts each target's encoder (the largest other scene,
#: of another sensor or place)
PRETRAIN_SOURCE = {"nc_landsat": "slovenia", "slovenia": "nc_landsat", "worldcereal-424A": "nc_landsat",
                   "worldcereal-C91C": "nc_landsat"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenes", nargs="+", default=None, help="default: every scene available")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--worldcereal", type=Path, default=None, help="folder of the WorldCereal patch GeoTIFFs")
    ap.add_argument("--train", default=None, metavar="JSON",
                    help='extra geoseg.ml.train.train options, e.g. \'{"chips_per_epoch": 400}\'')
    ap.add_argument("--no-baselines", action="store_true", help="geoseg only (no forest, no boosting)")
    ap.add_argument("--pretrain", action="store_true",
                    help="start geoseg's encoders from a network trained on another real scene (PRETRAIN_SOURCE)")
    ap.add_argument("--prepare-worldcereal", nargs=2, type=Path, metavar=("SRC", "DST"),
                    help="write the WorldCereal patch GeoTIFFs from the netCDF files in SRC to DST, then stop")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.prepare_worldcereal:
        prepare_worldcereal(*args.prepare_worldcereal, WORLDCEREAL_PATCHES)
        return 0
    train_kw = json.loads(args.train) if args.train else None
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("this benchmark needs scikit-learn: .venv/bin/pip install scikit-learn", file=sys.stderr)
        return 2
    scenes = dict(SCENES)
    if args.worldcereal:
        scenes.update({f"worldcereal-{p[-4:]}": worldcereal(p) for p in WORLDCEREAL_PATCHES})
    if not (args.shared / "eolearn_slovenia").is_dir():
        scenes.pop("slovenia")
        print(f"no {args.shared / 'eolearn_slovenia'}: the slovenia scene is left out", file=sys.stderr)
    chosen = args.scenes or list(scenes)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            work = Path(tmp) / name
            kw = dict(train_kw or {})
            if args.pretrain:
                source = PRETRAIN_SOURCE[name]
                kw["pretrained"] = pretrain_source(source, scenes[source](Path(tmp) / source, args), Path(tmp))
            results[name] = run_scene(name, scenes[name](work, args), args.seeds, work, kw,
                                      baselines=not args.no_baselines)
            if args.pretrain:
                results[name]["pretrained_from"] = PRETRAIN_SOURCE[name]
    for name, r in results.items():
        summary(name, r)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "scenes": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
