"""A season of observations reduced to period composites: pure arithmetic on arrays and dates.

Crop mapping looks at a pixel several times in a season, but a single acquisition is often
cloudy (the monsoon) or missing. So the season is cut into *periods* (months by default, or
the user's own windows such as kharif June-October by fortnight), and each period's value of a
pixel is a statistic - the median by default - of that pixel's *clear* observations in it. A
period in which a pixel has no clear look stays nodata there, and the number of clear looks
per period is kept beside the composite so that users (and models) can see how sure each value is.

Everything here takes arrays, dates and numbers and opens nothing:

* :class:`Period`, :func:`monthly`, :func:`semimonthly`, :func:`every_days`,
  :func:`parse_periods`, :func:`assign_periods` - the season's periods and which period a
  date falls in;
* :func:`scl_clear`, :func:`qa_pixel_clear` - the clear pixels of a Sentinel-2 scene
  classification layer (SCL) or a Landsat Collection 2 ``QA_PIXEL`` band, with the masked set
  optionally dilated;
* :func:`to_reflectance`, :func:`reflectance_to_dn` - digital numbers to surface reflectance
  through a scale and offset (the harmonisation across Sentinel-2 processing baselines is just
  the right offset per product), and back to geoseg's stored scale;
* :func:`reduce_period` - the per-pixel statistic of a period's clear observations;
* :func:`utm_epsg`, :func:`aligned_grid` - the default output CRS of an area and a grid whose
  pixel edges sit on multiples of the resolution.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from affine import Affine
from scipy import ndimage

from geoseg.errors import SeasonError

__all__ = [
    "QA_BITS",
    "QA_MASKED_DEFAULT",
    "REFLECTANCE_SCALE",
    "SCL_CLASSES",
    "SCL_MASKED_DEFAULT",
    "STATISTICS",
    "Period",
    "aligned_grid",
    "assign_periods",
    "every_days",
    "monthly",
    "parse_periods",
    "qa_pixel_clear",
    "reduce_period",
    "reflectance_to_dn",
    "scl_clear",
    "semimonthly",
    "to_reflectance",
    "utm_epsg",
]

#: Reflectance is stored as ``round(reflectance x REFLECTANCE_SCALE)`` in uint16 (0 = nodata).
REFLECTANCE_SCALE = 10000

#: The Sentinel-2 L2A scene classification classes (SCL values).
SCL_CLASSES = {
    0: "no_data", 1: "saturated_or_defective", 2: "dark_area_pixels", 3: "cloud_shadows", 4: "vegetation",
    5: "not_vegetated", 6: "water", 7: "unclassified", 8: "cloud_medium_probability",
    9: "cloud_high_probability", 10: "thin_cirrus", 11: "snow",
}
#: SCL classes masked by default: no data, saturated, cloud shadow, medium/high cloud, cirrus.
SCL_MASKED_DEFAULT = (0, 1, 3, 8, 9, 10)

#: Landsat Collection 2 ``QA_PIXEL`` bits by name.
QA_BITS = {"fill": 0, "dilated_cloud": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4, "snow": 5, "clear": 6,
           "water": 7}
#: ``QA_PIXEL`` bits masked by default.
QA_MASKED_DEFAULT = ("fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow")

#: Per-pixel statistics a period can be reduced with.
STATISTICS = ("median", "mean", "min", "max", "first", "last")


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True, slots=True)
class Period:
    """A period of the season: ``start <= day < end``, called ``label`` in band names.

    Examples
    --------
    >>> p = Period("2024-07", date(2024, 7, 1), date(2024, 8, 1))
    >>> p.contains(date(2024, 7, 31)), p.contains(date(2024, 8, 1)), p.days
    (True, False, 31)
    """

    label: str
    start: date
    end: date

    def __post_init__(self) -> None:
        label, start, end = self.label, self.start, self.end
        if not end > start:
            raise SeasonError(f"period {label!r}: ends {end.isoformat()} on or before it starts "
                              f"({start.isoformat()}); expected an end after the start")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]*", label):
            raise SeasonError(f"period label {label!r}: expected letters, digits, '-' and '.' only (it becomes "
                              f"part of band names such as '{label or '2024-07'}_B04'), e.g. '2024-07' or 'kharif1'")

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def __repr__(self) -> str:
        return f"Period({self.label!r}, {self.start.isoformat()}..{self.end.isoformat()})"


def _month_start(d: date) -> date:
    return d.replace(day=1)


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _check_span(start: date, end: date) -> None:
    if not end > start:
        raise SeasonError(f"season {start.isoformat()}..{end.isoformat()}: the end is not after the start; "
                          f"give --end after --start (the end day is excluded)")


def monthly(start: date, end: date) -> list[Period]:
    """Calendar months overlapping ``[start, end)``, labelled ``YYYY-MM`` and cut to the season.

    Examples
    --------
    >>> [p.label for p in monthly(date(2024, 6, 15), date(2024, 9, 1))]
    ['2024-06', '2024-07', '2024-08']
    >>> monthly(date(2024, 6, 15), date(2024, 9, 1))[0]
    Period('2024-06', 2024-06-15..2024-07-01)
    """
    _check_span(start, end)
    out, m = [], _month_start(start)
    while m < end:
        nxt = _next_month(m)
        out.append(Period(f"{m.year:04d}-{m.month:02d}", max(m, start), min(nxt, end)))
        m = nxt
    return out


def semimonthly(start: date, end: date) -> list[Period]:
    """Halves of months (the 1st-15th, the 16th-end) overlapping ``[start, end)``, labelled by
    their first day (``YYYY-MM-DD``): the fortnights crop calendars are written in.

    Examples
    --------
    >>> [p.label for p in semimonthly(date(2024, 6, 1), date(2024, 7, 20))]
    ['2024-06-01', '2024-06-16', '2024-07-01', '2024-07-16']
    """
    _check_span(start, end)
    out, m = [], _month_start(start)
    while m < end:
        mid = m.replace(day=16)
        for a, b in ((m, mid), (mid, _next_month(m))):
            if b > start and a < end:
                out.append(Period(a.isoformat(), max(a, start), min(b, end)))
        m = _next_month(m)
    return out


def every_days(start: date, end: date, days: int) -> list[Period]:
    """Consecutive ``days``-long periods from ``start`` (the last one cut at ``end``), labelled
    by their first day.

    Examples
    --------
    >>> [p.label for p in every_days(date(2024, 6, 1), date(2024, 7, 1), 10)]
    ['2024-06-01', '2024-06-11', '2024-06-21']
    """
    _check_span(start, end)
    if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
        raise SeasonError(f"period length {days!r}: expected a whole number of days, at least 1 (e.g. 16)")
    out, a = [], start
    while a < end:
        b = min(a + timedelta(days=int(days)), end)
        out.append(Period(a.isoformat(), a, b))
        a = b
    return out


def _parse_day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise SeasonError(f"{what} {text!r}: expected a date as YYYY-MM-DD (e.g. 2024-06-01)") from None


def parse_periods(spec: str | Sequence[str] | None, start: date | None = None, end: date | None = None) -> list[Period]:
    """The periods a user asked for.

    ``spec`` is ``"monthly"`` (the default), ``"semimonthly"`` (also ``"fortnightly"``),
    ``"<N>d"`` (``N``-day periods from ``start``), ``"season"`` (one period, the whole season),
    or explicit windows ``"LABEL:START/END"`` (end excluded; a sequence, or one string joined
    with commas). The named rules need ``start`` and ``end``; explicit windows must not overlap.

    Examples
    --------
    >>> [p.label for p in parse_periods("16d", date(2024, 6, 1), date(2024, 7, 1))]
    ['2024-06-01', '2024-06-17']
    >>> parse_periods("sowing:2024-06-01/2024-07-15,peak:2024-08-01/2024-09-15")
    [Period('sowing', 2024-06-01..2024-07-15), Period('peak', 2024-08-01..2024-09-15)]
    >>> parse_periods("weekly", date(2024, 6, 1), date(2024, 7, 1))
    Traceback (most recent call last):
    ...
    geoseg.errors.SeasonError: periods 'weekly': expected 'monthly', 'semimonthly', 'season', 'ND' (e.g. '16d' or '7d') or windows 'LABEL:YYYY-MM-DD/YYYY-MM-DD,...'
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        spec = "monthly"
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if len(items) == 1 and ":" not in items[0]:
        rule = items[0].lower()
        named = {"monthly": monthly, "semimonthly": semimonthly, "fortnightly": semimonthly}
        m = re.fullmatch(r"(\d+)\s*d(ays?)?", rule)
        if rule in named or m or rule == "season":
            if start is None or end is None:
                raise SeasonError(f"periods {items[0]!r}: needs the season's start and end dates; give --start and "
                                  f"--end (e.g. --start 2024-06-01 --end 2024-11-01)")
            if rule == "season":
                _check_span(start, end)
                return [Period(f"{start.isoformat()}", start, end)]
            if m:
                return every_days(start, end, int(m.group(1)))
            return named[rule](start, end)
        raise SeasonError(f"periods {items[0]!r}: expected 'monthly', 'semimonthly', 'season', 'ND' (e.g. '16d' or "
                          f"'7d') or windows 'LABEL:YYYY-MM-DD/YYYY-MM-DD,...'")
    out = []
    for item in items:
        label, sep, span = item.partition(":")
        a, slash, b = span.partition("/")
        if not sep or not slash:
            raise SeasonError(f"period {item!r}: expected LABEL:START/END, e.g. 'kharif1:2024-06-01/2024-06-16' "
                              f"(the end day is excluded)")
        out.append(Period(label.strip(), _parse_day(a, f"period {label.strip()!r} start"),
                          _parse_day(b, f"period {label.strip()!r} end")))
    labels = [p.label for p in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise SeasonError(f"periods: the label {dup[0]!r} is used twice; give each period its own label")
    ordered = sorted(out, key=lambda p: p.start)
    for p, q in zip(ordered, ordered[1:]):
        if q.start < p.end:
            raise SeasonError(f"periods {p.label!r} ({p.start}..{p.end}) and {q.label!r} ({q.start}..{q.end}) overlap; "
                              f"a look must count in one period only - make them disjoint (the end day is excluded)")
    return ordered


def assign_periods(days: Iterable[date], periods: Sequence[Period]) -> np.ndarray:
    """The index of the period each day falls in (-1: in none).

    Examples
    --------
    >>> ps = monthly(date(2024, 6, 1), date(2024, 8, 1))
    >>> assign_periods([date(2024, 6, 30), date(2024, 7, 1), date(2024, 8, 1)], ps).tolist()
    [0, 1, -1]
    """
    out = []
    for d in days:
        out.append(next((i for i, p in enumerate(periods) if p.contains(d)), -1))
    return np.asarray(out, dtype=np.int64)


# --------------------------------------------------------------------------- clear pixels


def _dilate(masked: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0 or not masked.any():
        return masked
    r = int(pixels)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (yy * yy + xx * xx) <= r * r
    return ndimage.binary_dilation(masked, structure=disk)


def _check_dilate(dilate: int) -> int:
    if isinstance(dilate, bool) or not isinstance(dilate, (int, np.integer)) or dilate < 0:
        raise SeasonError(f"cloud dilation {dilate!r}: expected a whole number of pixels, 0 or more (e.g. 2)")
    return int(dilate)


def scl_clear(scl: np.ndarray, masked: Sequence[int] = SCL_MASKED_DEFAULT, dilate: int = 0) -> np.ndarray:
    """Clear pixels of a scene classification layer: True where the class is not ``masked``.

    ``dilate`` grows the masked area (every masked class but 0, no data - which is the edge of
    the swath, not a cloud) by that many pixels, with a disk, since SCL misses cloud edges and
    the faint shadows around them. No-data pixels (0) are never clear, masked or not.

    Examples
    --------
    >>> scl = np.array([[4, 4, 4, 4, 4], [4, 4, 9, 4, 4], [4, 4, 4, 4, 0]], np.uint8)
    >>> scl_clear(scl).astype(int)
    array([[1, 1, 1, 1, 1],
           [1, 1, 0, 1, 1],
           [1, 1, 1, 1, 0]])
    >>> scl_clear(scl, dilate=1).astype(int)
    array([[1, 1, 0, 1, 1],
           [1, 0, 0, 0, 1],
           [1, 1, 0, 1, 0]])
    """
    dilate = _check_dilate(dilate)
    bad = [int(c) for c in masked]
    for c in bad:
        if c not in SCL_CLASSES:
            raise SeasonError(f"SCL class {c}: expected one of 0-11 "
                              f"({', '.join(f'{k} {v}' for k, v in SCL_CLASSES.items())})")
    lut = np.zeros(256, bool)
    lut[bad] = True
    cls = np.asarray(scl)
    grow = lut.copy()
    grow[0] = False
    grown = _dilate(grow[cls], dilate)
    return ~(grown | lut[cls] | (cls == 0))


def qa_pixel_clear(qa: np.ndarray, masked: Sequence[str] = QA_MASKED_DEFAULT, dilate: int = 0) -> np.ndarray:
    """Clear pixels of a Landsat Collection 2 ``QA_PIXEL`` band: none of the ``masked`` bits set.

    The fill bit always masks; ``dilate`` grows the other masked bits as in :func:`scl_clear`.

    Examples
    --------
    >>> qa = np.array([[21824, 22280, 1], [21824, 23826, 21824]], np.uint16)  # clear, cloud, fill; clear, shadow, clear
    >>> qa_pixel_clear(qa).astype(int)
    array([[1, 0, 0],
           [1, 0, 1]])
    """
    dilate = _check_dilate(dilate)
    bits = 0
    for name in masked:
        if name not in QA_BITS:
            raise SeasonError(f"QA_PIXEL flag {name!r}: expected some of {', '.join(QA_BITS)}")
        bits |= 1 << QA_BITS[name]
    q = np.asarray(qa).astype(np.uint32)
    fill = (q & 1).astype(bool)
    grown = _dilate((q & (bits & ~1)) != 0, dilate)
    return ~(grown | fill)


# --------------------------------------------------------------------------- reflectance


def to_reflectance(dn: np.ndarray, scale: float, offset: float, nodata: float | None = 0) -> np.ndarray:
    """Surface reflectance ``dn x scale + offset`` as float64, NaN where ``dn`` is ``nodata``.

    Float64, so that reducing and rounding back to 1e-4 steps gives the same result as any
    other careful computation of the same rule (float32 would move ties of a median by one).

    For Sentinel-2 L2A, ``scale = 1 / BOA_QUANTIFICATION_VALUE`` (1e-4) and ``offset =
    BOA_ADD_OFFSET / BOA_QUANTIFICATION_VALUE``: -0.1 from processing baseline 04.00 (25 January
    2022) on, 0 before. Landsat Collection 2 Level-2: 2.75e-5 and -0.2.

    Examples
    --------
    >>> to_reflectance(np.array([0, 1000, 2500], np.uint16), 1e-4, -0.1).round(4).tolist()
    [nan, 0.0, 0.15]
    """
    out = np.asarray(dn, dtype=np.float64) * float(scale) + float(offset)
    if nodata is not None:
        out[np.asarray(dn) == nodata] = np.nan
    return out


def reflectance_to_dn(refl: np.ndarray) -> np.ndarray:
    """Reflectance to geoseg's stored scale: ``round(refl x 10000)`` as uint16, 0 where NaN.

    Valid values are clipped to 1..65535, so that a valid dark pixel (or a slightly negative
    reflectance, which atmospheric correction does produce) never reads as nodata.

    Examples
    --------
    >>> reflectance_to_dn(np.array([np.nan, -0.01, 0.15, 9.0], np.float32)).tolist()
    [0, 1, 1500, 65535]
    """
    r = np.asarray(refl, dtype=np.float64)
    valid = np.isfinite(r)
    out = np.zeros(r.shape, np.uint16)
    out[valid] = np.clip(np.rint(r[valid] * REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
    return out


def reduce_period(stack: np.ndarray, statistic: str = "median") -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel ``statistic`` of a period's observations, and the count of clear ones.

    ``stack`` is ``(looks, ...)`` float with NaN where a look is not clear (in date order for
    ``first``/``last``). ``median`` of an even count is the mean of the two middle values.
    Pixels with no clear look are NaN; the count is uint8-safe up to 255 looks.

    Examples
    --------
    >>> s = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [4.0, np.nan]])
    >>> value, count = reduce_period(s)
    >>> value.tolist(), count.tolist()
    ([3.0, nan], [3, 0])
    >>> reduce_period(s, "last")[0].tolist()
    [4.0, nan]
    """
    if statistic not in STATISTICS:
        raise SeasonError(f"statistic {statistic!r}: expected one of {', '.join(STATISTICS)}")
    s = np.asarray(stack)
    finite = np.isfinite(s)
    count = finite.sum(axis=0)
    if s.shape[0] == 0:
        return np.full(s.shape[1:], np.nan), count.astype(np.int64)
    with np.errstate(all="ignore"):
        if statistic in ("first", "last"):
            order = range(s.shape[0]) if statistic == "last" else range(s.shape[0] - 1, -1, -1)
            value = np.full(s.shape[1:], np.nan)
            for i in order:
                value = np.where(finite[i], s[i], value)
        elif statistic == "median":
            value = _nanmedian(s, finite, count)
        else:
            filled = np.where(finite, s, 0.0 if statistic == "mean" else (np.inf if statistic == "min" else -np.inf))
            value = {"mean": lambda: filled.sum(axis=0) / count, "min": lambda: filled.min(axis=0),
                     "max": lambda: filled.max(axis=0)}[statistic]()
            value = np.where(count > 0, value, np.nan)
    return np.asarray(value, np.float64), count.astype(np.int64)


def _nanmedian(s: np.ndarray, finite: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``np.nanmedian`` over axis 0 without its per-pixel Python loop: sort once (NaN sorts last)
    and pick the middle one or two clear values by index."""
    ordered = np.sort(np.where(finite, s, np.nan), axis=0)
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, s.shape[0] - 1)
    a = np.take_along_axis(ordered, lo[None], axis=0)[0]
    b = np.take_along_axis(ordered, hi[None], axis=0)[0]
    return np.where(count > 0, (a.astype(np.float64) + b) / 2.0, np.nan)


# --------------------------------------------------------------------------- grids


def utm_epsg(lon: float, lat: float) -> int:
    """The EPSG code of the WGS 84 UTM zone holding ``(lon, lat)`` (326xx north, 327xx south).

    The standard 6-degree zones, without Norway's and Svalbard's exceptions; a point on a
    zone boundary belongs to the zone east of it.

    Examples
    --------
    >>> utm_epsg(75.85, 30.9), utm_epsg(78.0, 29.0), utm_epsg(-47.9, -15.8)
    (32643, 32644, 32723)
    """
    if not (math.isfinite(lon) and math.isfinite(lat)) or not -90 <= lat <= 90:
        raise SeasonError(f"area centre ({lon}, {lat}): expected longitude and latitude in degrees")
    zone = int(math.floor((((lon + 180.0) % 360.0)) / 6.0)) + 1
    zone = min(max(zone, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def aligned_grid(bounds: tuple[float, float, float, float], resolution: float) -> tuple[Affine, tuple[int, int]]:
    """A north-up grid covering ``bounds`` (minx, miny, maxx, maxy) whose pixel edges are
    multiples of ``resolution`` (GDAL's ``-tap``), so that outputs of separate runs line up,
    and with Sentinel-2's own UTM grids at 10, 20 or 60 m.

    Examples
    --------
    >>> t, shape = aligned_grid((399965.0, 3300001.0, 400101.0, 3300050.0), 10)
    >>> (t.c, t.f, t.a, t.e), shape
    ((399960.0, 3300050.0, 10.0, -10.0), (5, 15))
    """
    if not (isinstance(resolution, (int, float)) and math.isfinite(resolution) and resolution > 0):
        raise SeasonError(f"resolution {resolution!r}: expected a positive number of CRS units (e.g. 10 metres)")
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not (all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) and maxx > minx and maxy > miny):
        raise SeasonError(f"area bounds {bounds}: expected minx < maxx and miny < maxy")
    r = float(resolution)
    eps = 1e-6  # of a pixel: bounds that went through a reprojection and back stay on their edge
    x0, x1 = math.floor(minx / r + eps) * r, math.ceil(maxx / r - eps) * r
    y0, y1 = math.floor(miny / r + eps) * r, math.ceil(maxy / r - eps) * r
    w, h = round((x1 - x0) / r), round((y1 - y0) / r)
    return Affine(r, 0.0, x0, 0.0, -r, y1), (int(h), int(w))
