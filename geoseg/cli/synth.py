"""``geoseg synth``: write a synthetic multi-date crop region with its truth."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.synth import synthesize


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--height", type=int, default=2048, show_default=True, help="Rows (pixels, 10 m each).")
@click.option("--width", type=int, default=2048, show_default=True, help="Columns (pixels, 10 m each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--dates", type=int, default=4, show_default=True, help="Acquisition dates (4 bands each).")
@click.option("--clouds", type=float, default=0.0, show_default=True,
              help="Fraction of each date hidden by cloud gaps (nodata), 0..0.9.")
@click.option("--no-collar", is_flag=True, help="No nodata collar around the scene footprint.")
def synth(out_dir: Path, height: int, width: int, seed: int, dates: int, clouds: float, no_collar: bool) -> None:
    """Write a synthetic crop region over real Punjab districts into OUT_DIR.

    \b
    Writes scene.tif (dates x B,G,R,NIR reflectance, uint16, EPSG:32643, 10 m),
    labels.tif (true classes, 255 = nodata), fields.gpkg (true field polygons),
    districts.gpkg (real district boundaries, attribute `district`), classes.yaml
    and truth.csv (hectares per district and crop).

    \b
    Example:
        geoseg synth data/region --height 1024 --width 1536 --seed 7 --clouds 0.05
    """
    region = synthesize(out_dir, height=height, width=width, seed=seed, dates=dates,
                        cloud_fraction=clouds, collar=not no_collar)
    click.echo(region.summary())
