"""Folders of per-band image files as :class:`~geoseg.io.imagery.Scene` records.

Two kinds of folder:

* **Landsat Collection 2 Level-2 scenes** as USGS delivers them (``LC09_L2SP_148039_20240615_...
  _SR_B4.TIF``, ``..._QA_PIXEL.TIF``, ``..._MTL.json|xml|txt``): the date, spacecraft, WRS path
  and each band's ``REFLECTANCE_MULT_BAND_n``/``REFLECTANCE_ADD_BAND_n`` come from the MTL file.
* **Sentinel-2 bands as separate GeoTIFF/COG/JP2 files** (``T43RFQ_20240615T053649_B04_10m.tif``,
  ``20240615_B04.tif``, an ``SCL`` file beside them): the date, band and tile come from the
  name; how DN become reflectance must come from the file's own metadata - GDAL band
  scale/offset, or ``BOA_ADD_OFFSET``/``BOA_QUANTIFICATION_VALUE``/``PROCESSING_BASELINE`` tags -
  or from the user (``boa_offset``: the offset in DN of every file, -1000 or 0). A file name
  alone never decides it.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import RasterioIOError

from geoseg.errors import SeasonError, SourceReadError
from geoseg.io.imagery import LANDSAT_BANDS, S2_BANDS, Asset, Scene, parse_baseline, s2_offset_for_baseline

__all__ = ["is_landsat_folder", "read_band_folder", "read_landsat_folder"]

_IMAGE_EXT = (".tif", ".tiff", ".jp2", ".vrt")
_LANDSAT = re.compile(r"^(L[COTEM]0[4-9])_L2S[PR]_(\d{3})(\d{3})_(\d{8})_\d{8}_02_T[12S]_(SR_B\d|QA_PIXEL)\.TIF$", re.IGNORECASE)
_S2_FILE = re.compile(r"(?:^|[_\-.])(B\d{2}|B8A|SCL)(?:_(\d{2})m)?(?=[_\-.]|$)", re.IGNORECASE)
_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?:T\d{6})?(?!\d)")
_TILE = re.compile(r"(?:^|_)T?(\d{2}[C-X][A-Z]{2})(?=_)")
_LANDSAT_ID_TO_COMMON = {v: k for k, v in LANDSAT_BANDS.items()}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXT)


def is_landsat_folder(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` holds Landsat C2 L2 band files (``..._SR_B4.TIF``)."""
    f = Path(folder)
    return f.is_dir() and any(_LANDSAT.match(p.name) for p in f.rglob("*.TIF")) or \
        (f.is_dir() and any(_LANDSAT.match(p.name) for p in f.rglob("*.tif")))


def _mtl_values(path: Path) -> dict[str, str]:
    """Every ``KEY = value`` of an MTL file (JSON, XML or the text ODL), flat."""
    text = path.read_text(encoding="utf-8", errors="replace")
    out: dict[str, str] = {}
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceReadError(f"{path}: not valid JSON ({e}); expected a Landsat MTL file") from None

        def walk(d: Any) -> None:
            if isinstance(d, dict):
                for k, v in d.items():
                    if isinstance(v, (dict, list)):
                        walk(v)
                    else:
                        out[str(k)] = str(v)
            elif isinstance(d, list):
                for v in d:
                    walk(v)

        walk(doc)
    elif path.suffix.lower() == ".xml":
        for k, v in re.findall(r"<([A-Z0-9_]+)>([^<]*)</\1>", text):
            out[k] = v.strip()
    else:
        for k, v in re.findall(r"^\s*([A-Z0-9_]+)\s*=\s*\"?([^\"\n]*)\"?\s*$", text, re.MULTILINE):
            out[k] = v.strip()
    return out


def read_landsat_folder(folder: str | os.PathLike[str]) -> list[Scene]:
    """Every Landsat C2 L2 scene in ``folder`` (and its sub-folders)."""
    root = Path(folder)
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for p in sorted(root.rglob("*")):
        m = _LANDSAT.match(p.name)
        if m and p.is_file():
            scene_id = p.name[: p.name.upper().rfind("_" + m.group(5).upper())]
            groups[scene_id][m.group(5).upper()] = p
    scenes = []
    for scene_id, files in groups.items():
        any_file = next(iter(files.values()))
        mtls = [any_file.parent / f"{scene_id}_MTL{ext}" for ext in (".json", ".xml", ".txt")]
        mtl = next((m for m in mtls if m.exists()), None)
        if mtl is None:
            raise SeasonError(f"{any_file.parent}: scene {scene_id} has no {scene_id}_MTL.json (or .xml/.txt), which "
                              f"gives its reflectance scale and offset; keep the MTL file beside the band files")
        meta = _mtl_values(mtl)
        m = _LANDSAT.match(any_file.name)
        assert m is not None
        acquired = meta.get("DATE_ACQUIRED") or f"{m.group(4)[:4]}-{m.group(4)[4:6]}-{m.group(4)[6:]}"
        t = meta.get("SCENE_CENTER_TIME", "00:00:00").strip('"').rstrip("Z")[:8]
        when = datetime.fromisoformat(f"{acquired}T{t}").replace(tzinfo=UTC)
        assets = {}
        for band_id, path in files.items():
            if band_id == "QA_PIXEL":
                continue
            n = band_id.removeprefix("SR_B")
            mult, add = meta.get(f"REFLECTANCE_MULT_BAND_{n}"), meta.get(f"REFLECTANCE_ADD_BAND_{n}")
            if mult is None or add is None:
                raise SeasonError(f"{mtl}: no REFLECTANCE_MULT_BAND_{n}/REFLECTANCE_ADD_BAND_{n}; expected the "
                                  f"Level-2 surface reflectance parameters of a Collection 2 Level-2 scene")
            common = _LANDSAT_ID_TO_COMMON.get(band_id)
            if common:
                assets[common] = Asset(str(path), scale=float(mult), offset=float(add), nodata=0, resolution=30.0)
        qa = files.get("QA_PIXEL")
        scenes.append(Scene(
            id=scene_id, source=str(mtl), datetime=when, sensor="landsat",
            platform=meta.get("SPACECRAFT_ID", m.group(1)).lower().replace("_", "-"),
            assets=assets, mask=Asset(str(qa), nodata=1, resolution=30.0) if qa else None, mask_kind="qa_pixel",
            orbit=meta.get("WRS_PATH", m.group(2)).lstrip("0"), tile=f"{m.group(2)}{m.group(3)}",
            harmonisation=f"{mtl.name}: REFLECTANCE_MULT/ADD_BAND_n",
        ))
    return scenes


