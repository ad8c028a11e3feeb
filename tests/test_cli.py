"""The command line: one clean line and a non-zero exit on bad input; --debug shows the traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.demo import compare_areas
from geoseg.io.stack import stack_rasters
from geoseg.ops.areas import district_areas_file
from geoseg.synth import synthesize
from tests.remote_servers import PX_HA, write_mask_and_districts


@pytest.fixture
def runner():  # type: ignore[no-untyped-def]
    return CliRunner()


def test_every_command_has_help_with_an_example(runner):  # type: ignore[no-untyped-def]
    for name, cmd in cli.commands.items():
        out = runner.invoke(cli, [name, "--help"])
        assert out.exit_code == 0, name
        assert "Example" in out.output or "example" in out.output.lower(), name


def test_synth_writes_the_region_and_says_what_it_wrote(runner, tmp_path):  # type: ignore[no-untyped-def]
    out = runner.invoke(cli, ["synth", str(tmp_path / "r"), "--height", "333", "--width", "517", "--seed", "4"])
    assert out.exit_code == 0, out.output
    for name in ("scene.tif", "labels.tif", "fields.gpkg", "districts.gpkg", "classes.yaml", "truth.csv"):
        assert (tmp_path / "r" / name).is_file()
        assert name in out.output or name == "classes.yaml"
    with rasterio.open(tmp_path / "r" / "scene.tif") as s:
        assert (s.height, s.width, s.count) == (333, 517, 16)


@pytest.mark.parametrize(
    "args, message",
    [
        (["synth", "OUT", "--height", "0"], "height"),
        (["predict", "--model", "nomodel", "x.tif", "--out", "m.tif"], "nomodel: no such checkpoint directory"),
        (["run", "nowhere.yaml"], "nowhere.yaml: workflow file not found"),
        (["stack", "out.vrt", "missing.tif"], "missing.tif: file not found"),
        (["stack", "out.png", "a.tif"], "out.png: output must end in .vrt or .tif"),
        (["demo", "--workflow", "none.yaml"], "none.yaml: workflow file not found"),
        (["bench", "--against", "old.json"], "old.json: no such file; expected a results file written by"),
        (["bench", "--model", "nomodel"], "nomodel: no such checkpoint directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(runner, tmp_path, monkeypatch, args, message):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(cli, args)
    assert out.exit_code == 1
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out.output
    assert "Traceback" not in out.output


def test_debug_shows_the_traceback(runner, tmp_path):  # type: ignore[no-untyped-def]
    out = runner.invoke(cli, ["--debug", "run", str(tmp_path / "nowhere.yaml")])
    assert out.exit_code != 0
    assert out.exception is not None and "workflow file not found" in str(out.exception)


def test_demo_runs_the_chain_and_accounts_for_every_pixel(tmp_path):  # type: ignore[no-untyped-def]
    """`geoseg demo` on a small region: trains a (short) model, runs workflows/demo.yaml on a LocalCluster,
    and every observed pixel of the truth reaches the district table; a second demo reuses the model."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "workflows").mkdir()
    shutil.copy(root / "workflows" / "demo.yaml", tmp_path / "workflows" / "demo.yaml")
    cmd = [sys.executable, "-m", "geoseg.cli.main", "demo", "--size", "384", "--train-minutes", "0.2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "INFO" not in out.stderr  # Dask's chatter stays off
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" / "demo"
    for name in ("mask.tif", "confidence.tif", "fields.gpkg", "fields.geojson", "district_areas.csv",
                 "manifest.json"):
        assert (run_dir / name).is_file(), name
    # the fields as a GeoParquet dataset (a part per block, and one of the fields merged across block
    # seams when there are any), the same as the GeoPackage
    import geopandas as gpd

    parts = sorted(p.name for p in (run_dir / "fields.parquet").glob("*.parquet"))
    assert parts and all(p.startswith("part-") for p in parts)
    fp, fg = gpd.read_parquet(run_dir / "fields.parquet"), gpd.read_file(run_dir / "fields.gpkg", layer="fields")
    assert sorted(fp.field_id) == sorted(fg.field_id) and len(fp) > 10
    assert (tmp_path / "demo" / "model" / "model.json").is_file() and "trained " in out.stdout
    # The run maps the season composited from the region's products: the mask is nodata exactly
    # where the composite lacks a band (the collar, its 20 m SCL edge, a period without a clear look)
    import rasterio

    with rasterio.open(run_dir / "inputs" / "region.tif") as c, rasterio.open(run_dir / "mask.tif") as m:
        assert c.transform == m.transform and c.descriptions[0] == "jun-jul_B02" and c.count == 28
        mapped, tf, crs = m.read(1) != 255, m.transform, m.crs
        np.testing.assert_array_equal(~mapped, (c.read() == 0).any(axis=0))
    # ... so a district's observed hectares are its mapped pixels (counted here by pixel centre, the
    # table covers border pixels by fraction), never more than the truth's labelled ones
    from rasterio.features import rasterize

    truth = pd.read_csv(tmp_path / "demo" / "region" / "truth.csv")
    areas = pd.read_csv(run_dir / "district_areas.csv")
    observed = areas.groupby("district")["observed_ha"].first()
    true_ha = truth[truth.district.isin(observed.index)].groupby("district")["hectares"].sum()
    assert len(true_ha) >= 2
    districts = gpd.read_file(tmp_path / "demo" / "region" / "districts.gpkg").to_crs(crs)
    for d, ha in true_ha.items():
        inside = rasterize([(g, 1) for g in districts.geometry[districts.district == d]], out_shape=mapped.shape,
                           transform=tf) == 1
        assert observed[d] == pytest.approx((inside & mapped).sum() * abs(tf.a * tf.e) / 1e4, rel=5e-3), d
        assert observed[d] <= ha * (1 + 1e-6), d
    assert "mIoU" in out.stdout and "crop area per district" in out.stdout
    # Again: the region is the same bytes, the model is reused, a new run is recorded.
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already trained" in again.stdout
    run2 = Path(again.stdout.strip().splitlines()[-1])
    assert run2 != run_dir and (run2 / "mask.tif").read_bytes() == (run_dir / "mask.tif").read_bytes()


def test_compare_areas_joins_prediction_and_truth() -> None:
    import pandas as pd


    truth = pd.DataFrame({"district": ["A", "A", "B"], "class_id": [1, 2, 1], "crop": ["rice", "wheat", "rice"],
                          "pixels": [100, 50, 10], "hectares": [1.0, 0.5, 0.1]})
    pred = pd.DataFrame({"district": ["A", "A", "B", "B"], "class_id": [1, 2, 1, 2],
                         "crop": ["rice", "wheat", "rice", "wheat"], "area_ha": [1.1, 0.5, 0.05, 0.2]})
    got = compare_areas(pred, truth)
    assert got[["district", "crop"]].values.tolist() == [["A", "rice"], ["A", "wheat"], ["B", "rice"]]
    np.testing.assert_allclose(got.error_ha, [0.1, 0.0, -0.05], atol=1e-12)
    np.testing.assert_allclose(got.error_pct, [10.0, 0.0, -50.0])


# --- the habits of rio/fio: -q, --json, --overwrite, --co, progress (issue 19, part 6) ---------------------

@pytest.fixture(scope="module")
def mask_and_districts(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_mask_and_districts(tmp_path_factory.mktemp("md"))


def _areas_args(mask_and_districts, out):  # type: ignore[no-untyped-def]
    mask, districts = mask_and_districts
    return ["areas", str(mask), "--districts", str(districts), "--name-field", "district", "--out", str(out)]


def test_quiet_silences_information_never_the_result(runner, mask_and_districts, tmp_path):  # type: ignore[no-untyped-def]
    loud = runner.invoke(cli, _areas_args(mask_and_districts, tmp_path / "a.csv"))
    assert loud.exit_code == 0 and "West      rice" in loud.stdout  # the table preview
    quiet = runner.invoke(cli, ["-q", *_areas_args(mask_and_districts, tmp_path / "b.csv"), "--overwrite"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout.splitlines() == [f"{tmp_path / 'b.csv'}: 14 rows (2 districts)"] and quiet.stderr == ""
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # predict's timing line is information; errors always print
    bad = runner.invoke(cli, ["-q", "stack", str(tmp_path / "s.vrt"), str(tmp_path / "missing.tif")])
    assert bad.exit_code == 1 and "missing.tif: file not found" in bad.stderr
    both = runner.invoke(cli, ["-q", "-v", "stack", "s.vrt", "x.tif"])
    assert both.exit_code == 2 and "--quiet and -v contradict each other" in both.output


def test_json_prints_one_object_with_the_outputs_and_counts(runner, mask_and_districts, tmp_path):  # type: ignore[no-untyped-def]
    mask, _ = mask_and_districts
    areas = runner.invoke(cli, [*_areas_args(mask_and_districts, tmp_path / "a.parquet"), "--json"])
    assert areas.exit_code == 0, areas.output
    got = json.loads(areas.stdout)
    assert got["output"] == str(tmp_path / "a.parquet") and got["rows"] == 14 and got["districts"] == 2
    assert got["hectares"] == pytest.approx({"background": 0.0, "rice": 1050 * PX_HA, "wheat": 1050 * PX_HA,
                                             "sugarcane": 0.0, "cotton": 0.0, "maize": 0.0, "fallow": 0.0})
    fields = runner.invoke(cli, ["polygonize", str(mask), "--out", str(tmp_path / "f.fgb"), "--json",
                                 "--min-area-ha", "0"])
    assert fields.exit_code == 0, fields.output
    got = json.loads(fields.stdout)
    assert got == {"output": str(tmp_path / "f.fgb"), "format": "fgb", "fields": 2, "min_area_pixels": 1,
                   "hectares": pytest.approx({"rice": 10.5, "wheat": 10.5}, rel=1e-3)}
    stack = runner.invoke(cli, ["stack", str(tmp_path / "s.tif"), str(mask), str(mask), "--json"])
    assert stack.exit_code == 0, stack.output
    assert json.loads(stack.stdout) == {"output": str(tmp_path / "s.tif"), "bands": ["class", "class"],
                                        "width": 60, "height": 40}
    synth = runner.invoke(cli, ["synth", str(tmp_path / "r"), "--height", "64", "--width", "96", "--json"])
    assert synth.exit_code == 0, synth.output
    got = json.loads(synth.stdout)
    assert (got["height"], got["width"], got["crs"], len(got["dates"])) == (64, 96, "EPSG:32643", 4)
    assert all(Path(p).is_file() for p in got["files"].values())
    truth = pd.read_csv(got["files"]["truth_csv"]).groupby("crop")["hectares"].sum()
    # --json rounds to 4 decimals (m2); truth.csv keeps the full ground areas
    assert got["hectares"] == pytest.approx({str(k): float(v) for k, v in truth.items()}, rel=0, abs=5e-5)


def test_existing_outputs_are_refused_without_overwrite(runner, mask_and_districts, tmp_path):  # type: ignore[no-untyped-def]
    mask, _ = mask_and_districts
    for name, args in [
        ("a.csv", _areas_args(mask_and_districts, tmp_path / "a.csv")),
        ("f.gpkg", ["polygonize", str(mask), "--out", str(tmp_path / "f.gpkg")]),
        ("r/scene.tif", ["synth", str(tmp_path / "r"), "--height", "40", "--width", "40"]),
    ]:
        target = tmp_path / name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"keep me")
        out = runner.invoke(cli, args)
        assert out.exit_code == 1, out.output
        assert "already exists; pass --overwrite to replace it" in out.stderr and str(target) in out.stderr
        assert target.read_bytes() == b"keep me"
        again = runner.invoke(cli, [*args, "--overwrite"])
        assert again.exit_code == 0, again.output
        assert target.read_bytes() != b"keep me"


def test_creation_options_reach_the_file_and_bad_ones_are_refused(runner, mask_and_districts, tmp_path):  # type: ignore[no-untyped-def]
    mask, _ = mask_and_districts
    out = runner.invoke(cli, ["stack", str(tmp_path / "s.tif"), str(mask), "--co", "compress=zstd",
                              "--co", "BLOCKXSIZE=32", "--co", "BLOCKYSIZE=32"])
    assert out.exit_code == 0, out.output
    with rasterio.open(tmp_path / "s.tif") as s, rasterio.open(mask) as m:
        assert s.compression.name == "zstd" and s.block_shapes == [(32, 32)]
        assert (s.read(1) == m.read(1)).all()
    for co, message in [
        ("COMPRESS=JPEG", "COMPRESS=JPEG would change pixel values"),
        ("FOO=1", "unknown creation option 'FOO' for a GeoTIFF; expected one of COMPRESS"),
    ]:
        bad = runner.invoke(cli, ["stack", str(tmp_path / "t.tif"), str(mask), "--co", co])
        assert bad.exit_code == 1 and message in bad.stderr, bad.output
    bad = runner.invoke(cli, ["stack", str(tmp_path / "t.vrt"), str(mask), "--co", "COMPRESS=ZSTD"])
    assert bad.exit_code == 1 and "creation options (--co) apply to a .tif stack" in bad.stderr
    bad = runner.invoke(cli, ["stack", str(tmp_path / "t.tif"), str(mask), "--co", "COMPRESS"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output
    assert not (tmp_path / "t.tif").exists() and not (tmp_path / "t.vrt").exists()


def test_progress_is_reported_for_areas_and_stack(mask_and_districts, tmp_path):  # type: ignore[no-untyped-def]
    mask, districts = mask_and_districts
    seen: list[tuple[int, int]] = []
    district_areas_file(mask, districts, "district", tmp_path / "a.csv", progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    seen.clear()
    stack_rasters(tmp_path / "s.tif", [mask, mask], block=16, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 2 * 3 * 4) for i in range(1, 25)]  # 2 inputs x 3 x 4 blocks of 16 px
    seen.clear()
    synthesize(tmp_path / "r", height=600, width=1100, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 2 * 3) for i in range(1, 7)]  # windows of 512 px
