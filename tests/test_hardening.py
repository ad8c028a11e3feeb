"""Bad inputs through the real command line: one line naming the file, what was wrong and the fix,
exit status 1, no traceback, and nothing partial left in the output folder.

Every input here is a small real file written with rasterio / geopandas (no mocks of GDAL). The
messages asserted are those listed in docs/errors.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner
from shapely import make_valid
from shapely.geometry import Polygon, box

from geoseg.classes import default_classes
from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.workflow.config import load_workflow

from .geodesic_truth import geod_area_perimeter
from .workflow_helpers import BANDS, write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
H, W = 100, 90
#: Ground area (ha) of one TF pixel, 60 km east of UTM 43N's central meridian (pyproj.Geod): 0.07 % more
#: than the grid's 0.01 ha (and within 2e-6 of it over these 900 m)
PX_HA = float(geod_area_perimeter(box(560000, 3419990, 560010, 3420000), "EPSG:32643")[0][0]) / 1e4


@pytest.fixture(scope="module")
def base(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A model, a 100 x 90 px scene, labels and two districts, shared by the tests (read-only)."""
    d = tmp_path_factory.mktemp("base")
    write_model(d / "model")
    write_scene(d / "scene.tif", H, W, TF)
    labels = np.random.default_rng(0).integers(0, 7, (H, W)).astype("uint8")
    _write(d / "labels.tif", labels, nodata=255, desc=None)
    write_districts(d / "districts.gpkg", 560450, (559000, 3418000, 561500, 3421000))
    (d / "classes.yaml").write_text(default_classes().to_yaml())
    return d


@pytest.fixture
def runner():  # type: ignore[no-untyped-def]
    return CliRunner()


def _write(path: Path, arr: np.ndarray, *, nodata: float | None = 0, crs: str | None = "EPSG:32643",
           tf: Affine = TF, desc: list[str] | None = BANDS) -> Path:
    arr = arr[None] if arr.ndim == 2 else arr
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=arr.dtype, nodata=nodata, crs=crs, transform=tf) as d:
        d.write(arr)
        if desc and len(desc) == arr.shape[0]:
            for i, n in enumerate(desc, start=1):
                d.set_band_description(i, n)
    return path


def _scene(base: Path) -> np.ndarray:
    with rasterio.open(base / "scene.tif") as s:
        return s.read()


