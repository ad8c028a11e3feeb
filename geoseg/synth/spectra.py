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
    "S2_BANDS",
    "SEASON_START",
    "REFLECTANCE_SCALE",
    "MAT_MARGIN",
    "MAT_ROAD",
    "MAT_WATER",
    "MAT_VILLAGE",
    "N_MAT",
    "season",
    "season_dates",
    "spectral_table",
    "crop_reflectance",
    "product_spectra",
    "quantise",
    "reflectance",
]

#: Bands of each date, in file order (Sentinel-2 B2, B3, B4, B8).
BANDS = ("B", "G", "R", "NIR")
#: The Sentinel-2 bands the synthetic products carry, in the order of the spectra: the four of
#: :data:`BANDS` (B02, B03, B04, B08, 10 m), then the six 20 m bands.
S2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
#: Reflectance is stored as uint16 ``reflectance x REFLECTANCE_SCALE``.
REFLECTANCE_SCALE = 10000

#: The default start of the season: kharif (monsoon) sowing ...
SEASON_START = date(2024, 6, 15)
_SEASON_DAYS = 245  # ... to 2025-02-15, rabi (winter) wheat near its peak

# Endmember surface reflectance, roughly Sentinel-2 L2A, in the order of S2_BANDS:
#  B02    B03    B04    B08  |  B05    B06    B07    B8A    B11    B12
# (blue, green, red, NIR at 10 m | red edge 1-3, narrow NIR, SWIR 1.6 and 2.2 um at 20 m).
# The first four are those of scene.tif; the red edge climbs from red to NIR with the
# canopy, SWIR falls with water content (green canopy, water) and rises for dry matter.
_ENDMEMBERS = {
    "veg": (0.030, 0.060, 0.035, 0.420, 0.090, 0.280, 0.380, 0.430, 0.200, 0.100),  # green canopy
    "soil": (0.090, 0.125, 0.165, 0.235, 0.190, 0.210, 0.225, 0.245, 0.320, 0.270),  # dry alluvial soil
    "water": (0.070, 0.065, 0.045, 0.025, 0.040, 0.030, 0.028, 0.022, 0.010, 0.006),  # turbid paddy / canal water
    "dry": (0.065, 0.090, 0.120, 0.260, 0.150, 0.200, 0.235, 0.270, 0.360, 0.280),  # senescent crop, residue
    "built": (0.110, 0.120, 0.135, 0.180, 0.145, 0.155, 0.165, 0.185, 0.220, 0.200),  # roofs, roads
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


def season_dates(n: int, start: date = SEASON_START) -> tuple[str, ...]:
    """``n`` acquisition dates spread evenly over a kharif + rabi season (ISO strings).

    The season runs from ``start`` (15 June 2024 by default: rice transplanting) for 245
    days (to 15 February 2025, wheat near its peak); one date is ``start``.

    Examples
    --------
    >>> season_dates(4)
    ('2024-06-15', '2024-09-05', '2024-11-25', '2025-02-15')
    >>> season_dates(2, date(2021, 6, 15))
    ('2021-06-15', '2022-02-15')
    """
    return tuple(d.isoformat() for d in season(n, start)[0])


def season(n: int, start: date = SEASON_START) -> tuple[list[date], np.ndarray]:
    """The ``n`` acquisition dates and their days after ``start`` (float).

    The spectra are a function of the day of the season only, so moving ``start`` to
    another year moves the dates and leaves every pixel unchanged.
    """
    days = np.rint(np.linspace(0, _SEASON_DAYS, n)).astype(int) if n > 1 else np.zeros(1, int)
    return [start + timedelta(days=int(d)) for d in days], days.astype(float)


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


def _mix(fr: dict[str, np.ndarray], soil_gain: np.ndarray | float = 1.0, bands: int = 4) -> np.ndarray:
    """Reflectance (..., bands) from cover fractions (each ...); soil fills the rest.

    ``bands`` is 4 for scene.tif's bands, 10 for all of :data:`S2_BANDS`; the first four
    are computed identically either way (elementwise).
    """
    em = {k: np.asarray(v[:bands]) for k, v in _ENDMEMBERS.items()}
    zero = np.zeros_like(next(iter(fr.values())))
    others = sum((fr.get(k, zero) for k in ("veg", "water", "dry", "built")), zero)
    scale = np.where(others > 1, 1 / np.maximum(others, 1e-9), 1.0)
    soil = np.clip(1 - others * scale, 0, 1)
    out = soil[..., None] * em["soil"] * np.asarray(soil_gain)[..., None]
    for k in ("veg", "water", "dry", "built"):
        if k in fr:
            out = out + (fr[k] * scale)[..., None] * em[k]
    return out


def _field_draws(seed: int, n: int, nd: int) -> tuple[np.ndarray, ...]:
    """Each field's sowing shift, vigour, soil brightness, standing water and per-date offsets
    (n, nd, 4), drawn in :func:`spectral_table`'s order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    shift = rng.normal(0, 10, n)  # sowing / transplanting date, days
    vigour = np.clip(rng.normal(1, 0.12, n), 0.6, 1.35)
    soil = np.clip(rng.normal(1, 0.10, n), 0.75, 1.3)
    water = rng.uniform(0.5, 1.0, n)  # standing water: direct seeding ... puddled transplanting
    offset = rng.normal(0, 0.006, (n, nd, 4))
    return shift, vigour, soil, water, offset


def _table(field_class: np.ndarray, table: ClassTable, days: np.ndarray, draws: tuple[np.ndarray, ...],
           offset: np.ndarray, bands: int) -> np.ndarray:
    """Mean reflectance (codes, days, bands) before clipping: materials, then fields plus ``offset``."""
    shift, vigour, soil, water, _ = draws
    n = len(field_class)
    out = np.zeros((N_MAT + n, len(days), bands))
    for m, traj in enumerate(_MATERIALS):
        out[m] = _mix(_fractions(traj, days), bands=bands)
    for cid in np.unique(field_class):
        sel = np.flatnonzero(field_class == cid)
        fr = _fractions(_trajectory(table[int(cid)].name), days[None] - shift[sel, None])
        fr["veg"] = np.minimum(fr["veg"] * vigour[sel, None], 0.95)
        if "water" in fr:
            fr["water"] = fr["water"] * water[sel, None]
        out[N_MAT + sel] = _mix(fr, soil[sel, None], bands=bands)
    out[N_MAT:] += offset
    return out


def _flat(out: np.ndarray) -> np.ndarray:
    """(codes, days, bands) -> clipped float32 (days * bands, codes)."""
    n_codes, nd, nb = out.shape
    return np.ascontiguousarray(np.clip(out, 0.002, 0.9).reshape(n_codes, nd * nb).T.astype(np.float32))


def crop_reflectance(crop: str, days: np.ndarray) -> np.ndarray:
    """A typical field of ``crop``'s reflectance on ``days`` (days after the season's start): its
    trajectory with no sowing shift, vigour 1, standing water 0.75 (the middle of its draws) and the
    average soil, in the order of :data:`BANDS` (days, 4). The phenology a crop profile recovers."""
    d = np.asarray(days, float)
    fr = _fractions(_trajectory(crop), d)
    fr["veg"] = np.minimum(fr["veg"], 0.95)
    if "water" in fr:
        fr["water"] = fr["water"] * 0.75
    return np.clip(_mix(fr, 1.0, bands=4), 0.002, 0.9)


def spectral_table(seed: int, field_class: np.ndarray, table: ClassTable, days: np.ndarray) -> np.ndarray:
    """Mean reflectance per code, shape (dates x 4 bands, codes): background materials, then one row per field."""
    draws = _field_draws(seed, len(field_class), len(days))
    return _flat(_table(field_class, table, days, draws, draws[4], 4))


def product_spectra(seed: int, field_class: np.ndarray, table: ClassTable, scene_days: np.ndarray,
                    days: np.ndarray) -> np.ndarray:
    """Mean reflectance per code of all :data:`S2_BANDS` on any ``days``: (days x 10 bands, codes).

    The same model as :func:`spectral_table` (whose dates are ``scene_days``): each field's
    per-date offset is interpolated linearly in time between the scene's dates (constant
    beyond them), and the six 20 m bands get offsets of their own, so that on a scene date
    the first four bands equal :func:`spectral_table`'s exactly.
    """
    n = len(field_class)
    draws = _field_draws(seed, n, len(scene_days))
    extra = np.random.default_rng(np.random.SeedSequence([seed, 15])).normal(0, 0.006, (n, len(scene_days), 6))
    known = np.concatenate([draws[4], extra], axis=2)  # (n, scene dates, 10)
    offset = np.stack([_interp_exact(float(d), np.asarray(scene_days, float), known) for d in days], axis=1)
    return _flat(_table(field_class, table, np.asarray(days, float), draws, offset, len(S2_BANDS)))


def _interp_exact(d: float, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (n, knots, bands) interpolated linearly at day ``d`` (constant beyond the knots),
    exactly a knot's values on a knot."""
    hit = np.flatnonzero(knots == d)
    if hit.size:
        return values[:, int(hit[0])]
    if d <= knots[0]:
        return values[:, 0]
    if d >= knots[-1]:
        return values[:, -1]
    i = int(np.searchsorted(knots, d)) - 1
    w = (d - knots[i]) / (knots[i + 1] - knots[i])
    return values[:, i] + w * (values[:, i + 1] - values[:, i])


