"""SQL and shortcuts over a run's Parquet outputs; run-to-run comparison; the query CLI."""

from __future__ import annotations

import json
from pathlib import Path

import click
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner

from geoseg.classes import default_classes
from geoseg.cli.areas import areas
from geoseg.cli.main import GeosegGroup, cli
from geoseg.cli.polygonize import polygonize
from geoseg.cli.query import query
from geoseg.errors import QueryError
from geoseg.io.vector import write_table, write_vector
from geoseg.ops.estimate import AREA_COLUMNS, DISTRICT_COLUMNS, MATRIX_COLUMNS, estimate_file
from geoseg.ops.query import (
    RUN_TABLES,
    compare_runs,
    connect_run,
    district_summary,
    format_table,
    query_run,
    run_query,
)
from geoseg.ops.sample import sample_file
from geoseg.rundir import ESTIMATE_TABLES, RunPaths
from geoseg.synth import synthesize

from ..workflow_helpers import write_districts


def make_run(root: Path, name: str, rice_ha: float, wheat_ha: float, with_fields: bool = True,
             old: bool = False) -> Path:
    """A run folder with fields (fiboa's column names; ``old``: geoseg 0.1's) and a district table."""
    run = root / "runs" / "punjab" / name
    run.mkdir(parents=True)
    if with_fields:
        n = 4
        gdf = gpd.GeoDataFrame(
            {
                "field_id": np.arange(n, dtype=np.int64) * 1000,
                "class_id": np.array([1, 1, 2, 2], np.int32),
                "crop" if old else "crop:name": ["rice", "rice", "wheat", "wheat"],
                "area_ha": [rice_ha / 2, rice_ha / 2, wheat_ha / 2, wheat_ha / 2],
                "perimeter_m" if old else "metrics:perimeter": [400.0] * n,
                "confidence": [0.9, 0.8, 0.7, 0.95],
                "district": ["Ludhiana", "Sangrur", "Ludhiana", "Ludhiana"],
                "run_id": [name] * n,
            },
            geometry=[shapely.box(600_000 + 100 * i, 3_380_000, 600_100 + 100 * i, 3_380_100) for i in range(n)],
            crs="EPSG:32643",
        )
        write_vector(gdf, run / "fields.parquet")
    table = pd.DataFrame(
        {
            "district": ["Ludhiana", "Ludhiana", "Ludhiana", "Sangrur", "Sangrur", "Sangrur"],
            "class_id": [0, 1, 2, 0, 1, 2],
            "crop": ["background", "rice", "wheat"] * 2,
            "area_ha": [10.0, rice_ha / 2, wheat_ha, 5.0, rice_ha / 2, 0.0],
            "share": [0.1, 0.2, 0.7, 0.5, 0.5, 0.0],
            "observed_ha": [100.0] * 3 + [10.0] * 3,
            "unobserved_ha": [3.0] * 3 + [0.0] * 3,
            "district_ha": [1000.0] * 3 + [2000.0] * 3,
            "coverage": [0.1] * 3 + [0.005] * 3,
        }
    )
    write_table(table, run / "district_areas.parquet")
    write_table(table, run / "district_areas.csv")
    (run / "manifest.json").write_text(json.dumps({"run_id": name}))
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path, "2024-kharif", 40.0, 60.0), make_run(tmp_path, "2025-kharif", 50.0, 30.0)


def test_sql_over_fields_and_district_table(runs):
    a, _ = runs
    df = query_run(a, 'SELECT district, "crop:name" AS crop, sum(area_ha) AS ha, count(*) AS n FROM fields '
                      "GROUP BY ALL ORDER BY district, crop")
    assert df.to_dict("records") == [
        {"district": "Ludhiana", "crop": "rice", "ha": 20.0, "n": 1},
        {"district": "Ludhiana", "crop": "wheat", "ha": 60.0, "n": 2},
        {"district": "Sangrur", "crop": "rice", "ha": 20.0, "n": 1},
    ]
    assert "geometry" not in query_run(a, "SELECT * FROM fields LIMIT 1").columns
    wkt = query_run(a, "SELECT ST_AsText(geometry) AS wkt FROM fields_geo ORDER BY field_id LIMIT 1").wkt[0]
    assert shapely.from_wkt(wkt).equals(shapely.box(600_000, 3_380_000, 600_100, 3_380_100))
    t = query_run(a, "SELECT sum(area_ha) AS ha FROM district_areas WHERE crop = 'rice'")
    assert t.ha[0] == 40.0


