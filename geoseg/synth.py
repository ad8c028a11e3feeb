"""A synthetic multi-date crop region over real Punjab districts, with its truth.

Real crop labels at scale are not available offline, so the demo and most tests use a
region made here: deterministic by seed, any size, and realistic enough that a model
has to use the whole time series to tell the crops apart.

What is made
------------
* **Vectors first, for the whole region.** A perturbed road grid (link roads every
  1.2-2.5 km along a slightly rotated local grid), a few winding major roads, canals
  and distributaries, and villages (irregular built-up blobs, some with a pond). Field
  parcels are Voronoi cells of a jittered, unevenly spaced lattice (150-500 m across)
  with the network and villages cut out; each field grows one crop, drawn with
  Punjab-like frequencies (rice and wheat dominate) that drift smoothly across the
  region. Everything that is not a field is the background (non-crop) class.
* **Pixels window by window** (512 x 512): fields are rasterised at 2 x 2 sub-pixels
  so that boundary pixels are true mixtures; each crop follows its own seasonal
  trajectory (fractions of green vegetation, bare soil, standing water and dry residue
  mixed from fixed endmember spectra), shifted and scaled per field (sowing date,
  vigour, soil brightness), with smooth within-field texture and pixel noise seeded from
  ``(seed, window row, window column)``. Memory is bounded by one window, so a
  10980 x 10980 Sentinel-2-sized region fits in well under 2 GB.
* **Nodata**: a slanted collar with a detector-stagger sawtooth edge (like a real
  Sentinel-2 swath edge, a few % of the area) where every band is 0, and optional cloud
  gaps (smooth random blobs, ``cloud_fraction`` of the area on each date) where one
  date's four bands are 0.

Every output is written under a temporary name and renamed into place; the same
arguments give byte-identical files (GDAL writes no timestamps in GeoTIFFs, and the
GeoPackage ``last_change`` timestamp is pinned).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window

from geoseg.classes import NODATA, ClassTable, default_classes, load_classes
from geoseg.errors import ConfigError, RasterWriteError
from geoseg.io.raster import RasterWriter, atomic_path, mask_writer, write_text_atomic
from geoseg.io.vector import reproducible_gpkg
from geoseg.types import Shape2d

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SynthRegion",
    "synthesize",
    "season_dates",
    "BANDS",
    "CRS",
    "DEFAULT_CENTRE",
    "OUTSIDE",
    "MAX_DATES",
]

#: Bands of each date, in file order (Sentinel-2 B2, B3, B4, B8).
BANDS = ("B", "G", "R", "NIR")
#: The CRS of every output: WGS 84 / UTM zone 43N.
CRS = "EPSG:32643"
#: Default region centre (EPSG:32643 metres): near Khanna, where Ludhiana, Fatehgarh
#: Sahib, Patiala and Sangrur districts meet, so even small regions span 2-3 districts.
DEFAULT_CENTRE = (604500.0, 3381000.0)
#: District name given in the truth table to pixels whose centre lies in no Punjab district.
OUTSIDE = "(outside Punjab)"
#: Most acquisition dates a region can have.
MAX_DATES = 24

_SEASON_START = date(2024, 6, 15)  # kharif (monsoon) sowing ...
_SEASON_DAYS = 245  # ... to 2025-02-15, rabi (winter) wheat near its peak
_BLOCK = 512  # window (and internal tile) size
_MARGIN = 1000.0  # metres of layout generated beyond the region on every side
_MAX_EXTENT = 200_000.0  # metres; larger regions would hold millions of fields
_MIN_FIELD_M2 = 5000.0  # field pieces smaller than 0.5 ha become background
_GPKG_TIMESTAMP = "2024-06-15T00:00:00.000Z"
_REFLECTANCE_SCALE = 10000

# --- spectra -------------------------------------------------------------------------
# Endmember surface reflectance (B, G, R, NIR), roughly Sentinel-2 L2A.
_ENDMEMBERS = {
    "veg": (0.030, 0.060, 0.035, 0.420),  # green canopy
    "soil": (0.090, 0.125, 0.165, 0.235),  # dry alluvial soil
    "water": (0.070, 0.065, 0.045, 0.025),  # turbid paddy / canal water
    "dry": (0.065, 0.090, 0.120, 0.260),  # senescent crop, stubble, residue
    "built": (0.110, 0.120, 0.135, 0.180),  # roofs, roads
}
# Day anchors (days after 15 June 2024) of the seasonal trajectories below.
_DAYS = (-30, 0, 45, 75, 110, 140, 165, 200, 245, 290, 330)
# Cover fractions per endmember at each anchor day; soil takes what is left.
_TRAJECTORIES: dict[str, dict[str, tuple[float, ...]]] = {
    # kharif rice: puddled and flooded at transplanting, closed canopy Aug-Sep, harvested Oct
    "rice": {
        "veg": (0.05, 0.10, 0.55, 0.85, 0.80, 0.15, 0.10, 0.12, 0.15, 0.12, 0.10),
        "water": (0.00, 0.70, 0.30, 0.05, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00),
        "dry": (0.10, 0.00, 0.00, 0.00, 0.10, 0.55, 0.45, 0.30, 0.20, 0.15, 0.10),
    },
    # rabi wheat: bare through the monsoon, sown in November, peak greenness in February
    "wheat": {
        "veg": (0.10, 0.05, 0.12, 0.15, 0.10, 0.05, 0.20, 0.65, 0.90, 0.55, 0.15),
        "dry": (0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.00, 0.00, 0.30, 0.60),
    },
    # sugarcane: a year-round canopy, densest after the monsoon
    "sugarcane": {
        "veg": (0.45, 0.50, 0.70, 0.85, 0.85, 0.80, 0.70, 0.60, 0.55, 0.50, 0.45),
        "dry": (0.15, 0.10, 0.05, 0.05, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.30),
    },
    # cotton: sown in May, open rows, bolls and senescence Oct-Nov, then stalks
    "cotton": {
        "veg": (0.05, 0.30, 0.60, 0.70, 0.60, 0.30, 0.12, 0.08, 0.06, 0.06, 0.06),
        "dry": (0.05, 0.05, 0.05, 0.05, 0.25, 0.40, 0.35, 0.20, 0.10, 0.05, 0.05),
    },
    # kharif maize: fast canopy in July, drying from late August, harvested in September
    "maize": {
        "veg": (0.05, 0.10, 0.70, 0.60, 0.15, 0.08, 0.06, 0.06, 0.06, 0.06, 0.05),
        "dry": (0.00, 0.00, 0.00, 0.20, 0.50, 0.30, 0.15, 0.10, 0.05, 0.05, 0.05),
    },
    # fallow: bare soil all year, a few monsoon weeds
    "fallow": {
        "veg": (0.05, 0.06, 0.15, 0.20, 0.12, 0.06, 0.05, 0.05, 0.05, 0.05, 0.05),
        "dry": (0.10, 0.10, 0.05, 0.05, 0.10, 0.15, 0.15, 0.10, 0.10, 0.10, 0.10),
    },
}
# Background materials (code = row of the spectral table): margins/trees, roads, water, villages.
_MATERIALS: tuple[dict[str, tuple[float, ...]], ...] = (
    {"veg": (0.25, 0.25, 0.40, 0.45, 0.40, 0.30, 0.28, 0.30, 0.32, 0.30, 0.25),
     "dry": (0.20,) * 11},
    {"built": (0.75,) * 11, "veg": (0.08,) * 11},
    {"water": (0.85,) * 11, "veg": (0.05, 0.05, 0.10, 0.10, 0.08, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05)},
    {"built": (0.55,) * 11, "veg": (0.25, 0.25, 0.35, 0.38, 0.35, 0.30, 0.28, 0.28, 0.30, 0.28, 0.25)},
)
_MAT_MARGIN, _MAT_ROAD, _MAT_WATER, _MAT_VILLAGE = range(4)
_N_MAT = len(_MATERIALS)
# Relative frequencies of crops (classes named otherwise get _OTHER_WEIGHT).
_WEIGHTS = {"rice": 0.40, "wheat": 0.34, "sugarcane": 0.05, "cotton": 0.06, "maize": 0.06, "fallow": 0.09}
_OTHER_WEIGHT = 0.06


@dataclass(frozen=True, slots=True, eq=False)
class SynthRegion:
    """What :func:`synthesize` wrote, and the truth it counted.

    Attributes
    ----------
    out_dir : Path
        The output directory.
    scene, labels, fields, districts, classes, truth_csv : Path
        ``scene.tif``, ``labels.tif``, ``fields.gpkg``, ``districts.gpkg``,
        ``classes.yaml`` and ``truth.csv`` in ``out_dir``.
    shape : Shape2d
        ``(height, width)`` in pixels.
    transform : Affine
        The grid of both rasters (north-up, ``pixel_size`` metres).
    crs : str
        ``"EPSG:32643"``.
    dates : tuple of str
        ISO acquisition dates, in band order.
    seed : int
        The seed it was made with.
    n_fields : int
        Field polygons in ``fields.gpkg``.
    district_names : tuple of str
        Districts in ``districts.gpkg`` (those intersecting the region), sorted.
    collar_fraction, cloud_fraction : float
        Fractions of the region's pixels that are nodata in ``labels.tif`` because of the
        collar, and because of clouds on at least one date (outside the collar).
    truth : pandas.DataFrame
        ``truth.csv`` as a table: ``district``, ``class_id``, ``crop``, ``pixels``,
        ``hectares``, one row per district and class with at least one valid pixel.
    """

    out_dir: Path
    scene: Path
    labels: Path
    fields: Path
    districts: Path
    classes: Path
    truth_csv: Path
    shape: Shape2d
    transform: Affine
    crs: str
    dates: tuple[str, ...]
    seed: int
    n_fields: int
    district_names: tuple[str, ...]
    collar_fraction: float
    cloud_fraction: float
    truth: pd.DataFrame = field(repr=False)

    def hectares_by_class(self) -> dict[str, float]:
        """Hectares of valid pixels per class name, summed over districts (classes present only)."""
        grouped = self.truth.groupby(["class_id", "crop"], sort=True)["hectares"].sum()
        return {str(crop): float(ha) for (_, crop), ha in grouped.items()}

    def summary(self) -> str:
        """A few printable lines: files, size, dates, fields, districts, hectares per class."""
        h, w = self.shape
        res = abs(self.transform.a)
        ha = self.hectares_by_class()
        total = sum(ha.values())
        lines = [
            f"synthetic region in {self.out_dir} (seed {self.seed})",
            f"  scene.tif       {w} x {h} px at {res:g} m, {len(self.dates) * len(BANDS)} bands "
            f"({len(self.dates)} dates x {','.join(BANDS)}), uint16 reflectance x {_REFLECTANCE_SCALE}, "
            f"nodata 0, {self.crs}",
            f"  dates           {', '.join(self.dates)}",
            f"  labels.tif      nodata 255 on {100 * self.collar_fraction:.1f} % (collar) + "
            f"{100 * self.cloud_fraction:.1f} % (clouds)",
            f"  fields.gpkg     {self.n_fields:,} fields",
            f"  districts.gpkg  {', '.join(self.district_names)}",
            f"  truth.csv       {total:,.1f} ha of valid pixels: "
            + ", ".join(f"{k} {v:,.1f}" for k, v in sorted(ha.items(), key=lambda kv: -kv[1])),
        ]
        return "\n".join(lines)


def season_dates(n: int) -> tuple[str, ...]:
    """``n`` acquisition dates spread evenly over a kharif + rabi season (ISO strings).

    The season runs from 15 June 2024 (rice transplanting) to 15 February 2025 (wheat
    near its peak); one date is 15 June.

    Examples
    --------
    >>> season_dates(4)
    ('2024-06-15', '2024-09-05', '2024-11-25', '2025-02-15')
    """
    return tuple(d.isoformat() for d in _season(n)[0])


def _season(n: int) -> tuple[list[date], np.ndarray]:
    days = np.rint(np.linspace(0, _SEASON_DAYS, n)).astype(int) if n > 1 else np.zeros(1, int)
    return [_SEASON_START + timedelta(days=int(d)) for d in days], days.astype(float)


# --- argument checks -----------------------------------------------------------------
def _int_arg(name: str, value: Any, lo: int, hi: int | None, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an int, got {value!r} ({type(value).__name__}); {hint}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be {rng}, got {v}; {hint}")
    return v


def _resolve_classes(classes: ClassTable | str | os.PathLike[str] | None) -> tuple[ClassTable, int, list[int]]:
    if classes is None:
        table = default_classes()
    elif isinstance(classes, ClassTable):
        table = classes
    elif isinstance(classes, (str, os.PathLike)):
        table = load_classes(classes)
    else:
        raise ConfigError(
            f"classes must be a ClassTable, a path to a class file or None, got {type(classes).__name__}; "
            f"pass e.g. geoseg.default_classes()"
        )
    background = [c.id for c in table.classes if not c.crop]
    crops = [c.id for c in table.classes if c.crop]
    if not background or not crops:
        missing = "non-crop class (crop: false)" if not background else "crop class"
        raise ConfigError(
            f"classes ({table.source}) has no {missing}; the synthetic region needs one non-crop class "
            f"for roads, canals and villages and one or more crop classes for fields - e.g. "
            f"{{id: 0, name: background, color: '#bdbdbd', crop: false}} then the crops"
        )
    return table, background[0], crops


# --- smooth random fields --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Waves:
    """A smooth random field: a sum of plane waves, evaluated without 2-D trigonometry."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, n: int, wavelengths: tuple[float, float]) -> "_Waves":
        theta = rng.uniform(0, 2 * np.pi, n)
        lam = np.exp(rng.uniform(np.log(wavelengths[0]), np.log(wavelengths[1]), n))
        k = 2 * np.pi / lam
        amp = np.sqrt(2.0 / n) * np.ones(n)  # unit variance
        return cls(k * np.cos(theta), k * np.sin(theta), rng.uniform(0, 2 * np.pi, n), amp)

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Values at points ``(x, y)`` (same shape)."""
        arg = self.kx[:, None] * x.ravel()[None] + self.ky[:, None] * y.ravel()[None] + self.phase[:, None]
        return (self.amp[:, None] * np.cos(arg)).sum(axis=0).reshape(np.shape(x))

    def grid(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Values on the grid ``y (rows) x x (cols)``, float32, by cos(a+b) = cos a cos b - sin a sin b."""
        ax = self.kx[:, None] * x[None]
        by = self.ky[:, None] * y[None] + self.phase[:, None]
        cx, sx = np.cos(ax).astype(np.float32), np.sin(ax).astype(np.float32)
        cy = (self.amp[:, None] * np.cos(by)).astype(np.float32)
        sy = (self.amp[:, None] * np.sin(by)).astype(np.float32)
        out = np.zeros((len(y), len(x)), np.float32)
        for i in range(len(self.kx)):  # a few components; elementwise (no BLAS) keeps it bit-reproducible
            out += np.multiply.outer(cy[i], cx[i])
            out -= np.multiply.outer(sy[i], sx[i])
        return out


