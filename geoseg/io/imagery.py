"""Optical satellite products as geoseg reads them: one :class:`Scene` per item or product.

Sentinel-2 L2A and Landsat Collection 2 Level-2 reach users in many layouts - STAC items from
Earth Search, the Planetary Computer or the Copernicus Data Space, SAFE products, folders of
per-band files. The readers (:mod:`geoseg.io.stac_items`, :mod:`geoseg.io.safe`,
:mod:`geoseg.io.bandfiles`) turn each of them into the same small record: when it was
acquired, by which platform, and for each band the file GDAL opens with the scale and offset
that turn its digital numbers into surface reflectance - decided from the product's own
metadata, never from a file name - plus its cloud mask (SCL or ``QA_PIXEL``).

Bands are named by their STAC common names (``blue``, ``red``, ``nir``, ``swir16``, ...) so one
request serves both sensors; users may also ask by Sentinel-2 band (``B04``), which is kept as
the output band's name.

:func:`discover` dispatches a source (a path or URL) to its reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from geoseg.errors import SeasonError

__all__ = [
    "COMMON_NAMES",
    "LANDSAT_BANDS",
    "S2_BANDS",
    "Asset",
    "Scene",
    "band_request",
    "look_key",
    "parse_baseline",
    "s2_offset_for_baseline",
]

#: Sentinel-2 MSI bands: common name and native resolution (m).
S2_BANDS: dict[str, tuple[str, int]] = {
    "B01": ("coastal", 60), "B02": ("blue", 10), "B03": ("green", 10), "B04": ("red", 10),
    "B05": ("rededge1", 20), "B06": ("rededge2", 20), "B07": ("rededge3", 20), "B08": ("nir", 10),
    "B8A": ("nir08", 20), "B09": ("nir09", 60), "B11": ("swir16", 20), "B12": ("swir22", 20),
}
#: Landsat 8/9 OLI Collection 2 Level-2 surface reflectance bands by common name.
LANDSAT_BANDS: dict[str, str] = {
    "coastal": "SR_B1", "blue": "SR_B2", "green": "SR_B3", "red": "SR_B4", "nir08": "SR_B5",
    "swir16": "SR_B6", "swir22": "SR_B7",
}
#: Every common name a band request may use.
COMMON_NAMES = tuple(dict.fromkeys([c for c, _ in S2_BANDS.values()] + list(LANDSAT_BANDS)))
_S2_BY_COMMON = {c: b for b, (c, _) in S2_BANDS.items()}
# Landsat has one near-infrared band: a request for Sentinel-2's broad NIR (B08, "nir") takes it.
_LANDSAT_ALIASES = {"nir": "nir08"}

#: Sentinel-2's reflectance offset became -1000 DN with processing baseline 04.00 (25 Jan 2022).
OFFSET_BASELINE = (4, 0)


@dataclass(frozen=True, slots=True)
class Asset:
    """One band of a scene: where GDAL reads it and how its DN become reflectance.

    ``reflectance = DN x scale + offset``; ``nodata`` DN are unobserved. For a cloud-mask
    asset scale and offset are unused.
    """

    href: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = 0
    resolution: float | None = None
    band_index: int = 1


@dataclass(frozen=True, slots=True)
class Scene:
    """One item or product: an acquisition over one tile (or path/row).

    Attributes
    ----------
    id : str
        The item id or product name.
    source : str
        The file (or URL) it was described in, for messages.
    datetime : datetime
        Acquisition time (UTC).
    sensor : str
        ``"sentinel-2"`` or ``"landsat"``.
    platform : str
        ``sentinel-2a``, ``landsat-9``, ... (lower case; ``""`` when unknown).
    assets : dict
        Reflectance bands by common name.
    mask : Asset or None
        The SCL band (Sentinel-2) or ``QA_PIXEL`` (Landsat).
    mask_kind : str
        ``"scl"`` or ``"qa_pixel"``.
    bounds_lonlat : tuple, optional
        The footprint's bounds in degrees, to skip scenes that miss the area.
    crs, bounds : optional
        The scene's own CRS (e.g. ``"EPSG:32643"``) and bounds in it, when known.
    orbit : str
        Relative orbit (Sentinel-2) or WRS path (Landsat): scenes of one pass share it.
    baseline : str
        Sentinel-2 processing baseline (``"05.10"``), ``""`` when not needed or unknown.
    tile : str
        MGRS tile (``"43RFQ"``) or WRS path/row.
    harmonisation : str
        Where the scale and offset came from, for the record.
    """

    id: str
    source: str
    datetime: datetime
    sensor: str
    platform: str
    assets: dict[str, Asset]
    mask: Asset | None
    mask_kind: str
    bounds_lonlat: tuple[float, float, float, float] | None = None
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    orbit: str = ""
    baseline: str = ""
    tile: str = ""
    harmonisation: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def day(self) -> str:
        return self.datetime.date().isoformat()


def look_key(scene: Scene) -> tuple[str, str, str, str]:
    """Scenes with the same key are one look at the ground (one pass of one platform, on one
    day, cut into tiles): they are merged before compositing, so an overlap of two tiles is
    not counted as two observations."""
    return (scene.day, scene.sensor, scene.platform, scene.orbit)


def band_request(bands: Sequence[str] | str | None, sensors: Sequence[str] = ("sentinel-2",)) -> dict[str, str]:
    """Output band names -> common names, for a ``--bands`` request.

    Names are Sentinel-2 bands (``B04``, ``B8A``) or common names (``red``, ``swir16``); the
    output keeps the name asked for. The default is every band the ``sensors`` share at 10
    and 20 m (Sentinel-2's ten; Landsat's six).

    Examples
    --------
    >>> band_request("B04,nir,B8A")
    {'B04': 'red', 'nir': 'nir', 'B8A': 'nir08'}
    >>> band_request(None, ["landsat"])
    {'blue': 'blue', 'green': 'green', 'red': 'red', 'nir08': 'nir08', 'swir16': 'swir16', 'swir22': 'swir22'}
    >>> band_request("B13")
    Traceback (most recent call last):
    ...
    geoseg.errors.SeasonError: band 'B13': expected a Sentinel-2 band (B01-B12, B8A) or a common name (coastal, blue, green, red, rededge1, rededge2, rededge3, nir, nir08, nir09, swir16, swir22)
    """
    if bands is None or (isinstance(bands, str) and not bands.strip()):
        if set(sensors) <= {"sentinel-2"}:
            names = [b for b, (_, res) in S2_BANDS.items() if res <= 20]
        else:
            names = [c for c in LANDSAT_BANDS if c != "coastal"]
        return {n: (S2_BANDS[n][0] if n in S2_BANDS else n) for n in names}
    items = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else [str(b).strip() for b in bands]
    out: dict[str, str] = {}
    for b in items:
        if not b:
            continue
        up = b.upper().replace("B8a", "B8A")
        if re.fullmatch(r"B\d", up):
            up = f"B0{up[1]}"
        if up in S2_BANDS:
            out[up] = S2_BANDS[up][0]
        elif b.lower() in COMMON_NAMES:
            out[b.lower()] = b.lower()
        else:
            raise SeasonError(f"band {b!r}: expected a Sentinel-2 band (B01-B12, B8A) or a common name "
                              f"({', '.join(COMMON_NAMES)})")
    if not out:
        raise SeasonError("bands: none given; name one or more, e.g. --bands B02,B03,B04,B08")
    return out


def sensor_band(sensor: str, common: str) -> str | None:
    """The band a sensor measures for a common name (``B04``, ``SR_B4``), or None."""
    if sensor == "landsat":
        return LANDSAT_BANDS.get(_LANDSAT_ALIASES.get(common, common))
    return _S2_BY_COMMON.get(common)


def landsat_common(common: str) -> str:
    """The Landsat common name serving a request (``nir`` -> ``nir08``)."""
    return _LANDSAT_ALIASES.get(common, common)


def parse_baseline(text: object) -> tuple[int, int] | None:
    """A processing baseline ``"04.00"``/``"5.10"``/``"N0400"`` as ``(major, minor)``, or None.

    Examples
    --------
    >>> parse_baseline("04.00"), parse_baseline("N0510"), parse_baseline("5.1"), parse_baseline("x")
    ((4, 0), (5, 10), (5, 10), None)
    """
    if text is None:
        return None
    s = str(text).strip()
    m = re.fullmatch(r"N?(\d{2})(\d{2})", s) or re.fullmatch(r"0?(\d{1,2})\.(\d{1,2})", s)
    if not m:
        return None
    major, minor = m.group(1), m.group(2)
    return int(major), int(minor.ljust(2, "0")) if "." in s else int(minor)


def s2_offset_for_baseline(baseline: tuple[int, int]) -> float:
    """The L2A reflectance offset of a processing baseline: -0.1 (-1000 DN / 10000) from 04.00 on.

    >>> s2_offset_for_baseline((2, 12)), s2_offset_for_baseline((4, 0))
    (0.0, -0.1)
    """
    return -0.1 if tuple(baseline) >= OFFSET_BASELINE else 0.0


def baseline_from_product_name(name: object) -> tuple[int, int] | None:
    """The ``Nxxyy`` field of an ESA product name given *in metadata* (``s2:product_uri``,
    ``sentinel:product_id``), e.g. ``S2A_MSIL2A_20200714T115221_N0214_R123_T28QCH_...`` -> (2, 14)."""
    if not isinstance(name, str):
        return None
    m = re.search(r"_N(\d{4})_", name)
    return parse_baseline(m.group(1)) if m else None
