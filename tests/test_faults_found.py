"""Faults found by trying geoseg as a hostile user and an unlucky operator would (issue 17).

A full disk is a real tmpfs of a few kB mounted for the test (as root, as CI runs; the tests
skip where mounting is not allowed); hostile inputs are real files; memory is the peak RSS of
the real command in its own process.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import geoseg.io.raster
from geoseg.classes import default_classes, load_classes
from geoseg.cli.main import cli
from geoseg.errors import ClassFileError, ConfigError, RasterWriteError, VectorWriteError, WriteError
from geoseg.io.raster import count_differences, write_text_atomic
from geoseg.io.vector import read_vector, write_vector
from geoseg.ops.predict import predict_scene
from geoseg.strict_yaml import MAX_DEPTH
from geoseg.workflow.config import load_workflow

from .workflow_helpers import mount_tmpfs, umount, write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)


@pytest.fixture(scope="module")
def base(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A model, a 256 x 256 px scene and its mask, predicted on a disk with room (the reference)."""
    d = tmp_path_factory.mktemp("faults")
    write_model(d / "model")
    write_scene(d / "scene.tif", 256, 256, TF)
    predict_scene(d / "model", d / "scene.tif", d / "mask.tif", confidence=d / "conf.tif", tile=128)
    return d


@pytest.fixture
def small_disk(tmp_path) -> Iterator:  # type: ignore[no-untyped-def]
    """``small_disk(size)`` mounts a fresh tmpfs of ``size`` (e.g. "16k") and returns its folder."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        d = tmp_path / f"disk-{size}-{uuid.uuid4().hex[:6]}"
        if not mount_tmpfs(d, size):
            pytest.skip("cannot mount a tmpfs here (needs root); the full-disk cases need a real small filesystem")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        umount(d)


def _left(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------ 1. a full disk


def test_predict_on_a_full_disk_publishes_a_whole_mask_or_nothing(base, small_disk):  # type: ignore[no-untyped-def]
    """From 4 kB to 96 kB free: every outcome is a mask identical to the reference, or a clear error and an
    empty disk. Before the fix some sizes gave exit 0 and an unreadable mask (GDAL logged the failed COG
    copy instead of raising), others an internal error and two .partial files."""
    kinds = set()
    for kb in range(4, 100, 6):
        d = small_disk(f"{kb}k")
        try:
            predict_scene(base / "model", base / "scene.tif", d / "m.tif", tile=128)
        except RasterWriteError as e:
            msg = str(e)
            assert msg.startswith(f"{d / 'm.tif'}: "), msg  # the target, never the temporary name
            assert f"the disk holding {d} is full" in msg and msg.endswith("check free disk space, then run again")
            assert _left(d) == [], (kb, _left(d))
            kinds.add("does not read back" if "does not read back" in msg else "failed")
        else:
            assert _left(d) == ["m.qml", "m.tif", "m.tif.aux.xml"]  # the mask with its sidecars
            assert count_differences(d / "m.tif", base / "mask.tif") == 0
            kinds.add("ok")
    # the three paths: a failure GDAL raised, one only the read-back caught, and room enough
    assert kinds == {"failed", "does not read back", "ok"}, kinds


def test_full_disk_through_the_cli_is_one_line_without_libtiff_noise(base, small_disk):  # type: ignore[no-untyped-def]
    d = small_disk("12k")
    r = subprocess.run([sys.executable, "-m", "geoseg.cli.main", "predict", "--model", str(base / "model"),
                        str(base / "scene.tif"), "--out", str(d / "m.tif"), "--confidence", str(d / "c.tif"),
                        "--tile", "128"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr
    assert len(lines) == 1, r.stderr  # before: "_tiffWriteProc: No space left on device." per block, then more
    assert re.fullmatch(rf"Error: {re.escape(str(d))}/[mc]\.tif: .*; the disk holding {re.escape(str(d))} is full "
                        r"\(only [\d,]+ bytes free\); check free disk space, then run again", lines[0]), lines[0]
    assert _left(d) == []


def _fields(n: int = 3000):  # type: ignore[no-untyped-def]
    import geopandas as gpd
    from shapely.geometry import box

    return gpd.GeoDataFrame({"class_id": np.arange(n) % 5, "name": [f"field {i} " * 3 for i in range(n)]},
                            geometry=[box(i, 0, i + 1, 1 + i % 7) for i in range(n)], crs="EPSG:32643")


@pytest.mark.parametrize("ext", ["geojson", "shp"])
def test_vector_outputs_on_a_full_disk_are_whole_or_absent(ext, tmp_path, small_disk):  # type: ignore[no-untyped-def]
    """GeoJSON missing its closing bytes, a Shapefile with a truncated .shx: GDAL only logged those
    (exit 0, unreadable file) before the read-back check."""
    gdf = _fields()
    ref = write_vector(gdf, tmp_path / f"ref.{ext}")
    size = sum(f.stat().st_size for f in tmp_path.iterdir() if f.name.startswith("ref."))
    outcomes = set()
    for pages in range(-3, 9):  # around the size the file needs, one 4 kB page at a time
        d = small_disk(f"{(size // 4096 + pages) * 4}k")
        try:
            write_vector(gdf, d / f"f.{ext}")
        except VectorWriteError as e:
            assert str(e).startswith(f"{d}/f.{ext}: ") and f"the disk holding {d} is full" in str(e), str(e)
            assert _left(d) == []
            outcomes.add("does not read back" if "does not read back" in str(e) else "failed")
        else:
            assert len(read_vector(d / f"f.{ext}")) == len(gdf)
            outcomes.add("ok")
    assert ref.exists() and {"ok", "does not read back"} <= outcomes, outcomes


def test_text_outputs_on_a_full_disk(small_disk):  # type: ignore[no-untyped-def]
    d = small_disk("4k")
    with pytest.raises(WriteError, match=rf"^{re.escape(str(d))}/m\.json: writing failed \(No space left on device\); "
                                         rf"the disk holding {re.escape(str(d))} is full"):
        write_text_atomic(d / "m.json", "x" * 100_000)
    assert _left(d) == []


# ------------------------------------------------------------------ 3. an output that would replace an input


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _one_line(args: list[object]) -> str:
    res = CliRunner().invoke(cli, [str(a) for a in args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


def test_an_output_never_replaces_an_input(base, tmp_path):  # type: ignore[no-untyped-def]
    s = tmp_path / "s.tif"
    s.write_bytes((base / "scene.tif").read_bytes())
    m = tmp_path / "m.tif"
    m.write_bytes((base / "mask.tif").read_bytes())
    (tmp_path / "link.tif").symlink_to(s)
    os.link(m, tmp_path / "hard.tif")
    (tmp_path / "b03.tif").write_bytes(s.read_bytes())
    CliRunner().invoke(cli, ["stack", str(tmp_path / "x.vrt"), str(s)])
    before = {p.name: _sha(p) for p in (s, m)}
    model = base / "model"
    cases = [
        (["predict", "--model", model, s, "--out", s], f"{s}: the mask would replace the image ({s}, the same file)"),
        (["predict", "--model", model, tmp_path / "link.tif", "--out", s], "the mask would replace the image"),
        (["predict", "--model", model, s, "--out", tmp_path / "o.tif", "--confidence", tmp_path / "./o.tif"],
         "the confidence raster would replace the mask"),
        (["predict", "--model", model, tmp_path / "x.vrt", "--out", s],
         f"the mask would replace the image ({tmp_path / 'x.vrt'}, which reads {s})"),
        (["predict", "--model", model, s, "--out", model / "model.json"], "the mask would replace the model"),
        (["polygonize", m, "--out", m, "--format", "gpkg"], f"{m}: the fields file would replace the mask"),
        (["polygonize", m, "--out", tmp_path / "hard.tif", "--format", "gpkg"], "the fields file would replace the mask"),
        (["stack", s, tmp_path / "b03.tif"], f"{s}: already exists; the output comes first"),
        (["stack", "--overwrite", s, s], f"{s}: the stack would replace input 1 ({s}, the same file)"),
    ]
    for args, part in cases:
        line = _one_line(args)
        assert part in line, (args, line)
        assert line.endswith("choose another output path") or "--overwrite" in line, line
    assert {p.name: _sha(p) for p in (s, m)} == before
    assert not (tmp_path / "o.tif").exists()


# ------------------------------------------------------------------ 4. hostile inputs: fail fast, in little memory

# VmHWM, the peak resident memory of this process image (getrusage's ru_maxrss would include the
# memory of the big test process this one was forked from)
_RSS = """import re, sys
from geoseg.cli.main import cli
try:
    cli.main(args=sys.argv[1:], prog_name="geoseg")
