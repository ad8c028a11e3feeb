"""The quicklook PNG of one scene: a false-colour composite next to the crop mask.

Both panels share the scene's extent and CRS. The mask panel carries field outlines and
district boundaries; beneath are a legend (crop names in class colours), and the left
panel has a scale bar and a north arrow; the CRS is written under the panels. Rasters are
read decimated to at most :data:`~geoseg.report.inputs.MAX_PX` px on the long side.

matplotlib is imported inside the drawing functions: it is slow to import, and only drawing
needs it (``geoseg --help`` and a run without a report do not).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geoseg.classes import ClassTable
from geoseg.io.raster import atomic_output, open_raster, raster_info
from geoseg.report.geom import prepare, rings
from geoseg.report.inputs import MAX_PX, false_colour_bands, read_decimated

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["write_quicklook", "stretch", "class_rgba", "nice_length"]

#: Fields drawn as outlines at most (the largest); the rest are still in the mask colours.
MAX_OUTLINES = 100_000


def stretch(rgb: np.ndarray, valid: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Scale each band of ``rgb`` (3, h, w) to 0..1 between its ``low``/``high`` percentiles of valid pixels.

    Invalid pixels are white. Returns (h, w, 3) float32.

    Examples
    --------
    >>> a = np.arange(12, dtype="uint16").reshape(3, 2, 2)
    >>> out = stretch(a, np.array([[True, True], [True, False]]))
    >>> out.shape, out[1, 1].tolist()
    ((2, 2, 3), [1.0, 1.0, 1.0])
    """
    out = np.ones(rgb.shape[1:] + (3,), dtype="float32")
    if not valid.any():
        return out
    for i in range(3):
        band = rgb[i].astype("float32")
        lo, hi = np.percentile(band[valid], [low, high])
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        out[..., i] = np.where(valid, np.clip(scaled, 0, 1), 1.0)
    return out


def class_rgba(mask: np.ndarray, classes: "ClassTable") -> np.ndarray:
    """The mask in class colours, (h, w, 4) uint8; nodata and unknown values are transparent.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> class_rgba(np.array([[1, 255]], dtype="uint8"), default_classes())[0].tolist()[1]
    [0, 0, 0, 0]
    """
    lut = np.zeros((256, 4), dtype="uint8")
    for c in classes.classes:
        lut[c.id] = (*c.rgb, 255)
    return lut[mask]


def nice_length(span: float) -> float:
    """A round length (1, 2 or 5 x 10^k) close to a fifth of ``span``.

    Examples
    --------
    >>> nice_length(20480.0), nice_length(900.0)
    (2000.0, 100.0)
    """
    target = span / 5
    k = 10 ** math.floor(math.log10(target))
    return float(max(m * k for m in (1, 2, 5) if m * k <= target))


def _segments(geoms: np.ndarray) -> list[np.ndarray]:
    coords, starts, _ = rings(geoms)
    return np.split(coords, starts[1:-1]) if len(coords) else []


def _scale_bar(ax: Any, extent: tuple[float, float, float, float], crs: Any) -> None:
    x0, x1, y0, y1 = extent
    metres_per_unit = 1.0
    if crs is not None and crs.is_geographic:
        metres_per_unit = 111_320 * math.cos(math.radians((y0 + y1) / 2))
    span_m = (x1 - x0) * metres_per_unit
    length_m = nice_length(span_m)
    length = length_m / metres_per_unit
    bx, by = x0 + 0.05 * (x1 - x0), y0 + 0.05 * (y1 - y0)
    h = 0.012 * (y1 - y0)
    ax.fill([bx, bx + length / 2, bx + length / 2, bx], [by, by, by + h, by + h], color="black", zorder=5)
    ax.fill([bx + length / 2, bx + length, bx + length, bx + length / 2], [by, by, by + h, by + h], color="white",
            ec="black", lw=0.8, zorder=5)
    label = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.text(bx + length / 2, by + 2.2 * h, label, ha="center", va="bottom", fontsize=9, zorder=5,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})


