"""A season of Sentinel-2 / Landsat scenes to one analysis-ready stack: ``geoseg composite``.

1. **Find** the scenes (:func:`geoseg.io.season.discover`: STAC, SAFE, band folders, Landsat)
   and keep those inside the season and reaching the area; each carries the scale and offset
   that harmonise its numbers to surface reflectance, from its own metadata.
2. **Grid**: the area (a polygon file, a lon/lat box, an MGRS tile of the items, or by default
   the scenes' union) on a north-up grid in the area's UTM zone (or the CRS asked for) at 10 m,
   pixel edges on multiples of the resolution.
3. **Looks**: scenes of one pass on one day (tiles of the same acquisition, in one or two UTM
   zones) are one look; each look falls in one period.
4. **Window by window** (jobs on a :class:`~geoseg.parallel.Runner`: threads, or the run's Dask
   workers), for each period: read every look's cloud mask onto the window (nearest; SCL or
   ``QA_PIXEL``, masked classes dilated), then each band (bilinear; the 20 m bands too),
   harmonise, drop what is not clear, and reduce the clear looks with the statistic (median).
   Memory holds one window's looks of one band at a time, whatever the area.
5. **Write** one COG of uint16 reflectance x 10000 (nodata 0), bands ``<period>_<band>``, and a
   COG of clear looks per period (``<period>_clear``, uint8), both published together or not at all.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.features import geometry_mask
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg.core.season import (
    QA_MASKED_DEFAULT,
    SCL_MASKED_DEFAULT,
    STATISTICS,
    Period,
    aligned_grid,
    assign_periods,
    parse_periods,
    qa_pixel_clear,
    reduce_period,
    reflectance_to_dn,
    scl_clear,
    to_reflectance,
    utm_epsg,
)
from geoseg.errors import ConfigError, SeasonError, SeasonWarning, portable_errors
from geoseg.io.imagery import Asset, Scene, band_request, landsat_common, look_key
from geoseg.io.paths import check_overwrite, refuse_stdout
from geoseg.io.raster import RasterWriter, check_creation_options, check_outputs
from geoseg.io.season import discover, gdal_options, read_onto, source_crs_bounds
from geoseg.io.stac_items import search_stac_api
from geoseg.io.vector import read_vector
from geoseg.parallel import Runner

__all__ = ["DEFAULT_BLOCK", "CompositeResult", "clear_path_for", "composite_season"]

#: Output window per job (pixels).
DEFAULT_BLOCK = 512


def clear_path_for(out: str | os.PathLike[str]) -> Path:
    """The clear-look counts published beside a composite: ``season.tif`` -> ``season_clear.tif``."""
    p = Path(out)
    return p.with_name(f"{p.stem}_clear{p.suffix or '.tif'}")


@dataclass(frozen=True, slots=True)
class _SceneJob:
    """What a job needs of one scene: picklable, small."""

    id: str
    mask: Asset
    mask_kind: str
    bands: tuple[Asset, ...]  # in output band order
    bounds: tuple[float, float, float, float]  # in the output CRS


@dataclass(frozen=True, slots=True)
class _Job:
    row: int
    col: int
    height: int
    width: int
    transform: Affine
    crs: str
    looks: tuple[tuple[tuple[_SceneJob, ...], ...], ...]  # per period, per look, its scenes
    statistic: str
    scl_masked: tuple[int, ...]
    qa_masked: tuple[str, ...]
    dilate: int
    n_bands: int
    area_wkb: bytes | None
    options: tuple[tuple[str, Any], ...]

    def __dask_tokenize__(self) -> Any:
        return ("geoseg-composite-job", self.row, self.col, self.height, self.width, repr(self.transform), self.crs,
                repr(self.looks), self.statistic, self.scl_masked, self.qa_masked, self.dilate, self.area_wkb)


@dataclass(frozen=True, slots=True)
class CompositeResult:
    """What :func:`composite_season` wrote.

    Attributes
    ----------
    path, clear_path : Path
        The composite COG and the clear-look counts COG.
    bands : list of str
        Output band names, ``<period>_<band>``, period-major.
    periods : list of Period
    looks : list of int
        Looks (passes) per period.
    scenes : int
        Scenes (items, products) used.
    empty_periods : list of str
        Periods without one clear look anywhere in the area (their bands are all nodata).
    crs : str
    transform : Affine
    shape : tuple of int
    seconds : float
    harmonisation : dict
        How each scene's reflectance was derived, ``{scene id: source of scale and offset}``.
    """

    path: Path
    clear_path: Path
    bands: list[str]
    periods: list[Period]
    looks: list[int]
    scenes: int
    empty_periods: list[str]
    crs: str
    transform: Affine
    shape: tuple[int, int]
    seconds: float
    harmonisation: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        h, w = self.shape
        lines = [f"composite: {self.path} ({len(self.bands)} bands = {len(self.periods)} periods x "
                 f"{len(self.bands) // max(len(self.periods), 1)} bands, {w} x {h} px, {self.crs})",
                 f"clear looks: {self.clear_path}",
                 f"scenes: {self.scenes}; looks per period: "
                 + ", ".join(f"{p.label} {n}" for p, n in zip(self.periods, self.looks))]
        if self.empty_periods:
            lines.append(f"no clear look anywhere in: {', '.join(self.empty_periods)} (those bands are nodata)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the area


def _area_geometry(area: str | None, where: str | None, scenes: Sequence[Scene],
                   headers: Sequence[tuple[str, tuple[float, float, float, float]]]) -> tuple[Any, str]:
    """The area as a lon/lat (EPSG:4326) shapely geometry, and how it was given."""
    if area is None or not str(area).strip():
        boxes = []
        for s, (crs, b) in zip(scenes, headers):
            boxes.append(shapely.box(*transform_bounds(crs, "EPSG:4326", *b, densify_pts=21)))
        return shapely.union_all(boxes), "the scenes' footprints"
    text = str(area).strip()
    if text.lower().startswith(("mgrs:", "tile:")):
        tile = text.split(":", 1)[1].strip().upper().lstrip("T")
        boxes = [shapely.box(*transform_bounds(crs, "EPSG:4326", *b, densify_pts=21))
                 for s, (crs, b) in zip(scenes, headers) if s.tile.upper().lstrip("T").endswith(tile) and tile]
        if not boxes:
            tiles = sorted({s.tile for s in scenes if s.tile})
            raise SeasonError(f"area {text!r}: no scene is on MGRS tile {tile}; the scenes cover "
                              f"{', '.join(tiles) or 'no named tile'}")
        return shapely.union_all(boxes), f"MGRS tile {tile}"
    parts = text.split(",")
    if len(parts) == 4:
        try:
            minx, miny, maxx, maxy = (float(v) for v in parts)
        except ValueError:
            pass
        else:
            if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
                raise SeasonError(f"area {text!r}: expected a lon/lat box MINLON,MINLAT,MAXLON,MAXLAT in degrees "
                                  f"(e.g. 75.5,30.6,76.2,31.1)")
            return shapely.box(minx, miny, maxx, maxy), "a lon/lat box"
    gdf = read_vector(text)
    if where:
        key, sep, value = where.partition("=")
        if not sep or key.strip() not in gdf.columns:
            cols = ", ".join(c for c in gdf.columns if c != "geometry")
            raise SeasonError(f"{text}: --area-where {where!r}: expected FIELD=VALUE with a field of the file ({cols})")
        gdf = gdf[gdf[key.strip()].astype(str) == value.strip()]
        if gdf.empty:
            raise SeasonError(f"{text}: no feature has {key.strip()} = {value.strip()!r}; check the value (case matters)")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.empty:
        raise SeasonError(f"{text}: the area file holds no geometry; expected the polygon(s) of the area")
    if gdf.crs is None:
        raise SeasonError(f"{text}: the area file has no CRS; set one (e.g. `ogr2ogr -a_srs EPSG:4326 ...`)")
    geom = shapely.union_all(shapely.make_valid(gdf.to_crs("EPSG:4326").geometry.values))
    return geom, f"{text}" + (f" ({where})" if where else "")


def _output_crs(crs: str | None, area_lonlat: Any) -> CRS:
    if crs:
        try:
            out = CRS.from_user_input(crs)
        except Exception:  # noqa: BLE001 - pyproj's CRSError and friends
            raise SeasonError(f"CRS {crs!r}: not a CRS pyproj knows; give e.g. EPSG:32643") from None
        if not out.is_projected:
            raise SeasonError(f"CRS {crs!r}: geographic (degrees); a composite needs a projected CRS in metres, "
                              f"e.g. the area's UTM zone (leave --crs out to get it)")
        return out
    c = area_lonlat.centroid
    return CRS.from_epsg(utm_epsg(c.x, c.y))


# --------------------------------------------------------------------------- the job


def _window_job(job: _Job) -> tuple[np.ndarray, np.ndarray]:
    """``(values (periods x bands, h, w) uint16, clear looks (periods, h, w) uint8)`` of one window."""
    h, w, halo = job.height, job.width, job.dilate
    opts = dict(job.options)
    inside = None
    if job.area_wkb is not None:
        inside = ~geometry_mask([shapely.from_wkb(job.area_wkb)], out_shape=(h, w), transform=job.transform)
    values = np.zeros((len(job.looks) * job.n_bands, h, w), np.uint16)
    counts = np.zeros((len(job.looks), h, w), np.uint8)
    halo_t = job.transform @ Affine.translation(-halo, -halo)
    for p, looks in enumerate(job.looks):
        if not looks:
            continue
        owners, clears = [], []
        for scenes in looks:
            owner = np.full((h, w), -1, np.int16)
            clear = np.zeros((h, w), bool)
            for i, s in enumerate(scenes):
                m = read_onto(s.mask, s.id, crs=job.crs, transform=halo_t, shape=(h + 2 * halo, w + 2 * halo),
                              resampling="nearest", options=opts)
                if s.mask_kind == "scl":
                    ok = scl_clear(m, job.scl_masked, job.dilate)
                    has = m != (s.mask.nodata if s.mask.nodata is not None else 0)
                else:
                    ok = qa_pixel_clear(m, job.qa_masked, job.dilate)
                    has = (m.astype(np.uint32) & 1) == 0
                ok, has = ok[halo:halo + h, halo:halo + w], has[halo:halo + h, halo:halo + w]
                take = (owner < 0) & has
                owner[take] = i
                clear[take] = ok[take]
            owners.append(owner)
            clears.append(clear)
        for b in range(job.n_bands):
            stack = np.full((len(looks), h, w), np.nan)
            for li, scenes in enumerate(looks):
                for i, s in enumerate(scenes):
                    sel = (owners[li] == i) & clears[li]
                    if not sel.any():
                        continue
                    a = s.bands[b]
                    dn = read_onto(a, s.id, crs=job.crs, transform=job.transform, shape=(h, w), options=opts)
                    refl = to_reflectance(dn, a.scale, a.offset, a.nodata)
                    stack[li][sel] = refl[sel]
            value, count = reduce_period(stack, job.statistic)
            if inside is not None:
                value[~inside] = np.nan
                count[~inside] = 0
            values[p * job.n_bands + b] = reflectance_to_dn(value)
            if b == 0:
                counts[p] = np.minimum(count, 255).astype(np.uint8)
    return values, counts


_run_window = portable_errors(_window_job)


# --------------------------------------------------------------------------- the function


def _check_statistic(statistic: str) -> str:
    if statistic not in STATISTICS:
        raise SeasonError(f"statistic {statistic!r}: expected one of {', '.join(STATISTICS)}")
    return statistic


def _as_day(value: date | str | None, what: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise SeasonError(f"{what} {value!r}: expected a date as YYYY-MM-DD (e.g. 2024-06-01)") from None


def composite_season(
    out: str | os.PathLike[str],
    sources: Sequence[str | os.PathLike[str]] = (),
    *,
    scenes: Sequence[Scene] | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    periods: str | Sequence[str] | None = "monthly",
    bands: str | Sequence[str] | None = None,
    area: str | None = None,
    area_where: str | None = None,
    crs: str | None = None,
    resolution: float = 10.0,
    statistic: str = "median",
    scl_classes: Sequence[int] = SCL_MASKED_DEFAULT,
    qa_flags: Sequence[str] = QA_MASKED_DEFAULT,
    dilate: int = 0,
    boa_offset: float | None = None,
    stac_api: str | None = None,
    collections: Sequence[str] = ("sentinel-2-l2a",),
    retries: int = 3,
    block: int = DEFAULT_BLOCK,
    runner: Runner | None = None,
    overwrite: bool = False,
    creation_options: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CompositeResult:
    """Composite a season of Sentinel-2 L2A / Landsat C2 L2 scenes into one stack on one grid.

    Parameters
    ----------
    out : path
        The composite COG (``.tif``); the clear-look counts go to :func:`clear_path_for` (``out``
        with ``_clear`` before the suffix).
    sources : sequence of paths or URLs
        STAC files/URLs, SAFE products, folders (see :func:`geoseg.io.season.discover`).
    scenes : sequence of Scene, optional
        Scenes found already (e.g. by :func:`geoseg.io.stac_items.search_stac_api`), used with
        those of ``sources``.
    start, end : date or ISO string
        The season, end excluded (default: from the first to the day after the last scene).
    periods : str or sequence
        ``monthly`` (default), ``semimonthly``, ``"16d"``, ``season`` or windows
        ``LABEL:START/END`` (see :func:`geoseg.core.season.parse_periods`).
    bands : str or sequence, optional
        Sentinel-2 band ids or common names (default: Sentinel-2's ten 10/20 m bands, or
        Landsat's six); the output keeps the names given.
    area, area_where : str, optional
        A vector file (``area_where="district=Ludhiana"`` picks features), ``mgrs:43RFQ`` (a
        tile of the scenes), or ``MINLON,MINLAT,MAXLON,MAXLAT``. Default: the scenes' union.
        Pixels outside a polygon area are nodata.
    crs, resolution
        Output CRS (default: the UTM zone of the area's centre) and pixel size (default 10 m).
    statistic : str
        ``median`` (default; of an even count, the mean of the middle two), ``mean``, ``min``,
        ``max``, ``first``, ``last``.
    scl_classes, qa_flags, dilate
        SCL classes and ``QA_PIXEL`` flags that are not clear; masked pixels grown by ``dilate``
        output pixels.
    boa_offset : float, optional
        Offset (DN) of Sentinel-2 band files that do not state it (see :mod:`geoseg.io.bandfiles`).
    stac_api, collections
        Also search this STAC API (e.g. ``https://earth-search.aws.element84.com/v1``) for
        ``collections`` over the area (a file or a box) between ``start`` and ``end``.
    retries : int
        HTTP retries per remote read.
    block : int
        Output window per job (pixels).
    runner : Runner, optional
        Where windows run (default: threads, one per core).
    tags : mapping, optional
        More metadata tags for the composite (a workflow run records its season spec).

    Raises
    ------
    SeasonError
        Bad periods, bands, area or CRS; a scene without an asked band or cloud mask; a scene
        whose reflectance offset cannot be determined; an area no scene covers.
    SourceReadError
        A source that cannot be found, fetched or parsed.
    """
    t0 = time.perf_counter()
    refuse_stdout(out, "a COG", "its header and overviews are written after the pixels",
                  "--out season.tif, then `rio info season.tif`")
    target, clear_target = Path(out), clear_path_for(out)
    if target.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{target}: the composite is a Cloud-Optimised GeoTIFF; name it .tif")
    check_creation_options(creation_options, cog=True, path=target)
    inputs = {f"source {i}": s for i, s in enumerate(sources, start=1) if not str(s).startswith(("http", "s3:"))}
    check_outputs({"the composite": target, "the clear-look counts": clear_target}, inputs)
    for o in (target, clear_target):
        check_overwrite(o, overwrite)
    statistic = _check_statistic(statistic)
    if isinstance(block, bool) or not isinstance(block, int) or block < 16:
        raise SeasonError(f"block {block!r}: expected a window size in pixels, at least 16 (e.g. 512)")
    options = gdal_options(retries)
    found = list(scenes or []) + (discover(sources, boa_offset=boa_offset) if sources else [])
    d0, d1 = _as_day(start, "--start"), _as_day(end, "--end")
    if stac_api:
        if d0 is None or d1 is None or not area or str(area).lower().startswith(("mgrs:", "tile:")):
            raise SeasonError(f"{stac_api}: a STAC API search needs the area (a polygon file or a lon/lat box) and the "
                              f"season's --start and --end")
        area_ll, _ = _area_geometry(area, area_where, [], [])
        found += search_stac_api(stac_api, list(collections), area_ll.bounds, d0.isoformat(), d1.isoformat())
    if not found:
        raise SeasonError("no scenes: the sources hold no Sentinel-2 or Landsat scene; check the paths"
                          + (", the collection names and the dates" if stac_api else ""))
    if d0 is None:
        d0 = min(s.datetime.date() for s in found)
    if d1 is None:
        d1 = date.fromordinal(max(s.datetime.date() for s in found).toordinal() + 1)
    plist = parse_periods(periods, d0, d1)
    season_start, season_end = min(p.start for p in plist), max(p.end for p in plist)
    in_season = [s for s in found if season_start <= s.datetime.date() < season_end]
    if not in_season:
        days = sorted({s.day for s in found})
        raise SeasonError(f"no scene falls in the season {season_start}..{season_end} (end excluded); the scenes are "
                          f"from {days[0]} to {days[-1]} - check --start/--end or the periods")
    want = band_request(bands, sorted({s.sensor for s in in_season}))
    for s in in_season:
        if s.mask is None:
            raise SeasonError(f"{s.source} (scene {s.id}): no cloud mask ({'QA_PIXEL' if s.sensor == 'landsat' else 'SCL'}"
                              f" asset); geoseg masks clouds with it - use the complete product, or leave the scene out")
        for name, common in want.items():
            key = landsat_common(common) if s.sensor == "landsat" else common
            if key not in s.assets:
                have = ", ".join(sorted(s.assets)) or "none"
                raise SeasonError(f"{s.source} (scene {s.id}): has no {name} band ({common}); it has {have} - ask for "
                                  f"bands every scene has (--bands) or leave the scene out")
    headers = [(s.crs, s.bounds) if (s.crs and s.bounds) else None for s in in_season]
    missing = [s for s, h in zip(in_season, headers) if h is None]
    if missing:
        read = iter(source_crs_bounds(missing, options))
        headers = [h if h is not None else next(read) for h in headers]
    area_ll, area_how = _area_geometry(area, area_where, in_season, headers)  # type: ignore[arg-type]
    out_crs = _output_crs(crs, area_ll)
    crs_text = out_crs.to_string()
    scene_bounds = [transform_bounds(c, crs_text, *b, densify_pts=21) for c, b in headers]  # type: ignore[misc]
    by_tiles = area is None or not str(area).strip() or str(area).lower().startswith(("mgrs:", "tile:"))
    if by_tiles:  # the scenes' own bounds, not their lon/lat boxes: a tile's grid stays the tile's
        tile = str(area).split(":", 1)[1].strip().upper().lstrip("T") if area else ""
        area_out = shapely.union_all([shapely.box(*b) for s, b in zip(in_season, scene_bounds)
                                      if not tile or s.tile.upper().lstrip("T").endswith(tile)])
    else:
        to_out = Transformer.from_crs("EPSG:4326", out_crs, always_xy=True)
        area_out = shapely.transform(shapely.segmentize(area_ll, 0.01),
                                     lambda xy: np.column_stack(to_out.transform(xy[:, 0], xy[:, 1])))
    transform, shape = aligned_grid(area_out.bounds, float(resolution))
    area_box = shapely.box(*area_out.bounds)
    reaching = [(s, b) for s, b in zip(in_season, scene_bounds) if shapely.intersects(shapely.box(*b), area_out)]
    if not reaching:
        raise SeasonError(f"no scene covers the area ({area_how}); the {len(in_season)} scenes of the season lie "
                          f"elsewhere - check the area, or add scenes that cover it")
    polygon_area = not by_tiles and len(str(area).split(",")) != 4
    area_wkb = shapely.to_wkb(area_out) if polygon_area and not area_out.equals(area_box) else None
    # looks: scenes of one pass on one day, each in one period
    by_look: dict[tuple[str, ...], list[tuple[Scene, Any]]] = defaultdict(list)
    for s, b in reaching:
        by_look[look_key(s)].append((s, b))
    look_keys = sorted(by_look)
    period_of = assign_periods([date.fromisoformat(k[0]) for k in look_keys], plist)
    out_names = list(want)

    def scene_job(s: Scene, b: Any) -> _SceneJob:
        assets = tuple(s.assets[landsat_common(want[n]) if s.sensor == "landsat" else want[n]] for n in out_names)
        return _SceneJob(s.id, s.mask, s.mask_kind, assets, tuple(b))  # type: ignore[arg-type]

    per_period: list[list[tuple[_SceneJob, ...]]] = [[] for _ in plist]
    for k, p in zip(look_keys, period_of):
        if p >= 0:
            per_period[p].append(tuple(scene_job(s, b) for s, b in by_look[k]))
    h, w = shape
    jobs = []
    for r in range(0, h, block):
        for c in range(0, w, block):
            bh, bw = min(block, h - r), min(block, w - c)
            wt = transform @ Affine.translation(c, r)
            wbox = shapely.box(wt.c, wt.f + wt.e * bh, wt.c + wt.a * bw, wt.f)
            if area_wkb is not None and not shapely.intersects(wbox, area_out):
                looks: tuple[Any, ...] = tuple(() for _ in plist)
            else:
                looks = tuple(tuple(tuple(sj for sj in look if shapely.intersects(shapely.box(*sj.bounds), wbox))
                                    for look in pl) for pl in per_period)
                looks = tuple(tuple(look for look in pl if look) for pl in looks)
            jobs.append(_Job(r, c, bh, bw, wt, crs_text, looks, statistic, tuple(int(v) for v in scl_classes),
                             tuple(qa_flags), int(dilate), len(out_names), area_wkb, tuple(options.items())))
    names = [f"{p.label}_{n}" for p in plist for n in out_names]
    clear_names = [f"{p.label}_clear" for p in plist]
    tags = {
        "GEOSEG_PERIODS": json.dumps([{"label": p.label, "start": p.start.isoformat(), "end": p.end.isoformat(),
                                       "looks": len(per_period[i])} for i, p in enumerate(plist)]),
        "GEOSEG_BANDS": ",".join(out_names),
        "GEOSEG_SCALE": "10000",
        "GEOSEG_STATISTIC": statistic,
        "GEOSEG_AREA": area_how,
        "GEOSEG_SCENES": json.dumps(sorted({s.id for s, _ in reaching})),
        "GEOSEG_DATES": json.dumps(sorted({k[0] for k, p in zip(look_keys, period_of) if p >= 0})),
        **dict(tags or {}),
    }
    runner = runner or Runner()
    totals = np.zeros(len(plist), np.int64)
    written: dict[str, Any] = {}

    def both_or_neither(exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and written.get("clear") is not None and written["clear"].published:
            clear_target.unlink(missing_ok=True)
        return False

    with ExitStack() as stack:
        stack.push(both_or_neither)
        # the writers' block cache (and the COG's overviews) bounded too: GDAL's default is 5 % of RAM
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=options["GDAL_CACHEMAX"]))
        vals = stack.enter_context(RasterWriter(
            target, shape=shape, transform=transform, crs=crs_text, count=len(names), dtype="uint16", nodata=0,
            tags=tags, band_descriptions=names, overview_resampling="average", scale=1e-4,
            creation_options=creation_options))
        written["clear"] = clear_w = stack.enter_context(RasterWriter(
            clear_target, shape=shape, transform=transform, crs=crs_text, count=len(plist), dtype="uint8",
            nodata=None, tags={"GEOSEG_PERIODS": tags["GEOSEG_PERIODS"]}, band_descriptions=clear_names,
            overview_resampling="average", creation_options=creation_options))
        for i, (job, (v, n)) in enumerate(zip(jobs, runner.imap(_run_window, jobs)), start=1):
            win = Window(job.col, job.row, job.width, job.height)
            vals.write(v, win)
            clear_w.write(n, win)
            totals += n.reshape(len(plist), -1).astype(bool).sum(axis=1)
            if progress:
                progress(i, len(jobs))
    empty = [p.label for p, t in zip(plist, totals) if t == 0]
    if empty:
        warnings.warn(SeasonWarning(
            f"{target}: no clear look anywhere in the area in period(s) {', '.join(empty)}; their bands are nodata "
            f"(clouds all period long, or no scene) - consider longer periods"), stacklevel=2)
    return CompositeResult(
        path=target, clear_path=clear_target, bands=names, periods=plist, looks=[len(x) for x in per_period],
        scenes=len(reaching), empty_periods=empty, crs=crs_text, transform=transform, shape=shape,
        seconds=time.perf_counter() - t0, harmonisation={s.id: s.harmonisation for s, _ in reaching},
    )

