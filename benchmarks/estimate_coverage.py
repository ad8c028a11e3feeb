"""How sure are we: do the reference-sample estimates cover the true crop areas as often as they say?

On a synthetic region the truth is known. For each of ``--repeats`` seeds, a sample is drawn
from a map (``geoseg.ops.sample.draw_sample``: the design ``geoseg sample`` writes), its
points are labelled from the region's ``labels.tif`` (a perfect field team), and the areas are
estimated (``geoseg.ops.estimate.estimate_tables``: what ``geoseg estimate`` computes). The
true areas are the truth raster's over the sampled population - the map's observed pixels
inside the districts - counted with the district areas' exact coverage rule.

Printed per crop: the true and mapped hectares, the map's error, the estimator's mean error
(bias) and mean absolute error over the repeats, the mean 95 % half-width, and the share of
repeats whose interval covers the truth; then the same coverage over every district x crop
(with ``--by-district`` the strata are class x district).

The map: ``--mask`` (a ``geoseg predict`` mask of the region), or the region's truth with
errors put in (``--errors``: a share of each crop's fields mapped as another crop and a share
of background mapped as crop), for a map as weak as one wants.

Run::

    geoseg synth /tmp/r0 --seed 0 --clouds 0
    .venv/bin/python benchmarks/estimate_coverage.py --region /tmp/r0 --mask MASK [--repeats 200] [--by-district]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from geoseg.ops.areas import district_areas_raster
from geoseg.ops.estimate import estimate_tables
from geoseg.ops.sample import draw_sample


def _masked_truth(labels: Path, mask: Path, out: Path) -> Path:
    """The truth over the map's observed pixels (the sampled population), nodata elsewhere."""
    with rasterio.open(labels) as t, rasterio.open(mask) as m:
        truth = t.read(1)
        observed = m.read(1) != (m.nodata if m.nodata is not None else 255)
        profile = {**t.profile, "driver": "GTiff"}
        tags = t.tags()
    truth = np.where(observed, truth, 255).astype(np.uint8)
    profile.update(nodata=255)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(truth, 1)
        dst.update_tags(**tags)
    return out


def _with_errors(labels: Path, fields: Path, out: Path, share: float, seed: int) -> Path:
    """The truth with whole fields mapped as another crop, and background specks mapped as crop."""
    import geopandas as gpd
    from rasterio.features import rasterize

    rng = np.random.default_rng(seed)
    with rasterio.open(labels) as src:
        a = src.read(1)
        profile = {**src.profile, "driver": "GTiff"}
        tags = src.tags()
        transform = src.transform
    f = gpd.read_file(fields).to_crs(profile["crs"])
    pick = f[rng.random(len(f)) < share]
    if len(pick):
        new = rng.integers(1, 7, len(pick))
        burnt = rasterize(zip(pick.geometry, new, strict=True), out_shape=a.shape, transform=transform, fill=0,
                          dtype="uint8")
        crop = (burnt > 0) & (a > 0) & (a < 255)
        a[crop] = burnt[crop]
    bg = (a == 0) & (rng.random(a.shape) < share)
    a[bg] = rng.integers(1, 7, int(bg.sum()))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(a, 1)
        dst.update_tags(**tags)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", type=Path, required=True, help="a synthetic region (geoseg synth)")
    ap.add_argument("--mask", type=Path, default=None, help="the map (default: the truth with --errors)")
    ap.add_argument("--errors", type=float, default=0.1, help="share of fields / background mapped wrongly")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--by-district", action="store_true")
    ap.add_argument("--minimum", type=int, default=50)
    ap.add_argument("--target-se", type=float, default=0.01)
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-estimate-coverage"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    region = args.region
    labels, districts = region / "labels.tif", region / "districts.gpkg"
    mask = args.mask or _with_errors(labels, region / "fields.gpkg", args.work / "map.tif", args.errors, 0)
    truth_t = district_areas_raster(_masked_truth(labels, mask, args.work / "truth.tif"), districts, "district")
    mapped_t = district_areas_raster(mask, districts, "district")
    with rasterio.open(labels) as src:
        truth_px, tr = src.read(1), src.transform
    names = truth_t.drop_duplicates("class_id").set_index("class_id").crop.to_dict()
    truth_c = truth_t.groupby("crop").area_ha.sum()
    truth_dc = truth_t.set_index(["district", "crop"]).area_ha
    rows, drows = [], []
    t0 = time.perf_counter()
    for r in range(args.repeats):
        s = draw_sample(mask, districts=districts, name_field="district", by_district=args.by_district,
                        minimum=args.minimum, target_se=args.target_se, seed=r)
        rr, cc = rasterio.transform.rowcol(tr, s.points.x.to_numpy(), s.points.y.to_numpy())
        ref = truth_px[np.asarray(rr), np.asarray(cc)].astype(np.int64)
        est = estimate_tables(s.design, s.key, s.points.point_id.to_numpy(), ref)
        a = est.areas
        rows.append(pd.DataFrame({"repeat": r, "crop": a.crop, "est": a.estimated_ha, "low": a.ci_low_ha,
                                  "high": a.ci_high_ha, "points": s.design["points"]}))
        d = est.districts
        drows.append(pd.DataFrame({"repeat": r, "district": d.district, "crop": d.crop, "est": d.estimated_ha,
                                   "low": d.ci_low_ha, "high": d.ci_high_ha}))
    seconds = time.perf_counter() - t0
    res = pd.concat(rows)
    res["truth"] = res.crop.map(truth_c)
    res["covered"] = (res.low <= res.truth) & (res.truth <= res.high)
    res["err"] = res.est - res.truth
    mapped_c = mapped_t.groupby("crop").area_ha.sum()
    print(f"map {mask}; {args.repeats} samples of {int(res.points.iloc[0])} points "
          f"({'class x district' if args.by_district else 'class'} strata, minimum {args.minimum}, target SE "
          f"{args.target_se}); {seconds / args.repeats:.2f} s per draw + estimate")
    print("| crop | true ha | mapped ha | map error ha | estimator bias ha | estimator mean abs error ha "
          "| mean 95 % half-width ha | CI covers truth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cid in sorted(names):
        crop = names[cid]
        g = res[res.crop == crop]
        print(f"| {crop} | {truth_c[crop]:.1f} | {mapped_c.get(crop, 0.0):.1f} | "
              f"{mapped_c.get(crop, 0.0) - truth_c[crop]:+.1f} | {g.err.mean():+.1f} | {g.err.abs().mean():.1f} | "
              f"{((g.high - g.low) / 2).mean():.1f} | {100 * g.covered.mean():.1f} % |")
    dres = pd.concat(drows)
    dres["truth"] = [truth_dc.get((d, c), 0.0) for d, c in zip(dres.district, dres.crop, strict=True)]
    dres["covered"] = (dres.low <= dres.truth) & (dres.truth <= dres.high)
    cov = dres.groupby(["district", "crop"]).covered.mean()
    dmapped = mapped_t.set_index(["district", "crop"]).area_ha
    dcells = cov.index
    map_abs = np.mean([abs(dmapped.get(k, 0.0) - truth_dc.get(k, 0.0)) for k in dcells])
    est_abs = (dres.est - dres.truth).abs().groupby([dres.district, dres.crop]).mean().mean()
    print(f"district x crop ({len(cov)} cells): CI coverage mean {100 * cov.mean():.1f} %, min "
          f"{100 * cov.min():.1f} %, max {100 * cov.max():.1f} %; mean abs error: map {map_abs:.1f} ha, "
          f"estimator {est_abs:.1f} ha")
    return 0


if __name__ == "__main__":
    sys.exit(main())
