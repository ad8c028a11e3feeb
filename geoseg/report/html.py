"""``report.html``: one self-contained page per run that works offline.

Nothing is fetched by the page: the map is inline SVG (field polygons in the run's CRS,
projected to SVG coordinates and simplified), images are base64 data URIs, and a little
vanilla JavaScript does the hover tooltips, zoom/pan and table sorting. Large runs are cut
down to the largest fields, and the page says so.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geoseg.classes import ClassTable
from geoseg.io.raster import write_text_atomic
from geoseg.ops.query import RUN_TABLES
from geoseg.report.chart import CropProfiles
from geoseg.report.geom import prepare, rings
from geoseg.report.inputs import RunEstimate
from geoseg.rundir import district_areas_name, estimate_table_name

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = ["svg_map", "render_report", "estimate_section", "profile_section", "write_html", "MAX_FIELDS"]

#: Field polygons loaded by the page at most (the largest by area).
MAX_FIELDS = 5000
#: Width of the SVG map in its own units.
SVG_WIDTH = 1000.0


def _svg_paths(geoms: np.ndarray, bounds: tuple[float, float, float, float], scale: float) -> list[str]:
    """One SVG path string (``M x,y x,y ... Z`` per ring) per geometry; empty for missing ones."""
    coords, starts, owner = rings(geoms)
    x0, _, _, y1 = bounds
    sx = np.round((coords[:, 0] - x0) * scale, 1)
    sy = np.round((y1 - coords[:, 1]) * scale, 1)
    pairs = [f"{x:g},{y:g}" for x, y in zip(sx.tolist(), sy.tolist())]
    out = [""] * len(geoms)
    for k in range(len(starts) - 1):
        a, b = starts[k], starts[k + 1]
        if b - a < 4:  # a ring simplified away
            continue
        out[owner[k]] += "M" + " ".join(pairs[a:b - 1]) + "Z"
    return out


def _svg_lines(geoms: np.ndarray, bounds: tuple[float, float, float, float], scale: float) -> str:
    """One SVG path (``M x,y x,y ...`` per line part) for all (multi)linestrings in ``geoms``."""
    g = np.asarray(geoms, dtype=object)
    g = g[~shapely.is_missing(g)]
    parts = shapely.get_parts(g)
    parts = parts[np.isin(shapely.get_type_id(parts), [1, 2])]
    coords, owner = shapely.get_coordinates(parts, return_index=True)
    if not len(coords):
        return ""
    x0, _, _, y1 = bounds
    sx = np.round((coords[:, 0] - x0) * scale, 1).tolist()
    sy = np.round((y1 - coords[:, 1]) * scale, 1).tolist()
    starts = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(parts)))])
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        if b - a >= 2:
            out.append("M" + " ".join(f"{x:g},{y:g}" for x, y in zip(sx[a:b], sy[a:b])))
    return "".join(out)


def svg_map(
    fields: "gpd.GeoDataFrame | None",
    districts: "gpd.GeoDataFrame | None",
    name_field: str | None,
    classes: "ClassTable",
    bounds: tuple[float, float, float, float],
    crs: Any,
) -> tuple[str, list[list[Any]]]:
    """The inline SVG map and the per-field records its tooltips show.

    Coordinates are the run CRS shifted to the map's top-left corner and scaled to
    :data:`SVG_WIDTH` units, outlines simplified to about one SVG unit. Fields are grouped by
    class (``<g data-crop=NAME fill=COLOUR>``); each ``<path class="f" data-i=K>`` points at
    record ``K``: ``[field_id, crop name, area_ha, confidence, district]``.
    """
    x0, y0, x1, y1 = bounds
    scale = SVG_WIDTH / max(x1 - x0, 1e-12)
    height = (y1 - y0) * scale
    tol = 1.0 / scale
    parts = [f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SVG_WIDTH:g} {height:.1f}" '
             f'data-w="{SVG_WIDTH:g}" data-h="{height:.1f}" preserveAspectRatio="xMidYMid meet">',
             f'<rect x="0" y="0" width="{SVG_WIDTH:g}" height="{height:.1f}" fill="#ffffff" stroke="#999"/>']
    records: list[list[Any]] = []
    if fields is not None and len(fields):
        f = fields.to_crs(crs) if crs is not None and fields.crs is not None and fields.crs != crs else fields
        geoms = prepare(np.asarray(f.geometry.values, dtype=object), bounds, tol)
        paths = _svg_paths(geoms, bounds, scale)
        cid = f["class_id"].to_numpy() if "class_id" in f.columns else np.zeros(len(f), int)
        col = {c: f[c].to_numpy() if c in f.columns else np.full(len(f), None, object)
               for c in ("field_id", "area_ha", "confidence", "district")}
        for c in classes.classes:
            idx = np.flatnonzero((cid == c.id) & np.array([bool(p) for p in paths]))
            if not len(idx):
                continue
            parts.append(f'<g class="crop" data-crop="{escape(c.name)}" fill="{c.color}">')
            for i in idx:
                k = len(records)
                conf = col["confidence"][i]
                records.append([
                    None if col["field_id"][i] is None else int(col["field_id"][i]),
                    c.name,
                    None if col["area_ha"][i] is None else round(float(col["area_ha"][i]), 2),
                    None if conf is None or not np.isfinite(float(conf)) else round(float(conf), 3),
                    None if col["district"][i] is None else str(col["district"][i]),
                ])
                parts.append(f'<path class="f" data-i="{k}" d="{paths[i]}"/>')
            parts.append("</g>")
    if districts is not None and len(districts):
        d = districts.to_crs(crs) if crs is not None and districts.crs != crs else districts
        raw = np.asarray(d.geometry.values, dtype=object)
        dg = prepare(raw, bounds, tol)  # clipped polygons: for labels
        # outlines as clipped lines, so that the clip rectangle itself is never drawn
        lines = prepare(shapely.boundary(shapely.simplify(raw, tol, preserve_topology=True)), bounds, 0.0)
        parts.append('<g class="districts">')
        names = d[name_field].astype(str).to_numpy() if name_field and name_field in d.columns else [""] * len(d)
        for name, line in zip(names, lines):
            p = _svg_lines(np.array([line], dtype=object), bounds, scale) if line is not None else ""
            if p:
                parts.append(f'<path class="d" d="{p}"><title>{escape(name)}</title></path>')
        ok = np.array([g is not None for g in dg])
        for name, pt in zip(np.asarray(names, dtype=object)[ok], shapely.point_on_surface(dg[ok])):
            parts.append(f'<text class="dl" x="{(pt.x - x0) * scale:.1f}" y="{(y1 - pt.y) * scale:.1f}">'
                         f'{escape(str(name))}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts), records


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _thumbnail_uri(path: Path, width: int = 1200) -> str:
    """A JPEG copy of a PNG, at most ``width`` px wide, as a data URI (keeps the page small)."""
    from PIL import Image  # deferred: Pillow comes with matplotlib, which only drawing a report loads

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(v: float, digits: int = 1) -> str:
    return f'<td class="n" data-v="{v:.6g}">{v:,.{digits}f}</td>'


def _district_table(pivot: "pd.DataFrame", areas: "pd.DataFrame", crops: list[str]) -> str:
    per = areas.groupby("district", sort=False).agg(
        observed_ha=("observed_ha", "first"), district_ha=("district_ha", "first"), coverage=("coverage", "first")
    ) if {"observed_ha", "district_ha", "coverage"} <= set(areas.columns) else None
    head = ['<th data-type="text">district</th>'] + [f'<th data-type="num">{escape(c)} ha</th>' for c in crops]
    head += ['<th data-type="num">all crops ha</th>']
    if per is not None:
        head += ['<th data-type="num">observed ha</th>', '<th data-type="num">in the raster</th>']
    rows = []
    for district, r in pivot.iterrows():
        cells = [f'<td data-v="{escape(str(district))}">{escape(str(district))}</td>']
        cells += [_num(float(r[c])) for c in crops] + [_num(float(r["total"]))]
        if per is not None and district in per.index:
            p = per.loc[district]
            cells += [_num(float(p.observed_ha)), f'<td class="n" data-v="{float(p.coverage):.6g}">'
                      f'{100 * float(p.coverage):.1f} %</td>']
        elif per is not None:
            cells += ["<td></td>", "<td></td>"]
        rows.append(f'<tr data-district="{escape(str(district))}">' + "".join(cells) + "</tr>")
    foot = ['<td>all districts</td>'] + [_num(float(pivot[c].sum())) for c in crops] + [_num(float(pivot["total"].sum()))]
    if per is not None:
        foot += [_num(float(per.observed_ha.sum())), "<td></td>"]
    return ('<table id="districts" class="sortable"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody><tfoot><tr>" + "".join(foot) + "</tr></tfoot></table>")


def _finite(v: Any) -> float | None:
    """``v`` as a float, or None when it is missing or not finite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ha(v: Any) -> str:
    """A cell of hectares (one decimal); a dash when missing."""
    f = _finite(v)
    return '<td class="n" data-v="">&ndash;</td>' if f is None else _num(f)


