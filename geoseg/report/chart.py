"""Per-district crop areas: the district x crop hectare table and its stacked bar chart; the
mapped and estimated areas of a reference-sample estimate with their confidence intervals.

pandas and matplotlib are imported inside the functions: they are slow to import, and only
drawing a report needs them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.classes import ClassTable
from geoseg.io.raster import atomic_output

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["crop_pivot", "write_district_chart", "write_estimate_chart", "MAX_DISTRICTS"]

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


def _estimate_districts(table: pd.DataFrame, crop_ids: list[int], max_districts: int) -> list[str]:
    """The districts of an estimate table, largest estimated crop area first, at most ``max_districts``."""
    t = table[table["class_id"].isin(crop_ids)]
    order = t.groupby("district", sort=False)["estimated_ha"].sum().sort_values(ascending=False, kind="stable")
    return [str(d) for d in order.index[:max_districts]]


def write_estimate_chart(out: str | os.PathLike[str], table: pd.DataFrame, classes: ClassTable, *,
                         level: float = 95.0, max_districts: int = MAX_DISTRICTS) -> Path:
    """Mapped and estimated hectares per district, one panel per crop, the estimates with their
    confidence interval as whiskers (PNG, atomic).

    ``table`` has the columns of :data:`geoseg.ops.estimate.DISTRICT_COLUMNS` (``district``,
    ``class_id``, ``mapped_ha``, ``estimated_ha``, ``ci_low_ha``, ``ci_high_ha``, ...); ``level``
    is the intervals' confidence level, for the legend. Crops (``crop: true``) with neither a
    mapped nor an estimated area anywhere get no panel. In each panel the mapped bar (the map's
    pixels, light and hatched) sits above the estimated one (solid, with its whisker); districts
    are sorted by estimated crop area, largest on top, and only the ``max_districts`` largest are
    drawn (the title says how many were left out).
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switching
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    crops = [c for c in classes.classes if c.crop]
    t = table[table["class_id"].isin([c.id for c in crops])]
    shown = [c for c in crops
             if ((t["class_id"] == c.id) & ((t["mapped_ha"] > 0) | (t["estimated_ha"] > 0) | (t["ci_high_ha"] > 0))).any()]
    districts = _estimate_districts(table, [c.id for c in crops], max_districts)
    n_all = table["district"].astype(str).nunique()
    ncol = min(3, max(len(shown), 1))
    nrow = max(math.ceil(len(shown) / ncol), 1)
    panel_h = 0.9 + 0.34 * max(len(districts), 1)
    fig = Figure(figsize=(1.6 + 3.6 * ncol, 1.3 + panel_h * nrow), dpi=110)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True)
    y = np.arange(len(districts))[::-1].astype(float)  # largest at the top
    for ax, c in zip(axes.flat, shown):
        sub = t[t["class_id"] == c.id].assign(district=lambda d: d["district"].astype(str)).set_index("district")
        sub = sub[~sub.index.duplicated()].reindex(districts)
        mapped = sub["mapped_ha"].fillna(0.0).to_numpy(float)
        est = sub["estimated_ha"].fillna(0.0).to_numpy(float)
        low = sub["ci_low_ha"].fillna(sub["estimated_ha"]).fillna(0.0).to_numpy(float)
        high = sub["ci_high_ha"].fillna(sub["estimated_ha"]).fillna(0.0).to_numpy(float)
        ax.barh(y + 0.2, mapped, height=0.38, color=c.color, alpha=0.4, hatch="///", edgecolor=c.color, lw=0.0)
        ax.barh(y - 0.2, est, height=0.38, color=c.color, edgecolor="#333333", lw=0.5)
        ax.errorbar(est, y - 0.2, xerr=[np.maximum(est - low, 0.0), np.maximum(high - est, 0.0)], fmt="none",
                    ecolor="black", elinewidth=1.0, capsize=3)
        ax.axvline(0.0, color="#888888", lw=0.6)
        ax.set_title(c.name, fontsize=10, loc="left")
        ax.set_xlabel("hectares", fontsize=9)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    axes[0][0].set_yticks(y, districts)
    for row in axes:
        row[0].tick_params(axis="y", labelleft=True)
    if not shown:
        ax = axes[0][0]
        ax.set_visible(True)
        ax.text(0.5, 0.5, "no crop area in the estimate", transform=ax.transAxes, ha="center")
    heading = f"mapped and estimated crop area per district ({level:.0f} % confidence intervals)"
    if n_all > len(districts):
        heading += f" - the {len(districts)} largest of {n_all} districts"
    fig.suptitle(heading, fontsize=11, x=0.01, ha="left")
    handles = [Patch(facecolor="#999999", alpha=0.4, hatch="///", edgecolor="#999999", label="mapped (map pixels)"),
               Patch(facecolor="#999999", edgecolor="#333333", label="estimated (reference sample)"),
               Line2D([], [], color="black", marker="|", markersize=8, lw=1.0, label=f"{level:.0f} % CI")]
    fig.legend(handles=handles, loc="upper right", fontsize=9, frameon=False, ncols=3)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    target = Path(out)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
