"""Which zonal engine the growth features use: geoseg's block-wise code against exactextract.

Both compute per-field statistics of a multi-date index stack with exact fractional coverage of
border pixels. On a synthetic region (the demo's by default) an NDVI stack is written from the
region's scene (float32, one band per date named ``<date> NDVI``), then:

``geoseg``
    ``geoseg.ops.features.field_timeseries`` (the engine of ``geoseg zonal`` and of a run's
    ``outputs.features``): mean, median, std, p10, p90 and observed share per field and date;
``exactextract``
    exactextract's Python bindings (``exact_extract`` with ``mean``, ``median``, ``stdev``,
    ``quantile(q=0.1)``, ``quantile(q=0.9)``), run by ``--exactextract-python`` (a separate
    environment with ``pip install exactextract``: it is not a geoseg dependency).

Printed: seconds of each (one run each, same machine), and the largest absolute difference of
each statistic over all fields and dates. exactextract weighs a pixel by its covered share only;
geoseg also by its ground area, which in UTM varies by under 1e-6 within a field.

Run::

    .venv/bin/python benchmarks/zonal_engines.py --region /tmp/r0 --exactextract-python /tmp/eeenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from geoseg.ops.features import field_timeseries

_EE = textwrap.dedent('''
    import json, sys, time
    import geopandas as gpd
    from exactextract import exact_extract
    stack, fields, out = sys.argv[1:4]
    f = gpd.read_file(fields)[["field_id", "geometry"]]
    t = time.perf_counter()
    df = exact_extract(stack, f, ["mean", "median", "stdev", "quantile(q=0.1)", "quantile(q=0.9)"],
                       include_cols=["field_id"], output="pandas")
    seconds = time.perf_counter() - t
    df.to_parquet(out)
    print(json.dumps({"seconds": seconds, "rows": len(df)}))
''')


def _ndvi_stack(scene: Path, out: Path) -> Path:
    with rasterio.open(scene) as src:
        a = src.read().astype(np.float64)
        profile = src.profile
        names = src.descriptions
    dates = [n.split()[0] for n in names[::4]]
    r, n = a[2::4], a[3::4]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = np.where((r > 0) & (n > 0), (n - r) / (n + r), np.nan).astype(np.float32)
    profile.update(count=len(dates), dtype="float32", nodata=np.nan, compress="deflate", predictor=3)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(ndvi)
        for i, d in enumerate(dates, start=1):
            dst.set_band_description(i, f"{d} NDVI")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", type=Path, required=True, help="a synthetic region (geoseg synth)")
    ap.add_argument("--exactextract-python", default=None, help="a Python with exactextract installed")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoseg-zonal-engines"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    stack = _ndvi_stack(args.region / "scene.tif", args.work / "ndvi.tif")
    fields = args.region / "fields.gpkg"
    rows = []
    for workers in (1, 2):
        t = time.perf_counter()
        long, _, _ = field_timeseries(stack, fields, indices=["ndvi"], workers=workers)
        rows.append((f"geoseg, {workers} thread(s)", time.perf_counter() - t))
    print(f"{len(long.field_id.unique()):,} fields x {long.date.nunique()} dates")
    if args.exactextract_python:
        script = args.work / "ee.py"
        script.write_text(_EE)
        res = subprocess.run([args.exactextract_python, str(script), str(stack), str(fields),
                              str(args.work / "ee.parquet")], capture_output=True, text=True, check=True)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(("exactextract 1 thread (its own timer)", info["seconds"]))
        ee = pd.read_parquet(args.work / "ee.parquet")
        dates = sorted(long.date.unique())
        diffs: dict[str, float] = {}
        ours = long.set_index(["field_id", "date"])
        for i, d in enumerate(dates, start=1):
            band = f"ndvi_band_{i}" if f"ndvi_band_{i}_mean" in ee.columns else f"band_{i}"
            mine = ours.xs(d, level="date").loc[ee.field_id]
            for ours_col, theirs in (("mean", "mean"), ("median", "median"), ("std", "stdev"),
                                     ("p10", "quantile_10"), ("p90", "quantile_90")):
                col = f"{band}_{theirs}"
                if col not in ee.columns:
                    continue
                delta = np.nanmax(np.abs(mine[ours_col].to_numpy() - ee[col].to_numpy()))
                diffs[ours_col] = max(diffs.get(ours_col, 0.0), float(delta))
        print("largest |geoseg - exactextract| over all fields and dates: "
              + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    print("| engine | seconds |")
    print("|---|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
