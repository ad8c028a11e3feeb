"""The cost of the area steps on a demo-sized region: fields, district areas from the mask and from the fields.

Times, on the synthetic region's true labels (the demo's size by default, 2048 x 2048 px of
10 m), the three steps whose areas come from :mod:`geoseg.core.geodesy`, each the median of
``--repeat`` runs on one thread, and prints them as JSON. Run it with one tree's ``geoseg``
on the path and then another's to compare two versions of the area computation:

    python benchmarks/area_cost.py --region /tmp/region                # makes the region once
    PYTHONPATH=/path/to/other/tree python benchmarks/area_cost.py --region /tmp/region
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geoseg
from geoseg.ops.areas import district_areas_fields, district_areas_raster
from geoseg.ops.polygonize import polygonize_raster
from geoseg.synth import synthesize


def _median(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", type=Path, required=True, help="folder of a synthetic region (made if missing)")
    ap.add_argument("--size", type=int, default=2048, help="region height and width in pixels (default 2048)")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    labels, districts = a.region / "labels.tif", a.region / "districts.gpkg"
    if not labels.is_file():
        synthesize(a.region, height=a.size, width=a.size, seed=7)
    district_areas_raster(labels, districts, "district", workers=1)  # warm: imports, PROJ database
    t_fields, fields = _median(lambda: polygonize_raster(labels, workers=1), a.repeat)
    t_raster, table = _median(lambda: district_areas_raster(labels, districts, "district", workers=1), a.repeat)
    t_poly, _ = _median(lambda: district_areas_fields(fields, districts, "district"), a.repeat)
    print(json.dumps({"geoseg": str(Path(geoseg.__file__).parent), "fields": len(fields),
                      "polygonize_s": round(t_fields, 3), "areas_raster_s": round(t_raster, 3),
                      "areas_fields_s": round(t_poly, 3), "fields_ha": round(float(fields.area_ha.sum()), 3),
                      "districts_ha": round(float(table.area_ha.sum()), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
