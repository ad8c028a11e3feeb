"""``geoseg zonal``: vegetation-index time series and phenology per field, and per district x crop."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import is_quiet, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.core.zonal import NAMED_INDICES
from geoseg.ops.features import DEFAULT_INDICES, zonal_file


@click.command("zonal")
@click.argument("stack", type=click.Path(exists=True, path_type=Path))
@click.argument("fields", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the tables.")
@click.option("--index", "indices", multiple=True,
              help=f"An index (repeatable): {', '.join(NAMED_INDICES)}, or "
                   f"nd(A,B) / ratio(A,B) of band names, optionally named (ndre=nd(B8A,B05)). "
                   f"Default: {', '.join(DEFAULT_INDICES)}.")
@click.option("--id-field", default="field_id", show_default=True,
              help="The fields' id attribute (a parcel layer's own, e.g. parcel_no); absent: 1..N in file order.")
@click.option("--mask", type=click.Path(exists=True, path_type=Path), default=None,
              help="A class mask on the stack's grid: with --districts, also the per district x crop profiles.")
@click.option("--districts", type=click.Path(exists=True, path_type=Path), default=None,
              help="District boundaries for the profiles.")
@click.option("--name-field", default="district", show_default=True, help="The attribute that names a district.")
@overwrite_option
@json_option(help="Print the written tables (paths, rows) as JSON.")
def zonal(stack: Path, fields: Path, out: Path, indices: tuple[str, ...], id_field: str, mask: Path | None,
          districts: Path | None, name_field: str, overwrite: bool, as_json: bool) -> None:
    """Index statistics of each field on each date of STACK, each field's phenology, and per
    district x crop profiles.

    STACK is a season stack whose band names carry their dates (what `geoseg composite` and
    `geoseg synth` write); FIELDS any polygon layer (a run's fields.parquet, your parcels).
    Writes field_timeseries.parquet (field_id, date, index, mean, median, std, p10, p90,
    observed), field_phenology.parquet (per index: peak and its date, start and end of
    season, season length, integral) and, with --mask and --districts,
    district_crop_timeseries.parquet. Border pixels count by their exact covered share;
    nodata (cloud) pixels are left out and `observed` says how much of the field was seen.

    \b
    Examples:
        geoseg zonal runs/demo/latest/inputs/region.tif runs/demo/latest/fields.parquet --out features/
        geoseg zonal season.tif parcels.gpkg --id-field parcel_no --index ndvi --index "ndre=nd(B8A,B05)" --out f/
    """
    with progress_bar("field blocks") as advance:
        res = zonal_file(stack, fields, out, indices=indices or DEFAULT_INDICES, id_field=id_field or None,
                         mask=mask, districts=districts, name_field=name_field, overwrite=overwrite,
                         progress=advance)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    for note in res.get("notes", []):
        click.echo(f"Note: {note}", err=True)
    for key in ("field_timeseries", "field_phenology", "district_crop_timeseries"):
        if key in res and not is_quiet():
            click.echo(f"{res[key]['path']}: {res[key]['rows']:,} rows")