# --- layout --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Layout:
    fields: np.ndarray  # shapely polygons, clipped to the footprint, sorted north to south
    field_class: np.ndarray  # class id per field
    bg: np.ndarray  # background features (roads, canals, villages, ponds)
    bg_code: np.ndarray  # material code per background feature
    collar: Any  # shapely polygon in EPSG:32643, or None


def _wiggly_lines(
    rng: np.random.Generator,
    centres: np.ndarray,
    angles: np.ndarray,
    length: float,
    amp: tuple[float, float],
    wavelength: tuple[float, float],
    step: float = 50.0,
) -> np.ndarray:
    """Polylines ``(n, m, 2)`` through ``centres`` along ``angles``, perturbed sideways."""
    n = len(centres)
    seg = 20  # vertices per piece - 1 (see _pieces)
    m = int(math.ceil(length / step / seg)) * seg + 1
    t = np.linspace(-length / 2, length / 2, m)
    a = rng.uniform(*amp, (n, 3)) * np.array([1.0, 0.5, 0.25])
    lam = np.exp(rng.uniform(np.log(wavelength[0]), np.log(wavelength[1]), (n, 3))) * np.array([1.0, 0.45, 0.2])
    ph = rng.uniform(0, 2 * np.pi, (n, 3))
    off = (a[:, None, :] * np.sin(2 * np.pi * t[None, :, None] / lam[:, None, :] + ph[:, None, :])).sum(-1)
    d = np.stack([np.cos(angles), np.sin(angles)], -1)[:, None, :]
    nrm = np.stack([-np.sin(angles), np.cos(angles)], -1)[:, None, :]
    return centres[:, None, :] + t[None, :, None] * d + off[..., None] * nrm


