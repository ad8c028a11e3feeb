"""Training from 2,000 GPS points against training from the full label raster, and a random forest.

Protocol
--------
* Two synthetic regions as the demo makes them (:mod:`geoseg.demo`): a **training region**
  (seed 1) and the **region the demo maps** (seed 0), ``--size`` x ``--size`` px at 10 m,
  cloud fraction 0.02.
* **Points**: ``--points`` (2,000) points drawn uniformly at random (continuous
  coordinates) over the training region, keeping those whose pixel holds a label in its
  ``labels.tif`` (not nodata: collar or cloud), each given the class **name** of that pixel,
  and written to a GeoPackage in **EPSG:4326** (so training reprojects them to the scene's
  EPSG:32643).
* **Raster model**: :func:`geoseg.ml.train.train` on the training region's ``labels.tif``.
  **Point model**: the same call on the point file (``label_field="crop"``,
  ``point_radius=--radius``). Same seed, tile, epochs and time limit for both.
* **Random forest**: scikit-learn ``RandomForestClassifier(n_estimators=500,
  random_state=seed, n_jobs=1)`` on the band values of the pixels under the same points
  (all of them: a forest needs no validation blocks).
* All three are scored on the mapped region's full ``labels.tif`` (every labelled pixel;
  the image holds data wherever ``labels.tif`` does) with :mod:`geoseg.core.metrics`:
  the two networks through :func:`geoseg.ml.evaluate.evaluate` (tiled prediction), the
  forest per pixel.

Run (scikit-learn is needed for this script only; it is not a geoseg dependency)::

    .venv/bin/pip install scikit-learn
    .venv/bin/python benchmarks/point_labels.py [--size 2048] [--minutes 4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.classes import NODATA, load_classes
from geoseg.core.metrics import ConfusionAccumulator, scores
from geoseg.demo import CLOUD_FRACTION, MAP_SEED, TRAIN_SEED
from geoseg.ml.evaluate import evaluate
from geoseg.ml.train import train
from geoseg.synth import synthesize


def draw_points(labels_tif: Path, n: int, rng: np.random.Generator, names: list[str], out: Path) -> dict[str, int]:
    """``n`` random points on labelled pixels of ``labels_tif``, class names in ``crop``, written in EPSG:4326."""
    import geopandas as gpd
    import shapely

    with rasterio.open(labels_tif) as src:
        lab, tf, crs = src.read(1), src.transform, src.crs
    h, w = lab.shape
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    cls: list[np.ndarray] = []
    got = 0
    while got < n:
        fc, fr = rng.uniform(0, w, 4 * n), rng.uniform(0, h, 4 * n)
        v = lab[fr.astype(int), fc.astype(int)]
        keep = v != NODATA
        x, y = tf @ (fc[keep], fr[keep])
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
        cls.append(v[keep])
        got += int(keep.sum())
    x, y, c = (np.concatenate(a)[:n] for a in (xs, ys, cls))
    gdf = gpd.GeoDataFrame({"crop": [names[i] for i in c]}, geometry=shapely.points(x, y), crs=crs)
    gdf.to_crs("EPSG:4326").to_file(out, layer="points")
    return {names[i]: int((c == i).sum()) for i in range(len(names))}


def rf_scores(model, scene: Path, labels: Path, names: list[str], rows: int = 128):  # type: ignore[no-untyped-def]
    """Per-pixel forest prediction on every labelled pixel of ``labels``, scored block by block."""
    acc = ConfusionAccumulator(len(names))
    with rasterio.open(scene) as s, rasterio.open(labels) as lab:
        for r0 in range(0, s.height, rows):
            win = Window(0, r0, s.width, min(rows, s.height - r0))
            t = lab.read(1, window=win)
            m = t != NODATA
            if not m.any():
                continue
            x = s.read(window=win)[:, m].T.astype(np.float32)
            pred = np.full(t.shape, NODATA, np.uint8)
            pred[m] = model.predict(x).astype(np.uint8)
            acc.update(pred, t, valid=m)
    return scores(acc.matrix, names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="region side in pixels (the demo's: 2048)")
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--radius", type=float, default=0.0, help="point radius in metres (0: the pixel under it)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=4.0,
                    help="time limit of each training (the demo's: 4); 0: none, train --epochs epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the regions and models (default: temporary)")
    ap.add_argument("--skip-raster", action="store_true", help="do not train the raster model")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:
        print("this benchmark needs scikit-learn: .venv/bin/pip install scikit-learn", file=sys.stderr)
        return 2

    work = args.work or Path(tempfile.mkdtemp(prefix="geoseg-points-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {"size": args.size, "points": args.points, "radius_m": args.radius, "tile": args.tile,
                              "epochs": args.epochs, "minutes": args.minutes, "seed": args.seed}
    t = time.perf_counter()
    tr = synthesize(work / "train", height=args.size, width=args.size, seed=TRAIN_SEED, cloud_fraction=CLOUD_FRACTION)
    mp = synthesize(work / "map", height=args.size, width=args.size, seed=MAP_SEED, cloud_fraction=CLOUD_FRACTION)
    print(f"synthesised two {args.size} px regions in {time.perf_counter() - t:.0f} s into {work}", flush=True)
    names = load_classes(tr.classes).names
    pts = work / "points.gpkg"
    out["point_classes"] = draw_points(Path(tr.labels), args.points, np.random.default_rng(args.seed), names, pts)
    print(f"{args.points} points per class: {out['point_classes']}", flush=True)

    def epoch_line(tag: str):  # type: ignore[no-untyped-def]
        return lambda e, n, m: print(f"  {tag} epoch {e}/{n} loss {m['loss']:.3f} val mIoU {m['val_miou']:.3f} "
                                     f"{m['seconds']:.0f} s", flush=True)

    common = dict(tile=args.tile, epochs=args.epochs, time_limit=args.minutes or None, seed=args.seed, device="cpu",
                  patience=args.epochs)  # no early stop: both train the same epochs (or the same minutes)
    results: dict[str, dict[str, object]] = {}
    runs = [("points", pts, {"label_field": "crop", "point_radius": args.radius})]
    if not args.skip_raster:
        runs.insert(0, ("raster", Path(tr.labels), {}))
    for tag, labels, extra in runs:
        res = train(tr.scene, labels, tr.classes, work / f"model-{tag}", progress=epoch_line(tag), **common, **extra)
        if res.points:
            print("  " + res.points[0].line())
        ev = evaluate(work / f"model-{tag}", mp.scene, mp.labels, device="cpu")
        results[tag] = {"miou": ev.scores.miou, "per_class_iou": ev.scores.to_dict()["per_class_iou"],
                        "pixel_accuracy": ev.scores.pixel_accuracy, "train_seconds": res.seconds,
                        "epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "stop": res.stop_reason,
                        "chips": res.card.training["chips"], "val_miou": res.card.metrics["miou"],
                        "scored_pixels": ev.scores.pixels}
        print(f"{tag}: trained {res.seconds:.0f} s ({res.epochs_run} epochs, {res.stop_reason}), "
              f"mIoU on the mapped region {ev.scores.miou:.3f}", flush=True)

    import geopandas as gpd

    with rasterio.open(tr.scene) as s:
        a = s.read()
        tf, crs = s.transform, s.crs
    g = gpd.read_file(pts).to_crs(crs)
    cols, rows = ~tf @ (g.geometry.x.to_numpy(), g.geometry.y.to_numpy())
    r, c = np.floor(rows).astype(int), np.floor(cols).astype(int)
    x = a[:, r, c].T.astype(np.float32)
    y = np.array([names.index(v) for v in g["crop"]])
    t = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=500, random_state=args.seed, n_jobs=1).fit(x, y)
    fit_s = time.perf_counter() - t
    sc = rf_scores(rf, Path(mp.scene), Path(mp.labels), names)
    results["random_forest"] = {"miou": sc.miou, "per_class_iou": sc.to_dict()["per_class_iou"],
                                "pixel_accuracy": sc.pixel_accuracy, "train_seconds": fit_s,
                                "predict_seconds": time.perf_counter() - t - fit_s, "scored_pixels": sc.pixels}
    print(f"random forest: fitted {fit_s:.0f} s, mIoU on the mapped region {sc.miou:.3f}", flush=True)
    out["results"] = results
    if "raster" in results:
        gap = float(results["raster"]["miou"]) - float(results["points"]["miou"])  # type: ignore[arg-type]
        out["gap_raster_minus_points"] = gap
        print(f"raster - points mIoU: {gap:+.3f} (target: within 0.10)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