def _north_arrow(ax: Any) -> None:
    ax.annotate("N", xy=(0.93, 0.95), xytext=(0.93, 0.83), xycoords="axes fraction", ha="center", va="center",
                fontsize=12, fontweight="bold", zorder=6,
                arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 2},
                bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": "black", "alpha": 0.85})


def crs_label(crs: Any) -> str:
    """``EPSG:32643 (WGS 84 / UTM zone 43N)``, or the CRS's own string."""
    if crs is None:
        return "no CRS"
    try:
        from pyproj import CRS  # deferred, as geopandas (which loads it): only drawing a report needs it

        p = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        epsg = p.to_epsg()
        return f"EPSG:{epsg} ({p.name})" if epsg else p.name
    except Exception:  # noqa: BLE001 - a label only
        return str(crs)


def _best_date(image: Path, candidates: list[tuple[str, list[int]]]) -> tuple[str, list[int]]:
    """The date whose NIR band has the most observed pixels (clouds and collars cost), on a coarse read."""
    if len(candidates) == 1:
        return candidates[0]
    a, _, _, nodata = read_decimated(image, [c[1][0] for c in candidates], max_px=256)
    a = a.astype("float32")
    valid = ~np.isnan(a) & (a != nodata) if nodata is not None else ~np.isnan(a)
    counts = valid.reshape(len(candidates), -1).sum(axis=1)
    return candidates[int(np.argmax(counts))]


