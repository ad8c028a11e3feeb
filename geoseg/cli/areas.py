"""``geoseg areas``: hectares of each crop per district, from a mask or a fields file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from geoseg.cli.options import DATASET, OUTPUT, classes_option, info, is_quiet, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.errors import DistrictWarning
from geoseg.io.paths import STDOUT, DatasetPath
from geoseg.ops.areas import district_areas_file
from geoseg.ops.query import format_table


@click.command("areas")
@click.argument("source", type=DATASET)
@click.option("--districts", required=True, type=DATASET,
              help="District boundaries in any format and CRS GDAL reads (a file, URL or /vsi path).")
@click.option("--name-field", required=True, help="The attribute that names a district.")
@click.option("--out", required=True, type=OUTPUT,
              help="Table to write: .csv, .parquet or .json; - writes it to standard output (CSV, or --format json).")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json"]), default=None,
              help="Table format, overriding --out's extension.")
@click.option("--nodata", type=float, default=None, help="Nodata value of a class raster (default: the file's).")
@classes_option(help="Class file (YAML) naming the class ids (default: the mask's embedded table).")
@click.option("--method", type=click.Choice(["exact", "centre"]), default="exact", show_default=True,
              help="exact: split border pixels by their exact coverage; centre: whole pixel to the centre's district.")
@overwrite_option
@json_option(help="Print one JSON object (output, rows, districts, hectares per crop, problems) instead of the "
                  "table and summary line.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the table.")
def areas(source: DatasetPath, districts: DatasetPath, name_field: str, out: Path | str, fmt: str | None,
          nodata: float | None, classes: Path | None, method: str, overwrite: bool, as_json: bool, quiet: bool) -> None:
    """Sum the area of each class per district from SOURCE (a class raster or a fields file).

    One row per (district, class): district, class_id, crop, area_ha, share (of the
    district's observed area), observed_ha, unobserved_ha (nodata/cloud), district_ha and
    coverage (fraction of the district inside the raster). Boundaries are reprojected to
    the raster automatically; null, invalid and non-overlapping districts are reported.
    SOURCE and --districts may be URLs (https://, s3://) or GDAL virtual paths.

    \b
    Examples:
        geoseg areas runs/punjab/latest/mask.tif --districts india_district.json \\
            --name-field district --out areas.csv
        geoseg -q areas s3://bucket/mask.tif --districts https://host/districts.geojson \\
            --name-field district --out - > areas.csv
    """
    to_stdout = out == STDOUT
    if to_stdout and as_json:
        raise click.UsageError("--out - already prints the table on standard output; use --format json for the "
                               "table as JSON, or --json with a file --out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DistrictWarning)  # listed below, one per line
        with progress_bar("blocks") as advance:
            df = district_areas_file(source, districts, name_field, out, classes=classes, nodata=nodata,
                                     method=method, fmt=fmt, overwrite=overwrite, progress=advance)
    problems = df.attrs.get("problems", [])
    missing = [p for p in problems if "no overlap" in p]
    for p in problems:
        if p not in missing:
            click.echo(f"Warning: district {p}", err=True)
    if missing:
        click.echo(f"{len(missing)} district(s) do not overlap {source} and are not in the table", err=True)
    if as_json:
        ha = df.groupby("crop")["area_ha"].sum() if len(df) and "crop" in df.columns else {}
        click.echo(json.dumps({"output": str(out), "rows": len(df), "districts": int(df["district"].nunique()),
                               "hectares": {str(k): round(float(v), 4) for k, v in dict(ha).items()},
                               "problems": list(problems)}, indent=2))
        return
    if not quiet and not to_stdout and not is_quiet():
        cols = [c for c in ("district", "crop", "area_ha", "share", "unobserved_ha") if c in df.columns]
        click.echo(format_table(df[cols]))
    summary = f"{'standard output' if to_stdout else out}: {len(df)} rows ({df['district'].nunique()} districts)"
    if to_stdout:
        info(summary)  # standard output holds the table alone
    else:
        click.echo(summary)