def _share(v: Any, se: Any, z: float) -> str:
    """A cell of an accuracy: ``79.4 % ± 13.8`` (the ± in percentage points: ``z`` standard errors)."""
    f = _finite(v)
    if f is None:
        return '<td class="n" data-v="">&ndash;</td>'
    e = _finite(se)
    pm = "" if e is None else f" &plusmn; {100 * z * e:.1f}"
    return f'<td class="n" data-v="{f:.6g}">{100 * f:.1f} %{pm}</td>'


def _ci(low: Any, high: Any) -> str:
    """A cell of a confidence interval, ``62.8 – 214.3`` (sorted by its lower end)."""
    lo, hi = _finite(low), _finite(high)
    if lo is None or hi is None:
        return '<td class="n" data-v="">&ndash;</td>'
    return f'<td class="n" data-v="{lo:.6g}">{lo:,.1f} &ndash; {hi:,.1f}</td>'


def _half(low: Any, high: Any) -> str:
    """A cell of a confidence interval's half-width, ``± 38.6``."""
    lo, hi = _finite(low), _finite(high)
    if lo is None or hi is None:
        return '<td class="n" data-v="">&ndash;</td>'
    half = (hi - lo) / 2
    return f'<td class="n" data-v="{half:.6g}">&plusmn; {half:,.1f}</td>'