def _fails(runner: CliRunner, args: list[object], out_dir: Path, *parts: str) -> str:
    """Run the CLI, check the one-line failure and that ``out_dir`` holds nothing; return the line."""
    res = runner.invoke(cli, [str(a) for a in args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for p in parts:
        assert p in lines[0], f"{p!r} not in {lines[0]!r}"
    left = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    assert left == [], f"left behind: {left}"
    return lines[0]


# ------------------------------------------------------------------ rasters given to `geoseg predict`


def _not_a_raster(d: Path, base: Path) -> Path:
    (d / "notes.tif").write_text("field notes, not an image\n")
    return d / "notes.tif"


def _empty_file(d: Path, base: Path) -> Path:
    (d / "empty.tif").write_bytes(b"")
    return d / "empty.tif"


def _header_only(d: Path, base: Path) -> Path:
    data = (base / "scene.tif").read_bytes()
    (d / "half.tif").write_bytes(data[: len(data) // 2])
    return d / "half.tif"


def _pixels_cut(d: Path, base: Path) -> Path:
    # A COG has its header first: the file opens, but the last tiles' bytes are gone.
    import rasterio.shutil

    rasterio.shutil.copy(base / "scene.tif", d / "full.tif", driver="COG", BLOCKSIZE="32", COMPRESS="DEFLATE",
                         OVERVIEWS="NONE")
    data = (d / "full.tif").read_bytes()
    (d / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    return d / "cut.tif"


def _no_crs(d: Path, base: Path) -> Path:
    return _write(d / "nocrs.tif", _scene(base), crs=None)


def _rotated(d: Path, base: Path) -> Path:
    return _write(d / "rot.tif", _scene(base), tf=TF * Affine.rotation(20))


def _three_bands(d: Path, base: Path) -> Path:
    return _write(d / "three.tif", _scene(base)[:3], desc=BANDS[:3])


def _band_order(d: Path, base: Path) -> Path:
    return _write(d / "swapped.tif", _scene(base)[::-1].copy(), desc=BANDS[::-1])


def _uint8(d: Path, base: Path) -> Path:
    return _write(d / "bytes.tif", (_scene(base) // 10).clip(0, 255).astype("uint8"))


def _all_nodata(d: Path, base: Path) -> Path:
    return _write(d / "cloud.tif", np.zeros((4, H, W), "uint16"))


def _bands_never_together(d: Path, base: Path) -> Path:
    a = _scene(base)
    a[0, :, : W // 2] = 0  # band 1 observed only on the right, band 2 only on the left
    a[1, :, W // 2 :] = 0
    return _write(d / "disjoint.tif", a)


BAD_RASTERS = [
    ("not a raster", _not_a_raster, ["notes.tif: cannot be read as a raster", "not recognized as being in a supported",
                                     "expected a GeoTIFF or another format GDAL reads"]),
    ("empty file", _empty_file, ["empty.tif: cannot be read as a raster", "check that the file is complete"]),
    ("truncated header", _header_only, ["half.tif: cannot be read as a raster", "not truncated"]),
    ("truncated pixels", _pixels_cut, ["cut.tif: reading window", "failed", "the file may be truncated or corrupt",
                                       "re-download or re-export it"]),
    ("no CRS", _no_crs, ["nocrs.tif: has no CRS", "gdal_edit.py -a_srs EPSG:32643"]),
    ("rotated", _rotated, ["rot.tif: has a rotated or sheared transform", "expected a north-up grid", "gdalwarp"]),
    ("3 of 4 bands", _three_bands, ["three.tif: has 3 bands, but", "expects 4 (2024-06-15 B, 2024-06-15 G",
                                    "geoseg stack OUT.vrt FILE..."]),
    ("band order", _band_order, ["swapped.tif: band order differs from what",
                                 "band 1 is '2024-06-15 NIR', expected '2024-06-15 B'", "re-stack the bands"]),
    ("uint8 scale", _uint8, ["bytes.tif: holds uint8 pixels (at most 255), but",
                             "was trained on values around 1000 (band 1 mean; 4 of 4 band means exceed 255)",
                             "supply the image on the model's scale"]),
    ("all nodata", _all_nodata, ["cloud.tif: every pixel is nodata (nodata value 0, in at least one band)",
                                 "gdal_edit.py -a_nodata", "or leave this scene out"]),
    ("bands never observed together", _bands_never_together, ["disjoint.tif: every pixel is nodata"]),
]


@pytest.mark.parametrize("make, parts", [b[1:] for b in BAD_RASTERS], ids=[b[0] for b in BAD_RASTERS])
def test_bad_rasters_given_to_predict(runner, base, tmp_path, make, parts):  # type: ignore[no-untyped-def]
    image = make(tmp_path, base)
    out = tmp_path / "out"
    out.mkdir()
    _fails(runner, ["predict", "--model", base / "model", image, "--out", out / "mask.tif",
                    "--confidence", out / "conf.tif", "--tile", "64"], out, *parts)


@pytest.mark.parametrize("make, parts", [b[1:] for b in BAD_RASTERS if b[0] not in ("truncated pixels", "all nodata",
                                                                                    "bands never observed together")],
                         ids=[b[0] for b in BAD_RASTERS if b[0] not in ("truncated pixels", "all nodata",
                                                                         "bands never observed together")])
def test_bad_rasters_in_a_workflow_are_refused_on_load(runner, base, tmp_path, make, parts):  # type: ignore[no-untyped-def]
    """The same rasters as workflow scenes: refused before any cluster starts, naming the key."""
    image = make(tmp_path, base)
    shutil.copytree(base / "model", tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml", scenes=[image.name])
    line = _fails(runner, ["run", tmp_path / "wf.yaml"], _empty(tmp_path), "wf.yaml: key 'scenes[0]'")
    # the message of the band-count check is the workflow's own; the others carry the raster's message
    if make is not _three_bands:
        assert parts[0] in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()


def test_unusual_dtypes_are_read_with_their_nodata(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    """float32 with NaN nodata and int16 with a negative nodata: masks have 255 exactly where the input is nodata."""
    a = _scene(base)
    a[:, 50:52, 40:45] = 0  # a hole inside the scene
    ref_scene = _write(tmp_path / "u16.tif", a)
    f = a.astype("float32")
    f[f == 0] = np.nan
    i = np.where(a == 0, -9999, a).astype("int16")
    cases = {"f32.tif": _write(tmp_path / "f32.tif", f, nodata=float("nan")),
             "i16.tif": _write(tmp_path / "i16.tif", i, nodata=-9999), "u16.tif": ref_scene}
    masks = {}
    for name, path in cases.items():
        res = runner.invoke(cli, ["predict", "--model", str(base / "model"), str(path), "--out",
                                  str(tmp_path / f"mask_{name}"), "--tile", "64"])
        assert res.exit_code == 0, res.output
        with rasterio.open(tmp_path / f"mask_{name}") as m:
            masks[name] = m.read(1)
    nod = np.zeros((H, W), bool)
    nod[:3] = True
    nod[50:52, 40:45] = True
    for name, m in masks.items():
        assert ((m == 255) == nod).all(), name
        # the same values are the same pixels whatever their type: the same prediction
        np.testing.assert_array_equal(m, masks["u16.tif"], err_msg=name)


def test_scenes_smaller_than_one_tile(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    a = _scene(base)
    for shape in ((5, 7), (1, 1), (50, 3)):
        path = _write(tmp_path / f"s{shape[0]}x{shape[1]}.tif", a[:, 40 : 40 + shape[0], 40 : 40 + shape[1]].copy(),
                      tf=TF * Affine.translation(40, 40))
        out = tmp_path / f"m{shape[0]}x{shape[1]}.tif"
        res = runner.invoke(cli, ["predict", "--model", str(base / "model"), str(path), "--out", str(out),
                                  "--tile", "64"])
        assert res.exit_code == 0, res.output
        assert "1 tiles" in res.output or "2 tiles" in res.output
        with rasterio.open(out) as m:
            assert (m.height, m.width) == shape and m.transform == TF * Affine.translation(40, 40)
            assert (m.read(1) < 7).all()


# ------------------------------------------------------------------ labels


def test_label_raster_on_another_grid(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    with rasterio.open(base / "labels.tif") as s:
        lab = s.read(1)
    _write(tmp_path / "shifted.tif", lab, nodata=255, tf=TF * Affine.translation(3, 0), desc=None)
    _fails(runner, ["evaluate", "--model", base / "model", "--image", base / "scene.tif", "--labels",
                    tmp_path / "shifted.tif"], _empty(tmp_path),
           "shifted.tif is not on the grid of", "scene.tif: transform (10.0, 0.0, 560030.0",
           "(expected (10.0, 0.0, 560000.0", "resample it onto the grid, e.g. `rio warp",
           "aligned.tif --like", "(or `gdalwarp")


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty-out"
    d.mkdir(exist_ok=True)
    return d


def test_label_values_outside_the_class_table(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    with rasterio.open(base / "labels.tif") as s:
        lab = s.read(1)
    lab[5, 5], lab[60, 70] = 9, 12
    _write(tmp_path / "badlab.tif", lab, nodata=255, desc=None)
    _fails(runner, ["evaluate", "--model", base / "model", "--image", base / "scene.tif", "--labels",
                    tmp_path / "badlab.tif"], _empty(tmp_path),
           "badlab.tif: holds label values 9 not in the class file", "model.json (classes) (ids 0..6: 0=background", "recode the labels to these ids")
    out = tmp_path / "out"
    out.mkdir()
    # Counting areas from such a raster with a class table would invent classes 9 and 12: refused.
    _fails(runner, ["areas", tmp_path / "badlab.tif", "--districts", base / "districts.gpkg", "--name-field",
                    "district", "--classes", base / "classes.yaml", "--out", out / "areas.csv", "-q"], out,
           "badlab.tif: holds class values 9 (0.01 ha), 12 (0.01 ha) inside the districts that are not in the class "
           "table (ids 0=background, 1=rice", "nodata 255.0", "pass the class file the raster was made with (--classes)")


# ------------------------------------------------------------------ district boundaries


def test_boundary_file_without_the_named_attribute(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    out = _empty(tmp_path)
    _fails(runner, ["areas", base / "labels.tif", "--districts", base / "districts.gpkg", "--name-field", "NAME",
                    "--out", out / "a.csv"], out,
           "districts.gpkg: has no attribute 'NAME'; the attributes are ['district']",
           "pass the one that names the districts (--name-field")


def test_boundary_file_of_null_geometries_only(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    gpd.GeoDataFrame({"district": ["A", "B"]}, geometry=[None, None], crs="EPSG:32643").to_file(tmp_path / "n.gpkg")
    out = _empty(tmp_path)
    _fails(runner, ["areas", base / "labels.tif", "--districts", tmp_path / "n.gpkg", "--name-field", "district",
                    "--out", out / "a.csv"], out,
           "n.gpkg: no usable district polygon (2 features: A: null geometry (skipped); B: null geometry (skipped))",
           "expected polygons with a name in 'district'")


def test_null_and_invalid_geometries_are_reported_and_the_rest_counted(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    bow = Polygon([(560450, 3419000), (560900, 3420000), (560900, 3419000), (560450, 3420000)])  # self-crossing
    west = box(560000, 3419000, 560450, 3420000)
    gpd.GeoDataFrame({"district": ["Nothing", "Bow", "West"]}, geometry=[None, bow, west],
                     crs="EPSG:32643").to_file(tmp_path / "mixed.gpkg")
    res = runner.invoke(cli, ["areas", str(base / "labels.tif"), "--districts", str(tmp_path / "mixed.gpkg"),
                              "--name-field", "district", "--out", str(tmp_path / "a.csv"), "-q"])
    assert res.exit_code == 0, res.output
    assert "Warning: district Nothing: null geometry (skipped)" in res.output
    assert "Warning: district Bow: invalid geometry repaired" in res.output
    import pandas as pd

    t = pd.read_csv(tmp_path / "a.csv")
    assert set(t.district) == {"Bow", "West"}
    with rasterio.open(base / "labels.tif") as s:
        lab = s.read(1)
    west_pixels = lab[:, :45]  # x 560000..560450 = columns 0..44, whole height
    got = t[t.district == "West"].set_index("class_id")["area_ha"]
    for cid in range(7):
        assert got[cid] == pytest.approx((west_pixels == cid).sum() * PX_HA, rel=1e-5, abs=1e-9)
    # the bow tie repaired into its two triangles: half of the east half's 45 ha of grid, on the ground
    bow_ha = geod_area_perimeter(make_valid(bow), "EPSG:32643")[0][0] / 1e4
    assert bow_ha == pytest.approx(22.5 * PX_HA / 0.01, rel=1e-5)
    assert t[t.district == "Bow"]["district_ha"].iloc[0] == pytest.approx(bow_ha, rel=1e-7)
    assert t[t.district == "Bow"]["observed_ha"].iloc[0] == pytest.approx(bow_ha, rel=1e-7)


def test_boundaries_that_miss_the_raster(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    write_districts(tmp_path / "far.gpkg", 700450, (699000, 3418000, 701500, 3421000))
    out = _empty(tmp_path)
    _fails(runner, ["areas", base / "labels.tif", "--districts", tmp_path / "far.gpkg", "--name-field", "district",
                    "--out", out / "a.csv"], out,
           "none of the 2 districts in", "far.gpkg overlaps", "labels.tif: districts span (699000, 3.418e+06",
           "(in EPSG:32643); check that both files have the right CRS")


def test_boundary_file_that_is_not_a_vector(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "junk.gpkg").write_bytes(bytes(range(256)) * 4)
    out = _empty(tmp_path)
    _fails(runner, ["areas", base / "labels.tif", "--districts", tmp_path / "junk.gpkg", "--name-field", "district",
                    "--out", out / "a.csv"], out,
           "junk.gpkg: cannot be read as a vector file", "expected a GeoPackage, Shapefile, GeoJSON")


# ------------------------------------------------------------------ workflow files, through `geoseg run`


@pytest.fixture
def project(base, tmp_path):  # type: ignore[no-untyped-def]
    shutil.copy(base / "scene.tif", tmp_path / "scene.tif")
    shutil.copytree(base / "model", tmp_path / "model")
    return tmp_path


BAD_WORKFLOWS = [
    ("syntax", "name: t\nscenes: [scene.tif\n", ["YAML syntax error at line 3", "fix the syntax"]),
    ("tab indent", "name: t\nscenes:\n\t- scene.tif\n", ["YAML syntax error at line 3", "fix the syntax"]),
    ("not a mapping", "- just\n- a list\n", ["expected a mapping of keys (name, scenes, model, ...), found list"]),
    ("empty file", "", ["expected a mapping of keys (name, scenes, model, ...), found NoneType"]),
    ("python tag", "name: !!python/object/apply:os.system ['touch pwned']\n", ["YAML syntax error", "fix the syntax"]),
    ("unknown key", {"colour": "red"}, ["unknown key(s) ['colour']; allowed here: ["]),
    ("unknown nested key", {"cluster": {"wrokers": 2}}, ["unknown key(s) ['cluster.wrokers']"]),
    ("wrong type", {"tile": "big"}, ["key 'tile': expected int, found str 'big'"]),
    ("bool for int", {"batch_size": True}, ["key 'batch_size': expected a number, found True"]),
    ("list for mapping", {"outputs": ["parquet"]}, ["key 'outputs': expected dict, found list"]),
    ("missing scene", {"scenes": ["nope.tif"]}, ["key 'scenes[0].path': file", "nope.tif does not exist; fix the path"]),
    ("missing model", {"model": "nomodel"}, ["key 'model': model directory", "nomodel does not exist"]),
    ("missing districts", {"districts": {"path": "d.gpkg"}, "outputs": {"fields": []}},
     ["key 'districts.path': district boundary file", "d.gpkg does not exist"]),
    ("no scenes", {"scenes": []}, ["key 'scenes': is empty; list at least one scene"]),
    ("tile 100", {"tile": 100}, ["key 'tile': 100 is not divisible by 16; use 96 or 112"]),
    ("tile 8", {"tile": 8}, ["key 'tile': must be at least 16, found 8"]),
    ("name with slash", {"name": "../../etc"}, ["key 'name': '../../etc' is not a plain name"]),
    ("name dot-dot", {"name": ".."}, ["key 'name': '..' is not a plain name"]),
    ("scene name escape", {"scenes": [{"path": "scene.tif", "name": "../x"}]},
     ["key 'scenes[0].name': '../x' is not a plain name"]),
    ("device", {"device": "tpu"}, ["key 'device': 'tpu'; expected auto, cpu or cuda"]),
    ("crs", {"crs": "EPSG:999999"}, ["key 'crs': 'EPSG:999999' is not a CRS GDAL knows; use e.g. EPSG:32643"]),
]


@pytest.mark.parametrize("content, parts", [b[1:] for b in BAD_WORKFLOWS], ids=[b[0] for b in BAD_WORKFLOWS])
def test_bad_workflow_files(runner, project, content, parts):  # type: ignore[no-untyped-def]
    wf = project / "bad workflow.yaml"
    if isinstance(content, str):
        wf.write_text(content)
    else:
        write_workflow(wf, **content)
    line = _fails(runner, ["run", wf], _empty(project), f"{wf}: ", *parts)
    assert not (project / "runs").exists() and not (project / "store").exists() and not (project / "pwned").exists()
    assert line.count(str(wf)) >= 1


def test_scene_file_names_that_would_climb_out_need_a_name(project):  # type: ignore[no-untyped-def]
    shutil.copy(project / "scene.tif", project / "...tif")  # its stem is '..'
    write_workflow(project / "wf.yaml", scenes=["...tif"])
    with pytest.raises(ConfigError, match=r"key 'scenes\[0\]': the file .*\.\.\.tif gives the scene name '\.\.', "
                                          r"which cannot name a folder; give the scene a name"):
        load_workflow(project / "wf.yaml")
    write_workflow(project / "wf.yaml", scenes=[{"path": "...tif", "name": "dots"}])
    assert load_workflow(project / "wf.yaml").scenes[0].name == "dots"


def test_yaml_is_only_safe_loaded_and_no_shell_is_built(project):  # type: ignore[no-untyped-def]
    """No YAML loader but safe_load, and nothing in the package runs a shell."""
    pkg = Path(__file__).resolve().parents[1] / "geoseg"
    src = {p: p.read_text(encoding="utf-8") for p in pkg.rglob("*.py")}
    for p, text in src.items():
        assert not re.search(r"yaml\.(load|full_load|unsafe_load)\(|yaml\.(Unsafe|Full)?Loader\b", text), p
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|(?<![.\w])eval\(|(?<![.\w])exec\(", text), p
        for m in re.finditer(r"torch\.load\(", text):
            assert "weights_only=True" in text[m.end() : m.end() + 200], p
    # The one subprocess in the package (the benchmark runner) takes an argument list, never a string.
    users = [p.name for p, t in src.items() if "subprocess." in t]
    assert users == ["bench.py"]
    assert re.search(r"subprocess\.Popen\(\[sys\.executable", src[pkg / "bench.py"])


# ------------------------------------------------------------------ paths and output folders


def test_paths_with_spaces_and_non_ascii_characters(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    d = tmp_path / "my data" / "Ludhiāna खेत 2024"
    d.mkdir(parents=True)
    shutil.copy(base / "scene.tif", d / "scène 1.tif")
    shutil.copytree(base / "model", d / "modèle v1")
    shutil.copy(base / "districts.gpkg", d / "zila sīmā.gpkg")
    out = d / "sortie à écrire"
    res = runner.invoke(cli, ["predict", "--model", str(d / "modèle v1"), str(d / "scène 1.tif"), "--out",
                              str(out / "masque final.tif"), "--tile", "64"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["areas", str(out / "masque final.tif"), "--districts", str(d / "zila sīmā.gpkg"),
                              "--name-field", "district", "--out", str(out / "surfaces ha.csv"), "-q"])
    assert res.exit_code == 0, res.output
    import pandas as pd

    t = pd.read_csv(out / "surfaces ha.csv")
    assert set(t.district) == {"West", "East"} and t.groupby("district").observed_ha.first().sum() == pytest.approx((H - 3) * W * PX_HA, rel=1e-5)
    with rasterio.open(out / "masque final.tif") as m:
        assert m.crs.to_epsg() == 32643 and m.read(1)[3:].max() < 7
    # a workflow in that folder, with relative and absolute paths, loads with every path resolved
    wf = write_workflow(d / "flux de travail.yaml", name="ludhiana-2024", scenes=["scène 1.tif"], model="modèle v1",
                        store="tuiles ø", runs_dir=str(d / "exécutions"))
    cfg = load_workflow(wf)
    assert cfg.scenes[0].paths[0] == d / "scène 1.tif" and cfg.scenes[0].name == "scène 1"
    assert cfg.store == d / "tuiles ø" and cfg.runs_dir == d / "exécutions"
    # and a bad path there is named in full, in one line
    line = _fails(runner, ["predict", "--model", d / "modèle v1", d / "scène 2.tif", "--out", d / "x" / "m.tif"],
                  _empty(tmp_path), "scène 2.tif: file not found; check the path")
    assert str(d) in line


def _make_unwritable(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # root writes through permissions: make the folder immutable instead
        r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("running as root on a filesystem without chattr +i")
    else:
        path.chmod(0o555)


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    else:
        path.chmod(0o755)


@pytest.mark.parametrize("command", ["predict", "areas", "polygonize", "run"])
def test_an_output_folder_that_is_not_writable(runner, base, tmp_path, command):  # type: ignore[no-untyped-def]
    ro = tmp_path / "read-only"
    _make_unwritable(ro)
    try:
        if command == "predict":
            args = ["predict", "--model", base / "model", base / "scene.tif", "--out", ro / "m.tif", "--tile", "64"]
            parts = ["m.tif: the directory", "read-only is not writable; choose another output path"]
        elif command == "areas":
            args = ["areas", base / "labels.tif", "--districts", base / "districts.gpkg", "--name-field", "district",
                    "--out", ro / "a.csv", "-q"]
            parts = ["a.csv: the directory", "read-only is not writable; choose another output path"]
        elif command == "polygonize":
            args = ["polygonize", base / "labels.tif", "--out", ro / "f.gpkg"]
            parts = ["f.gpkg: the directory", "read-only is not writable; choose another output path"]
        else:
            shutil.copy(base / "scene.tif", tmp_path / "scene.tif")
            shutil.copytree(base / "model", tmp_path / "model")
            write_workflow(tmp_path / "wf.yaml", runs_dir=str(ro))
            args = ["run", tmp_path / "wf.yaml"]
            parts = ["read-only/t: cannot write the run folder (", "); choose a writable runs_dir (the workflow's "
                     "runs_dir key or --runs-dir), or fix its permissions"]
        _fails(runner, args, ro, *parts)
    finally:
        _make_writable(ro)


def test_an_output_path_below_a_file(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "afile").write_text("x")
    _fails(runner, ["predict", "--model", base / "model", base / "scene.tif", "--out", tmp_path / "afile" / "m.tif"],
           _empty(tmp_path), "afile/m.tif:", "afile is a file, not a directory; choose an output path inside a directory")
    assert (tmp_path / "afile").read_text() == "x"


def test_debug_shows_the_traceback_for_a_bad_raster(runner, base, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "notes.tif").write_text("text")
    res = runner.invoke(cli, ["--debug", "predict", "--model", str(base / "model"), str(tmp_path / "notes.tif"),
                              "--out", str(tmp_path / "m.tif")])
    assert res.exit_code != 0 and type(res.exception).__name__ == "RasterReadError"
    res = subprocess.run([sys.executable, "-m", "geoseg.cli.main", "--debug", "predict", "--model",
                          str(base / "model"), str(tmp_path / "notes.tif"), "--out", str(tmp_path / "m.tif")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1 and "Traceback (most recent call last)" in res.stderr
    assert "geoseg.errors.RasterReadError: " in res.stderr and not (tmp_path / "m.tif").exists()


def test_workflow_text_round_trips_through_safe_dump(project):  # type: ignore[no-untyped-def]
    """A workflow with every value type loads; what it says is what RunConfig holds."""
    write_districts(project / "d.gpkg", 560450, (559000, 3418000, 561500, 3421000))
    wf = write_workflow(project / "wf.yaml", districts={"path": "d.gpkg", "name_field": "district"},
                        outputs={"fields": ["parquet"], "district_areas": True, "min_area_ha": 1},
                        cluster={"resources": {"GPU": 1}, "memory_limit": 2_000_000_000})
    cfg = load_workflow(wf)
    assert cfg.outputs.min_area_ha == 1.0 and cfg.cluster.resources == {"GPU": 1.0}
    assert cfg.cluster.memory_limit == "2000000000" and cfg.districts == project / "d.gpkg"
    assert yaml.safe_load(cfg.text)["name"] == "t"


@pytest.mark.parametrize("make, parts", [
    (_pixels_cut, ["Error: ", "cut.tif: reading window", "failed", "the file may be truncated or corrupt"]),
    (_all_nodata, ["Error: ", "cloud.tif: every pixel is nodata (nodata value 0, in at least one band)",
                   "or leave this scene out"]),
], ids=["truncated pixels", "all nodata"])
def test_bad_pixels_fail_a_run_cleanly(runner, base, tmp_path, make, parts):  # type: ignore[no-untyped-def]
    """Rasters whose header is fine but whose pixels are not: the run fails in one line and writes no mask."""
    import json

    image = make(tmp_path, base)
    shutil.copytree(base / "model", tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml", scenes=[image.name], cluster={"workers": 1, "dashboard": False})
    res = runner.invoke(cli, ["run", str(tmp_path / "wf.yaml"), "--quiet"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and "Traceback" not in res.output, res.output
    for p in parts:
        assert p in lines[0], lines[0]
    assert "internal error" not in lines[0], lines[0]  # the worker's error reached the client as itself
    run_dir = next((tmp_path / "runs" / "t").glob("2*"))
    assert not (run_dir / "mask.tif").exists() and not (run_dir / "confidence.tif").exists()
    assert sorted(str(p) for p in tmp_path.rglob("*.partial-*")) == []
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["status"] == "failed" and parts[1] in m["error"]
