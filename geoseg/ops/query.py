"""SQL over a run's outputs (DuckDB over its Parquet files), shortcuts and run-to-run changes.

A run directory (``runs/<workflow>/<run-id>/``) holds ``fields.parquet`` (GeoParquet, one
row per field) and ``district_areas.parquet`` (one row per district and class, see
:data:`geoseg.ops.areas.TABLE_COLUMNS`), and once ``geoseg estimate`` has run on it the
tables of a reference-sample estimate. :func:`query_run` exposes each file there as a view:

``fields``
    every attribute of ``fields.parquet`` except the geometry (``id``, ``field_id``,
    ``class_id``, ``crop:name``, ``area_ha``, ``metrics:perimeter``, ``confidence``,
    ``district``, ``run_id`` ... whatever the run wrote; :mod:`geoseg.io.fiboa` lists them;
    names with a colon are quoted in SQL: ``"crop:name"``). The fields of a run of geoseg
    0.1 (``crop``, ``perimeter_m``) are shown under these names too;
``fields_geo``
    the same with the geometry column (WKB; ``ST_AsText(geometry)`` works);
``district_areas``
    the district table;
``estimate_areas``
    bias-corrected area per class with its 95 % confidence interval, next to the mapped area,
    and user's and producer's accuracy (``estimate_areas.parquet``, columns
    :data:`geoseg.ops.estimate.AREA_COLUMNS`);
``estimate_districts``
    the same areas per district and class (``estimate_districts.parquet``,
    :data:`geoseg.ops.estimate.DISTRICT_COLUMNS`; only when the sample had districts);
``estimate_matrix``
    the error matrix in sample points, area proportions and hectares
    (``estimate_matrix.parquet``, :data:`geoseg.ops.estimate.MATRIX_COLUMNS`).

Example::

    geoseg query runs/punjab/2024-11-02T0930 \\
        'SELECT district, "crop:name" AS crop, sum(area_ha) AS ha FROM fields GROUP BY ALL ORDER BY ha DESC'
    geoseg query runs/punjab/latest \\
        'SELECT crop, mapped_ha, estimated_ha, ci_low_ha, ci_high_ha FROM estimate_areas ORDER BY class_id'

The views read the files in place (nothing is copied or loaded up front); the SQL runs
in an in-memory DuckDB database.

Safe mode (the default of :func:`query_run`, :func:`run_query` and :func:`connect_run`)
is for SQL you did not write yourself. DuckDB may then read the run's Parquet files
behind the views and nothing else (``enable_external_access=false`` with ``allowed_paths``
naming them; its spill files go to a private temporary directory); it installs and loads no
extensions, and its configuration is locked so that the SQL cannot switch any of this
back. Because DuckDB's ``allowed_paths`` grants writing as well as reading, :func:`query_run`
also runs only ``SELECT`` statements (``WITH``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``FROM ...``
are ``SELECT`` to DuckDB); ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``/``PRAGMA``,
``EXPLAIN`` (``EXPLAIN ANALYZE`` runs its statement) and the rest are refused. With
``safe=False`` (the default of ``geoseg query``, whose SQL comes from the user's own
command line) the SQL has DuckDB's full access: it can read and write any file the user
can, as running ``duckdb`` would.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import QueryError
from geoseg.io.fiboa import OLD_NAMES
from geoseg.rundir import ESTIMATE_TABLES, LATEST, RunPaths, district_areas_name, estimate_table_name, fields_name

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "RUN_TABLES",
    "find_run",
    "connect_run",
    "query_run",
    "district_summary",
    "compare_runs",
    "run_query",
    "format_table",
]

#: View name -> file in a run directory (the names :mod:`geoseg.rundir` gives them); a view exists
#: when its file does (``fields_geo`` reads ``fields`` too).
RUN_TABLES = {
    "fields": fields_name("parquet"),
    "district_areas": district_areas_name("parquet"),
    **{f"estimate_{t}": estimate_table_name(t, "parquet") for t in ESTIMATE_TABLES},
    "field_timeseries": RunPaths(Path()).field_timeseries.name,
    "district_crop_timeseries": RunPaths(Path()).district_crop_timeseries.name,
}
_FORMATS = ("table", "csv", "json")


_RERUN = "rerun the workflow (``geoseg run WORKFLOW.yaml`` makes a new run)"
_REESTIMATE = ("``geoseg estimate {run} LABELS --overwrite`` (LABELS: the labelled points, which {summary} names "
               "under \"labels\")")
#: What a run's file holds, and how to make it again, for the message about a damaged one.
_REGENERATE = {
    "fields": ("the GeoParquet of field polygons that a run writes",
               "``geoseg polygonize {run}/mask.tif --dataset --out {path} --confidence {run}/confidence.tif "
               "--overwrite`` (with the workflow's --districts and --name-field), or " + _RERUN),
    "district_areas": ("the district table that a run writes",
                       "``geoseg areas {run}/mask.tif --districts FILE --name-field ATTR --out {path}``, or "
                       + _RERUN),
    "estimate_areas": ("the estimated areas per class that `geoseg estimate` writes", _REESTIMATE),
    "estimate_districts": ("the estimated areas per district and class that `geoseg estimate` writes", _REESTIMATE),
    "estimate_matrix": ("the error matrix that `geoseg estimate` writes", _REESTIMATE),
    "field_timeseries": ("each field's index statistics per date that a run with outputs.features writes",
                         "``geoseg zonal STACK {run}/fields.parquet --out DIR`` (then copy field_timeseries.parquet), "
                         "or " + _RERUN),
    "district_crop_timeseries": ("the index profiles per district and crop that a run with outputs.features writes",
                                 "``geoseg zonal STACK {run}/fields.parquet --mask {run}/mask.tif --districts FILE "
                                 "--out DIR``, or " + _RERUN),
}
#: How a run gets the file of a view it lacks, for :func:`_need`'s message.
_MISSING = {
    "fields": "enable outputs.fields in the workflow",
    "district_areas": "enable outputs.district_areas in the workflow",
    "estimate_areas": "draw a reference sample with `geoseg sample`, label it, then run `geoseg estimate`",
    "estimate_districts": "`geoseg estimate` writes it when the sample has districts",
    "estimate_matrix": "draw a reference sample with `geoseg sample`, label it, then run `geoseg estimate`",
    "field_timeseries": "list the indices in outputs.features in the workflow",
    "district_crop_timeseries": "list the indices in outputs.features (with districts) in the workflow",
}
#: Safe mode: DuckDB settings that keep SQL away from files and extensions; each is set to false.
_SAFE_OFF = ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions",
             "allow_community_extensions")
#: Safe mode: why a statement that is not a SELECT is refused, by DuckDB's statement type.
_REFUSED = {
    "COPY": "copies data to or from files",
    "EXPORT": "writes files",
    "ATTACH": "opens another database file",
    "DETACH": "detaches a database",
    "LOAD": "installs or loads a DuckDB extension",  # INSTALL is a LOAD statement too
    "SET": "changes a setting",  # also RESET, SET VARIABLE and USE
    "VARIABLE_SET": "changes a setting",
    "PRAGMA": "can change settings",
    "EXPLAIN": "can run the statement it explains (EXPLAIN ANALYZE does)",
    "CALL": "calls a procedure",
}
_SAFE_FIX = ("to run it with full DuckDB access, if you trust this SQL, use `geoseg query` without --safe, or "
             "safe=False in Python")


def find_run(run_dir: str | os.PathLike[str]) -> Path:
    """Check that ``run_dir`` is a run directory with something to query; return it.

    A workflow's folder (``runs/<workflow>``) stands for its newest finished run (its
    ``latest`` link).

    Raises
    ------
    QueryError
        Missing directory, or none of the files of :data:`RUN_TABLES` in it (listing the run
        directories found below it, if any).
    """
    p = Path(run_dir)
    if not p.is_dir():
        raise QueryError(f"{p}: no such run directory; pass runs/<workflow>/<run-id> (see `geoseg runs`)")
    if any(_table_files(p / f) for f in RUN_TABLES.values()):
        return p
    latest = p / LATEST  # runs/<workflow>/latest: the newest finished run of a workflow
    if latest.is_dir() and any(_table_files(latest / f) for f in RUN_TABLES.values()):
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


def _run_files(p: Path) -> list[Path]:
    """The run's Parquet files that exist, in :data:`RUN_TABLES` order (a table written as a dataset,
    a folder of parts: each part)."""
    return [f for name in RUN_TABLES.values() for f in _table_files(p / name)]


def _table_files(path: Path) -> list[Path]:
    """A table's Parquet files: the file, or the parts of a dataset folder (none when absent)."""
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    return [path] if path.is_file() else []


