"""The command line: one clean line and a non-zero exit on bad input; --debug shows the traceback."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli


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


def test_demo_stitches_the_truth_back_exactly(runner, tmp_path):  # type: ignore[no-untyped-def]
    out = runner.invoke(cli, ["demo", "--out", str(tmp_path / "demo"), "--size", "700"])
    assert out.exit_code == 0, out.output
    assert "0 differing pixels - identical" in out.output
    with rasterio.open(tmp_path / "demo" / "mask.tif") as m, rasterio.open(tmp_path / "demo" / "region" / "labels.tif") as t:
        assert m.transform == t.transform and m.crs == t.crs
        np.testing.assert_array_equal(m.read(), t.read())
