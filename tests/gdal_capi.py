"""Read a raster's category names and raster attribute table through GDAL's own C API.

An independent reference for geoseg's ``.aux.xml`` writer: the libgdal that rasterio's wheel
bundles (``rasterio.libs/libgdal-*.so``) is called through ctypes, so what these functions
return is what GDAL, and every tool built on it (gdalinfo, QGIS), reads from the file. The
osgeo Python bindings are not needed.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path

import rasterio

__all__ = ["GdalRat", "gdal_categories", "gdal_rat", "libgdal"]


@functools.cache
def libgdal() -> ctypes.CDLL:
    """rasterio's bundled libgdal, with the signatures of the functions used here declared."""
    base = Path(rasterio.__file__).parent
    found = sorted(glob.glob(str(base.parent / "rasterio.libs" / "libgdal-*.so*")))
    if not found:  # a rasterio built against a system GDAL: the library rasterio's extension loaded
        found = sorted(glob.glob(str(base / "*.libs" / "libgdal*.so*")))
    lib = ctypes.CDLL(found[0])
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs = {
        "GDALAllRegister": (None, []),
        "GDALOpen": (vp, [cp, i]),
        "GDALClose": (None, [vp]),
        "GDALGetMetadata": (ctypes.POINTER(cp), [vp, cp]),
        "GDALGetRasterBand": (vp, [vp, i]),
        "GDALGetRasterCategoryNames": (ctypes.POINTER(cp), [vp]),
        "GDALGetDefaultRAT": (vp, [vp]),
        "GDALRATGetRowCount": (i, [vp]),
        "GDALRATGetColumnCount": (i, [vp]),
        "GDALRATGetNameOfCol": (cp, [vp, i]),
        "GDALRATGetUsageOfCol": (i, [vp, i]),
        "GDALRATGetTypeOfCol": (i, [vp, i]),
        "GDALRATGetValueAsString": (cp, [vp, i, i]),
        "GDALRATGetRowOfValue": (i, [vp, ctypes.c_double]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    lib.GDALAllRegister()
    return lib


class _Band:
    """Band 1 of ``path`` opened read-only by GDAL, closed on exit."""

    def __init__(self, path: str | os.PathLike[str], band: int = 1) -> None:
        self.path, self.band = str(path), band

    def __enter__(self) -> ctypes.c_void_p:
        lib = libgdal()
        self.ds = lib.GDALOpen(self.path.encode(), 0)
        if not self.ds:
            raise OSError(f"GDAL cannot open {self.path}")
        # The GTiff driver reads the .aux.xml lazily, on the first metadata request: ask for the
        # metadata first, as gdalinfo and QGIS do (GDALGetRasterCategoryNames alone does not load it).
        lib.GDALGetMetadata(self.ds, None)
        return lib.GDALGetRasterBand(self.ds, self.band)  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        libgdal().GDALClose(self.ds)


def gdal_categories(path: str | os.PathLike[str], band: int = 1) -> list[str]:
    """GDAL's category names of ``band`` (``GDALGetRasterCategoryNames``; name *i* is value *i*)."""
    with _Band(path, band) as b:
        names = libgdal().GDALGetRasterCategoryNames(b)
        out = []
        while names and names[len(out)] is not None:
            out.append(names[len(out)].decode("utf-8"))
        return out


@dataclass(frozen=True)
class GdalRat:
    """A raster attribute table as GDAL reads it: column names, types, usages, rows as strings."""

    columns: list[str]
    types: list[int]
    usages: list[int]
    rows: list[list[str]]
    row_of_value: dict[int, int]  # GDALRATGetRowOfValue for the values 0..255 (-1: no row)


def gdal_rat(path: str | os.PathLike[str], band: int = 1) -> GdalRat | None:
    """GDAL's default RAT of ``band`` (``GDALGetDefaultRAT``), or None when it has none."""
    lib = libgdal()
    with _Band(path, band) as b:
        rat = lib.GDALGetDefaultRAT(b)
        if not rat:
            return None
        ncol, nrow = lib.GDALRATGetColumnCount(rat), lib.GDALRATGetRowCount(rat)
        return GdalRat(
            columns=[lib.GDALRATGetNameOfCol(rat, j).decode() for j in range(ncol)],
            types=[lib.GDALRATGetTypeOfCol(rat, j) for j in range(ncol)],
            usages=[lib.GDALRATGetUsageOfCol(rat, j) for j in range(ncol)],
            rows=[[lib.GDALRATGetValueAsString(rat, r, j).decode("utf-8") for j in range(ncol)] for r in range(nrow)],
            row_of_value={v: lib.GDALRATGetRowOfValue(rat, float(v)) for v in range(256)},
        )
