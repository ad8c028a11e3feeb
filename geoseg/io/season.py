"""Reading a season's imagery: finding its scenes, and reading any band onto the output grid.

:func:`discover` turns the user's sources - STAC files or URLs, SAFE products, folders of band
files, Landsat scenes - into :class:`~geoseg.io.imagery.Scene` records through the reader of
each layout. :func:`read_onto` reads one band of one scene onto a window of the output grid:
a plain windowed read when the file is already on that grid (a Sentinel-2 10 m band in the
output's own UTM zone: the values are the file's, untouched), else through GDAL's warper
from any CRS and resolution - bilinear for reflectance,
nearest for class layers (SCL, QA bits), the source's nodata excluded from the kernel. The
warp is :func:`rasterio.warp.reproject` into each output window: of the ways measured
(``WarpedVRT``, odc-stac, stackstac, rioxarray) it and odc-stac placed pixels closest to exact
bilinear interpolation, and it needs no other library (``benchmarks/composite_libraries.py``).

Remote files (``https://``, ``s3://``) are read through GDAL with :func:`gdal_options`: no
directory listing on open, only image extensions fetched, HTTP retries for flaky object
storage (``retries``), merged range requests, and a block cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import reproject
from rasterio.windows import Window

from geoseg.errors import SourceReadError
from geoseg.io.bandfiles import is_landsat_folder, read_band_folder, read_landsat_folder
from geoseg.io.imagery import Asset, Scene
from geoseg.io.paths import is_remote
from geoseg.io.safe import is_safe, read_safe
from geoseg.io.stac_items import is_stac_json, read_stac

__all__ = ["discover", "gdal_options", "read_onto", "source_crs_bounds"]


def discover(sources: Sequence[str | os.PathLike[str]], *, boa_offset: float | None = None) -> list[Scene]:
    """Every scene the ``sources`` hold, in date order (then id).

    A source is a STAC item/ItemCollection/catalog JSON (a file or a URL), a SAFE product
    (``.SAFE`` folder, ``.zip``, ``MTD_MSIL2A.xml``), a folder of Landsat C2 L2 scenes, a folder
    of Sentinel-2 band files, or a folder holding any of these (SAFE products and ``*.json``
    STAC files directly inside it). ``boa_offset`` states the offset (DN) of Sentinel-2 band
    files that do not carry it themselves.
    """
    scenes: list[Scene] = []
    for src in sources:
        text = os.fspath(src)
        if is_stac_json(text):
            scenes += read_stac(text)
            continue
        if is_remote(text):
            raise SourceReadError(f"{text}: a remote source must be a STAC JSON document (item, ItemCollection or "
                                  f"catalog); for a STAC API give --stac-api URL --collection NAME")
        p = Path(text)
        if not p.exists():
            raise SourceReadError(f"{p}: not found; expected a STAC JSON file, a SAFE product or a folder of band files")
        if is_safe(p):
            scenes.append(read_safe(p))
        elif p.is_dir():
            scenes += _folder(p, boa_offset)
        else:
            raise SourceReadError(f"{p}: not a STAC JSON file, a SAFE product (.SAFE folder, .zip, MTD_MSIL2A.xml) or "
                                  f"a folder of band files; give one of those")
    return sorted(scenes, key=lambda s: (s.datetime, s.id))


def _folder(p: Path, boa_offset: float | None) -> list[Scene]:
    safes = sorted(q for q in p.iterdir() if q.name.upper().endswith((".SAFE", ".SAFE.ZIP")) or
                   (q.suffix.lower() == ".zip" and q.name.upper().startswith("S2")))
    jsons = sorted(q for q in p.iterdir() if q.is_file() and is_stac_json(q.name)
                   and not q.name.upper().endswith("_MTL.JSON"))
    if safes:
        return [read_safe(q) for q in safes]
    if is_landsat_folder(p):
        return read_landsat_folder(p)
    if jsons:
        out: list[Scene] = []
        seen: set[str] = set()
        for q in jsons:  # an ItemCollection beside its item files lists them again
            for s in read_stac(str(q)):
                if s.id not in seen:
                    seen.add(s.id)
                    out.append(s)
        return out
    return read_band_folder(p, boa_offset=boa_offset)


def gdal_options(retries: int = 3, cache_mb: int = 16) -> dict[str, Any]:
    """GDAL settings for reading many (remote) COGs window by window."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.JP2,.vrt,.xml",
        "GDAL_HTTP_MAX_RETRY": str(int(retries)),
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "VSI_CACHE": "TRUE",
        "GDAL_CACHEMAX": int(cache_mb) << 20,  # rasterio takes an integer as bytes
    }


