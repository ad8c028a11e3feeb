"""SQL over a run's outputs (DuckDB over its Parquet files), shortcuts and run-to-run changes.

A run directory (``runs/<workflow>/<run-id>/``) holds ``fields.parquet`` (GeoParquet, one
row per field) and ``district_areas.parquet`` (one row per district and class, see
:data:`geoseg.areas.TABLE_COLUMNS`). :func:`query_run` exposes them as three views:

``fields``
    every attribute of ``fields.parquet`` except the geometry (``field_id``,
    ``class_id``, ``crop``, ``area_ha``, ``perimeter_m``, ``confidence``, ``district``,
    ``run_id`` ... whatever the run wrote);
``fields_geo``
    the same with the geometry column (WKB; ``ST_AsText(geometry)`` works);
``district_areas``
    the district table.

Example::

    geoseg query runs/punjab/2024-11-02T0930 \\
        "SELECT district, crop, sum(area_ha) AS ha FROM fields GROUP BY ALL ORDER BY ha DESC"

The views read the files in place (nothing is copied or loaded up front); the SQL runs
in an in-memory DuckDB database.
"""

from __future__ import annotations

import difflib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GeosegError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "QueryError",
    "RUN_TABLES",
    "find_run",
    "connect_run",
    "query_run",
    "district_summary",
    "compare_runs",
    "run_query",
    "format_table",
]

#: View name -> file in a run directory.
RUN_TABLES = {"fields": "fields.parquet", "district_areas": "district_areas.parquet"}
_FORMATS = ("table", "csv", "json")


class QueryError(GeosegError, ValueError):
    """A run directory without outputs to query, bad SQL, or an unknown district or crop."""


def find_run(run_dir: str | os.PathLike[str]) -> Path:
    """Check that ``run_dir`` is a run directory with something to query; return it.

    A workflow's folder (``runs/<workflow>``) stands for its newest finished run (its
    ``latest`` link).

    Raises
    ------
    QueryError
        Missing directory, or no ``fields.parquet`` / ``district_areas.parquet`` in it
        (listing the run directories found below it, if any).
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise QueryError(f"{p}: no such run directory; pass runs/<workflow>/<run-id> (see `geoseg runs`)")
    if any((p / f).is_file() for f in RUN_TABLES.values()):
        return p
    latest = p / "latest"  # runs/<workflow>/latest: the newest finished run of a workflow
    if latest.is_dir() and any((latest / f).is_file() for f in RUN_TABLES.values()):
        return latest.resolve()
    below = sorted({q.parent for f in RUN_TABLES.values() for q in p.glob(f"*/{f}")} |
                   {q.parent for f in RUN_TABLES.values() for q in p.glob(f"*/*/{f}")})
    if below:
        shown = ", ".join(str(b) for b in below[-5:])
        raise QueryError(
            f"{p}: is not a run directory itself but holds {len(below)} run(s); pass one of them, e.g. {shown}"
        )
    raise QueryError(
        f"{p}: holds neither {RUN_TABLES['fields']} nor {RUN_TABLES['district_areas']}; pass the directory of a "
        f"finished run (runs/<workflow>/<run-id>)"
    )


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect_run(run_dir: str | os.PathLike[str]) -> Any:
    """An in-memory DuckDB connection with the run's views (see the module notes)."""
    import duckdb

    p = find_run(run_dir)
    con = duckdb.connect(":memory:")
    fields = p / RUN_TABLES["fields"]
    if fields.is_file():
        src = f"read_parquet({_sql_str(str(fields))})"
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
        drop = [c for c in cols if c in ("geometry", "bbox")]
        excl = f" EXCLUDE ({', '.join(_quote(c) for c in drop)})" if drop else ""
        con.execute(f"CREATE VIEW fields AS SELECT *{excl} FROM {src}")
        geo_excl = " EXCLUDE (bbox)" if "bbox" in cols else ""
        con.execute(f"CREATE VIEW fields_geo AS SELECT *{geo_excl} FROM {src}")
    areas = p / RUN_TABLES["district_areas"]
    if areas.is_file():
        con.execute(f"CREATE VIEW district_areas AS SELECT * FROM read_parquet({_sql_str(str(areas))})")
    return con


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _views(con: Any) -> dict[str, list[str]]:
    out = {}
    for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall():
        out[name] = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
    return out


