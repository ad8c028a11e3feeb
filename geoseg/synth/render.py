"""Writing the synthetic region: the rasters window by window, the vectors, and the truth table.

Pixels are made window by window (512 x 512), so memory is bounded by one window plus the
vector layout, whatever the region's size. In each window:

1. fields and background are burnt at 2 x 2 sub-pixels, so that boundary pixels are true
   mixtures, and turned into reflectance (:func:`geoseg.synth.spectra.reflectance`) with a
   smooth within-field texture (a function of position, so seamless across windows) and
   pixel noise seeded from ``(seed, window row, window column)``;
2. the class of each pixel's centre is burnt into the labels;
3. the collar (every band) and each date's clouds and their shadows (that date's bands) become
   nodata in the scene; the collar alone makes a label nodata (the crop is still there under a
   cloud), and each date's clouds and shadows are written to their own truth layer;
4. the labels are counted per district, each pixel in the district holding its
   centre (:func:`geoseg.core.tally.centre_counts`, as ``geoseg areas --method centre`` counts),
   and so are their ground areas (:func:`geoseg.core.geodesy.pixel_areas`, as ``geoseg
   areas`` measures them).

Every file is written under a temporary name and renamed into place, reproducibly: GDAL
writes no timestamps in GeoTIFFs, and the GeoPackage ``last_change`` timestamp is pinned.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.classes import NODATA, ClassTable
from geoseg.core.geodesy import PixelAreas, areas_m2, pixel_areas
from geoseg.core.grid import Window
from geoseg.core.tally import centre_counts
from geoseg.io.labels import iter_blocks
from geoseg.io.raster import RasterWriter, atomic_path, mask_writer, write_text_atomic
from geoseg.io.vector import reproducible_gpkg
from geoseg.synth.layout import CRS, Layout, Waves
from geoseg.synth.spectra import BANDS, MAT_MARGIN, N_MAT, REFLECTANCE_SCALE, reflectance

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OUTSIDE", "BLOCK", "CLEAR", "CLOUD", "SHADOW", "SHADOW_SHIFT", "At", "SmoothFields", "Tally", "burn",
           "window_codes", "scene_noise", "write_rasters", "write_fields", "write_gpkg", "write_truth"]

#: District name given in the truth table to pixels whose centre lies in no Punjab district.
OUTSIDE = "(outside Punjab)"

#: Window (and internal tile) size of the rasters, in pixels; the noise is seeded per window.
BLOCK = 512

#: Codes of ``clouds.tif``: each date's sky over each pixel (255 outside the scene: the collar).
CLEAR, CLOUD, SHADOW = 0, 1, 2
#: The cloud casting a pixel's shadow lies this far east and south of it (x, y metres; y up),
#: as for a sun in the south-east at mid-morning and clouds about a kilometre up.
SHADOW_SHIFT = (600.0, -800.0)
_GPKG_TIMESTAMP = "2024-06-15T00:00:00.000Z"


@dataclass(frozen=True, slots=True)
class SmoothFields:
    """Smooth random fields over the region, in metres from its top-left corner.

    ``texture`` scales each pixel's reflectance (within-field variation); on each date,
    ``clouds[t]`` plus a quarter of ``ragged[t]`` (a ragged edge) above ``thresholds[t]``
    is cloud, and a clear pixel whose point :data:`SHADOW_SHIFT` away is cloud lies in its
    shadow. The dates' cloud fractions (``fractions``) vary around ``cloud_fraction``, as a
    season's looks do: each is ``cloud_fraction`` times a weight drawn from 0.4..1.6 (the
    weights' mean scaled to 1), at most 0.95. The thresholds are the ``1 - fraction``
    quantiles of that sum, sampled on a grid of at most 256 x 256 points (none when there
    are no clouds).
    """

    texture: Waves
    clouds: tuple[Waves, ...]
    ragged: tuple[Waves, ...]
    thresholds: tuple[float, ...]
    fractions: tuple[float, ...] = ()

    @classmethod
    def make(cls, seed: int, dates: int, cloud_fraction: float, shape: tuple[int, int], pixel_size: float
             ) -> "SmoothFields":
        h, w = shape
        ps = pixel_size
        wrng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
        texture = Waves.make(wrng, 6, (120.0, 600.0))
        clouds = tuple(Waves.make(wrng, 12, (1200.0, 9000.0)) for _ in range(dates))
        ragged = tuple(Waves.make(wrng, 6, (150.0, 400.0)) for _ in range(dates))
        thresholds: tuple[float, ...] = ()
        fractions: tuple[float, ...] = ()
        if cloud_fraction > 0:
            # a stream of its own, so that the texture and cloud shapes stay those of earlier versions
            weights = np.random.default_rng(np.random.SeedSequence([seed, 11])).uniform(0.4, 1.6, dates)
            fractions = tuple(float(min(cloud_fraction * wt, 0.95)) for wt in weights / weights.mean())
            sy = (np.linspace(0, h, min(h, 256), endpoint=False) + 0.5 * h / min(h, 256)) * ps
            sx = (np.linspace(0, w, min(w, 256), endpoint=False) + 0.5 * w / min(w, 256)) * ps
            thresholds = tuple(float(np.quantile(_cloud_field(cl, rg, sx, -sy), 1 - f))
                               for cl, rg, f in zip(clouds, ragged, fractions))
        return cls(texture, clouds, ragged, thresholds, fractions)

    def cloud(self, t: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Date ``t``'s cloud field on the grid ``ys (rows) x xs (cols)``."""
        return _cloud_field(self.clouds[t], self.ragged[t], xs, ys)

    def sky(self, t: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Date ``t``'s sky over the grid ``ys (rows) x xs (cols)``: uint8 :data:`CLEAR`,
        :data:`CLOUD` or :data:`SHADOW` (a clear pixel under the shadow of a cloud)."""
        cloudy = self.cloud(t, xs, ys) > self.thresholds[t]
        dx, dy = SHADOW_SHIFT
        shaded = (self.cloud(t, xs + np.float32(dx), ys + np.float32(dy)) > self.thresholds[t]) & ~cloudy
        return np.where(cloudy, CLOUD, np.where(shaded, SHADOW, CLEAR)).astype(np.uint8)


def _cloud_field(clouds: Waves, ragged: Waves, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return clouds.grid(xs, ys) + np.float32(0.25) * ragged.grid(xs, ys)


@dataclass(frozen=True, slots=True)
class Tally:
    """What rendering counted: valid pixels per (district, class) and the nodata pixels."""

    counts: np.ndarray  # pixels per district and class: zone * classes + class, zone 0 = outside, q + 1 = district q
    area_m2: np.ndarray  # their ground area (m2), likewise
    collar: int  # pixels under the collar
    cloud: int  # pixels under a cloud or its shadow on some date, outside the collar
    unseen: int = 0  # pixels under a cloud or a shadow on every date, outside the collar


@dataclass(frozen=True, slots=True)
class At:
    """One window of the region: where it is, and the search box of its features (one pixel wider)."""

    i: int  # window row
    j: int  # window column
    window: Window
    shape: tuple[int, int]
    transform: Affine
    box: Any
    xs: np.ndarray  # pixel-centre x, metres from the region's left edge
    ys: np.ndarray  # pixel-centre y, metres from the region's top edge (negative down)

    @classmethod
    def make(cls, i: int, j: int, win: Window, transform: Affine) -> "At":
        ps = transform.a
        r0, c0, wh, ww = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
        wt = transform @ Affine.translation(c0, r0)
        wx0, wy1 = wt.c, wt.f
        box = shapely.box(wx0 - ps, wy1 - (wh + 1) * ps, wx0 + (ww + 1) * ps, wy1 + ps)
        xs = (np.arange(c0, c0 + ww) + 0.5) * ps
        ys = -(np.arange(r0, r0 + wh) + 0.5) * ps
        return cls(i, j, win, (wh, ww), wt, box, xs, ys)


def burn(
    shapes: Sequence[tuple[Any, int]], shape: tuple[int, int], transform: Affine, fill: int, dtype: str
) -> np.ndarray:
    """Rasterise ``(geometry, value)`` pairs (pixel-centre rule; later shapes win) - no file is opened."""
    if not shapes:
        return np.full(shape, fill, dtype)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=fill, dtype=dtype)


# --- one window ----------------------------------------------------------------------
def window_codes(at: At, layout: Layout, fi: np.ndarray, bi: np.ndarray, texture: Waves
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The window's 2 x 2 sub-pixel material codes (2h, 2w) of background features ``bi`` and
    fields ``fi``, and its texture gain (h, w): what every date's reflectance is made from."""
    wh, ww = at.shape
    # 2 x 2 sub-pixel codes -> mixed boundary pixels
    sub_shapes = [(g, int(c)) for g, c in zip(layout.bg[bi], layout.bg_code[bi])]
    sub_shapes += [(g, N_MAT + int(f)) for g, f in zip(layout.fields[fi], fi)]
    codes = burn(sub_shapes, (2 * wh, 2 * ww), at.transform @ Affine.scale(0.5), MAT_MARGIN, "int32")
    # within-field texture (seamless: a function of position)
    gain = 1 + np.float32(0.04) * texture.grid(at.xs, at.ys)
    return codes, gain


def scene_noise(seed: int, i: int, j: int) -> np.random.Generator:
    """The pixel noise of scene.tif's window ``(i, j)``: one (4, h, w) standard normal draw per date, in order."""
    return np.random.default_rng(np.random.SeedSequence([seed, 7, i, j]))


def _pixels(at: At, layout: Layout, fi: np.ndarray, bi: np.ndarray, spectra: np.ndarray, texture: Waves,
            seed: int) -> np.ndarray:
    """uint16 reflectance (bands, h, w) of the window with background features ``bi`` and fields ``fi``."""
    codes, gain = window_codes(at, layout, fi, bi, texture)
    return reflectance(spectra, codes, gain, scene_noise(seed, at.i, at.j))


def _labels(at: At, layout: Layout, fi: np.ndarray, background: int) -> np.ndarray:
    """The class of each pixel's centre (uint8): fields ``fi`` on ``background``."""
    shapes = [(g, int(c)) for g, c in zip(layout.fields[fi], layout.field_class[fi])]
    return burn(shapes, at.shape, at.transform, background, "uint8")


def _blank_collar(at: At, collar: Any, dn: np.ndarray) -> np.ndarray:
    """Zero every band under the collar (None: none) in ``dn``; return where it lies."""
    if collar is None or not shapely.intersects(collar, at.box):
        return np.zeros(at.shape, bool)
    invalid = burn([(collar, 1)], at.shape, at.transform, 0, "uint8").astype(bool)
    dn[:, invalid] = 0
    return invalid


def _blank_clouds(at: At, smooth: SmoothFields, dn: np.ndarray, dates: int) -> np.ndarray:
    """Zero each date's bands under its clouds and their shadows in ``dn``; return each date's
    sky (dates, h, w) uint8 (:meth:`SmoothFields.sky`; all clear without clouds)."""
    skies = np.zeros((dates, *at.shape), np.uint8)
    for t in range(len(smooth.thresholds)):
        skies[t] = smooth.sky(t, at.xs, at.ys)
        dn[len(BANDS) * t: len(BANDS) * (t + 1), skies[t] != CLEAR] = 0
    return skies


def _district_counts(at: At, districts: np.ndarray, tree: shapely.STRtree, labels: np.ndarray,
                     valid: np.ndarray, n_classes: int, areas: PixelAreas) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels per (district holding the centre, class), and their ground area (m2): zone 0
    for none, ``q + 1`` for district ``q``."""
    di = np.sort(tree.query(at.box))
    zone = burn([(districts[q], int(q) + 1) for q in di], at.shape, at.transform, 0, "uint8")
    n = len(districts) + 1
    px = areas.block(int(at.window.row_off), int(at.window.col_off), *at.shape)
    return (centre_counts(zone, labels, n_classes, n, valid=valid),
            centre_counts(zone, labels, n_classes, n, valid=valid, weights=px))


# --- the region ----------------------------------------------------------------------
def write_rasters(
    scene: Path,
    labels: Path,
    clouds: Path,
    *,
    transform: Affine,
    shape: tuple[int, int],
    seed: int,
    dates: tuple[str, ...],
    table: ClassTable,
    background: int,
    layout: Layout,
    spectra: np.ndarray,
    smooth: SmoothFields,
    districts: np.ndarray,
    provenance: str,
    progress: Callable[[int, int], None] | None = None,
) -> Tally:
    """Write ``scene.tif``, ``labels.tif`` and ``clouds.tif`` window by window; count the truth
    on the way.

    ``districts`` are the district polygons (EPSG:32643) in the order of the truth table;
    ``provenance`` is the ``GEOSEG_SYNTH`` tag (the arguments, as JSON) of both rasters;
    ``progress(done, total)`` is called after each window.
    """
    h, w = shape
    k = len(table)
    field_tree, bg_tree = shapely.STRtree(layout.fields), shapely.STRtree(layout.bg)
    d_tree = shapely.STRtree(districts)
    counts = np.zeros((len(districts) + 1) * k, np.int64)
    area_m2 = np.zeros((len(districts) + 1) * k)
    areas = pixel_areas(transform, CRS, (h, w))
    n_collar = n_cloud = n_unseen = 0
    tags = {
        "GEOSEG_DATES": json.dumps(list(dates)),
        "GEOSEG_BANDS": ",".join(BANDS),
        "GEOSEG_SCALE": str(REFLECTANCE_SCALE),
        "GEOSEG_SYNTH": provenance,
    }
    descriptions = [f"{d} {b}" for d in dates for b in BANDS]
    with RasterWriter(
        scene, shape=(h, w), transform=transform, crs=CRS, count=len(descriptions), dtype="uint16", nodata=0,
        tags=tags, band_descriptions=descriptions, cog=False, overview_resampling="average",
    ) as scene_w, mask_writer(
        labels, shape=(h, w), transform=transform, crs=CRS, classes=table, tags={"GEOSEG_SYNTH": provenance},
    ) as label_w, RasterWriter(
        clouds, shape=(h, w), transform=transform, crs=CRS, count=len(dates), dtype="uint8", nodata=NODATA,
        tags={"GEOSEG_SYNTH": provenance, "GEOSEG_SKY_CODES": f"{CLEAR} clear, {CLOUD} cloud, {SHADOW} shadow"},
        band_descriptions=list(dates), overview_resampling="mode",
    ) as cloud_w:
        total = -(-h // BLOCK) * -(-w // BLOCK)
        for done, (i, j, win) in enumerate(iter_blocks((h, w), BLOCK), start=1):
            at = At.make(i, j, win, transform)
            fi, bi = np.sort(field_tree.query(at.box)), np.sort(bg_tree.query(at.box))
            dn = _pixels(at, layout, fi, bi, spectra, smooth.texture, seed)
            lab = _labels(at, layout, fi, background)
            invalid = _blank_collar(at, layout.collar, dn)
            n_collar += int(invalid.sum())
            skies = _blank_clouds(at, smooth, dn, len(dates))
            n_cloud += int(((skies != CLEAR).any(0) & ~invalid).sum())
            n_unseen += int(((skies != CLEAR).all(0) & ~invalid).sum())
            skies[:, invalid] = NODATA
            lab[invalid] = NODATA
            n_px, m2 = _district_counts(at, districts, d_tree, lab, ~invalid, k, areas)
            counts += n_px
            area_m2 += m2
            scene_w.write(dn, win)
            label_w.write(lab, win)
            cloud_w.write(skies, win)
            if progress:
                progress(done, total)
    return Tally(counts, area_m2, n_collar, n_cloud, n_unseen)


def write_gpkg(gdf: Any, path: Path, layer: str) -> None:
    """Write a GeoPackage atomically and reproducibly.

    GDAL stamps ``gpkg_contents.last_change`` with the current time and builds the
    spatial index in a background thread (so the SQLite header's change counter varies
    from run to run); pinning the timestamp and copying the database with
    ``VACUUM INTO`` gives the same bytes for the same content.
    """
    import pyogrio  # the vector libraries are slow to import; deferred so that `geoseg --help` stays quick

    raw = atomic_path(path)
    try:
        pyogrio.write_dataframe(gdf, raw, layer=layer, driver="GPKG")
        final = reproducible_gpkg(raw, path, _GPKG_TIMESTAMP)
    finally:
        raw.unlink(missing_ok=True)
    os.replace(final, path)


def write_fields(layout: Layout, table: ClassTable, path: Path) -> None:
    """``fields.gpkg``: layer ``fields`` with ``field_id``, ``class_id``, ``crop``, ``area_ha`` (ground area)."""
    import geopandas as gpd  # slow to import; deferred so that `geoseg --help` stays quick

    area = areas_m2(layout.fields, CRS)
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
    write_gpkg(fields_gdf, path, "fields")


def write_truth(counts: np.ndarray, area_m2: np.ndarray, districts: Sequence[str], table: ClassTable,
                path: Path) -> "pd.DataFrame":
    """``truth.csv`` from :attr:`Tally.counts` and :attr:`Tally.area_m2`: one row per district and
    class with a pixel; return it as a table.

    Hectares are the pixels' ground area on the ellipsoid (written to the last bit); rows are
    sorted by district (:data:`OUTSIDE` last) and class id.
    """
    import pandas as pd  # slow to import; deferred so that `geoseg --help` stays quick

    k = len(table)
    names = [OUTSIDE, *districts]
    rows = []
    for flat in np.flatnonzero(counts):
        dq, cid = divmod(int(flat), k)
        n_px = int(counts[flat])
        rows.append((names[dq], cid, table[cid].name, n_px, float(area_m2[flat]) / 10_000))
    rows.sort(key=lambda r: (r[0] == OUTSIDE, r[0], r[1]))
    buf = _io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["district", "class_id", "crop", "pixels", "hectares"])
    wr.writerows([(d, c, n, p, repr(ha)) for d, c, n, p, ha in rows])
    write_text_atomic(path, buf.getvalue())
    return pd.DataFrame(
        {
            "district": [r[0] for r in rows],
            "class_id": np.array([r[1] for r in rows], dtype=np.int64),
            "crop": [r[2] for r in rows],
            "pixels": np.array([r[3] for r in rows], dtype=np.int64),
            "hectares": np.array([r[4] for r in rows], dtype=np.float64),
        }
    )
