"""How much can any model learn from what the clouds leave? Per-pixel and per-field ceilings of the cloudy benchmark.

:mod:`cloudy_season` scores segmentation models on monsoon regions. This script asks what the
clouds leave to learn from, on the same regions (``--work`` shared with it, or made here the
same way):

``pixel``
    A per-pixel classifier: a small MLP (3 hidden layers of ``--width``) on each pixel's
    normalised bands of every date, missing dates filled with 0, plus one validity flag per
    date; trained on the monsoon training region's pixels with their real gaps
    (``--epochs`` passes, Adam). No spatial context at all. Scored over every land pixel that
    saw at least one date, overall and by the number of dates the pixel saw.
``field oracle``
    The same classifier's log-probabilities summed over the observed pixels of each true
    field (``fields.gpkg``) and the winning class given to every pixel of the field: a model
    that segments every field perfectly and pools all its evidence. No model that reads the
    image can beat its use of the evidence by much; it bounds what spatial context can add.
    Its map is also scored for district hectares (:func:`cloudy_season.score_map`: the
    largest and mean error per district and crop of >= 100 ha), which bounds how close
    counting a map's pixels can come to the truth.

Also reported: the mean number of dates a land pixel saw, and the mean number a field saw
(a date counts for a field when at least 10 % of its pixels saw it).

Run::

    .venv/bin/python benchmarks/cloudy_ceiling.py [--work DIR] [--clouds 0.3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from cloudy_season import regions_at, score_map  # this folder: the same regions, made the same way

from geoseg.classes import NODATA, load_classes
from geoseg.core.metrics import ConfusionAccumulator, scores
from geoseg.demo import MAP_SEED, TRAIN_SEED

BANDS = 4  # per date in the synthetic scene.tif


def load_region(region: Path) -> dict[str, Any]:
    """Bands (T, 4, h, w) float32, labels, validity (T, h, w) and the field id of every pixel."""
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(region / "scene.tif") as s:
        x = s.read().astype(np.float32)
    with rasterio.open(region / "labels.tif") as s:
        y = s.read(1)
        transform = s.transform
    t = x.shape[0] // BANDS
    x = x.reshape(t, BANDS, *x.shape[1:])
    fields = gpd.read_file(region / "fields.gpkg")
    ids = rasterize(((g, i + 1) for i, g in enumerate(fields.geometry)), out_shape=y.shape, transform=transform,
                    fill=0, dtype="int32")
    return {"x": x, "y": y, "valid": (x > 0).all(axis=1), "fields": ids}


def features(x: np.ndarray, valid: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(pixels, T * 4 + T): normalised bands (0 where missing), then the validity flags."""
    t = x.shape[0]
    z = (x - mean[None, :, None, None]) / std[None, :, None, None] * valid[:, None]
    f = np.concatenate([z.reshape(t * BANDS, *x.shape[2:]), valid.astype(np.float32)], axis=0)
    return np.ascontiguousarray(f.reshape(f.shape[0], -1).T)


def miou(pred: np.ndarray, truth: np.ndarray, classes: Any) -> float:
    acc = ConfusionAccumulator(len(classes))
    acc.update(pred, truth)
    return round(float(scores(acc.matrix, classes.names).miou), 4)


def write_mask(array: np.ndarray, like: Path, out: Path) -> Path:
    """``array`` as a one-band uint8 GeoTIFF on the grid of ``like`` (nodata 255)."""
    with rasterio.open(like) as s:
        profile = {"driver": "GTiff", "height": s.height, "width": s.width, "count": 1, "dtype": "uint8",
                   "crs": s.crs, "transform": s.transform, "nodata": NODATA, "compress": "deflate"}
    with rasterio.open(out, "w", **profile) as d:
        d.write(array.astype(np.uint8), 1)
    return out


