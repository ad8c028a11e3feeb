"""The command line: one clean line and a non-zero exit on bad input; --debug shows the traceback."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.demo import compare_areas


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
    cmd = [sys.executable, "-m", "geoseg.cli.main", "demo", "--size", "512", "--train-minutes", "0.2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "INFO" not in out.stderr  # Dask's chatter stays off
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs" / "demo"
    for name in ("mask.tif", "confidence.tif", "fields.gpkg", "fields.parquet", "fields.geojson",
                 "district_areas.csv", "manifest.json"):
        assert (run_dir / name).is_file(), name
    assert (tmp_path / "demo" / "model" / "model.json").is_file() and "trained " in out.stdout
    # The mask keeps nodata exactly where the labels have it: observed hectares per district = the truth's.
    truth = pd.read_csv(tmp_path / "demo" / "region" / "truth.csv")
    areas = pd.read_csv(run_dir / "district_areas.csv")
    observed = areas.groupby("district")["observed_ha"].first()
    true_ha = truth[truth.district.isin(observed.index)].groupby("district")["hectares"].sum()
    assert len(true_ha) >= 2
    for d, ha in true_ha.items():
        assert observed[d] == pytest.approx(ha, rel=1e-3), d
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
