"""Do the growth profiles recover the crops' phenology? The demo run's season against the generator's.

The synthetic region's crops follow known seasonal trajectories (``geoseg.synth.spectra``). A
demo run (``make demo``) composites the region's Sentinel-2 season into period medians and maps
it; here each crop's NDVI profile is computed from the run's composite and mask
(``geoseg.ops.features.district_crop_timeseries``: the area-weighted mean over the pixels mapped
as that crop, all districts pooled by their observed hectares) and set beside the generator's
NDVI of a typical field of that crop (``geoseg.synth.spectra.crop_reflectance``) averaged over
each period's days. Printed per crop: both profiles, their peak periods and the largest
difference.

Run (after ``make demo``)::

    .venv/bin/python benchmarks/features_phenology.py [--run runs/demo/latest] [--districts demo/region/districts.gpkg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from geoseg.io.raster import read_periods
from geoseg.ops.features import district_crop_timeseries
from geoseg.synth.spectra import crop_reflectance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo/latest"))
    ap.add_argument("--districts", type=Path, default=Path("demo/region/districts.gpkg"))
    ap.add_argument("--season-start", default=None, help="the synthetic season's first day (default: from the "
                                                         "region's products, else 15 June of the first period's year)")
    args = ap.parse_args(argv)
    stack = next(p for p in sorted((args.run / "inputs").glob("*.tif")) if not p.stem.endswith("_clear"))
    periods = read_periods(stack)
    if not periods:
        print(f"{stack}: no GEOSEG_PERIODS tag; expected a run's season composite")
        return 1
    labels = list(periods)
    first = periods[labels[0]][0]
    start = dt.date.fromisoformat(args.season_start) if args.season_start else dt.date(first.year, 6, 15)
    prof = district_crop_timeseries(stack, args.run / "mask.tif", args.districts, "district", indices=["ndvi"])
    print(f"{stack} ({len(labels)} periods: "
          f"{', '.join(labels)}); season start {start}")
    print("| crop | recovered NDVI per period | generator's NDVI per period | recovered peak | generator's peak "
          "| largest difference |")
    print("|---|---|---|---|---|---:|")
    for crop in sorted(set(prof.crop)):
        if crop == "background":
            continue
        p = prof[prof.crop == crop]
        by_date = p.groupby("date").apply(lambda g: np.average(g["mean"], weights=g.observed_ha),
                                          include_groups=False)
        got = by_date.to_numpy()
        expected = []
        for label in labels:
            a, b = periods[label]
            days = np.arange((a - start).days, (b - start).days, 1.0)
            r = crop_reflectance(crop, days)
            expected.append(float(np.mean((r[:, 3] - r[:, 2]) / (r[:, 3] + r[:, 2]))))
        exp = np.array(expected)
        print(f"| {crop} | {', '.join(f'{v:.3f}' for v in got)} | {', '.join(f'{v:.3f}' for v in exp)} | "
              f"{labels[int(np.argmax(got))]} | {labels[int(np.argmax(exp))]} | {np.abs(got - exp).max():.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
