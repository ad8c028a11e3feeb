"""The synthetic region's geometry: roads, canals, villages, field parcels with their crops, districts.

Everything here is vectors in EPSG:32643 metres, made for the whole region (and a margin
around it, so that nothing stops at its edge) before any pixel is drawn:

1. **A frame**: the region, the extent laid out around it, and a local grid slightly
   rotated against north, the orientation of the land-consolidation grid.
2. **Background**: link roads along the perturbed grid (every 1.2-2.5 km), a few winding
   major roads, canals and distributaries, cut into ~1 km buffered pieces; villages as
   irregular blobs on a jittered lattice, half of them with a pond.
3. **Cells**: Voronoi cells of a jittered, unevenly spaced lattice (150-500 m across) in
   the grid's frame, with the background cut out; pieces under 0.5 ha become background.
4. **Footprint**: the fields clipped to the region minus the nodata collar, sorted north
   to south.
5. **Crops**: one per field, drawn with Punjab-like frequencies (rice and wheat dominate)
   that drift smoothly across the region.

Each stage draws from its own random generator spawned from the seed, so the stages are
independent of each other's draws.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from affine import Affine

from geoseg.classes import ClassTable
from geoseg.synth.spectra import MAT_ROAD, MAT_VILLAGE, MAT_WATER

__all__ = ["CRS", "DEFAULT_CENTRE", "Layout", "Waves", "make_layout", "punjab_districts"]

#: The CRS of every output: WGS 84 / UTM zone 43N.
CRS = "EPSG:32643"
#: Default region centre (EPSG:32643 metres): near Khanna, where Ludhiana, Fatehgarh
#: Sahib, Patiala and Sangrur districts meet, so even small regions span 2-3 districts.
DEFAULT_CENTRE = (604500.0, 3381000.0)

_MARGIN = 1000.0  # metres of layout generated beyond the region on every side
_MIN_FIELD_M2 = 5000.0  # field pieces smaller than 0.5 ha become background
# Relative frequencies of crops (classes named otherwise get _OTHER_WEIGHT).
_WEIGHTS = {"rice": 0.40, "wheat": 0.34, "sugarcane": 0.05, "cotton": 0.06, "maize": 0.06, "fallow": 0.09}
_OTHER_WEIGHT = 0.06


# --- smooth random fields --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Waves:
    """A smooth random field: a sum of plane waves, evaluated without 2-D trigonometry."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, n: int, wavelengths: tuple[float, float]) -> "Waves":
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


# --- the layout ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Layout:
    """The region's vectors, in EPSG:32643 metres."""

    fields: np.ndarray  # shapely polygons, clipped to the footprint, sorted north to south
    field_class: np.ndarray  # class id per field
    bg: np.ndarray  # background features (roads, canals, villages, ponds)
    bg_code: np.ndarray  # material code per background feature
    collar: Any  # shapely polygon in EPSG:32643, or None


@dataclass(frozen=True, slots=True)
class _Frame:
    """The region, the extent laid out around it (``_MARGIN`` wider) and the rotated local grid."""

    region: Any  # shapely box of the region
    ext: Any  # shapely box of the extent
    x0: float  # the region's west edge
    y0: float  # the region's south edge
    bounds: tuple[float, float, float, float]  # the extent's (west, south, east, north)
    centre: np.ndarray  # the extent's centre (x, y)
    diag: float  # the extent's diagonal
    phi: float  # orientation of the grid (radians from east)
    u_dir: np.ndarray  # the grid's first axis (unit vector)
    v_dir: np.ndarray  # the grid's second axis

    @classmethod
    def make(cls, r_net: np.random.Generator, height: int, width: int, transform: Affine) -> "_Frame":
        ps = transform.a
        x0, y1 = transform.c, transform.f
        x1, y0 = x0 + width * ps, y1 - height * ps
        region = shapely.box(x0, y0, x1, y1)
        ext = shapely.box(x0 - _MARGIN, y0 - _MARGIN, x1 + _MARGIN, y1 + _MARGIN)
        ex0, ey0, ex1, ey1 = x0 - _MARGIN, y0 - _MARGIN, x1 + _MARGIN, y1 + _MARGIN
        centre = np.array([(ex0 + ex1) / 2, (ey0 + ey1) / 2])
        diag = math.hypot(ex1 - ex0, ey1 - ey0)
        phi = math.radians(r_net.uniform(-12, 12))  # orientation of the land-consolidation grid
        u_dir = np.array([math.cos(phi), math.sin(phi)])
        v_dir = np.array([-math.sin(phi), math.cos(phi)])
        return cls(region, ext, x0, y0, (ex0, ey0, ex1, ey1), centre, diag, phi, u_dir, v_dir)


