"""Sentinel-2 L2A SAFE products (a ``.SAFE`` folder, a ``.zip`` of one, or its ``MTD_MSIL2A.xml``)
as :class:`~geoseg.io.imagery.Scene` records.

The product metadata ``MTD_MSIL2A.xml`` says everything needed: the sensing start, the
spacecraft and relative orbit, the processing baseline, ``BOA_QUANTIFICATION_VALUE`` and - from
baseline 04.00 on - ``BOA_ADD_OFFSET`` per band (reflectance = (DN + offset) / quantification);
its ``IMAGE_FILE`` entries name the JPEG 2000 files under ``GRANULE/*/IMG_DATA/R10m|R20m|R60m``.
Each band is read at its finest resolution (B05 from R20m, not R60m) and the SCL at 20 m.
A product of baseline 04.00 or later without its offsets is refused rather than guessed.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from geoseg.errors import SeasonError, SourceReadError
from geoseg.io.imagery import OFFSET_BASELINE, S2_BANDS, Asset, Scene, parse_baseline

__all__ = ["is_safe", "read_safe"]

# The band_id order of the L2A product metadata (ESA's PSD): 0 = B01 ... 12 = B12.
_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
_IMAGE = re.compile(r"_(B\d{2}|B8A|SCL)_(\d{2})m$")


def is_safe(path: str | os.PathLike[str]) -> bool:
    """True for a ``.SAFE`` folder, a zip of one, or a product's ``MTD_MSIL2A.xml``."""
    p = Path(path)
    name = p.name.upper()
    return (name.endswith(".SAFE") and p.is_dir()) or (name.endswith(".ZIP") and p.is_file()) or \
        name == "MTD_MSIL2A.XML"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if _local(e.tag) == name]


def _text(root: ET.Element, name: str) -> str | None:
    found = _find(root, name)
    return found[0].text.strip() if found and found[0].text else None


