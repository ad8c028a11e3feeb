"""Exceptions and warnings raised by geoseg.

Every error derives from :class:`GeosegError` *and* from the matching builtin
(``ValueError``, ``OSError``, ...), so callers can catch either. Messages say
which file or value was wrong, what was found, what was expected and how to
fix it. This module imports nothing from the rest of geoseg.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "PolygonizeError",
    "ObjectStoreError",
    "AreaError",
    "VectorReadError",
    "VectorWriteError",
    "VectorFormatError",
    "DistrictError",
    "DistrictWarning",
    "LabelError",
    "QueryError",
    "RunLockedError",
    "RunDirError",
    "StoreInUseError",
    "CatalogError",
    "ReportError",
    "BenchError",
    "SeasonError",
    "SourceReadError",
    "SeasonWarning",
    "DateLayoutError",
    "EstimateError",
    "FeatureError",

    "GeosegError",
    "TileError",
    "RasterReadError",
    "WriteError",
    "RasterWriteError",
    "OutputIsInputError",
    "RasterTooLargeError",
    "GridMismatchError",
    "ClassFileError",
    "ConfigError",
    "CheckpointError",
    "EmptySceneError",
    "WorkerLostError",
    "GeosegWarning",
    "NoDataWarning",
    "portable_errors",
]


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


class TileError(GeosegError, ValueError):
    """A tile size or overlap that cannot make a valid tile grid."""


class RasterReadError(GeosegError, OSError):
    """A raster that cannot be opened or read as expected (corrupt, not georeferenced, ...)."""


class WriteError(GeosegError, OSError):
    """An output that cannot be written (directory missing, not writable, disk full)."""


class RasterWriteError(WriteError):
    """An output raster that cannot be written (directory missing, not writable, disk full)."""


class OutputIsInputError(GeosegError, ValueError):
    """An output path that names one of the inputs (or another output) of the same command."""


class RasterTooLargeError(GeosegError, ValueError):
    """A raster that declares more pixels than the limit in force (``max_pixels``)."""


class GridMismatchError(GeosegError, ValueError):
    """Two rasters that should share a grid (CRS, transform, size) do not."""


class ClassFileError(GeosegError, ValueError):
    """A class file (YAML) that does not follow the class-file convention."""


class ConfigError(GeosegError, ValueError):
    """A bad option or configuration value."""


class CheckpointError(GeosegError, ValueError):
    """A model checkpoint that is missing, damaged, tampered with or does not fit the input."""


class EmptySceneError(GeosegError, ValueError):
    """A scene in which not one pixel holds data, so every number computed from it would be empty."""


class WorkerLostError(GeosegError, RuntimeError):
    """A task whose workers died each time they ran it (out of memory, most often)."""


class GeosegWarning(UserWarning):
    """Base class of geoseg's warnings."""


class NoDataWarning(GeosegWarning):
    """A raster has no nodata value, so every pixel is taken as valid."""


class PolygonizeError(GeosegError, ValueError):
    """A bad argument or input for polygonising a mask (class names, block size, dtype...)."""


class AreaError(GeosegError, ValueError):
    """An input that cannot give a district area table (no overlap, wrong raster type...)."""


class VectorReadError(GeosegError, OSError):
    """A vector file that is missing or cannot be read."""


class VectorWriteError(GeosegError, OSError):
    """A vector file or table that cannot be written."""


class VectorFormatError(GeosegError, ValueError):
    """An output format (extension or name) geoseg cannot write."""


class DistrictError(GeosegError, ValueError):
    """A district boundary file that cannot be used (no CRS, no such name field, no polygons...)."""


class DistrictWarning(GeosegWarning):
    """Some districts were skipped or repaired (null or invalid geometry, repeated names)."""


class LabelError(GeosegError, ValueError):
    """Labels that cannot be used with the class file or the image (bad values, missing field...)."""


class QueryError(GeosegError, ValueError):
    """A run directory without outputs to query, a damaged output, bad SQL, SQL refused in safe
    mode, or an unknown district or crop."""


class RunLockedError(GeosegError, RuntimeError):
    """Another live process is running the same workflow."""


class StoreInUseError(GeosegError, RuntimeError):
    """A tile-store folder that belongs to another run."""


class CatalogError(GeosegError, OSError):
    """A run catalog (``catalog.sqlite``) that is damaged or cannot be used."""


class ObjectStoreError(GeosegError, OSError):
    """An object store (``s3://...``) that cannot be reached, read or written."""


class RunDirError(GeosegError, OSError):
    """The runs folder cannot be created or written."""


class ReportError(GeosegError, ValueError):
    """A run directory that lacks what a report needs (no manifest, no mask, unfinished run)."""


class BenchError(GeosegError, ValueError):
    """A file given as benchmark results that ``geoseg bench`` did not write."""


_F = TypeVar("_F", bound=Callable[..., Any])


def portable_errors(fn: _F) -> _F:
    """Let the geoseg errors that ``fn`` raises reach a Dask client as themselves.

    Dask sends a failed task's exception to the client with its whole chain (``__cause__``
    and ``__context__``, through tblib). GDAL's error classes, which sit in that chain when
    geoseg turns a GDAL failure into its own error, cannot be rebuilt there, and the client
    then gets a bare ``Exception`` holding the message, which the command line could only
    report as an internal error. A geoseg error's message already says what went wrong and
    how to fix it, so the chain is dropped before the error leaves ``fn``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GeosegError as e:
            e.__cause__ = e.__context__ = None
            raise

    return wrapper  # type: ignore[return-value]



class SeasonError(GeosegError, ValueError):
    """A season that cannot be composited: a bad period or area, items without the asked band or
    cloud mask, reflectance whose processing baseline or offset cannot be determined."""


class SourceReadError(GeosegError, OSError):
    """Imagery or metadata that cannot be read: a missing file, an unreachable URL, a malformed item."""


class SeasonWarning(GeosegWarning):
    """Something a season composite users should know: a period with no clear look anywhere, items
    left out because they do not reach the area."""


class DateLayoutError(GeosegError, ValueError):
    """A multi-date stack whose band names do not say which date each band belongs to, or whose dates
    are out of order or carry different bands."""


class EstimateError(GeosegError, ValueError):
    """A reference sample that cannot give area estimates: a design that does not match its run,
    reference classes outside the class table, points outside the design's strata, a stratum with
    fewer than two labelled points (its variance is undefined)."""


class FeatureError(GeosegError, ValueError):
    """A season stack or fields file the growth features cannot be computed from: band names without
    dates, an index whose bands the stack lacks, fields without a CRS or outside the stack."""