def make_layout(
    seed: int, height: int, width: int, transform: Affine, table: ClassTable, crop_ids: list[int], collar: bool
) -> Layout:
    """Roads, canals, villages and field polygons (with their crops) for the whole region, in metres."""
    ss = np.random.SeedSequence([seed, 20240615])
    r_net, r_vil, r_cell, r_cls, r_col = (np.random.default_rng(s) for s in ss.spawn(5))
    frame = _Frame.make(r_net, height, width, transform)
    bg, bg_code = _background(r_net, r_vil, frame)
    cells = _cells(r_cell, frame, bg)
    collar_geom = _collar_metres(r_col, height, width, transform) if collar else None
    fields, fxy = _footprint(cells, frame.region, collar_geom)
    field_class = _crops(r_cls, fxy, frame, table, crop_ids)
    return Layout(fields, field_class, bg, bg_code, collar_geom)


# --- background: network, villages --------------------------------------------------------
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


def _offsets(rng: np.random.Generator, diag: float, spacing: tuple[float, float]) -> np.ndarray:
    """Positions across the extent of lines ``spacing`` (min, max) metres apart, from a random start."""
    n = int(diag / spacing[0]) + 2
    steps = rng.uniform(*spacing, n)
    return -diag / 2 + rng.uniform(0, spacing[1]) + np.cumsum(steps) - steps[0]