def _open_product(path: Path) -> tuple[bytes, str, set[str] | None, str]:
    """``(MTD_MSIL2A.xml bytes, GDAL prefix of the product folder, names in a zip or None, label)``."""
    if path.name.upper() == "MTD_MSIL2A.XML":
        return path.read_bytes(), str(path.parent.resolve()), None, str(path)
    if path.is_dir():
        mtd = path / "MTD_MSIL2A.xml"
        if not mtd.exists():
            raise SourceReadError(f"{path}: no MTD_MSIL2A.xml in the folder; expected a Sentinel-2 L2A SAFE product "
                                  f"(Level-1C products hold top-of-atmosphere reflectance and are not supported)")
        return mtd.read_bytes(), str(path.resolve()), None, str(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            mtds = [n for n in names if n.upper().endswith("MTD_MSIL2A.XML") and n.count("/") <= 1]
            if not mtds:
                raise SourceReadError(f"{path}: the zip holds no <product>.SAFE/MTD_MSIL2A.xml; expected a zipped "
                                      f"Sentinel-2 L2A SAFE product")
            data = z.read(mtds[0])
    except zipfile.BadZipFile as e:
        raise SourceReadError(f"{path}: not a readable zip file ({e}); download the product again") from None
    folder = mtds[0].rsplit("/", 1)[0] if "/" in mtds[0] else ""
    prefix = f"/vsizip/{path.resolve()}" + (f"/{folder}" if folder else "")
    inner = {n[len(folder) + 1:] if folder else n for n in names}
    return data, prefix, inner, str(path)


def read_safe(path: str | os.PathLike[str]) -> Scene:
    """The :class:`Scene` of one SAFE L2A product."""
    p = Path(path)
    if not p.exists():
        raise SourceReadError(f"{p}: not found; expected a .SAFE folder, a .zip of one or an MTD_MSIL2A.xml")
    data, prefix, inner, label = _open_product(p)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise SourceReadError(f"{label}: MTD_MSIL2A.xml is not valid XML ({e}); the product is damaged - download it "
                              f"again") from None
    start = _text(root, "PRODUCT_START_TIME")
    baseline_text = _text(root, "PROCESSING_BASELINE")
    uri = _text(root, "PRODUCT_URI") or p.name
    if not start:
        raise SourceReadError(f"{label}: MTD_MSIL2A.xml has no PRODUCT_START_TIME; expected a Sentinel-2 L2A product")
    when = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(UTC)
    baseline = parse_baseline(baseline_text)
    if baseline is None:
        raise SeasonError(f"{label}: MTD_MSIL2A.xml gives no readable PROCESSING_BASELINE (found {baseline_text!r}), so "
                          f"whether the -1000 reflectance offset of baseline 04.00 applies is unknown; use the product "
                          f"as delivered by ESA (its metadata complete)")
    quant_text = _text(root, "BOA_QUANTIFICATION_VALUE")
    try:
        quant = float(quant_text) if quant_text else 10000.0
    except ValueError:
        raise SeasonError(f"{label}: BOA_QUANTIFICATION_VALUE is {quant_text!r}; expected a number (10000)") from None
    offsets = {}
    for e in _find(root, "BOA_ADD_OFFSET"):
        try:
            offsets[int(e.get("band_id", "-1"))] = float((e.text or "").strip())
        except ValueError:
            raise SeasonError(f"{label}: BOA_ADD_OFFSET {e.attrib} is {e.text!r}; expected a number (-1000)") from None
    names = {int(e.get("bandId", "-1")): (e.get("physicalBand") or "").upper()
             for e in _find(root, "Spectral_Information") if e.get("bandId") is not None}
    band_of = {i: (names.get(i) or _BAND_IDS[i]) for i in range(len(_BAND_IDS))}
    # physicalBand is written "B1" ... "B8A" ... "B12"; geoseg names bands "B01" ... "B12"
    band_of = {i: (f"B{int(b[1:]):02d}" if b[1:].isdigit() else b) for i, b in band_of.items()}
    if tuple(baseline) >= OFFSET_BASELINE and not offsets:
        raise SeasonError(f"{label}: processing baseline {baseline_text} (04.00 or later) but MTD_MSIL2A.xml has no "
                          f"BOA_ADD_OFFSET_VALUES_LIST, so the reflectance offset is unknown; use the product as "
                          f"delivered by ESA (its metadata complete)")
    offset_by_band = {band_of[i]: v for i, v in offsets.items() if i in band_of}
    files = [e.text.strip() for e in _find(root, "IMAGE_FILE") if e.text]
    best: dict[str, tuple[int, str]] = {}
    for f in files:
        m = _IMAGE.search(f)
        if not m:
            continue
        band, res = m.group(1), int(m.group(2))
        if band not in best or res < best[band][0]:
            best[band] = (res, f)
    assets: dict[str, Asset] = {}
    mask = None
    for band, (res, f) in best.items():
        href = _image_href(prefix, f, inner, label)
        if band == "SCL":
            mask = Asset(href, nodata=0, resolution=float(res))
            continue
        if band not in S2_BANDS:
            continue
        if tuple(baseline) >= OFFSET_BASELINE and band not in offset_by_band:
            raise SeasonError(f"{label}: BOA_ADD_OFFSET_VALUES_LIST has no offset for {band}; expected one per band "
                              f"(band_id 0-12)")
        assets[S2_BANDS[band][0]] = Asset(href, scale=1.0 / quant, offset=offset_by_band.get(band, 0.0) / quant,
                                          nodata=0, resolution=float(res))
    if not assets:
        raise SourceReadError(f"{label}: MTD_MSIL2A.xml lists no band images (IMAGE_FILE ..._B04_10m); the product is "
                              f"incomplete - download it again")
    spacecraft = (_text(root, "SPACECRAFT_NAME") or "").lower()
    tile = re.search(r"_T(\d{2}[A-Z]{3})_", uri)
    return Scene(
        id=uri.removesuffix(".SAFE"), source=label, datetime=when, sensor="sentinel-2", platform=spacecraft,
        assets=assets, mask=mask, mask_kind="scl", orbit=_text(root, "SENSING_ORBIT_NUMBER") or "",
        baseline=f"{baseline[0]:02d}.{baseline[1]:02d}", tile=tile.group(1) if tile else "",
        harmonisation=f"MTD_MSIL2A.xml: baseline {baseline_text}, BOA_QUANTIFICATION_VALUE {quant:g}"
                      + (", BOA_ADD_OFFSET" if offsets else ""),
    )


def _image_href(prefix: str, stem: str, inner: set[str] | None, label: str) -> str:
    for ext in (".jp2", ".tif", ".TIF", ".JP2"):
        rel = stem + ext
        if inner is not None:
            if rel in inner:
                return f"{prefix}/{rel}"
        elif os.path.exists(os.path.join(prefix, rel)):
            return os.path.join(prefix, rel)
    raise SourceReadError(f"{label}: {stem}.jp2, listed in MTD_MSIL2A.xml, is missing; the product is incomplete - "
                          f"download it again")