def _source(path: Path) -> str:
    """``read_parquet``'s argument for a table: its file, or the list of a dataset's parts."""
    if path.is_dir():
        return "[" + ", ".join(_sql_str(str(f)) for f in _table_files(path)) + "]"
    return _sql_str(str(path))


def _duckdb_reason(e: Exception, path: Path) -> str:
    """DuckDB's first line without its class prefix ("Invalid Input Error: ") and the quoted path."""
    first = str(e).strip().splitlines()[0]
    first = re.sub(r"^[A-Z][A-Za-z ]*Error: ", "", first)
    return re.sub(r"\s*'" + re.escape(str(path)) + "'", "", first).rstrip(". ")


def _damaged(path: Path, e: Exception, problem: str = "cannot be read as Parquet",
             cause: str = "damaged or truncated") -> QueryError:
    """The error for a run's Parquet file that DuckDB cannot read (or that lacks a column)."""
    table = path if path.name in RUN_TABLES.values() else path.parent  # a file, or a part of a dataset
    view = next(v for v, f in RUN_TABLES.items() if f == table.name)
    holds, command = _REGENERATE[view]
    fix = command.format(run=table.parent, path=table, summary=RunPaths(table.parent).estimate_summary)
    return QueryError(
        f"{path}: {problem} ({_duckdb_reason(e, path)}); expected {holds} - the file is {cause}: regenerate it "
        f"with {fix}"
    )


