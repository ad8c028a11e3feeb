"""``geoseg synth``: write a synthetic multi-date crop region with its truth."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import LocalParam, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.io.paths import check_overwrite
from geoseg.synth import synthesize

#: The files ``synth`` writes into OUT_DIR.
OUTPUTS = ("scene.tif", "labels.tif", "fields.gpkg", "districts.gpkg", "classes.yaml", "truth.csv")


@click.command("synth")
@click.argument("out_dir", type=LocalParam("the output folder"))
@click.option("--height", type=int, default=2048, show_default=True, help="Rows (pixels, 10 m each).")
@click.option("--width", type=int, default=2048, show_default=True, help="Columns (pixels, 10 m each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--dates", type=int, default=4, show_default=True, help="Acquisition dates (4 bands each).")
@click.option("--clouds", type=float, default=0.0, show_default=True,
              help="Fraction of each date hidden by cloud gaps (nodata), 0..0.9.")
@click.option("--no-collar", is_flag=True, help="No nodata collar around the scene footprint.")
@overwrite_option
@json_option(help="Print one JSON object (folder, files, size, dates, fields, districts, hectares per class).")
def synth(out_dir: Path, height: int, width: int, seed: int, dates: int, clouds: float, no_collar: bool,
          overwrite: bool, as_json: bool) -> None:
    """Write a synthetic crop region over real Punjab districts into OUT_DIR.

    \b
    Writes scene.tif (dates x B,G,R,NIR reflectance, uint16, EPSG:32643, 10 m),
    labels.tif (true classes, 255 = nodata), fields.gpkg (true field polygons),
    districts.gpkg (real district boundaries, attribute `district`), classes.yaml
    and truth.csv (hectares per district and crop).

    An OUT_DIR that already holds any of these files is refused without --overwrite.

    \b
    Examples:
        geoseg synth data/region --height 1024 --width 1536 --seed 7 --clouds 0.05
        geoseg synth data/region --overwrite --json
    """
    for name in OUTPUTS:
        check_overwrite(out_dir / name, overwrite)
    with progress_bar("windows") as advance:
        region = synthesize(out_dir, height=height, width=width, seed=seed, dates=dates,
                            cloud_fraction=clouds, collar=not no_collar, progress=advance)
    if as_json:
        click.echo(json.dumps({
            "out_dir": str(region.out_dir),
            "files": {k: str(getattr(region, k)) for k in ("scene", "labels", "fields", "districts", "classes",
                                                            "truth_csv")},
            "height": region.shape[0], "width": region.shape[1], "crs": region.crs, "dates": list(region.dates),
            "seed": region.seed, "fields": region.n_fields, "districts": list(region.district_names),
            "hectares": {k: round(v, 4) for k, v in region.hectares_by_class().items()},
        }, indent=2))
        return
    click.echo(region.summary())
