"""``geoseg polygonize``: a class mask into per-field crop polygons (GeoPackage, GeoParquet, ...)."""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import click

from geoseg.cli.options import DATASET, OUTPUT, classes_option, info, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.core.instances import Separation, boundary_value
from geoseg.core.sieve import DEFAULT_MIN_AREA_HA
from geoseg.errors import DistrictWarning
from geoseg.io.paths import STDOUT, DatasetPath
from geoseg.io.vector import vector_driver
from geoseg.ops.parcels import parcel_crops_file
from geoseg.ops.polygonize import DEFAULT_BLOCK, polygonize_dataset, polygonize_file


@click.command("polygonize")
@click.argument("mask", type=DATASET)
@click.option("--out", required=True, type=OUTPUT,
              help="Fields file: .gpkg, .parquet, .fgb, .geojson (EPSG:4326) or .shp; - writes GeoJSON to standard "
                   "output.")
@click.option("--format", "driver", type=click.Choice(["gpkg", "parquet", "fgb", "geojson", "shp"]),
              help="Output format, overriding the extension.")
@click.option("--nodata", type=float, default=None, help="Mask nodata value (default: the file's).")
@classes_option(help="Class file (YAML) with names and colours (default: the mask's embedded table).")
@click.option("--min-area-ha", type=float, default=None,
              help="Minimum mapping unit in hectares; smaller specks are sieved; 0 turns sieving off. [default: 0.1]")
@click.option("--exclude", multiple=True,
              help="Class name or id that makes no polygon (repeatable). Default: non-crop classes (background).")
@click.option("--all-classes", is_flag=True, help="Polygonise every class, background included.")
@click.option("--confidence", type=DATASET,
              help="Confidence raster on the mask's grid: adds the mean confidence per field; its boundary band (a "
                   "model trained with --fields) separates touching fields of one crop.")
@click.option("--separate/--no-separate", default=True, show_default=True,
              help="Separate touching fields on the confidence raster's boundary band when it has one.")