def _parquet_view(con: Any, name: str, path: Path, columns: str = "*") -> None:
    """``CREATE VIEW name AS SELECT columns FROM read_parquet(path)``; a damaged file raises :class:`QueryError`."""
    import duckdb

    try:
        con.execute(f"CREATE VIEW {name} AS SELECT {columns} FROM read_parquet({_source(path)})")
    except duckdb.BinderException as e:  # it reads, but a column is missing
        raise _damaged(path, e, "lacks a column geoseg needs", "not what geoseg wrote") from None
    except duckdb.Error as e:
        raise _damaged(path, e) from None


def _check_readable(con: Any, files: Sequence[Path]) -> None:
    """Decode every column of ``files``; raise :class:`QueryError` naming the first one DuckDB cannot read.

    A file whose footer reads but whose pages are damaged fails only when a query reaches
    them, with a message that names no file (``Variable-length int over 10 bytes``).
    """
    import duckdb

    for path in files:
        try:
            con.execute(f"SELECT max(hash(COLUMNS(*))) FROM read_parquet({_sql_str(str(path))})").fetchall()
        except duckdb.Error as e:
            raise _damaged(path, e) from None


@contextmanager
def _reading(con: Any, files: Sequence[Path]) -> Iterator[None]:
    """Run queries over ``files``: a DuckDB error that a damaged file can cause is checked against them.

    Errors raised while DuckDB parses and plans a statement (bad SQL, unknown names, safe
    mode's refusals) come before any data is read, so they are passed on as they are;
    after any other error each file is read through (only then), and a damaged one raises
    :class:`QueryError` naming it. Otherwise the original error propagates.
    """
    import duckdb

    try:
        yield
    except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException, duckdb.PermissionException):
        raise
    except duckdb.Error:
        _check_readable(con, files)
        raise


