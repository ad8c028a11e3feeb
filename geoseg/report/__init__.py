"""Seeing a run's result: quicklook PNGs, a per-district chart and a self-contained ``report.html``.

:func:`write_run_report` (re)builds them in a finished run directory; ``geoseg run`` calls
it as its last stage and ``geoseg report RUN_DIR`` calls it on demand. Light imports only:
matplotlib, geopandas and pandas load when a report is drawn.

Files written in the run directory:

* ``quicklook_<scene>.png`` - per scene, a false-colour composite next to the crop mask
  (field outlines, district boundaries, legend, scale bar, north arrow, CRS);
* ``district_chart.png`` - stacked bars of hectares per crop, districts sorted by total;
* ``estimate_chart.png`` - when the run folder holds an estimate with districts (``geoseg
  estimate``): mapped and estimated hectares per crop and district, with 95 % confidence
  intervals;
* ``profile_chart.png`` - when the run folder holds ``district_crop_timeseries.parquet`` (a run
  with ``outputs.features``): per district, one line per crop of an index (``ndvi`` when there)
  over the season, the area-weighted mean with a band of +- one std;
* ``report.html`` - an interactive map of the fields by crop (hover for details), the
  sortable district table, the chart, the estimated areas of a reference sample (when
  ``estimate.json`` is there), the crop growth per district (with the profiles), quicklooks,
  the manifest summary and stage timings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import GeosegError, ReportError
from geoseg.io.districts import read_districts
from geoseg.io.raster import RasterInfo, raster_info
from geoseg.report.chart import (
    CropProfiles,
    crop_pivot,
    crop_profiles,
    write_district_chart,
    write_estimate_chart,
    write_profile_chart,
)
from geoseg.report.html import SVG_WIDTH, render_report, svg_map, write_html
from geoseg.report.inputs import MAX_PX, RunData, RunEstimate, load_run, load_run_from, read_fields
from geoseg.report.quicklook import MAX_OUTLINES, crs_label, write_quicklook
from geoseg.rundir import QUICKLOOK_PREFIX, RunPaths, quicklook_key

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["write_run_report", "ReportError", "RunData", "RunEstimate", "load_run", "MAX_FIELDS", "MAX_PX"]

#: Field polygons the HTML map loads at most (the largest by area); the page says when it cut.
MAX_FIELDS = 5000


def write_run_report(
    run_dir: str | os.PathLike[str],
    *,
    manifest: dict[str, Any] | None = None,
    max_fields: int = MAX_FIELDS,
    max_px: int = MAX_PX,
    say: Callable[[str], None] = lambda s: None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Write the quicklooks, the district chart(s) and ``report.html`` of a run; return their paths.

    A run folder with an estimate (``estimate.json`` and its tables, from ``geoseg estimate``)
    gets a section of estimated areas on the page, and with districts the chart of them. A run
    folder with ``district_crop_timeseries.parquet`` (``outputs.features``) gets the chart of the
    crops' index profiles per district and its section; one that cannot be read, a note.

    Parameters
    ----------
    run_dir : path
        A run directory (``runs/<name>/<run-id>`` or ``runs/<name>/latest``).
    manifest : dict, optional
        The run's manifest; read from ``run_dir/manifest.json`` when not given (``geoseg run``
        passes the one it is about to write, with timings and outputs).
    max_fields : int
        Field polygons the HTML map loads at most: the largest, with a note on the page saying
        how many were left out.
    max_px : int
        Quicklook rasters are read decimated to at most this many pixels on the long side.
    say : callable
        Called with a line before each drawing step.
    progress : callable, optional
        ``progress(done, total)`` after the quicklooks, the chart and the page (``total`` steps:
        one per scene, plus two).

    Returns
    -------
    dict
        Output keys and paths: ``quicklook_<scene>`` per scene, ``district_chart`` (when the run
        has a district table), ``estimate_chart`` (when it has an estimate with districts),
        ``profile_chart`` (when it has district crop profiles) and ``report_html``.

    Raises
    ------
    ReportError
        ``run_dir`` has no manifest or no mask.
    """
    paths = RunPaths(Path(run_dir).resolve())  # runs/<name>/latest -> the run itself
    data = load_run(paths.root) if manifest is None else load_run_from(paths.root, manifest)
    notes = list(data.notes)
    layers = _read_layers(data, max(MAX_OUTLINES, max_fields), notes)
    info = raster_info(data.mask)
    step = progress or (lambda done, total: None)
    total = len(data.scenes) + 2
    step(0, total)
    outputs = _draw_quicklooks(paths, data, layers, max_px, notes, say)
    step(len(data.scenes), total)
    pivot = None
    if data.areas is not None and len(data.areas):
        pivot = crop_pivot(data.areas, data.classes)
        outputs["district_chart"] = str(write_district_chart(paths.district_chart, pivot, data.classes))
    est = data.estimate
    if est is not None and est.districts is not None and len(est.districts):
        say("drawing the chart of estimated areas")
        outputs["estimate_chart"] = str(write_estimate_chart(paths.estimate_chart, est.districts, data.classes,
                                                             level=est.level))
    profiles = _draw_profiles(paths, data, notes, say, outputs)
    step(total - 1, total)

    say("writing report.html")
    svg, records, map_note = _map(data, layers, info, max_fields, notes)
    full_outputs = {**(data.manifest.get("outputs") or {}), **outputs, "report_html": str(paths.report_html)}
    page = render_report(
        manifest={**data.manifest, "outputs": full_outputs}, run_dir=paths.root, classes=data.classes, svg=svg,
        records=records, pivot=pivot, areas=data.areas,
        chart=Path(outputs["district_chart"]) if "district_chart" in outputs else None,
        quicklooks={k[len(QUICKLOOK_PREFIX):]: Path(v) for k, v in outputs.items() if k.startswith(QUICKLOOK_PREFIX)},
        notes=notes, map_note=map_note, crs_text=f"CRS {crs_label(info.crs)}", estimate=est,
        estimate_chart=Path(outputs["estimate_chart"]) if "estimate_chart" in outputs else None,
        profiles=profiles, profile_chart=Path(outputs["profile_chart"]) if "profile_chart" in outputs else None,
    )
    outputs["report_html"] = str(write_html(paths.report_html, page))
    step(total, total)
    return outputs


