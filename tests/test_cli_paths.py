"""Paths as GDAL users write them, end to end: remote inputs over HTTP (plain URL and /vsicurl/) and S3
(s3:// and /vsis3/) on servers started on 127.0.0.1 here, and standard output (``--out -``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.session import AWSSession

from geoseg.cli.main import cli
from geoseg.io.stack import stack_rasters
from tests.remote_servers import (
    EXPECTED_HA,
    GDAL_HTTP_ENV,
    range_server,
    s3_server,
    subprocess_env,
    write_mask_and_districts,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("served")
    return write_mask_and_districts(folder)


def _geoseg(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "geoseg.cli.main", *args], env=subprocess_env(env),
                          capture_output=True, text=True, timeout=300)


def _hectares(df: pd.DataFrame) -> dict[tuple[str, str], float]:
    df = df[df["area_ha"] > 0]
    return {(str(d), str(c)): float(a) for d, c, a in zip(df["district"], df["crop"], df["area_ha"])}


def _ranges_read(requests: list[tuple[str, str, str | None]], name: str) -> bool:
    return any(m == "GET" and p == f"/{name}" and r is not None for m, p, r in requests)


@pytest.mark.parametrize("style", ["url", "vsicurl"])
def test_areas_reads_a_remote_mask_and_remote_districts_over_http(served, tmp_path, monkeypatch, style):  # type: ignore[no-untyped-def]
    """https:// style plain URLs (http:// on 127.0.0.1: the same code path) and /vsicurl/ paths: GDAL reads
    byte ranges of both files, and the table equals the hand count."""
    mask, districts = served
    for k, v in GDAL_HTTP_ENV.items():
        monkeypatch.setenv(k, v)
    with range_server(mask.parent) as srv:
        prefix = srv.url if style == "url" else f"/vsicurl/{srv.url}"
        out = CliRunner().invoke(cli, ["areas", f"{prefix}/mask.tif", "--districts", f"{prefix}/districts.geojson",
                                       "--name-field", "district", "--out", str(tmp_path / "a.csv")])
        assert out.exit_code == 0, out.output
        assert _ranges_read(srv.requests, "mask.tif") and _ranges_read(srv.requests, "districts.geojson")
    assert _hectares(pd.read_csv(tmp_path / "a.csv")) == pytest.approx(EXPECTED_HA)


def test_polygonize_a_remote_mask_to_standard_output_as_geojson(served):  # type: ignore[no-untyped-def]
    """`geoseg polygonize /vsicurl/... --out -`: standard output is one GeoJSON document (the summary goes to
    standard error); its fields add up to the hand count."""
    mask, _ = served
    with range_server(mask.parent) as srv:
        res = _geoseg(["polygonize", f"/vsicurl/{srv.url}/mask.tif", "--out", "-", "--min-area-ha", "0"],
                      GDAL_HTTP_ENV)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["type"] == "FeatureCollection"
    by_crop: dict[str, float] = {}
    for f in doc["features"]:
        by_crop[f["properties"]["crop:name"]] = by_crop.get(f["properties"]["crop:name"], 0) + f["properties"]["area_ha"]
    assert by_crop == pytest.approx({"rice": 10.5, "wheat": 10.5}, rel=1e-3)  # ground areas of the UTM grid
    assert "standard output: 2 fields" in res.stderr
    assert not Path("-").exists()


def test_s3_and_vsis3_inputs_against_an_s3_server(served, tmp_path):  # type: ignore[no-untyped-def]
    """s3:// for the mask, /vsis3/ for the districts, on moto's S3 server on 127.0.0.1 (GDAL configured
    through the subprocess's environment); the table streams to standard output as CSV."""
    mask, districts = served
    with s3_server({"scenes/mask.tif": mask, "districts.geojson": districts}) as s3:
        res = _geoseg(["areas", f"s3://{s3.bucket}/scenes/mask.tif", "--districts",
                       f"/vsis3/{s3.bucket}/districts.geojson", "--name-field", "district", "--out", "-"], s3.env)
        assert res.returncode == 0, res.stderr
        assert _hectares(pd.read_csv(io.StringIO(res.stdout))) == pytest.approx(EXPECTED_HA)
        assert "standard output: 14 rows (2 districts)" in res.stderr
        # stack: a VRT over two S3 objects names them as GDAL opens them, and reads back under the same settings
        res = _geoseg(["stack", str(tmp_path / "s.vrt"), f"s3://{s3.bucket}/scenes/mask.tif",
                       f"/vsis3/{s3.bucket}/scenes/mask.tif", "--json"], s3.env)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["bands"] == ["class", "class"]
        text = (tmp_path / "s.vrt").read_text()
        assert f'relativeToVRT="0">/vsis3/{s3.bucket}/scenes/mask.tif<' in text
        session = AWSSession(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                             endpoint_url=s3.endpoint)  # rasterio takes AWS keys through a session only
        gdal = {k: v for k, v in s3.env.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
        with rasterio.Env(session, **gdal), rasterio.open(tmp_path / "s.vrt") as vrt, rasterio.open(mask) as src:
            assert (vrt.read(2) == src.read(1)).all()


def test_areas_table_to_standard_output_as_json_and_refusals(served, tmp_path):  # type: ignore[no-untyped-def]
    mask, districts = served
    res = _geoseg(["-q", "areas", str(mask), "--districts", str(districts), "--name-field", "district",
                   "--out", "/vsistdout/", "--format", "json"])
    assert res.returncode == 0, res.stderr
    assert _hectares(pd.DataFrame(json.loads(res.stdout))) == pytest.approx(EXPECTED_HA)
    assert res.stderr == ""  # -q: not even the summary line
    assert not Path("/vsistdout").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["areas", "M", "--districts", "D", "--name-field", "district", "--out", "-", "--format", "parquet"],
         "-: a Parquet table cannot be written to standard output (its footer"),
        (["polygonize", "M", "--out", "-", "--format", "gpkg"],
         "-: gpkg (GPKG) cannot be written to standard output (a GeoPackage is an SQLite database"),
        (["polygonize", "M", "--out", "-", "--format", "parquet"], "--format geojson for standard output"),
        (["predict", "--model", "nomodel", "M", "--out", "-"],
         "-: a COG cannot be written to standard output (its header and overviews"),
        (["stack", "-", "M"], "-: a stack cannot be written to standard output"),
        (["areas", "M", "--districts", "D", "--name-field", "district", "--out", "/vsis3/b/a.csv"],
         "/vsis3/b/a.csv: geoseg writes outputs to local files"),
        (["polygonize", "M", "--out", "s3://b/fields.gpkg"], "s3://b/fields.gpkg: geoseg writes outputs to local"),
        (["predict", "--model", "https://h/models/m", "M", "--out", "m.tif"],
         "https://h/models/m: the checkpoint directory must be a local path"),
        (["synth", "s3://b/region"], "s3://b/region: the output folder must be a local path"),
        (["query", "https://h/runs/r"], "https://h/runs/r: the run folder must be a local path"),
        (["areas", "sftp://h/m.tif", "--districts", "D", "--name-field", "district", "--out", "a.csv"],
         "GDAL reads no 'sftp://' URLs"),
    ],
)
def test_paths_that_cannot_work_are_one_clear_line(served, tmp_path, monkeypatch, args, message):  # type: ignore[no-untyped-def]
    mask, districts = served
    monkeypatch.chdir(tmp_path)
    args = [str(mask) if a == "M" else str(districts) if a == "D" else a for a in args]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 1, out.output
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out.output
    assert list(tmp_path.iterdir()) == []  # nothing written, no file named "-"


def test_library_stack_takes_a_plain_url_and_names_it_as_gdal_opens_it(served, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """stack_rasters (not only the CLI) normalises an http(s):// input, so the VRT can be opened."""
    mask, _ = served
    for k, v in GDAL_HTTP_ENV.items():
        monkeypatch.setenv(k, v)
    with range_server(mask.parent) as srv:
        res = stack_rasters(tmp_path / "s.vrt", [f"{srv.url}/mask.tif"])
        assert f'relativeToVRT="0">/vsicurl/{srv.url}/mask.tif<' in (tmp_path / "s.vrt").read_text()
        with rasterio.open(tmp_path / "s.vrt") as vrt, rasterio.open(mask) as src:
            assert (vrt.read(1) == src.read(1)).all() and res.bands == ["class"]
