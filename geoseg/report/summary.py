"""Run summaries for the terminal and for scripts: a districts x crops table and a JSON record."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.classes import ClassTable, default_classes
from geoseg.io.objects import is_object_url, readable_copy
from geoseg.io.paths import dataset_path
from geoseg.io.raster import read_mask_classes
from geoseg.io.vector import read_table
from geoseg.report.chart import crop_pivot
from geoseg.rundir import AREA_FORMATS, RunResult, district_areas_key, district_areas_name

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["area_table_lines", "area_lines", "areas_by_district", "run_areas", "run_summary"]

def run_areas(outputs: dict[str, str]) -> tuple["pd.DataFrame | None", "ClassTable"]:
    """A run's district table (None when it has none) and its class table, from its outputs."""
    classes = read_mask_classes(dataset_path(outputs["mask"])) if outputs.get("mask") else None
    path = next((outputs[k] for k in map(district_areas_key, AREA_FORMATS) if outputs.get(k)), None)
    if path and is_object_url(path):  # a run published to object storage
        with readable_copy(path) as local:
            return read_table(local), classes or default_classes()
    areas = read_table(path) if path and Path(path).exists() else None
    return areas, classes or default_classes()


def area_lines(outputs: dict[str, str]) -> list[str]:
    """The districts x crops hectare table of a run as text lines (none when the run has no district table)."""
    areas, classes = run_areas(outputs)
    return [] if areas is None else area_table_lines(crop_pivot(areas, classes))


def areas_by_district(areas: "pd.DataFrame", crop_ids: set[int] | None = None) -> dict[str, dict[str, float]]:
    """``{district: {crop: hectares}}`` from a district table (``geoseg areas`` columns).

    With ``crop_ids``, only those classes; hectares are summed over repeated rows.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"district": ["A", "A"], "class_id": [0, 1], "crop": ["background", "rice"],
    ...                   "area_ha": [1.0, 2.5]})
    >>> areas_by_district(t, {1})
    {'A': {'rice': 2.5}}
    """
    t = areas if crop_ids is None else areas[areas["class_id"].isin(sorted(crop_ids))]
    out: dict[str, dict[str, float]] = {}
    for (district, crop), ha in t.groupby(["district", "crop"], sort=False)["area_ha"].sum().items():
        out.setdefault(str(district), {})[str(crop)] = float(ha)
    return out


def area_table_lines(pivot: "pd.DataFrame", *, max_rows: int = 50) -> list[str]:
    """A plain-text districts x crops table (hectares) from :func:`~geoseg.report.chart.crop_pivot`.

    Examples
    --------
    >>> import pandas as pd
    >>> p = pd.DataFrame({"rice": [3.0], "total": [3.0]}, index=pd.Index(["A"], name="district"))
    >>> print("\\n".join(area_table_lines(p)))
    district      rice   total
    A                3       3
    all              3       3
    """
    cols = list(pivot.columns)
    shown = pivot.iloc[:max_rows]
    w0 = max([len("district"), len("all")] + [len(str(d)) for d in shown.index]) + 2
    widths = [max(len(str(c)), len(f"{pivot[c].sum():,.0f}")) + 2 for c in cols]
    lines = ["district".ljust(w0) + "".join(str(c).rjust(w) for c, w in zip(cols, widths))]
    for d, r in shown.iterrows():
        lines.append(str(d).ljust(w0) + "".join(f"{float(r[c]):,.0f}".rjust(w) for c, w in zip(cols, widths)))
    if len(pivot) > len(shown):
        lines.append(f"... {len(pivot) - len(shown)} more districts (see {district_areas_name('csv')})")
    lines.append("all".ljust(w0) + "".join(f"{float(pivot[c].sum()):,.0f}".rjust(w) for c, w in zip(cols, widths)))
    return lines


def run_summary(result: RunResult) -> dict[str, Any]:
    """The JSON summary ``geoseg run --json`` prints: ids, status, tiles, timings, outputs and crop hectares.

    ``district_crop_ha`` is ``{district: {crop: hectares}}`` over the crop classes of the run's
    district table (empty without one).
    """
    areas, classes = run_areas(result.outputs)
    crop_ids = {c.id for c in classes.classes if c.crop}

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {
        "run_id": result.run_id,
        "run_dir": result.run_url or str(result.run_dir),
        "status": result.status,
        "tiles": result.tiles,
        "tiles_skipped": result.tiles_skipped,
        "timings": {k: round(float(v), 3) for k, v in result.timings.items()},
        "outputs": dict(result.outputs),
        "district_crop_ha": {d: {c: clean(v) for c, v in row.items()}
                             for d, row in (areas_by_district(areas, crop_ids) if areas is not None else {}).items()},
        "problems": list((result.stats or {}).get("district_problems", [])),
    }