finally:
    with open("/proc/self/status") as f:
        sys.stderr.write("MAXRSS %s\\n" % re.search(r"VmHWM:\\s+(\\d+)", f.read()).group(1))
"""


def _run_measured(args: list[object], cwd: Path) -> tuple[int, list[str], float]:
    """Run the CLI in its own process: exit code, stderr lines (without the RSS line), peak RSS in MB."""
    r = subprocess.run([sys.executable, "-c", _RSS, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    rss = [int(ln.split()[1]) for ln in lines if ln.startswith("MAXRSS ")]
    return r.returncode, [ln for ln in lines if not ln.startswith("MAXRSS ")], rss[0] / 1024


def _huge_vrt(path: Path, scene: Path, size: int = 1_000_000) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{scene}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
        f"</VRTRasterBand>" for b in range(1, 5))
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32643</SRS>'
                    f"<GeoTransform>560000, 10, 0, 3420000, 0, -10</GeoTransform>{bands}</VRTDataset>")
    return path


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_hostile_inputs_fail_fast_in_little_memory(base, tmp_path):  # type: ignore[no-untyped-def]
    huge = _huge_vrt(tmp_path / "huge.vrt", base / "scene.tif")
    write_districts(tmp_path / "d.gpkg", 561000, (560000, 3417440, 562560, 3420000))
    (tmp_path / "bomb.yaml").write_text("name: t\n" + _alias_bomb())
    (tmp_path / "classes.yaml").write_text(_alias_bomb() + default_classes().to_yaml())
    (tmp_path / "deep.yaml").write_text("name: " + "[" * 20_000 + "]" * 20_000 + "\n")
    write_workflow(tmp_path / "wf_huge.yaml", scenes=[str(huge)], model=str(base / "model"))
    big = "1,000,000 x 1,000,000 px (1,000,000,000,000 pixels), more than the limit of 10,000,000,000"
    cases = [
        (["predict", "--model", base / "model", huge, "--out", "m.tif"], f"{huge}: declares {big}"),
        (["areas", huge, "--districts", "d.gpkg", "--name-field", "district", "--out", "a.csv"], big),
        (["polygonize", huge, "--out", "f.gpkg"], big),
        (["stack", "s.tif", huge], big),
        (["run", "wf_huge.yaml"], f"wf_huge.yaml: key 'scenes[0]': {huge}: declares {big}"),
        (["run", "bomb.yaml"], "found the alias *a0, and aliases are not accepted"),
        (["run", "deep.yaml"], f"nested deeper than {MAX_DEPTH} levels"),
        (["polygonize", base / "mask.tif", "--out", "f.gpkg", "--classes", "classes.yaml"],
         "found the alias *a0, and aliases are not accepted"),
    ]
    for args, part in cases:
        code, lines, mb = _run_measured(args, tmp_path)
        assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (args, lines)
        assert part in lines[0], (args, lines[0])
        assert mb < 300, (args, mb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml", "classes.yaml", "d.gpkg", "deep.yaml",
                                                          "huge.vrt", "wf_huge.yaml"]


def test_repeated_yaml_keys_are_refused(tmp_path):  # type: ignore[no-untyped-def]
    write_workflow(tmp_path / "wf.yaml")
    text = (tmp_path / "wf.yaml").read_text()
    (tmp_path / "wf.yaml").write_text(text + "tile: 128\n")
    with pytest.raises(ConfigError, match=r"wf\.yaml: YAML syntax error at line \d+, column 1: the key 'tile' appears "
                                          r"twice \(first at line \d+\); keep one of them"):
        load_workflow(tmp_path / "wf.yaml", check_inputs=False)
    (tmp_path / "c.yaml").write_text(default_classes().to_yaml().replace("classes:", "classes: []\nclasses:", 1))
    with pytest.raises(ClassFileError, match="the key 'classes' appears twice"):
        load_classes(tmp_path / "c.yaml")


# ------------------------------------------------------------------ 6-7. values refused, and refused when the workflow loads


@pytest.fixture
def project(base, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "scene.tif").symlink_to(base / "scene.tif")
    (tmp_path / "model").symlink_to(base / "model")
    write_districts(tmp_path / "far.gpkg", 700000, (699000, 3418000, 701500, 3421000))
    write_districts(tmp_path / "near.gpkg", 561000, (560000, 3417440, 562560, 3420000))
    return tmp_path


@pytest.mark.parametrize("overrides, key, message", [
    ({"overlap": -8}, "overlap", "must be at least 0, found -8"),
    ({"cluster": {"memory_limit": "lots"}}, "cluster.memory_limit",
     "'lots' is not a size; use auto, a size such as 4GB or 4GiB, bytes, or a fraction of the machine's memory"),
    ({"cluster": {"memory_limit": "-2GB"}}, "cluster.memory_limit", "expected a positive size"),
    ({"outputs": {"min_area_ha": -1, "district_areas": False}}, "outputs.min_area_ha",
     "-1.0; expected 0 (no sieving) or a positive area in hectares"),
    ({"outputs": {"exclude_classes": ["backgrond"], "district_areas": False}}, "outputs.exclude_classes",
     "no class named 'backgrond' to exclude; the classes are ['background', 'rice'"),
    ({"districts": {"path": "far.gpkg", "name_field": "district"}, "outputs": {"district_areas": True}},
     "districts.path", "far.gpkg: no district can overlap the scenes (scene.tif spans (560000, 3.41744e+06, 562560, "
                       "3.42e+06), the districts (699000, 3.418e+06, 701500, 3.421e+06) in EPSG:32643)"),
    ({"max_pixels": 1000}, "scenes[0]", "declares 256 x 256 px (65,536 pixels), more than the limit of 1,000"),
])
def test_workflow_values_are_refused_when_it_loads(project, overrides, key, message):  # type: ignore[no-untyped-def]
    """Each of these was accepted (overlap, memory_limit) or found only after inference (the rest)."""
    write_workflow(project / "wf.yaml", **overrides)
    with pytest.raises(ConfigError) as e:
        load_workflow(project / "wf.yaml")
    assert str(e.value).startswith(f"{project / 'wf.yaml'}: key '{key}': "), str(e.value)
    assert message in str(e.value), str(e.value)


def test_workflow_values_that_are_fine_still_load(project):  # type: ignore[no-untyped-def]
    write_workflow(project / "wf.yaml", overlap=0, max_pixels=65_536,
                   cluster={"memory_limit": "1.5GiB"},
                   districts={"path": "near.gpkg", "name_field": "district"},
                   outputs={"exclude_classes": ["background", 6], "min_area_ha": 0, "district_areas": True})
    cfg = load_workflow(project / "wf.yaml")
    assert (cfg.overlap, cfg.max_pixels, cfg.outputs.exclude_classes) == (0, 65_536, ("background", "6"))


def test_cli_values_are_refused_not_replaced(base, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "m.tif"
    line = _one_line(["predict", "--model", base / "model", base / "scene.tif", "--out", out, "--tile", "0"])
    assert "tile size (0, 0) is not divisible by 16" in line
    line = _one_line(["predict", "--model", base / "model", base / "scene.tif", "--out", out, "--batch-size", "-1"])
    assert line == "Error: batch size -1: expected a whole number of tiles per forward pass, at least 1 (e.g. 4)"
    line = _one_line(["polygonize", base / "mask.tif", "--out", tmp_path / "f.gpkg", "--block", "0"])
    assert line == "Error: block is 0; expected an int of at least 16 pixels (e.g. 2048)"
    assert list(tmp_path.iterdir()) == []


def test_polygonize_refuses_class_values_the_table_lacks(base, tmp_path):  # type: ignore[no-untyped-def]
    with rasterio.open(base / "mask.tif") as src:
        a, profile, tags = src.read(1), src.profile, src.tags()
    a[10:50, 10:50] = 9  # 40 x 40 px of 100 m2 of grid: 16.01 ha on the ground, of a class the table does not hold
    profile.update(driver="GTiff")
    with rasterio.open(tmp_path / "m9.tif", "w", **profile) as d:
        d.write(a, 1)
        d.update_tags(**tags)
    line = _one_line(["polygonize", tmp_path / "m9.tif", "--out", tmp_path / "f.gpkg", "--min-area-ha", "0"])
    assert line.startswith(f"Error: {tmp_path / 'm9.tif'}: holds class values 9 (16.01 ha) that are not in the class "
                           f"table (0=background, 1=rice, "), line
    assert not (tmp_path / "f.gpkg").exists()


# ------------------------------------------------------------------ 5. inputs that gave misleading results


def _float_scene(path: Path, base: Path, fill: float) -> Path:
    with rasterio.open(base / "scene.tif") as src:
        a, profile = src.read().astype("float32"), src.profile
    a[:, 100:120, 100:120] = fill
    a[a == 0] = np.nan
    profile.update(dtype="float32", nodata=float("nan"))
    with rasterio.open(path, "w", **profile) as d:
        d.write(a)
    return path


def test_infinite_pixels_are_nodata_not_classes(base, tmp_path):  # type: ignore[no-untyped-def]
    for fill in (np.inf, -np.inf, np.nan):
        img = _float_scene(tmp_path / f"s{fill}.tif", base, fill)
        predict_scene(base / "model", img, tmp_path / f"m{fill}.tif", tile=128)
        with rasterio.open(tmp_path / f"m{fill}.tif") as m:
            mask = m.read(1)
        assert (mask[100:120, 100:120] == 255).all(), fill  # before: +-inf pixels got a class
        assert (mask[:3] == 255).all() and (mask[3:100] != 255).all()


def test_complex_pixels_are_refused(base, tmp_path):  # type: ignore[no-untyped-def]
    with rasterio.open(base / "scene.tif") as src:
        profile = src.profile
    profile.update(dtype="complex64", nodata=None)
    with rasterio.open(tmp_path / "c.tif", "w", **profile) as d:
        d.write(np.ones((4, 256, 256), "complex64"))
    line = _one_line(["predict", "--model", base / "model", tmp_path / "c.tif", "--out", tmp_path / "m.tif"])
    assert line.startswith(f"Error: {tmp_path / 'c.tif'}: holds complex64 pixels; expected real numbers"), line
    assert not (tmp_path / "m.tif").exists()


def test_gdal_complex_types_numpy_lacks_are_refused_too(base, tmp_path):  # type: ignore[no-untyped-def]
    """CInt16 reaches numpy as 'complex_int16' (found by the fuzzer: a TypeError, an internal error)."""
    vrt = _huge_vrt(tmp_path / "c.vrt", base / "scene.tif", size=64)
    vrt.write_text(vrt.read_text().replace('dataType="UInt16"', 'dataType="CInt16"'))
    line = _one_line(["predict", "--model", base / "model", vrt, "--out", tmp_path / "m.tif"])
    assert line.startswith(f"Error: {vrt}: holds complex_int16 pixels; expected real numbers"), line


def test_stacking_gdal_complex_types_into_a_geotiff_is_refused(base, tmp_path):  # type: ignore[no-untyped-def]
    """Found by the fuzzer: ``stack out.tif cint16.vrt`` ended in numpy's TypeError, an internal error."""
    vrt = _huge_vrt(tmp_path / "c.vrt", base / "scene.tif", size=64)
    vrt.write_text(vrt.read_text().replace('dataType="UInt16"', 'dataType="CInt16"'))
    line = _one_line(["stack", tmp_path / "out.tif", vrt])
    assert line.startswith(f"Error: {vrt}: holds complex_int16 pixels, which cannot be copied"), line
    assert "stack into a .vrt instead" in line
    assert not (tmp_path / "out.tif").exists()
    res = CliRunner().invoke(cli, ["stack", str(tmp_path / "out.vrt"), str(vrt)])
    assert res.exit_code == 0 and (tmp_path / "out.vrt").exists(), res.output  # a VRT only references them


def test_predict_publishes_mask_and_confidence_together_or_neither(base, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The confidence COG is finished first; a mask that fails after it took it along only after the fix
    (found by the fuzzer's writes target on a full tmpfs: c.tif left beside no m.tif). The mask's read-back
    is made to fail here, since on this scene the disk fills on the larger confidence first."""

    real = geoseg.io.raster.check_written_raster

    def mask_fails(path, *, target=None, **kw):  # type: ignore[no-untyped-def]
        if target is not None and Path(target).name == "m.tif":
            raise RasterWriteError(f"{target}: the file written does not read back (simulated)")
        return real(path, target=target, **kw)

    monkeypatch.setattr(geoseg.io.raster, "check_written_raster", mask_fails)
    with pytest.raises(RasterWriteError, match="m.tif: the file written does not read back"):
        predict_scene(base / "model", base / "scene.tif", tmp_path / "m.tif", confidence=tmp_path / "c.tif", tile=128)
    assert _left(tmp_path) == []  # before: c.tif
