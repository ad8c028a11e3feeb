"""geoseg: turn large satellite GeoTIFFs into per-field crop maps and per-district crop areas.

The public API, one function per job the command line offers::

    import geoseg

    geoseg.composite_season("season.tif", ["items/"], start="2024-06-01", end="2024-11-01", bands="B02,B03,B04,B08")
    geoseg.predict_scene("models/punjab", "season.tif", "mask.tif", confidence="confidence.tif")
    geoseg.polygonize_file("mask.tif", "fields.gpkg", confidence="confidence.tif")
    geoseg.district_areas_file("mask.tif", "districts.gpkg", "district", out="areas.csv")
    result = geoseg.run_workflow(geoseg.load_workflow("workflows/demo.yaml"))
    table = geoseg.query_run(result.run_dir, 'SELECT "crop:name", sum(area_ha) FROM fields GROUP BY 1')

The functions load on first use (``import geoseg`` stays light: no torch, no Dask); the
classes, errors and grid below are imported at once. ``docs/architecture.md`` maps the
package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geoseg.classes import NODATA, ClassTable, CropClass, default_classes, load_classes
from geoseg.core.grid import DEFAULT_OVERLAP, DEFAULT_TILE, Tile, TileGrid, tile_grid
from geoseg.errors import (
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

__version__ = "0.1.0"

# For type checkers and editors only: at run time __getattr__ below imports each on first use, so that
# `import geoseg` loads neither torch (geoseg.ml.train) nor the workflow's modules.
if TYPE_CHECKING:  # pragma: no cover
    from geoseg.ml.evaluate import evaluate
    from geoseg.ml.model import ModelCard, load_checkpoint, read_card
    from geoseg.ml.train import train
    from geoseg.ops.areas import district_areas_file
    from geoseg.ops.composite import composite_season
    from geoseg.ops.estimate import estimate_file
    from geoseg.ops.features import field_timeseries
    from geoseg.ops.field_scores import field_scores
    from geoseg.ops.parcels import parcel_crops_file
    from geoseg.ops.polygonize import polygonize_dataset, polygonize_file
    from geoseg.ops.predict import predict_scene
    from geoseg.ops.query import query_run
    from geoseg.ops.sample import sample_file
    from geoseg.rundir import RunResult
    from geoseg.workflow.config import RunConfig, load_workflow
    from geoseg.workflow.run import run_workflow

# name -> module of the functions that load on first use
_LAZY = {
    "composite_season": "geoseg.ops.composite",
    "predict_scene": "geoseg.ops.predict",
    "polygonize_file": "geoseg.ops.polygonize",
    "polygonize_dataset": "geoseg.ops.polygonize",
    "parcel_crops_file": "geoseg.ops.parcels",
    "district_areas_file": "geoseg.ops.areas",
    "field_scores": "geoseg.ops.field_scores",
    "sample_file": "geoseg.ops.sample",
    "estimate_file": "geoseg.ops.estimate",
    "field_timeseries": "geoseg.ops.features",
    "query_run": "geoseg.ops.query",
    "load_workflow": "geoseg.workflow.config",
    "RunConfig": "geoseg.workflow.config",
    "run_workflow": "geoseg.workflow.run",
    "RunResult": "geoseg.rundir",
    "load_checkpoint": "geoseg.ml.model",
    "read_card": "geoseg.ml.model",
    "ModelCard": "geoseg.ml.model",
    "evaluate": "geoseg.ml.evaluate",
    "train": "geoseg.ml.train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    # jobs
    "composite_season",
    "predict_scene",
    "polygonize_file",
    "polygonize_dataset",
    "parcel_crops_file",
    "district_areas_file",
    "sample_file",
    "estimate_file",
    "field_timeseries",
    "query_run",
    "load_workflow",
    "RunConfig",
    "run_workflow",
    "RunResult",
    "load_checkpoint",
    "read_card",
    "ModelCard",
    "evaluate",
    "train",
    # classes
    "NODATA",
    "ClassTable",
    "CropClass",
    "default_classes",
    "load_classes",
    # errors
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
    # the tile grid
    "Tile",
    "TileGrid",
    "tile_grid",
    "DEFAULT_TILE",
    "DEFAULT_OVERLAP",
]
