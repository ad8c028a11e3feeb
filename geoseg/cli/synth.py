"""``geoseg synth``: write a synthetic multi-date crop region with its truth (and, optionally, satellite products)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import LocalParam, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.errors import ConfigError
from geoseg.io.paths import check_overwrite
from geoseg.synth import synthesize
from geoseg.synth.products import LAYOUTS

#: The files ``synth`` writes into OUT_DIR.
OUTPUTS = ("scene.tif", "labels.tif", "clouds.tif", "fields.gpkg", "districts.gpkg", "classes.yaml", "truth.csv")


@click.command("synth")
@click.argument("out_dir", type=LocalParam("the output folder"))
@click.option("--height", type=int, default=2048, show_default=True, help="Rows (pixels, 10 m each).")
@click.option("--width", type=int, default=2048, show_default=True, help="Columns (pixels, 10 m each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--dates", type=int, default=4, show_default=True, help="Acquisition dates (4 bands each).")
@click.option("--clouds", type=float, default=0.0, show_default=True,
              help="Mean fraction of a date hidden by clouds (nodata; each date draws its own, and clouds cast "
                   "shadows), 0..0.9.")
@click.option("--no-collar", is_flag=True, help="No nodata collar around the scene footprint.")
@click.option("--season-year", type=int, default=2024, show_default=True,
              help="Year the season starts (15 June); 2021 spans Sentinel-2's 2022 offset change.")
@click.option("--products", "products", metavar="LAYOUTS", default=None,
              help=f"Also write satellite products under OUT_DIR/products/: comma-separated {', '.join(LAYOUTS)} "
                   f"(cdse implies safe).")
@click.option("--acquisitions", type=int, default=None,
              help="Sentinel-2 acquisitions, every --spacing days from the season start (default 25); "
                   "Landsat every 8 days over the same span.")
@click.option("--spacing", type=int, default=None, help="Days between Sentinel-2 acquisitions (default 10).")
@click.option("--cloudiness", type=float, default=None,
              help="Scale of each acquisition's cloud cover, 0..3 (default 1: a Punjab monsoon; 0: clear skies).")
@click.option("--overcast", metavar="START/END", default=None,
              help="A period (ISO dates) when 30 % of the region is under cloud on every acquisition.")
@overwrite_option
@json_option(help="Print one JSON object (folder, files, size, dates, fields, districts, hectares per class, "
                  "products).")
def synth(out_dir: Path, height: int, width: int, seed: int, dates: int, clouds: float, no_collar: bool,
          season_year: int, products: str | None, acquisitions: int | None, spacing: int | None,
          cloudiness: float | None, overcast: str | None, overwrite: bool, as_json: bool) -> None:
    """Write a synthetic crop region over real Punjab districts into OUT_DIR.

    \b
    Writes scene.tif (dates x B,G,R,NIR reflectance, uint16, EPSG:32643, 10 m),
    labels.tif (true classes, 255 = nodata), fields.gpkg (true field polygons),
    districts.gpkg (real district boundaries, attribute `district`), classes.yaml
    and truth.csv (hectares per district and crop).

    \b
    With --products, also the same region as a season of satellite products in
    real layouts under OUT_DIR/products/<layout>/: stac (Earth Search
    sentinel-2-c1-l2a items + per-band COGs), safe (SAFE L2A folders, lossless
    JPEG 2000), cdse (Copernicus Data Space STAC 1.1 items over the SAFE files)
    and landsat (Landsat 8/9 Collection 2 Level-2 folders + STAC items); with
    clouds, shadows, SCL / QA_PIXEL and the 2022 BOA_ADD_OFFSET.

    An OUT_DIR that already holds any of these files is refused without --overwrite.

    \b
    Examples:
        geoseg synth data/region --height 1024 --width 1536 --seed 7 --clouds 0.05
        geoseg synth data/region --overwrite --json
        geoseg synth data/season --products stac,safe --acquisitions 24 --spacing 10
        geoseg synth data/2021 --season-year 2021 --products stac,cdse,landsat --overcast 2021-08-01/2021-08-31
    """
    extra = {"--acquisitions": acquisitions, "--spacing": spacing, "--cloudiness": cloudiness, "--overcast": overcast}
    if products is None:
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --products (the layouts to write, e.g. --products stac,safe)")
    for name in OUTPUTS:
        check_overwrite(out_dir / name, overwrite)
    if products is not None:
        check_overwrite(out_dir / "products", overwrite, "the products folder")
    kw = {"acquisitions": acquisitions, "spacing": spacing, "cloudiness": cloudiness, "overcast": overcast}
    with progress_bar("windows") as advance:
        region = synthesize(out_dir, height=height, width=width, seed=seed, dates=dates,
                            cloud_fraction=clouds, collar=not no_collar, season_year=season_year,
                            products=products, progress=advance, **{k: v for k, v in kw.items() if v is not None})
    if as_json:
        info = {
            "out_dir": str(region.out_dir),
            "files": {k: str(getattr(region, k)) for k in ("scene", "labels", "clouds", "fields", "districts",
                                                            "classes", "truth_csv")},
            "height": region.shape[0], "width": region.shape[1], "crs": region.crs, "dates": list(region.dates),
            "seed": region.seed, "fields": region.n_fields, "districts": list(region.district_names),
            "hectares": {k: round(v, 4) for k, v in region.hectares_by_class().items()},
            "cloud_fraction": round(region.cloud_fraction, 6), "unseen_fraction": round(region.unseen_fraction, 6),
            "date_cloud_fractions": [round(f, 6) for f in region.date_cloud_fractions],
        }
        if region.products is not None:
            pr = region.products
            info["products"] = {
                "out_dir": str(pr.out_dir), "layouts": list(pr.layouts), "mgrs_tile": pr.mgrs_tile,
                "acquisitions": [{"id": a.id, "date": a.date, "platform": a.platform, "baseline": a.baseline,
                                  "cloud_cover": round(a.cloud_cover, 2),
                                  "paths": {k: str(v) for k, v in a.paths.items()}} for a in pr.acquisitions],
            }
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(region.summary())