def quantise(table: np.ndarray, quads: tuple[np.ndarray, ...], gain: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """float32 ``round(reflectance x 10000)`` clipped to 1..65535 of one date's bands.

    ``table`` (bands, codes) holds the mean spectra, ``quads`` the four 2 x 2 sub-pixel code
    arrays (h, w); each pixel is the mean of its sub-pixels times ``gain`` plus
    ``noise x (0.004 + 0.02 x reflectance)`` (``noise``: standard normal, (bands, h, w),
    float32; consumed). The one formula of scene.tif and of the products.
    """
    refl = table[:, quads[0]]
    for q in quads[1:]:
        refl += table[:, q]
    refl *= np.float32(0.25) * gain
    noise *= np.float32(0.004) + np.float32(0.02) * refl
    refl += noise
    refl *= np.float32(REFLECTANCE_SCALE)
    np.rint(refl, out=refl)
    np.clip(refl, 1, 65535, out=refl)
    return refl


def sub_pixels(codes: np.ndarray) -> tuple[np.ndarray, ...]:
    """The four 2 x 2 sub-pixel code arrays (h, w) of ``codes`` (2h, 2w)."""
    return codes[0::2, 0::2], codes[0::2, 1::2], codes[1::2, 0::2], codes[1::2, 1::2]


def reflectance(spectra: np.ndarray, codes: np.ndarray, gain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint16 reflectance (bands, h, w) of one window from 2 x 2 sub-pixel ``codes`` (2h, 2w).

    Each pixel is the mean spectrum of its four sub-pixels (mixed pixels on boundaries),
    times a smooth ``gain`` (texture), plus noise; computed 4 bands (one date) at a time
    so that temporaries stay a few MB (:func:`quantise`).
    """
    h, w = codes.shape[0] // 2, codes.shape[1] // 2
    quads = sub_pixels(codes)
    out = np.empty((spectra.shape[0], h, w), np.uint16)
    for b0 in range(0, spectra.shape[0], len(BANDS)):
        table = spectra[b0: b0 + len(BANDS)]
        noise = rng.standard_normal((len(BANDS), h, w), dtype=np.float32)
        out[b0: b0 + len(BANDS)] = quantise(table, quads, gain, noise)
    return out
