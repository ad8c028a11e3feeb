"""``geoseg sample``: a stratified random sample of reference points drawn from a run's mask."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import classes_option, is_quiet, json_option, overwrite_option
from geoseg.cli.progress import progress_bar
from geoseg.ops.query import format_table
from geoseg.ops.sample import sample_file


def _accuracy(ctx: click.Context, param: click.Parameter, value: str) -> float | dict[str, float]:
    """``0.8`` for every class, or ``rice=0.9,wheat=0.9,default=0.8``."""
    try:
        if "=" not in value:
            return float(value)
        out = {}
        for part in value.split(","):
            name, _, v = part.partition("=")
            out[name.strip()] = float(v)
        return out
    except ValueError:
        raise click.BadParameter(f"{value!r}; expected a number (0.8) or class=number pairs "
                                 f"(rice=0.9,wheat=0.9,default=0.8)") from None


@click.command("sample")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder to write the sample to (default: SOURCE/sample for a run folder; required for a mask).")
@click.option("--districts", type=click.Path(exists=True, path_type=Path), default=None,
              help="District boundaries (default: the run's).")
@click.option("--name-field", default=None, help="The attribute that names a district (default: the run's).")
@click.option("--by-district", is_flag=True,
              help="Strata are map class x district, each district sized for the target on its own (for district "
                   "estimates as precise as the map's); default: the map classes.")
@click.option("--strata", type=click.Path(exists=True, path_type=Path), default=None,
              help="Your own strata instead of the map classes: an integer raster (ids 0..254) on the mask's grid, "
                   "e.g. agro-climatic zones or last season's map (x district with --by-district).")
@click.option("--target-se", type=float, default=0.01, show_default=True,
              help="Target standard error of overall accuracy (Cochran's formula; per district with --by-district).")
@click.option("--target-ua-se", type=float, default=None,
              help="Size each stratum for this standard error of its user's accuracy instead (n = U(1-U)/SE^2 + 1).")
@click.option("--users-accuracy", default="0.8", show_default=True, callback=_accuracy,
              help="Anticipated user's accuracy: one number, or class=number pairs (rice=0.9,default=0.8).")
@click.option("--min-per-stratum", "minimum", type=click.IntRange(min=2), default=50, show_default=True,
              help="Points each stratum gets at least (rare crops would otherwise get a handful).")
@click.option("--budget", type=click.IntRange(min=2), default=None, help="At most this many points in all.")
@click.option("--seed", type=int, default=0, show_default=True, help="The draws depend on it alone.")
@classes_option(help="Class file (YAML) naming the mask's ids (default: the mask's embedded table).")
@click.option("--nodata", type=float, default=None, help="Nodata value of the mask (default: the file's).")
@overwrite_option
@json_option(help="Print the design (strata, areas, points) as one JSON object.")
def sample(source: Path, out: Path | None, districts: Path | None, name_field: str | None, by_district: bool,
           strata: Path | None, target_se: float, target_ua_se: float | None, users_accuracy: float | dict[str, float], minimum: int, budget: int | None, seed: int,
           classes: Path | None, nodata: float | None, overwrite: bool, as_json: bool) -> None:
    """Draw a stratified random sample of reference points from SOURCE (a run folder or a mask).

    Strata are the map classes (the background too: omitted crops hide there), or class x
    district with --by-district; points fall uniformly over each stratum's ground area,
    on observed pixels inside the districts. Writes design.json (read back by `geoseg
    estimate`), points.gpkg and points.csv for the field teams (point_id, district, lon, lat,
    x, y and an empty `reference` column to fill in; no map class, so the interpretation stays
    blind) and key.csv (each point's stratum and map class).

    \b
    Examples:
        geoseg sample runs/demo/latest
        geoseg sample runs/demo/latest --by-district --min-per-stratum 30 --budget 2000 --seed 7
        geoseg sample mask.tif --districts districts.gpkg --name-field district --out sample/
    """
    with progress_bar("blocks") as advance:
        folder, s = sample_file(source, out, districts=districts, name_field=name_field, overwrite=overwrite,
                                by_district=by_district, target_se=target_se, target_ua_se=target_ua_se, users_accuracy=users_accuracy,
                                minimum=minimum, budget=budget, seed=seed, classes=classes, nodata=nodata,
                                strata=strata, progress=advance)
    d = s.design
    if as_json:
        click.echo(json.dumps({"folder": str(folder), **{k: d[k] for k in ("points", "strata_by", "total_area_ha",
                                                                            "anticipated_overall_se", "strata")}},
                              indent=2))
        return
    if not is_quiet():
        import pandas as pd

        t = pd.DataFrame(d["strata"])[["name", "area_ha", "n"]].rename(columns={"name": "stratum", "n": "points"})
        click.echo(format_table(t))
    se = d.get("anticipated_overall_se")
    click.echo(f"{folder}: {d['points']} points in {len(d['strata'])} strata"
               + (f" (anticipated SE of overall accuracy {se:.4f})" if se else "")
               + "; label points.csv's `reference` column, then `geoseg estimate`")
