"""The synthetic region as real-layout satellite products: a season of Sentinel-2 L2A and
Landsat 8/9 Collection 2 Level-2 acquisitions over the same fields and spectra as ``scene.tif``.

Four layouts, each in its own folder under ``<out>/products/``:

``stac``
    Earth Search ``sentinel-2-c1-l2a``-like: per acquisition a folder
    ``S2A_T43RFP_20240615T053649_L2A/`` of per-band COGs (``B02.tif`` ... ``B12.tif``,
    ``SCL.tif``) and its STAC 1.0.0 item (``S2A_T43RFP_20240615T053649_L2A.json``, asset keys
    ``blue``, ``green``, ``red``, ``nir``, ``rededge1``-``3``, ``nir08``, ``swir16``,
    ``swir22``, ``scl``); ``items.json`` (an ItemCollection), ``collection.json`` and
    ``catalog.json``.
``safe``
    ESA SAFE folders ``S2A_MSIL2A_20240615T053649_N0510_R005_T43RFP_20240615T090000.SAFE/``:
    ``MTD_MSIL2A.xml``, ``GRANULE/L2A_T43RFP_A046919_20240615T054002/MTD_TL.xml`` and
    ``IMG_DATA/R10m/T43RFP_20240615T053649_B02_10m.jp2`` ... (lossless JPEG 2000), ``R20m/``
    (B02-B07, B8A, B11, B12, SCL). No ``R60m/``, ``QI_DATA/``, ``AUX_DATA/``, ``DATASTRIP/``,
    ``manifest.safe``, TCI, AOT or WVP.
``cdse``
    Copernicus Data Space STAC 1.1 items (``<product id>.json``, asset keys ``B04_10m``,
    ``B05_20m``, ``SCL_20m``, ``raster:scale``/``raster:offset`` on each asset, ``proj:code``)
    whose assets are the JP2 files of the ``safe`` layout (``../safe/<product>.SAFE/...``);
    ``cdse`` therefore also writes ``safe``.
``landsat``
    USGS Collection 2 Level-2 folders ``LC09_L2SP_148039_20240618_20240625_02_T1/`` with
    ``..._SR_B2.TIF`` ... ``..._SR_B7.TIF``, ``..._QA_PIXEL.TIF`` (COGs, 30 m), ``..._MTL.json``
    and the landsatlook-like STAC item ``..._SR_stac.json``. No SR_B1, ST_B10, QA_AEROSOL,
    QA_RADSAT, ANG or ``_MTL.txt``/``_MTL.xml``.

Pixels
------
* **Surface reflectance** comes from :func:`geoseg.synth.spectra.product_spectra` (the model of
  ``scene.tif`` for all ten bands on any day), rendered window by window (512 x 512 at 10 m) at
  10 m and quantised as ``scene.tif`` is (``round(reflectance x 10000)``, 1..65535). On a day of
  ``scene.tif`` its four bands reuse ``scene.tif``'s pixel noise, so they equal ``scene.tif``'s
  bands exactly; other days and the six 20 m bands have noise of their own (seeded by day and
  window, so the same day gives the same surface whatever the year or baseline).
* **20 m** (Sentinel-2): same origin as the 10 m grid, ``ceil(size / 2)`` pixels; each value is
  the mean of its 2 x 2 10 m surface DNs (of those inside the region on the last row and
  column of an odd size), rounded half to even; nodata where any of them is in the collar.
* **30 m** (Landsat): same origin, ``ceil(size / 3)`` pixels; surface reflectance is the mean of
  its 3 x 3 10 m surface reflectances (DN / 10000); nodata where any of them is in the collar.
  Landsat windows are 768 x 768 at 10 m (their noise is seeded per Landsat window).
* **Sky**: per acquisition a smooth random cloud field, evaluated at the 20 m (Sentinel-2) or
  30 m (Landsat) pixel centres, so a 10 m pixel is cloudy exactly where its 20 m pixel is.
  Above its threshold (the ``1 - cloud fraction`` quantile over the region) is cloud (opacity
  0.4 at the edge rising to 1; SCL 8 below opacity 0.8, 9 above; bands blended towards bright
  cloud reflectance); a band just below it is thin cirrus (SCL 10, opacity up to 0.15); where
  the same field shifted by (600 m west, 800 m north) is cloud lies cloud shadow (SCL 3,
  surface x 0.35). Clear pixels carry exactly the surface; their SCL is 4 (vegetation, NDVI >
  0.35), 6 (water, NIR < green) or 5 (not vegetated); the collar is SCL 0 with every band 0.
* **Encoding**: Sentinel-2 DN = surface DN + 1000 for processing baseline >= 04.00
  (``BOA_ADD_OFFSET`` -1000), + 0 before; clipped to 1..65535; 0 is nodata. Landsat DN =
  ``round((reflectance + 0.2) / 0.0000275)`` clipped to 1..65535, 0 is nodata.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from geoseg.classes import ClassTable
from geoseg.errors import ConfigError, RasterWriteError
from geoseg.io.labels import iter_blocks
from geoseg.synth.layout import CRS, Layout, Waves
from geoseg.synth.render import BLOCK, At, burn, scene_noise, window_codes
from geoseg.synth.spectra import S2_BANDS, product_spectra, quantise, sub_pixels

__all__ = [
    "LAYOUTS",
    "S2_LAYOUTS",
    "Acquisition",
    "AcquisitionSpec",
    "SynthProducts",
    "ProductOptions",
    "default_baseline",
    "write_products",
]

#: The product layouts :func:`write_products` can write.
LAYOUTS = ("stac", "cdse", "safe", "landsat")
#: The layouts of Sentinel-2 acquisitions.
S2_LAYOUTS = ("stac", "cdse", "safe")

#: Sentinel-2 bands at 10 m, and those of the SAFE's ``R20m`` folder (B08 has none at 20 m; B8A is 20 m only).
S2_10M = ("B02", "B03", "B04", "B08")
S2_20M = ("B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")
#: Native resolution of each band (Earth Search and Planetary Computer keep one file per band).
S2_NATIVE = {b: (10 if b in S2_10M else 20) for b in S2_BANDS}
#: Landsat surface-reflectance bands and the Sentinel-2 band whose spectra they take.
LANDSAT_BANDS = {"SR_B2": "B02", "SR_B3": "B03", "SR_B4": "B04", "SR_B5": "B8A", "SR_B6": "B11", "SR_B7": "B12"}
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-05, -0.2

BOA_QUANTIFICATION_VALUE = 10000
BOA_ADD_OFFSET = -1000
#: The first day of processing baseline 04.00, which added ``BOA_ADD_OFFSET``.
OFFSET_DATE = date(2022, 1, 25)
# The baseline ESA's ground segment used from each date (the default of an acquisition).
_BASELINES = ((date(2021, 6, 30), "03.01"), (OFFSET_DATE, "04.00"), (date(2022, 12, 6), "05.09"),
              (date(2023, 12, 13), "05.10"), (date(2024, 7, 23), "05.11"))

# SCL classes (Sen2Cor)
SCL_NODATA, SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
_SCL_NAMES = ("no_data", "saturated_or_defective", "dark_area_pixels", "cloud_shadows", "vegetation",
              "not_vegetated", "water", "unclassified", "cloud_medium_probability", "cloud_high_probability",
              "thin_cirrus", "snow")

# Sky states of a pixel, and the reflectance of a thick cloud per band (S2_BANDS order)
_CLEAR, _CIRRUS, _CLOUD_MED, _CLOUD_HIGH, _SHADOW = range(5)
_CLOUD_REFL = np.array([0.50, 0.48, 0.47, 0.48, 0.47, 0.47, 0.48, 0.48, 0.38, 0.28], np.float32)
_SHADOW_SHIFT = (600.0, -800.0)  # the cloud casting a pixel's shadow lies this far east and south (m)
_SHADOW_GAIN = np.float32(0.35)
_CIRRUS_BAND = 0.25  # width of the thin-cirrus band below the cloud threshold (field units)

_S2_TIME = "053649"  # sensing time (UTC) of every Sentinel-2 acquisition: a descending pass at ~11:07 IST
_S2_DATASTRIP_TIME = "054002"
_S2_ORBIT = 5  # relative orbit
_LANDSAT_TIME = "05:27:41.5318940Z"
_WRS = ("148", "039")  # WRS-2 path and row over Punjab
_LANDSAT_BLOCK = 768  # 10 m pixels per Landsat window (256 at 30 m)

# Earth Search asset keys, common names, centre wavelengths and bandwidths (um)
_BAND_INFO = {
    "B02": ("blue", "Blue (band 2)", 0.49, 0.098),
    "B03": ("green", "Green (band 3)", 0.56, 0.045),
    "B04": ("red", "Red (band 4)", 0.665, 0.038),
    "B05": ("rededge1", "Red edge 1 (band 5)", 0.704, 0.019),
    "B06": ("rededge2", "Red edge 2 (band 6)", 0.74, 0.018),
    "B07": ("rededge3", "Red edge 3 (band 7)", 0.783, 0.028),
    "B08": ("nir", "NIR 1 (band 8)", 0.842, 0.145),
    "B8A": ("nir08", "NIR 2 (band 8A)", 0.865, 0.033),
    "B11": ("swir16", "SWIR 1 (band 11)", 1.61, 0.143),
    "B12": ("swir22", "SWIR 2 (band 12)", 2.19, 0.242),
}
# Sentinel-2 bandId (MTD_MSIL2A.xml), physical band, resolution, wavelength min/max/centre (nm)
_SPECTRAL = (("B1", 60, 411, 456, 442.3), ("B2", 10, 456, 532, 492.3), ("B3", 10, 536, 582, 559),
             ("B4", 10, 646, 685, 665), ("B5", 20, 694, 714, 703.8), ("B6", 20, 730, 748, 739.1),
             ("B7", 20, 766, 794, 779.7), ("B8", 10, 774, 907, 833), ("B8A", 20, 848, 880, 864),
             ("B9", 60, 930, 957, 943.2), ("B10", 60, 1339, 1415, 1376.9), ("B11", 20, 1538, 1679, 1610.4),
             ("B12", 20, 2065, 2303, 2185.7))
_LANDSAT_INFO = {
    "SR_B2": ("blue", "Blue Band (B2)", "B2", 0.48), "SR_B3": ("green", "Green Band (B3)", "B3", 0.56),
    "SR_B4": ("red", "Red Band (B4)", "B4", 0.65), "SR_B5": ("nir08", "Near Infrared Band 0.8 (B5)", "B5", 0.86),
    "SR_B6": ("swir16", "Short-wave Infrared Band 1.6 (B6)", "B6", 1.6),
    "SR_B7": ("swir22", "Short-wave Infrared Band 2.2 (B7)", "B7", 2.2),
}
# QA_PIXEL bits (Collection 2) and the low-confidence background of every clear pixel
_QA_FILL, _QA_DILATED, _QA_CIRRUS, _QA_CLOUD, _QA_SHADOW, _QA_SNOW, _QA_CLEAR, _QA_WATER = (1 << b for b in range(8))
_QA_LOW = (1 << 8) | (1 << 10) | (1 << 12) | (1 << 14)  # cloud, shadow, snow, cirrus confidence: low (01)

_STAC_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
}
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


# --- what the caller asks for ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AcquisitionSpec:
    """One acquisition asked for explicitly (every field but ``date`` optional).

    Attributes
    ----------
    date : str or datetime.date
        The acquisition date (ISO ``YYYY-MM-DD``).
    platform : str, optional
        ``sentinel-2a``, ``sentinel-2b`` (default: alternating), ``landsat-8`` or ``landsat-9``.
    baseline : str, optional
        Sentinel-2 processing baseline ``NN.NN`` (default: :func:`default_baseline` of the date).
    cloud_fraction : float, optional
        Fraction of the region under cloud, 0..0.95 (default: drawn from the season).
    """

    date: str | date
    platform: str | None = None
    baseline: str | None = None
    cloud_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class ProductOptions:
    """The checked product arguments of :func:`geoseg.synth.synthesize` (see there)."""

    layouts: tuple[str, ...]
    acquisitions: tuple[AcquisitionSpec, ...] | int = 25
    spacing: int = 10
    cloudiness: float = 1.0
    overcast: tuple[date, date] | None = None

    @classmethod
    def make(cls, products: Any, acquisitions: Any = 25, spacing: Any = 10, cloudiness: Any = 1.0,
             overcast: Any = None) -> "ProductOptions | None":
        """Check and normalise the arguments; ``None`` when no product is asked for."""
        if products is None or products == () or products == "":
            return None
        names = [p.strip() for p in products.split(",")] if isinstance(products, str) else list(products)
        bad = [p for p in names if p not in LAYOUTS]
        if bad or not names:
            raise ConfigError(f"products: unknown layout {', '.join(map(repr, bad)) or '(none)'}; "
                              f"expected one or more of {', '.join(LAYOUTS)} (e.g. products='stac,safe')")
        if "cdse" in names and "safe" not in names:
            names.append("safe")  # CDSE items describe the JP2 files of the SAFE products
        layouts = tuple(p for p in LAYOUTS if p in names)
        if isinstance(acquisitions, bool) or not isinstance(acquisitions, (int, np.integer, list, tuple)):
            raise ConfigError(f"acquisitions must be a count (1..200) or a list of AcquisitionSpec, got "
                              f"{acquisitions!r}; pass e.g. 25")
        if isinstance(acquisitions, (int, np.integer)):
            if not 1 <= int(acquisitions) <= 200:
                raise ConfigError(f"acquisitions must be 1..200, got {acquisitions}; pass e.g. 25 (every "
                                  f"{spacing} days from the season start)")
            acqs: tuple[AcquisitionSpec, ...] | int = int(acquisitions)
        else:
            acqs = tuple(_spec(a) for a in acquisitions)
            if not acqs:
                raise ConfigError("acquisitions is an empty list; pass a count such as 25 or one AcquisitionSpec "
                                  "or more")
        if isinstance(spacing, bool) or not isinstance(spacing, (int, np.integer)) or not 1 <= spacing <= 60:
            raise ConfigError(f"spacing must be 1..60 days, got {spacing!r}; pass e.g. 5 (Sentinel-2A and 2B "
                              f"together) or 10")
        if isinstance(cloudiness, bool) or not isinstance(cloudiness, (int, float, np.floating)) or not (
                0 <= float(cloudiness) <= 3):
            raise ConfigError(f"cloudiness must be a number in [0, 3], got {cloudiness!r}; 0 for clear skies, "
                              f"1 (default) for a Punjab monsoon, 2 for a wet year")
        return cls(layouts, acqs, int(spacing), float(cloudiness), _overcast(overcast))


def _iso_date(value: Any, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be an ISO date YYYY-MM-DD, got {value!r}; e.g. '2024-08-01'") from None


def _overcast(value: Any) -> tuple[date, date] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split("/")
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(parts) != 2:
        raise ConfigError(f"overcast must be a period 'START/END' (ISO dates), got {value!r}; "
                          f"e.g. '2024-08-01/2024-08-31'")
    a, b = (_iso_date(p, "overcast") for p in parts)
    if b < a:
        raise ConfigError(f"overcast ends ({b}) before it starts ({a}); pass 'START/END' with START <= END")
    return a, b


def _spec(a: Any) -> AcquisitionSpec:
    if isinstance(a, AcquisitionSpec):
        spec = a
    elif isinstance(a, Mapping):
        unknown = set(a) - {"date", "platform", "baseline", "cloud_fraction"}
        if unknown or "date" not in a:
            raise ConfigError(f"acquisition {dict(a)!r}: expected keys date (required), platform, baseline, "
                              f"cloud_fraction; got {sorted(a)}")
        spec = AcquisitionSpec(**a)
    elif isinstance(a, (str, date)):
        spec = AcquisitionSpec(a)
    else:
        raise ConfigError(f"acquisition {a!r}: expected an AcquisitionSpec, a mapping or an ISO date")
    d = _iso_date(spec.date, "acquisition date")
    platforms = ("sentinel-2a", "sentinel-2b", "landsat-8", "landsat-9")
    if spec.platform is not None and spec.platform not in platforms:
        raise ConfigError(f"acquisition {d}: platform {spec.platform!r} is not one of {', '.join(platforms)}")
    if spec.baseline is not None:
        ok = isinstance(spec.baseline, str) and len(spec.baseline) == 5 and spec.baseline[2] == "." and (
            spec.baseline.replace(".", "").isdigit())
        if not ok:
            raise ConfigError(f"acquisition {d}: baseline {spec.baseline!r} is not a processing baseline "
                              f"NN.NN; e.g. '03.01' (before 2022-01-25) or '05.10'")
        if spec.platform in ("landsat-8", "landsat-9"):
            raise ConfigError(f"acquisition {d}: a Landsat acquisition has no Sentinel-2 baseline "
                              f"({spec.baseline!r}); leave baseline out")
    if spec.cloud_fraction is not None:
        cf = spec.cloud_fraction
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0 <= cf <= 0.95:
            raise ConfigError(f"acquisition {d}: cloud_fraction must be in [0, 0.95], got {cf!r}")
    return AcquisitionSpec(d, spec.platform, spec.baseline, None if spec.cloud_fraction is None
                           else float(spec.cloud_fraction))


def default_baseline(day: date) -> str:
    """The processing baseline ESA's ground segment used on ``day`` (before 2021-06-30: '02.14').

    Examples
    --------
    >>> default_baseline(date(2021, 11, 1)), default_baseline(date(2022, 1, 25)), default_baseline(date(2024, 8, 1))
    ('03.01', '04.00', '05.11')
    """
    out = "02.14"
    for start, baseline in _BASELINES:
        if day >= start:
            out = baseline
    return out


def _has_offset(baseline: str) -> bool:
    return float(baseline) >= 4.0


# --- the result ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Acquisition:
    """One acquisition of :class:`SynthProducts`, in every layout it was written in.

    Attributes
    ----------
    index : int
        Its position in :attr:`SynthProducts.acquisitions` (date order).
    id : str
        The product id: ``S2A_MSIL2A_20240615T053649_N0510_R005_T43RFP_20240615T090000`` (the
        SAFE's name and the CDSE item id; the Earth Search item id is in :attr:`item_ids`) or
        ``LC09_L2SP_148039_20240618_20240625_02_T1``.
    date : str
        ISO date of the acquisition; :attr:`datetime` the sensing time (UTC, ISO with ``Z``).
    day : int
        Days after the season start (what the spectra are a function of).
    platform : str
        ``sentinel-2a``, ``sentinel-2b``, ``landsat-8`` or ``landsat-9``.
    baseline : str or None
        Sentinel-2 processing baseline (``"05.10"``); None for Landsat.
    cloud_fraction : float
        The fraction of the region asked to be under cloud (before cirrus and shadows).
    cloud_cover : float
        Percent of the valid pixels that are cloud or cirrus (SCL 8, 9, 10; QA cloud or
        dilated cloud), as written in the metadata.
    overcast : bool
        Whether the persistent overcast of :class:`ProductOptions` covers part of it.
    item_ids : dict
        Layout -> STAC item id (``stac``: ``S2A_T43RFP_20240615T053649_L2A``).
    paths : dict
        Layout -> the product's main file: the STAC item JSON (``stac``, ``cdse``,
        ``landsat``: the ``_SR_stac.json``) or the ``.SAFE`` folder (``safe``).
    bands : dict
        Layout -> band key -> file (``"B04"``, ``"SCL"``; ``safe``/``cdse``: ``"B04_10m"``,
        ``"B04_20m"``, ``"SCL_20m"``; ``landsat``: ``"SR_B4"``, ``"QA_PIXEL"``).
    """

    index: int
    id: str
    date: str
    datetime: str
    day: int
    platform: str
    baseline: str | None
    cloud_fraction: float
    cloud_cover: float
    overcast: bool
    item_ids: Mapping[str, str]
    paths: Mapping[str, Path]
    bands: Mapping[str, Mapping[str, Path]]

    @property
    def sensor(self) -> str:
        """``"sentinel-2"`` or ``"landsat"``."""
        return "landsat" if self.platform.startswith("landsat") else "sentinel-2"

    @property
    def offset(self) -> int:
        """What was added to ``round(reflectance x 10000)`` to make a Sentinel-2 DN: 1000 from baseline 04.00, else 0."""
        return -BOA_ADD_OFFSET if self.baseline is not None and _has_offset(self.baseline) else 0


@dataclass(frozen=True, slots=True, eq=False)
class SynthProducts:
    """What :func:`write_products` wrote, and the truth of every acquisition's clear surface.

    Attributes
    ----------
    out_dir : Path
        ``<region>/products``; each layout in a folder of its name.
    layouts : tuple of str
        The layouts written (``cdse`` brings ``safe``).
    acquisitions : tuple of Acquisition
        Sentinel-2 then Landsat, each in date order.
    season_start : str
        ISO date of day 0 of the spectra.
    transform, shape, crs
        The 10 m grid (``scene.tif``'s); :meth:`grid` gives the 20 m and 30 m ones.
    mgrs_tile : str
        The MGRS tile of the region's centre (``43RFP`` by default).
    """

    out_dir: Path
    layouts: tuple[str, ...]
    acquisitions: tuple[Acquisition, ...]
    season_start: str
    transform: Affine
    shape: tuple[int, int]
    crs: str
    mgrs_tile: str
    _render: "_Renderer" = field(repr=False)

    def __getitem__(self, key: int | str) -> Acquisition:
        """An acquisition by index, product id, item id or ISO date (the first that day)."""
        if isinstance(key, (int, np.integer)):
            return self.acquisitions[int(key)]
        for a in self.acquisitions:
            if key == a.id or key in a.item_ids.values():
                return a
        for a in self.acquisitions:
            if key == a.date:
                return a
        raise KeyError(f"no acquisition {key!r}; have {', '.join(a.id for a in self.acquisitions)}")

    def grid(self, resolution: int) -> tuple[Affine, tuple[int, int]]:
        """The ``(transform, (height, width))`` of the 10, 20 or 30 m grid: same origin, ``ceil`` size."""
        return _grid(self.transform, self.shape, resolution)

    def surface(self, acquisition: int | str | Acquisition, band: str, window: Window | None = None,
                resolution: int | None = None) -> np.ndarray:
        """The true clear-sky surface reflectance of one band of an acquisition, float32 (NaN = nodata).

        This is what a product holds where its SCL (QA_PIXEL) says clear, after applying the
        product's own scale and offset: for Sentinel-2 exactly ``(DN + BOA_ADD_OFFSET) /
        10000`` (from baseline 04.00; ``DN / 10000`` before), for Landsat within half a DN
        (``DN x 0.0000275 - 0.2``). It is rendered independently of the files (the same
        functions, window by window), so tests can compare readers' composites with it.

        Parameters
        ----------
        acquisition : int, str or Acquisition
            Index, id or ISO date (see :meth:`__getitem__`).
        band : str
            Sentinel-2: ``B02`` ... ``B12`` (:data:`geoseg.synth.spectra.S2_BANDS`); Landsat:
            ``SR_B2`` ... ``SR_B7``.
        window : rasterio.windows.Window, optional
            A window of the band's grid (default: all of it).
        resolution : int, optional
            10 or 20 for Sentinel-2 (default: the band's native one; B02-B04 exist at both, B08
            at 10 m only), 30 for Landsat.
        """
        acq = acquisition if isinstance(acquisition, Acquisition) else self[acquisition]
        if acq.sensor == "landsat":
            if band not in LANDSAT_BANDS or resolution not in (None, 30):
                raise ConfigError(f"surface: {acq.id} is a Landsat acquisition: band must be one of "
                                  f"{', '.join(LANDSAT_BANDS)} at 30 m, got {band!r} at {resolution!r}")
            res = 30
        else:
            if band not in S2_BANDS:
                raise ConfigError(f"surface: band {band!r} is not a Sentinel-2 band; expected one of "
                                  f"{', '.join(S2_BANDS)}")
            res = resolution if resolution is not None else S2_NATIVE[band]
            if res not in (10, 20) or (res == 10 and band not in S2_10M) or (res == 20 and band == "B08"):
                raise ConfigError(f"surface: {band} has no {res} m grid; B02, B03, B04 exist at 10 and 20 m, "
                                  f"B08 at 10 m, the others at 20 m")
        _, (gh, gw) = self.grid(res)
        win = window if window is not None else Window(0, 0, gw, gh)
        return self._render.surface(acq, band, res, win)


# --- grids, sky, rendering ---------------------------------------------------------------
def _grid(transform: Affine, shape: tuple[int, int], res: int) -> tuple[Affine, tuple[int, int]]:
    f = res // 10 if res in (10, 20, 30) else 1
    h, w = shape
    return transform @ Affine.scale(f), (-(-h // f), -(-w // f))


@dataclass(frozen=True, slots=True)
class _Sky:
    """An acquisition's clouds: a smooth field and its thresholds (inf: none)."""

    clouds: Waves
    ragged: Waves
    threshold: float
    persistent: Waves | None
    persistent_threshold: float

    def field(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return self.clouds.grid(xs, ys) + np.float32(0.25) * self.ragged.grid(xs, ys)

    def states(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky state (uint8, :data:`_CLEAR` ...) and cloud opacity (float32) at the centres ``ys x xs``."""
        shape = (len(ys), len(xs))
        state = np.full(shape, _CLEAR, np.uint8)
        alpha = np.zeros(shape, np.float32)
        if math.isfinite(self.threshold):
            t = self.field(xs, ys) - np.float32(self.threshold)
            shade = self.field(xs + _SHADOW_SHIFT[0], ys + _SHADOW_SHIFT[1]) > np.float32(self.threshold)
            state[shade] = _SHADOW
            cirrus = (t > -_CIRRUS_BAND) & (t <= 0)
            state[cirrus] = _CIRRUS
            alpha[cirrus] = np.float32(0.15) * (1 + t[cirrus] / np.float32(_CIRRUS_BAND))
            cloud = t > 0
            alpha[cloud] = np.minimum(np.float32(0.4) + np.float32(1.2) * t[cloud], 1)
            state[cloud] = np.where(alpha[cloud] >= 0.8, _CLOUD_HIGH, _CLOUD_MED)
        if self.persistent is not None:
            over = self.persistent.grid(xs, ys) > np.float32(self.persistent_threshold)
            state[over] = _CLOUD_HIGH
            alpha[over] = 1
        return state, alpha


def _observe(surface: np.ndarray, state: np.ndarray, alpha: np.ndarray, cloud_dn: np.ndarray) -> np.ndarray:
    """Top-of-canopy DN (float32, rounded) of ``surface`` (bands, h, w) under the sky: clear pixels unchanged."""
    out = surface.copy()
    shadow = state == _SHADOW
    if shadow.any():
        out[:, shadow] = np.rint(surface[:, shadow] * _SHADOW_GAIN)
    cloudy = (state != _CLEAR) & ~shadow
    if cloudy.any():
        a = alpha[cloudy]
        out[:, cloudy] = np.rint(surface[:, cloudy] * (1 - a) + cloud_dn[:, None] * a)
    np.clip(out, 1, 65535, out=out)
    return out


def _scl(state: np.ndarray, refl: Mapping[str, np.ndarray], nodata: np.ndarray) -> np.ndarray:
    """Sen2Cor-like scene classes (uint8) from the sky states and the surface (B03, B04, B08)."""
    b3, b4, b8 = refl["B03"], refl["B04"], refl["B08"]
    ndvi = (b8 - b4) / np.maximum(b8 + b4, 1)
    scl = np.where(ndvi > 0.35, SCL_VEG, np.where(b8 < b3, SCL_WATER, SCL_NOT_VEG)).astype(np.uint8)
    scl[state == _SHADOW] = SCL_SHADOW
    scl[state == _CIRRUS] = SCL_CIRRUS
    scl[state == _CLOUD_MED] = SCL_CLOUD_MEDIUM
    scl[state == _CLOUD_HIGH] = SCL_CLOUD_HIGH
    scl[nodata] = SCL_NODATA
    return scl


def _qa_pixel(state: np.ndarray, water: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """Landsat Collection 2 QA_PIXEL (uint16) from the sky states."""
    qa = np.full(state.shape, _QA_LOW, np.uint16)
    cloud = (state == _CLOUD_MED) | (state == _CLOUD_HIGH)
    qa[cloud] = (qa[cloud] & ~np.uint16(3 << 8)) | _QA_CLOUD  # cloud bit, confidence below
    qa[state == _CLOUD_MED] |= np.uint16(2 << 8)  # medium
    qa[state == _CLOUD_HIGH] |= np.uint16(3 << 8)  # high
    cirrus = state == _CIRRUS
    qa[cirrus] = (qa[cirrus] & ~np.uint16(3 << 14)) | np.uint16(3 << 14) | _QA_CIRRUS | _QA_DILATED
    shadow = state == _SHADOW
    qa[shadow] = (qa[shadow] & ~np.uint16(3 << 10)) | np.uint16(3 << 10) | _QA_SHADOW
    clear = ~(cloud | cirrus)  # C2: clear = neither cloud nor dilated cloud
    qa[clear] |= _QA_CLEAR
    qa[clear & ~shadow & water] |= _QA_WATER
    qa[nodata] = _QA_FILL
    return qa


def _mean_blocks(x: np.ndarray, f: int, h: int, w: int) -> np.ndarray:
    """Sum of ``f x f`` blocks of ``x`` (..., h, w), padded with zeros to a multiple of ``f``."""
    ph, pw = -(-h // f) * f, -(-w // f) * f
    if (ph, pw) != (h, w):
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph - h), (0, pw - w)])
    out = x[..., 0::f, 0::f].copy()
    for dy in range(f):
        for dx in range(f):
            if dy or dx:
                out += x[..., dy::f, dx::f]
    return out


@dataclass(frozen=True, slots=True)
class _Plan:
    """One acquisition before it is written."""

    index: int
    platform: str
    day_date: date
    day: int
    baseline: str | None
    cloud_fraction: float
    overcast: bool
    sky: _Sky
    spectra_row: int  # row of the acquisition's day in the spectra table

    @property
    def landsat(self) -> bool:
        return self.platform.startswith("landsat")

    @property
    def offset(self) -> int:
        return -BOA_ADD_OFFSET if self.baseline is not None and _has_offset(self.baseline) else 0


@dataclass(frozen=True, slots=True, eq=False)
class _Renderer:
    """Everything needed to render any acquisition's pixels, window by window."""

    seed: int
    transform: Affine
    shape: tuple[int, int]
    layout: Layout
    texture: Waves
    spectra: np.ndarray  # (days x 10 bands, codes)
    scene_days: tuple[int, ...]
    field_tree: Any
    bg_tree: Any
    plans: tuple[_Plan, ...]

    def codes(self, at: At) -> tuple[np.ndarray, np.ndarray]:
        fi, bi = np.sort(self.field_tree.query(at.box)), np.sort(self.bg_tree.query(at.box))
        return window_codes(at, self.layout, fi, bi, self.texture)

    def collar(self, at: At) -> np.ndarray:
        c = self.layout.collar
        if c is None or not shapely.intersects(c, at.box):
            return np.zeros(at.shape, bool)
        return burn([(c, 1)], at.shape, at.transform, 0, "uint8").astype(bool)

    def surface10(self, plan: _Plan, at: At, quads: tuple[np.ndarray, ...], gain: np.ndarray,
                  bands: Sequence[int]) -> np.ndarray:
        """Quantised surface DN (len(bands), h, w) float32 of the S2_BANDS indices ``bands`` in one window.

        Sentinel-2 windows are scene.tif's (:data:`BLOCK`); on a scene date the first four
        bands take scene.tif's noise (the t-th draw of the window's generator).
        """
        h, w = at.shape
        table = self.spectra[10 * plan.spectra_row: 10 * plan.spectra_row + 10]
        out = np.empty((len(bands), h, w), np.float32)
        key = plan.day + 1000
        if plan.landsat:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 23, key, at.i, at.j]))
            noise = rng.standard_normal((len(bands), h, w), dtype=np.float32)
            return quantise(table[list(bands)], quads, gain, noise)
        core = [b for b in bands if b < 4]
        if core:
            if plan.day in self.scene_days:
                rng = scene_noise(self.seed, at.i, at.j)
                for _ in range(self.scene_days.index(plan.day)):
                    rng.standard_normal((4, h, w), dtype=np.float32)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, 17, key, at.i, at.j]))
            q = quantise(table[:4], quads, gain, rng.standard_normal((4, h, w), dtype=np.float32))
            for k, b in enumerate(bands):
                if b < 4:
                    out[k] = q[b]
        if any(b >= 4 for b in bands):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 19, key, at.i, at.j]))
            q = quantise(table[4:], quads, gain, rng.standard_normal((6, h, w), dtype=np.float32))
            for k, b in enumerate(bands):
                if b >= 4:
                    out[k] = q[b - 4]
        return out

    # -- Sentinel-2: one 512 x 512 window at 10 m (256 x 256 at 20 m) --
    def s2_window(self, plan: _Plan, at: At, codes_gain: tuple[np.ndarray, np.ndarray] | None = None,
                  collar: np.ndarray | None = None) -> dict[str, Any]:
        """Surface and observed DNs at 10 and 20 m, sky state and SCL of one window."""
        codes, gain = codes_gain if codes_gain is not None else self.codes(at)
        collar = self.collar(at) if collar is None else collar
        h, w = at.shape
        s10 = self.surface10(plan, at, sub_pixels(codes), gain, range(10))  # (10, h, w)
        # 20 m: means of 2 x 2 (of the pixels inside the region), nodata if any is in the collar
        inside = np.ones((h, w), np.float32)
        count = _mean_blocks(inside, 2, h, w)
        s20 = np.rint(_mean_blocks(s10, 2, h, w) / count)
        nodata20 = _mean_blocks(collar.astype(np.float32), 2, h, w) > 0
        # sky at the 20 m centres, spread to 10 m
        ps = self.transform.a
        xs20 = (at.xs[0::2] - 0.5 * ps) + ps
        ys20 = (at.ys[0::2] + 0.5 * ps) - ps
        state20, alpha20 = plan.sky.states(xs20, ys20)
        state10 = np.repeat(np.repeat(state20, 2, 0), 2, 1)[:h, :w]
        alpha10 = np.repeat(np.repeat(alpha20, 2, 0), 2, 1)[:h, :w]
        cloud_dn = _CLOUD_REFL * np.float32(10000)
        o10 = _observe(s10[:4], state10, alpha10, cloud_dn[:4])
        o20 = _observe(s20, state20, alpha20, cloud_dn)
        refl20 = {b: s20[k] for k, b in enumerate(S2_BANDS)}
        scl = _scl(state20, refl20, nodata20)
        return {"s10": s10, "s20": s20, "o10": o10, "o20": o20, "collar10": collar, "nodata20": nodata20,
                "scl": scl}

    # -- Landsat: one 768 x 768 window at 10 m (256 x 256 at 30 m) --
    def landsat_window(self, plan: _Plan, at: At, codes_gain: tuple[np.ndarray, np.ndarray] | None = None,
                       collar: np.ndarray | None = None) -> dict[str, Any]:
        codes, gain = codes_gain if codes_gain is not None else self.codes(at)
        collar = self.collar(at) if collar is None else collar
        h, w = at.shape
        idx = [S2_BANDS.index(b) for b in LANDSAT_BANDS.values()]
        s10 = self.surface10(plan, at, sub_pixels(codes), gain, idx)
        count = _mean_blocks(np.ones((h, w), np.float32), 3, h, w)
        refl30 = (_mean_blocks(s10.astype(np.float64), 3, h, w) / count / 10000).astype(np.float32)
        nodata30 = _mean_blocks(collar.astype(np.float32), 3, h, w) > 0
        ps = self.transform.a
        xs30 = at.xs[0::3] + ps
        ys30 = at.ys[0::3] - ps
        state, alpha = plan.sky.states(xs30, ys30)
        cloud = _CLOUD_REFL[idx]
        obs = _observe(refl30 * np.float32(10000), state, alpha, cloud * np.float32(10000)) / np.float32(10000)
        obs[:, state == _CLEAR] = refl30[:, state == _CLEAR]  # clear: the surface, unrounded
        dn = np.clip(np.rint((obs.astype(np.float64) - LANDSAT_OFFSET) / LANDSAT_SCALE), 1, 65535)
        dn[:, nodata30] = 0
        water = refl30[3] < refl30[1]  # NIR below green
        qa = _qa_pixel(state, water, nodata30)
        return {"refl30": refl30, "nodata30": nodata30, "dn": dn.astype(np.uint16), "qa": qa, "state": state}

    def surface(self, acq: Acquisition, band: str, res: int, win: Window) -> np.ndarray:
        plan = self.plans[acq.index]
        f = res // 10
        block = _LANDSAT_BLOCK if plan.landsat else BLOCK
        r0, c0 = int(win.row_off), int(win.col_off)
        hh, ww = int(win.height), int(win.width)
        out = np.full((hh, ww), np.nan, np.float32)
        sub = block // f  # band-grid pixels per window
        for i, j, bwin in iter_blocks(self.shape, block):
            br0, bc0 = i * sub, j * sub  # the window's first pixel on the band grid
            bh, bw = -(-int(bwin.height) // f), -(-int(bwin.width) // f)
            rr0, rr1 = max(r0, br0), min(r0 + hh, br0 + bh)
            cc0, cc1 = max(c0, bc0), min(c0 + ww, bc0 + bw)
            if rr0 >= rr1 or cc0 >= cc1:
                continue
            at = At.make(i, j, bwin, self.transform)
            if plan.landsat:
                r = self.landsat_window(plan, at)
                vals, nod = r["refl30"][list(LANDSAT_BANDS).index(band)], r["nodata30"]
            else:
                r = self.s2_window(plan, at)
                if res == 10:
                    vals, nod = r["s10"][S2_BANDS.index(band)] / np.float32(10000), r["collar10"]
                else:
                    vals, nod = r["s20"][S2_BANDS.index(band)] / np.float32(10000), r["nodata20"]
            vals = np.where(nod, np.nan, vals).astype(np.float32)
            out[rr0 - r0: rr1 - r0, cc0 - c0: cc1 - c0] = vals[rr0 - br0: rr1 - br0, cc0 - bc0: cc1 - bc0]
        return out


# --- planning -----------------------------------------------------------------------------
def _default_cloud(rng: np.random.Generator, d: date) -> float:
    """A cloud fraction for an acquisition on ``d``: the monsoon (July-September) is mostly cloudy."""
    u, v = rng.uniform(), rng.uniform()
    if d.month in (7, 8, 9):
        return 0.0 if u < 0.2 else 0.3 + 0.55 * v
    if d.month in (6, 10):
        return 0.0 if u < 0.5 else 0.05 + 0.35 * v
    return 0.0 if u < 0.6 else 0.02 + 0.23 * v


def _threshold(w: tuple[Waves, Waves], fraction: float, shape: tuple[int, int], ps: float) -> float:
    if fraction <= 0:
        return math.inf
    sx, sy = _sample_grid(shape, ps)
    f = w[0].grid(sx, -sy) + np.float32(0.25) * w[1].grid(sx, -sy)
    return float(np.quantile(f, 1 - fraction))


def _sample_grid(shape: tuple[int, int], ps: float) -> tuple[np.ndarray, np.ndarray]:
    """At most 256 x 256 sample points over the region (x, and y down), metres from its corner."""
    h, wd = shape
    sy = (np.linspace(0, h, min(h, 256), endpoint=False) + 0.5 * h / min(h, 256)) * ps
    sx = (np.linspace(0, wd, min(wd, 256), endpoint=False) + 0.5 * wd / min(wd, 256)) * ps
    return sx, sy


def _plan(opts: ProductOptions, seed: int, start: date, shape: tuple[int, int], ps: float
          ) -> list[tuple[str, date, str | None, float | None]]:
    """(platform, date, baseline, cloud fraction or None) of every acquisition, Sentinel-2 first."""
    want_s2 = any(layout in S2_LAYOUTS for layout in opts.layouts)
    want_ls = "landsat" in opts.layouts
    out: list[tuple[str, date, str | None, float | None]] = []
    if isinstance(opts.acquisitions, int):
        n = opts.acquisitions
        if want_s2:
            for k in range(n):
                out.append(("sentinel-2a" if k % 2 == 0 else "sentinel-2b",
                            start + timedelta(days=k * opts.spacing), None, None))
        if want_ls:
            span = (n - 1) * opts.spacing
            for k in range(span // 8 + 1):
                out.append(("landsat-9" if k % 2 == 0 else "landsat-8", start + timedelta(days=3 + 8 * k), None,
                            None))
    else:
        s2 = [a for a in opts.acquisitions if not (a.platform or "").startswith("landsat")]
        ls = [a for a in opts.acquisitions if (a.platform or "").startswith("landsat")]
        if s2 and not want_s2:
            raise ConfigError(f"acquisitions hold {len(s2)} Sentinel-2 acquisition(s) but products "
                              f"({','.join(opts.layouts)}) has no Sentinel-2 layout; add stac, cdse or safe")
        if ls and not want_ls:
            raise ConfigError(f"acquisitions hold {len(ls)} Landsat acquisition(s) but products "
                              f"({','.join(opts.layouts)}) lacks landsat; add landsat")
        seen: set[date] = set()
        for a in s2:
            if a.date in seen:  # type: ignore[comparison-overlap]
                raise ConfigError(f"acquisitions: two Sentinel-2 acquisitions on {a.date}; their Earth Search item "
                                  f"ids and tile file names would collide - give each date once")
            seen.add(a.date)  # type: ignore[arg-type]
        for k, a in enumerate(s2):
            out.append((a.platform or ("sentinel-2a" if k % 2 == 0 else "sentinel-2b"), a.date, a.baseline,
                        a.cloud_fraction))  # type: ignore[arg-type]
        for a in ls:
            out.append((a.platform, a.date, None, a.cloud_fraction))  # type: ignore[arg-type]
    s2_part = sorted((x for x in out if not x[0].startswith("landsat")), key=lambda x: x[1])
    ls_part = sorted((x for x in out if x[0].startswith("landsat")), key=lambda x: x[1])
    return s2_part + ls_part


# --- the writer ---------------------------------------------------------------------------
def write_products(
    out_dir: Path,
    opts: ProductOptions,
    *,
    seed: int,
    transform: Affine,
    shape: tuple[int, int],
    layout: Layout,
    table: ClassTable,
    field_class: np.ndarray,
    texture: Waves,
    scene_days: Sequence[float],
    season_start: date,
    progress: Callable[[int, int], None] | None = None,
) -> SynthProducts:
    """Write the acquisitions of ``opts`` in its layouts under ``out_dir`` (``<region>/products``).

    Each layout is built in a temporary folder and swapped in whole at the end (an earlier
    folder of that layout is replaced; nothing half-written is ever visible). Pixels are
    rendered window by window into scratch GeoTIFFs, then copied into COGs / JPEG 2000.
    """
    ps = float(transform.a)
    if abs(ps - 10.0) > 1e-9:
        raise ConfigError(f"products need the region's 10 m pixels (Sentinel-2's grid), got pixel_size {ps:g}; "
                          f"leave pixel_size at 10 or drop products")
    planned = _plan(opts, seed, season_start, shape, ps)
    days = sorted({(d - season_start).days for _, d, _, _ in planned})
    spectra = product_spectra(seed, field_class, table, np.asarray(scene_days, float), np.asarray(days, float))
    crng = np.random.default_rng(np.random.SeedSequence([seed, 25]))
    persistent = None
    p_thr = math.inf
    if opts.overcast is not None:
        prng = np.random.default_rng(np.random.SeedSequence([seed, 27]))
        persistent = Waves.make(prng, 12, (3000.0, 12000.0))
        sx, sy = _sample_grid(shape, ps)
        p_thr = float(np.quantile(persistent.grid(sx, -sy), 0.7))  # 30 % of the region
    plans = []
    for k, (platform, d, baseline, cf) in enumerate(planned):
        drawn = _default_cloud(crng, d)
        cf_ = cf if cf is not None else min(0.95, drawn * opts.cloudiness)
        wrng = np.random.default_rng(np.random.SeedSequence([seed, 21, k]))
        waves = (Waves.make(wrng, 12, (1500.0, 9000.0)), Waves.make(wrng, 6, (150.0, 400.0)))
        over = opts.overcast is not None and opts.overcast[0] <= d <= opts.overcast[1]
        sky = _Sky(waves[0], waves[1], _threshold(waves, cf_, shape, ps), persistent if over else None, p_thr)
        bl = None if platform.startswith("landsat") else (baseline or default_baseline(d))
        plans.append(_Plan(k, platform, d, (d - season_start).days, bl, cf_, over, sky,
                           days.index((d - season_start).days)))
    render = _Renderer(seed, transform, shape, layout, texture, spectra,
                       tuple(int(x) for x in scene_days), shapely.STRtree(layout.fields),
                       shapely.STRtree(layout.bg), tuple(plans))
    return _Writer(out_dir, opts, render, season_start, progress).run()


class _Writer:
    """Renders every acquisition into scratch files, then writes each layout from them."""

    def __init__(self, out: Path, opts: ProductOptions, render: _Renderer, start: date,
                 progress: Callable[[int, int], None] | None) -> None:
        self.out = out
        self.opts = opts
        self.r = render
        self.start = start
        self.progress = progress
        self.transform, self.shape = render.transform, render.shape
        cx = self.transform.c + self.transform.a * self.shape[1] / 2
        cy = self.transform.f + self.transform.e * self.shape[0] / 2
        self.tile = _mgrs_tile(cx, cy)
        self.footprint = _footprint(self.transform, self.shape, render.layout.collar)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.scratch = out / f".scratch-{self.token}"
        self.stats: dict[int, dict[int, int]] = {}
        self.jobs: list[tuple[Any, ...]] = []  # (function, *arguments) of each file to encode
        self.workers = max(1, min(2, os.cpu_count() or 1))  # numpy and GDAL release the GIL

    # -- scratch rasters --
    def _open(self, path: Path, res: int, dtype: str) -> Any:
        t, (h, w) = _grid(self.transform, self.shape, res)
        return rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=1, dtype=dtype, crs=CRS,
                             transform=t, nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="ZSTD",
                             zstd_level=1)

    def _render_s2(self, plans: list[_Plan], tick: Callable[[], None]) -> None:
        if not plans:
            return
        files: dict[int, dict[str, Any]] = {}
        try:
            for p in plans:
                d = self.scratch / f"{p.index:03d}"
                d.mkdir(parents=True)
                fs = {f"{b}_10m": self._open(d / f"{b}_10m.tif", 10, "uint16") for b in S2_10M}
                fs.update({f"{b}_20m": self._open(d / f"{b}_20m.tif", 20, "uint16") for b in S2_20M})
                fs["SCL_20m"] = self._open(d / "SCL_20m.tif", 20, "uint8")
                files[p.index] = fs
                self.stats[p.index] = dict.fromkeys(range(12), 0)
            with ThreadPoolExecutor(self.workers) as pool:
                for i, j, win in iter_blocks(self.shape, BLOCK):
                    at = At.make(i, j, win, self.transform)
                    cg = self.r.codes(at)
                    collar = self.r.collar(at)
                    w20 = Window(int(win.col_off) // 2, int(win.row_off) // 2, -(-int(win.width) // 2),
                                 -(-int(win.height) // 2))
                    jobs = [pool.submit(self._s2_window, p, at, cg, collar, win, w20, files[p.index]) for p in plans]
                    for job in jobs:
                        job.result()
                    tick()
        finally:
            for fs in files.values():
                for ds in fs.values():
                    ds.close()

    def _s2_window(self, p: _Plan, at: At, cg: tuple[np.ndarray, np.ndarray], collar: np.ndarray, win: Window,
                   w20: Window, fs: Mapping[str, Any]) -> None:
        """Render one acquisition's window and write it to its scratch files (one thread per acquisition)."""
        res = self.r.s2_window(p, at, cg, collar)
        o10 = res["o10"] + np.float32(p.offset)
        o10[:, res["collar10"]] = 0
        for k, b in enumerate(S2_10M):
            fs[f"{b}_10m"].write(np.clip(o10[k], 0, 65535).astype(np.uint16), 1, window=win)
        o20 = res["o20"] + np.float32(p.offset)
        o20[:, res["nodata20"]] = 0
        for b in S2_20M:
            fs[f"{b}_20m"].write(np.clip(o20[S2_BANDS.index(b)], 0, 65535).astype(np.uint16), 1, window=w20)
        fs["SCL_20m"].write(res["scl"], 1, window=w20)
        counts = np.bincount(res["scl"].ravel(), minlength=12)
        for c in range(12):
            self.stats[p.index][c] += int(counts[c])

    def _render_landsat(self, plans: list[_Plan], tick: Callable[[], None]) -> None:
        if not plans:
            return
        files: dict[int, dict[str, Any]] = {}
        try:
            for p in plans:
                d = self.scratch / f"{p.index:03d}"
                d.mkdir(parents=True)
                fs = {b: self._open(d / f"{b}.tif", 30, "uint16") for b in (*LANDSAT_BANDS, "QA_PIXEL")}
                files[p.index] = fs
                self.stats[p.index] = {"clear": 0, "cloud": 0, "valid": 0, "all": 0}  # type: ignore[dict-item]
            with ThreadPoolExecutor(self.workers) as pool:
                for i, j, win in iter_blocks(self.shape, _LANDSAT_BLOCK):
                    at = At.make(i, j, win, self.transform)
                    cg = self.r.codes(at)
                    collar = self.r.collar(at)
                    w30 = Window(int(win.col_off) // 3, int(win.row_off) // 3, -(-int(win.width) // 3),
                                 -(-int(win.height) // 3))
                    jobs = [pool.submit(self._landsat_window, p, at, cg, collar, w30, files[p.index]) for p in plans]
                    for job in jobs:
                        job.result()
                    tick()
        finally:
            for fs in files.values():
                for ds in fs.values():
                    ds.close()

    def _landsat_window(self, p: _Plan, at: At, cg: tuple[np.ndarray, np.ndarray], collar: np.ndarray,
                        w30: Window, fs: Mapping[str, Any]) -> None:
        res = self.r.landsat_window(p, at, cg, collar)
        for k, b in enumerate(LANDSAT_BANDS):
            fs[b].write(res["dn"][k], 1, window=w30)
        fs["QA_PIXEL"].write(res["qa"], 1, window=w30)
        valid = ~res["nodata30"]
        st = self.stats[p.index]
        cloudy = np.isin(res["state"], (_CIRRUS, _CLOUD_MED, _CLOUD_HIGH)) & valid
        st["cloud"] += int(cloudy.sum())  # type: ignore[index]
        st["valid"] += int(valid.sum())  # type: ignore[index]

    def run(self) -> SynthProducts:
        plans = list(self.r.plans)
        s2 = [p for p in plans if not p.landsat]
        ls = [p for p in plans if p.landsat]
        h, w = self.shape
        n_win = (-(-h // BLOCK) * -(-w // BLOCK) if s2 else 0) + (
            -(-h // _LANDSAT_BLOCK) * -(-w // _LANDSAT_BLOCK) if ls else 0)
        n_files = sum(11 * ("stac" in self.opts.layouts) + 14 * ("safe" in self.opts.layouts) for p in s2) + 7 * len(ls)
        total = n_win + n_files
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if self.progress:
                self.progress(done, total)

        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RasterWriteError(f"{self.out}: cannot create the products folder ({e.strerror}); "
                                   f"choose a writable location") from None
        staged = {lay: self.out / f".{lay}.tmp-{self.token}" for lay in self.opts.layouts}
        try:
            # bytes (rasterio's unit for an integer): the scratch files' dirty blocks, whatever the region's size
            with rasterio.Env(GDAL_CACHEMAX=256 << 20):
                acqs = self._write(plans, s2, ls, staged, tick)
            for lay in self.opts.layouts:  # swap each layout in whole: safe before cdse (its items point there)
                final = self.out / lay
                old = self.out / f".{lay}.old-{self.token}"
                if final.exists():
                    os.replace(final, old)
                os.replace(staged[lay], final)
                shutil.rmtree(old, ignore_errors=True)
        except OSError as e:
            raise RasterWriteError(f"{self.out}: writing the products failed ({e}); check free disk space and "
                                   f"permissions, then run again") from None
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
            for d in staged.values():
                shutil.rmtree(d, ignore_errors=True)
        final_acqs = tuple(_rebase(a, staged, self.out) for a in acqs)
        return SynthProducts(self.out, self.opts.layouts, final_acqs, self.start.isoformat(), self.transform,
                             self.shape, CRS, self.tile, self.r)

    def _write(self, plans: list[_Plan], s2: list[_Plan], ls: list[_Plan], staged: Mapping[str, Path],
               tick: Callable[[], None]) -> list[Acquisition]:
        """Render into the scratch folder, then encode every file and write the metadata into ``staged``."""
        self.scratch.mkdir()
        for d in staged.values():
            d.mkdir()
        self._render_s2(s2, tick)
        self._render_landsat(ls, tick)
        acqs = [self._finish(p, staged) for p in plans]  # metadata now, files queued in self.jobs
        with ThreadPoolExecutor(self.workers) as pool:
            for _ in pool.map(lambda job: job[0](*job[1:]), self.jobs):
                tick()
        self._collections(acqs, staged)
        return acqs

    # -- per acquisition --
    def _finish(self, p: _Plan, staged: Mapping[str, Path]) -> Acquisition:
        if p.landsat:
            return self._finish_landsat(p, staged)
        return self._finish_s2(p, staged)

    def _s2_names(self, p: _Plan) -> dict[str, str]:
        d = p.day_date.strftime("%Y%m%d")
        sat = "S2A" if p.platform == "sentinel-2a" else "S2B"
        gen = d + "T090000"
        baseline = p.baseline or "05.10"
        n = "N" + baseline.replace(".", "")
        product = f"{sat}_MSIL2A_{d}T{_S2_TIME}_{n}_R{_S2_ORBIT:03d}_T{self.tile}_{gen}"
        launch = date(2015, 6, 23) if sat == "S2A" else date(2017, 3, 7)
        orbit = int((p.day_date - launch).days * 14.3) + 1
        return {
            "sat": sat, "product": product, "safe": product + ".SAFE", "gen": gen,
            "granule": f"L2A_T{self.tile}_A{orbit:06d}_{d}T{_S2_DATASTRIP_TIME}",
            "prefix": f"T{self.tile}_{d}T{_S2_TIME}", "orbit": str(orbit),
            "es_id": f"{sat}_T{self.tile}_{d}T{_S2_TIME}_L2A",
            "datetime": f"{p.day_date.isoformat()}T{_S2_TIME[:2]}:{_S2_TIME[2:4]}:{_S2_TIME[4:]}.024000Z",
            "datatake": f"G{sat}_{d}T{_S2_TIME}_{orbit:06d}_{n[0]}{baseline}",
        }

    def _percent(self, p: _Plan) -> dict[str, float]:
        st = self.stats[p.index]
        total = sum(st.values())
        valid = total - st[0]
        pct = {k: (100.0 * st[k] / valid if valid else 0.0) for k in range(1, 12)}
        pct[0] = 100.0 * st[0] / total if total else 0.0
        return pct

    def _finish_s2(self, p: _Plan, staged: Mapping[str, Path]) -> Acquisition:
        names = self._s2_names(p)
        src = self.scratch / f"{p.index:03d}"
        pct = self._percent(p)
        cloud_cover = round(pct[8] + pct[9] + pct[10], 6)
        paths: dict[str, Path] = {}
        bands: dict[str, dict[str, Path]] = {}
        item_ids: dict[str, str] = {}
        if "stac" in self.opts.layouts:
            folder = staged["stac"] / names["es_id"]
            folder.mkdir()
            files = {}
            for b in S2_BANDS:
                res = S2_NATIVE[b]
                self.jobs.append((_cog, src / f"{b}_{res}m.tif", folder / f"{b}.tif", "AVERAGE"))
                files[b] = folder / f"{b}.tif"
            self.jobs.append((_cog, src / "SCL_20m.tif", folder / "SCL.tif", "NEAREST"))
            files["SCL"] = folder / "SCL.tif"
            item = self._earth_search_item(p, names, pct, cloud_cover)
            path = folder / f"{names['es_id']}.json"
            _write_json(path, item)
            paths["stac"], bands["stac"], item_ids["stac"] = path, files, names["es_id"]
        if "safe" in self.opts.layouts:
            safe = staged["safe"] / names["safe"]
            img = safe / "GRANULE" / names["granule"] / "IMG_DATA"
            files = {}
            for res, group in ((10, S2_10M), (20, S2_20M)):
                (img / f"R{res}m").mkdir(parents=True)
                for b in group:
                    dst = img / f"R{res}m" / f"{names['prefix']}_{b}_{res}m.jp2"
                    self.jobs.append((_jp2, src / f"{b}_{res}m.tif", dst))
                    files[f"{b}_{res}m"] = dst
            dst = img / "R20m" / f"{names['prefix']}_SCL_20m.jp2"
            self.jobs.append((_jp2, src / "SCL_20m.tif", dst))
            files["SCL_20m"] = dst
            (safe / "MTD_MSIL2A.xml").write_text(self._mtd_msil2a(p, names, pct, cloud_cover), encoding="utf-8")
            (safe / "GRANULE" / names["granule"] / "MTD_TL.xml").write_text(self._mtd_tl(p, names),
                                                                            encoding="utf-8")
            paths["safe"], bands["safe"] = safe, files
            item_ids["safe"] = names["product"]
        if "cdse" in self.opts.layouts:
            item = self._cdse_item(p, names, pct, cloud_cover)
            path = staged["cdse"] / f"{names['product']}.json"
            _write_json(path, item)
            paths["cdse"], item_ids["cdse"] = path, names["product"]
            bands["cdse"] = {k: (staged["safe"] / v.relative_to(staged["safe"])) for k, v in bands["safe"].items()}
        return Acquisition(p.index, names["product"], p.day_date.isoformat(), names["datetime"], p.day,
                           p.platform, p.baseline, p.cloud_fraction, cloud_cover, p.overcast, item_ids, paths,
                           bands)

    # -- Sentinel-2 metadata --
    def _proj(self, res: int) -> dict[str, Any]:
        t, (h, w) = _grid(self.transform, self.shape, res)
        return {"proj:shape": [h, w], "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
                "proj:bbox": [t.c, t.f + t.e * h, t.c + t.a * w, t.f]}

    def _geometry(self) -> tuple[dict[str, Any], list[float]]:
        g = self.footprint
        return shapely.geometry.mapping(g), [round(v, 9) for v in g.bounds]

    def _earth_search_item(self, p: _Plan, names: Mapping[str, str], pct: Mapping[int, float],
                           cloud_cover: float) -> dict[str, Any]:
        geom, bbox = self._geometry()
        offset = -0.1 if p.offset else 0.0
        assets: dict[str, Any] = {}
        for b in S2_BANDS:
            key, desc, cw, fwhm = _BAND_INFO[b]
            res = S2_NATIVE[b]
            assets[key] = {
                "href": f"./{b}.tif", "type": _COG_TYPE, "title": f"{desc} - {res}m",
                "eo:bands": [{"name": b, "common_name": key if key not in ("rededge1", "rededge2", "rededge3")
                              else "rededge", "description": desc, "center_wavelength": cw,
                              "full_width_half_max": fwhm}],
                "gsd": res, **{k: v for k, v in self._proj(res).items() if k != "proj:bbox"},
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                                  "spatial_resolution": res, "scale": 0.0001, "offset": offset}],
                "roles": ["data", "reflectance"],
            }
        assets["scl"] = {
            "href": "./SCL.tif", "type": _COG_TYPE, "title": "Scene classification map (SCL)",
            **{k: v for k, v in self._proj(20).items() if k != "proj:bbox"},
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            "classification:classes": _scl_classes(),
            "roles": ["data"],
        }
        tile = self.tile
        props = {
            "datetime": names["datetime"],
            "created": f"{p.day_date.isoformat()}T09:00:00.000000Z",
            "platform": p.platform, "constellation": "sentinel-2", "instruments": ["msi"],
            "eo:cloud_cover": cloud_cover, "proj:epsg": int(CRS.split(":")[1]),
            "mgrs:utm_zone": int(tile[:2]), "mgrs:latitude_band": tile[2], "mgrs:grid_square": tile[3:],
            "grid:code": f"MGRS-{tile}", "s2:mgrs_tile": tile,
            "s2:processing_baseline": p.baseline, "s2:product_type": "S2MSI2A",
            "s2:product_uri": names["safe"], "s2:datatake_id": names["datatake"],
            "s2:generation_time": f"{p.day_date.isoformat()}T09:00:00.000000Z",
            "s2:nodata_pixel_percentage": round(pct[0], 6),
            "s2:cloud_shadow_percentage": round(pct[3], 6), "s2:vegetation_percentage": round(pct[4], 6),
            "s2:not_vegetated_percentage": round(pct[5], 6), "s2:water_percentage": round(pct[6], 6),
            "s2:unclassified_percentage": round(pct[7], 6),
            "s2:medium_proba_clouds_percentage": round(pct[8], 6),
            "s2:high_proba_clouds_percentage": round(pct[9], 6), "s2:thin_cirrus_percentage": round(pct[10], 6),
            "s2:snow_ice_percentage": round(pct[11], 6), "sat:relative_orbit": _S2_ORBIT,
            "sat:orbit_state": "descending",
        }
        return {
            "type": "Feature", "stac_version": "1.0.0",
            "stac_extensions": [_STAC_EXT["eo"], _STAC_EXT["proj"], _STAC_EXT["raster"],
                                _STAC_EXT["classification"]],
            "id": names["es_id"], "geometry": geom, "bbox": bbox, "properties": props,
            "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"},
                      {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                      {"rel": "root", "href": "../catalog.json", "type": "application/json"}],
            "assets": assets, "collection": "sentinel-2-c1-l2a",
        }

    def _cdse_item(self, p: _Plan, names: Mapping[str, str], pct: Mapping[int, float],
                   cloud_cover: float) -> dict[str, Any]:
        geom, bbox = self._geometry()
        safe_href = f"../safe/{names['safe']}"
        img = f"{safe_href}/GRANULE/{names['granule']}/IMG_DATA"
        offset = -0.1 if p.offset else 0.0
        assets: dict[str, Any] = {}
        for res, group in ((10, S2_10M), (20, S2_20M)):
            for b in group:
                key, desc, cw, fwhm = _BAND_INFO[b]
                common = key if not key.startswith("rededge") else f"rededge{int(cw * 100):03d}"
                assets[f"{b}_{res}m"] = {
                    "href": f"{img}/R{res}m/{names['prefix']}_{b}_{res}m.jp2", "type": "image/jp2",
                    "title": f"{desc} - {res}m", "roles": ["data", "reflectance", f"gsd:{res}m"], "gsd": res,
                    "bands": [{"name": b, "description": desc, "eo:common_name": common,
                               "eo:center_wavelength": cw, "eo:full_width_half_max": fwhm}],
                    "nodata": 0, "data_type": "uint16", "raster:scale": 0.0001, "raster:offset": offset,
                    "proj:code": CRS, **self._proj(res),
                }
        assets["SCL_20m"] = {
            "href": f"{img}/R20m/{names['prefix']}_SCL_20m.jp2", "type": "image/jp2",
            "title": "Scene classification map (SCL) - 20m", "roles": ["data", "gsd:20m"], "gsd": 20,
            "nodata": 0, "data_type": "uint8", "proj:code": CRS, **self._proj(20),
            "classification:classes": [dict(c, **({"nodata": True} if c["value"] == 0 else {}))
                                       for c in _scl_classes()],
        }
        assets["product_metadata"] = {"href": f"{safe_href}/MTD_MSIL2A.xml", "type": "application/xml",
                                      "roles": ["metadata"], "title": "MTD_MSIL2A.xml"}
        assets["granule_metadata"] = {"href": f"{safe_href}/GRANULE/{names['granule']}/MTD_TL.xml",
                                      "type": "application/xml", "roles": ["metadata"], "title": "MTD_TL.xml"}
        stats = {"nodata": pct[0], "cloud_shadow": pct[3], "vegetation": pct[4], "not_vegetated": pct[5],
                 "water": pct[6], "unclassified": pct[7], "medium_proba_clouds": pct[8],
                 "high_proba_clouds": pct[9], "thin_cirrus": pct[10], "saturated_defective": 0.0,
                 "dark_area": 0.0}
        props = {
            "datetime": names["datetime"].replace("024000Z", "024Z"),
            "start_datetime": names["datetime"].replace("024000Z", "024Z"),
            "end_datetime": names["datetime"].replace("024000Z", "024Z"),
            "platform": p.platform, "constellation": "sentinel-2", "instruments": ["msi"], "gsd": 10,
            "grid:code": f"MGRS-{self.tile}", "eo:cloud_cover": cloud_cover, "eo:snow_cover": 0.0,
            "processing:version": p.baseline, "processing:level": "L2", "product:type": "S2MSI2A",
            "sat:relative_orbit": _S2_ORBIT, "sat:absolute_orbit": int(names["orbit"]),
            "sat:orbit_state": "descending", "eopf:datatake_id": names["datatake"],
            "statistics": {k: round(v, 6) for k, v in stats.items()},
        }
        return {
            "type": "Feature", "stac_version": "1.1.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
                "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
                "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
                "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
                "https://stac-extensions.github.io/product/v0.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
                "https://stac-extensions.github.io/sat/v1.1.0/schema.json",
            ],
            "id": names["product"], "geometry": geom, "bbox": bbox, "properties": props,
            "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"},
                      {"rel": "root", "href": "./catalog.json", "type": "application/json"}],
            "assets": assets, "collection": "sentinel-2-l2a",
        }

    def _mtd_msil2a(self, p: _Plan, names: Mapping[str, str], pct: Mapping[int, float], cloud_cover: float) -> str:
        t = names["datetime"].replace("024000Z", "024Z")
        gran = names["granule"]
        files = [f"GRANULE/{gran}/IMG_DATA/R10m/{names['prefix']}_{b}_10m" for b in S2_10M]
        files += [f"GRANULE/{gran}/IMG_DATA/R20m/{names['prefix']}_{b}_20m" for b in S2_20M]
        files.append(f"GRANULE/{gran}/IMG_DATA/R20m/{names['prefix']}_SCL_20m")
        image_files = "\n".join(f"                        <IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
        offsets = ""
        if p.offset:
            offsets = ("            <BOA_ADD_OFFSET_VALUES_LIST>\n"
                       + "".join(f'                <BOA_ADD_OFFSET band_id="{k}">{BOA_ADD_OFFSET}</BOA_ADD_OFFSET>\n'
                                 for k in range(13))
                       + "            </BOA_ADD_OFFSET_VALUES_LIST>\n")
        spectral = "".join(
            f'                <Spectral_Information bandId="{k}" physicalBand="{b}">\n'
            f"                    <RESOLUTION>{res}</RESOLUTION>\n"
            f"                    <Wavelength>\n"
            f'                        <MIN unit="nm">{lo}</MIN>\n'
            f'                        <MAX unit="nm">{hi}</MAX>\n'
            f'                        <CENTRAL unit="nm">{c}</CENTRAL>\n'
            f"                    </Wavelength>\n"
            f"                </Spectral_Information>\n"
            for k, (b, res, lo, hi, c) in enumerate(_SPECTRAL))
        scl_list = "".join(
            f"                <Scene_Classification_ID>\n"
            f"                    <SCENE_CLASSIFICATION_TEXT>SC_{n}</SCENE_CLASSIFICATION_TEXT>\n"
            f"                    <SCENE_CLASSIFICATION_INDEX>{k}</SCENE_CLASSIFICATION_INDEX>\n"
            f"                </Scene_Classification_ID>\n"
            for k, n in enumerate(("NODATA", "SATURATED_DEFECTIVE", "DARK_FEATURE_SHADOW", "CLOUD_SHADOW",
                                   "VEGETATION", "NOT_VEGETATED", "WATER", "UNCLASSIFIED", "CLOUD_MEDIUM_PROBA",
                                   "CLOUD_HIGH_PROBA", "THIN_CIRRUS", "SNOW_ICE")))
        ring = list(self.footprint.exterior.coords)
        pos = " ".join(f"{lat!r} {lon!r}" for lon, lat in ring)
        sat_name = "Sentinel-2A" if names["sat"] == "S2A" else "Sentinel-2B"
        gen = datetime.strptime(names["gen"], "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
    <n1:General_Info>
        <Product_Info>
            <PRODUCT_START_TIME>{t}</PRODUCT_START_TIME>
            <PRODUCT_STOP_TIME>{t}</PRODUCT_STOP_TIME>
            <PRODUCT_URI>{escape(names['safe'])}</PRODUCT_URI>
            <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
            <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
            <PROCESSING_BASELINE>{p.baseline}</PROCESSING_BASELINE>
            <PRODUCT_DOI>https://doi.org/10.5270/S2_-znk9xsj</PRODUCT_DOI>
            <GENERATION_TIME>{gen}</GENERATION_TIME>
            <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
            <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
            <Datatake datatakeIdentifier="{names['datatake']}">
                <SPACECRAFT_NAME>{sat_name}</SPACECRAFT_NAME>
                <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
                <DATATAKE_SENSING_START>{t}</DATATAKE_SENSING_START>
                <SENSING_ORBIT_NUMBER>{_S2_ORBIT}</SENSING_ORBIT_NUMBER>
                <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
            </Datatake>
            <Query_Options completeSingleTile="true">
                <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
            </Query_Options>
            <Product_Organisation>
                <Granule_List>
                    <Granule granuleIdentifier="{names['sat']}_OPER_MSI_L2A_TL_{gran}_N{p.baseline}" imageFormat="JPEG2000">
{image_files}
                    </Granule>
                </Granule_List>
            </Product_Organisation>
        </Product_Info>
        <Product_Image_Characteristics>
            <Special_Values>
                <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
                <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
            </Special_Values>
            <Special_Values>
                <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
                <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
            </Special_Values>
            <QUANTIFICATION_VALUES_LIST>
                <BOA_QUANTIFICATION_VALUE unit="none">{BOA_QUANTIFICATION_VALUE}</BOA_QUANTIFICATION_VALUE>
                <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
                <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
            </QUANTIFICATION_VALUES_LIST>
{offsets}            <Spectral_Information_List>
{spectral}            </Spectral_Information_List>
            <Scene_Classification_List>
{scl_list}            </Scene_Classification_List>
        </Product_Image_Characteristics>
    </n1:General_Info>
    <n1:Geometric_Info>
        <Product_Footprint>
            <Product_Footprint>
                <Global_Footprint>
                    <EXT_POS_LIST>{pos} </EXT_POS_LIST>
                </Global_Footprint>
            </Product_Footprint>
            <RASTER_CS_TYPE>POINT</RASTER_CS_TYPE>
            <PIXEL_ORIGIN>1</PIXEL_ORIGIN>
        </Product_Footprint>
        <Coordinate_Reference_System>
            <GEO_TABLES version="1">EPSG</GEO_TABLES>
            <HORIZONTAL_CS_TYPE>GEOGRAPHIC</HORIZONTAL_CS_TYPE>
        </Coordinate_Reference_System>
    </n1:Geometric_Info>
    <n1:Quality_Indicators_Info>
        <Cloud_Coverage_Assessment>{cloud_cover:.6f}</Cloud_Coverage_Assessment>
        <Image_Content_QI>
            <NODATA_PIXEL_PERCENTAGE>{pct[0]:.6f}</NODATA_PIXEL_PERCENTAGE>
            <SATURATED_DEFECTIVE_PIXEL_PERCENTAGE>0.0</SATURATED_DEFECTIVE_PIXEL_PERCENTAGE>
            <DARK_FEATURES_PERCENTAGE>0.0</DARK_FEATURES_PERCENTAGE>
            <CLOUD_SHADOW_PERCENTAGE>{pct[3]:.6f}</CLOUD_SHADOW_PERCENTAGE>
            <VEGETATION_PERCENTAGE>{pct[4]:.6f}</VEGETATION_PERCENTAGE>
            <NOT_VEGETATED_PERCENTAGE>{pct[5]:.6f}</NOT_VEGETATED_PERCENTAGE>
            <WATER_PERCENTAGE>{pct[6]:.6f}</WATER_PERCENTAGE>
            <UNCLASSIFIED_PERCENTAGE>{pct[7]:.6f}</UNCLASSIFIED_PERCENTAGE>
            <MEDIUM_PROBA_CLOUDS_PERCENTAGE>{pct[8]:.6f}</MEDIUM_PROBA_CLOUDS_PERCENTAGE>
            <HIGH_PROBA_CLOUDS_PERCENTAGE>{pct[9]:.6f}</HIGH_PROBA_CLOUDS_PERCENTAGE>
            <THIN_CIRRUS_PERCENTAGE>{pct[10]:.6f}</THIN_CIRRUS_PERCENTAGE>
            <SNOW_ICE_PERCENTAGE>0.0</SNOW_ICE_PERCENTAGE>
        </Image_Content_QI>
    </n1:Quality_Indicators_Info>
</n1:Level-2A_User_Product>
"""

    def _mtd_tl(self, p: _Plan, names: Mapping[str, str]) -> str:
        sizes = positions = ""
        for res in (10, 20):
            t, (h, w) = _grid(self.transform, self.shape, res)
            sizes += (f'            <Size resolution="{res}">\n                <NROWS>{h}</NROWS>\n'
                      f"                <NCOLS>{w}</NCOLS>\n            </Size>\n")
            positions += (f'            <Geoposition resolution="{res}">\n                <ULX>{t.c:g}</ULX>\n'
                          f"                <ULY>{t.f:g}</ULY>\n                <XDIM>{t.a:g}</XDIM>\n"
                          f"                <YDIM>{t.e:g}</YDIM>\n            </Geoposition>\n")
        zone = CRS.split(":")[1][-2:]
        t = names["datetime"].replace("024000Z", "024Z")
        return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd">
    <n1:General_Info>
        <TILE_ID>{names['sat']}_OPER_MSI_L2A_TL_{names['granule']}_N{p.baseline}</TILE_ID>
        <SENSING_TIME>{t}</SENSING_TIME>
    </n1:General_Info>
    <n1:Geometric_Info>
        <Tile_Geocoding>
            <HORIZONTAL_CS_NAME>WGS84 / UTM zone {zone}N</HORIZONTAL_CS_NAME>
            <HORIZONTAL_CS_CODE>{CRS}</HORIZONTAL_CS_CODE>
{sizes}{positions}        </Tile_Geocoding>
    </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""

    # -- Landsat --
    def _finish_landsat(self, p: _Plan, staged: Mapping[str, Path]) -> Acquisition:
        sat = "LC09" if p.platform == "landsat-9" else "LC08"
        d = p.day_date.strftime("%Y%m%d")
        proc = (p.day_date + timedelta(days=7)).strftime("%Y%m%d")
        pid = f"{sat}_L2SP_{_WRS[0]}{_WRS[1]}_{d}_{proc}_02_T1"
        folder = staged["landsat"] / pid
        folder.mkdir()
        src = self.scratch / f"{p.index:03d}"
        files = {}
        for b in (*LANDSAT_BANDS, "QA_PIXEL"):
            dst = folder / f"{pid}_{b}.TIF"
            self.jobs.append((_cog, src / f"{b}.tif", dst, "NEAREST" if b == "QA_PIXEL" else "AVERAGE"))
            files[b] = dst
        st = self.stats[p.index]
        cloud_cover = round(100.0 * st["cloud"] / st["valid"], 2) if st["valid"] else 0.0  # type: ignore[index]
        dt = f"{p.day_date.isoformat()}T{_LANDSAT_TIME[:-4]}Z"
        mtl = self._mtl(p, pid, sat, cloud_cover)
        _write_json(folder / f"{pid}_MTL.json", mtl)
        files["MTL"] = folder / f"{pid}_MTL.json"
        item = self._landsat_item(p, pid, sat, dt, cloud_cover)
        path = folder / f"{pid}_SR_stac.json"
        _write_json(path, item)
        return Acquisition(p.index, pid, p.day_date.isoformat(), dt, p.day, p.platform, None, p.cloud_fraction,
                           cloud_cover, p.overcast, {"landsat": f"{pid}_SR"}, {"landsat": path}, {"landsat": files})

    def _mtl(self, p: _Plan, pid: str, sat: str, cloud_cover: float) -> dict[str, Any]:
        t, (h, w) = _grid(self.transform, self.shape, 30)
        x0, y0 = t.c + 15, t.f - 15  # corners are pixel centres in an MTL
        x1, y1 = x0 + 30 * (w - 1), y0 - 30 * (h - 1)
        contents: dict[str, str] = {
            "ORIGIN": "Image courtesy of the U.S. Geological Survey (synthetic: geoseg synth)",
            "DIGITAL_OBJECT_IDENTIFIER": "https://doi.org/10.5066/P9OGBGM6",
            "LANDSAT_PRODUCT_ID": pid, "PROCESSING_LEVEL": "L2SP", "COLLECTION_NUMBER": "02",
            "COLLECTION_CATEGORY": "T1", "OUTPUT_FORMAT": "GEOTIFF",
        }
        for b in LANDSAT_BANDS:
            contents[f"FILE_NAME_BAND_{b[-1]}"] = f"{pid}_{b}.TIF"
        contents["FILE_NAME_QUALITY_L1_PIXEL"] = f"{pid}_QA_PIXEL.TIF"
        contents["FILE_NAME_METADATA_ODL"] = f"{pid}_MTL.txt"
        contents["FILE_NAME_METADATA_XML"] = f"{pid}_MTL.xml"
        for b in LANDSAT_BANDS:
            contents[f"DATA_TYPE_BAND_{b[-1]}"] = "UINT16"
        contents["DATA_TYPE_QUALITY_L1_PIXEL"] = "UINT16"
        params: dict[str, str] = {}
        for b in LANDSAT_BANDS:
            n = b[-1]
            params[f"REFLECTANCE_MAXIMUM_BAND_{n}"] = "1.602213"
            params[f"REFLECTANCE_MINIMUM_BAND_{n}"] = "-0.199972"
        for b in LANDSAT_BANDS:
            n = b[-1]
            params[f"QUANTIZE_CAL_MAX_BAND_{n}"] = "65535"
            params[f"QUANTIZE_CAL_MIN_BAND_{n}"] = "1"
        for b in LANDSAT_BANDS:
            params[f"REFLECTANCE_MULT_BAND_{b[-1]}"] = "2.75E-05"
        for b in LANDSAT_BANDS:
            params[f"REFLECTANCE_ADD_BAND_{b[-1]}"] = "-0.200000"
        return {"LANDSAT_METADATA_FILE": {
            "PRODUCT_CONTENTS": contents,
            "IMAGE_ATTRIBUTES": {
                "SPACECRAFT_ID": "LANDSAT_9" if sat == "LC09" else "LANDSAT_8", "SENSOR_ID": "OLI_TIRS",
                "WRS_TYPE": "2", "WRS_PATH": _WRS[0], "WRS_ROW": _WRS[1], "DATE_ACQUIRED": p.day_date.isoformat(),
                "SCENE_CENTER_TIME": _LANDSAT_TIME, "CLOUD_COVER": f"{cloud_cover:.2f}",
                "CLOUD_COVER_LAND": f"{cloud_cover:.2f}",
            },
            "PROJECTION_ATTRIBUTES": {
                "MAP_PROJECTION": "UTM", "DATUM": "WGS84", "ELLIPSOID": "WGS84", "UTM_ZONE": CRS[-2:],
                "GRID_CELL_SIZE_REFLECTIVE": "30.00", "GRID_CELL_SIZE_THERMAL": "30.00",
                "REFLECTIVE_LINES": str(h), "REFLECTIVE_SAMPLES": str(w), "ORIENTATION": "NORTH_UP",
                "CORNER_UL_PROJECTION_X_PRODUCT": f"{x0:.3f}", "CORNER_UL_PROJECTION_Y_PRODUCT": f"{y0:.3f}",
                "CORNER_UR_PROJECTION_X_PRODUCT": f"{x1:.3f}", "CORNER_UR_PROJECTION_Y_PRODUCT": f"{y0:.3f}",
                "CORNER_LL_PROJECTION_X_PRODUCT": f"{x0:.3f}", "CORNER_LL_PROJECTION_Y_PRODUCT": f"{y1:.3f}",
                "CORNER_LR_PROJECTION_X_PRODUCT": f"{x1:.3f}", "CORNER_LR_PROJECTION_Y_PRODUCT": f"{y1:.3f}",
            },
            "LEVEL2_PROCESSING_RECORD": {"PROCESSING_SOFTWARE_VERSION_SR": "LaSRC_1.6.0",
                                         "DATE_PRODUCT_GENERATED": f"{pid.split('_')[4][:4]}-"
                                                                   f"{pid.split('_')[4][4:6]}-"
                                                                   f"{pid.split('_')[4][6:]}T10:00:00Z"},
            "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": params,
        }}

    def _landsat_item(self, p: _Plan, pid: str, sat: str, dt: str, cloud_cover: float) -> dict[str, Any]:
        geom, bbox = self._geometry()
        proj = {k: v for k, v in self._proj(30).items() if k != "proj:bbox"}
        assets: dict[str, Any] = {}
        for b, (key, title, name, cw) in _LANDSAT_INFO.items():
            assets[key] = {
                "title": title, "type": "image/vnd.stac.geotiff; cloud-optimized=true", "roles": ["data"],
                "href": f"./{pid}_{b}.TIF",
                "eo:bands": [{"name": name, "common_name": key, "center_wavelength": cw}],
                "raster:bands": [{"nodata": 0, "data_type": "uint16", "spatial_resolution": 30,
                                  "scale": LANDSAT_SCALE, "offset": LANDSAT_OFFSET, "unit": "1"}],
            }
        assets["qa_pixel"] = {
            "title": "Pixel Quality Assessment Band", "type": "image/vnd.stac.geotiff; cloud-optimized=true",
            "roles": ["cloud", "cloud-shadow", "snow-ice", "water-mask"], "href": f"./{pid}_QA_PIXEL.TIF",
            "raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": 30, "unit": "bit index"}],
            "classification:bitfields": _qa_bitfields(),
        }
        assets["mtl.json"] = {"title": "Product Metadata File (json)", "type": "application/json",
                              "roles": ["metadata"], "href": f"./{pid}_MTL.json"}
        props = {
            "datetime": dt, "platform": "LANDSAT_9" if sat == "LC09" else "LANDSAT_8",
            "instruments": ["OLI", "TIRS"], "eo:cloud_cover": cloud_cover, "landsat:cloud_cover_land": cloud_cover,
            "landsat:wrs_type": "2", "landsat:wrs_path": _WRS[0], "landsat:wrs_row": _WRS[1],
            "landsat:collection_category": "T1", "landsat:collection_number": "02",
            "landsat:correction": "L2SP", "landsat:product_id": pid,
            "proj:epsg": int(CRS.split(":")[1]), **proj,
        }
        return {
            "type": "Feature", "stac_version": "1.0.0",
            "stac_extensions": [_STAC_EXT["eo"], _STAC_EXT["proj"], _STAC_EXT["raster"],
                                _STAC_EXT["classification"]],
            "id": f"{pid}_SR", "description": "Landsat Collection 2 Level-2 Surface Reflectance Product",
            "geometry": geom, "bbox": bbox, "properties": props,
            "links": [{"rel": "root", "href": "../catalog.json", "type": "application/json"},
                      {"rel": "parent", "href": "../catalog.json", "type": "application/json"}],
            "assets": assets,
        }

    # -- the folders' catalogues --
    def _collections(self, acqs: Sequence[Acquisition], staged: Mapping[str, Path]) -> None:
        for lay in self.opts.layouts:
            if lay == "safe":
                continue
            root = staged[lay]
            mine = [a for a in acqs if lay in a.paths]
            items = []
            for a in mine:
                item = json.loads(a.paths[lay].read_text(encoding="utf-8"))
                rel = a.paths[lay].parent.relative_to(root).as_posix()
                for asset in item["assets"].values():
                    asset["href"] = _join(rel, asset["href"])
                item["links"] = [lk for lk in item["links"] if lk["rel"] in ("collection",)]
                for lk in item["links"]:
                    lk["href"] = "./collection.json"
                items.append(item)
            _write_json(root / "items.json", {"type": "FeatureCollection", "features": items})
            _, bbox = self._geometry()
            times = [a.datetime for a in mine]
            cid = {"stac": "sentinel-2-c1-l2a", "cdse": "sentinel-2-l2a", "landsat": "landsat-c2l2-sr"}[lay]
            links = [{"rel": "root", "href": "./catalog.json", "type": "application/json"},
                     {"rel": "parent", "href": "./catalog.json", "type": "application/json"}]
            links += [{"rel": "item", "href": "./" + a.paths[lay].relative_to(root).as_posix(),
                       "type": "application/geo+json"} for a in mine]
            _write_json(root / "collection.json", {
                "type": "Collection", "stac_version": "1.0.0", "id": cid,
                "description": f"Synthetic {cid} acquisitions over the geoseg synth region (not real data)",
                "license": "CC-BY-4.0", "extent": {"spatial": {"bbox": [bbox]},
                                                   "temporal": {"interval": [[min(times), max(times)]]}},
                "links": links,
            })
            _write_json(root / "catalog.json", {
                "type": "Catalog", "stac_version": "1.0.0", "id": f"geoseg-synth-{lay}",
                "description": f"geoseg synth: the region's {lay} products",
                "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"},
                          {"rel": "child", "href": "./collection.json", "type": "application/json"}],
            })


# --- helpers --------------------------------------------------------------------------------
def _join(folder: str, href: str) -> str:
    if href.startswith("../"):
        return href  # cdse items sit at the layout's root already
    return f"./{folder}/{href[2:]}" if folder not in ("", ".") else href


def _rebase(a: Acquisition, staged: Mapping[str, Path], out: Path) -> Acquisition:
    """The acquisition's paths moved from the staged folders to the final ones."""
    def move(p: Path) -> Path:
        for lay, d in staged.items():
            if p.is_relative_to(d):
                return out / lay / p.relative_to(d)
        return p
    return Acquisition(a.index, a.id, a.date, a.datetime, a.day, a.platform, a.baseline, a.cloud_fraction,
                       a.cloud_cover, a.overcast, dict(a.item_ids), {k: move(v) for k, v in a.paths.items()},
                       {k: {b: move(v) for b, v in m.items()} for k, m in a.bands.items()})


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _cog(src: Path, dst: Path, resampling: str) -> None:
    """A single-band COG of ``src`` (DEFLATE with the predictor for uint16, tiled 512, overviews)."""
    with rasterio.open(src) as s:
        predictor = "YES" if s.dtypes[0] == "uint16" else "NO"
    rasterio.shutil.copy(src, dst, driver="COG", COMPRESS="DEFLATE", PREDICTOR=predictor, LEVEL="1",
                         BLOCKSIZE="512", OVERVIEWS="AUTO", RESAMPLING=resampling, NUM_THREADS="2")
    Path(str(dst) + ".aux.xml").unlink(missing_ok=True)


def _jp2(src: Path, dst: Path) -> None:
    """A lossless, georeferenced JPEG 2000 of ``src`` (GDAL's JP2OpenJPEG: reversible 5/3 wavelet)."""
    rasterio.shutil.copy(src, dst, driver="JP2OpenJPEG", REVERSIBLE="YES", QUALITY="100", YCC="NO",
                         BLOCKXSIZE="1024", BLOCKYSIZE="1024")
    Path(str(dst) + ".aux.xml").unlink(missing_ok=True)


def _scl_classes() -> list[dict[str, Any]]:
    return [{"value": k, "name": n, "description": n.replace("_", " ").capitalize()}
            for k, n in enumerate(_SCL_NAMES)]


def _qa_bitfields() -> list[dict[str, Any]]:
    def flag(offset: int, name: str, desc: str) -> dict[str, Any]:
        return {"name": name, "description": desc, "offset": offset, "length": 1,
                "classes": [{"name": f"not_{name}", "value": 0, "description": f"{desc}: no"},
                            {"name": name, "value": 1, "description": f"{desc}: yes"}]}

    def conf(offset: int, name: str) -> dict[str, Any]:
        return {"name": name, "description": name.replace("_", " "), "offset": offset, "length": 2,
                "classes": [{"name": n, "value": v, "description": f"{name.replace('_', ' ')}: {n.replace('_', ' ')}"}
                            for v, n in enumerate(("not_set", "low", "medium", "high"))]}

    return [flag(0, "fill", "Image or fill data"), flag(1, "dilated_cloud", "Dilated cloud"),
            flag(2, "cirrus", "Cirrus mask"), flag(3, "cloud", "Cloud mask"),
            flag(4, "cloud_shadow", "Cloud shadow"), flag(5, "snow", "Snow/Ice"),
            flag(6, "clear", "Cloud or dilated cloud bits are not set"), flag(7, "water", "Water"),
            conf(8, "cloud_confidence"), conf(10, "cloud_shadow_confidence"), conf(12, "snow_ice_confidence"),
            conf(14, "cirrus_confidence")]


def _mgrs_tile(x: float, y: float) -> str:
    """The MGRS 100 km square (``43RFP``) holding the EPSG:32643 point ``(x, y)``."""
    zone = int(CRS[-2:])
    _, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    band = "CDEFGHJKLMNPQRSTUVWX"[min(19, int((lat + 80) // 8))]
    col_sets = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
    col = col_sets[(zone - 1) % 3][int(x // 100_000) - 1]
    rows = "ABCDEFGHJKLMNPQRSTUV"
    row = rows[(int(y // 100_000) + (0 if zone % 2 else 5)) % 20]
    return f"{zone}{band}{col}{row}"


def _footprint(transform: Affine, shape: tuple[int, int], collar: Any) -> Any:
    """The valid-data footprint (region minus collar) in EPSG:4326, simplified to ~20 m."""
    h, w = shape
    x0, y0 = transform.c, transform.f
    box = shapely.box(x0, y0 + transform.e * h, x0 + transform.a * w, y0)
    g = box if collar is None else shapely.difference(box, collar)
    if g.geom_type != "Polygon":
        g = max(getattr(g, "geoms", [g]), key=lambda p: p.area)
    g = shapely.simplify(g, 20.0)
    tr = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    g = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return shapely.set_precision(shapely.orient_polygons(g) if hasattr(shapely, "orient_polygons") else g, 1e-9)
