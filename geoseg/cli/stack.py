"""``geoseg stack``: stack per-band or per-date files into one model input."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import DATASET, OUTPUT, creation_options_option, json_option
from geoseg.cli.progress import progress_bar
from geoseg.io.paths import DatasetPath
from geoseg.io.stack import stack_rasters


@click.command("stack")
@click.argument("out", type=OUTPUT)
@click.argument("inputs", nargs=-1, required=True, type=DATASET)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (never an input).")
@creation_options_option(help="GDAL GTiff creation option for a .tif stack, e.g. --co COMPRESS=ZSTD "
                              "--co ZSTD_LEVEL=9 (repeatable; lossless compressions only).")
@json_option(help="Print one JSON object (output, bands, width, height) instead of the text lines.")
def stack(out: Path, inputs: tuple[DatasetPath, ...], overwrite: bool, creation_options: dict[str, str],
          as_json: bool) -> None:
    """Stack INPUTS, in the order given, into OUT (.vrt references them, .tif copies pixels).

    All inputs must share CRS, transform, size, data type and nodata. Band names are kept.
    INPUTS may be URLs (https://, s3://) or GDAL virtual paths; a .vrt references those as given.

    \b
    Examples:
        geoseg stack s2_2024.vrt T43RFQ_20240615_B02.tif T43RFQ_20240615_B03.tif \\
            T43RFQ_20240615_B04.tif T43RFQ_20240615_B08.tif
        geoseg stack s2.tif s3://bucket/B02.tif s3://bucket/B03.tif --co COMPRESS=ZSTD --json
    """
    with progress_bar("blocks") as advance:
        res = stack_rasters(out, list(inputs), overwrite=overwrite, creation_options=creation_options,
                            progress=advance)
    if as_json:
        click.echo(json.dumps({"output": str(res.path), "bands": res.bands, "width": res.shape[1],
                               "height": res.shape[0]}, indent=2))
        return
    click.echo(f"{res.path}: {len(res.bands)} bands, {res.shape[1]} x {res.shape[0]} px")
    for i, name in enumerate(res.bands, start=1):
        click.echo(f"  band {i}: {name}")
