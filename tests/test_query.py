"""SQL and shortcuts over a run's Parquet outputs; run-to-run comparison; the query CLI."""

from __future__ import annotations

import json
from pathlib import Path

import click
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from geoseg.query import (
    QueryError,
    compare_runs,
    district_summary,
    format_table,
    query_run,
    run_query,
)
from geoseg.vector_io import write_table, write_vector


def make_run(root: Path, name: str, rice_ha: float, wheat_ha: float, with_fields: bool = True) -> Path:
    run = root / "runs" / "punjab" / name
    run.mkdir(parents=True)
    if with_fields:
        n = 4
        gdf = gpd.GeoDataFrame(
            {
                "field_id": np.arange(n, dtype=np.int64) * 1000,
                "class_id": np.array([1, 1, 2, 2], np.int32),
                "crop": ["rice", "rice", "wheat", "wheat"],
                "area_ha": [rice_ha / 2, rice_ha / 2, wheat_ha / 2, wheat_ha / 2],
                "perimeter_m": [400.0] * n,
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
    df = query_run(a, "SELECT district, crop, sum(area_ha) AS ha, count(*) AS n FROM fields "
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


def test_bad_sql_lists_the_tables(runs):
    a, _ = runs
    with pytest.raises(QueryError, match=r"the query failed: .*nope.* Tables: district_areas\(district, class_id, crop, "
                                         r"area_ha, .*\); fields\(field_id, class_id, crop, area_ha, perimeter_m, "
                                         r"confidence, district, run_id\)"):
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
    from geoseg.cli.areas import areas
    from geoseg.cli.main import GeosegGroup
    from geoseg.cli.polygonize import polygonize
    from geoseg.cli.query import query

    @click.group(cls=GeosegGroup)
    def cli() -> None:
        pass

    for cmd in (polygonize, areas, query):
        cli.add_command(cmd)
    return cli


def test_cli_query_end_to_end(tmp_path):
    from geoseg.synth import synthesize

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
