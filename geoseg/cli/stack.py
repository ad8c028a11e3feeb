"""``geoseg stack``: stack per-band or per-date files into one model input."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.io.stack import stack_rasters


@click.command("stack")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (never an input).")
def stack(out: Path, inputs: tuple[Path, ...], overwrite: bool) -> None:
    """Stack INPUTS, in the order given, into OUT (.vrt references them, .tif copies pixels).

    All inputs must share CRS, transform, size, data type and nodata. Band names are kept.

    \b
    Example:
        geoseg stack s2_2024.vrt T43RFQ_20240615_B02.tif T43RFQ_20240615_B03.tif \\
            T43RFQ_20240615_B04.tif T43RFQ_20240615_B08.tif
    """
    res = stack_rasters(out, list(inputs), overwrite=overwrite)
    click.echo(f"{res.path}: {len(res.bands)} bands, {res.shape[1]} x {res.shape[0]} px")
    for i, name in enumerate(res.bands, start=1):
        click.echo(f"  band {i}: {name}")