def _draw_profiles(paths: RunPaths, data: RunData, notes: list[str], say: Callable[[str], None],
                   outputs: dict[str, str]) -> CropProfiles | None:
    """The profile chart of a run with district crop profiles (added to ``outputs``); None without
    them, or (with a note) when they hold no crop pixel observed on any date."""
    if data.profiles is None:
        return None
    profiles = crop_profiles(data.profiles, data.classes)
    if profiles is None:
        notes.append(f"crop growth profiles left out: {paths.district_crop_timeseries.name} holds no pixel of a crop "
                     f"class observed on any date")
        return None
    say("drawing the crop growth profiles")
    outputs["profile_chart"] = str(write_profile_chart(paths.profile_chart, profiles, data.classes))
    return profiles


@dataclass(frozen=True)
class _Layers:
    """The vector layers a report draws: the run's largest fields (None without fields), how many
    fields and hectares the run has in all, and the district outlines (None without)."""

    fields: "gpd.GeoDataFrame | None"
    n_fields: int
    field_ha: float
    districts: "gpd.GeoDataFrame | None"


def _read_layers(data: RunData, limit: int, notes: list[str]) -> _Layers:
    """The ``limit`` largest fields and the district outlines; what is missing goes to ``notes``."""
    fields = None
    n_fields, field_ha = 0, float("nan")
    if data.fields is not None:
        fields, n_fields, field_ha = read_fields(
            data.fields, limit=limit,
            columns=["field_id", "class_id", "crop:name", "area_ha", "confidence", "district"])
    else:
        notes.append("no field polygons in this run (outputs.fields is empty): the map shows districts only")
    districts = None
    if data.districts is not None and data.name_field:
        try:
            districts = read_districts(data.districts, data.name_field, warn=False).gdf
        except GeosegError as e:
            notes.append(f"district outlines left out: {e}")
    return _Layers(fields, n_fields, field_ha, districts)


def _draw_quicklooks(paths: RunPaths, data: RunData, layers: _Layers, max_px: int, notes: list[str],
                     say: Callable[[str], None]) -> dict[str, str]:
    """One quicklook per scene whose image is still there (a note for the others); returns the outputs."""
    m = data.manifest
    fields = layers.fields
    outputs = {}
    for name, image, mask in data.scenes:
        if not Path(image).exists():
            notes.append(f"scene {name}: {image} not found, so no quicklook (the input moved or was deleted)")
            continue
        say(f"drawing the quicklook of {name}")
        ql_notes = []
        if fields is not None and layers.n_fields > len(fields):
            ql_notes.append(f"outlines of the {len(fields):,} largest of {layers.n_fields:,} fields")
        path = write_quicklook(paths.quicklook(name), image=image, mask=mask, classes=data.classes,
                               fields=fields, districts=layers.districts, name_field=data.name_field,
                               title=f"run {m.get('run_id', '')} ({m.get('name', '')}) - scene {name}",
                               notes=ql_notes, max_px=max_px)
        outputs[quicklook_key(name)] = str(path)
    return outputs


def _map(data: RunData, layers: _Layers, info: RasterInfo, max_fields: int,
         notes: list[str]) -> tuple[str, list[list[Any]], str]:
    """The page's SVG map of the ``max_fields`` largest fields over the mask's extent, its records,
    and the note under it (also in ``notes`` when fields were left out)."""
    h, w = info.shape
    t = info.transform
    bounds = (t.c, t.f + t.e * h, t.c + t.a * w, t.f)
    fields = shown = layers.fields
    if fields is not None and len(fields) > max_fields:
        keep = fields["area_ha"].to_numpy().argsort(kind="stable")[::-1][:max_fields]
        shown = fields.iloc[sorted(keep)]
    tol = (bounds[2] - bounds[0]) / SVG_WIDTH
    unit = "deg" if info.crs is not None and info.crs.is_geographic else "m"
    svg, records = svg_map(shown, layers.districts, data.name_field, data.classes, bounds, info.crs)
    if fields is None:
        map_note = "No field polygons in this run."
    elif shown is not None and len(shown) < layers.n_fields:
        shown_ha = float(shown["area_ha"].sum())
        share = f" ({100 * shown_ha / layers.field_ha:.1f} % of the field area)" if layers.field_ha > 0 else ""
        map_note = (f"Large run: the map loads the {len(shown):,} largest of {layers.n_fields:,} fields{share}; the "
                    f"rest are left out here but are in the fields files. Outlines are simplified to about "
                    f"{tol:,.3g} {unit}.")
        notes.append(map_note)
    else:
        map_note = f"All {layers.n_fields:,} fields; outlines simplified to about {tol:,.3g} {unit}."
    return svg, records, map_note