def _lock_down(con: Any, files: Sequence[Path]) -> None:
    """Safe mode: DuckDB may read ``files`` only, loads no extension, and its settings are locked.

    With external access off DuckDB still allows its temporary directory (``./.tmp`` by
    default, which may hold anything): it is moved to a fresh directory that DuckDB creates
    only if a query spills to disk and deletes when the connection closes.
    """
    spill = Path(tempfile.gettempdir()) / f"geoseg-duckdb-{uuid.uuid4().hex}"
    con.execute(f"SET temp_directory = {_sql_str(str(spill))}")
    # Before external access goes off: DuckDB refuses to change allowed_paths after it.
    con.execute(f"SET allowed_paths = [{', '.join(_sql_str(str(f)) for f in files)}]")
    for name in _SAFE_OFF:
        con.execute(f"SET {name} = false")
    con.execute("SET lock_configuration = true")


def _load_spatial(con: Any) -> None:
    """Load DuckDB's spatial extension (``ST_Area`` ...) where it is installed; never install it.

    Installing downloads it, which a batch machine without network cannot do and which a query
    should not do silently; a query that needs it and lacks it gets :func:`_query_failed`'s
    message instead. Safe mode loads no extension: the lock-down is about what SQL can reach,
    and an extension adds readers of its own (``ST_Read``).
    """
    import duckdb

    try:
        con.execute("LOAD spatial")
    except duckdb.Error:
        pass  # not installed: a query that needs it says so (_query_failed)


