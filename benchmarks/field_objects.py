"""Fields, not pixels: object-level scores of geoseg's fields on synthetic regions.

For each region seed, the region (``geoseg.synth.synthesize``, the demo's size by default) is
written, and the fields ``geoseg polygonize`` traces are scored against the region's true field
polygons (``geoseg.field_scores``: matched at IoU > 0.5, object precision/recall/F1, over- and
under-segmentation, boundary F1 within 1 px, extent IoU), for

``labels``
    the region's own label raster: a perfect pixel map. What the fields of today's polygonize
    can reach, whatever the model.
``model``
    (with ``--model DIR``) the mask ``geoseg predict`` makes with that checkpoint.

Run::

    .venv/bin/python benchmarks/field_objects.py [--seeds 0 1] [--size 2048] [--model DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from geoseg.ops.field_scores import field_scores
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-field-objects"))
    args = ap.parse_args(argv)
    print("| region seed | mask | true fields | fields | matched | precision | recall | F1 | over-seg | under-seg "
          "| boundary F1 | extent IoU | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        d = args.work / f"region-{seed}"
        region = synthesize(d, height=args.size, width=args.size, seed=seed, cloud_fraction=0.0)
        masks = {"labels": region.labels}
        if args.model is not None:
            out = d / "mask.tif"
            out.unlink(missing_ok=True)
            predict_scene(args.model, region.scene, out)
            masks["model"] = out
        for name, mask in masks.items():
            t = time.perf_counter()
            s = field_scores(mask, region.fields, class_field="crop")
            print(f"| {seed} | {name} | {s.true_fields:,} | {s.predicted_fields:,} | {s.matched:,} | "
                  f"{s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.over_segmentation:.3f} | "
                  f"{s.under_segmentation:.3f} | {s.boundary_f1:.3f} | {s.extent_iou:.3f} | "
                  f"{time.perf_counter() - t:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
