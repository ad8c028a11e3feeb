"""The ``geoseg`` command line. The library never imports this package."""