def _connect(p: Path, safe: bool) -> Any:
    """:func:`connect_run` for a directory already checked by :func:`find_run`."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        if not safe:
            _load_spatial(con)
        fields = p / RUN_TABLES["fields"]
        if _table_files(fields):
            try:
                cols = [r[0] for r in con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({_source(fields)})").fetchall()]
            except duckdb.Error as e:
                raise _damaged(fields, e) from None
            drop = [c for c in cols if c in ("geometry", "bbox")]
            excl = f" EXCLUDE ({', '.join(_quote(c) for c in drop)})" if drop else ""
            # a run of geoseg 0.1: its columns also under today's names, so that today's SQL works on it
            compat = "".join(f", {_quote(old)} AS {_quote(new)}" for old, new in OLD_NAMES.items()
                             if old in cols and new not in cols)
            _parquet_view(con, "fields", fields, f"*{excl}{compat}")
            _parquet_view(con, "fields_geo", fields, ("* EXCLUDE (bbox)" if "bbox" in cols else "*") + compat)
        for view in ("district_areas", *(f"estimate_{t}" for t in ESTIMATE_TABLES), "field_timeseries",
                     "district_crop_timeseries"):
            path = p / RUN_TABLES[view]
            if _table_files(path):
                _parquet_view(con, view, path)
        if safe:
            _lock_down(con, _run_files(p))
    except BaseException:
        con.close()
        raise
    return con


def connect_run(run_dir: str | os.PathLike[str], *, safe: bool = True) -> Any:
    """An in-memory DuckDB connection with the run's views (see the module notes).

    Parameters
    ----------
    run_dir
        A run directory, or a workflow's folder (its newest finished run).
    safe
        Lock the connection down: DuckDB may read the run's Parquet files behind the views
        and no other file, installs and loads no extension, and its settings cannot be changed.
        DuckDB's ``allowed_paths`` lets it *write* those files too (``COPY ... TO`` one of them),
        so run SQL you did not write through :func:`query_run`, which also refuses every
        statement but ``SELECT``. ``False``: DuckDB's full access, as running ``duckdb``.

        .. versionadded:: 0.2.0 ``safe``, on by default.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Close it when done (in safe mode this also deletes its spill directory).

    Raises
    ------
    QueryError
        No outputs in ``run_dir``, or a damaged Parquet file of :data:`RUN_TABLES` (naming the
        file and how to regenerate it).
    """
    return _connect(find_run(run_dir), safe)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _views(con: Any) -> dict[str, list[str]]:
    out = {}
    for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name").fetchall():
        out[name] = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
    return out


def _short(text: str, width: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 3] + "..."


def _refuse_unsafe(con: Any, sql: str, run_dir: Any) -> None:
    """Safe mode: raise :class:`QueryError` for the first statement of ``sql`` that is not a SELECT."""
    statements = con.extract_statements(sql)
    for i, st in enumerate(statements, start=1):
        try:
            kind = st.type.name
        except ValueError:  # a type the Python API cannot name (UPDATE EXTENSIONS in DuckDB 2.0)
            kind = "unknown"
        if not kind.replace("_", "").isalpha():  # DuckDB 1.5 names that type "???"
            kind = "unknown"
        if kind == "SELECT":
            continue
        why = _REFUSED.get(kind, "is not a query")
        article = "an" if kind[0].upper() in "AEIOU" else "a"
        views = ", ".join(_views(con))
        raise QueryError(
            f"{run_dir}: refused in safe mode: statement {i} ({_short(st.query)}) is {article} {kind} statement, "
            f"which {why}; safe mode runs only SELECT queries over the run's views ({views}) - {_SAFE_FIX}"
        )


def _and(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def _query_failed(con: Any, e: Exception, run_dir: Any, files: Sequence[Path], safe: bool) -> QueryError:
    """The :class:`QueryError` for SQL that DuckDB refused or could not run."""
    import duckdb

    first = str(e).strip().splitlines()[0]
    views = _views(con)
    if safe and isinstance(e, duckdb.PermissionException):
        m = re.search(r'Cannot access (?:file|directory) "(.*)"', first)
        what = f"reads {m.group(1)}" if m else f"needs what safe mode does not allow ({first})"
        return QueryError(
            f"{run_dir}: refused in safe mode: the query {what}, outside the run; safe mode reads only the run's "
            f"{_and([f.name for f in files])}, through the views {', '.join(views)} - {_SAFE_FIX}"
        )
    spatial = re.search(r'Function with name "?(\w+)"? is not in the catalog, but it exists in the spatial extension',
                        first)
    if isinstance(e, duckdb.CatalogException) and spatial:
        fn = spatial.group(1)
        if safe:
            return QueryError(
                f"{run_dir}: the query calls {fn}, a function of DuckDB's spatial extension, and safe mode loads no "
                f"extensions; the fields' area_ha and \"metrics:perimeter\" columns hold ground areas and lengths "
                f"already - "
                f"{_SAFE_FIX}"
            )
        return QueryError(
            f"{run_dir}: the query calls {fn}, a function of DuckDB's spatial extension, which is not installed "
            f"here (installing downloads it); install it once on a machine with network access "
            f"(`python -c \"import duckdb; duckdb.sql('INSTALL spatial')\"`, or copy the extension into "
            f"~/.duckdb/extensions/), or use the fields' area_ha and \"metrics:perimeter\" columns, which hold "
            f"ground areas and lengths already"
        )
    if safe and isinstance(e, duckdb.CatalogException) and " extension" in first:
        first += " (safe mode installs and loads no extensions)"
    tables = "; ".join(f"{v}({', '.join(c)})" for v, c in views.items())
    return QueryError(f"{run_dir}: the query failed: {first}. Tables: {tables}")


def query_run(run_dir: str | os.PathLike[str], sql: str, params: list[Any] | None = None, *,
              safe: bool = True) -> "pd.DataFrame":
    """Run ``sql`` against a run's views; return the result as a DataFrame.

    Parameters
    ----------
    run_dir
        A run directory, or a workflow's folder (its newest finished run).
    sql
        DuckDB SQL over the views ``fields``, ``fields_geo`` and ``district_areas``, and
        ``estimate_areas``, ``estimate_districts`` and ``estimate_matrix`` where the run holds
        an estimate (see the module notes); several statements separated by ``;`` return the
        last one's result.
    params
        Values for ``?`` placeholders.
    safe
        Run only ``SELECT`` statements, reading only the run's Parquet files, with no
        extensions and locked settings (see the module notes); for SQL you did not write.
        ``False`` gives the SQL DuckDB's full access: it can read and write any file you can.

        .. versionadded:: 0.2.0 ``safe``, on by default.

    Raises
    ------
    QueryError
        No outputs in ``run_dir``; a damaged output (naming the file and how to regenerate
        it); SQL that fails (the message lists the views and their columns); in safe mode,
        a statement that is not a ``SELECT`` or a query that reaches outside the run (saying
        which and why).
    """
    import duckdb

    p = find_run(run_dir)
    con, files = _connect(p, safe), _run_files(p)
    try:
        with _reading(con, files):
            if safe:
                _refuse_unsafe(con, sql, run_dir)
            return con.execute(sql, params or []).df()
    except duckdb.Error as e:
        raise _query_failed(con, e, run_dir, files, safe) from None
    finally:
        con.close()


def _need(con: Any, view: str, run_dir: Any) -> None:
    """Raise :class:`QueryError` when the run has no file for ``view``, saying how it gets one."""
    if view not in _views(con):
        raise QueryError(f"{run_dir}: has no {RUN_TABLES[view]}; this run did not write it ({_MISSING[view]})")


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
        Unknown district or crop (with the closest names), no district table in the run, or a
        damaged one.
    """
    p = find_run(run_dir)
    con = _connect(p, safe=True)
    try:
        _need(con, "district_areas", run_dir)
        with _reading(con, _run_files(p)):
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

    Raises
    ------
    QueryError
        A run without a district table, or with a damaged one; an unknown district or crop.
    """
    import duckdb

    pa, pb = find_run(run_a), find_run(run_b)
    files = [pa / RUN_TABLES["district_areas"], pb / RUN_TABLES["district_areas"]]
    for f in files:
        if not f.is_file():
            raise QueryError(f"{f.parent}: has no {f.name} to compare")
    con = duckdb.connect(":memory:")
    try:
        for name, f in zip("ab", files):
            _parquet_view(con, name, f, "district, class_id, crop, area_ha")
        con.execute("CREATE VIEW district_areas AS SELECT * FROM a UNION ALL SELECT * FROM b")
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
        with _reading(con, files):
            where, args = [], []
            if district is not None:
                where.append("district = ?")
                args.append(_match(con, "district", district, f"{pa} / {pb}"))
            if crop is not None:
                where.append("crop = ?")
                args.append(_match(con, "crop", crop, f"{pa} / {pb}"))
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
    safe: bool = True,
) -> "pd.DataFrame":
    """What ``geoseg query`` runs: SQL, a shortcut, or a comparison with another run.

    * ``sql`` given: :func:`query_run` (``district``/``crop``/``compare`` must be left out),
      in safe mode unless ``safe=False`` (``geoseg query`` passes ``safe=False`` unless
      ``--safe``: its SQL comes from the user's own command line);
    * ``compare`` given: :func:`compare_runs` (this run is A, ``compare`` is B);
    * otherwise: :func:`district_summary` (the whole district table without filters).

    The shortcuts run geoseg's own SQL, never the caller's; ``safe`` applies to ``sql``.

    .. versionadded:: 0.2.0 ``safe``, on by default.
    """
    if sql is not None:
        if district is not None or crop is not None or compare is not None:
            raise QueryError("give either SQL or the shortcuts (--district, --crop, --compare), not both")
        return query_run(run_dir, sql, safe=safe)
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
    geoseg.errors.QueryError: unknown output format 'xml'; use table, csv or json
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
