"""Vegetation indices from band names, weighted zonal statistics and phenology metrics. Pure numpy.

Indices
-------
An index is named (``ndvi``, ``evi``, ``ndwi``, ``savi``, ``ndre``, ``ndmi``) or written from
band names: ``nd(B08,B04)`` (a normalised difference ``(a - b) / (a + b)``) or
``ratio(B08,B04)`` (``a / b``), optionally named: ``gcvi=ratio(nir,green)``. Bands are found by
the stack's own names (``B04``), by STAC common name (``red``) or by the short names geoseg's
synthetic stacks use (``R``). Reflectance is expected in 0..1 (the caller applies the file's
scale and offset); a pixel where a band is missing, or a denominator is 0, has no value (NaN).

Zonal statistics (:func:`zone_stats`)
-------------------------------------
Each (zone, pixel) piece carries a weight: the pixel's ground area times the share of it inside
the zone (exact fractional coverage at zone borders). Per zone: the weighted mean and
(population) standard deviation, and the weighted quantiles ``p10``, ``median``, ``p90`` by
the weighted form of the linear rule (Hyndman and Fan's type 7, numpy's default with equal
weights): with the values sorted, ``x_1 <= ... <= x_n``, and ``s_k = (k - 1) w_k + (n - 1)
sum_{i<k} w_i``, the q-quantile interpolates linearly between the ``x_k`` at ``q s_n`` - the rule
exactextract uses, so the two agree (equal values are taken in order of weight, so that the result
does not depend on the order of the pieces). Pieces without a value (a cloud, a missing band) count in
the zone's weight but not in its statistics: ``observed`` is the share of the zone's weight
that has a value.

Phenology (:func:`phenology`)
-----------------------------
From a series of values on day numbers (missing dates skipped): the **peak** (largest value)
and its day; the seasonal **amplitude** ``peak - base``, ``base`` the smaller of the minima
before and after the peak; **start of season** the day the series first rises through
``base_before + fraction x (peak - base_before)`` before the peak, **end of season** the day it
falls through ``base_after + fraction x (peak - base_after)`` after it (both interpolated
linearly between dates; ``fraction`` 0.5 by default, the midpoint convention of TIMESAT's
amplitude method); **length** their difference in days; **integral** the area under the series
between them (trapezoids, index x days). A series with fewer than three observed dates, or
whose peak is its first or last date, has no start or end (NaN).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NAMED_INDICES",
    "PHENOLOGY",
    "STATS",
    "IndexSpec",
    "band_index",
    "index_values",
    "parse_index",
    "phenology",
    "zone_stats",
]

#: Names each common band goes by in stacks: STAC common name, Sentinel-2 band, Landsat 8/9 C2 L2
#: band, geoseg's synthetic short names.
_BAND_NAMES: dict[str, tuple[str, ...]] = {
    "blue": ("blue", "B02", "B2", "SR_B2", "B"),
    "green": ("green", "B03", "B3", "SR_B3", "G"),
    "red": ("red", "B04", "B4", "SR_B4", "R"),
    "rededge1": ("rededge1", "B05"),
    "nir": ("nir", "B08", "B8", "SR_B5", "NIR", "nir08", "B8A"),
    "swir16": ("swir16", "B11", "SR_B6", "SWIR1"),
    "swir22": ("swir22", "B12", "SR_B7", "SWIR2"),
}
#: Statistics per zone and date, in table order.
STATS = ("mean", "median", "std", "p10", "p90", "observed")
#: Phenology columns, in table order.
PHENOLOGY = ("peak", "peak_day", "sos_day", "eos_day", "season_days", "integral")


@dataclass(frozen=True)
class IndexSpec:
    """One index: its name, its formula kind and the bands it reads (names as the user gave them)."""

    name: str
    kind: str  # "nd", "ratio", "evi", "savi"
    bands: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}={self.kind}({','.join(self.bands)})"


#: The indices known by name.
NAMED_INDICES: dict[str, IndexSpec] = {
    "ndvi": IndexSpec("ndvi", "nd", ("nir", "red")),
    "ndwi": IndexSpec("ndwi", "nd", ("green", "nir")),  # McFeeters 1996: open water
    "ndmi": IndexSpec("ndmi", "nd", ("nir", "swir16")),  # leaf water (Gao's NDWI)
    "ndre": IndexSpec("ndre", "nd", ("nir", "rededge1")),
    "evi": IndexSpec("evi", "evi", ("nir", "red", "blue")),
    "savi": IndexSpec("savi", "savi", ("nir", "red")),
}
_EXPR = re.compile(r"^\s*(?:([A-Za-z][A-Za-z0-9_]*)\s*=\s*)?(nd|ratio)\s*\(\s*([A-Za-z0-9_]+)\s*,\s*([A-Za-z0-9_]+)\s*\)\s*$",
                   re.IGNORECASE)


def parse_index(text: str) -> IndexSpec:
    """The :class:`IndexSpec` of a name (``ndvi``) or an expression (``ndre=nd(B8A,B05)``).

    Raises
    ------
    ValueError
        Neither a known name nor ``nd(a,b)`` / ``ratio(a,b)``.

    Examples
    --------
    >>> str(parse_index("NDVI")), str(parse_index("gcvi=ratio(nir,green)")), parse_index("nd(B08,B04)").name
    ('ndvi=nd(nir,red)', 'gcvi=ratio(nir,green)', 'nd_B08_B04')
    """
    t = text.strip()
    if t.lower() in NAMED_INDICES:
        return NAMED_INDICES[t.lower()]
    m = _EXPR.match(t)
    if not m:
        raise ValueError(
            f"index {text!r}: expected one of {', '.join(NAMED_INDICES)} or an expression nd(A,B) / ratio(A,B) "
            f"of band names, optionally named (ndre=nd(B8A,B05))"
        )
    name, kind, a, b = m.group(1), m.group(2).lower(), m.group(3), m.group(4)
    return IndexSpec(name.lower() if name else f"{kind}_{a}_{b}", kind, (a, b))


def band_index(band: str, names: Sequence[str]) -> int | None:
    """The position of ``band`` among a date's band ``names``: by the exact name, then
    case-insensitively, then through the common-name aliases; None when absent.

    >>> band_index("red", ["B", "G", "R", "NIR"]), band_index("B08", ["B02", "B04", "B08"]), band_index("swir16", ["R"])
    (2, 2, None)
    """
    if band in names:
        return list(names).index(band)
    low = [n.lower() for n in names]
    if band.lower() in low:
        return low.index(band.lower())
    for aliases in _BAND_NAMES.values():
        if band.lower() in (a.lower() for a in aliases):
            for a in aliases:
                if a.lower() in low:
                    return low.index(a.lower())
    return None


def index_values(spec: IndexSpec, bands: Mapping[str, np.ndarray]) -> np.ndarray:
    """The index from reflectance arrays keyed by the spec's band names (NaN where undefined)."""
    arr = [np.asarray(bands[b], np.float64) for b in spec.bands]
    with np.errstate(invalid="ignore", divide="ignore"):
        if spec.kind == "nd":
            a, b = arr
            out = (a - b) / (a + b)
        elif spec.kind == "ratio":
            a, b = arr
            out = a / b
        elif spec.kind == "evi":  # Huete et al. 2002, MODIS coefficients
            nir, red, blue = arr
            out = 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0)
        elif spec.kind == "savi":  # Huete 1988, L = 0.5
            nir, red = arr
            out = 1.5 * (nir - red) / (nir + red + 0.5)
        else:  # pragma: no cover - parse_index makes no other kind
            raise ValueError(f"unknown index kind {spec.kind!r}")
    return np.where(np.isfinite(out), out, np.nan)