def _pieces(lines: np.ndarray, widths: np.ndarray, clip: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cut polylines into ~1 km pieces, buffer them, keep those touching ``clip``."""
    n, m, _ = lines.shape
    seg = 20
    k = (m - 1) // seg
    idx = np.arange(k)[:, None] * seg + np.arange(seg + 1)[None]  # (k, seg+1), sharing end vertices
    coords = lines[:, idx].reshape(n * k, seg + 1, 2)
    geoms = shapely.linestrings(coords)
    w = np.repeat(widths, k)
    keep = shapely.intersects(geoms, clip)
    polys = shapely.buffer(geoms[keep], w[keep] / 2, quad_segs=2)
    return polys, np.flatnonzero(keep) // k


def _subtract(polys: np.ndarray, cutters: np.ndarray) -> np.ndarray:
    """``polys[i]`` minus every cutter it intersects; vectorised in rounds over the pairs."""
    if len(polys) == 0 or len(cutters) == 0:
        return polys
    pi, ci = shapely.STRtree(cutters).query(polys, predicate="intersects")
    order = np.lexsort((ci, pi))
    pi, ci = pi[order], ci[order]
    out = polys.copy()
    if len(pi) == 0:
        return out
    first = np.r_[True, pi[1:] != pi[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(len(pi)) - np.repeat(starts, np.diff(np.r_[starts, len(pi)]))
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        out[pi[sel]] = shapely.difference(out[pi[sel]], cutters[ci[sel]])
    return out


def _polygons_only(geoms: np.ndarray, min_area: float) -> tuple[np.ndarray, np.ndarray]:
    """Explode to single polygons of at least ``min_area``; return them and their source index."""
    parts, src = shapely.get_parts(geoms, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area)
    return parts[keep], src[keep]


def _collar(rng: np.random.Generator, height: int, width: int) -> Any:
    """The nodata collar in pixel coordinates (x = col, y = row): a slanted swath edge with a sawtooth."""
    frac = rng.uniform(0.03, 0.06)
    east = bool(rng.integers(2))
    slope = min(math.tan(math.radians(12.5)), 2 * frac * width / max(height, 1)) * (1 if rng.integers(2) else -1)
    period, amp = 120.0, 2.5
    rows = np.arange(-1.0, height + 1.0 + period / 2, period / 2)
    rows[-1] = height + 1.0
    saw = amp * np.where(np.arange(len(rows)) % 2 == 0, 1.0, -1.0) + rng.uniform(-0.5, 0.5, len(rows))
    edge = frac * width + slope * (rows - height / 2) + saw
    far = -(width + 10.0) - 2 * abs(slope) * height
    if east:
        edge, far = width - edge, 2 * width + 10.0 + 2 * abs(slope) * height
    ring = np.concatenate([[[far, -1.0]], np.stack([edge, rows], -1), [[far, height + 1.0]]])
    return shapely.intersection(shapely.Polygon(ring), shapely.box(0, 0, width, height))


def _layout(
    seed: int, height: int, width: int, transform: Affine, table: ClassTable, crop_ids: list[int], collar: bool
) -> _Layout:
    """Roads, canals, villages and field polygons (with their crops) for the whole region, in metres."""
    ss = np.random.SeedSequence([seed, 20240615])
    r_net, r_vil, r_cell, r_cls, r_col = (np.random.default_rng(s) for s in ss.spawn(5))
    ps = transform.a
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + width * ps, y1 - height * ps
    region = shapely.box(x0, y0, x1, y1)
    ext = shapely.box(x0 - _MARGIN, y0 - _MARGIN, x1 + _MARGIN, y1 + _MARGIN)
    ex0, ey0, ex1, ey1 = x0 - _MARGIN, y0 - _MARGIN, x1 + _MARGIN, y1 + _MARGIN
    cx, cy = (ex0 + ex1) / 2, (ey0 + ey1) / 2
    diag = math.hypot(ex1 - ex0, ey1 - ey0)
    phi = math.radians(r_net.uniform(-12, 12))  # orientation of the land-consolidation grid
    u_dir = np.array([math.cos(phi), math.sin(phi)])
    v_dir = np.array([-math.sin(phi), math.cos(phi)])

    # -- network: link roads on a perturbed grid, major roads, canals, distributaries --
    def offsets(spacing: tuple[float, float]) -> np.ndarray:
        n = int(diag / spacing[0]) + 2
        steps = r_net.uniform(*spacing, n)
        return -diag / 2 + r_net.uniform(0, spacing[1]) + np.cumsum(steps) - steps[0]

    ou, ov = offsets((1500.0, 2500.0)), offsets((1200.0, 2000.0))
    centre = np.array([cx, cy])
    lines, widths, codes = [], [], []
    for offs, along, across in ((ov, phi, v_dir), (ou, phi + math.pi / 2, u_dir)):
        c = centre[None] + offs[:, None] * across[None]
        lines.append(_wiggly_lines(r_net, c, np.full(len(offs), along), diag + 2000, (10, 40), (800, 3000)))
        widths.append(r_net.uniform(9, 14, len(offs)))
        codes.append(np.full(len(offs), _MAT_ROAD))
    n_major = 1 + int(diag // 15000)
    n_canal = 1 + int(diag // 25000)
    n_dist = 1 + int(diag // 12000)
    for n, ang, amp, lam, wid, code in (
        (n_major, (0, np.pi), (60, 180), (3000, 8000), (22, 32), _MAT_ROAD),
        (n_canal, (np.pi / 4 - 0.3, np.pi / 4 + 0.3), (100, 300), (4000, 10000), (28, 40), _MAT_WATER),
        (n_dist, (0, np.pi), (40, 150), (2000, 6000), (12, 18), _MAT_WATER),
    ):
        c = np.stack([r_net.uniform(ex0, ex1, n), r_net.uniform(ey0, ey1, n)], -1)
        lines.append(_wiggly_lines(r_net, c, r_net.uniform(*ang, n), diag + 2000, amp, lam))
        widths.append(r_net.uniform(*wid, n))
        codes.append(np.full(n, code))
    net_polys, net_codes = [], []
    for ln, wd, cd in zip(lines, widths, codes):
        p, src = _pieces(ln, wd, ext)
        net_polys.append(p)
        net_codes.append(cd[src])

    # -- villages (irregular blobs on a jittered ~2.3 km lattice) and ponds --
    sp = 2300.0
    gx, gy = np.meshgrid(np.arange(ex0 - sp / 2, ex1 + sp, sp), np.arange(ey0 - sp / 2, ey1 + sp, sp))
    vc = np.stack([gx.ravel(), gy.ravel()], -1) + r_vil.uniform(-0.35 * sp, 0.35 * sp, (gx.size, 2))
    keep = r_vil.random(len(vc)) < 0.8
    vc = vc[keep]
    nv, nang = len(vc), 24
    ang = np.linspace(0, 2 * np.pi, nang, endpoint=False)
    rad = r_vil.uniform(120, 350, nv)[:, None] * (
        1 + (r_vil.uniform(0, 0.25, (nv, 3))[:, :, None]
             * np.cos(np.arange(2, 5)[None, :, None] * ang[None, None] + r_vil.uniform(0, 6.3, (nv, 3))[:, :, None])
             ).sum(1)
    )
    ring = vc[:, None] + rad[..., None] * np.stack([np.cos(ang), np.sin(ang)], -1)[None]
    villages = shapely.polygons(np.concatenate([ring, ring[:, :1]], 1)) if nv else np.empty(0, object)
    has_pond = r_vil.random(nv) < 0.5
    pa = r_vil.uniform(0, 2 * np.pi, nv)
    pr = r_vil.uniform(25, 60, nv)
    pc = vc + (0.8 * rad.min(1))[:, None] * np.stack([np.cos(pa), np.sin(pa)], -1)
    ponds = shapely.buffer(shapely.points(pc[has_pond]), pr[has_pond], quad_segs=4)
    bg = np.concatenate([villages, *net_polys, ponds])
    bg_code = np.concatenate([np.full(nv, _MAT_VILLAGE), *net_codes, np.full(len(ponds), _MAT_WATER)])
    on = shapely.intersects(bg, ext)
    bg, bg_code = bg[on], bg_code[on].astype(np.int32)

    # -- field cells: Voronoi of a jittered, unevenly spaced lattice in the grid frame --
    su, sv = 330.0, 230.0
    half = diag / 2 + 500
    u = np.arange(-half, half, su)
    v = np.arange(-half, half, sv)
    lu, pu = r_cell.uniform(2500, 5000), r_cell.uniform(0, 2 * np.pi)
    lv, pv = r_cell.uniform(2500, 5000), r_cell.uniform(0, 2 * np.pi)
    u = u + 0.2 * lu / (2 * np.pi) * np.sin(2 * np.pi * u / lu + pu)  # spacing varies +-20 %
    v = v + 0.2 * lv / (2 * np.pi) * np.sin(2 * np.pi * v / lv + pv)
    uu, vv = np.meshgrid(u, v)
    uu = uu + r_cell.uniform(-0.3, 0.3, uu.shape) * su
    vv = vv + r_cell.uniform(-0.3, 0.3, vv.shape) * sv
    pts = centre[None] + uu.reshape(-1, 1) * u_dir[None] + vv.reshape(-1, 1) * v_dir[None]
    pts = pts[r_cell.random(len(pts)) > 0.15]  # merge some cells into bigger fields
    inside = (pts[:, 0] > ex0 - 600) & (pts[:, 0] < ex1 + 600) & (pts[:, 1] > ey0 - 600) & (pts[:, 1] < ey1 + 600)
    pts = pts[inside]
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=ext))
    cells = cells[shapely.intersects(cells, region)]
    cells = _subtract(cells, bg)
    fields, _ = _polygons_only(cells, _MIN_FIELD_M2)

    # -- clip to the region and its footprint (region minus collar) --
    collar_geom = None
    if collar:
        px = _collar(r_col, height, width)
        collar_geom = shapely.affinity.affine_transform(px, [transform.a, transform.b, transform.d, transform.e,
                                                             transform.c, transform.f])
        cut = shapely.difference(region, collar_geom)
    else:
        cut = region
    inner = shapely.contains_properly(cut, fields)
    fields = fields.copy()
    fields[~inner] = shapely.intersection(fields[~inner], cut)
    fields, _ = _polygons_only(fields, _MIN_FIELD_M2)
    c = shapely.centroid(fields)
    fxy = shapely.get_coordinates(c)
    order = np.lexsort((np.round(fxy[:, 0], 3), -np.round(fxy[:, 1], 3)))
    fields, fxy = fields[order], fxy[order]

    # -- one crop per field, frequencies drifting smoothly over ~3-12 km --
    names = [table[i].name for i in crop_ids]
    base = np.array([_WEIGHTS.get(n, _OTHER_WEIGHT) for n in names])
    zones = np.stack([_Waves.make(r_cls, 8, (3000, 12000)).at(fxy[:, 0] - x0, fxy[:, 1] - y0)
                      for _ in crop_ids], -1) if len(fields) else np.zeros((0, len(crop_ids)))
    w = base[None] * np.exp(0.9 * zones)
    cdf = np.cumsum(w / w.sum(1, keepdims=True), 1)
    draw = r_cls.random(len(fields))
    pick = np.minimum((cdf < draw[:, None]).sum(1), len(crop_ids) - 1)
    field_class = np.asarray(crop_ids, dtype=np.int32)[pick]
    return _Layout(fields, field_class, bg, bg_code, collar_geom)


# --- spectra -------------------------------------------------------------------------
def _trajectory(name: str) -> dict[str, tuple[float, ...]]:
    """The cover-fraction trajectory of a crop; unknown names get a made-up, fixed one."""
    if name in _TRAJECTORIES:
        return _TRAJECTORIES[name]
    r = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    d = np.asarray(_DAYS, float)
    peak, width, amp = r.uniform(0, 290), r.uniform(30, 80), r.uniform(0.5, 0.85)
    veg = 0.06 + amp * np.exp(-(((d - peak) / width) ** 2))
    dry = 0.3 * np.exp(-(((d - peak - 1.5 * width) / width) ** 2))
    return {"veg": tuple(veg), "dry": tuple(dry)}


def _fractions(traj: dict[str, tuple[float, ...]], days: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.interp(days, _DAYS, v) for k, v in traj.items()}


def _mix(fr: dict[str, np.ndarray], soil_gain: np.ndarray | float = 1.0) -> np.ndarray:
    """Reflectance (..., 4) from cover fractions (each ...); soil fills the rest."""
    em = {k: np.asarray(v) for k, v in _ENDMEMBERS.items()}
    zero = np.zeros_like(next(iter(fr.values())))
    others = sum((fr.get(k, zero) for k in ("veg", "water", "dry", "built")), zero)
    scale = np.where(others > 1, 1 / np.maximum(others, 1e-9), 1.0)
    soil = np.clip(1 - others * scale, 0, 1)
    out = soil[..., None] * em["soil"] * np.asarray(soil_gain)[..., None]
    for k in ("veg", "water", "dry", "built"):
        if k in fr:
            out = out + (fr[k] * scale)[..., None] * em[k]
    return out


def _spectral_table(seed: int, layout: _Layout, table: ClassTable, days: np.ndarray) -> np.ndarray:
    """Mean reflectance per code, shape (bands, codes): background materials, then one row per field."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    n = len(layout.fields)
    nd = len(days)
    out = np.zeros((_N_MAT + n, nd, 4))
    for m, traj in enumerate(_MATERIALS):
        out[m] = _mix(_fractions(traj, days))
    shift = rng.normal(0, 10, n)  # sowing / transplanting date, days
    vigour = np.clip(rng.normal(1, 0.12, n), 0.6, 1.35)
    soil = np.clip(rng.normal(1, 0.10, n), 0.75, 1.3)
    water = rng.uniform(0.5, 1.0, n)  # standing water: direct seeding ... puddled transplanting
    offset = rng.normal(0, 0.006, (n, nd, 4))
    for cid in np.unique(layout.field_class):
        sel = np.flatnonzero(layout.field_class == cid)
        fr = _fractions(_trajectory(table[int(cid)].name), days[None] - shift[sel, None])
        fr["veg"] = np.minimum(fr["veg"] * vigour[sel, None], 0.95)
        if "water" in fr:
            fr["water"] = fr["water"] * water[sel, None]
        out[_N_MAT + sel] = _mix(fr, soil[sel, None])
    out[_N_MAT:] += offset
    return np.ascontiguousarray(np.clip(out, 0.002, 0.9).reshape(_N_MAT + n, nd * 4).T.astype(np.float32))


# --- districts -----------------------------------------------------------------------
def _districts(region: Any) -> Any:
    """Punjab districts (bundled, EPSG:4326) intersecting ``region``, in EPSG:32643, sorted by name."""
    import geopandas as gpd

    text = resources.files("geoseg.data").joinpath("punjab_districts.geojson").read_text(encoding="utf-8")
    gdf = gpd.GeoDataFrame.from_features(json.loads(text)["features"], crs="EPSG:4326")
    gdf = gdf[gdf.geometry.notna()].copy()
    gdf["geometry"] = shapely.make_valid(gdf.geometry.values)
    gdf = gdf.to_crs(CRS)
    gdf = gdf[shapely.intersects(gdf.geometry.values, region)]
    gdf = gdf.sort_values("district", kind="stable").reset_index(drop=True)
    gdf["censuscode"] = gdf["censuscode"].astype("int32")
    return gdf[["district", "st_nm", "censuscode", "geometry"]]


# --- writing -------------------------------------------------------------------------
def _write_gpkg(gdf: Any, path: Path, layer: str) -> None:
    """Write a GeoPackage atomically and reproducibly.

    GDAL stamps ``gpkg_contents.last_change`` with the current time and builds the
    spatial index in a background thread (so the SQLite header's change counter varies
    from run to run); pinning the timestamp and copying the database with
    ``VACUUM INTO`` gives the same bytes for the same content.
    """
    import pyogrio

    raw = atomic_path(path)
    try:
        pyogrio.write_dataframe(gdf, raw, layer=layer, driver="GPKG")
        final = reproducible_gpkg(raw, path, _GPKG_TIMESTAMP)
    finally:
        raw.unlink(missing_ok=True)
    os.replace(final, path)


def _write_text(text: str, path: Path) -> None:

    write_text_atomic(path, text)


def _windows(height: int, width: int) -> list[tuple[int, int, Window]]:
    return [
        (i, j, Window(c, r, min(_BLOCK, width - c), min(_BLOCK, height - r)))
        for i, r in enumerate(range(0, height, _BLOCK))
        for j, c in enumerate(range(0, width, _BLOCK))
    ]


def _burn(
    shapes: Sequence[tuple[Any, int]], shape: tuple[int, int], transform: Affine, fill: int, dtype: str
) -> np.ndarray:
    """Rasterise ``(geometry, value)`` pairs (pixel-centre rule; later shapes win) - no file is opened."""
    if not shapes:
        return np.full(shape, fill, dtype)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=fill, dtype=dtype)


