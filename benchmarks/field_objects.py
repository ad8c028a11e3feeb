"""Fields, not pixels: object-level scores of geoseg's fields on synthetic regions.

For each region seed, the region (``geoseg.synth.synthesize``, the demo's size by default) is
written, and the fields ``geoseg polygonize`` traces are scored against the region's true field
polygons (``geoseg.field_scores``: matched at IoU > 0.5, object precision/recall/F1, over- and
under-segmentation, boundary F1 within 1 px, extent IoU), for

``labels``
    the region's own label raster: a perfect pixel map. What the fields of today's polygonize
    can reach, whatever the model.
``model``
    (with ``--model DIR``) the mask ``geoseg predict`` makes with that checkpoint, its fields as
    ``polygonize`` makes them with the confidence raster: separated on its boundary band when
    the model has one (``train --fields``);
``model, no separation``
    the same mask's 4-connected regions of one class (``polygonize --no-separate``), for a
    model with a boundary band.

A model trained with field polygons on region seed 1 (the demo's training region) is scored
out of sample on seeds 0 (the demo's map) and 2::

    geoseg synth /tmp/r1 --seed 1 --clouds 0
    geoseg train --image /tmp/r1/scene.tif --labels /tmp/r1/labels.tif --classes /tmp/r1/classes.yaml \
        --fields /tmp/r1/fields.gpkg --out /tmp/fields-model --time-limit 10

Run::

    .venv/bin/python benchmarks/field_objects.py [--seeds 0 1] [--size 2048] [--model DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd

from geoseg.classes import load_classes
from geoseg.demo import score_mask
from geoseg.ml.model import read_card
from geoseg.ops.areas import district_areas_fields, district_areas_raster
from geoseg.ops.field_scores import field_scores
from geoseg.ops.parcels import parcel_crops
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--clouds", type=float, default=0.0, help="cloud fraction of the regions")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-field-objects"))
    args = ap.parse_args(argv)
    print("| region seed | mask | true fields | fields | matched | precision | recall | F1 | same-crop F1 | over-seg "
          "| under-seg | boundary F1 | extent IoU | pixel mIoU | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    parcel_rows: list[str] = []
    for seed in args.seeds:
        d = args.work / f"region-{seed}"
        region = synthesize(d, height=args.size, width=args.size, seed=seed, cloud_fraction=args.clouds)
        masks: dict[str, tuple[Path, Path | None]] = {"labels": (region.labels, None)}
        if args.model is not None:
            out, conf = d / "mask.tif", d / "confidence.tif"
            out.unlink(missing_ok=True)
            conf.unlink(missing_ok=True)
            predict_scene(args.model, region.scene, out, confidence=conf)
            masks["model"] = (out, conf)
            if read_card(args.model).boundary:
                masks["model, no separation"] = (out, None)
        for name, (mask, confidence) in masks.items():
            t = time.perf_counter()
            s = field_scores(mask, region.fields, class_field="crop", confidence=confidence)
            sec = time.perf_counter() - t
            names = load_classes(region.classes).names
            miou = score_mask(mask, region.labels, names).miou
            print(f"| {seed} | {name} | {s.true_fields:,} | {s.predicted_fields:,} | {s.matched:,} | "
                  f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.class_f1:.3f} | {s.over_segmentation:.3f} | "
                  f"{s.under_segmentation:.3f} | {s.boundary_f1:.3f} | {s.extent_iou:.3f} | {miou:.3f} | "
                  f"{sec:.1f} |", flush=True)
        if args.model is not None:
            parcel_rows.append(parcel_check(seed, region, masks["model"][0], masks["model"][1]))
    if parcel_rows:
        print("\n| region seed | parcels | of >= 0.5 ha | crop right (>= 0.5 ha) | crop right (all) | "
              "largest district difference vs the raster path (crop ha) | largest district-crop difference "
              "(pairs over 100 ha) | total crop ha, parcels / raster |")
        print("|---|---|---|---|---|---|---|---|")
        for row in parcel_rows:
            print(row)
    return 0


def parcel_check(seed: int, region: Any, mask: Path, confidence: Path | None) -> str:
    """Parcel mode with the true fields as parcels: how often the crop is right, and the hectares
    per district and crop against the raster path's (crop classes; both exact-coverage counts)."""
    parcels = parcel_crops(mask, region.fields, confidence=confidence, id_field="field_id")
    truth = gpd.read_file(region.fields)
    truth.index = truth["field_id"].astype(str)
    true_crop = truth.loc[parcels["id"], "crop"].to_numpy()
    right = parcels["crop:name"].to_numpy() == true_crop
    big = parcels["area_ha"].to_numpy() >= 0.5
    table = load_classes(region.classes)
    crops = [c.name for c in table if c.crop]
    ras = district_areas_raster(mask, region.districts, "district", classes=table)
    pol = district_areas_fields(parcels, region.districts, "district", classes=table)
    key = ["district", "crop"]
    a = ras[ras.crop.isin(crops)].set_index(key)["area_ha"]
    b = pol[pol.crop.isin(crops)].set_index(key)["area_ha"].reindex(a.index).fillna(0.0)
    major = a > 100  # district-crop pairs of more than 100 ha
    worst = float((abs(b - a) / a)[major].max()) if major.any() else float("nan")
    da, db = a.groupby(level=0).sum(), b.groupby(level=0).sum()
    worst_d = float((abs(db - da) / da)[da > 100].max())
    return (f"| {seed} | {len(parcels):,} | {int(big.sum()):,} | {right[big].mean():.3f} | {right.mean():.3f} | "
            f"{worst_d:.2%} | {worst:.2%} | {b.sum():,.1f} / {a.sum():,.1f} ({b.sum() / a.sum() - 1:+.2%}) |")


if __name__ == "__main__":
    sys.exit(main())