def zone_stats(zone: np.ndarray, values: np.ndarray, weight: np.ndarray, n_zones: int) -> dict[str, np.ndarray]:
    """Weighted statistics of ``values`` per zone (see the module notes).

    Parameters
    ----------
    zone : int array (n,)
        Each piece's zone 0..n_zones-1.
    values : float array (n,) or (n, m)
        Each piece's value (NaN: none), or m series at once (dates x indices).
    weight : float array (n,)
        Each piece's weight (> 0).

    Returns
    -------
    dict
        :data:`STATS` -> arrays (n_zones,) or (n_zones, m); NaN where a zone has no value.
    """
    z = np.asarray(zone, np.int64)
    v = np.asarray(values, np.float64)
    one = v.ndim == 1
    if one:
        v = v[:, None]
    w = np.asarray(weight, np.float64)
    m = v.shape[1]
    total = np.bincount(z, weights=w, minlength=n_zones)
    out = {k: np.full((n_zones, m), math.nan) for k in STATS}
    for j in range(m):
        col = v[:, j]
        ok = ~np.isnan(col)
        zz, vv, ww = z[ok], col[ok], w[ok]
        wsum = np.bincount(zz, weights=ww, minlength=n_zones)
        has = wsum > 0
        mean = np.bincount(zz, weights=ww * vv, minlength=n_zones) / np.where(has, wsum, 1)
        dev = vv - mean[zz]
        var = np.bincount(zz, weights=ww * dev * dev, minlength=n_zones) / np.where(has, wsum, 1)
        out["mean"][:, j] = np.where(has, mean, math.nan)
        out["std"][:, j] = np.where(has, np.sqrt(np.maximum(var, 0.0)), math.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["observed"][:, j] = np.where(total > 0, wsum / np.where(total > 0, total, 1), math.nan)
        if len(vv):
            for key, col in zip(("p10", "median", "p90"), _quantiles(zz, vv, ww, n_zones, (0.1, 0.5, 0.9)),
                                strict=True):
                out[key][:, j] = col
    if one:
        return {k: a[:, 0] for k, a in out.items()}
    return out


def _zone_order(z: np.ndarray, v: np.ndarray, n_zones: int) -> np.ndarray:
    """An order of the pieces by zone, then value (equal values in any order): one fast unstable
    sort by value, then a stable sort by zone (a radix sort while zones fit 16 bits)."""
    by_value = np.argsort(v)
    zk = z[by_value]
    if n_zones <= 1 << 16:
        zk = zk.astype(np.uint16)
    return by_value[np.argsort(zk, kind="stable")]


def _quantiles(z: np.ndarray, v: np.ndarray, w: np.ndarray, n_zones: int, qs: Sequence[float]) -> list[np.ndarray]:
    """Each zone's weighted type-7 quantiles ``qs`` (see the module notes), one sort for all; NaN for a
    zone without pieces.

    Equal values are taken in order of weight. Within a run of equal values only the run's first
    and last positions can bound an interpolation to another value, so their ``s`` are computed
    with the run's smallest and largest weight (what that order puts there) and the positions
    between take the first one's ``s``: the result does not depend on the order the sort left
    the run in."""
    order = _zone_order(z, v, n_zones)
    zs, vs, ws = z[order], v[order], w[order]
    start = np.searchsorted(zs, np.arange(n_zones), side="left")
    stop = np.searchsorted(zs, np.arange(n_zones), side="right")
    npc = len(zs)
    n = (stop - start)[zs]  # pieces in each piece's zone
    k = np.arange(npc) - start[zs]  # 0-based rank within the zone
    cum = np.cumsum(ws)
    zone_before = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)[zs]
    # runs of equal values within a zone
    first = np.ones(npc, bool)
    first[1:] = (zs[1:] != zs[:-1]) | (vs[1:] != vs[:-1])
    run_start = np.flatnonzero(first)
    run_stop = np.append(run_start[1:], npc) - 1  # inclusive
    w_min = np.minimum.reduceat(ws, run_start)
    w_max = np.maximum.reduceat(ws, run_start)
    before_run = cum[run_start] - ws[run_start] - zone_before[run_start]  # weight of the lower values
    through_run = cum[run_stop] - zone_before[run_stop]
    n_run = n[run_start]
    s_first = k[run_start] * w_min + (n_run - 1) * before_run
    s_last = k[run_stop] * w_max + (n_run - 1) * (through_run - w_max)
    s = np.repeat(s_first, np.diff(np.append(run_start, npc)))
    s[run_stop] = s_last
    last = stop - 1
    has = stop > start
    s_n = np.where(has, s[np.maximum(last, 0)], 0.0)
    one = has & (s_n <= 0)  # one piece (or all weight on the first): its value
    many = np.flatnonzero(has & (s_n > 0))
    # position along each zone, 0..1, offset by the zone's rank so that one search serves all zones
    key = zs + 0.5 * np.where(s_n[zs] > 0, s / np.where(s_n[zs] > 0, s_n[zs], 1), 0.0)
    outs = []
    for q in qs:
        out = np.full(n_zones, math.nan)
        out[one] = vs[start[one]]
        if len(many):
            pos = np.clip(np.searchsorted(key, many + 0.5 * q, side="right") - 1, start[many], last[many])
            nxt = np.minimum(pos + 1, last[many])
            h = q * s_n[many]
            span = s[nxt] - s[pos]
            frac = np.where((nxt > pos) & (span > 0), (h - s[pos]) / np.where(span > 0, span, 1), 0.0)
            out[many] = vs[pos] + np.clip(frac, 0.0, 1.0) * (vs[nxt] - vs[pos])
        outs.append(out)
    return outs


