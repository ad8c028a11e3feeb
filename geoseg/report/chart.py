"""Per-district crop areas: the district x crop hectare table and its stacked bar chart; the
mapped and estimated areas of a reference-sample estimate with their confidence intervals; the
crops' index profiles per district of a run with growth features.

pandas and matplotlib are imported inside the functions: they are slow to import, and only
drawing a report needs them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.classes import ClassTable
from geoseg.io.raster import atomic_output

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "crop_pivot",
    "write_district_chart",
    "write_estimate_chart",
    "MAX_DISTRICTS",
    "CropProfiles",
    "crop_profiles",
    "profile_index",
    "profile_series",
    "write_profile_chart",
    "MAX_PROFILE_DISTRICTS",
]

#: Districts drawn in the chart at most (the largest by crop area); the table lists them all.
MAX_DISTRICTS = 40
#: Districts of the profile chart at most, one panel each (the largest by crop area).
MAX_PROFILE_DISTRICTS = 12


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


# ------------------------------------------------------------------ crop growth profiles per district


def profile_index(table: pd.DataFrame) -> str | None:
    """The index the profile chart draws: ``ndvi`` when the table has it, else its first; None when it has none.

    >>> import pandas as pd
    >>> profile_index(pd.DataFrame({"index": ["gcvi", "evi", "ndvi"]})), profile_index(pd.DataFrame({"index": ["evi"]}))
    ('ndvi', 'evi')
    """
    names = list(dict.fromkeys(table["index"].astype(str)))
    if not names:
        return None
    return "ndvi" if "ndvi" in names else names[0]


def _numeric(col: pd.Series) -> np.ndarray:
    import pandas as pd  # deferred: slow to import, and only drawing a report needs it

    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)


def profile_series(table: pd.DataFrame, classes: ClassTable, index: str) -> pd.DataFrame:
    """The plotted series: per district, crop and date, the area-weighted mean of ``index`` and its std.

    ``table`` has the columns of ``district_crop_timeseries.parquet`` (:data:`geoseg.ops.features.
    PROFILE_COLUMNS`, a run adds ``scene``). Only rows of ``index`` and of crop classes (``crop: true``)
    count. A run of several scenes has one row per scene; they are pooled by weighting each scene's
    mean by its ``observed_ha`` (rows without an observation weigh nothing), and the std is the
    pooled one of all their pixels: ``sqrt(sum w (std^2 + mean^2) / sum w - mean^2)``.

    Returns
    -------
    DataFrame
        ``district`` (str), ``class_id``, ``crop`` (the class table's name), ``date`` (str),
        ``mean``, ``std`` (NaN where no scene observed it) and ``observed_ha``, sorted by district,
        class id and date.

    Examples
    --------
    >>> import pandas as pd
    >>> from geoseg.classes import default_classes
    >>> t = pd.DataFrame({"scene": ["a", "b"], "district": ["A", "A"], "class_id": [1, 1], "date": ["2024-06-01"] * 2,
    ...                   "index": ["ndvi"] * 2, "mean": [0.2, 0.5], "std": [0.0, 0.0], "observed_ha": [1.0, 2.0]})
    >>> s = profile_series(t, default_classes(), "ndvi")
    >>> s[["district", "crop", "date"]].values.tolist(), round(float(s["mean"].iloc[0]), 6)
    ([['A', 'rice', '2024-06-01']], 0.4)
    """
    import pandas as pd  # deferred: slow to import, and only drawing a report needs it

    names = {c.id: c.name for c in classes.classes if c.crop}
    cid = _numeric(table["class_id"])
    t = table[(table["index"].astype(str) == index).to_numpy() & np.isin(cid, list(names))]
    mean, std, w = _numeric(t["mean"]), _numeric(t["std"]), _numeric(t["observed_ha"])
    ok = np.isfinite(mean) & np.isfinite(w) & (w > 0)
    w = np.where(ok, w, 0.0)
    m = np.where(ok, mean, 0.0)
    sd = np.where(ok & np.isfinite(std), std, 0.0)
    parts = pd.DataFrame({"district": t["district"].astype(str).to_numpy(), "class_id": _numeric(t["class_id"]).astype(int),
                          "date": t["date"].astype(str).to_numpy(), "w": w, "s1": w * m, "s2": w * (sd**2 + m**2)})
    g = parts.groupby(["district", "class_id", "date"], sort=True)[["w", "s1", "s2"]].sum().reset_index()
    wsum = g["w"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(wsum > 0, g["s1"].to_numpy() / np.where(wsum > 0, wsum, 1.0), math.nan)
        var = np.where(wsum > 0, g["s2"].to_numpy() / np.where(wsum > 0, wsum, 1.0), math.nan) - mu**2
    return pd.DataFrame({"district": g["district"].astype(str), "class_id": g["class_id"].astype(int),
                         "crop": g["class_id"].map(names), "date": g["date"].astype(str), "mean": mu,
                         "std": np.sqrt(np.maximum(var, 0.0)), "observed_ha": wsum})


def _profile_districts(table: pd.DataFrame, classes: ClassTable, index: str) -> list[str]:
    """The districts with crop rows of ``index``, largest crop area first (each scene's area counts
    once per crop: it repeats on every date)."""
    import pandas as pd  # deferred: slow to import, and only drawing a report needs it

    crop_ids = [c.id for c in classes.classes if c.crop]
    cid = _numeric(table["class_id"])
    t = table[(table["index"].astype(str) == index).to_numpy() & np.isin(cid, crop_ids)]
    key = pd.DataFrame({"scene": t["scene"].astype(str).to_numpy() if "scene" in t.columns else "",
                        "district": t["district"].astype(str).to_numpy(), "class_id": _numeric(t["class_id"]),
                        "area_ha": np.nan_to_num(_numeric(t["area_ha"]))})
    per = key.drop_duplicates(["scene", "district", "class_id"]).groupby("district", sort=True)["area_ha"].sum()
    return [str(d) for d in per.sort_values(ascending=False, kind="stable").index]


@dataclass(frozen=True)
class CropProfiles:
    """What the profile chart and its section show: the ``index`` drawn (of ``indices``, all the
    table holds), the series of :func:`profile_series` for the districts shown, those districts
    (largest crop area first) and how many districts with crop rows the table has in all."""

    index: str
    indices: tuple[str, ...]
    series: pd.DataFrame
    districts: tuple[str, ...]
    n_districts: int

    @property
    def left_out(self) -> int:
        """Districts of the table that the chart leaves out (the smaller ones)."""
        return self.n_districts - len(self.districts)


def crop_profiles(table: pd.DataFrame, classes: ClassTable, *, index: str | None = None,
                  max_districts: int = MAX_PROFILE_DISTRICTS) -> CropProfiles | None:
    """The profiles of ``index`` (default :func:`profile_index`) of the ``max_districts`` districts
    with the largest crop area; None when the table has no crop pixel observed on any date.

    Examples
    --------
    >>> import pandas as pd
    >>> from geoseg.classes import default_classes
    >>> t = pd.DataFrame({"district": ["A", "B", "C"], "class_id": [1, 1, 1], "date": ["2024-06-01"] * 3,
    ...                   "index": ["ndvi"] * 3, "mean": [0.2, 0.5, 0.3], "std": [0.1] * 3,
    ...                   "observed_ha": [1.0, 2.0, 3.0], "area_ha": [1.0, 2.0, 3.0]})
    >>> p = crop_profiles(t, default_classes(), max_districts=2)
    >>> p.index, p.districts, p.left_out, sorted(set(p.series["district"]))
    ('ndvi', ('C', 'B'), 1, ['B', 'C'])
    """
    index = index if index is not None else profile_index(table)
    if index is None:
        return None
    series = profile_series(table, classes, index)
    seen = set(series.loc[series["observed_ha"] > 0, "district"])
    ordered = [d for d in _profile_districts(table, classes, index) if d in seen]
    if not ordered:
        return None
    shown = ordered[:max_districts]
    series = series[series["district"].isin(shown)].reset_index(drop=True)
    indices = tuple(dict.fromkeys(table["index"].astype(str)))
    return CropProfiles(index, indices, series, tuple(shown), len(ordered))


def _mpl_text(s: str) -> str:
    """``s`` drawn as it is by matplotlib (a ``$`` would start mathtext)."""
    return s.replace("$", r"\$")


def write_profile_chart(out: str | os.PathLike[str], profiles: CropProfiles, classes: ClassTable) -> Path:
    """One small panel per district (largest crop area first), one line per crop in the class table's
    colours: the area-weighted mean index per date with a light band of +- one std (PNG, atomic)."""
    import pandas as pd  # deferred: slow to import, and only drawing a report needs them
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switching
    from matplotlib.lines import Line2D

    s = profiles.series
    dates = sorted(set(s["date"]))
    parsed = pd.to_datetime(pd.Series(dates), errors="coerce", format="ISO8601")
    as_dates = bool(len(dates)) and not parsed.isna().any()
    xmap = dict(zip(dates, parsed)) if as_dates else {d: float(i) for i, d in enumerate(dates)}
    crops = [c for c in classes.classes if c.crop and ((s["class_id"] == c.id) & (s["observed_ha"] > 0)).any()]
    n = max(len(profiles.districts), 1)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    legend_rows = math.ceil(max(len(crops), 1) / 6)
    height = 1.0 + 2.4 * nrow + 0.3 * legend_rows
    fig = Figure(figsize=(max(8.0, 1.0 + 3.2 * ncol), height), dpi=110)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    for ax, district in zip(axes.flat, profiles.districts):
        sub = s[s["district"] == district]
        drawn = 0
        for c in crops:
            line = sub[(sub["class_id"] == c.id)].sort_values("date")
            if not (line["observed_ha"] > 0).any():
                continue
            x = [xmap[d] for d in line["date"]]
            y = line["mean"].to_numpy(float)
            e = line["std"].to_numpy(float)
            ax.fill_between(x, y - e, y + e, color=c.color, alpha=0.18, lw=0)
            if len(x) == 1:
                ax.errorbar(x, y, yerr=e, fmt="none", ecolor=c.color, alpha=0.5, capsize=3)
            ax.plot(x, y, color=c.color, lw=1.6, marker="o", markersize=4)
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no crop pixel observed", transform=ax.transAxes, ha="center", fontsize=9)
        ax.set_title(_mpl_text(district), fontsize=10, loc="left")
        ax.grid(color="#dddddd", lw=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(profiles.districts):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(_mpl_text(profiles.index), fontsize=9)
    ax0 = axes[0][0]
    if as_dates and len(dates) == 1:  # one date: a tick there, a fortnight either side
        day = parsed.iloc[0]
        ax0.set_xlim(day - pd.Timedelta(days=14), day + pd.Timedelta(days=14))
        ax0.set_xticks([day], [_mpl_text(dates[0])])
    elif as_dates:
        locator = AutoDateLocator(maxticks=6)
        ax0.xaxis.set_major_locator(locator)
        ax0.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        ax0.set_xticks(list(xmap.values()), [_mpl_text(d) for d in dates], rotation=45, ha="right")
    for ax in list(axes.flat)[max(len(profiles.districts) - ncol, 0):len(profiles.districts)]:
        ax.xaxis.set_tick_params(labelbottom=True)  # the bottom panel of each column shows dates
    heading = (f"{_mpl_text(profiles.index)} per crop: area-weighted mean over the pixels mapped as each crop, "
               "shaded ± 1 std")
    if profiles.left_out:
        heading += f" - the {len(profiles.districts)} largest of {profiles.n_districts} districts"
    fig.suptitle(heading, fontsize=11, x=0.01, ha="left")
    handles = [Line2D([], [], color=c.color, lw=2.0, marker="o", markersize=4, label=_mpl_text(c.name))
               for c in crops]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, (0.35 * legend_rows) / height, 1, 1))  # room for the legend; the title's is kept
    target = Path(out)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