def query_run(run_dir: str | os.PathLike[str], sql: str, params: list[Any] | None = None) -> "pd.DataFrame":
    """Run ``sql`` against a run's views; return the result as a DataFrame.

    Raises
    ------
    QueryError
        No outputs in ``run_dir``, or the SQL fails (the message lists the views and their
        columns).
    """
    import duckdb

    con = connect_run(run_dir)
    try:
        return con.execute(sql, params or []).df()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        views = "; ".join(f"{v}({', '.join(c)})" for v, c in _views(con).items())
        raise QueryError(f"{run_dir}: the query failed: {first}. Tables: {views}") from None
    finally:
        con.close()


def _need(con: Any, view: str, run_dir: Any) -> None:
    if view not in _views(con):
        raise QueryError(
            f"{run_dir}: has no {RUN_TABLES[view]}; this run did not write it (enable "
            f"{'outputs.district_areas' if view == 'district_areas' else 'outputs.fields'} in the workflow)"
        )


def _match(con: Any, column: str, value: str, run_dir: Any) -> str:
    """The value of ``column`` in ``district_areas`` equal to ``value`` ignoring case, or a clear error."""
    known = [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM district_areas ORDER BY 1").fetchall()]
    for k in known:
        if str(k).lower() == value.lower():
            return str(k)
    close = difflib.get_close_matches(value, [str(k) for k in known], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise QueryError(f"{run_dir}: no {column} {value!r} in this run{hint} The {column}s are: "
                     f"{', '.join(str(k) for k in known)}")


def district_summary(run_dir: str | os.PathLike[str], district: str | None = None,
                     crop: str | None = None) -> "pd.DataFrame":
    """The district table, optionally for one district and/or one crop (names match ignoring case).

    Raises
    ------
    QueryError
        Unknown district or crop (with the closest names), or no district table in the run.
    """
    con = connect_run(run_dir)
    try:
        _need(con, "district_areas", run_dir)
        where, args = [], []
        if district is not None:
            where.append("district = ?")
            args.append(_match(con, "district", district, run_dir))
        if crop is not None:
            where.append("crop = ?")
            args.append(_match(con, "crop", crop, run_dir))
        cols = [c for c in ("district", "class_id", "crop", "area_ha", "share", "observed_ha", "unobserved_ha")
                if c in _views(con)["district_areas"]]
        sql = f"SELECT {', '.join(cols)} FROM district_areas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY district, class_id"
        return con.execute(sql, args).df()
    finally:
        con.close()


def compare_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str], *, district: str | None = None,
                 crop: str | None = None) -> "pd.DataFrame":
    """Change in hectares per district and crop from run A to run B.

    Returns
    -------
    pandas.DataFrame
        ``district, class_id, crop, area_ha_a, area_ha_b, change_ha, change_pct``: one row
        per (district, class) in either run (a side without it counts 0 ha); ``change_pct``
        is NaN where run A had 0 ha.
    """
    import duckdb

    pa, pb = find_run(run_a), find_run(run_b)
    for p in (pa, pb):
        if not (p / RUN_TABLES["district_areas"]).is_file():
            raise QueryError(f"{p}: has no {RUN_TABLES['district_areas']} to compare")
    con = duckdb.connect(":memory:")
    try:
        for name, p in (("a", pa), ("b", pb)):
            con.execute(f"CREATE VIEW {name} AS SELECT district, class_id, crop, area_ha FROM "
                        f"read_parquet({_sql_str(str(p / RUN_TABLES['district_areas']))})")
        con.execute("CREATE VIEW district_areas AS SELECT * FROM a UNION ALL SELECT * FROM b")
        where, args = [], []
        if district is not None:
            where.append("district = ?")
            args.append(_match(con, "district", district, f"{pa} / {pb}"))
        if crop is not None:
            where.append("crop = ?")
            args.append(_match(con, "crop", crop, f"{pa} / {pb}"))
        sql = """
            SELECT coalesce(a.district, b.district) AS district,
                   coalesce(a.class_id, b.class_id) AS class_id,
                   coalesce(a.crop, b.crop) AS crop,
                   coalesce(a.area_ha, 0) AS area_ha_a,
                   coalesce(b.area_ha, 0) AS area_ha_b,
                   coalesce(b.area_ha, 0) - coalesce(a.area_ha, 0) AS change_ha,
                   CASE WHEN coalesce(a.area_ha, 0) > 0
                        THEN 100 * (coalesce(b.area_ha, 0) - a.area_ha) / a.area_ha END AS change_pct
            FROM a FULL OUTER JOIN b ON a.district = b.district AND a.class_id = b.class_id
        """
        if where:
            sql = f"SELECT * FROM ({sql}) WHERE " + " AND ".join(where)
        sql += " ORDER BY district, class_id"
        return con.execute(sql, args).df()
    finally:
        con.close()


