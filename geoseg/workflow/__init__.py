"""Region-wide batch runs: workflow files, the Dask graph, the tile store and run records."""

from geoseg.workflow.config import RunConfig, load_workflow

__all__ = ["RunConfig", "load_workflow"]
