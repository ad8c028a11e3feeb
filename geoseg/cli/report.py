"""``geoseg report RUN_DIR``: (re)build a finished run's quicklooks, district chart and report.html."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import LocalParam, is_quiet
from geoseg.cli.progress import progress_bar
from geoseg.report import write_run_report
from geoseg.rundir import read_manifest, write_manifest


@click.command("report")
@click.argument("run_dir", type=LocalParam("the run folder"))
@click.option("--max-fields", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Field polygons the HTML map loads at most (the largest; the page says how many were left out).")
@click.option("--max-px", type=click.IntRange(min=64), default=1500, show_default=True,
              help="Quicklook rasters are read decimated to at most this many pixels on the long side.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
@click.option("--quiet", is_flag=True, help="Print only the path of report.html.")
def report(run_dir: Path, max_fields: int, max_px: int, as_json: bool, quiet: bool) -> None:
    """Draw the quicklooks, the per-district chart and report.html of a finished run.

    Writes, in RUN_DIR: quicklook_<scene>.png (false colour next to the crop mask, with
    field outlines, districts, legend, scale bar, north arrow and CRS), district_chart.png
    (hectares per crop, districts sorted by total) and report.html (one self-contained page
    that works offline: map of the fields by crop with hover details, sortable district
    table, chart, run summary and stage timings; after `geoseg estimate`, the estimated areas
    with their 95 % confidence intervals, and estimate_chart.png; for a run with
    outputs.features, the crops' growth per district, and profile_chart.png), and records them
    in the run's manifest.
    `geoseg run` does this itself at the end of a run (workflow key outputs.report).

    \b
    Example:
        geoseg report runs/demo/latest
        geoseg report runs/demo/20261124T2130Z-abc --max-fields 20000
    """
    say = (lambda s: None) if quiet or as_json or is_quiet() else (lambda s: click.echo(s, err=True))
    with progress_bar("report") as advance:
        written = write_run_report(run_dir, max_fields=max_fields, max_px=max_px, say=say, progress=advance)
    real = Path(run_dir).resolve()
    manifest = read_manifest(real)
    if manifest.get("status") == "done":  # list the files with the run's other outputs
        manifest["outputs"] = {**(manifest.get("outputs") or {}), **written}
        write_manifest(real, manifest)
    if as_json:
        click.echo(json.dumps(written, indent=2))
    elif quiet:
        click.echo(written["report_html"])
    else:
        for k, v in written.items():
            click.echo(f"{k}: {v}")
