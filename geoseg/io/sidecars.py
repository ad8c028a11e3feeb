"""The files published beside a class mask so GIS tools show class names: GDAL's ``.aux.xml`` and a QGIS ``.qml``.

A mask COG holds class ids (0..K-1, 255 = nodata) and a colour table. Class names cannot go
inside a GeoTIFF where GDAL looks for them: the GTiff driver keeps category names and raster
attribute tables (RATs) only in its PAM sidecar, ``<file>.aux.xml`` (GDAL's "Persistent
Auxiliary Metadata", read by ``gdalinfo``, QGIS, ArcGIS and every GDAL-based tool). This
module builds that sidecar for band 1, and a QGIS layer style, as text; :class:`geoseg.io.raster.RasterWriter`
publishes them with the COG (sidecars first, see its ``sidecars`` parameter).

What the ``.aux.xml`` holds, in GDAL's PAM schema (``PAMDataset/PAMRasterBand``):

* ``CategoryNames``: one ``Category`` per class, in id order (GDAL's category *i* names
  value *i*); nodata (255) gets no name.
* ``GDALRasterAttributeTable`` (thematic): one row per class with the columns ``value``
  (integer, usage MinMax), ``class`` (string, usage Name), ``red``, ``green``, ``blue``,
  ``alpha`` (integers, usages Red/Green/Blue/Alpha), ``color`` (``#rrggbb``) and ``crop``
  (1 for a crop class, 0 for background, water, built-up ...). Nodata has no row.

Field types and usages are GDAL's ``GDALRATFieldType`` and ``GDALRATFieldUsage`` numbers
(``gdal.h``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from geoseg.classes import ClassTable

__all__ = [
    "aux_xml_path",
    "qml_path",
    "pam_xml",
    "mask_qml",
    "mask_sidecars",
    "sidecar_paths",
]

# GDALRATFieldType
_GFT_INTEGER, _GFT_STRING = 0, 2
# GDALRATFieldUsage
_GFU_GENERIC, _GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE, _GFU_ALPHA = 0, 2, 5, 6, 7, 8, 9

#: The RAT's columns: (name, GDAL field type, GDAL field usage).
RAT_COLUMNS = (
    ("value", _GFT_INTEGER, _GFU_MINMAX),
    ("class", _GFT_STRING, _GFU_NAME),
    ("red", _GFT_INTEGER, _GFU_RED),
    ("green", _GFT_INTEGER, _GFU_GREEN),
    ("blue", _GFT_INTEGER, _GFU_BLUE),
    ("alpha", _GFT_INTEGER, _GFU_ALPHA),
    ("color", _GFT_STRING, _GFU_GENERIC),
    ("crop", _GFT_INTEGER, _GFU_GENERIC),
)


def aux_xml_path(path: str | os.PathLike[str]) -> Path:
    """GDAL's PAM sidecar of ``path``: ``mask.tif`` -> ``mask.tif.aux.xml``.

    >>> aux_xml_path("run/mask.tif")
    PosixPath('run/mask.tif.aux.xml')
    """
    p = Path(path)
    return p.with_name(p.name + ".aux.xml")


def qml_path(path: str | os.PathLike[str]) -> Path:
    """The QGIS style QGIS loads with ``path`` by default: ``mask.tif`` -> ``mask.qml``.

    >>> qml_path("run/mask.tif")
    PosixPath('run/mask.qml')
    """
    return Path(path).with_suffix(".qml")


def _text(parent: ET.Element, tag: str, text: str, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    el.text = text
    return el


def _xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def pam_xml(classes: ClassTable) -> str:
    """The ``.aux.xml`` text naming ``classes`` on band 1: category names and a RAT (see the module notes).

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> xml = pam_xml(default_classes())
    >>> print(xml.splitlines()[3])
          <Category>background</Category>
    >>> xml.count("<Row "), "<F>rice</F>" in xml  # one row per class, none for nodata
    (7, True)
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = ET.SubElement(band, "CategoryNames")
    for c in classes:  # ids run 0..K-1 (ClassTable checks), so category i names value i
        _text(names, "Category", c.name)
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for i, (name, ftype, usage) in enumerate(RAT_COLUMNS):
        field = ET.SubElement(rat, "FieldDefn", index=str(i))
        _text(field, "Name", name)
        _text(field, "Type", str(ftype))
        _text(field, "Usage", str(usage))
    for c in classes:
        row = ET.SubElement(rat, "Row", index=str(c.id))
        for value in (c.id, c.name, *c.rgb, 255, c.color.lower(), int(c.crop)):
            _text(row, "F", str(value))
    return _xml(root)


def mask_qml(classes: ClassTable, band: int = 1) -> str:
    """A QGIS layer style (QML) for a mask: a paletted renderer, each class value in its colour with its name.

    Nodata (255) is transparent through the raster's nodata value, so it has no entry.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> qml = mask_qml(default_classes())
    >>> '<rasterrenderer type="paletted" band="1"' in qml, 'label="rice"' in qml
    (True, True)
    """
    root = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band=str(band), opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(palette, "paletteEntry", value=str(c.id), color=c.color.lower(), alpha="255", label=c.name)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    _text(pipe, "resamplingStage", "resamplingFilter")
    _text(root, "blendMode", "0")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _xml(root)


def sidecar_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The sidecars a mask at ``path`` is published with (:func:`aux_xml_path`, :func:`qml_path`)."""
    return (aux_xml_path(path), qml_path(path))


def mask_sidecars(path: str | os.PathLike[str], classes: ClassTable) -> dict[Path, str]:
    """The sidecar files of the mask at ``path``: ``{<path>.aux.xml: PAM, <stem>.qml: QGIS style}``.

    >>> from geoseg.classes import default_classes
    >>> sorted(p.name for p in mask_sidecars("run/mask.tif", default_classes()))
    ['mask.qml', 'mask.tif.aux.xml']
    """
    return {aux_xml_path(path): pam_xml(classes), qml_path(path): mask_qml(classes)}
