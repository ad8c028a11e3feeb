"""The pure core: arrays, an Affine and a CRS in, arrays and shapely geometries out; no files, no rasterio, Dask or torch."""
