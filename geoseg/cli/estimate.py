"""``geoseg estimate``: crop areas with confidence intervals from a labelled reference sample."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import is_quiet, json_option, overwrite_option
from geoseg.ops.estimate import estimate_file
from geoseg.ops.query import format_table


@click.command("estimate")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, path_type=Path))
@click.option("--design", type=click.Path(exists=True, path_type=Path), default=None,
              help="The sample's design.json (default: SOURCE/sample/design.json for a run folder).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the tables (default: the run folder, or the design's folder).")
@click.option("--id-field", default="point_id", show_default=True, help="The column of LABELS holding point ids.")
@click.option("--reference-field", default="reference", show_default=True,
              help="The column of LABELS holding each point's true class (a name or an id; empty: not labelled).")
@overwrite_option
@json_option(help="Print the summary and the per-class table as one JSON object.")
def estimate(source: Path, labels: Path, design: Path | None, out: Path | None, id_field: str, reference_field: str,
             overwrite: bool, as_json: bool) -> None:
    """Estimate each crop's area, with its 95 % confidence interval, from labelled points.

    SOURCE is a run folder (its sample/design.json; the tables go into the run, where
    `geoseg report` and `geoseg query` find them) or a design.json. LABELS is points.csv
    (or a GeoPackage, Parquet ...) with the `reference` column filled in. Writes
    estimate_areas (per class: mapped and estimated hectares, SE, CI, user's and producer's
    accuracy), estimate_districts (per district and class), estimate_matrix (the error
    matrix in points, area proportions and hectares) as CSV and Parquet, and estimate.json.

    \b
    Examples:
        geoseg estimate runs/demo/latest labelled.csv
        geoseg estimate sample/design.json visits.gpkg --reference-field crop --out estimate/
    """
    folder, est = estimate_file(source, labels, out, design=design, id_field=id_field,
                                reference_field=reference_field, overwrite=overwrite)
    s = est.summary
    if as_json:
        click.echo(json.dumps({"folder": str(folder), **{k: v for k, v in s.items() if k != "strata"},
                               "areas": json.loads(est.areas.to_json(orient="records"))}, indent=2))
        return
    for note in est.notes:
        click.echo(f"Note: {note}", err=True)
    if not is_quiet():
        t = est.areas[["crop", "mapped_ha", "estimated_ha", "ci_low_ha", "ci_high_ha", "users_accuracy",
                       "producers_accuracy"]]
        click.echo(format_table(t.round(3)))
    lo, hi = s["overall_ci"]
    click.echo(f"{folder}: overall accuracy {s['overall_accuracy']:.3f} (95 % CI {lo:.3f}-{hi:.3f}) from "
               f"{s['points_labelled']} labelled points; tables {', '.join(s['tables'])}")
