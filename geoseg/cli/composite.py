"""``geoseg composite``: a season of Sentinel-2 / Landsat scenes to one analysis-ready stack."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import OUTPUT, creation_options_option, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.core.season import QA_MASKED_DEFAULT, SCL_MASKED_DEFAULT, STATISTICS
from geoseg.errors import SeasonWarning
from geoseg.ops.composite import composite_season
from geoseg.parallel import Runner


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected SCL class numbers separated by commas, e.g. 0,1,3,8,9,10") from None


@click.command("composite")
@click.argument("out", type=OUTPUT)
@click.argument("sources", nargs=-1)
@click.option("--start", help="First day of the season, YYYY-MM-DD (default: the first scene's day).")
@click.option("--end", help="Day after the season, YYYY-MM-DD, excluded (default: the day after the last scene).")
@click.option("--periods", default="monthly", show_default=True,
              help="monthly, semimonthly, ND (e.g. 16d), season, or windows LABEL:START/END,... "
                   "(e.g. sowing:2024-06-01/2024-07-15,peak:2024-08-01/2024-09-15).")
@click.option("--bands", help="Bands by Sentinel-2 id or common name, e.g. B02,B03,B04,B08 or red,nir "
                              "(default: the ten 10/20 m bands; Landsat: its six).")
@click.option("--area", help="The area: a polygon file (any GDAL vector format), mgrs:43RFQ (a tile of the "
                             "scenes), or MINLON,MINLAT,MAXLON,MAXLAT (default: all the scenes).")
@click.option("--area-where", help="FIELD=VALUE picking features of the --area file, e.g. district=Ludhiana.")
@click.option("--crs", help="Output CRS (default: the UTM zone of the area's centre).")
@click.option("--resolution", type=float, default=10.0, show_default=True, help="Pixel size in CRS units (m).")
@click.option("--statistic", type=click.Choice(STATISTICS), default="median", show_default=True,
              help="How each period's clear looks are reduced per pixel.")
@click.option("--scl-mask", default=",".join(map(str, SCL_MASKED_DEFAULT)), show_default=True,
              help="SCL classes that are not clear (0 no data, 1 saturated, 3 shadow, 8/9 cloud, 10 cirrus, 11 snow).")
@click.option("--qa-mask", default=",".join(QA_MASKED_DEFAULT), show_default=True,
              help="Landsat QA_PIXEL flags that are not clear.")
@click.option("--dilate", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Grow masked clouds and shadows by this many output pixels.")
@click.option("--boa-offset", type=float,
              help="Offset (DN) of Sentinel-2 band files that do not state it: -1000 for processing baseline "
                   "04.00 (25 Jan 2022) or later, 0 before. STAC items and SAFE products state it themselves.")
@click.option("--stac-api", help="Also search this STAC API over --area between --start and --end, e.g. "
                                 "https://earth-search.aws.element84.com/v1")
@click.option("--collection", "collections", multiple=True,
              help="STAC API collection (repeatable; default sentinel-2-l2a; Earth Search: sentinel-2-c1-l2a).")
@click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True,
              help="HTTP retries per remote read, for flaky object storage.")
@click.option("--block", type=click.IntRange(16, 8192), default=512, show_default=True,
              help="Output window per job, in pixels.")
@click.option("--workers", type=click.IntRange(0, 256), default=0, help="Threads (default: one per core).")
@click.option("--scheduler", help="Run the windows on this Dask scheduler's workers (tcp://HOST:8786) instead of "
                                  "local threads; the workers must reach the sources and write nothing.")
@overwrite_option
@creation_options_option(help="GDAL COG creation option, e.g. --co COMPRESS=ZSTD (repeatable).")
@json_option(help="Print one JSON object (outputs, bands, periods, looks) instead of the text lines.")
def composite(out: Path, sources: tuple[str, ...], start: str | None, end: str | None, periods: str,
              bands: str | None, area: str | None, area_where: str | None, crs: str | None, resolution: float,
              statistic: str, scl_mask: str, qa_mask: str, dilate: int, boa_offset: float | None,
              stac_api: str | None, collections: tuple[str, ...], retries: int, block: int, workers: int,
              scheduler: str | None, overwrite: bool, creation_options: dict[str, str], as_json: bool) -> None:
    """Composite a season of Sentinel-2 L2A or Landsat C2 L2 scenes into OUT (a COG), with
    the clear looks per period in OUT_clear.tif.

    SOURCES are STAC item / ItemCollection / catalog JSON files or URLs, SAFE products
    (.SAFE folders, .zip), folders of them, folders of per-band files, or Landsat scene
    folders. Reflectance is harmonised across processing baselines from each product's
    metadata, clouds are masked with SCL (Landsat: QA_PIXEL), and each period's value is the
    median of the pixel's clear looks. Bands are named <period>_<band>.

    \b
    Examples:
        geoseg composite kharif.tif items/ --start 2024-06-01 --end 2024-11-01 --bands B02,B03,B04,B08
        geoseg composite ludhiana.tif S2*.SAFE --area districts.gpkg --area-where district=Ludhiana \\
            --periods semimonthly --start 2024-06-01 --end 2024-11-01 --dilate 2
        geoseg composite t43rfq.tif --stac-api https://earth-search.aws.element84.com/v1 \\
            --collection sentinel-2-c1-l2a --area 75.6,30.7,76.1,31.0 --start 2024-06-01 --end 2024-11-01
    """
    with ExitStack() as stack:
        runner = Runner(workers=workers or None, client=stack.enter_context(connect(scheduler)) if scheduler else None)
        res, caught = _run(runner, out, sources, start, end, periods, bands, area, area_where, crs, resolution,
                           statistic, scl_mask, qa_mask, dilate, boa_offset, stac_api, collections, retries, block,
                           overwrite, creation_options)
    for w in caught:
        if issubclass(w.category, SeasonWarning):
            click.echo(f"Warning: {w.message}", err=True)  # shown even with --quiet: it is about the output
    if as_json:
        click.echo(json.dumps({
            "output": str(res.path), "clear": str(res.clear_path), "bands": res.bands, "crs": res.crs,
            "width": res.shape[1], "height": res.shape[0], "transform": list(res.transform)[:6],
            "periods": [{"label": p.label, "start": p.start.isoformat(), "end": p.end.isoformat(), "looks": n}
                        for p, n in zip(res.periods, res.looks)],
            "scenes": res.scenes, "empty_periods": res.empty_periods, "seconds": round(res.seconds, 3)}, indent=2))
        return
    click.echo(res.summary())


def _run(runner: Runner, out: Path, sources: tuple[str, ...], start: str | None, end: str | None, periods: str,
         bands: str | None, area: str | None, area_where: str | None, crs: str | None, resolution: float,
         statistic: str, scl_mask: str, qa_mask: str, dilate: int, boa_offset: float | None, stac_api: str | None,
         collections: tuple[str, ...], retries: int, block: int, overwrite: bool,
         creation_options: dict[str, str]) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught, progress_bar("windows") as advance:
        warnings.simplefilter("always", SeasonWarning)
        res = composite_season(
            out, list(sources), start=start, end=end, periods=periods, bands=bands, area=area, area_where=area_where,
            crs=crs, resolution=resolution, statistic=statistic, scl_classes=_ints(scl_mask),
            qa_flags=tuple(v.strip() for v in qa_mask.split(",") if v.strip()), dilate=dilate,
            boa_offset=boa_offset, stac_api=stac_api, collections=collections or ("sentinel-2-l2a",),
            retries=retries, block=block, runner=runner, overwrite=overwrite,
            creation_options=creation_options, progress=advance)
    return res, list(caught)


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A Dask client of the scheduler at ``address``, closed on exit."""
    from distributed import Client  # deferred: distributed is slow to import

    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as e:
        raise click.ClickException(f"{address}: cannot reach the Dask scheduler ({e}); check the address and that "
                                   f"the scheduler is running") from None
    try:
        yield client
    finally:
        client.close()

