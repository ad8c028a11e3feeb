"""A synthetic multi-date crop region over real Punjab districts, with its truth.

Real crop labels at scale are not available offline, so the demo and most tests use a
region made here: deterministic by seed, any size, and realistic enough that a model
has to use the whole time series to tell the crops apart.

What is made
------------
* **Vectors first, for the whole region** (:mod:`geoseg.synth.layout`). A perturbed road
  grid (link roads every 1.2-2.5 km along a slightly rotated local grid), a few winding
  major roads, canals and distributaries, and villages (irregular built-up blobs, some
  with a pond). Field parcels are Voronoi cells of a jittered, unevenly spaced lattice
  (150-500 m across) with the network and villages cut out; each field grows one crop,
  drawn with Punjab-like frequencies (rice and wheat dominate) that drift smoothly across
  the region. Everything that is not a field is the background (non-crop) class.
* **Spectra through the season** (:mod:`geoseg.synth.spectra`): each crop follows its own
  seasonal trajectory (fractions of green vegetation, bare soil, standing water and dry
  residue mixed from fixed endmember spectra), shifted and scaled per field (sowing date,
  vigour, soil brightness).
* **Pixels window by window** (512 x 512, :mod:`geoseg.synth.render`): fields are
  rasterised at 2 x 2 sub-pixels so that boundary pixels are true mixtures, with smooth
  within-field texture and pixel noise seeded from ``(seed, window row, window column)``.
  Memory is bounded by one window plus the vectors: it does not grow with the region's
  pixels, so a Sentinel-2-sized region (10980 x 10980) is made like a small one.
* **Nodata**: a slanted collar with a detector-stagger sawtooth edge (like a real
  Sentinel-2 swath edge, a few % of the area) where every band is 0, and optional cloud
  gaps (smooth random blobs, ``cloud_fraction`` of the area on each date) where one
  date's four bands are 0.
* **Truth**: the valid pixels of each class per district, each pixel in the district
  holding its centre (:mod:`geoseg.core.tally`, as ``geoseg areas --method centre`` counts).
* **Satellite products** (optional, :mod:`geoseg.synth.products`): the same fields and
  spectra as a season of Sentinel-2 L2A acquisitions (Earth Search STAC + COGs, SAFE with
  JPEG 2000, Copernicus Data Space STAC 1.1) and Landsat 8/9 Collection 2 Level-2 ones, with
  clouds, shadows, SCL / QA_PIXEL, the 2022 ``BOA_ADD_OFFSET`` and each provider's file
  names, folder trees and metadata; :class:`SynthProducts` also renders the true clear
  surface of any acquisition, for tests of the readers.

Every output is written under a temporary name and renamed into place; the same
arguments give byte-identical files (GDAL writes no timestamps in GeoTIFFs, and the
GeoPackage ``last_change`` timestamp is pinned).

:func:`synthesize` (in :mod:`geoseg.synth.region`) runs these stages in turn.
"""

from __future__ import annotations

from geoseg.synth.layout import CRS, DEFAULT_CENTRE
from geoseg.synth.products import LAYOUTS, Acquisition, AcquisitionSpec, SynthProducts
from geoseg.synth.region import MAX_DATES, SynthRegion, synthesize
from geoseg.synth.render import OUTSIDE
from geoseg.synth.spectra import BANDS, season_dates

__all__ = [
    "SynthRegion",
    "synthesize",
    "SynthProducts",
    "Acquisition",
    "AcquisitionSpec",
    "LAYOUTS",
    "season_dates",
    "BANDS",
    "CRS",
    "DEFAULT_CENTRE",
    "OUTSIDE",
    "MAX_DATES",
]
