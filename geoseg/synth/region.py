"""The synthetic region's entry point: :func:`synthesize` checks its arguments, lays out the
region (:mod:`geoseg.synth.layout`), gives every surface its spectra through the season
(:mod:`geoseg.synth.spectra`) and writes the rasters, vectors and truth
(:mod:`geoseg.synth.render`); :class:`SynthRegion` is what it returns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine

from geoseg.classes import ClassTable, default_classes, load_classes
from geoseg.errors import ConfigError, RasterWriteError
from geoseg.io.raster import write_text_atomic
from geoseg.synth.layout import CRS, DEFAULT_CENTRE, make_layout, punjab_districts
from geoseg.synth.products import AcquisitionSpec, ProductOptions, SynthProducts, write_products
from geoseg.synth.render import SmoothFields, write_fields, write_gpkg, write_rasters, write_truth
from geoseg.synth.spectra import BANDS, REFLECTANCE_SCALE, SEASON_START, season, spectral_table
from geoseg.types import Shape2d

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SynthRegion", "synthesize", "MAX_DATES"]

#: Most acquisition dates a region can have.
MAX_DATES = 24

_MAX_EXTENT = 200_000.0  # metres; larger regions would hold millions of fields


@dataclass(frozen=True, slots=True, eq=False)
class SynthRegion:
    """What :func:`synthesize` wrote, and the truth it counted.

    Attributes
    ----------
    out_dir : Path
        The output directory.
    scene, labels, clouds, fields, districts, classes, truth_csv : Path
        ``scene.tif``, ``labels.tif``, ``clouds.tif``, ``fields.gpkg``, ``districts.gpkg``,
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
    collar_fraction, cloud_fraction, unseen_fraction : float
        Fractions of the region's pixels under the collar (nodata in every file), under a
        cloud or its shadow on at least one date, and on every date (both outside the collar).
    date_cloud_fractions : tuple of float
        Each date's cloud fraction as drawn (before shadows; 0 without clouds).
    truth : pandas.DataFrame
        ``truth.csv`` as a table: ``district``, ``class_id``, ``crop``, ``pixels``,
        ``hectares``, one row per district and class with at least one labelled pixel.
    products : SynthProducts or None
        The satellite products written under ``products/`` (None when none were asked for).
    """

    out_dir: Path
    scene: Path
    labels: Path
    clouds: Path
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
    unseen_fraction: float = 0.0
    date_cloud_fractions: tuple[float, ...] = ()
    products: SynthProducts | None = field(default=None, repr=False)

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
            f"({len(self.dates)} dates x {','.join(BANDS)}), uint16 reflectance x {REFLECTANCE_SCALE}, "
            f"nodata 0, {self.crs}",
            f"  dates           {', '.join(self.dates)}",
            f"  labels.tif      nodata 255 on {100 * self.collar_fraction:.1f} % (collar); the crop under clouds kept",
            f"  clouds.tif      {100 * self.cloud_fraction:.1f} % under a cloud or shadow on some date, "
            f"{100 * self.unseen_fraction:.1f} % on every date; per date "
            + ", ".join(f"{100 * f:.0f} %" for f in self.date_cloud_fractions),
            f"  fields.gpkg     {self.n_fields:,} fields",
            f"  districts.gpkg  {', '.join(self.district_names)}",
            f"  truth.csv       {total:,.1f} ha of labelled pixels: "
            + ", ".join(f"{k} {v:,.1f}" for k, v in sorted(ha.items(), key=lambda kv: -kv[1])),
        ]
        if self.products is not None:
            pr = self.products
            s2 = [a for a in pr.acquisitions if a.sensor == "sentinel-2"]
            ls = [a for a in pr.acquisitions if a.sensor == "landsat"]
            for name, group in (("Sentinel-2", s2), ("Landsat", ls)):
                if group:
                    clear = sum(a.cloud_cover < 1 for a in group)
                    lines.append(f"  products/       {len(group)} {name} acquisitions {group[0].date} .. "
                                 f"{group[-1].date} ({clear} clear), tile {pr.mgrs_tile}")
            lines.append(f"  layouts         {', '.join(f'products/{lay}/' for lay in pr.layouts)}")
        return "\n".join(lines)


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


@dataclass(frozen=True, slots=True)
class _Spec:
    """The arguments of :func:`synthesize`, checked and normalised."""

    height: int
    width: int
    seed: int
    dates: int
    cloud_fraction: float
    collar: bool
    table: ClassTable
    background: int  # the class id of roads, canals, villages and margins
    crops: list[int]  # the class ids fields are drawn from
    pixel_size: float
    transform: Affine
    season_start: date = SEASON_START

    @property
    def shape(self) -> Shape2d:
        return Shape2d(self.height, self.width)

    def provenance(self) -> str:
        """The ``GEOSEG_SYNTH`` tag of both rasters: the arguments, as JSON."""
        args: dict[str, Any] = {"seed": self.seed, "height": self.height, "width": self.width,
                                "cloud_fraction": self.cloud_fraction, "collar": self.collar,
                                "pixel_size": self.pixel_size}
        if self.season_start != SEASON_START:  # the default season writes the tag it always wrote
            args["season_start"] = self.season_start.isoformat()
        return json.dumps(args)


def _pixel_size(pixel_size: Any) -> float:
    ps_hint = "use a pixel size in metres such as 10.0"
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, (int, float, np.floating)):
        raise ConfigError(f"pixel_size must be a number, got {pixel_size!r}; {ps_hint}")
    ps = float(pixel_size)
    if not (math.isfinite(ps) and 0 < ps <= 100):
        raise ConfigError(f"pixel_size must be in (0, 100] metres, got {pixel_size!r}; {ps_hint}")
    return ps


def _cloud_fraction(cloud_fraction: Any) -> float:
    if isinstance(cloud_fraction, bool) or not isinstance(cloud_fraction, (int, float, np.floating)):
        raise ConfigError(f"cloud_fraction must be a number, got {cloud_fraction!r}; pass e.g. 0.05 for 5 % cloud")
    cf = float(cloud_fraction)
    if not (0.0 <= cf <= 0.9):
        raise ConfigError(
            f"cloud_fraction must be in [0, 0.9] (fraction of each date under cloud), got {cloud_fraction!r}; "
            f"pass e.g. 0.05 for 5 % cloud, or 0 for none"
        )
    return cf


def _origin(origin: Any, h: int, w: int, ps: float) -> tuple[float, float]:
    """The top-left corner: ``origin``, or the one that centres the region on :data:`DEFAULT_CENTRE`."""
    if origin is None:
        ox = round((DEFAULT_CENTRE[0] - w * ps / 2) / ps) * ps
        oy = round((DEFAULT_CENTRE[1] + h * ps / 2) / ps) * ps
        return ox, oy
    try:
        ox, oy = (float(v) for v in origin)
    except (TypeError, ValueError):
        raise ConfigError(
            f"origin must be a pair (x, y) of EPSG:32643 metres, got {origin!r}; "
            f"e.g. ({DEFAULT_CENTRE[0] - 10240:.0f}, {DEFAULT_CENTRE[1] + 10240:.0f}) or None"
        ) from None
    if not (math.isfinite(ox) and math.isfinite(oy)):
        raise ConfigError(f"origin must be finite, got {origin!r}; pass (x, y) in EPSG:32643 metres or None")
    return ox, oy


def _season_start(season_year: Any) -> date:
    year = _int_arg("season_year", season_year, 2016, 2099,
                    "pass the year the season starts in (15 June), e.g. 2024 or 2021 to span the January 2022 "
                    "Sentinel-2 offset change")
    return SEASON_START.replace(year=year)


def _check_arguments(height: Any, width: Any, seed: Any, dates: Any, cloud_fraction: Any, collar: Any,
                     classes: Any, origin: Any, pixel_size: Any, season_year: Any = SEASON_START.year) -> _Spec:
    """:func:`synthesize`'s arguments checked once, at the edge (in this order, so the first bad one is named)."""
    ps = _pixel_size(pixel_size)
    max_px = int(_MAX_EXTENT // ps)
    size_hint = (f"pass a size in pixels between 1 and {max_px} ({_MAX_EXTENT / 1000:g} km at {ps:g} m; "
                 f"a Sentinel-2 scene is 10980)")
    h = _int_arg("height", height, 1, max_px, size_hint)
    w = _int_arg("width", width, 1, max_px, size_hint)
    seed_ = _int_arg("seed", seed, 0, None, "pass a non-negative int such as 0")
    nd = _int_arg("dates", dates, 1, MAX_DATES, f"pass the number of acquisition dates, 1 to {MAX_DATES} (default 4)")
    cf = _cloud_fraction(cloud_fraction)
    if not isinstance(collar, (bool, np.bool_)):
        raise ConfigError(f"collar must be True or False, got {collar!r}")
    table, bg_id, crop_ids = _resolve_classes(classes)
    ox, oy = _origin(origin, h, w, ps)
    start = _season_start(season_year)
    return _Spec(h, w, seed_, nd, cf, bool(collar), table, bg_id, crop_ids, ps, Affine(ps, 0.0, ox, 0.0, -ps, oy),
                 start)


def _districts_over(spec: _Spec, origin: Any) -> Any:
    """The Punjab districts the region overlaps; :class:`ConfigError` if none."""
    h, w, ps, t = spec.height, spec.width, spec.pixel_size, spec.transform
    ox, oy = t.c, t.f
    districts = punjab_districts(shapely.box(ox, oy - h * ps, ox + w * ps, oy))
    if len(districts) == 0:
        raise ConfigError(
            f"origin {origin!r} puts the {w} x {h} px region ({ox:.0f}, {oy - h * ps:.0f}, {ox + w * ps:.0f}, "
            f"{oy:.0f}) outside Punjab; expected a top-left corner in EPSG:32643 over Punjab, e.g. "
            f"({DEFAULT_CENTRE[0] - 10240:.0f}, {DEFAULT_CENTRE[1] + 10240:.0f}), or None for the default"
        )
    return districts


def _output_dir(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RasterWriteError(
            f"{out}: cannot create the output directory ({e.strerror}); choose a writable location"
        ) from None
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
    season_year: int = SEASON_START.year,
    products: str | Sequence[str] | None = None,
    acquisitions: int | Sequence[AcquisitionSpec | dict[str, Any] | str] = 25,
    spacing: int = 10,
    cloudiness: float = 1.0,
    overcast: str | tuple[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SynthRegion:
    """Write a synthetic multi-date crop region over real Punjab districts into ``out_dir``.

    Writes, each atomically (temporary name, then rename):

    ``scene.tif``
        ``dates x 4`` bands, date-major (date 1 B, G, R, NIR, date 2 B, ...), uint16
        surface reflectance x 10000, nodata 0 (collar: all bands; a cloud or its shadow: that
        date's 4 bands, as after a cloud mask), tiled (512 px) DEFLATE GeoTIFF, EPSG:32643, band descriptions such as
        ``"2024-06-15 NIR"``; tags ``GEOSEG_DATES``, ``GEOSEG_BANDS``, ``GEOSEG_SCALE``.
    ``labels.tif``
        The true class of each pixel's centre, uint8, 255 under the collar only: the crop
        under a cloud is still there, so a map is scored on every pixel it claims; a COG
        with the class colours, on exactly the grid of ``scene.tif``.
    ``clouds.tif``
        Each date's sky, one uint8 band per date (descriptions: the dates): 0 clear, 1 cloud,
        2 the shadow of a cloud (600 m west and 800 m north of it), 255 under the collar; a
        COG on the grid of ``scene.tif``. All 0 without clouds.
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
        ``district, class_id, crop, pixels, hectares``: labelled pixels of ``labels.tif``
        per district and class, each pixel counted in the district containing its
        centre (:data:`OUTSIDE` for none; where the simplified boundaries overlap, the
        district later by name); hectares = the pixels' ground area on the ellipsoid,
        as ``geoseg areas`` measures it (:func:`geoseg.core.geodesy.pixel_areas`).

    Pixels are made window by window (512 x 512), so memory is bounded by one window plus
    the vector layout, and time grows with the area (one core).

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
        Mean fraction of the region hidden by clouds on a date, 0..0.9: each date's own
        fraction is this times a weight drawn from 0.4..1.6 (at most 0.95), set by
        thresholding a smooth random field at its sampled quantile; each cloud's shadow
        hides some more.
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
    season_year : int
        The year the season starts in (15 June; default 2024). The pixels depend on the day of
        the season only, so another year changes the dates and nothing else; 2021 gives a season
        that spans Sentinel-2's change to processing baseline 04.00 (25 January 2022).
    products : str or sequence of str, optional
        Also write the region as satellite products in these layouts, under ``products/``:
        ``"stac"`` (Earth Search ``sentinel-2-c1-l2a``: per-band COGs and STAC items),
        ``"safe"`` (ESA SAFE L2A folders with lossless JPEG 2000), ``"cdse"`` (Copernicus Data
        Space STAC 1.1 items over the SAFE files; implies ``"safe"``) and ``"landsat"``
        (Landsat 8/9 Collection 2 Level-2); e.g. ``"stac,safe"``. See
        :mod:`geoseg.synth.products` for the files and how the pixels are made.
    acquisitions : int or sequence
        Sentinel-2 acquisitions, every ``spacing`` days from the season start alternating
        sentinel-2a/2b (default 25, so 15 June to 10 February at 10 days); Landsat ones every 8
        days over the same span. Or an explicit list of :class:`AcquisitionSpec` (date, and
        optionally platform, baseline, cloud fraction).
    spacing : int
        Days between Sentinel-2 acquisitions (1..60).
    cloudiness : float
        Scales each acquisition's cloud fraction (drawn from the season: July-September mostly
        cloudy, a few clear looks; the rest of the season mostly clear), 0..3; 0 for clear skies.
    overcast : str or (str, str), optional
        A period ``"START/END"`` (ISO dates) in which a fixed 30 % of the region is under thick
        cloud on every acquisition: no clear look there in that period.
    progress : callable, optional
        ``progress(done, total)`` after each 512 x 512 window of pixels (then again for the
        products' windows and acquisitions).

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
    spec = _check_arguments(height, width, seed, dates, cloud_fraction, collar, classes, origin, pixel_size,
                            season_year)
    product_opts = ProductOptions.make(products, acquisitions, spacing, cloudiness, overcast)
    if product_opts is not None and spec.pixel_size != 10.0:
        raise ConfigError(f"products need 10 m pixels (Sentinel-2's grid), got pixel_size {spec.pixel_size:g}; "
                          f"leave pixel_size at 10 or drop products")
    districts = _districts_over(spec, origin)
    out = _output_dir(out_dir)

    # -- vectors for the whole region, spectra through the season --
    date_list, days = season(spec.dates, spec.season_start)
    date_str = tuple(d.isoformat() for d in date_list)
    layout = make_layout(spec.seed, spec.height, spec.width, spec.transform, spec.table, spec.crops, spec.collar)
    spectra = spectral_table(spec.seed, layout.field_class, spec.table, days)
    smooth = SmoothFields.make(spec.seed, spec.dates, spec.cloud_fraction, spec.shape, spec.pixel_size)

    # -- pixels, window by window, and the truth counted on the way --
    scene_path, labels_path, clouds_path = out / "scene.tif", out / "labels.tif", out / "clouds.tif"
    tally = write_rasters(
        scene_path, labels_path, clouds_path, transform=spec.transform, shape=spec.shape, seed=spec.seed,
        dates=date_str, table=spec.table, background=spec.background, layout=layout, spectra=spectra, smooth=smooth,
        districts=districts.geometry.values, provenance=spec.provenance(), progress=progress,
    )

    # -- vectors and tables --
    write_fields(layout, spec.table, out / "fields.gpkg")
    write_gpkg(districts, out / "districts.gpkg", "districts")
    write_text_atomic(out / "classes.yaml", spec.table.to_yaml())
    names = tuple(districts["district"].tolist())
    truth = write_truth(tally.counts, tally.area_m2, names, spec.table, out / "truth.csv")

    # -- the same region as satellite products --
    prods = None
    if product_opts is not None:
        prods = write_products(
            out / "products", product_opts, seed=spec.seed, transform=spec.transform, shape=spec.shape,
            layout=layout, table=spec.table, field_class=layout.field_class, texture=smooth.texture,
            scene_days=days, season_start=spec.season_start, progress=progress,
        )
    total = spec.height * spec.width
    return SynthRegion(
        out_dir=out,
        scene=scene_path,
        labels=labels_path,
        clouds=clouds_path,
        fields=out / "fields.gpkg",
        districts=out / "districts.gpkg",
        classes=out / "classes.yaml",
        truth_csv=out / "truth.csv",
        shape=spec.shape,
        transform=spec.transform,
        crs=CRS,
        dates=date_str,
        seed=spec.seed,
        n_fields=len(layout.fields),
        district_names=names,
        collar_fraction=tally.collar / total,
        cloud_fraction=tally.cloud / total,
        unseen_fraction=tally.unseen / total,
        date_cloud_fractions=smooth.fractions or (0.0,) * spec.dates,
        truth=truth,
        products=prods,
    )