def phenology(days: np.ndarray, values: np.ndarray, fraction: float = 0.5) -> dict[str, np.ndarray]:
    """Peak, start and end of season, length and integral of each series (rows of ``values``;
    NaN for missing dates) on ``days``; see the module notes. Returns :data:`PHENOLOGY` -> arrays."""
    d = np.asarray(days, np.float64)
    v = np.atleast_2d(np.asarray(values, np.float64))
    n = v.shape[0]
    out = {k: np.full(n, math.nan) for k in PHENOLOGY}
    for i in range(n):
        ok = ~np.isnan(v[i])
        if ok.sum() == 0:
            continue
        dd, vv = d[ok], v[i][ok]
        k = int(np.argmax(vv))
        out["peak"][i], out["peak_day"][i] = vv[k], dd[k]
        if len(vv) < 3 or k == 0 or k == len(vv) - 1:
            continue
        base_b, base_a = vv[:k].min(), vv[k + 1 :].min()
        up = base_b + fraction * (vv[k] - base_b)
        down = base_a + fraction * (vv[k] - base_a)
        # the last crossing upward before the peak, the first downward after it
        j = max(x for x in range(k) if vv[x] < up) if (vv[:k] < up).any() else None
        e = min(x for x in range(k + 1, len(vv)) if vv[x] < down) if (vv[k + 1 :] < down).any() else None
        if j is None or e is None:
            continue
        sos = dd[j] + (up - vv[j]) / (vv[j + 1] - vv[j]) * (dd[j + 1] - dd[j])
        eos = dd[e - 1] + (vv[e - 1] - down) / (vv[e - 1] - vv[e]) * (dd[e] - dd[e - 1])
        out["sos_day"][i], out["eos_day"][i], out["season_days"][i] = sos, eos, eos - sos
        # the integral between sos and eos: the series with its ends cut at the crossings
        xs = np.concatenate([[sos], dd[j + 1 : e], [eos]])
        ys = np.concatenate([[up], vv[j + 1 : e], [down]])
        out["integral"][i] = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return out
