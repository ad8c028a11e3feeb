"""geoseg: turn large satellite GeoTIFFs into per-field crop maps and per-district crop areas.

Light imports only: the heavy modules (torch, dask) load when their functions are used.
"""

from __future__ import annotations

from .classes import NODATA, ClassTable, CropClass, default_classes, load_classes
from .errors import (
    CheckpointError,
    ClassFileError,
    ConfigError,
    GeosegError,
    GeosegWarning,
    GridMismatchError,
    NoDataWarning,
    RasterReadError,
    RasterWriteError,
    TileError,
)
from .grid import DEFAULT_OVERLAP, DEFAULT_TILE, Tile, TileGrid, tile_grid

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "NODATA",
    "ClassTable",
    "CropClass",
    "default_classes",
    "load_classes",
    "GeosegError",
    "GeosegWarning",
    "ClassFileError",
    "CheckpointError",
    "ConfigError",
    "GridMismatchError",
    "NoDataWarning",
    "RasterReadError",
    "RasterWriteError",
    "TileError",
    "Tile",
    "TileGrid",
    "tile_grid",
    "DEFAULT_TILE",
    "DEFAULT_OVERLAP",
]
