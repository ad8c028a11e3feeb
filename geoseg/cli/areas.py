"""``geoseg areas``: hectares of each crop per district, from a mask or a fields file."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from geoseg.cli.options import classes_option
from geoseg.errors import DistrictWarning
from geoseg.ops.areas import district_areas_file
from geoseg.ops.query import format_table


@click.command("areas")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--districts", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="District boundaries in any format and CRS GDAL reads.")
@click.option("--name-field", required=True, help="The attribute that names a district.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Table to write: .csv, .parquet or .json.")
@click.option("--nodata", type=float, default=None, help="Nodata value of a class raster (default: the file's).")
@classes_option(help="Class file (YAML) naming the class ids (default: the mask's embedded table).")
@click.option("--method", type=click.Choice(["exact", "centre"]), default="exact", show_default=True,
              help="exact: split border pixels by their exact coverage; centre: whole pixel to the centre's district.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the table.")
def areas(source: Path, districts: Path, name_field: str, out: Path, nodata: float | None, classes: Path | None,
          method: str, quiet: bool) -> None:
    """Sum the area of each class per district from SOURCE (a class raster or a fields file).

    One row per (district, class): district, class_id, crop, area_ha, share (of the
    district's observed area), observed_ha, unobserved_ha (nodata/cloud), district_ha and
    coverage (fraction of the district inside the raster). Boundaries are reprojected to
    the raster automatically; null, invalid and non-overlapping districts are reported.

    \b
    Example:
        geoseg areas runs/punjab/latest/mask.tif --districts india_district.json \\
            --name-field district --out areas.csv
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DistrictWarning)  # listed below, one per line
        df = district_areas_file(source, districts, name_field, out, classes=classes, nodata=nodata, method=method)
    problems = df.attrs.get("problems", [])
    missing = [p for p in problems if "no overlap" in p]
    for p in problems:
        if p not in missing:
            click.echo(f"Warning: district {p}", err=True)
    if missing:
        click.echo(f"{len(missing)} district(s) do not overlap {source} and are not in the table", err=True)
    if not quiet:
        cols = [c for c in ("district", "crop", "area_ha", "share", "unobserved_ha") if c in df.columns]
        click.echo(format_table(df[cols]))
    click.echo(f"{out}: {len(df)} rows ({df['district'].nunique()} districts)")
