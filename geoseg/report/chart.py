"""Per-district crop areas: the district x crop hectare table and its stacked bar chart.

pandas and matplotlib are imported inside the functions: they are slow to import, and only
drawing a report needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.classes import ClassTable
from geoseg.io.raster import atomic_output

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["crop_pivot", "write_district_chart", "MAX_DISTRICTS"]

#: Districts drawn in the chart at most (the largest by crop area); the table lists them all.
MAX_DISTRICTS = 40


def crop_pivot(areas: "pd.DataFrame", classes: "ClassTable") -> "pd.DataFrame":
    """Hectares per district (rows, sorted by total crop area, largest first) and crop (columns, class order).

    Only crop classes (``crop: true``) are columns; ``total`` is their sum. Districts of the
    table without any crop area keep a row of zeros.

    Examples
    --------
    >>> import pandas as pd
    >>> from geoseg.classes import default_classes
    >>> t = pd.DataFrame({"district": ["A", "A", "B"], "class_id": [1, 2, 1], "crop": ["rice", "wheat", "rice"],
    ...                   "area_ha": [1.0, 2.0, 5.0]})
    >>> p = crop_pivot(t, default_classes())
    >>> p.index.tolist(), p["total"].tolist(), float(p.loc["A", "wheat"])
    (['B', 'A'], [5.0, 3.0], 2.0)
    """
    import pandas as pd  # deferred: slow to import, and only drawing a report needs it

    crops = [c for c in classes.classes if c.crop]
    names = [c.name for c in crops]
    ids = {c.id: c.name for c in crops}
    t = areas[areas["class_id"].isin(list(ids))].copy()
    t["crop_name"] = t["class_id"].map(ids)
    p = t.pivot_table(index="district", columns="crop_name", values="area_ha", aggfunc="sum", fill_value=0.0)
    p = p.reindex(index=sorted(set(areas["district"].astype(str))), columns=names, fill_value=0.0).fillna(0.0)
    p = p.astype(float)
    p["total"] = p[names].sum(axis=1)
    p.index.name = "district"
    p.columns.name = None
    return pd.DataFrame(p.sort_values("total", ascending=False, kind="stable"))


def write_district_chart(out: str | os.PathLike[str], pivot: "pd.DataFrame", classes: "ClassTable", *,
                         title: str = "", max_districts: int = MAX_DISTRICTS) -> Path:
    """Stacked horizontal bars of hectares per crop for each district, largest total on top (PNG, atomic).

    Only the ``max_districts`` largest districts are drawn; a note says how many were left out.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switching

    crops = [c for c in classes.classes if c.crop and c.name in pivot.columns]
    shown = pivot.iloc[:max_districts]
    n = max(len(shown), 1)
    fig = Figure(figsize=(11, 1.6 + 0.42 * n), dpi=110)
    ax = fig.subplots()
    y = np.arange(len(shown))[::-1]  # largest at the top
    left = np.zeros(len(shown))
    for c in crops:
        v = shown[c.name].to_numpy(dtype=float)
        ax.barh(y, v, left=left, color=c.color, edgecolor="white", linewidth=0.4, label=c.name, height=0.72)
        left += v
    span = float(left.max()) if len(left) and left.max() > 0 else 1.0
    for yi, tot in zip(y, left):
        ax.text(tot + 0.01 * span, yi, f"{tot:,.0f} ha", va="center", fontsize=9)
    ax.set_yticks(y, [str(d) for d in shown.index])
    ax.set_xlim(0, span * 1.15)
    ax.set_xlabel("hectares")
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False, title="crop")
    heading = title or "crop area per district"
    if len(pivot) > len(shown):
        heading += f" (the {len(shown)} largest of {len(pivot)} districts)"
    ax.set_title(heading, fontsize=11, loc="left")
    if not len(shown):
        ax.text(0.5, 0.5, "no district areas in this run", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    target = Path(out)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
