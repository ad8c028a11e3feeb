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
each statistic over all fields and dates, with the share of (field, date) cells where it exceeds
1e-6. exactextract weighs a pixel by its covered share only; geoseg also by its ground area, which
in UTM varies by under 1e-6 within a field.

The comparison runs twice: on the float32 stack as written, and on the same stack in float64 with
each pixel moved by under 1e-9 so that no two pixels hold the same value. The weighted quantile
rule depends on the order of equal values when their weights differ; exactextract sorts by value
alone with an unstable sort, so on ties its own order is arbitrary, while geoseg orders equal
values by weight. Without ties the two must agree.

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


def _without_ties(stack: Path, out: Path) -> Path:
    """``stack`` in float64 with pixel i of each band moved by i / n x 1e-9: no two pixels equal."""
    with rasterio.open(stack) as src:
        a = src.read().astype(np.float64)
        profile = src.profile
        names = src.descriptions
    step = np.arange(a[0].size, dtype=np.float64).reshape(a.shape[1:]) / a[0].size * 1e-9
    profile.update(dtype="float64", predictor=1)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(a + step)
        for i, d in enumerate(names, start=1):
            dst.set_band_description(i, d)
    return out


def _compare(python: str, work: Path, stack: Path, fields: Path, long: pd.DataFrame) -> tuple[float, str]:
    """exactextract on ``stack``: its seconds and a line of the largest differences from ``long``."""
    script = work / "ee.py"
    script.write_text(_EE)
    res = subprocess.run([python, str(script), str(stack), str(fields), str(work / "ee.parquet")],
                         capture_output=True, text=True, check=True)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    ee = pd.read_parquet(work / "ee.parquet")
    dates = sorted(long.date.unique())
    diffs: dict[str, float] = {}
    over: dict[str, int] = {}
    cells = 0
    ours = long.set_index(["field_id", "date"])
    for i, d in enumerate(dates, start=1):
        band = f"ndvi_band_{i}" if f"ndvi_band_{i}_mean" in ee.columns else f"band_{i}"
        mine = ours.xs(d, level="date").loc[ee.field_id]
        cells += len(mine)
        for ours_col, theirs in (("mean", "mean"), ("median", "median"), ("std", "stdev"),
                                 ("p10", "quantile_10"), ("p90", "quantile_90")):
            col = f"{band}_{theirs}"
            if col not in ee.columns:
                continue
            delta = np.abs(mine[ours_col].to_numpy() - ee[col].to_numpy())
            diffs[ours_col] = max(diffs.get(ours_col, 0.0), float(np.nanmax(delta)))
            over[ours_col] = over.get(ours_col, 0) + int(np.sum(delta > 1e-6))
    line = ", ".join(f"{k} {v:.1e} ({100 * over[k] / cells:.2f} % > 1e-6)" for k, v in diffs.items())
    return info["seconds"], line


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
        seconds, line = _compare(args.exactextract_python, args.work, stack, fields, long)
        rows.append(("exactextract 1 thread (its own timer)", seconds))
        print(f"largest |geoseg - exactextract|, float32 stack as written: {line}")
        distinct = _without_ties(stack, args.work / "ndvi_distinct.tif")
        long2, _, _ = field_timeseries(distinct, fields, indices=["ndvi"], workers=2)
        _, line = _compare(args.exactextract_python, args.work, distinct, fields, long2)
        print(f"largest |geoseg - exactextract|, the same without ties: {line}")
    print("| engine | seconds |")
    print("|---|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