def _estimate_areas_table(est: RunEstimate, z: float, level: float) -> tuple[str, list[str]]:
    """The per-class table and the classes left out (neither mapped nor in the sample)."""
    t = est.areas.sort_values("class_id", kind="stable")
    empty = ((t["mapped_ha"].fillna(0) == 0) & (t["estimated_ha"].fillna(0) == 0)
             & (t["points_mapped"].fillna(0) == 0) & (t["points_reference"].fillna(0) == 0))
    left_out = [str(c) for c in t.loc[empty, "crop"]]
    head = ['<th data-type="text">crop</th>', '<th data-type="num">mapped ha</th>',
            '<th data-type="num">estimated ha</th>', f'<th data-type="num">&plusmn; ha ({level:.0f} % CI)</th>',
            f'<th data-type="num">{level:.0f} % CI ha</th>', '<th data-type="num">margin</th>',
            '<th data-type="num">user\'s accuracy</th>', '<th data-type="num">producer\'s accuracy</th>',
            '<th data-type="num">points mapped</th>', '<th data-type="num">points reference</th>']
    rows = []
    for r in t[~empty].itertuples(index=False):
        margin = _finite(r.margin_pct)
        cells = [f'<td data-v="{escape(str(r.crop))}">{escape(str(r.crop))}</td>', _ha(r.mapped_ha),
                 _ha(r.estimated_ha), _half(r.ci_low_ha, r.ci_high_ha), _ci(r.ci_low_ha, r.ci_high_ha),
                 '<td class="n" data-v="">&ndash;</td>' if margin is None else
                 f'<td class="n" data-v="{margin:.6g}">{margin:.1f} %</td>',
                 _share(r.users_accuracy, r.users_se, z), _share(r.producers_accuracy, r.producers_se, z),
                 f'<td class="n" data-v="{int(r.points_mapped)}">{int(r.points_mapped):,}</td>',
                 f'<td class="n" data-v="{int(r.points_reference)}">{int(r.points_reference):,}</td>']
        rows.append(f'<tr data-crop="{escape(str(r.crop))}">' + "".join(cells) + "</tr>")
    shown = t[~empty]
    foot = ["<td>all classes</td>", _ha(shown["mapped_ha"].sum()), _ha(shown["estimated_ha"].sum())]
    foot += ["<td></td>"] * 5 + [f'<td class="n">{int(shown["points_mapped"].sum()):,}</td>',
                                  f'<td class="n">{int(shown["points_reference"].sum()):,}</td>']
    return ('<table id="estimate-areas" class="sortable"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody><tfoot><tr>" + "".join(foot) + "</tr></tfoot></table>"), left_out


def _estimate_districts_table(table: pd.DataFrame, classes: ClassTable, level: float) -> str:
    """Per district and crop (``crop: true`` classes of the run's table; all when it names none of
    them): mapped and estimated hectares with the interval; rows with nothing mapped or estimated
    are left out."""
    crop_ids = {c.id for c in classes.classes if c.crop}
    t = table[table["class_id"].isin(crop_ids)] if table["class_id"].isin(crop_ids).any() else table
    t = t[(t["mapped_ha"].fillna(0) != 0) | (t["estimated_ha"].fillna(0) != 0) | (t["ci_high_ha"].fillna(0) > 0)]
    order = {d: i for i, d in enumerate(dict.fromkeys(table["district"].astype(str)))}
    t = t.assign(_d=t["district"].astype(str).map(order)).sort_values(["_d", "class_id"], kind="stable")
    head = ['<th data-type="text">district</th>', '<th data-type="text">crop</th>',
            '<th data-type="num">mapped ha</th>', '<th data-type="num">estimated ha</th>',
            f'<th data-type="num">&plusmn; ha ({level:.0f} % CI)</th>', f'<th data-type="num">{level:.0f} % CI ha</th>',
            '<th data-type="num">points in the district</th>']
    rows = []
    for r in t.itertuples(index=False):
        d, c = escape(str(r.district)), escape(str(r.crop))
        cells = [f'<td data-v="{d}">{d}</td>', f'<td data-v="{c}">{c}</td>', _ha(r.mapped_ha), _ha(r.estimated_ha),
                 _half(r.ci_low_ha, r.ci_high_ha), _ci(r.ci_low_ha, r.ci_high_ha),
                 f'<td class="n" data-v="{int(r.points)}">{int(r.points):,}</td>']
        rows.append(f'<tr data-estimate-district="{d}" data-crop="{c}">' + "".join(cells) + "</tr>")
    return ('<table id="estimate-districts" class="sortable"><thead><tr>' + "".join(head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def estimate_section(est: RunEstimate, classes: ClassTable, chart: Path | None = None) -> str:
    """The report's section of a reference-sample estimate (``id="estimate-section"``): overall
    accuracy with its interval and the points behind it, the per-class table, and per district
    (when the estimate has districts) a table and ``chart``, a PNG embedded as a data URI."""
    m = est.summary
    z, level = est.z, est.level
    out = ['<section id="estimate-section"><h2>Estimated areas (reference sample)</h2>']
    oa, ci = _finite(m.get("overall_accuracy")), m.get("overall_ci") or [None, None]
    lo, hi = (_finite(ci[0]), _finite(ci[1])) if isinstance(ci, list) and len(ci) == 2 else (None, None)
    labelled, design = m.get("points_labelled"), m.get("points_design")
    parts = []
    if oa is not None:
        interval = f" ({level:.0f} % CI {100 * lo:.1f} &ndash; {100 * hi:.1f} %)" if lo is not None and hi is not None \
            else ""
        parts.append(f"Overall accuracy <b>{100 * oa:.1f} %</b>{interval}")
    if labelled is not None and design is not None:
        parts.append(f"from {escape(str(labelled))} of the design's {escape(str(design))} points labelled")
    total = _finite(m.get("total_area_ha"))
    if total is not None:
        parts.append(f"over {total:,.1f} ha sampled")
    if m.get("strata_by"):
        parts.append(f"strata by {escape(str(m['strata_by']))}")
    out.append(f'<p id="estimate-overall">{"; ".join(parts)}.</p>')
    table, left_out = _estimate_areas_table(est, z, level)
    out.append(table)
    out.append(
        f'<p class="note">Intervals are {level:.0f} % confidence intervals: the estimate &plusmn; {z:.2f} standard '
        "errors of the stratified estimators of Olofsson et al. (2014) and Stehman (2014). Mapped hectares count "
        "the map's pixels (each pixel's ground area) over the sampled area; estimated hectares correct them with "
        "the reference classes of the sample points. User's accuracy: the share of points mapped as a class that "
        "are that class; producer's accuracy: the share of a class's area that the map finds. "
        + (f"Classes neither mapped nor found in the sample are left out ({escape(', '.join(left_out))}). "
           if left_out else "")
        + f"See {escape(estimate_table_name('areas', 'csv'))} and "
        f"{escape(estimate_table_name('matrix', 'csv'))} (the error matrix).</p>")
    if est.districts is not None and len(est.districts):
        out.append("<h3>Per district</h3>")
        out.append(_estimate_districts_table(est.districts, classes, level))
        out.append(f'<p class="note">Mapped hectares are the map\'s pixels in each district; the estimate and its '
                   f"{level:.0f} % interval come from the sample points, so districts with few points have wide "
                   f"intervals. See {escape(estimate_table_name('districts', 'csv'))}.</p>")
        if chart is not None and chart.exists():
            out.append(f'<img class="fig" id="estimate-chart" alt="mapped and estimated crop area per district" '
                       f'src="{_data_uri(chart)}">')
    for note in m.get("notes") or []:
        out.append(f'<p class="note">{escape(str(note))}</p>')
    out.append("</section>")
    return "".join(out)


def profile_section(profiles: CropProfiles, chart: Path | None = None) -> str:
    """The report's section of the crops' index profiles per district (``id="profile-section"``):
    which index and districts it shows (and how many districts were left out), ``chart``, a PNG
    embedded as a data URI, and what the lines are and where their numbers are."""
    index = escape(profiles.index)
    shown = ", ".join(profiles.districts)
    n = len(profiles.districts)
    summary = f"<b>{index}</b> of each crop over the season in {n} district{'' if n == 1 else 's'}: {escape(shown)}"
    if profiles.left_out:
        summary += (f" (the {n} largest by crop area; {profiles.left_out} smaller district"
                    f"{' is' if profiles.left_out == 1 else 's are'} left out of the chart, not of the tables)")
    others = [i for i in profiles.indices if i != profiles.index]
    if others:
        summary += f". The tables also hold {escape(', '.join(others))}"
    views = ("district_crop_timeseries", "field_timeseries")
    out = ['<section id="profile-section"><h2>Crop growth per district</h2>',
           f'<p id="profile-summary">{summary}.</p>']
    if chart is not None and chart.exists():
        out.append(f'<img class="fig" id="profile-chart" alt="{index} per crop and district over the season" '
                   f'src="{_data_uri(chart)}">')
    out.append(
        f'<p class="note">Each line is the area-weighted mean of {index} over the pixels mapped as that crop in the '
        "district, per date (several scenes pooled by the area each observed); shaded: &plusmn; one standard "
        f"deviation; the numbers, for every index, are in {escape(RUN_TABLES[views[0]])} (per field: "
        f"{escape(RUN_TABLES[views[1]])}) and in the SQL views {views[0]} and {views[1]} of "
        "<code>geoseg query</code>.</p>")
    out.append("</section>")
    return "".join(out)


def _kv_table(items: list[tuple[str, str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in items) + "</table>"


def _timings(timings: dict[str, float]) -> str:
    if not timings:
        return "<p>no stage timings recorded</p>"
    top = max(timings.values()) or 1.0
    total = sum(timings.values())
    rows = "".join(
        f'<tr><th>{escape(k)}</th><td class="n">{v:,.1f} s</td><td class="bar"><span style="width:'
        f'{100 * v / top:.1f}%"></span></td></tr>' for k, v in timings.items()
    )
    return (f'<table class="timings">{rows}<tr><th>total</th><td class="n">{total:,.1f} s</td><td></td></tr>'
            "</table>")


def _manifest_summary(m: dict[str, Any]) -> str:
    model = m.get("model") or {}
    items = [
        ("run", escape(f"{m.get('run_id', '?')} of {m.get('name', '?')}")),
        ("status", escape(str(m.get("status", "?")))),
        ("started / ended", escape(f"{m.get('started', '-')} / {m.get('ended', '-')}")),
        ("resumed", escape(str(m.get("resumed", 0)))),
        ("host", escape(str(m.get("host", "-")))),
        ("workflow", escape(f"{m.get('workflow', '-')} (sha256 {str(m.get('workflow_sha256', ''))[:12]})")),
        ("model", escape(f"{model.get('path', '-')} ({model.get('arch', '?')}/{model.get('encoder', '?')}, "
                         f"sha256 {str(model.get('weights_sha256', ''))[:12]})")),
        ("tiles", escape(f"{m.get('tiles', '-')} ({m.get('tiles_skipped', 0)} reused from the store)")),
        ("inputs", "<br>".join(escape(f"{i.get('path')} ({(i.get('bytes') or 0) / 1e6:,.1f} MB)"
                                      if i.get("bytes") is not None else f"{i.get('path')} (remote)")
                               for i in m.get("inputs") or [])),
        ("versions", escape(", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))),
    ]
    problems = (m.get("stats") or {}).get("district_problems") or []
    if problems:
        items.append(("district problems", "<br>".join(escape(str(p)) for p in problems)))
    return _kv_table(items)


def _outputs(outputs: dict[str, str], run_dir: Path) -> str:
    rows = []
    for k, v in outputs.items():
        p = Path(v)
        try:
            rel = p.relative_to(run_dir).as_posix()
        except ValueError:
            rel = p.as_uri() if p.is_absolute() else p.as_posix()
        rows.append((k, f'<a href="{escape(rel)}">{escape(str(v))}</a>'))
    return _kv_table(rows)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:10px 20px;background:#23395d;color:#fff}header h1{font-size:20px;margin:0}header p{margin:4px 0 0;font-size:13px}
main{padding:10px 20px}section{margin:0 0 22px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px}
.mapwrap{display:flex;gap:14px;align-items:flex-start}#mapbox{position:relative;flex:0 0 auto;width:min(820px,70vw);border:1px solid #999;background:#fff}
#map{display:block;width:100%;height:auto;max-height:80vh;cursor:grab}
#map .f{fill-rule:evenodd;stroke:#303030;stroke-width:.4px;vector-effect:non-scaling-stroke}
#map .f:hover{stroke:#000;stroke-width:2.5px}
#map .d{fill:none;stroke:#000;stroke-width:2px;vector-effect:non-scaling-stroke;pointer-events:stroke}
#map .dl{font-size:19px;font-weight:bold;text-anchor:middle;dominant-baseline:middle;fill:#000;stroke:#fff;stroke-width:3px;paint-order:stroke;pointer-events:none}
#tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #555;padding:4px 7px;font-size:12px;display:none;white-space:nowrap;z-index:5}
.legend{font-size:13px;min-width:150px}.legend div{margin:3px 0}.legend i{display:inline-block;width:14px;height:14px;border:1px solid #333;margin-right:6px;vertical-align:-2px}
.note{font-size:12px;color:#555}button{font-size:12px}
table{border-collapse:collapse;font-size:13px;background:#fff}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}table.sortable th{cursor:pointer;background:#eef1f6;user-select:none}
table.sortable th.asc:after{content:" \\25B2"}table.sortable th.desc:after{content:" \\25BC"}tfoot td{font-weight:bold}
table.kv th{background:#f2f2f2;width:160px;vertical-align:top}table.timings td.bar{width:300px}
table.timings td.bar span{display:block;height:10px;background:#4575b4}img.fig{max-width:100%;border:1px solid #ccc;background:#fff}
"""

_JS = r"""
(function(){
 var rec=JSON.parse(document.getElementById('field-data').textContent);
 var svg=document.getElementById('map'),tip=document.getElementById('tip'),box=document.getElementById('mapbox');
 function fmt(v,d){return v===null?'-':Number(v).toLocaleString(undefined,{maximumFractionDigits:d});}
 svg.addEventListener('mousemove',function(e){
  var t=e.target;if(!t.classList||!t.classList.contains('f')){tip.style.display='none';return;}
  var r=rec[+t.getAttribute('data-i')];
  tip.innerHTML='<b>'+r[1]+'</b><br>area '+fmt(r[2],2)+' ha<br>confidence '+(r[3]===null?'-':fmt(r[3],3))+
   '<br>district '+(r[4]===null?'-':r[4])+'<br>field '+(r[0]===null?'-':r[0]);
  var b=box.getBoundingClientRect();tip.style.left=(e.clientX-b.left+14)+'px';tip.style.top=(e.clientY-b.top+10)+'px';
  tip.style.display='block';});
 svg.addEventListener('mouseleave',function(){tip.style.display='none';});
 var W=+svg.getAttribute('data-w'),H=+svg.getAttribute('data-h'),vb=[0,0,W,H];
 function set(){svg.setAttribute('viewBox',vb.join(' '));}
 svg.addEventListener('wheel',function(e){e.preventDefault();var r=svg.getBoundingClientRect();
  var s=Math.min(r.width/vb[2],r.height/vb[3]),ox=(r.width-vb[2]*s)/2,oy=(r.height-vb[3]*s)/2;
  var mx=vb[0]+(e.clientX-r.left-ox)/s,my=vb[1]+(e.clientY-r.top-oy)/s,k=e.deltaY>0?1.25:0.8;
  vb=[mx-(mx-vb[0])*k,my-(my-vb[1])*k,vb[2]*k,vb[3]*k];set();},{passive:false});
 var drag=null;svg.addEventListener('mousedown',function(e){drag=[e.clientX,e.clientY,vb[0],vb[1]];});
 window.addEventListener('mouseup',function(){drag=null;});
 window.addEventListener('mousemove',function(e){if(!drag)return;var r=svg.getBoundingClientRect();
  var s=Math.min(r.width/vb[2],r.height/vb[3]);vb[0]=drag[2]-(e.clientX-drag[0])/s;vb[1]=drag[3]-(e.clientY-drag[1])/s;set();});
 document.getElementById('reset').addEventListener('click',function(){vb=[0,0,W,H];set();});
 document.querySelectorAll('table.sortable').forEach(function(tb){
  tb.querySelectorAll('thead th').forEach(function(th,col){th.addEventListener('click',function(){
   var num=th.getAttribute('data-type')==='num',asc=!th.classList.contains('asc');
   tb.querySelectorAll('thead th').forEach(function(h){h.classList.remove('asc','desc');});
   th.classList.add(asc?'asc':'desc');var body=tb.tBodies[0],rows=Array.prototype.slice.call(body.rows);
   rows.sort(function(a,b){var x=a.cells[col].getAttribute('data-v'),y=b.cells[col].getAttribute('data-v');
    var c=num?(parseFloat(x)-parseFloat(y)):x.localeCompare(y);return asc?c:-c;});
   rows.forEach(function(r){body.appendChild(r);});});});});
})();
"""


def render_report(
    *,
    manifest: dict[str, Any],
    run_dir: Path,
    classes: "ClassTable",
    svg: str,
    records: list[list[Any]],
    pivot: "pd.DataFrame | None",
    areas: "pd.DataFrame | None",
    chart: Path | None,
    quicklooks: dict[str, Path],
    notes: list[str],
    map_note: str,
    crs_text: str,
    estimate: RunEstimate | None = None,
    estimate_chart: Path | None = None,
    profiles: CropProfiles | None = None,
    profile_chart: Path | None = None,
) -> str:
    """The report page as one HTML string (no external resources); with ``estimate``, its section
    (:func:`estimate_section`) after the district chart; with ``profiles``, their section
    (:func:`profile_section`) after that."""
    m = manifest
    crops_present = {r[1] for r in records}
    legend = "".join(f'<div><i style="background:{c.color}"></i>{escape(c.name)}'
                     f'{"" if c.name in crops_present or not c.crop else " <span class=note>(no field)</span>"}</div>'
                     for c in classes.classes if c.crop or c.name in crops_present)
    legend += '<div><i style="background:#fff;border:2px solid #000;height:10px"></i>district boundary</div>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>geoseg run {escape(str(m.get('run_id', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<header><h1>geoseg run {escape(str(m.get('run_id', '')))} &mdash; {escape(str(m.get('name', '')))}</h1>",
        f"<p>status {escape(str(m.get('status', '?')))} &middot; started {escape(str(m.get('started', '-')))} "
        f"&middot; {escape(crs_text)}</p></header><main>",
        '<section id="map-section"><h2>Fields by crop</h2><div class="mapwrap">',
        f'<div id="mapbox">{svg}<div id="tip"></div></div>',
        f'<div class="legend">{legend}<p class="note">{escape(map_note)}</p>'
        '<p class="note">Hover a field for crop, area, confidence and district; scroll to zoom, drag to pan.</p>'
        '<button id="reset" type="button">reset view</button></div></div></section>',
        '<section id="table-section"><h2>Crop area per district (hectares)</h2>',
    ]
    if pivot is not None and areas is not None:
        crops = [c.name for c in classes.classes if c.crop and c.name in pivot.columns]
        out.append(_district_table(pivot, areas, crops))
        out.append('<p class="note">Click a column heading to sort. Hectares from the mask (every pixel\'s ground '
                   f'area, border pixels split by coverage); see {district_areas_name("csv")}.</p>')
    else:
        out.append("<p>No district table in this run (no districts in the workflow, or outputs.district_areas "
                   "is false).</p>")
    out.append("</section>")
    if chart is not None and chart.exists():
        out.append('<section id="chart-section"><h2>Chart</h2>'
                   f'<img class="fig" id="chart" alt="crop area per district" src="{_data_uri(chart)}"></section>')
    if estimate is not None:
        out.append(estimate_section(estimate, classes, estimate_chart))
    if profiles is not None:
        out.append(profile_section(profiles, profile_chart))
    if quicklooks:
        out.append('<section id="quicklook-section"><h2>Quicklooks</h2>')
        for name, p in quicklooks.items():
            out.append(f'<p>{escape(name)} (full size: <a href="{escape(p.name)}">{escape(p.name)}</a>)</p>'
                       f'<img class="fig" alt="quicklook {escape(name)}" src="{_thumbnail_uri(p)}">')
        out.append("</section>")
    out.append(f'<section id="manifest-section"><h2>Run</h2>{_manifest_summary(m)}</section>')
    out.append(f'<section id="timings-section"><h2>Stage timings</h2>{_timings(m.get("timings") or {})}</section>')
    out.append(f'<section id="outputs-section"><h2>Outputs</h2>{_outputs(m.get("outputs") or {}, run_dir)}'
               "</section>")
    if notes:
        out.append('<section id="notes-section"><h2>Notes</h2><ul>'
                   + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></section>")
    data = json.dumps(records, separators=(",", ":")).replace("</", "<\\/")
    out.append(f'</main><script type="application/json" id="field-data">{data}</script>')
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out)


def write_html(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return write_text_atomic(path, text)