def _read_error(asset: Asset, scene: str, e: Exception) -> SourceReadError:
    where = f"{asset.href} (scene {scene})"
    if is_remote(asset.href):
        return SourceReadError(f"{where}: cannot read ({e}); check the URL, credentials (AWS_* for s3) and the network "
                               f"connection - flaky object storage may need more retries (--retries)")
    return SourceReadError(f"{where}: cannot read ({e}); check that the file exists and is a complete image")


def _is_aligned(src: Any, crs: Any, transform: Affine) -> tuple[int, int] | None:
    """The integer pixel offset of ``transform``'s origin in ``src`` when both grids coincide."""
    if src.crs is None or src.crs != crs:
        return None
    t = src.transform
    if not (np.isclose(t.a, transform.a) and np.isclose(t.e, transform.e) and t.b == 0 and t.d == 0
            and transform.b == 0 and transform.d == 0):
        return None
    col = (transform.c - t.c) / t.a
    row = (transform.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def read_onto(asset: Asset, scene: str, *, crs: Any, transform: Affine, shape: tuple[int, int],
              resampling: str = "bilinear", options: Mapping[str, Any] | None = None) -> np.ndarray:
    """One band of ``asset`` on the grid (``crs``, ``transform``, ``shape``), as stored (DN),
    with ``asset.nodata`` where the file has no data. ``scene`` names the scene in errors."""
    h, w = shape
    fill = asset.nodata if asset.nodata is not None else 0
    tries = 1 + int((options or {}).get("GDAL_HTTP_MAX_RETRY", 0)) if is_remote(asset.href) else 1
    for attempt in range(tries):
        try:
            with rasterio.Env(**dict(options or {})), rasterio.open(asset.href) as src:
                nodata = asset.nodata if asset.nodata is not None else src.nodata
                at = _is_aligned(src, crs, transform)
                if at is not None:
                    win = Window(at[1], at[0], w, h)
                    return src.read(asset.band_index, window=win, boundless=True,
                                    fill_value=fill if nodata is None else nodata)
                # reproject into the block, not a WarpedVRT read: the VRT's approximate coordinate
                # transformer put pixels 0.9 DN (median) and up to ~500 DN (at cloud and swath
                # edges) away from exact bilinear; see benchmarks/README.md, composite_libraries.py
                out = np.full((h, w), fill if nodata is None else nodata, dtype=src.dtypes[asset.band_index - 1])
                reproject(source=rasterio.band(src, asset.band_index), destination=out, src_nodata=nodata,
                          dst_transform=transform, dst_crs=crs, dst_nodata=fill if nodata is None else nodata,
                          resampling=Resampling[resampling])
                return out
        except (RasterioIOError, RasterioError) as e:
            if attempt + 1 < tries:
                time.sleep(min(2.0 ** attempt, 8.0))
                continue
            raise _read_error(asset, scene, e) from None
    raise AssertionError("unreachable")  # pragma: no cover


def source_crs_bounds(scenes: Iterable[Scene], options: Mapping[str, Any] | None = None
                      ) -> list[tuple[str, tuple[float, float, float, float]]]:
    """``(CRS, bounds)`` of each scene from its first band file's header (metadata may lack them)."""
    out = []
    with rasterio.Env(**dict(options or {})):
        for s in scenes:
            asset = next(iter(s.assets.values()))
            try:
                with rasterio.open(asset.href) as src:
                    out.append((src.crs.to_string(), tuple(src.bounds)))
            except (RasterioIOError, RasterioError) as e:
                raise _read_error(asset, s.id, e) from None
    return out