def score_region(net: torch.nn.Module, r: dict[str, Any], mean: np.ndarray, std: np.ndarray,
                 classes: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Scores of the pixel classifier and the field oracle, and the oracle's map (nodata
    where the truth is nodata or the pixel saw no date)."""
    y, valid, ids = r["y"], r["valid"], r["fields"]
    with torch.no_grad():
        logp = torch.cat([torch.log_softmax(net(torch.from_numpy(c)), 1)
                          for c in np.array_split(features(r["x"], valid, mean, std), 64)]).numpy()
    pred = logp.argmax(1).reshape(y.shape)
    seen = valid.sum(axis=0)
    ok = (y != NODATA) & (seen > 0)
    out: dict[str, Any] = {"pixel": miou(pred[ok], y[ok], classes), "pixel_by_dates_seen": {}}
    for k in range(1, valid.shape[0] + 1):
        sel = ok & (seen == k)
        if sel.sum() >= 1000:
            out["pixel_by_dates_seen"][k] = {"share": round(float(sel.sum() / ok.sum()), 4),
                                             "miou": miou(pred[sel], y[sel], classes)}
    flat_ids = ids.ravel()
    n = int(flat_ids.max()) + 1
    observed = (seen.ravel() > 0) & (flat_ids > 0)
    pooled = np.stack([np.bincount(flat_ids[observed], weights=logp[observed, k], minlength=n)
                       for k in range(len(classes))], axis=1)
    oracle = np.where(flat_ids > 0, pooled.argmax(1)[flat_ids], pred.ravel()).reshape(y.shape)
    out["field_oracle"] = miou(oracle[ok], y[ok], classes)
    in_field = ids > 0
    size = np.bincount(flat_ids, minlength=n)
    field_seen = np.zeros(y.shape, np.int32)
    for v in valid:
        share = np.bincount(flat_ids, weights=v.ravel(), minlength=n) / np.maximum(size, 1)
        field_seen += (share >= 0.1)[ids]
    out["dates_seen_per_pixel"] = round(float(seen[in_field].mean()), 2)
    out["dates_seen_per_field"] = round(float(field_seen[in_field].mean()), 2)
    return out, np.where(ok, oracle, NODATA)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--train-size", type=int, default=1536)
    ap.add_argument("--dates", type=int, default=6)
    ap.add_argument("--clouds", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[MAP_SEED, 2])
    ap.add_argument("--epochs", type=int, default=4, help="passes over the training pixels")
    ap.add_argument("--width", type=int, default=256, help="hidden layer width of the MLP")
    ap.add_argument("--work", type=Path, default=None, help="regions here (cloudy_season.py's --work works too)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    with regions_at(args) as (_, regions):
        classes = load_classes(regions[("monsoon", TRAIN_SEED)] / "classes.yaml")
        tr = load_region(regions[("monsoon", TRAIN_SEED)])
        x, valid = tr["x"], tr["valid"]
        mean = np.array([x[:, b][valid].mean() for b in range(BANDS)], np.float32)
        std = np.array([x[:, b][valid].std() for b in range(BANDS)], np.float32)
        f, y = features(x, valid, mean, std), tr["y"].ravel()
        keep = (y != NODATA) & valid.reshape(valid.shape[0], -1).any(axis=0)
        ft, yt = torch.from_numpy(f[keep]), torch.from_numpy(y[keep].astype(np.int64))
        w = args.width
        net = torch.nn.Sequential(torch.nn.Linear(f.shape[1], w), torch.nn.ReLU(), torch.nn.Linear(w, w),
                                  torch.nn.ReLU(), torch.nn.Linear(w, w), torch.nn.ReLU(),
                                  torch.nn.Linear(w, len(classes)))
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            perm = torch.randperm(len(yt))
            for i in range(0, len(perm), 4096):
                idx = perm[i: i + 4096]
                loss = torch.nn.functional.cross_entropy(net(ft[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        out: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "train_pixels": len(yt),
                               "train_seconds": round(time.perf_counter() - t0, 1), "regions": {}}
        print(f"pixel MLP: {len(yt):,} training pixels, {args.epochs} passes in {out['train_seconds']:.0f} s", flush=True)
        net.eval()
        for seed in args.seeds:
            for kind in ("monsoon", "clear"):
                region = regions[(kind, seed)]
                m, oracle = score_region(net, load_region(region), mean, std, classes)
                ha = score_map(region, write_mask(oracle, region / "labels.tif",
                                                  region.parent / f"oracle-{kind}-{seed}.tif"), classes)
                m["field_oracle_ha_error_max"] = ha["ha_error_max"]
                m["field_oracle_ha_error_mean"] = ha["ha_error_mean"]
                m["field_oracle_ha_errors"] = ha["ha_errors"]
                out["regions"][f"{kind}-{seed}"] = m
                by = ", ".join(f"{k}: {v['miou']:.3f}" for k, v in m["pixel_by_dates_seen"].items())
                print(f"  {kind:7s} seed {seed}: pixel mIoU {m['pixel']:.3f} (by dates seen {by}); field oracle "
                      f"{m['field_oracle']:.3f} (ha error max {m['field_oracle_ha_error_max']:.1%} mean "
                      f"{m['field_oracle_ha_error_mean']:.1%}); dates seen per pixel {m['dates_seen_per_pixel']}, per field "
                      f"{m['dates_seen_per_field']}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