def write_quicklook(
    out: str | os.PathLike[str],
    *,
    image: str | os.PathLike[str],
    mask: str | os.PathLike[str],
    classes: "ClassTable",
    fields: "gpd.GeoDataFrame | None" = None,
    districts: "gpd.GeoDataFrame | None" = None,
    name_field: str | None = None,
    title: str = "",
    notes: list[str] | None = None,
    max_px: int = MAX_PX,
) -> Path:
    """Draw the quicklook of one scene into ``out`` (PNG, written atomically).

    Parameters
    ----------
    image : path
        The scene (its bands described as ``"<date> <band>"`` pick the false-colour bands: NIR, red, green).
    mask : path
        The class mask on the scene's grid.
    fields, districts : GeoDataFrame, optional
        Field polygons and district boundaries (any CRS; reprojected to the mask's).
    name_field : str, optional
        The district name attribute, for labels.
    notes : list of str, optional
        Lines printed under the panels (e.g. how many outlines were left out).
    """
    date, composite, img_extent = _composite(image, max_px)
    m, t_mask, crs, _ = read_decimated(mask, 1, max_px=max_px)
    colours = class_rgba(m[0], classes)
    present = set(np.unique(m[0]).tolist())
    del m
    h, w = colours.shape[:2]
    left, top = t_mask.c, t_mask.f
    right, bottom = left + t_mask.a * w, top + t_mask.e * h
    extent = (left, right, bottom, top)
    pixel = abs(t_mask.a)
    bounds = (left, bottom, right, top)

    fig, (ax_img, ax_mask), H = _figure((top - bottom) / max(right - left, 1e-9))
    ax_img.imshow(composite, extent=img_extent, interpolation="nearest")
    ax_img.set_title(f"false colour (NIR, red, green){' - ' + date if date else ''}", fontsize=11)
    ax_mask.imshow(colours, extent=extent, interpolation="nearest")
    ax_mask.set_title("crop map", fontsize=11)
    if fields is not None and len(fields):
        _draw_fields(ax_mask, fields, crs, bounds, pixel)
    if districts is not None and len(districts):
        _draw_districts((ax_img, ax_mask), districts, name_field, crs, bounds, pixel)
    for ax in (ax_img, ax_mask):
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    _scale_bar(ax_img, extent, crs)
    _north_arrow(ax_img)
    _legend(fig, classes, present, H)

    shown_as = " (decimated)" if pixel > 1.001 * raster_info(mask).res[0] else ""
    unit = "deg" if crs is not None and crs.is_geographic else "m"
    foot = f"CRS: {crs_label(crs)}   pixel {pixel:g} {unit}{shown_as}" + ("   " + "; ".join(notes) if notes else "")
    fig.text(0.5, 0.012, foot, ha="center", va="bottom", fontsize=8.5, color="#333333")
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.12 / H, va="top")
    target = Path(out)
    with atomic_output(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return target


def _composite(image: str | os.PathLike[str], max_px: int) -> tuple[str, np.ndarray, tuple[float, ...]]:
    """The false-colour composite of the scene's best date: the date, the stretched (h, w, 3) image
    (read decimated) and its extent (left, right, bottom, top)."""
    with open_raster(image) as src:
        descriptions = list(src.descriptions)
    date, bands = _best_date(Path(image), false_colour_bands(descriptions))
    rgb, t_img, _, nodata = read_decimated(image, bands, max_px=max_px)
    valid = np.all(rgb != nodata, axis=0) if nodata is not None else np.ones(rgb.shape[1:], bool)
    valid &= ~np.any(np.isnan(rgb.astype("float32")), axis=0)
    composite = stretch(rgb, valid)
    del rgb
    ih, iw = composite.shape[:2]
    return date, composite, (t_img.c, t_img.c + t_img.a * iw, t_img.f + t_img.e * ih, t_img.f)


def _figure(aspect: float) -> tuple[Any, Any, float]:
    """The figure with its two panels side by side for a scene of ``aspect`` (height / width), and
    the figure's height in inches."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switching

    panel_w = 7.6
    panel_h = min(max(panel_w * aspect, 3.0), 12.0)
    H = panel_h + 1.7
    fig = Figure(figsize=(2 * panel_w + 0.6, H), dpi=110)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.55 / H, bottom=1.05 / H,
                        wspace=0.04)
    return fig, axes, H


def _draw_fields(ax: Any, fields: "gpd.GeoDataFrame", crs: Any, bounds: tuple[float, float, float, float],
                 pixel: float) -> None:
    """Field outlines on the mask panel, clipped to it and simplified to about a pixel."""
    from matplotlib.collections import LineCollection

    f = fields.to_crs(crs) if crs is not None and fields.crs is not None and fields.crs != crs else fields
    geoms = prepare(f.geometry.values.to_numpy() if hasattr(f.geometry.values, "to_numpy")
                    else np.asarray(f.geometry.values), bounds, pixel)
    ax.add_collection(LineCollection(_segments(geoms), colors="#202020", linewidths=0.25, zorder=3))


def _draw_districts(axes: tuple[Any, Any], districts: "gpd.GeoDataFrame", name_field: str | None, crs: Any,
                    bounds: tuple[float, float, float, float], pixel: float) -> None:
    """District boundaries on both panels, and their names on the mask panel (the second)."""
    from matplotlib.collections import LineCollection

    d = districts.to_crs(crs) if crs is not None and districts.crs != crs else districts
    dg = prepare(np.asarray(d.geometry.values, dtype=object), bounds, pixel)
    segs = _segments(dg)
    for ax in axes:
        ax.add_collection(LineCollection(segs, colors="black", linewidths=2.2, zorder=4))
        ax.add_collection(LineCollection(segs, colors="white", linewidths=0.8, zorder=4))
    if name_field and name_field in d.columns:
        ok = np.array([g is not None for g in dg])
        pts = shapely.point_on_surface(dg[ok])
        for name, p in zip(d[name_field].to_numpy()[ok], pts):
            axes[1].text(p.x, p.y, str(name), ha="center", va="center", fontsize=9, zorder=6,
                         bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "black", "lw": 0.5,
                               "alpha": 0.85})


def _legend(fig: Any, classes: "ClassTable", present: set[int], H: float) -> None:
    """The class colours under the panels; classes absent from the mask say ``(none)``."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c.color, edgecolor="#333333", label=c.name + ("" if c.id in present else " (none)"))
               for c in classes.classes]
    handles.append(Patch(facecolor="white", edgecolor="#333333", label="no data"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize=10,
               bbox_to_anchor=(0.5, 0.35 / H), handlelength=1.6)
