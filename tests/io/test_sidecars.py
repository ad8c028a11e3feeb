"""Class names in the rasters: the .aux.xml (GDAL category names and RAT) and the .qml published with
every mask COG, read back through GDAL's own C API (tests/gdal_capi.py), not through geoseg's writer."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geoseg.classes import NODATA, ClassTable, CropClass, default_classes
from geoseg.core.grid import Window as GridWindow
from geoseg.errors import RasterWriteError
from geoseg.io.raster import RasterWriter, confidence_writer, mask_writer, read_mask_classes
from geoseg.io.sidecars import aux_xml_path, mask_qml, pam_xml, qml_path
from tests.gdal_capi import gdal_categories, gdal_rat

TF = Affine(10, 0, 600_000, 0, -10, 3_380_000)

# GDALRATFieldType and GDALRATFieldUsage numbers, from gdal.h
GFT_INTEGER, GFT_STRING = 0, 2
GFU_GENERIC, GFU_NAME, GFU_MINMAX, GFU_RED, GFU_GREEN, GFU_BLUE, GFU_ALPHA = 0, 2, 5, 6, 7, 8, 9


def _write_mask(path, classes, h=700, w=600):  # type: ignore[no-untyped-def]
    arr = (np.arange(h * w).reshape(h, w) % (len(classes) + 1)).astype("uint8")
    arr[arr == len(classes)] = NODATA
    with mask_writer(path, shape=(h, w), transform=TF, crs="EPSG:32643", classes=classes) as wr:
        wr.write(arr, GridWindow(0, 0, w, h))
    return arr


def _odd_classes() -> ClassTable:
    """Names XML and GDAL must carry unchanged: markup characters, accents, spaces."""
    return ClassTable((CropClass(0, "bare & built <up>", "#000000", crop=False), CropClass(1, "maïs \"doux\"", "#ff8000"),
                       CropClass(2, "rice 'kharif'", "#00AA11")))


def test_gdal_reads_category_names_and_rat_of_a_mask(tmp_path):  # type: ignore[no-untyped-def]
    classes = default_classes()
    path = tmp_path / "mask.tif"
    _write_mask(path, classes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.qml", "mask.tif", "mask.tif.aux.xml"]
    assert gdal_categories(path) == classes.names  # category i names value i; nothing for 255
    rat = gdal_rat(path)
    assert rat is not None
    assert rat.columns == ["value", "class", "red", "green", "blue", "alpha", "color", "crop"]
    assert rat.types == [GFT_INTEGER, GFT_STRING] + [GFT_INTEGER] * 4 + [GFT_STRING, GFT_INTEGER]
    assert rat.usages == [GFU_MINMAX, GFU_NAME, GFU_RED, GFU_GREEN, GFU_BLUE, GFU_ALPHA, GFU_GENERIC, GFU_GENERIC]
    assert rat.rows == [[str(c.id), c.name, *map(str, c.rgb), "255", c.color.lower(), str(int(c.crop))] for c in classes]
    assert rat.rows[0][1:3] == ["background", "189"] and rat.rows[0][-1] == "0"  # background: grey, not a crop
    # GDAL maps each class value to its row, and nodata to none
    assert [rat.row_of_value[v] for v in range(len(classes))] == list(range(len(classes)))
    assert rat.row_of_value[NODATA] == -1
    # the colour table, nodata and the GEOSEG_CLASSES tag are kept
    with rasterio.open(path) as src:
        assert src.colormap(1)[1] == (*classes[1].rgb, 255) and src.colormap(1)[NODATA] == (0, 0, 0, 0)
        assert src.nodata == NODATA
        assert str(aux_xml_path(path)) in src.files
    assert read_mask_classes(path) == classes


def test_names_with_markup_and_accents_reach_gdal_unchanged(tmp_path):  # type: ignore[no-untyped-def]
    classes = _odd_classes()
    path = tmp_path / "m.tif"
    _write_mask(path, classes, 40, 30)
    assert gdal_categories(path) == ["bare & built <up>", "maïs \"doux\"", "rice 'kharif'"]
    rat = gdal_rat(path)
    assert rat is not None and [r[1] for r in rat.rows] == classes.names
    assert [r[6] for r in rat.rows] == ["#000000", "#ff8000", "#00aa11"]
    assert [r[2:5] for r in rat.rows][2] == ["0", "170", "17"]
    root = ET.parse(qml_path(path)).getroot()
    assert [e.get("label") for e in root.iter("paletteEntry")] == classes.names


def test_qml_is_a_paletted_style_with_every_class(tmp_path):  # type: ignore[no-untyped-def]
    classes = default_classes()
    path = tmp_path / "mask.tif"
    _write_mask(path, classes, 40, 30)
    text = qml_path(path).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    (renderer,) = root.findall("./pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("./colorPalette/paletteEntry")
    got = {int(e.get("value", "-1")): (e.get("label"), e.get("color"), e.get("alpha")) for e in entries}
    assert got == {c.id: (c.name, c.color.lower(), "255") for c in classes}  # nodata 255 has no entry
    assert len(entries) == len(classes)


def test_overwriting_a_mask_replaces_its_sidecars(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "mask.tif"
    _write_mask(path, default_classes(), 40, 30)
    _write_mask(path, _odd_classes(), 40, 30)
    assert gdal_categories(path) == _odd_classes().names
    rat = gdal_rat(path)
    assert rat is not None and len(rat.rows) == 3
    assert len(list(ET.parse(qml_path(path)).getroot().iter("paletteEntry"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.qml", "mask.tif", "mask.tif.aux.xml"]


def test_a_failed_write_keeps_the_old_mask_and_its_sidecars(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "mask.tif"
    _write_mask(path, default_classes(), 40, 30)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ZeroDivisionError):
        with mask_writer(path, shape=(40, 30), transform=TF, crs="EPSG:32643", classes=_odd_classes()):
            1 / 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert gdal_categories(path) == default_classes().names


def test_a_failed_first_write_leaves_no_sidecar(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(RasterWriteError, match="outside the raster|failed"):
        with mask_writer(tmp_path / "m.tif", shape=(20, 20), transform=TF, crs="EPSG:32643",
                         classes=default_classes()) as wr:
            wr.write(np.zeros((30, 30), "uint8"), GridWindow(0, 0, 30, 30))
    assert list(tmp_path.iterdir()) == []


def test_a_raster_written_over_a_mask_drops_the_stale_category_names(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "x.tif"
    _write_mask(path, default_classes(), 40, 30)
    with confidence_writer(path, shape=(40, 30), transform=TF, crs="EPSG:32643") as wr:
        wr.write(np.full((40, 30), 200, "uint8"), GridWindow(0, 0, 30, 40))
    assert not aux_xml_path(path).exists()
    assert gdal_categories(path) == [] and gdal_rat(path) is None
    with rasterio.open(path) as src:
        assert src.scales == (1 / 255,)


def test_plain_writer_sidecars_are_published_with_the_raster(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.tif"
    side = tmp_path / "r.txt"
    with RasterWriter(path, shape=(8, 8), transform=TF, crs="EPSG:32643", sidecars={side: "hello\n"}) as wr:
        assert not side.exists()  # nothing beside the target until the raster is complete
        wr.write(np.ones((8, 8), "uint8"), GridWindow(0, 0, 8, 8))
    assert side.read_text() == "hello\n"


def test_mask_cog_with_its_sidecar_passes_strict_cog_validation(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "mask.tif"
    _write_mask(path, default_classes(), 1100, 900)  # large enough for overviews
    valid, errors, warnings = cog_validate(str(path), strict=True)
    assert (valid, errors, warnings) == (True, [], [])
    with rasterio.open(path) as src:
        assert src.overviews(1)  # a real COG, with overviews


def test_pam_xml_names_are_escaped_and_well_formed() -> None:
    root = ET.fromstring(pam_xml(_odd_classes()))
    assert [c.text for c in root.iter("Category")] == _odd_classes().names
    ET.fromstring(mask_qml(_odd_classes()).split("\n", 1)[1])  # parses


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (gdal-bin) not installed")
def test_gdalinfo_lists_the_categories_and_the_rat(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "mask.tif"
    _write_mask(path, default_classes(), 40, 30)
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True, text=True,
                                     check=True).stdout)
    band = info["bands"][0]
    assert band["categories"] == default_classes().names
    rat = info["rat"]
    assert [f["name"] for f in rat["fieldDefn"]][:2] == ["value", "class"]
    assert [r["f"][1] for r in rat["row"]] == default_classes().names


def test_a_sidecar_that_cannot_be_written_publishes_nothing(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "r.tif"
    with pytest.raises(RasterWriteError, match=r"r\.tif: finishing the output failed .*check free disk space"):
        with RasterWriter(path, shape=(8, 8), transform=TF, crs="EPSG:32643",
                          sidecars={tmp_path / "ok.txt": "a", tmp_path / "no" / "dir.txt": "b"}) as wr:
            wr.write(np.ones((8, 8), "uint8"), GridWindow(0, 0, 8, 8))
    assert list(tmp_path.iterdir()) == []  # neither the raster nor the sidecar written first, nor temporary files
