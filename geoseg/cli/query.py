"""``geoseg query``: SQL and shortcuts over a run's fields and district table (DuckDB)."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import LocalParam
from geoseg.ops.query import format_table, run_query


@click.command("query")
@click.argument("run_dir", type=LocalParam("the run folder"))
@click.argument("sql", required=False)
@click.option("--district", help="Shortcut: the district table for this district (any case).")
@click.option("--crop", help="Shortcut: this crop in every district (any case).")
@click.option("--compare", type=LocalParam("--compare (a run folder)"),
              help="Another run: change in hectares per district and crop from RUN_DIR to it.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--safe", is_flag=True,
              help="Run the SQL locked down: SELECT queries over the run's views only; no other files, no "
                   "extensions, no settings. For SQL you did not write.")
def query(run_dir: Path, sql: str | None, district: str | None, crop: str | None, compare: Path | None,
          fmt: str, safe: bool) -> None:
    """Query a run's outputs with SQL: views `fields`, `fields_geo` and `district_areas`, and
    `estimate_areas`, `estimate_districts`, `estimate_matrix` after `geoseg estimate`.

    Without SQL, print the district table, or one district (--district) or crop (--crop),
    or the change against another run (--compare).

    The SQL has DuckDB's full access, as running `duckdb` yourself: it can read and write any
    file you can. With --safe it may only SELECT from the run's views.

    \b
    Examples:
        geoseg query runs/punjab/RUN 'SELECT district, "crop:name", sum(area_ha) AS ha FROM fields GROUP BY ALL'
        geoseg query runs/punjab/RUN --district Ludhiana
        geoseg query runs/punjab/RUN --crop rice --format csv > rice.csv
        geoseg query runs/punjab/RUN_2023 --compare runs/punjab/RUN_2024
        geoseg query runs/punjab/RUN --safe "$SQL_FROM_SOMEONE_ELSE"
    """
    # Full access by default: the SQL comes from the user's own command line.
    df = run_query(run_dir, sql, district=district, crop=crop, compare=compare, safe=safe)
    click.echo(format_table(df, fmt))