@click.option("--boundary-threshold", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Edge probability from which a pixel is cut. [default: the model's choice on its validation "
                   "blocks, recorded in the confidence raster; else 0.05]")
@click.option("--max-area-ha", type=float, default=None,
              help="Drop fields larger than this many hectares (e.g. 10 for smallholder fields).")
@click.option("--parcels", type=DATASET, default=None,
              help="Your own parcel layer (cadastral, LPIS, FTW; any format and CRS): give each parcel its crop, "
                   "class shares, observed share and confidence instead of tracing polygons.")
@click.option("--parcel-id", default=None, metavar="ATTR",
              help="The parcels' attribute that identifies one [default: 1, 2, ... in file order].")
@click.option("--districts", type=DATASET,
              help="District boundaries (any format and CRS; a file, URL or /vsi path): adds the district of largest "
                   "overlap.")
@click.option("--name-field", help="The districts' attribute that names a district.")
@click.option("--simplify", "simplify_m", type=float, default=None,
              help="Simplify outlines with this tolerance in metres (shared edges stay shared).")
@click.option("--block", type=int, default=None, help="Block size in pixels. [default: 2048]")
@click.option("--run-id", help="Run id to store with every field (also the fiboa collection; default: geoseg).")
@click.option("--observed", metavar="DATE",
              help="When the imagery was taken (its last date, e.g. 2024-10-31): fiboa's determination:datetime. "
                   "[default: unknown, left empty]")
@click.option("--dataset", is_flag=True,
              help="Write a GeoParquet dataset: --out becomes a folder with one file per block, written where the "
                   "block is traced, and one of the fields merged across block seams (for masks with more fields "
                   "than this machine should hold; read it as one table with geopandas or DuckDB).")
@overwrite_option
@json_option(help="Print one JSON object (output, format, fields, hectares per crop, sieve) instead of the summary "
                  "lines.")
def polygonize(mask: DatasetPath, out: Path | str, driver: str | None, nodata: float | None, classes: Path | None,
               min_area_ha: float | None, exclude: tuple[str, ...], all_classes: bool,
               confidence: DatasetPath | None, separate: bool, boundary_threshold: float | None,
               max_area_ha: float | None,
               parcels: DatasetPath | None, parcel_id: str | None, districts: DatasetPath | None, name_field: str | None,
               simplify_m: float | None, block: int | None, run_id: str | None, observed: str | None,
               dataset: bool, overwrite: bool, as_json: bool) -> None:
    """Turn the class raster MASK into one polygon per field, block by block in parallel.

    Specks smaller than --min-area-ha are merged into their neighbours first; nodata never
    becomes a polygon. With a --confidence raster that has a boundary band (a model trained
    with --fields), touching fields of one crop are separated on it: each field then takes the
    majority crop of its pixels, and class_share says how pure it is. The fields follow fiboa 0.3 with its crop extension: each gets id,
    collection, field_id, class_id, crop:code, crop:name, crop:code_list, area_ha,
    metrics:area (m2), metrics:perimeter (m) and determination:method/datetime/details,
    plus confidence and district when those inputs are given.

    MASK, --confidence and --districts may be URLs (https://, s3://) or GDAL virtual paths.
    With --out - the fields go to standard output as GeoJSON and the summary to standard error.

    \b
    Examples:
        geoseg polygonize runs/punjab/latest/mask.tif --out fields.gpkg \\
            --districts districts.gpkg --name-field district --min-area-ha 0.1
        geoseg -q polygonize /vsicurl/https://host/mask.tif --out - > fields.geojson
        geoseg polygonize mask.tif --confidence confidence.tif --max-area-ha 10 --out fields.gpkg
        geoseg polygonize mask.tif --confidence confidence.tif --parcels lpis.gpkg --parcel-id parcel_no \\
            --out parcel_crops.gpkg
        geoseg polygonize state_mask.tif --confidence confidence.tif --dataset --out fields.parquet
    """
    if districts is not None and not name_field:
        raise click.UsageError("--districts needs --name-field (the attribute that names a district)")
    to_stdout = out == STDOUT
    if to_stdout and as_json:
        raise click.UsageError("--out - already prints the fields (GeoJSON) on standard output; give --json with "
                               "a file --out")
    if parcels is not None:
        _parcels(mask, parcels, out, driver=driver, nodata=nodata, classes=classes, confidence=confidence,
                 parcel_id=parcel_id, run_id=run_id, observed=observed, overwrite=overwrite, as_json=as_json,
                 to_stdout=to_stdout, unused={"--min-area-ha": min_area_ha, "--exclude": exclude or None,
                                              "--all-classes": all_classes or None, "--simplify": simplify_m,
                                              "--max-area-ha": max_area_ha, "--districts": districts,
                                              "--block": block})
        return
    if parcel_id is not None:
        raise click.UsageError("--parcel-id names the attribute of --parcels; give --parcels too")
    if dataset and (to_stdout or driver not in (None, "parquet")):
        raise click.UsageError("--dataset writes a folder of GeoParquet files; give a folder --out (e.g. "
                               "fields.parquet), not standard output or another --format")
    excl: tuple[str, ...] | None = () if all_classes else (tuple(exclude) if exclude else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DistrictWarning)
        with progress_bar("blocks") as advance:
            write = polygonize_dataset if dataset else partial(polygonize_file, driver=driver)
            res = write(
                mask, out, nodata=nodata, classes=classes,
                min_area_ha=DEFAULT_MIN_AREA_HA if min_area_ha is None else min_area_ha, exclude=excl,
                confidence=confidence, districts=districts, name_field=name_field, simplify_m=simplify_m,
                block=DEFAULT_BLOCK if block is None else block, run_id=run_id, observed=observed,
                progress=advance, overwrite=overwrite, separate=separate, max_area_ha=max_area_ha,
                separation=None if boundary_threshold is None else Separation(threshold=boundary_value(boundary_threshold)),
            )
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    if as_json:
        fmt = "Parquet dataset" if dataset else vector_driver(res.path, driver)[0]
        click.echo(json.dumps({"output": str(res.path), "format": fmt,
                               "fields": res.fields, "hectares": {k: round(v, 4) for k, v in res.hectares.items()},
                               "min_area_pixels": res.min_area_pixels}, indent=2))
        return
    for line in res.lines():
        if to_stdout:
            info(line.replace("-: ", "standard output: ", 1))  # standard output holds the GeoJSON alone
        else:
            click.echo(line)


def _parcels(mask: DatasetPath, parcels: DatasetPath, out: Path | str, *, driver: str | None, nodata: float | None,
             classes: Path | None, confidence: DatasetPath | None, parcel_id: str | None, run_id: str | None,
             observed: str | None, overwrite: bool, as_json: bool, to_stdout: bool, unused: dict[str, object]) -> None:
    """``--parcels``: each parcel's crop (:func:`geoseg.ops.parcels.parcel_crops_file`)."""
    given = [k for k, v in unused.items() if v is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)} shape traced fields; with --parcels the parcels are the fields - "
                               f"leave {'them' if len(given) > 1 else 'it'} out")
    with progress_bar("blocks") as advance:
        res = parcel_crops_file(mask, parcels, out, driver=driver, nodata=nodata, classes=classes,
                                confidence=confidence, id_field=parcel_id, run_id=run_id, observed=observed,
                                progress=advance, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({"output": str(res.path), "format": vector_driver(res.path, driver)[0],
                               "parcels": res.parcels, "unobserved": res.unobserved, "skipped": res.skipped,
                               "hectares": {k: round(v, 4) for k, v in res.hectares.items()}}, indent=2))
        return
    for line in res.lines():
        if to_stdout:
            info(line.replace("-: ", "standard output: ", 1))
        else:
            click.echo(line)