def run_query(
    run_dir: str | os.PathLike[str],
    sql: str | None = None,
    *,
    district: str | None = None,
    crop: str | None = None,
    compare: str | os.PathLike[str] | None = None,
) -> "pd.DataFrame":
    """What ``geoseg query`` runs: SQL, a shortcut, or a comparison with another run.

    * ``sql`` given: :func:`query_run` (``district``/``crop``/``compare`` must be left out);
    * ``compare`` given: :func:`compare_runs` (this run is A, ``compare`` is B);
    * otherwise: :func:`district_summary` (the whole district table without filters).
    """
    if sql is not None:
        if district is not None or crop is not None or compare is not None:
            raise QueryError("give either SQL or the shortcuts (--district, --crop, --compare), not both")
        return query_run(run_dir, sql)
    if compare is not None:
        return compare_runs(run_dir, compare, district=district, crop=crop)
    return district_summary(run_dir, district=district, crop=crop)


def format_table(df: "pd.DataFrame", fmt: str = "table") -> str:
    """Render a result: ``table`` (aligned text, hectares to 2 decimals, shares in %),
    ``csv`` or ``json`` (records).

    Examples
    --------
    >>> import pandas as pd
    >>> print(format_table(pd.DataFrame({"district": ["Ludhiana"], "crop": ["rice"], "area_ha": [1234.5678],
    ...                                  "share": [0.4321]})))
    district  crop  area_ha  share
    Ludhiana  rice  1234.57  43.2%
    >>> format_table(pd.DataFrame({"a": [1]}), "xml")
    Traceback (most recent call last):
    ...
    geoseg.query.QueryError: unknown output format 'xml'; use table, csv or json
    """
    import pandas as pd

    if fmt not in _FORMATS:
        raise QueryError(f"unknown output format {fmt!r}; use {', '.join(_FORMATS[:-1])} or {_FORMATS[-1]}")
    df = df.copy()
    for c in df.columns:
        if len(df) and isinstance(df[c].iloc[0], (bytes, bytearray, memoryview)):
            df[c] = df[c].map(lambda b: f"<{len(b)} bytes WKB>" if b is not None else None)
    if fmt == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps(json.loads(df.to_json(orient="records", force_ascii=False)), indent=1, ensure_ascii=False)
    if df.empty:
        return "(no rows)\n" + "  ".join(str(c) for c in df.columns)
    shown = pd.DataFrame(index=df.index)
    for c in df.columns:
        col = df[c]
        if str(c) in ("share",) or str(c).endswith("_share"):
            shown[c] = col.map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}%")
        elif str(c).endswith("_pct"):
            shown[c] = col.map(lambda v: "" if pd.isna(v) else f"{v:+.1f}%")
        elif pd.api.types.is_float_dtype(col.dtype):
            shown[c] = col.map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
        else:
            shown[c] = col.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    widths = {c: max(len(str(c)), int(shown[c].str.len().max() or 0)) for c in shown.columns}
    numeric = {c: pd.api.types.is_numeric_dtype(df[c].dtype) and not pd.api.types.is_bool_dtype(df[c].dtype)
               for c in df.columns}

    def cell(c: Any, v: str) -> str:
        return v.rjust(widths[c]) if numeric[c] else v.ljust(widths[c])

    lines = ["  ".join(cell(c, str(c)) for c in shown.columns).rstrip()]
    for row in shown.itertuples(index=False):
        lines.append("  ".join(cell(c, v) for c, v in zip(shown.columns, row)).rstrip())
    return "\n".join(lines)