def test_shortcuts_match_names_ignoring_case(runs):
    a, _ = runs
    ludhiana = district_summary(a, district="LUDHIANA")
    assert ludhiana.crop.tolist() == ["background", "rice", "wheat"]
    assert ludhiana.area_ha.tolist() == [10.0, 20.0, 60.0]
    rice = district_summary(a, crop="Rice")
    assert rice.district.tolist() == ["Ludhiana", "Sangrur"] and rice.area_ha.sum() == 40.0
    one = district_summary(a, district="sangrur", crop="wheat")
    assert len(one) == 1 and one.area_ha[0] == 0.0


def test_unknown_names_suggest_close_matches(runs):
    a, _ = runs
    with pytest.raises(QueryError, match=r"no district 'Ludhina' in this run; did you mean 'Ludhiana'\? The districts "
                                         r"are: Ludhiana, Sangrur"):
        district_summary(a, district="Ludhina")
    with pytest.raises(QueryError, match=r"no crop 'barley' in this run The crops are: background, rice, wheat"):
        district_summary(a, crop="barley")


def test_compare_two_runs_change_per_district_and_crop(runs):
    a, b = runs
    df = compare_runs(a, b)
    row = df[(df.district == "Ludhiana") & (df.crop == "wheat")].iloc[0]
    assert (row.area_ha_a, row.area_ha_b, row.change_ha) == (60.0, 30.0, -30.0)
    assert row.change_pct == pytest.approx(-50.0)
    sang = df[(df.district == "Sangrur") & (df.crop == "wheat")].iloc[0]
    assert sang.change_ha == 0.0 and pd.isna(sang.change_pct)  # 0 ha before: no percentage
    rice = compare_runs(a, b, crop="RICE")
    assert rice.change_ha.tolist() == [5.0, 5.0]
    assert run_query(a, compare=b, district="sangrur").district.unique().tolist() == ["Sangrur"]


def test_a_run_of_geoseg_0_1_answers_todays_sql(tmp_path):
    """Its fields' crop and perimeter_m are shown as crop:name and metrics:perimeter too (both views)."""
    run = make_run(tmp_path, "2023-kharif", 40.0, 60.0, old=True)
    sql = ('SELECT "crop:name" AS crop, sum("metrics:perimeter") AS m, sum(area_ha) AS ha FROM {} '
           "GROUP BY ALL ORDER BY ALL")
    for view in ("fields", "fields_geo"):
        assert query_run(run, sql.format(view)).to_dict("records") == [
            {"crop": "rice", "m": 800.0, "ha": 40.0}, {"crop": "wheat", "m": 800.0, "ha": 60.0}]
    assert query_run(run, "SELECT crop FROM fields ORDER BY field_id").crop.tolist()[0] == "rice"  # old SQL too


def test_bad_sql_lists_the_tables(runs):
    a, _ = runs
    with pytest.raises(QueryError, match=r"the query failed: .*nope.* Tables: district_areas\(district, class_id, crop, "
                                         r"area_ha, .*\); fields\(field_id, class_id, crop:name, area_ha, "
                                         r"metrics:perimeter, confidence, district, run_id\)"):
        query_run(a, "SELECT * FROM nope")
    with pytest.raises(QueryError, match="give either SQL or the shortcuts"):
        run_query(a, "SELECT 1", district="Ludhiana")


def test_run_directory_errors(runs, tmp_path):
    with pytest.raises(QueryError, match=r"missing: no such run directory; pass runs/<workflow>/<run-id>"):
        query_run(tmp_path / "missing", "SELECT 1")
    with pytest.raises(QueryError, match=r"punjab: is not a run directory itself but holds 2 run\(s\); pass one of "
                                         r"them, e.g. .*2024-kharif"):
        query_run(tmp_path / "runs" / "punjab", "SELECT 1")
    # A workflow's folder with a `latest` link (as `geoseg run` leaves it) stands for that run.
    target = sorted(p for p in (tmp_path / "runs" / "punjab").iterdir() if p.is_dir())[-1]
    (tmp_path / "runs" / "punjab" / "latest").symlink_to(target.name, target_is_directory=True)
    sql = "SELECT district, crop, area_ha FROM district_areas ORDER BY ALL"
    assert query_run(tmp_path / "runs" / "punjab", sql).equals(query_run(target, sql))
    only_table = make_run(tmp_path, "no-fields", 1.0, 1.0, with_fields=False)
    assert len(district_summary(only_table)) == 6
    with pytest.raises(QueryError, match="Table with name fields does not exist"):
        query_run(only_table, "SELECT * FROM fields")