def _reflectance(spectra: np.ndarray, codes: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint16 reflectance (bands, h, w) of one window from 2 x 2 sub-pixel ``codes`` (2h, 2w).

    Each pixel is the mean spectrum of its four sub-pixels (mixed pixels on boundaries),
    times a smooth ``gain`` (texture), plus noise; computed 4 bands (one date) at a time
    so that temporaries stay a few MB.
    """
    h, w = codes.shape[0] // 2, codes.shape[1] // 2
    quads = (codes[0::2, 0::2], codes[0::2, 1::2], codes[1::2, 0::2], codes[1::2, 1::2])
    out = np.empty((spectra.shape[0], h, w), np.uint16)
    for b0 in range(0, spectra.shape[0], len(BANDS)):
        table = spectra[b0: b0 + len(BANDS)]
        refl = table[:, quads[0]]
        for q in quads[1:]:
            refl += table[:, q]
        refl *= np.float32(0.25) * gain
        noise = rng.standard_normal(refl.shape, dtype=np.float32)
        noise *= np.float32(0.004) + np.float32(0.02) * refl
        refl += noise
        refl *= np.float32(_REFLECTANCE_SCALE)
        np.rint(refl, out=refl)
        np.clip(refl, 1, 65535, out=refl)
        out[b0: b0 + len(BANDS)] = refl
    return out


# --- the generator -------------------------------------------------------------------
def synthesize(
    out_dir: str | os.PathLike[str],
    height: int = 2048,
    width: int = 2048,
    seed: int = 0,
    *,
    dates: int = 4,
    cloud_fraction: float = 0.0,
    collar: bool = True,
    classes: ClassTable | str | os.PathLike[str] | None = None,
    origin: tuple[float, float] | None = None,
    pixel_size: float = 10.0,
) -> SynthRegion:
    """Write a synthetic multi-date crop region over real Punjab districts into ``out_dir``.

    Writes, each atomically (temporary name, then rename):

    ``scene.tif``
        ``dates x 4`` bands, date-major (date 1 B, G, R, NIR, date 2 B, ...), uint16
        surface reflectance x 10000, nodata 0 (collar: all bands; clouds: that date's 4
        bands), tiled (512 px) DEFLATE GeoTIFF, EPSG:32643, band descriptions such as
        ``"2024-06-15 NIR"``; tags ``GEOSEG_DATES``, ``GEOSEG_BANDS``, ``GEOSEG_SCALE``.
    ``labels.tif``
        The true class of each pixel's centre, uint8, 255 where any band of
        ``scene.tif`` is nodata (collar or a cloud on any date); a COG with the class
        colours, on exactly the grid of ``scene.tif``.
    ``fields.gpkg``
        Layer ``fields``: ``field_id`` (1..n, north to south), ``class_id``, ``crop``,
        ``area_ha`` and the polygon, EPSG:32643, clipped to the region minus the collar
        (fields under clouds are kept whole).
    ``districts.gpkg``
        Layer ``districts``: the real Punjab districts (Census 2011 boundaries) that
        intersect the region, whole, reprojected to **EPSG:32643**; ``district``,
        ``st_nm``, ``censuscode``.
    ``classes.yaml``
        The class table used.
    ``truth.csv``
        ``district, class_id, crop, pixels, hectares``: valid pixels of ``labels.tif``
        per district and class, each pixel counted in the district containing its
        centre (:data:`OUTSIDE` for none; where the simplified boundaries overlap, the
        district later by name), hectares = pixels x pixel area, exact in decimal. Areas
        are in the UTM grid (within 0.1 % of ground area here).

    Pixels are made window by window (512 x 512), so memory is bounded by one window plus
    the vector layout: a 2048 x 2048 region takes about 5 s and 300 MB, a 10980 x 10980
    one about 2 minutes and under 1 GB (one core).

    Parameters
    ----------
    out_dir : path
        Output directory (created if missing; existing files of these names are replaced).
    height, width : int
        Region size in pixels, any positive size (it need not be divisible by 16).
    seed : int
        Non-negative; the same seed and arguments give byte-identical files.
    dates : int
        Acquisition dates, 1..:data:`MAX_DATES`, spread over the kharif + rabi season
        (see :func:`season_dates`).
    cloud_fraction : float
        Fraction of the region hidden by cloud gaps on each date, 0..0.9 (approximate:
        set by thresholding a smooth random field at its sampled quantile).
    collar : bool
        Add a slanted nodata collar (a few % of the area) like a real scene footprint.
    classes : ClassTable or path, optional
        The class table (default :func:`geoseg.classes.default_classes`). It needs one
        non-crop class (the first is used for roads, canals, villages and margins) and at
        least one crop class; crops named rice, wheat, sugarcane, cotton, maize or fallow
        get realistic seasonal trajectories, other names a made-up but fixed one.
    origin : (float, float), optional
        ``(x, y)`` of the region's top-left corner in EPSG:32643 metres. By default the
        region is centred on :data:`DEFAULT_CENTRE`, where four districts meet. The region
        must overlap Punjab.
    pixel_size : float
        Pixel size in metres (0 < pixel_size <= 100); the layout is in metres, so a larger
        pixel only coarsens the rasters.

    Returns
    -------
    SynthRegion
        Paths, grid, dates and the truth table.

    Raises
    ------
    ConfigError
        For a bad argument: non-positive or too large height/width, negative seed, dates
        outside 1..24, cloud_fraction outside [0, 0.9], a bad pixel_size or origin, a
        region outside Punjab, or a class table without a non-crop or a crop class.
    RasterWriteError
        When the output directory or the rasters cannot be written.
    ClassFileError
        When ``classes`` is a path to a missing or malformed class file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     r = synthesize(d, height=100, width=150, seed=1)
    ...     print(r.shape, len(r.dates), r.scene.name, r.labels.name, r.n_fields > 0)
    Shape2d(height=100, width=150) 4 scene.tif labels.tif True
    >>> synthesize("unused", height=0)
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: height must be 1..20000, got 0; ...
    """
    # -- arguments, checked once at the edge --
    ps_hint = "use a pixel size in metres such as 10.0"
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, (int, float, np.floating)):
        raise ConfigError(f"pixel_size must be a number, got {pixel_size!r}; {ps_hint}")
    ps = float(pixel_size)
    if not (math.isfinite(ps) and 0 < ps <= 100):
        raise ConfigError(f"pixel_size must be in (0, 100] metres, got {pixel_size!r}; {ps_hint}")
    max_px = int(_MAX_EXTENT // ps)
    size_hint = (f"pass a size in pixels between 1 and {max_px} ({_MAX_EXTENT / 1000:g} km at {ps:g} m; "
                 f"a Sentinel-2 scene is 10980)")
    h = _int_arg("height", height, 1, max_px, size_hint)
    w = _int_arg("width", width, 1, max_px, size_hint)
    seed_ = _int_arg("seed", seed, 0, None, "pass a non-negative int such as 0")
    nd = _int_arg("dates", dates, 1, MAX_DATES, f"pass the number of acquisition dates, 1 to {MAX_DATES} (default 4)")
    if isinstance(cloud_fraction, bool) or not isinstance(cloud_fraction, (int, float, np.floating)):
        raise ConfigError(f"cloud_fraction must be a number, got {cloud_fraction!r}; pass e.g. 0.05 for 5 % cloud")
    cf = float(cloud_fraction)
    if not (0.0 <= cf <= 0.9):
        raise ConfigError(
            f"cloud_fraction must be in [0, 0.9] (fraction of each date under cloud), got {cloud_fraction!r}; "
            f"pass e.g. 0.05 for 5 % cloud, or 0 for none"
        )
    if not isinstance(collar, (bool, np.bool_)):
        raise ConfigError(f"collar must be True or False, got {collar!r}")
    table, bg_id, crop_ids = _resolve_classes(classes)
    if origin is None:
        ox = round((DEFAULT_CENTRE[0] - w * ps / 2) / ps) * ps
        oy = round((DEFAULT_CENTRE[1] + h * ps / 2) / ps) * ps
    else:
        try:
            ox, oy = (float(v) for v in origin)
        except (TypeError, ValueError):
            raise ConfigError(
                f"origin must be a pair (x, y) of EPSG:32643 metres, got {origin!r}; "
                f"e.g. ({DEFAULT_CENTRE[0] - 10240:.0f}, {DEFAULT_CENTRE[1] + 10240:.0f}) or None"
            ) from None
        if not (math.isfinite(ox) and math.isfinite(oy)):
            raise ConfigError(f"origin must be finite, got {origin!r}; pass (x, y) in EPSG:32643 metres or None")
    transform = Affine(ps, 0.0, ox, 0.0, -ps, oy)
    region = shapely.box(ox, oy - h * ps, ox + w * ps, oy)
    districts = _districts(region)
    if len(districts) == 0:
        raise ConfigError(
            f"origin {origin!r} puts the {w} x {h} px region ({ox:.0f}, {oy - h * ps:.0f}, {ox + w * ps:.0f}, "
            f"{oy:.0f}) outside Punjab; expected a top-left corner in EPSG:32643 over Punjab, e.g. "
            f"({DEFAULT_CENTRE[0] - 10240:.0f}, {DEFAULT_CENTRE[1] + 10240:.0f}), or None for the default"
        )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RasterWriteError(
            f"{out}: cannot create the output directory ({e.strerror}); choose a writable location"
        ) from None

    # -- vectors for the whole region --
    date_list, days = _season(nd)
    date_str = tuple(d.isoformat() for d in date_list)
    layout = _layout(seed_, h, w, transform, table, crop_ids, bool(collar))
    spectra = _spectral_table(seed_, layout, table, days)
    nb = nd * len(BANDS)

    # smooth random fields in region coordinates (metres from the top-left corner)
    wrng = np.random.default_rng(np.random.SeedSequence([seed_, 9]))
    texture = _Waves.make(wrng, 6, (120.0, 600.0))
    clouds = [_Waves.make(wrng, 12, (1200.0, 9000.0)) for _ in range(nd)]
    ragged = [_Waves.make(wrng, 6, (150.0, 400.0)) for _ in range(nd)]
    thresholds: list[float] = []
    if cf > 0:
        sy = (np.linspace(0, h, min(h, 256), endpoint=False) + 0.5 * h / min(h, 256)) * ps
        sx = (np.linspace(0, w, min(w, 256), endpoint=False) + 0.5 * w / min(w, 256)) * ps
        for cl, rg in zip(clouds, ragged):
            sample = cl.grid(sx, -sy) + np.float32(0.25) * rg.grid(sx, -sy)
            thresholds.append(float(np.quantile(sample, 1 - cf)))

    field_tree = shapely.STRtree(layout.fields)
    bg_tree = shapely.STRtree(layout.bg)
    d_geoms = districts.geometry.values
    d_tree = shapely.STRtree(d_geoms)
    n_dist = len(districts)
    k = len(table)
    counts = np.zeros((n_dist + 1) * k, np.int64)
    n_collar = n_cloud = 0

    tags = {
        "GEOSEG_DATES": json.dumps(list(date_str)),
        "GEOSEG_BANDS": ",".join(BANDS),
        "GEOSEG_SCALE": str(_REFLECTANCE_SCALE),
        "GEOSEG_SYNTH": json.dumps({"seed": seed_, "height": h, "width": w, "cloud_fraction": cf,
                                    "collar": bool(collar), "pixel_size": ps}),
    }
    descriptions = [f"{d} {b}" for d in date_str for b in BANDS]
    scene_path, labels_path = out / "scene.tif", out / "labels.tif"
    with RasterWriter(
        scene_path, shape=(h, w), transform=transform, crs=CRS, count=nb, dtype="uint16", nodata=0,
        tags=tags, band_descriptions=descriptions, cog=False, overview_resampling="average",
    ) as scene_w, mask_writer(
        labels_path, shape=(h, w), transform=transform, crs=CRS, classes=table,
        tags={"GEOSEG_SYNTH": tags["GEOSEG_SYNTH"]},
    ) as label_w:
        for i, j, win in _windows(h, w):
            r0, c0, wh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            wt = transform @ Affine.translation(c0, r0)
            wx0, wy1 = wt.c, wt.f
            wbox = shapely.box(wx0 - ps, wy1 - (wh + 1) * ps, wx0 + (ww + 1) * ps, wy1 + ps)
            fi = np.sort(field_tree.query(wbox))
            bi = np.sort(bg_tree.query(wbox))
            # 2 x 2 sub-pixel codes -> mixed boundary pixels
            sub_shapes = [(g, int(c)) for g, c in zip(layout.bg[bi], layout.bg_code[bi])]
            sub_shapes += [(g, _N_MAT + int(f)) for g, f in zip(layout.fields[fi], fi)]
            codes = _burn(sub_shapes, (2 * wh, 2 * ww), wt @ Affine.scale(0.5), _MAT_MARGIN, "int32")
            # within-field texture (seamless: a function of position) and pixel noise (seeded per window)
            xs = (np.arange(c0, c0 + ww) + 0.5) * ps
            ys = -(np.arange(r0, r0 + wh) + 0.5) * ps
            gain = 1 + np.float32(0.04) * texture.grid(xs, ys)
            rng = np.random.default_rng(np.random.SeedSequence([seed_, 7, i, j]))
            dn = _reflectance(spectra, codes, gain, rng)
            del codes, gain

            labels = _burn([(g, int(c)) for g, c in zip(layout.fields[fi], layout.field_class[fi])],
                           (wh, ww), wt, bg_id, "uint8")
            invalid = np.zeros((wh, ww), bool)
            if layout.collar is not None and shapely.intersects(layout.collar, wbox):
                invalid = _burn([(layout.collar, 1)], (wh, ww), wt, 0, "uint8").astype(bool)
                dn[:, invalid] = 0
            n_collar += int(invalid.sum())
            if cf > 0:
                cloudy_any = np.zeros((wh, ww), bool)
                for t, (cl, rg) in enumerate(zip(clouds, ragged)):
                    cloudy = (cl.grid(xs, ys) + np.float32(0.25) * rg.grid(xs, ys)) > thresholds[t]
                    dn[4 * t: 4 * t + 4, cloudy] = 0
                    cloudy_any |= cloudy
                n_cloud += int((cloudy_any & ~invalid).sum())
                invalid |= cloudy_any
            labels[invalid] = NODATA

            di = np.sort(d_tree.query(wbox))
            dcode = _burn([(d_geoms[q], int(q) + 1) for q in di], (wh, ww), wt, 0, "uint8")
            dcode = np.where(dcode == 0, n_dist, dcode.astype(np.int64) - 1)
            ok = ~invalid
            counts += np.bincount(dcode[ok] * k + labels[ok], minlength=counts.size)

            scene_w.write(dn, win)
            label_w.write(labels, win)

    # -- vectors and tables --
    import geopandas as gpd
    import pandas as pd

    area = shapely.area(layout.fields)
    fields_gdf = gpd.GeoDataFrame(
        {
            "field_id": np.arange(1, len(layout.fields) + 1, dtype=np.int32),
            "class_id": layout.field_class.astype(np.int32),
            "crop": np.asarray(table.names, dtype=object)[layout.field_class],
            "area_ha": np.round(area / 10_000, 6),
        },
        geometry=layout.fields,
        crs=CRS,
    )
    _write_gpkg(fields_gdf, out / "fields.gpkg", "fields")
    _write_gpkg(districts, out / "districts.gpkg", "districts")
    _write_text(table.to_yaml(), out / "classes.yaml")

    pixel_ha = Decimal(repr(ps)) ** 2 / Decimal(10_000)
    names = [*districts["district"].tolist(), OUTSIDE]
    rows = []
    for flat in np.flatnonzero(counts):
        dq, cid = divmod(int(flat), k)
        n_px = int(counts[flat])
        rows.append((names[dq], cid, table[cid].name, n_px, pixel_ha * n_px))
    rows.sort(key=lambda r: (r[0] == OUTSIDE, r[0], r[1]))
    buf = _io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["district", "class_id", "crop", "pixels", "hectares"])
    wr.writerows([(d, c, n, p, str(ha)) for d, c, n, p, ha in rows])
    _write_text(buf.getvalue(), out / "truth.csv")
    truth = pd.DataFrame(
        {
            "district": [r[0] for r in rows],
            "class_id": np.array([r[1] for r in rows], dtype=np.int64),
            "crop": [r[2] for r in rows],
            "pixels": np.array([r[3] for r in rows], dtype=np.int64),
            "hectares": np.array([float(r[4]) for r in rows], dtype=np.float64),
        }
    )
    total = h * w
    return SynthRegion(
        out_dir=out,
        scene=scene_path,
        labels=labels_path,
        fields=out / "fields.gpkg",
        districts=out / "districts.gpkg",
        classes=out / "classes.yaml",
        truth_csv=out / "truth.csv",
        shape=Shape2d(h, w),
        transform=transform,
        crs=CRS,
        dates=date_str,
        seed=seed_,
        n_fields=len(layout.fields),
        district_names=tuple(districts["district"].tolist()),
        collar_fraction=n_collar / total,
        cloud_fraction=n_cloud / total,
        truth=truth,
    )
