"""What the synthetic region looks like from orbit: the season, the spectra and the pixels' reflectance.

Each surface is a mixture of fixed endmember spectra (green vegetation, bare soil, standing
water, dry residue, built-up) whose cover fractions follow a seasonal trajectory: one per
crop (rice is flooded at transplanting, wheat green in February, ...) and one per background
material (margins and trees, roads, water, villages). Each field shifts and scales its
crop's trajectory (sowing date, vigour, soil brightness, standing water), so no two fields
are alike but every crop keeps its own shape through the season.
"""

from __future__ import annotations

import zlib
from datetime import date, timedelta

import numpy as np

from geoseg.classes import ClassTable

__all__ = [
    "BANDS",
    "REFLECTANCE_SCALE",
    "MAT_MARGIN",
    "MAT_ROAD",
    "MAT_WATER",
    "MAT_VILLAGE",
    "N_MAT",
    "season",
    "season_dates",
    "spectral_table",
    "reflectance",
]

#: Bands of each date, in file order (Sentinel-2 B2, B3, B4, B8).
BANDS = ("B", "G", "R", "NIR")
#: Reflectance is stored as uint16 ``reflectance x REFLECTANCE_SCALE``.
REFLECTANCE_SCALE = 10000

_SEASON_START = date(2024, 6, 15)  # kharif (monsoon) sowing ...
_SEASON_DAYS = 245  # ... to 2025-02-15, rabi (winter) wheat near its peak

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
#: Codes of the background materials; field ``f`` has code ``N_MAT + f``.
MAT_MARGIN, MAT_ROAD, MAT_WATER, MAT_VILLAGE = range(4)
N_MAT = len(_MATERIALS)


def season_dates(n: int) -> tuple[str, ...]:
    """``n`` acquisition dates spread evenly over a kharif + rabi season (ISO strings).

    The season runs from 15 June 2024 (rice transplanting) to 15 February 2025 (wheat
    near its peak); one date is 15 June.

    Examples
    --------
    >>> season_dates(4)
    ('2024-06-15', '2024-09-05', '2024-11-25', '2025-02-15')
    """
    return tuple(d.isoformat() for d in season(n)[0])


def season(n: int) -> tuple[list[date], np.ndarray]:
    """The ``n`` acquisition dates and their days after 15 June 2024 (float)."""
    days = np.rint(np.linspace(0, _SEASON_DAYS, n)).astype(int) if n > 1 else np.zeros(1, int)
    return [_SEASON_START + timedelta(days=int(d)) for d in days], days.astype(float)


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


def spectral_table(seed: int, field_class: np.ndarray, table: ClassTable, days: np.ndarray) -> np.ndarray:
    """Mean reflectance per code, shape (bands, codes): background materials, then one row per field."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    n = len(field_class)
    nd = len(days)
    out = np.zeros((N_MAT + n, nd, 4))
    for m, traj in enumerate(_MATERIALS):
        out[m] = _mix(_fractions(traj, days))
    shift = rng.normal(0, 10, n)  # sowing / transplanting date, days
    vigour = np.clip(rng.normal(1, 0.12, n), 0.6, 1.35)
    soil = np.clip(rng.normal(1, 0.10, n), 0.75, 1.3)
    water = rng.uniform(0.5, 1.0, n)  # standing water: direct seeding ... puddled transplanting
    offset = rng.normal(0, 0.006, (n, nd, 4))
    for cid in np.unique(field_class):
        sel = np.flatnonzero(field_class == cid)
        fr = _fractions(_trajectory(table[int(cid)].name), days[None] - shift[sel, None])
        fr["veg"] = np.minimum(fr["veg"] * vigour[sel, None], 0.95)
        if "water" in fr:
            fr["water"] = fr["water"] * water[sel, None]
        out[N_MAT + sel] = _mix(fr, soil[sel, None])
    out[N_MAT:] += offset
    return np.ascontiguousarray(np.clip(out, 0.002, 0.9).reshape(N_MAT + n, nd * 4).T.astype(np.float32))


def reflectance(spectra: np.ndarray, codes: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
        refl *= np.float32(REFLECTANCE_SCALE)
        np.rint(refl, out=refl)
        np.clip(refl, 1, 65535, out=refl)
        out[b0: b0 + len(BANDS)] = refl
    return out