def _network(r_net: np.random.Generator, f: _Frame) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Link roads on the perturbed grid, major roads, canals and distributaries: pieces and material codes."""
    ou, ov = _offsets(r_net, f.diag, (1500.0, 2500.0)), _offsets(r_net, f.diag, (1200.0, 2000.0))
    lines, widths, codes = [], [], []
    for offs, along, across in ((ov, f.phi, f.v_dir), (ou, f.phi + math.pi / 2, f.u_dir)):
        c = f.centre[None] + offs[:, None] * across[None]
        lines.append(_wiggly_lines(r_net, c, np.full(len(offs), along), f.diag + 2000, (10, 40), (800, 3000)))
        widths.append(r_net.uniform(9, 14, len(offs)))
        codes.append(np.full(len(offs), MAT_ROAD))
    ex0, ey0, ex1, ey1 = f.bounds
    n_major = 1 + int(f.diag // 15000)
    n_canal = 1 + int(f.diag // 25000)
    n_dist = 1 + int(f.diag // 12000)
    for n, ang, amp, lam, wid, code in (
        (n_major, (0, np.pi), (60, 180), (3000, 8000), (22, 32), MAT_ROAD),
        (n_canal, (np.pi / 4 - 0.3, np.pi / 4 + 0.3), (100, 300), (4000, 10000), (28, 40), MAT_WATER),
        (n_dist, (0, np.pi), (40, 150), (2000, 6000), (12, 18), MAT_WATER),
    ):
        c = np.stack([r_net.uniform(ex0, ex1, n), r_net.uniform(ey0, ey1, n)], -1)
        lines.append(_wiggly_lines(r_net, c, r_net.uniform(*ang, n), f.diag + 2000, amp, lam))
        widths.append(r_net.uniform(*wid, n))
        codes.append(np.full(n, code))
    net_polys, net_codes = [], []
    for ln, wd, cd in zip(lines, widths, codes):
        p, src = _pieces(ln, wd, f.ext)
        net_polys.append(p)
        net_codes.append(cd[src])
    return net_polys, net_codes


def _villages(r_vil: np.random.Generator, f: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """Villages (irregular blobs on a jittered ~2.3 km lattice) and their ponds."""
    ex0, ey0, ex1, ey1 = f.bounds
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
    return villages, ponds


def _background(r_net: np.random.Generator, r_vil: np.random.Generator, f: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """Every background feature touching the extent and its material code (int32)."""
    net_polys, net_codes = _network(r_net, f)
    villages, ponds = _villages(r_vil, f)
    bg = np.concatenate([villages, *net_polys, ponds])
    bg_code = np.concatenate([np.full(len(villages), MAT_VILLAGE), *net_codes, np.full(len(ponds), MAT_WATER)])
    on = shapely.intersects(bg, f.ext)
    return bg[on], bg_code[on].astype(np.int32)


# --- fields: cells, footprint, crops -------------------------------------------------------
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


def _cells(r_cell: np.random.Generator, f: _Frame, bg: np.ndarray) -> np.ndarray:
    """Field cells: Voronoi of a jittered, unevenly spaced lattice in the grid frame, background cut out."""
    ex0, ey0, ex1, ey1 = f.bounds
    su, sv = 330.0, 230.0
    half = f.diag / 2 + 500
    u = np.arange(-half, half, su)
    v = np.arange(-half, half, sv)
    lu, pu = r_cell.uniform(2500, 5000), r_cell.uniform(0, 2 * np.pi)
    lv, pv = r_cell.uniform(2500, 5000), r_cell.uniform(0, 2 * np.pi)
    u = u + 0.2 * lu / (2 * np.pi) * np.sin(2 * np.pi * u / lu + pu)  # spacing varies +-20 %
    v = v + 0.2 * lv / (2 * np.pi) * np.sin(2 * np.pi * v / lv + pv)
    uu, vv = np.meshgrid(u, v)
    uu = uu + r_cell.uniform(-0.3, 0.3, uu.shape) * su
    vv = vv + r_cell.uniform(-0.3, 0.3, vv.shape) * sv
    pts = f.centre[None] + uu.reshape(-1, 1) * f.u_dir[None] + vv.reshape(-1, 1) * f.v_dir[None]
    pts = pts[r_cell.random(len(pts)) > 0.15]  # merge some cells into bigger fields
    inside = (pts[:, 0] > ex0 - 600) & (pts[:, 0] < ex1 + 600) & (pts[:, 1] > ey0 - 600) & (pts[:, 1] < ey1 + 600)
    pts = pts[inside]
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=f.ext))
    cells = cells[shapely.intersects(cells, f.region)]
    cells = _subtract(cells, bg)
    fields, _ = _polygons_only(cells, _MIN_FIELD_M2)
    return fields


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


def _collar_metres(rng: np.random.Generator, height: int, width: int, transform: Affine) -> Any:
    """:func:`_collar` in EPSG:32643 metres."""
    px = _collar(rng, height, width)
    return shapely.affinity.affine_transform(px, [transform.a, transform.b, transform.d, transform.e,
                                                  transform.c, transform.f])


def _footprint(fields: np.ndarray, region: Any, collar: Any) -> tuple[np.ndarray, np.ndarray]:
    """``fields`` clipped to the region minus ``collar`` (None: none), sorted north to south; and their centroids."""
    cut = shapely.difference(region, collar) if collar is not None else region
    inner = shapely.contains_properly(cut, fields)
    fields = fields.copy()
    fields[~inner] = shapely.intersection(fields[~inner], cut)
    fields, _ = _polygons_only(fields, _MIN_FIELD_M2)
    c = shapely.centroid(fields)
    fxy = shapely.get_coordinates(c)
    order = np.lexsort((np.round(fxy[:, 0], 3), -np.round(fxy[:, 1], 3)))
    return fields[order], fxy[order]


def _crops(
    r_cls: np.random.Generator, fxy: np.ndarray, f: _Frame, table: ClassTable, crop_ids: list[int]
) -> np.ndarray:
    """One crop per field (centroids ``fxy``), frequencies drifting smoothly over ~3-12 km."""
    names = [table[i].name for i in crop_ids]
    base = np.array([_WEIGHTS.get(n, _OTHER_WEIGHT) for n in names])
    zones = np.stack([Waves.make(r_cls, 8, (3000, 12000)).at(fxy[:, 0] - f.x0, fxy[:, 1] - f.y0)
                      for _ in crop_ids], -1) if len(fxy) else np.zeros((0, len(crop_ids)))
    w = base[None] * np.exp(0.9 * zones)
    cdf = np.cumsum(w / w.sum(1, keepdims=True), 1)
    draw = r_cls.random(len(fxy))
    pick = np.minimum((cdf < draw[:, None]).sum(1), len(crop_ids) - 1)
    return np.asarray(crop_ids, dtype=np.int32)[pick]


# --- districts -----------------------------------------------------------------------
def punjab_districts(region: Any) -> Any:
    """Punjab districts (bundled, EPSG:4326) intersecting ``region``, in EPSG:32643, sorted by name."""
    import geopandas as gpd  # slow to import; deferred so that `geoseg --help` stays quick

    text = resources.files("geoseg.data").joinpath("punjab_districts.geojson").read_text(encoding="utf-8")
    gdf = gpd.GeoDataFrame.from_features(json.loads(text)["features"], crs="EPSG:4326")
    gdf = gdf[gdf.geometry.notna()].copy()
    gdf["geometry"] = shapely.make_valid(gdf.geometry.values)
    gdf = gdf.to_crs(CRS)
    gdf = gdf[shapely.intersects(gdf.geometry.values, region)]
    gdf = gdf.sort_values("district", kind="stable").reset_index(drop=True)
    gdf["censuscode"] = gdf["censuscode"].astype("int32")
    return gdf[["district", "st_nm", "censuscode", "geometry"]]