def test_format_table_csv_and_json(runs):
    a, _ = runs
    df = district_summary(a, district="Ludhiana")
    text = format_table(df)
    assert text.splitlines()[0].split() == ["district", "class_id", "crop", "area_ha", "share", "observed_ha",
                                            "unobserved_ha"]
    assert "Ludhiana         1  rice          20.00  20.0%       100.00           3.00" in text
    assert format_table(df, "csv").splitlines()[1] == "Ludhiana,0,background,10.0,0.1,100.0,3.0"
    assert json.loads(format_table(df, "json"))[2]["crop"] == "wheat"
    assert format_table(df.iloc[:0]).startswith("(no rows)")


# --------------------------------------------------------------------------------------
# CLI, end to end on a synthetic region: polygonize + areas -> a run directory -> query
def _cli() -> click.Group:
    @click.group(cls=GeosegGroup)
    def cli() -> None:
        pass

    for cmd in (polygonize, areas, query):
        cli.add_command(cmd)
    return cli


def test_cli_query_end_to_end(tmp_path):
    region = synthesize(tmp_path / "region", height=256, width=256, seed=5)
    run = tmp_path / "runs" / "demo" / "r1"
    cli, runner = _cli(), CliRunner()
    r = runner.invoke(cli, ["polygonize", str(region.labels), "--out", str(run / "fields.parquet"),
                            "--districts", str(region.districts), "--name-field", "district", "--run-id", "r1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["areas", str(region.labels), "--districts", str(region.districts), "--name-field",
                            "district", "--out", str(run / "district_areas.parquet"), "-q"])
    assert r.exit_code == 0, r.output
    name = region.district_names[0]
    r = runner.invoke(cli, ["query", str(run), "--district", name.upper(), "--format", "csv"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(pd.io.common.StringIO(r.output))
    assert set(table.district) == {name} and len(table) == 7
    truth = region.truth[region.truth.district == name].set_index("class_id").hectares
    got = table.set_index("class_id").area_ha.reindex(truth.index)
    assert np.allclose(got, truth, atol=0.2)
    r = runner.invoke(cli, ["query", str(run), "SELECT count(*) AS n, sum(area_ha) AS ha FROM fields WHERE run_id = 'r1'",
                            "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["n"] > 10
    r = runner.invoke(cli, ["query", str(run), "--crop", "rise"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and "did you mean 'rice'?" in r.output


# --------------------------------------------------------------------------------------
# Safe mode: SQL that cannot reach anything but the run's own two files
@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    """A CSV outside the run that SQL in safe mode must not read."""
    p = tmp_path / "secret.csv"
    p.write_text("name,pin\nalice,1234\n")
    return p


_FIX = ("to run it with full DuckDB access, if you trust this SQL, use `geoseg query` without --safe, or "
        "safe=False in Python")


def test_safe_mode_reads_the_run_views(runs):
    a, _ = runs
    df = query_run(a, 'SELECT "crop:name" AS crop, sum(area_ha) AS ha, count(*) AS n FROM fields GROUP BY ALL '
                      "ORDER BY ALL", safe=True)
    assert df.to_dict("records") == [{"crop": "rice", "ha": 40.0, "n": 2}, {"crop": "wheat", "ha": 60.0, "n": 2}]
    wkt = query_run(a, "SELECT ST_AsText(geometry) AS wkt FROM fields_geo WHERE field_id = 3000", safe=True).wkt[0]
    assert shapely.from_wkt(wkt).equals(shapely.box(600_300, 3_380_000, 600_400, 3_380_100))
    t = query_run(a, "WITH r AS (SELECT * FROM district_areas WHERE crop = 'wheat') SELECT district, area_ha FROM r "
                     "ORDER BY district", safe=True)
    assert t.to_dict("records") == [{"district": "Ludhiana", "area_ha": 60.0}, {"district": "Sangrur", "area_ha": 0.0}]
    assert query_run(a, "DESCRIBE district_areas", safe=True).column_name.tolist()[:4] == [
        "district", "class_id", "crop", "area_ha"]
    assert run_query(a, "SELECT count(*) AS n FROM fields WHERE district = ?".replace("?", "'Sangrur'")).n[0] == 1


def test_safe_mode_refuses_a_file_outside_the_run(runs, secret):
    a, _ = runs
    sql = f"SELECT * FROM read_csv('{secret}')"
    with pytest.raises(QueryError) as e:
        query_run(a, sql)  # safe is the default
    assert str(e.value) == (
        f"{a}: refused in safe mode: the query reads {secret}, outside the run; safe mode reads only the run's "
        f"fields.parquet and district_areas.parquet, through the views district_areas, fields, fields_geo - {_FIX}"
    )
    with pytest.raises(QueryError, match="refused in safe mode: the query reads"):
        run_query(a, sql)
    # The same SQL with full access (the CLI's default) reads the file: the refusal is safe mode's, not a bug.
    assert query_run(a, sql, safe=False).to_dict("records") == [{"name": "alice", "pin": 1234}]
    assert run_query(a, sql, safe=False).pin.tolist() == [1234]


def test_safe_mode_refuses_duckdbs_own_temp_directory(runs, tmp_path, monkeypatch):
    """With external access off DuckDB still allows its temp directory (./.tmp by default): not ours."""
    a, _ = runs
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "left.csv").write_text("x\n7\n")
    with pytest.raises(QueryError, match=r"refused in safe mode: the query reads .*left\.csv, outside the run"):
        query_run(a, "SELECT * FROM read_csv('.tmp/left.csv')")
    assert query_run(a, "SELECT * FROM read_csv('.tmp/left.csv')", safe=False).x.tolist() == [7]


@pytest.mark.parametrize(
    ("sql", "kind", "why"),
    [
        ("COPY (SELECT 1) TO 'x.csv'", "a COPY", "copies data to or from files"),
        ("COPY (SELECT 5 AS z) TO '{run}/fields.parquet' (USE_TMP_FILE false)", "a COPY",
         "copies data to or from files"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x.csv'", "an EXPLAIN",
         "can run the statement it explains (EXPLAIN ANALYZE does)"),
        ("EXPORT DATABASE 'exported'", "an EXPORT", "writes files"),
        ("ATTACH 'other.duckdb' AS other", "an ATTACH", "opens another database file"),
        ("INSTALL spatial", "a LOAD", "installs or loads a DuckDB extension"),
        ("LOAD spatial", "a LOAD", "installs or loads a DuckDB extension"),
        ("SET enable_external_access = true", "a SET", "changes a setting"),
        ("SET memory_limit = '1GB'", "a SET", "changes a setting"),
        ("RESET lock_configuration", "a SET", "changes a setting"),
        ("PRAGMA threads = 1", "a SET", "changes a setting"),
        ("PRAGMA enable_profiling", "a PRAGMA", "can change settings"),
        ("UPDATE EXTENSIONS", "an unknown", "is not a query"),
        ("CREATE TABLE t AS SELECT 1", "a CREATE", "is not a query"),
        ("SELECT 1; COPY (SELECT 1) TO 'x.csv'", "a COPY", "copies data to or from files"),
    ],
)
def test_safe_mode_refuses_statements_that_are_not_queries(runs, tmp_path, monkeypatch, sql, kind, why):
    a, _ = runs
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in a.iterdir()}
    sql = sql.format(run=a)
    with pytest.raises(QueryError) as e:
        query_run(a, sql)
    msg = str(e.value)
    assert msg.startswith(f"{a}: refused in safe mode: "), msg
    assert f" is {kind} statement, which {why}; safe mode runs only SELECT queries over the run's views " \
           f"(district_areas, fields, fields_geo) - {_FIX}" in msg, msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no x.csv, exported/, other.duckdb
    assert {p: p.read_bytes() for p in a.iterdir()} == before  # the run's own files untouched


def test_safe_mode_message_quotes_the_statement(runs, tmp_path, monkeypatch):
    a, _ = runs
    monkeypatch.chdir(tmp_path)  # should the COPY run after all, it writes there
    with pytest.raises(QueryError) as e:
        query_run(a, "SELECT 1;\n  COPY   (SELECT 1)\n TO 'x.csv'")
    assert str(e.value) == (
        f"{a}: refused in safe mode: statement 2 (COPY (SELECT 1) TO 'x.csv') is a COPY statement, which copies "
        f"data to or from files; safe mode runs only SELECT queries over the run's views (district_areas, fields, "
        f"fields_geo) - {_FIX}"
    )


def test_safe_mode_says_extensions_are_not_loaded(runs):
    a, _ = runs
    with pytest.raises(QueryError, match=r"the query calls st_point, a function of DuckDB's spatial extension, and "
                                         r"safe mode loads no extensions; the fields' area_ha and "
                                         r"\"metrics:perimeter\" columns hold ground areas and lengths already - "
                                         r"to run it"):
        query_run(a, "SELECT ST_Point(1, 2)")


def test_spatial_functions_run_where_the_extension_is_installed_and_are_explained_where_not(runs):
    """``LOAD spatial`` (never ``INSTALL``: that downloads) before the views; without it, one clear line."""
    import duckdb

    a, _ = runs
    try:
        duckdb.connect().execute("LOAD spatial")
        installed = True
    except duckdb.Error:
        installed = False
    sql = "SELECT field_id, ST_Area(ST_GeomFromWKB(geometry)) / 1e4 AS ha FROM fields_geo ORDER BY field_id"
    if installed:
        df = query_run(a, sql, safe=False)
        np.testing.assert_allclose(df.ha, query_run(a, "SELECT area_ha FROM fields ORDER BY field_id").area_ha)
    else:
        with pytest.raises(QueryError) as e:
            query_run(a, sql, safe=False)
        assert str(e.value) == (
            f"{a}: the query calls st_area, a function of DuckDB's spatial extension, which is not installed "
            f"here (installing downloads it); install it once on a machine with network access "
            f"(`python -c \"import duckdb; duckdb.sql('INSTALL spatial')\"`, or copy the extension into "
            f"~/.duckdb/extensions/), or use the fields' area_ha and \"metrics:perimeter\" columns, which hold "
            f"ground areas and lengths already"
        )


def test_connect_run_is_locked_in_safe_mode(runs, secret):
    import duckdb

    a, _ = runs
    con = connect_run(a)
    try:
        assert con.execute("SELECT sum(area_ha) FROM fields").fetchone()[0] == 100.0
        with pytest.raises(duckdb.Error, match="the configuration has been locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_csv('{secret}')")
        assert con.execute("SELECT current_setting('autoload_known_extensions')").fetchone()[0] is False
    finally:
        con.close()
    con = connect_run(a, safe=False)
    try:
        assert con.execute(f"SELECT pin FROM read_csv('{secret}')").fetchone()[0] == 1234
    finally:
        con.close()


def test_cli_safe_flag(runs, secret, tmp_path):
    a, _ = runs
    runner = CliRunner()
    sql = f"SELECT * FROM read_csv('{secret}')"
    r = runner.invoke(cli, ["query", str(a), sql, "--safe"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0] == (f"Error: {a}: refused in safe mode: the query reads {secret}, outside the run; safe mode "
                        f"reads only the run's fields.parquet and district_areas.parquet, through the views "
                        f"district_areas, fields, fields_geo - {_FIX}")
    r = runner.invoke(cli, ["query", str(a), f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", "--safe"])
    assert r.exit_code == 1 and r.output.startswith(f"Error: {a}: refused in safe mode: statement 1") and \
        len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.csv").exists()
    # Without --safe the user's own command line has DuckDB's full access.
    r = runner.invoke(cli, ["query", str(a), sql, "--format", "csv"])
    assert r.exit_code == 0 and r.output == "name,pin\nalice,1234\n", r.output
    r = runner.invoke(cli, ["query", str(a), 'SELECT "crop:name" AS crop, sum(area_ha) AS ha FROM fields GROUP BY ALL '
                                             "ORDER BY ALL", "--safe", "--format", "csv"])
    assert r.exit_code == 0 and r.output == "crop,ha\nrice,40.0\nwheat,60.0\n", r.output


# --------------------------------------------------------------------------------------
# A damaged Parquet file in a run: one line naming it and how to regenerate it
def _random_bytes(p: Path) -> None:
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damaged_pages(p: Path, column: str = "area_ha") -> None:
    """Footer intact (the schema reads), one column's pages overwritten: fails only when the column is read."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(p).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    chunk = meta.row_group(0).column(names.index(column))
    data = bytearray(p.read_bytes())
    data[chunk.data_page_offset: chunk.data_page_offset + chunk.total_compressed_size] = \
        b"\xab" * chunk.total_compressed_size
    p.write_bytes(bytes(data))


_FIELDS_FIX = ("expected the GeoParquet of field polygons that a run writes - the file is damaged or truncated: "
               "regenerate it with ``geoseg polygonize {run}/mask.tif --dataset --out {run}/fields.parquet "
               "--confidence {run}/confidence.tif --overwrite`` (with the workflow's --districts and --name-field), "
               "or rerun the workflow "
               "(``geoseg run WORKFLOW.yaml`` makes a new run)")
_AREAS_FIX = ("expected the district table that a run writes - the file is damaged or truncated: regenerate it "
              "with ``geoseg areas {run}/mask.tif --districts FILE --name-field ATTR --out "
              "{run}/district_areas.parquet``, or rerun the workflow (``geoseg run WORKFLOW.yaml`` makes a new run)")


@pytest.mark.parametrize(
    ("name", "damage", "reason"),
    [
        ("fields.parquet", _random_bytes, "No magic bytes found at end of file"),
        ("fields.parquet", _truncated, "No magic bytes found at end of file"),
        ("district_areas.parquet", _random_bytes, "No magic bytes found at end of file"),
        ("district_areas.parquet", _truncated, "No magic bytes found at end of file"),
    ],
    ids=["fields random", "fields truncated", "areas random", "areas truncated"],
)
@pytest.mark.parametrize("safe", [[], ["--safe"]], ids=["full", "safe"])
def test_cli_damaged_parquet_is_one_line(runs, name, damage, reason, safe):
    a, b = runs
    damage(a / name)
    fix = (_FIELDS_FIX if name == "fields.parquet" else _AREAS_FIX).format(run=a)
    want = f"Error: {a / name}: cannot be read as Parquet ({reason}); {fix}"
    runner = CliRunner()
    for args in (["SELECT count(*) FROM district_areas", *safe], ["--district", "Ludhiana"]):
        r = runner.invoke(cli, ["query", str(a), *args])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
        assert lines[0] == want
    if name == "district_areas.parquet":
        r = runner.invoke(cli, ["query", str(b), "--compare", str(a)])
        assert r.exit_code == 1 and r.output.strip() == want, r.output


@pytest.mark.parametrize("safe", [True, False])
def test_damaged_pages_name_the_file(runs, safe):
    """A file whose footer reads but whose pages do not fails at query time: the error still names it."""
    a, b = runs
    _damaged_pages(a / "fields.parquet")
    assert query_run(a, "SELECT count(*) AS n FROM fields", safe=safe).n[0] == 4  # area_ha not read
    with pytest.raises(QueryError) as e:
        query_run(a, "SELECT sum(area_ha) FROM fields", safe=safe)
    assert str(e.value) == (f"{a / 'fields.parquet'}: cannot be read as Parquet (Variable-length int over 10 "
                            f"bytes); {_FIELDS_FIX.format(run=a)}")
    _damaged_pages(b / "district_areas.parquet")
    with pytest.raises(QueryError, match=r"district_areas\.parquet: cannot be read as Parquet \(Variable-length int"):
        district_summary(b, crop="rice")
    with pytest.raises(QueryError, match=r"district_areas\.parquet: cannot be read as Parquet \(Variable-length int"):
        compare_runs(a, b)


# --------------------------------------------------------------------------------------
# A reference-sample estimate in the run: the estimate_* views
def test_the_views_read_the_files_rundir_names():
    """ops.query spells no file name itself: each view reads the file :class:`RunPaths` names."""
    paths = RunPaths(Path("runs/demo/r1"))
    assert RUN_TABLES == {
        "fields": paths.fields("parquet").name,
        "district_areas": paths.district_areas("parquet").name,
        **{f"estimate_{t}": paths.estimate_table(t, "parquet").name for t in ESTIMATE_TABLES},
        "field_timeseries": paths.field_timeseries.name,
        "district_crop_timeseries": paths.district_crop_timeseries.name,
    }
    assert list(RUN_TABLES)[2:] == ["estimate_areas", "estimate_districts", "estimate_matrix", "field_timeseries",
                                    "district_crop_timeseries"]


def _estimate_into(run: Path, work: Path, districts: bool = True) -> Path:
    """A real estimate written into ``run``: a sample drawn from a small mask (with two districts),
    labelled with its map classes except every fifth point, called rice; returns the labels file."""
    work.mkdir(parents=True)
    h, w = 120, 100
    cls = np.zeros((h, w), np.uint8)
    cls[:, 20:50], cls[:, 50:80], cls[:60, 80:] = 1, 2, 3
    with rasterio.open(work / "mask.tif", "w", driver="GTiff", height=h, width=w, count=1, dtype="uint8",
                       nodata=255, crs="EPSG:32643", transform=Affine(10, 0, 600_000, 0, -10, 3_381_000)) as d:
        d.write(cls, 1)
    kw = {}
    if districts:
        kw = {"districts": write_districts(work / "districts.gpkg", 600_500, (600_000, 3_379_800, 601_000, 3_381_000)),
              "name_field": "district"}
    sample_file(work / "mask.tif", work / "sample", classes=default_classes(), minimum=5, target_se=0.05, **kw)
    points = pd.read_csv(work / "sample" / "points.csv")
    key = pd.read_csv(work / "sample" / "key.csv").set_index("point_id")
    points["reference"] = points.point_id.map(key.crop).astype(object)
    points.loc[points.index[::5], "reference"] = "rice"
    points.to_csv(work / "labels.csv", index=False)
    estimate_file(work / "sample" / "design.json", work / "labels.csv", out=run)
    return work / "labels.csv"


@pytest.fixture()
def estimated(runs, tmp_path) -> Path:
    a, _ = runs
    _estimate_into(a, tmp_path / "estimate")
    return a


_SORT = {"estimate_areas": ["class_id"], "estimate_districts": ["district", "class_id"],
         "estimate_matrix": ["map_class_id", "reference_class_id"]}


@pytest.mark.parametrize("safe", [True, False], ids=["safe", "full"])
def test_estimate_views_hold_the_estimate_tables(estimated, safe):
    run = estimated
    summary = json.loads(RunPaths(run).estimate_summary.read_text())
    for view, keys in _SORT.items():
        csv = pd.read_csv(RunPaths(run).estimate_table(view.removeprefix("estimate_"), "csv"))
        got = query_run(run, f"SELECT * FROM {view} ORDER BY {', '.join(keys)}", safe=safe)
        want = csv.sort_values(keys, kind="stable").reset_index(drop=True)
        assert got.columns.tolist() == want.columns.tolist()
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert query_run(run, "SELECT * FROM estimate_areas", safe=safe).columns.tolist() == list(AREA_COLUMNS)
    assert query_run(run, "SELECT * FROM estimate_districts", safe=safe).columns.tolist() == list(DISTRICT_COLUMNS)
    assert query_run(run, "SELECT * FROM estimate_matrix", safe=safe).columns.tolist() == list(MATRIX_COLUMNS)
    # values, not only shapes: rice gained every fifth point, the matrix holds every labelled point
    areas = pd.read_csv(RunPaths(run).estimate_table("areas", "csv")).set_index("crop")
    rice = query_run(run, "SELECT mapped_ha, estimated_ha, ci_low_ha, ci_high_ha FROM estimate_areas "
                          "WHERE crop = 'rice'", safe=safe).iloc[0]
    assert rice.estimated_ha == pytest.approx(areas.loc["rice", "estimated_ha"], rel=1e-12)
    assert rice.estimated_ha > rice.mapped_ha == pytest.approx(areas.loc["rice", "mapped_ha"], rel=1e-12)
    assert rice.ci_low_ha < rice.estimated_ha < rice.ci_high_ha
    n = query_run(run, "SELECT sum(points) AS n FROM estimate_matrix", safe=safe).n[0]
    assert n == summary["points_labelled"] > 0
    total = query_run(run, "SELECT sum(estimated_ha) AS ha FROM estimate_areas", safe=safe).ha[0]
    assert total == pytest.approx(summary["total_area_ha"], rel=1e-9)
    per = query_run(run, "SELECT district, sum(mapped_ha) AS ha FROM estimate_districts GROUP BY ALL ORDER BY ALL",
                    safe=safe)
    assert per.district.tolist() == ["East", "West"] and per.ha.sum() == pytest.approx(areas.mapped_ha.sum())
    # the fields and district table are still there beside them
    assert query_run(run, "SELECT sum(area_ha) AS ha FROM fields", safe=safe).ha[0] == 100.0


def test_safe_mode_reads_the_estimate_files_and_nothing_else(estimated, secret):
    run = estimated
    with pytest.raises(QueryError) as e:
        query_run(run, f"SELECT * FROM read_csv('{secret}')")
    assert str(e.value) == (
        f"{run}: refused in safe mode: the query reads {secret}, outside the run; safe mode reads only the run's "
        f"fields.parquet, district_areas.parquet, estimate_areas.parquet, estimate_districts.parquet and "
        f"estimate_matrix.parquet, through the views district_areas, estimate_areas, estimate_districts, "
        f"estimate_matrix, fields, fields_geo - {_FIX}"
    )
    # the CSV twins beside them are not behind a view, so safe mode does not read them either
    with pytest.raises(QueryError, match=r"refused in safe mode: the query reads .*estimate_areas\.csv, outside"):
        query_run(run, f"SELECT * FROM read_csv('{RunPaths(run).estimate_table('areas', 'csv')}')")
    with pytest.raises(QueryError, match=r"refused in safe mode: the query reads .*estimate\.json, outside"):
        query_run(run, f"SELECT * FROM read_json('{RunPaths(run).estimate_summary}')")


def test_a_run_without_an_estimate_has_no_estimate_views(runs, tmp_path):
    a, _ = runs
    con = connect_run(a)
    try:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    finally:
        con.close()
    assert sorted(views) == ["district_areas", "fields", "fields_geo"]
    with pytest.raises(QueryError, match=r"Table with name estimate_areas does not exist.*Tables: district_areas\("):
        query_run(a, "SELECT * FROM estimate_areas")
    # a sample without districts: areas and matrix, no estimate_districts
    b = make_run(tmp_path, "no-districts", 1.0, 1.0)
    _estimate_into(b, tmp_path / "estimate", districts=False)
    assert not RunPaths(b).estimate_table("districts", "parquet").exists()
    assert query_run(b, "SELECT count(*) AS n FROM estimate_areas").n[0] == len(default_classes().classes)
    with pytest.raises(QueryError, match="Table with name estimate_districts does not exist"):
        query_run(b, "SELECT * FROM estimate_districts")


_ESTIMATE_FIX = ("expected {holds} - the file is damaged or truncated: regenerate it with ``geoseg estimate {run} "
                 "LABELS --overwrite`` (LABELS: the labelled points, which {run}/estimate.json names under "
                 "\"labels\")")


@pytest.mark.parametrize(
    ("table", "holds"),
    [("areas", "the estimated areas per class that `geoseg estimate` writes"),
     ("districts", "the estimated areas per district and class that `geoseg estimate` writes"),
     ("matrix", "the error matrix that `geoseg estimate` writes")],
)
@pytest.mark.parametrize("damage", [_random_bytes, _truncated], ids=["random", "truncated"])
def test_a_damaged_estimate_parquet_names_the_file_and_the_fix(estimated, table, holds, damage):
    run = estimated
    path = RunPaths(run).estimate_table(table, "parquet")
    damage(path)
    want = (f"{path}: cannot be read as Parquet (No magic bytes found at end of file); "
            + _ESTIMATE_FIX.format(holds=holds, run=run))
    for safe in (True, False):
        with pytest.raises(QueryError) as e:
            query_run(run, "SELECT count(*) FROM fields", safe=safe)  # the views are made before any query
        assert str(e.value) == want
    r = CliRunner().invoke(cli, ["query", str(run), "SELECT 1", "--safe"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and lines == [f"Error: {want}"], r.output


def test_damaged_estimate_pages_name_the_file(estimated):
    run = estimated
    path = RunPaths(run).estimate_table("matrix", "parquet")
    _damaged_pages(path, "proportion")  # not the last column: the footer after it stays intact
    assert query_run(run, "SELECT sum(points) AS n FROM estimate_matrix").n[0] > 0  # proportion not read
    with pytest.raises(QueryError) as e:
        query_run(run, "SELECT sum(proportion) FROM estimate_matrix")
    assert str(e.value) == (f"{path}: cannot be read as Parquet (Variable-length int over 10 bytes); "
                            + _ESTIMATE_FIX.format(holds="the error matrix that `geoseg estimate` writes", run=run))