def _harmonisation_of(path: Path, boa_offset: float | None) -> tuple[float, float, str, str]:
    """``(scale, offset, baseline, how)`` of a Sentinel-2 band file, from its own metadata."""
    try:
        with rasterio.open(path) as src:
            scale, offset = float(src.scales[0]), float(src.offsets[0])
            tags = {k.upper(): v for k, v in src.tags().items()}
            tags.update({k.upper(): v for k, v in src.tags(1).items()})
    except RasterioIOError as e:
        raise SourceReadError(f"{path}: cannot open the band file ({e}); check the file") from None
    baseline = parse_baseline(tags.get("PROCESSING_BASELINE"))
    btext = f"{baseline[0]:02d}.{baseline[1]:02d}" if baseline else ""
    if (scale, offset) != (1.0, 0.0):
        return scale, offset, btext, "GDAL band scale/offset"
    quant = float(tags.get("BOA_QUANTIFICATION_VALUE", 10000) or 10000)
    if "BOA_ADD_OFFSET" in tags:
        return 1.0 / quant, float(tags["BOA_ADD_OFFSET"]) / quant, btext, "BOA_ADD_OFFSET tag"
    if baseline is not None:
        return 1.0 / quant, s2_offset_for_baseline(baseline), btext, "PROCESSING_BASELINE tag"
    if boa_offset is not None:
        return 1e-4, float(boa_offset) / 1e4, btext, f"boa_offset {boa_offset:g} given by the user"
    raise SeasonError(
        f"{path}: nothing says how its numbers become reflectance (no GDAL scale/offset, no BOA_ADD_OFFSET or "
        f"PROCESSING_BASELINE tag), and Sentinel-2 products from processing baseline 04.00 (January 2022) on carry "
        f"a -1000 offset that older ones do not; read the product's STAC item or SAFE folder instead, or state the "
        f"offset of these files (--boa-offset -1000 for baseline 04.00 or later, --boa-offset 0 before)"
    )


def read_band_folder(folder: str | os.PathLike[str], *, boa_offset: float | None = None) -> list[Scene]:
    """Sentinel-2 scenes from a folder of per-band files, one scene per (date, tile)."""
    root = Path(folder)
    groups: dict[tuple[str, str], dict[str, tuple[int, Path]]] = defaultdict(dict)
    for p in _images(root):
        b = _S2_FILE.search(p.stem)
        d = _DATE.search(p.stem)
        if not b or not d:
            continue
        band = b.group(1).upper()
        res = int(b.group(2)) if b.group(2) else 0
        tile = _TILE.search(p.stem)
        key = (f"{d.group(1)}-{d.group(2)}-{d.group(3)}", tile.group(1) if tile else "")
        if band not in groups[key] or res < groups[key][band][0]:
            groups[key][band] = (res, p)
    if not groups:
        raise SourceReadError(f"{root}: no band files named with a date and a band (e.g. 20240615_B04.tif or "
                              f"T43RFQ_20240615T053649_B04_10m.jp2); expected Sentinel-2 per-band files")
    scenes = []
    for (day, tile), files in sorted(groups.items()):
        assets, how, base = {}, set(), ""
        for band, (_, path) in files.items():
            if band == "SCL" or band not in S2_BANDS:
                continue
            scale, offset, btext, h = _harmonisation_of(path, boa_offset)
            base = base or btext
            how.add(h)
            assets[S2_BANDS[band][0]] = Asset(str(path), scale=scale, offset=offset, nodata=0)
        scl = files.get("SCL")
        scenes.append(Scene(
            id=f"{tile + '_' if tile else ''}{day}", source=str(root),
            datetime=datetime.fromisoformat(day).replace(tzinfo=UTC), sensor="sentinel-2", platform="",
            assets=assets, mask=Asset(str(scl[1]), nodata=0) if scl else None, mask_kind="scl", tile=tile,
            baseline=base, harmonisation="; ".join(sorted(how)),
        ))
    return scenes


